"""The submission service every producer calls, on fakeredis with injected queues.

Each step (validate, halt, store, queue) and each way out of it: what is stored, what
is queued, and what a producer is told.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from pystol_worker.actions import default_registry
from pystol_worker.core.model import JobSpec, JobStatus, Source
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.submission import (
    ChaosHalted,
    IdempotencyConflict,
    JobInvalid,
    QueueUnavailable,
    SubmissionService,
)
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore
from tests.support.grants import custom_resource, operator, store_job
from tests.support.recording_queue import RecordingQueue

SPEC: dict[str, Any] = {"action": "pod-kill",
                        "target": {"namespaces": ["shop"], "label_selector": "app=web"}}
ALICE = operator("alice", "shop")
BOB = operator("bob", "shop")
KILL_WEB = custom_resource("shop", "kill-web")
SHOP_A = custom_resource("shop", "a")


class RefusingQueue:
    """A JobQueue whose broker is down."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def send(self, job_id: str) -> None:
        self.asked.append(job_id)
        raise ConnectionError("broker down")


def spec(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({**SPEC, **fields})


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def store(redis_client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(redis_client)


@pytest.fixture
def halt(redis_client: fakeredis.FakeRedis) -> HaltSwitch:
    return HaltSwitch(redis_client)


def service(store: JobStore, queue: Any, halt: HaltSwitch) -> SubmissionService:
    settings = Settings(protected_namespaces=["kube-system"], allow_protected=False)
    return SubmissionService(store, queue, default_registry(), settings, halt)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def submissions(store: JobStore, queue: RecordingQueue, halt: HaltSwitch
                ) -> SubmissionService:
    return service(store, queue, halt)


# -- the steps ----------------------------------------------------------------------------


def test_submit_stores_then_queues_once(submissions: SubmissionService, store: JobStore,
                                        queue: RecordingQueue) -> None:
    record, created = submissions.submit(spec(), Source.CR, KILL_WEB, schedule_id="s1")
    assert created is True
    assert queue.sent == [record.id]
    stored = store.get(record.id)
    assert stored.status == JobStatus.QUEUED
    assert (stored.source, stored.submitter, stored.schedule_id) == (Source.CR,
                                                                     "shop/kill-web", "s1")
    assert stored.spec == spec()
    # Who, and what they were allowed, sealed for this job: the worker checks it.
    assert stored.actor == KILL_WEB.actor
    assert stored.grant is not None and stored.grant.signature
    assert (stored.grant.submitter, stored.grant.namespaces, stored.grant.cluster) == (
        "shop/kill-web", ["shop"], False)


def test_an_invalid_spec_is_refused_before_anything_is_stored(
        submissions: SubmissionService, store: JobStore, queue: RecordingQueue) -> None:
    with pytest.raises(JobInvalid) as refused:
        submissions.submit(spec(target={"namespaces": ["kube-system"],
                                        "label_selector": "app=web"}), Source.API, ALICE)
    assert [problem.loc for problem in refused.value.problems] == ["target.namespaces[0]"]
    assert store.list().items == [] and queue.sent == []


def test_a_halt_refuses_and_stores_nothing(submissions: SubmissionService, store: JobStore,
                                           halt: HaltSwitch, queue: RecordingQueue) -> None:
    halt.engage(store, "sre", "incident")
    with pytest.raises(ChaosHalted, match=r"halted \(by sre"):
        submissions.submit(spec(), Source.API, ALICE)
    with pytest.raises(ChaosHalted):
        submissions.refuse_if_halted()
    assert store.list().items == [] and queue.sent == []
    halt.release()
    submissions.refuse_if_halted()
    assert submissions.submit(spec(), Source.API, ALICE)[1] is True


def test_validation_comes_before_the_halt(submissions: SubmissionService, store: JobStore,
                                          halt: HaltSwitch) -> None:
    # The same order for every producer: an invalid spec is invalid, halted or not.
    halt.engage(store, "sre")
    with pytest.raises(JobInvalid):
        submissions.submit(spec(action="no-such-action"), Source.API, ALICE)


# -- idempotency --------------------------------------------------------------------------


def test_a_repeat_returns_the_earlier_job_and_queues_nothing(
        submissions: SubmissionService, queue: RecordingQueue) -> None:
    first, created = submissions.submit(spec(idempotency_key="k"), Source.API, ALICE)
    again, created_again = submissions.submit(spec(idempotency_key="k"), Source.API, ALICE)
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert queue.sent == [first.id]


def test_a_key_reused_for_another_spec_conflicts(submissions: SubmissionService,
                                                 store: JobStore,
                                                 queue: RecordingQueue) -> None:
    first, _ = submissions.submit(spec(idempotency_key="k"), Source.API, ALICE)
    with pytest.raises(IdempotencyConflict) as conflict:
        submissions.submit(spec(idempotency_key="k", duration="30s"), Source.API, ALICE)
    assert conflict.value.job_id == first.id
    assert [record.id for record in store.list().items] == [first.id]
    assert queue.sent == [first.id]


def test_keys_are_per_submitter(submissions: SubmissionService,
                                queue: RecordingQueue) -> None:
    alice, _ = submissions.submit(spec(idempotency_key="k"), Source.API, ALICE)
    bob, created = submissions.submit(spec(idempotency_key="k"), Source.API, BOB)
    assert created and bob.id != alice.id
    assert queue.sent == [alice.id, bob.id]


def test_the_store_finds_a_job_by_its_key(submissions: SubmissionService,
                                          store: JobStore) -> None:
    record, _ = submissions.submit(spec(idempotency_key="k"), Source.CR, SHOP_A)
    found = store.find_by_idempotency_key("shop/a", "k")
    assert found is not None and found.id == record.id
    assert store.find_by_idempotency_key("shop/b", "k") is None
    assert store.find_by_idempotency_key("shop/a", "other") is None
    store.redis.delete(JobStore._key(record.id))  # the key outlived its record
    assert store.find_by_idempotency_key("shop/a", "k") is None


# -- the queue refuses ----------------------------------------------------------------------


def test_a_refused_job_is_failed_and_its_key_released(store: JobStore,
                                                      halt: HaltSwitch) -> None:
    broken = RefusingQueue()
    with pytest.raises(QueueUnavailable) as refused:
        service(store, broken, halt).submit(spec(idempotency_key="k"), Source.API, ALICE)
    failure = refused.value
    assert broken.asked == [failure.job_id]
    assert isinstance(failure.cause, ConnectionError)
    assert str(failure) == (f"job {failure.job_id} could not be queued: "
                            "ConnectionError: broker down")
    failed = store.get(failure.job_id)
    assert failed.status == JobStatus.FAILED
    assert (failed.reason, failed.error) == ("could not be queued",
                                             "ConnectionError: broker down")
    assert store.find_by_idempotency_key(ALICE.actor.submitter, "k") is None
    assert not store.was_sent(failure.job_id)
    # The key was released: a retry with the same key is a new submission.
    working = RecordingQueue()
    retried, created = service(store, working, halt).submit(spec(idempotency_key="k"),
                                                            Source.API, ALICE)
    assert created and retried.id != failure.job_id
    assert working.sent == [retried.id]


def test_a_job_cancelled_while_being_queued_stays_cancelled(store: JobStore,
                                                            halt: HaltSwitch) -> None:
    class HaltedThenRefusing:
        """The halt cancels the queued job, then the broker fails."""

        def send(self, job_id: str) -> None:
            halt.engage(store, "sre")
            raise ConnectionError("broker down")

    with pytest.raises(QueueUnavailable) as refused:
        service(store, HaltedThenRefusing(), halt).submit(spec(), Source.API, ALICE)
    assert store.get(refused.value.job_id).status == JobStatus.CANCELLED


# -- adopting a job found by its key ------------------------------------------------------


def test_adopt_queues_a_stored_job_that_was_never_sent_once(
        submissions: SubmissionService, store: JobStore, queue: RecordingQueue) -> None:
    # Its producer stored it and died before queuing it.
    orphan = store_job(store, spec(idempotency_key="k"), identity=SHOP_A, source=Source.CR)
    assert submissions.adopt(orphan) is True
    assert submissions.adopt(store.get(orphan.id)) is False
    assert queue.sent == [orphan.id]


def test_adopt_never_sends_a_job_that_was_sent_or_is_not_queued(
        submissions: SubmissionService, store: JobStore, queue: RecordingQueue) -> None:
    sent, _ = submissions.submit(spec(idempotency_key="k1"), Source.CR, SHOP_A)
    assert store.was_sent(sent.id)
    assert submissions.adopt(sent) is False
    cancelled = store_job(store, spec(idempotency_key="k2"),
                          identity=custom_resource("shop", "b"), source=Source.CR)
    store.request_cancel(cancelled.id, "alice")
    assert submissions.adopt(store.get(cancelled.id)) is False
    assert queue.sent == [sent.id]


def test_adopt_fails_a_job_the_queue_refuses(store: JobStore, halt: HaltSwitch) -> None:
    orphan = store_job(store, spec(idempotency_key="k"), identity=SHOP_A, source=Source.CR)
    with pytest.raises(QueueUnavailable):
        service(store, RefusingQueue(), halt).adopt(orphan)
    assert store.get(orphan.id).status == JobStatus.FAILED
    assert store.find_by_idempotency_key("shop/a", "k") is None


def test_jobs_without_a_key_are_not_marked_sent(submissions: SubmissionService,
                                                store: JobStore,
                                                queue: RecordingQueue) -> None:
    # Nobody can find them again, so nobody needs to know: no extra write per job.
    record, _ = submissions.submit(spec(), Source.API, ALICE)
    assert queue.sent == [record.id] and not store.was_sent(record.id)
