"""pystol_worker.store.job_store on fakeredis: create, idempotency, listing, transitions."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from pystol_worker.core.model import JobRecord, JobSpec, JobStatus, Source
from pystol_worker.store.job_store import (
    IdempotencyConflict,
    JobNotFound,
    JobStore,
    TransitionRefused,
)


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis())


def make_spec(action: str = "pod-kill", namespaces: tuple[str, ...] = ("shop",),
              **fields: Any) -> JobSpec:
    data: dict[str, Any] = {"action": action,
                            "target": {"namespaces": list(namespaces),
                                       "label_selector": "app=web"}}
    data.update(fields)
    return JobSpec.model_validate(data)


def submit(store: JobStore, spec: JobSpec | None = None, submitter: str = "alice",
           source: Source = Source.API) -> JobRecord:
    record, created = store.create(spec or make_spec(), source, submitter)
    assert created
    return record


def ids(records: list[JobRecord]) -> list[str]:
    return [record.id for record in records]


# --------------------------------------------------------------------------- create and get


def test_create_stores_a_queued_job_with_a_queued_event(store: JobStore) -> None:
    spec = make_spec(duration="60s")
    record, created = store.create(spec, Source.CLI, "alice")
    assert created is True
    assert record.status == JobStatus.QUEUED
    assert record.spec == spec
    assert (record.source, record.submitter) == (Source.CLI, "alice")
    assert record.started_at is None and record.finished_at is None
    assert [event.kind for event in record.timeline] == ["queued"]
    assert "alice" in record.timeline[0].message and "cli" in record.timeline[0].message

    stored = store.get(record.id)
    assert stored.status == JobStatus.QUEUED
    assert stored.spec == spec
    assert stored.created_at == record.created_at
    assert [event.kind for event in stored.timeline] == ["queued"]
    assert store.exists(record.id)


def test_create_keeps_the_schedule_id(store: JobStore) -> None:
    record, _ = store.create(make_spec(), Source.SCHEDULE, "beat", schedule_id="s-1")
    assert store.get(record.id).schedule_id == "s-1"


def test_every_job_gets_its_own_id(store: JobStore) -> None:
    records = [submit(store) for _ in range(20)]
    assert len(set(ids(records))) == 20


def test_get_without_timeline(store: JobStore) -> None:
    record = submit(store)
    assert store.get(record.id, with_timeline=False).timeline == []


def test_get_unknown_job_raises_job_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.get("j-nope")
    assert not store.exists("j-nope")


def test_update_of_unknown_job_raises_job_not_found(store: JobStore) -> None:
    for attempt in (lambda: store.claim("j-nope", "w1"),
                    lambda: store.finish("j-nope", JobStatus.FAILED, "x"),
                    lambda: store.request_cancel("j-nope", "bob")):
        with pytest.raises(JobNotFound):
            attempt()


# --------------------------------------------------------------------------- idempotency


def test_same_key_and_same_spec_returns_the_same_job(store: JobStore) -> None:
    first, created = store.create(make_spec(idempotency_key="k1"), Source.API, "alice")
    assert created
    again, created_again = store.create(make_spec(idempotency_key="k1"), Source.API, "alice")
    assert created_again is False
    assert again.id == first.id
    assert len(store.list().items) == 1


def test_same_key_with_an_equivalent_duration_spelling_is_the_same_job(store: JobStore) -> None:
    first, _ = store.create(make_spec(idempotency_key="k1", duration="60s"), Source.API, "a")
    again, created = store.create(make_spec(idempotency_key="k1", duration=60), Source.API, "a")
    assert created is False
    assert again.id == first.id


def test_same_key_and_different_spec_is_a_conflict(store: JobStore) -> None:
    first, _ = store.create(make_spec(idempotency_key="k1"), Source.API, "alice")
    with pytest.raises(IdempotencyConflict) as caught:
        store.create(make_spec(namespaces=("other",), idempotency_key="k1"), Source.API, "alice")
    assert caught.value.job_id == first.id
    assert len(store.list().items) == 1


def test_different_submitters_may_reuse_a_key(store: JobStore) -> None:
    alice, _ = store.create(make_spec(idempotency_key="k1"), Source.API, "alice")
    bob, created = store.create(make_spec(idempotency_key="k1"), Source.API, "bob")
    assert created is True
    assert bob.id != alice.id
    # and another submitter may even use it for a different spec
    _, created = store.create(make_spec(namespaces=("x",), idempotency_key="k1"),
                                  Source.API, "carol")
    assert created is True


def test_without_a_key_every_submission_is_a_new_job(store: JobStore) -> None:
    first, _ = store.create(make_spec(), Source.API, "alice")
    second, created = store.create(make_spec(), Source.API, "alice")
    assert created is True
    assert second.id != first.id


def test_idempotent_retry_returns_the_current_state(store: JobStore) -> None:
    first, _ = store.create(make_spec(idempotency_key="k1"), Source.API, "alice")
    store.claim(first.id, "w1")
    again, created = store.create(make_spec(idempotency_key="k1"), Source.API, "alice")
    assert created is False
    assert again.status == JobStatus.RUNNING


def test_idempotency_key_expires_after_a_day(store: JobStore) -> None:
    store.create(make_spec(idempotency_key="k1"), Source.API, "alice")
    ttl = store.redis.ttl("pystol:idem:alice:k1")
    assert 23 * 3600 < ttl <= 24 * 3600


# --------------------------------------------------------------------------- listing


def test_list_is_newest_first(store: JobStore) -> None:
    created = [submit(store) for _ in range(5)]
    page = store.list()
    assert ids(page.items) == list(reversed(ids(created)))
    assert page.next_cursor is None


def test_list_of_an_empty_store(store: JobStore) -> None:
    page = store.list()
    assert page.items == []
    assert page.next_cursor is None


def test_list_filters_by_action_and_namespace(store: JobStore) -> None:
    kill_shop = submit(store, make_spec("pod-kill", ("shop",)))
    drain_shop = submit(store, make_spec("node-drain", ("shop",)))
    kill_both = submit(store, make_spec("pod-kill", ("shop", "billing")))
    drain_billing = submit(store, make_spec("node-drain", ("billing",)))

    assert ids(store.list(action="pod-kill").items) == [kill_both.id, kill_shop.id]
    assert ids(store.list(action="node-drain").items) == [drain_billing.id, drain_shop.id]
    assert ids(store.list(namespace="billing").items) == [drain_billing.id, kill_both.id]
    assert ids(store.list(namespace="shop").items) == [kill_both.id, drain_shop.id,
                                                       kill_shop.id]
    assert ids(store.list(action="pod-kill", namespace="billing").items) == [kill_both.id]
    assert store.list(action="nothing").items == []
    assert store.list(namespace="nowhere").items == []


def test_status_filter_reflects_transitions(store: JobStore) -> None:
    a, b, c, d = (submit(store) for _ in range(4))
    store.claim(b.id, "w1")
    store.claim(c.id, "w1")
    store.finish(c.id, JobStatus.SUCCEEDED, "done")
    store.request_cancel(d.id, "bob")

    assert ids(store.list(status=JobStatus.QUEUED).items) == [a.id]
    assert ids(store.list(status=JobStatus.RUNNING).items) == [b.id]
    assert ids(store.list(status=JobStatus.SUCCEEDED).items) == [c.id]
    assert ids(store.list(status=JobStatus.CANCELLED).items) == [d.id]
    assert store.list(status=JobStatus.FAILED).items == []
    # the unfiltered list still has every job, in submission order
    assert ids(store.list().items) == [d.id, c.id, b.id, a.id]


def test_status_and_action_filters_combine(store: JobStore) -> None:
    kill = submit(store, make_spec("pod-kill"))
    drain = submit(store, make_spec("node-drain"))
    store.claim(kill.id, "w1")
    store.claim(drain.id, "w1")
    assert ids(store.list(status=JobStatus.RUNNING, action="node-drain").items) == [drain.id]
    assert store.list(status=JobStatus.QUEUED, action="node-drain").items == []


def collect(store: JobStore, limit: int, **filters: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.list(cursor=cursor, limit=limit, **filters)
        pages.append(ids(page.items))
        cursor = page.next_cursor
        if cursor is None:
            return pages


def test_paging_returns_every_job_exactly_once_in_order(store: JobStore) -> None:
    created = ids([submit(store) for _ in range(10)])
    pages = collect(store, limit=3)
    assert [len(page) for page in pages] == [3, 3, 3, 1]
    assert [job for page in pages for job in page] == list(reversed(created))


def test_paging_ends_without_an_empty_page_when_the_count_divides(store: JobStore) -> None:
    created = ids([submit(store) for _ in range(9)])
    pages = collect(store, limit=3)
    assert [len(page) for page in pages] == [3, 3, 3]
    assert [job for page in pages for job in page] == list(reversed(created))


def test_jobs_created_while_paging_neither_appear_nor_cause_repeats(store: JobStore) -> None:
    created = ids([submit(store) for _ in range(10)])
    seen: list[str] = []
    page = store.list(limit=3)
    seen += ids(page.items)
    late: list[str] = []
    while page.next_cursor is not None:
        late += ids([submit(store) for _ in range(2)])
        page = store.list(cursor=page.next_cursor, limit=3)
        seen += ids(page.items)
    assert seen == list(reversed(created))
    assert not set(late) & set(seen)
    # a fresh listing starts with the newest job
    assert store.list(limit=1).items[0].id == late[-1]


def test_paging_with_a_filter_skips_other_jobs(store: JobStore) -> None:
    wanted = []
    for index in range(12):
        record = submit(store, make_spec("pod-kill" if index % 3 == 0 else "node-drain"))
        if index % 3 == 0:
            wanted.append(record.id)
    pages = collect(store, limit=3, action="pod-kill")
    assert [job for page in pages for job in page] == list(reversed(wanted))


def test_paging_with_a_status_filter_over_many_jobs(store: JobStore) -> None:
    """More jobs than one internal batch (50) must not be lost or repeated."""
    records = [submit(store) for _ in range(130)]
    failed = []
    for index, record in enumerate(records):
        if index % 4 == 0:
            store.finish(record.id, JobStatus.FAILED, "boom")
            failed.append(record.id)
    pages = collect(store, limit=7, status=JobStatus.FAILED)
    assert [job for page in pages for job in page] == list(reversed(failed))
    queued = collect(store, limit=40, status=JobStatus.QUEUED)
    assert sum(len(page) for page in queued) == 130 - len(failed)


# --------------------------------------------------------------------------- claim and finish


def test_claim_moves_a_queued_job_to_running(store: JobStore) -> None:
    record = submit(store)
    claimed = store.claim(record.id, "worker-1")
    assert claimed.status == JobStatus.RUNNING
    assert claimed.worker == "worker-1"
    assert claimed.started_at is not None and claimed.started_at >= record.created_at
    stored = store.get(record.id)
    assert stored.status == JobStatus.RUNNING
    assert [event.kind for event in stored.timeline] == ["queued", "started"]
    assert "worker-1" in stored.timeline[1].message


def test_a_second_claim_is_refused(store: JobStore) -> None:
    record = submit(store)
    store.claim(record.id, "worker-1")
    with pytest.raises(TransitionRefused, match="running, not queued"):
        store.claim(record.id, "worker-2")
    assert store.get(record.id).worker == "worker-1"


def test_a_cancelled_job_cannot_be_claimed(store: JobStore) -> None:
    record = submit(store)
    store.request_cancel(record.id, "bob")
    with pytest.raises(TransitionRefused):
        store.claim(record.id, "worker-1")
    assert store.get(record.id).status == JobStatus.CANCELLED


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.ABORTED])
def test_finish_sets_status_reason_and_finished_at(store: JobStore, status: JobStatus) -> None:
    record = submit(store)
    store.claim(record.id, "w1")
    finished = store.finish(record.id, status, "all pods recovered", error="E" if
                            status == JobStatus.FAILED else None)
    stored = store.get(record.id)
    for job in (finished, stored):
        assert job.status == status
        assert job.reason == "all pods recovered"
        assert job.finished_at is not None
        assert job.started_at is not None and job.finished_at >= job.started_at
        assert job.duration_seconds is not None and job.duration_seconds >= 0
    assert stored.error == ("E" if status == JobStatus.FAILED else None)
    assert [event.kind for event in stored.timeline] == ["queued", "started", status.value]


def test_a_second_finish_is_refused_and_changes_nothing(store: JobStore) -> None:
    record = submit(store)
    store.claim(record.id, "w1")
    first = store.finish(record.id, JobStatus.SUCCEEDED, "ok")
    with pytest.raises(TransitionRefused, match="already ended succeeded"):
        store.finish(record.id, JobStatus.FAILED, "late failure")
    stored = store.get(record.id)
    assert stored.status == JobStatus.SUCCEEDED
    assert stored.reason == "ok"
    assert stored.finished_at == first.finished_at
    assert [event.kind for event in stored.timeline] == ["queued", "started", "succeeded"]
    assert ids(store.list(status=JobStatus.FAILED).items) == []


def test_finish_applies_the_extra_change(store: JobStore) -> None:
    record = submit(store)
    store.claim(record.id, "w1")

    def change(job: JobRecord) -> None:
        job.metrics.targets_selected = 2
        job.metrics.targets_affected = 2
    store.finish(record.id, JobStatus.SUCCEEDED, "ok", change=change)
    assert store.get(record.id).metrics.targets_affected == 2


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING])
def test_finish_refuses_a_non_terminal_status(store: JobStore, status: JobStatus) -> None:
    record = submit(store)
    with pytest.raises(ValueError, match="not terminal"):
        store.finish(record.id, status, "no")
    assert store.get(record.id).status == JobStatus.QUEUED


def test_append_event_extends_the_timeline(store: JobStore) -> None:
    record = submit(store)
    store.append_event(record.id, "selected", "2 pods", {"pods": ["a", "b"]})
    timeline = store.timeline(record.id)
    assert [event.kind for event in timeline] == ["queued", "selected"]
    assert timeline[1].data == {"pods": ["a", "b"]}
    assert [event.kind for event in store.timeline(record.id, start=1)] == ["selected"]


# --------------------------------------------------------------------------- cancel


def test_cancelling_a_queued_job_cancels_it_at_once(store: JobStore) -> None:
    record = submit(store)
    cancelled = store.request_cancel(record.id, "bob")
    stored = store.get(record.id)
    for job in (cancelled, stored):
        assert job.status == JobStatus.CANCELLED
        assert job.finished_at is not None
        assert "bob" in (job.reason or "")
    assert stored.timeline[-1].kind == "cancelled"
    assert store.cancel_requested_by(record.id) is None


def test_cancelling_a_running_job_asks_it_to_abort(store: JobStore) -> None:
    record = submit(store)
    store.claim(record.id, "w1")
    assert store.cancel_requested_by(record.id) is None
    asked = store.request_cancel(record.id, "bob")
    stored = store.get(record.id)
    for job in (asked, stored):
        assert job.status == JobStatus.RUNNING
        assert job.cancel_requested is True
        assert job.finished_at is None
    assert store.cancel_requested_by(record.id) == "bob"
    assert stored.timeline[-1].kind == "cancel-requested"

    # the worker then aborts; the cancel request is cleared with the job's end
    store.finish(record.id, JobStatus.ABORTED, "aborted by bob")
    assert store.get(record.id).status == JobStatus.ABORTED
    assert store.cancel_requested_by(record.id) is None


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.ABORTED])
def test_cancelling_a_finished_job_is_refused(store: JobStore, status: JobStatus) -> None:
    record = submit(store)
    store.claim(record.id, "w1")
    store.finish(record.id, status, "over")
    with pytest.raises(TransitionRefused, match=f"already ended {status.value}"):
        store.request_cancel(record.id, "bob")
    stored = store.get(record.id)
    assert stored.status == status
    assert stored.cancel_requested is False
    assert store.cancel_requested_by(record.id) is None


def test_cancelling_a_cancelled_job_is_refused(store: JobStore) -> None:
    record = submit(store)
    store.request_cancel(record.id, "bob")
    with pytest.raises(TransitionRefused):
        store.request_cancel(record.id, "carol")
    assert "bob" in (store.get(record.id).reason or "")
