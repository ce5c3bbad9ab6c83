"""Metrics recorded in (fake) Redis by the job store and the runner's helpers, rendered by
the API's collector; and `GET /metrics` through the app, without a token."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta

import fakeredis
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from pystol_api.http.app import create_app
from pystol_api.http.metrics_endpoint import render
from pystol_worker.actions import default_registry
from pystol_worker.core.model import (
    Change,
    JobSpec,
    JobStatus,
    Source,
    TargetRef,
    WorkloadRecovery,
    WorkloadRef,
)
from pystol_worker.core.settings import Settings
from pystol_worker.safety.revert_journal import JournalEntry, UndoRegistry
from pystol_worker.store import metrics
from pystol_worker.store.job_store import HALT_KEY, JobStore
from tests.support.grants import signed_journal

QUEUE = "pystol.jobs"


def spec(action: str = "pod-kill") -> JobSpec:
    return JobSpec.model_validate({"action": action, "target": {
        "namespaces": ["shop"], "label_selector": "app=web", "mode": "one"}})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_collector_renders_what_was_recorded(client: fakeredis.FakeRedis) -> None:
    store = JobStore(client)
    ok, _ = store.create(spec(), Source.CLI, "alice")
    bad, _ = store.create(spec(), Source.API, "bob")
    queued, _ = store.create(spec("node-drain"), Source.SCHEDULE, "beat")
    running, _ = store.create(spec("node-drain"), Source.API, "bob")
    for job in (ok, bad, running):
        store.claim(job.id, "w1")

    def outcome(record):  # type: ignore[no-untyped-def]
        target = TargetRef(kind="Pod", namespace="shop", name="web-1")
        record.started_at = record.created_at + timedelta(seconds=0.3)
        record.result.changes = [Change(target=target, action="kill", at=record.started_at,
                                        reverted_at=record.started_at)]
        record.result.recovery = [WorkloadRecovery(
            workload=WorkloadRef(kind="Deployment", namespace="shop", name="web"),
            desired_replicas=2, first_injection_at=record.started_at, recovered=True,
            recovery_seconds=3.0)]
    store.finish(ok.id, JobStatus.SUCCEEDED, "1 target(s) affected", change=outcome)
    store.finish(bad.id, JobStatus.FAILED, "steady state not met after recovery: x")
    store.request_cancel(queued.id, by="carol")
    counter = metrics.KubeRequestCounter(client, interval=3600)
    counter("list", 200)
    counter("list", 200)
    counter("delete", 404)
    counter.flush()
    client.rpush(QUEUE, "a", "b")
    client.set(HALT_KEY, '{"by": "carol"}')
    client.hset("pystol:journal", "e1", "{}")

    found = samples(render(client, QUEUE).decode())

    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("pystol_jobs_submitted_total", action="pod-kill", source="cli") == 1
    assert value("pystol_jobs_submitted_total", action="node-drain", source="api") == 1
    assert value("pystol_jobs_submitted_total", action="node-drain", source="schedule") == 1
    assert value("pystol_jobs_finished_total", action="pod-kill", status="succeeded",
                 verdict="passed") == 1
    assert value("pystol_jobs_finished_total", action="pod-kill", status="failed",
                 verdict="failed") == 1
    assert value("pystol_jobs_finished_total", action="node-drain", status="cancelled",
                 verdict="aborted") == 1
    assert value("pystol_jobs_running", action="node-drain") == 1
    assert value("pystol_queue_depth", queue=QUEUE) == 2
    assert value("pystol_halted") == 1
    assert value("pystol_revert_journal_entries") == 1
    assert value("pystol_targets_affected_total", action="pod-kill", namespace="shop") == 1
    assert value("pystol_reverts_total", action="pod-kill", outcome="reverted") == 1
    assert value("pystol_kube_api_requests_total", verb="list", code="200") == 2
    assert value("pystol_kube_api_requests_total", verb="delete", code="404") == 1
    recovery = {"action": "pod-kill", "namespace": "shop", "workload_kind": "Deployment"}
    assert value("pystol_recovery_seconds_count", **recovery) == 1
    assert value("pystol_recovery_seconds_sum", **recovery) == 3.0
    assert value("pystol_recovery_seconds_bucket", le="2.5", **recovery) == 0
    assert value("pystol_recovery_seconds_bucket", le="5.0", **recovery) == 1
    assert value("pystol_recovery_seconds_bucket", le="+Inf", **recovery) == 1
    assert value("pystol_dispatch_latency_seconds_count") == 3
    assert value("pystol_job_duration_seconds_count", action="pod-kill") == 2
    # buckets are cumulative
    buckets = [v for (name, labels), v in found.items()
               if name == "pystol_dispatch_latency_seconds_bucket"]
    assert max(buckets) == 3


def test_metrics_endpoint_needs_no_token(client: fakeredis.FakeRedis) -> None:
    class NoQueue:
        def send(self, job_id: str) -> None:
            pass
    settings = Settings(api_tokens=["t"], queue=QUEUE)
    app = create_app(settings, redis_client=client, queue=NoQueue(),
                     registry=default_registry())
    JobStore(client).create(spec(), Source.API, "alice")
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.get_data(as_text=True)
    assert 'pystol_jobs_submitted_total{action="pod-kill",source="api"} 1.0' in text
    for family in ("pystol_jobs_finished_total", "pystol_job_duration_seconds",
                   "pystol_recovery_seconds", "pystol_queue_depth", "pystol_halted"):
        assert f"# TYPE {family.removesuffix('_total')}" in text


def closed_port_client() -> redis.Redis:
    """A real client pointed at a port nothing listens on: every command is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # no retries and short timeouts, so the refusal is immediate
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                       socket_timeout=0.5, retry=Retry(NoBackoff(), 0))


def disconnected_fake_client() -> redis.Redis:
    """fakeredis's own connection-error switch: it lives on the server, not the client."""
    server = fakeredis.FakeServer()
    server.connected = False
    return fakeredis.FakeRedis(server=server)


@pytest.mark.parametrize("broken_client", [closed_port_client, disconnected_fake_client])
def test_metrics_never_fail_the_caller(broken_client: Callable[[], redis.Redis]) -> None:
    labels = {"action": "a", "source": "api"}
    broken = broken_client()
    with pytest.raises(redis.ConnectionError):  # the connection really is broken
        broken.hgetall(metrics.COUNTERS_KEY)
    recorder = metrics.Recorder().inc(metrics.JOBS_SUBMITTED, labels)
    recorder.flush(broken)  # must not raise
    assert not recorder.counters  # dropped, not kept to grow forever

    # the same flush against a working client does record, so the one above was attempted
    working = fakeredis.FakeRedis()
    metrics.Recorder().inc(metrics.JOBS_SUBMITTED, labels).flush(working)
    found = samples(render(working, QUEUE).decode())
    assert found[("pystol_jobs_submitted_total", (("action", "a"), ("source", "api")))] == 1


def test_reaper_reverts_are_counted(client: fakeredis.FakeRedis) -> None:
    def _ok(cluster: object, entry: JournalEntry) -> None:
        pass

    def _boom(cluster: object, entry: JournalEntry) -> None:
        raise RuntimeError("still broken")

    registry = UndoRegistry({"ok": _ok, "boom": _boom})

    journal = signed_journal(client)
    target = TargetRef(kind="Node", name="n1")
    entries = [journal.record(JournalEntry(job_id="j-1", action="node-cordon", undo=undo,
                                           target=target)) for undo in ("ok", "boom")]
    undone, failed = journal.undo_all(None, entries, registry)  # type: ignore[arg-type]
    assert len(undone) == 1 and len(failed) == 1
    found = samples(render(client, QUEUE).decode())
    assert found[("pystol_reverts_total", (("action", "node-cordon"),
                                           ("outcome", "reverted")))] == 1
    assert found[("pystol_reverts_total", (("action", "node-cordon"),
                                           ("outcome", "failed")))] == 1
    assert found[("pystol_revert_journal_entries", ())] == 1
