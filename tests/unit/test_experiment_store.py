"""Experiment documents and runs in Redis (fakeredis): versions, visibility, listing,
the run compare-and-set, timers, the advance lock and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest

from pystol_worker.actions import default_registry
from pystol_worker.core.access import AccessDenied, Role
from pystol_worker.core.experiment_model import ExperimentRun, ExperimentStatus
from pystol_worker.core.model import Source
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.engine import initial_steps
from pystol_worker.experiments.service import (
    ExperimentExists,
    ExperimentNotFound,
    ExperimentService,
    RunNotFound,
    VersionConflict,
    parse_experiment,
)
from pystol_worker.experiments.store import ExperimentStore, RunConflict, run_key
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore
from tests.support.grants import ADMIN, operator, token

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def document(name: str = "checkout", namespace: str = "shop", **fields: Any
             ) -> dict[str, Any]:
    return {"name": name, "method": [{"type": "action", "name": "kill", "job": {
        "action": "pod-kill", "target": {"namespaces": [namespace],
                                         "label_selector": "app=web"}}}], **fields}


class Queue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def service(client: fakeredis.FakeRedis) -> ExperimentService:
    settings = Settings()
    jobs = JobStore(client)
    submission = SubmissionService(jobs, Queue(), default_registry(), settings,
                                   HaltSwitch(client))
    return ExperimentService(client, settings, Policy(), submission, lambda run_id: None)


def new_run(run_id: str = "x-20261206T120000-abcdef", experiment: str = "checkout"
            ) -> ExperimentRun:
    spec = parse_experiment(document(experiment))
    steps, rollbacks = initial_steps(spec)
    return ExperimentRun(id=run_id, experiment=experiment, spec=spec, source=Source.API,
                         submitter="alice", created_at=T0, steps=steps, rollbacks=rollbacks)


# -- documents -----------------------------------------------------------------------------


def test_a_document_is_versioned_and_if_match_guards_replacing_it(
        service: ExperimentService) -> None:
    stored = service.put(parse_experiment(document()), ADMIN)
    assert stored.version == 1 and stored.namespaces == ["shop"]
    assert service.get("checkout", ADMIN).spec == stored.spec
    again = service.put(parse_experiment(document(title="v2")), ADMIN, if_match=1)
    assert again.version == 2 and again.created_at == stored.created_at
    with pytest.raises(VersionConflict):
        service.put(parse_experiment(document(title="v3")), ADMIN, if_match=1)
    with pytest.raises(ExperimentExists):
        service.put(parse_experiment(document()), ADMIN, create_only=True)
    assert service.get("checkout", ADMIN).spec.title == "v2"


def test_documents_of_other_namespaces_are_hidden_and_cannot_be_written(
        service: ExperimentService) -> None:
    service.put(parse_experiment(document("ledger", "payments")), ADMIN)
    service.put(parse_experiment(document("checkout", "shop")), ADMIN)
    alice = operator("alice", "shop")
    with pytest.raises(ExperimentNotFound):
        service.get("ledger", alice)
    assert [item.name for item in service.list(alice).items] == ["checkout"]
    with pytest.raises(ExperimentNotFound):  # a name hidden from alice stays hidden
        service.put(parse_experiment(document("ledger", "shop")), alice)
    viewer = token("vera", Role.VIEWER, "shop")
    with pytest.raises(AccessDenied):
        service.put(parse_experiment(document("mine", "shop")), viewer)
    assert service.get("checkout", viewer).name == "checkout"
    with pytest.raises(AccessDenied):
        service.delete("checkout", viewer)
    service.delete("checkout", alice)
    with pytest.raises(ExperimentNotFound):
        service.get("checkout", ADMIN)


def test_documents_list_by_name_in_pages_and_by_namespace_and_tag(
        service: ExperimentService) -> None:
    for index in range(5):
        service.put(parse_experiment(document(f"e{index}", "shop" if index % 2 else "web",
                                              tags=["nightly"] if index < 2 else [])), ADMIN)
    first = service.list(ADMIN, limit=2)
    assert [item.name for item in first.items] == ["e0", "e1"] and first.next_cursor
    rest = service.list(ADMIN, cursor=first.next_cursor, limit=10)
    assert [item.name for item in rest.items] == ["e2", "e3", "e4"] and not rest.next_cursor
    assert [i.name for i in service.list(ADMIN, namespace="shop").items] == ["e1", "e3"]
    assert [i.name for i in service.list(ADMIN, tag="nightly").items] == ["e0", "e1"]


# -- runs ----------------------------------------------------------------------------------


def test_a_run_write_is_a_compare_and_set_on_its_version(client: fakeredis.FakeRedis
                                                          ) -> None:
    store = ExperimentStore(client)
    run, created = store.create_run(new_run())
    assert created
    written = store.write_run(run, 0)
    assert written.version == 1 and store.get_run(run.id).version == 1
    with pytest.raises(RunConflict):
        store.write_run(run, 0)


def test_an_ended_run_leaves_the_running_set_and_expires_after_the_retention(
        client: fakeredis.FakeRedis) -> None:
    now = [T0]
    store = ExperimentStore(client, retention_seconds=3600, clock=lambda: now[0])
    run, _ = store.create_run(new_run())
    store.set_due(run.id, T0 + timedelta(minutes=5))
    assert client.sismember("pystol:xruns:running", run.id)
    ended = run.model_copy(update={"status": ExperimentStatus.COMPLETED, "ended_at": T0})
    store.write_run(ended, 0)
    assert not client.sismember("pystol:xruns:running", run.id)
    assert client.zscore("pystol:xruns:due", run.id) is None
    assert 0 < client.ttl(run_key(run.id)) <= 3600
    assert store.prune_expired((T0 + timedelta(minutes=30)).timestamp()) == 0
    assert store.prune_expired((T0 + timedelta(hours=2)).timestamp()) == 1
    assert client.zcard("pystol:xruns") == 0
    assert client.zcard("pystol:xruns:exp:checkout") == 0


def test_runs_list_newest_first_per_experiment_and_hide_other_tenants(
        service: ExperimentService) -> None:
    ids = [service.start(parse_experiment(document()), Source.API, ADMIN).id
           for _ in range(3)]
    other = service.start(parse_experiment(document("ledger", "payments")), Source.API,
                          ADMIN).id
    page = service.runs(ADMIN, experiment="checkout", limit=2)
    assert [r.id for r in page.items] == ids[::-1][:2] and page.next_cursor
    rest = service.runs(ADMIN, experiment="checkout", cursor=page.next_cursor)
    assert [r.id for r in rest.items] == [ids[0]]
    alice = operator("alice", "shop")
    assert other not in [r.id for r in service.runs(alice).items]
    with pytest.raises(RunNotFound):
        service.run(other, alice)
    assert service.run(ids[0], alice).id == ids[0]


def test_timers_are_claimed_once(client: fakeredis.FakeRedis) -> None:
    store = ExperimentStore(client)
    store.set_due("x-1", T0 + timedelta(seconds=10))
    store.set_due("x-1", T0 + timedelta(seconds=5))  # the earlier time wins
    store.set_due("x-1", T0 + timedelta(seconds=50))
    assert store.claim_due(T0 + timedelta(seconds=4), 10) == []
    assert store.claim_due(T0 + timedelta(seconds=6), 10) == ["x-1"]
    assert store.claim_due(T0 + timedelta(seconds=60), 10) == []


def test_the_advance_lock_is_released_only_by_its_holder(client: fakeredis.FakeRedis
                                                         ) -> None:
    store = ExperimentStore(client)
    token_a = store.lock_advance("x-1")
    assert token_a is not None and store.lock_advance("x-1") is None
    store.unlock_advance("x-1", "someone-else")
    assert store.advance_locked("x-1")
    store.unlock_advance("x-1", token_a)
    assert not store.advance_locked("x-1")


def test_an_ask_for_another_round_is_kept_until_the_holder_takes_it(
        client: fakeredis.FakeRedis) -> None:
    """A second advance that finds the lock taken leaves an ask in the same step; the
    holder's release takes it (and keeps the lock) instead of releasing; a release by
    anyone but the holder neither releases nor takes the ask."""
    store = ExperimentStore(client)
    holder = store.lock_advance("x-1")
    assert holder is not None
    assert store.release_advance("x-1", holder) is False  # nobody asked: released
    assert not store.advance_locked("x-1")
    holder = store.lock_advance("x-1")
    assert holder is not None and store.lock_advance("x-1") is None  # asks
    assert store.release_advance("x-1", "someone-else") is False
    assert store.advance_locked("x-1")
    assert store.release_advance("x-1", holder) is True  # one more round, lock kept
    assert store.advance_locked("x-1")
    assert store.release_advance("x-1", holder) is False
    assert not store.advance_locked("x-1")


def test_an_ask_left_when_the_holders_lock_lapsed_is_still_taken(
        client: fakeredis.FakeRedis) -> None:
    """A round outlived the lock (30 s): an ask made while it was held must still get its
    round. The holder takes the lock back if nobody took it since; if another advance did,
    the ask is left for that one."""
    store = ExperimentStore(client)
    holder = store.lock_advance("x-1")
    assert holder is not None and store.lock_advance("x-1") is None  # asks
    client.delete(run_key("x-1") + ":advance")  # the lock lapses mid-round
    assert store.release_advance("x-1", holder) is True
    assert store.advance_locked("x-1")
    assert store.release_advance("x-1", holder) is False
    assert not store.advance_locked("x-1")
    # Taken over after the lapse: the newcomer's release finds the ask, the old holder's
    # release touches neither.
    holder = store.lock_advance("x-1")
    assert holder is not None and store.lock_advance("x-1") is None
    client.delete(run_key("x-1") + ":advance")
    newcomer = store.lock_advance("x-1")
    assert newcomer is not None
    assert store.release_advance("x-1", holder) is False
    assert store.release_advance("x-1", newcomer) is True
