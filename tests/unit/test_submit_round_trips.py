"""Issue 16, the submission path: `POST /api/v1/jobs` costs two Redis round trips before
the queue's publish (the rate limiter's one script, the submit script), and the halt is
checked inside the script that stores the job.

Round trips are counted where redis-py sends them (`send_packed_command`), on fakeredis
(which runs the Lua scripts with lupa).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from celery import Celery
from redis.connection import AbstractConnection

from pystol_api.http.app import create_app
from pystol_worker.actions import default_registry
from pystol_worker.core.model import JobRecord, JobSpec, Source
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.submission import ChaosHalted, SubmissionService
from pystol_worker.process.celery_app import CeleryJobQueue, make_celery
from pystol_worker.store import metrics
from pystol_worker.store.audit_log import AuditLog
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import HALT_KEY, JobStore
from tests.support.grants import operator
from tests.support.recording_queue import RecordingQueue

TOKEN = "round-trips-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB: dict[str, Any] = {"action": "pod-kill", "dry_run": True,
                       "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                  "mode": "one"}}
ALICE = operator("alice", "shop")


class RoundTrips:
    """Counts what redis-py sends: one call per round trip (a pipeline is one)."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    counter = RoundTrips()
    send = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        counter.count += 1
        send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    yield counter


def test_a_submission_is_two_round_trips_before_the_publish(round_trips: RoundTrips) -> None:
    client = fakeredis.FakeRedis()
    queue = RecordingQueue()
    # Two budgets of two windows each: still one round trip for the limiter.
    settings = Settings(api_tokens=[TOKEN], redis_url="redis://127.0.0.1:1/0",
                        api_rate_limit="100000/second;1000000/minute",
                        api_address_rate_limit="100000/second;1000000/minute")
    app = create_app(settings, redis_client=client, queue=queue, registry=default_registry())
    web = app.test_client()
    assert web.post("/api/v1/jobs", json=JOB, headers=AUTH).status_code == 202  # warm up
    before = round_trips.count
    response = web.post("/api/v1/jobs", json=JOB, headers=AUTH)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert round_trips.count - before == 2
    job_id = response.get_json()["id"]
    assert queue.sent[-1] == job_id
    # What the script stored is what the record serialises to, and readable as before.
    raw = client.get(f"pystol:job:{job_id}")
    assert raw is not None
    stored = JobRecord.model_validate_json(raw)
    assert raw.decode() == stored.model_dump_json(exclude={"timeline"})
    assert [event.kind for event in JobStore(client).timeline(job_id)] == ["queued"]
    for index in ("pystol:jobs", "pystol:jobs:status:queued", "pystol:jobs:action:pod-kill",
                  "pystol:jobs:ns:shop"):
        assert client.zscore(index, job_id) is not None, index
    # The submitted counter and the `ok` audit record, in the same script.
    counters = client.hgetall(metrics.COUNTERS_KEY)
    assert int(counters[metrics.submitted_field(stored).encode()]) == 2
    records, _ = AuditLog(client, max_records=100, retention_seconds=3600).read(
        operation="job.submit")
    newest = records[0]
    assert (newest.outcome, newest.job_id) == ("ok", job_id)


def test_the_idempotent_path_still_answers_the_earlier_job(round_trips: RoundTrips) -> None:
    client = fakeredis.FakeRedis()
    queue = RecordingQueue()
    service = SubmissionService(JobStore(client), queue, default_registry(), Settings(),
                                HaltSwitch(client))
    spec = JobSpec.model_validate({**JOB, "idempotency_key": "k-1"})
    first, created = service.submit(spec, Source.API, ALICE)
    assert created is True
    again, created = service.submit(spec, Source.API, ALICE)
    assert (again.id, created) == (first.id, False)
    assert queue.sent == [first.id]


def test_a_halt_set_just_before_refuses_and_stores_nothing() -> None:
    client = fakeredis.FakeRedis()
    audit = AuditLog(client, max_records=100, retention_seconds=3600, approximate=False)
    queue = RecordingQueue()
    service = SubmissionService(JobStore(client), queue, default_registry(), Settings(),
                                HaltSwitch(client), audit=audit)
    store = JobStore(client)
    HaltSwitch(client).engage(store, "sre", "incident")
    with pytest.raises(ChaosHalted, match="sre"):
        service.submit(JobSpec.model_validate(JOB), Source.API, ALICE)
    assert queue.sent == []
    assert client.get("pystol:job-seq") is None
    assert client.zcard("pystol:jobs") == 0
    [record], _ = audit.read(operation="job.submit")
    assert record.outcome == "refused" and "halted" in (record.detail or "")
    # Lifted: the same submission goes through.
    client.delete(HALT_KEY)
    record_after, created = service.submit(JobSpec.model_validate(JOB), Source.API, ALICE)
    assert created and queue.sent == [record_after.id]


def test_the_api_answers_a_halt_with_the_same_409() -> None:
    client = fakeredis.FakeRedis()
    settings = Settings(api_tokens=[TOKEN], redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings, redis_client=client, queue=RecordingQueue(),
                     registry=default_registry())
    client.set(HALT_KEY, '{"by": "sre", "reason": "incident", "since": null}')
    response = app.test_client().post("/api/v1/jobs", json=JOB, headers=AUTH)
    assert response.status_code == 409
    body = response.get_json()
    assert body["type"].endswith("chaos-halted") and "sre" in body["detail"]


def test_celery_sends_no_task_sent_events() -> None:
    conf = make_celery(Settings()).conf
    assert conf.task_send_sent_event is False
    assert conf.worker_send_task_events is False


def test_more_submitting_threads_than_pooled_producers_never_wait_forever() -> None:
    """The API runs more threads than the broker pool holds producers: a thread that kept
    one would leave the next waiting forever, its job stored and never queued."""
    app = Celery("pool-test", broker="memory://")
    app.conf.broker_pool_limit = 2
    queue = CeleryJobQueue(Settings(), app=app)
    threads = [threading.Thread(target=queue.send, args=(f"j-{n}",), daemon=True)
               for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not [thread for thread in threads if thread.is_alive()]


def test_an_audit_stream_that_refuses_never_strands_a_stored_job() -> None:
    """A key of the wrong type where the audit stream lives (written by hand): the job is
    still stored and queued; before, the script stopped half-way with the job stored, its
    idempotency key taken and nothing queued."""
    client = fakeredis.FakeRedis()
    client.set("pystol:audit", "not a stream")
    queue = RecordingQueue()
    settings = Settings(api_tokens=[TOKEN], redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings, redis_client=client, queue=queue, registry=default_registry())
    response = app.test_client().post("/api/v1/jobs", json=JOB,
                                      headers={**AUTH, "Idempotency-Key": "k-1"})
    assert response.status_code == 202, response.get_json()
    assert queue.sent == [response.get_json()["id"]]
