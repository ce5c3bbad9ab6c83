"""Nothing a job leaves in Redis grows for ever (issue 13, "Resources that run out").

Ended jobs expire after the retention (record, timeline) and leave every index with them;
an index left empty (a namespace no job names any more) is gone; a late event for an
expired job leaves nothing; metric label values from the cluster are bounded.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from pystol_api.http.metrics_endpoint import render
from pystol_worker.core.model import Change, JobRecord, JobSpec, JobStatus, Source, TargetRef
from pystol_worker.store import metrics
from pystol_worker.store.job_store import JobNotFound, JobStore

DAY = 86400.0


def spec(namespace: str = "shop", action: str = "pod-kill") -> JobSpec:
    return JobSpec.model_validate({"action": action, "target": {"namespaces": [namespace]}})


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(client, retention_seconds=DAY)


def ended_job(store: JobStore, namespace: str = "shop", ago: float = 0.0) -> JobRecord:
    """A job that ran and ended `ago` seconds ago."""
    record, _ = store.create(spec(namespace), Source.API, "alice")
    store.claim(record.id, "w1")
    store.finish(record.id, JobStatus.SUCCEEDED, "done")
    if ago:
        def backdate(stored: JobRecord) -> None:
            assert stored.ended_at is not None
            stored.ended_at -= timedelta(seconds=ago)
        store.update(record.id, backdate)
    return store.get(record.id)


def ids(store: JobStore, **filters: Any) -> list[str]:
    return [record.id for record in store.list(**filters).items]


def keys_of(client: redis.Redis, job_id: str) -> list[bytes]:
    return sorted(key for key in client.keys("pystol:*") if job_id.encode() in key)


# -- expiry ---------------------------------------------------------------------------------------

def test_an_ended_job_expires_after_the_retention(client: fakeredis.FakeRedis,
                                                  store: JobStore) -> None:
    record = ended_job(store)
    key = f"pystol:job:{record.id}"
    for part in (key, key + ":timeline"):
        assert DAY - 5 < client.ttl(part) <= DAY, part
    # Counted from when it ended, whenever the record is written again.
    older = ended_job(store, ago=DAY / 2)
    assert DAY / 2 - 5 < client.ttl(f"pystol:job:{older.id}") <= DAY / 2


def test_queued_and_running_jobs_never_expire(client: fakeredis.FakeRedis,
                                              store: JobStore) -> None:
    queued, _ = store.create(spec(), Source.API, "alice")
    running, _ = store.create(spec(), Source.API, "alice")
    store.claim(running.id, "w1")
    store.append_event(running.id, "selected", "1 pod")
    for job_id in (queued.id, running.id):
        assert client.ttl(f"pystol:job:{job_id}") == -1
        assert client.ttl(f"pystol:job:{job_id}:timeline") == -1


def test_a_job_cancelled_before_it_started_expires_too(client: fakeredis.FakeRedis,
                                                       store: JobStore) -> None:
    record, _ = store.create(spec(), Source.API, "alice")
    store.request_cancel(record.id, by="bob")
    assert DAY - 5 < client.ttl(f"pystol:job:{record.id}") <= DAY


def test_a_later_write_of_an_ended_job_keeps_its_expiry(client: fakeredis.FakeRedis,
                                                        store: JobStore) -> None:
    """The reaper records a late revert on an ended job: a plain SET would have dropped
    the expiry and kept the record for ever."""
    record = ended_job(store)
    store.update(record.id, lambda stored: setattr(stored, "error", "late revert failed"))
    store.append_event(record.id, "reverted", "late")
    assert DAY - 5 < client.ttl(f"pystol:job:{record.id}") <= DAY
    assert DAY - 5 < client.ttl(f"pystol:job:{record.id}:timeline") <= DAY


def test_an_event_for_an_expired_job_leaves_nothing_behind(client: fakeredis.FakeRedis,
                                                           store: JobStore) -> None:
    record = ended_job(store)
    client.delete(f"pystol:job:{record.id}", f"pystol:job:{record.id}:timeline")  # expired
    store.append_event(record.id, "reverted", "the reaper, a month late")
    assert not client.exists(f"pystol:job:{record.id}:timeline")


# -- the indexes ----------------------------------------------------------------------------------

def test_pruning_takes_expired_jobs_out_of_every_index(client: fakeredis.FakeRedis,
                                                       store: JobStore) -> None:
    old = ended_job(store, namespace="gone-ns", ago=DAY + 60)
    recent = ended_job(store, namespace="shop", ago=60)
    running, _ = store.create(spec("shop"), Source.API, "alice")
    store.claim(running.id, "w1")
    # Redis expired the old record on its own; its index entries are still there.
    client.delete(f"pystol:job:{old.id}", f"pystol:job:{old.id}:timeline")
    assert client.exists("pystol:jobs:ns:gone-ns")

    assert store.prune_expired() == 1

    assert ids(store) == [running.id, recent.id]
    assert ids(store, namespace="gone-ns") == []
    assert ids(store, status=JobStatus.SUCCEEDED) == [recent.id]
    assert ids(store, action="pod-kill") == [running.id, recent.id]
    for index in ("pystol:jobs", "pystol:jobs:status:succeeded", "pystol:jobs:action:pod-kill",
                  "pystol:jobs:ns:gone-ns"):
        assert client.zscore(index, old.id) is None, index
    # The namespace no job names any more has no index key at all.
    assert not client.exists("pystol:jobs:ns:gone-ns")
    assert keys_of(client, old.id) == []
    # Nothing left to do: the next pass is one range read and removes nothing.
    assert store.prune_expired() == 0
    assert store.get(recent.id).status == JobStatus.SUCCEEDED


def test_pruning_removes_a_record_whose_expiry_has_not_fired_yet(
        client: fakeredis.FakeRedis, store: JobStore) -> None:
    record = ended_job(store)
    assert store.prune_expired(now=time.time() + DAY + 1) == 1
    with pytest.raises(JobNotFound):
        store.get(record.id)
    assert keys_of(client, record.id) == []


def test_pruning_works_in_batches(client: fakeredis.FakeRedis, store: JobStore,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pystol_worker.store import job_store
    monkeypatch.setattr(job_store, "PRUNE_BATCH", 2)
    for _ in range(3):
        ended_job(store, ago=2 * DAY)
    assert [store.prune_expired(), store.prune_expired(), store.prune_expired()] == [2, 1, 0]
    assert ids(store) == []


# -- metric label values -------------------------------------------------------------------------

def finished_in(store: JobStore, namespace: str) -> None:
    record, _ = store.create(spec(namespace), Source.API, "alice")
    store.claim(record.id, "w1")

    def changed(stored: JobRecord) -> None:
        stored.result.changes = [Change(target=TargetRef(kind="Pod", namespace=namespace,
                                                         name="web-1"),
                                        action="deleted", started_at=stored.created_at)]
    store.finish(record.id, JobStatus.SUCCEEDED, "1 target(s) affected", change=changed)


def affected_by_namespace(client: redis.Redis) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(render(client, "pystol.jobs").decode()):
        for sample in family.samples:
            if sample.name == "pystol_targets_affected_total":
                found[sample.labels["namespace"]] = sample.value
    return found


def test_namespace_label_values_are_bounded(client: fakeredis.FakeRedis, store: JobStore,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Namespaces come and go (one per CI run): past the bound they are counted together
    as `_other`, and the ones already named keep their series."""
    monkeypatch.setattr(metrics, "MAX_NAMESPACE_LABELS", 3)
    for namespace in ("ci-1", "ci-2", "ci-3", "ci-4", "ci-5", "ci-1", "ci-6"):
        finished_in(store, namespace)
    assert affected_by_namespace(client) == {"ci-1": 2, "ci-2": 1, "ci-3": 1, "_other": 3}
    assert client.scard(metrics.NAMESPACE_LABELS_KEY) == 3


def test_namespace_labels_never_fail_a_job() -> None:
    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.1)
    assert metrics.namespace_labels(broken, {"shop", ""}) == {"shop": "_other", "": ""}
