"""The halt answers at once, however long the queue: the switch first, bookkeeping after."""

from __future__ import annotations

import time

import fakeredis

from pystol_worker.core.model import JobSpec, JobStatus, Source
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore


def queue_jobs(store: JobStore, count: int) -> list[str]:
    spec = JobSpec.model_validate({"action": "pod-kill", "dry_run": True,
                                   "target": {"namespaces": ["shop"]}})
    return [store.create(spec, Source.API, "sre")[0].id for _ in range(count)]


def test_a_long_queue_is_cancelled_in_the_background_after_the_switch_is_set() -> None:
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    ids = queue_jobs(store, 60)
    switch = HaltSwitch(client)

    state = switch.engage(store, "sre", "incident", budget_seconds=0.0)

    assert switch.state().halted  # set before anything else
    assert state.cancelled_jobs + state.stopping_jobs == 60 and state.stopping_jobs > 0
    deadline = time.monotonic() + 10
    while any(store.get(job_id).status != JobStatus.CANCELLED for job_id in ids):
        assert time.monotonic() < deadline, "the background thread did not cancel the queue"
        time.sleep(0.05)


def test_a_short_queue_is_cancelled_before_the_halt_answers() -> None:
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    ids = queue_jobs(store, 3)
    state = HaltSwitch(client).engage(store, "sre", budget_seconds=5.0)
    assert (state.cancelled_jobs, state.stopping_jobs) == (3, 0)
    assert {store.get(job_id).status for job_id in ids} == {JobStatus.CANCELLED}


def test_lifting_the_halt_stops_the_background_cancelling() -> None:
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    ids = queue_jobs(store, 200)
    switch = HaltSwitch(client)
    switch.engage(store, "sre", budget_seconds=0.0)
    switch.release()
    time.sleep(0.3)
    assert any(store.get(job_id).status == JobStatus.QUEUED for job_id in ids)


def test_a_corrupt_record_in_redis_fails_neither_the_halt_nor_the_listing() -> None:
    """Any pod that reaches Redis can write a record no model reads: the halt switch (and
    the reaper's search for lost jobs) list jobs, and must not fail on it."""
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    [good] = queue_jobs(store, 1)
    client.set("pystol:job:j-bad", b"\xff{not json")
    client.zadd("pystol:jobs:status:queued", {"j-bad": 9e12})
    client.zadd("pystol:jobs", {"j-bad": 9e12})

    state = HaltSwitch(client).engage(store, "sre", budget_seconds=5.0)

    assert state.cancelled_jobs == 1 and store.get(good).status == JobStatus.CANCELLED
    assert [record.id for record in store.list().items] == [good]
