"""A target stays held while another job's fault on it is still in the journal."""

from __future__ import annotations

import json

import fakeredis
import pytest

from pystol_worker.core.model import JobSpec, Source, TargetRef, WorkloadRef
from pystol_worker.safety.revert_journal import JournalEntry
from pystol_worker.safety.target_locks import TargetLocks, lock_key
from pystol_worker.store import job_store
from pystol_worker.store.job_store import JobStore
from tests.support.grants import signed_journal


def test_a_dead_jobs_journaled_fault_keeps_its_workload_locked() -> None:
    client = fakeredis.FakeRedis()
    journal, locks = signed_journal(client), TargetLocks(client)
    web = WorkloadRef(kind="Deployment", namespace="shop", name="web")
    key = lock_key("Deployment", "shop", "web")
    entry = journal.record(JournalEntry(
        job_id="j-dead", action="deployment-scale", undo="restore-replicas",
        target=TargetRef(kind="Deployment", namespace="shop", name="web", workload=web),
        data={"replicas": 3}))
    # The dead job's lock expired with its heartbeat, but its fault is still in the cluster.
    assert locks.acquire("j-next", [key], 15) == {key.removeprefix("pystol:lock:"): "j-dead"}
    # The job that journaled it may re-take its own target.
    assert locks.acquire("j-dead", [key], 15) == {}
    locks.release("j-dead", [key])
    journal.resolve(entry)  # the reaper reverted it
    assert locks.acquire("j-next", [key], 15) == {}


def test_an_idempotency_key_whose_job_never_got_stored_is_taken_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_store, "IDEMPOTENCY_CLAIM_SECONDS", 0.1)
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    spec = JobSpec.model_validate({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                                   "idempotency_key": "k1"})
    # A first submission took the key and died before storing its record.
    client.set("pystol:idem:me:k1", json.dumps(
        {"id": "j-never-stored", "spec": job_store._spec_fingerprint(spec)}))
    record, created = store.create(spec, Source.API, "me")
    assert created and record.id != "j-never-stored"
    again, created_again = store.create(spec, Source.API, "me")
    assert again.id == record.id and not created_again
