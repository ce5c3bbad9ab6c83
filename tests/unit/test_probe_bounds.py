"""What a probe may cost and reach (security review of issue 15): an outcome stays small
whatever the object it reads holds (H1); a probe loop ends with its job and does nothing
after (M1); a Prometheus endpoint open to everyone is for cluster scope only (M3); a URL
probe tests its body only where the admin opts in (M4); every probe call is bounded by
its `run.timeout` and ends on a stop (L2)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import fakeredis
import pytest
from pydantic import TypeAdapter, ValidationError

from pystol_worker.actions.registry import default_registry
from pystol_worker.core.access import AccessDenied
from pystol_worker.core.model import JobSpec, JobStatus, Probe, Source
from pystol_worker.core.policy import Policy, ProbePolicy, PrometheusEndpoint, PrometheusPolicy
from pystol_worker.core.probe_model import with_probe_type
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import grant_for, policy_problems
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.jobs.validation import validate_job
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.kube.fake_cluster import PASS, FakeCluster, Request
from pystol_worker.probes.evaluation import ProbeEnv, evaluate
from pystol_worker.probes.loop import KEEP_BYTES, ProbeLoop
from pystol_worker.safety.outbound_http import ProbeStopped
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore
from tests.support.fake_jobs import FakeJobs, app_deployment, http_server
from tests.support.grants import ADMIN, operator, store_job
from tests.support.manual_clock import ManualClock
from tests.support.prometheus import fake_prometheus, scalar

PROBE = TypeAdapter(Probe)
BLOB = "x" * 250_000  # a tenant's own annotation: 250 KB
KILL_ONE = {"action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                             "mode": "fixed", "value": 1}}
SHOP = operator("shop-op", "shop")


def probe(data: dict[str, Any]) -> Any:
    return PROBE.validate_python(with_probe_type({"name": "p", **data}))


def env(cluster: Any = None, policy: Policy | None = None) -> ProbeEnv:
    return ProbeEnv(settings=Settings(), cluster=cluster or FakeCluster(),
                    policy=policy or Policy(probes=ProbePolicy(allow=["127.0.0.1/32"])))


def blob_deployment() -> FakeCluster:
    fake = FakeCluster()
    deployment = app_deployment(fake, replicas=1)
    stored = fake.get("Deployment", "shop", deployment["metadata"]["name"]) or {}
    stored["metadata"].setdefault("annotations", {})["blob"] = BLOB
    fake.tracker.update("deployments", stored)
    return fake


def blob_probe(name: str = "p", **run: Any) -> Any:
    return probe({"type": "k8s", "name": name, "namespace": "shop",
                  "object": {"kind": "Deployment", "name": "web", "check": "field",
                             "field": {"path": "metadata.annotations.blob", "op": "ne",
                                       "value": "y"}}, **run})


class LoopContext:
    """What ProbeLoop reads of a job's RunContext, with the timeline kept in a list."""

    def __init__(self, fake: FakeCluster) -> None:
        self.settings, self.policy, self.cluster = Settings(), Policy(), fake
        self.stop, self.injected = threading.Event(), threading.Event()
        self.job_id, self.run_id = "j-1", None
        self.events: list[tuple[str, str]] = []
        self.stopped_for: list[str] = []

    def cancelled(self) -> bool:
        return self.stop.is_set()

    def event(self, kind: str, message: str, **data: Any) -> None:
        self.events.append((kind, message))

    def stop_for_probe(self, reason: str) -> None:
        self.stopped_for.append(reason)
        self.stop.set()


def wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- H1: an outcome stays small -------------------------------------------------------------


def test_a_250kb_field_is_cut_in_the_outcome_a_probe_keeps() -> None:
    outcome = evaluate(blob_probe(), env(blob_deployment()), "before")
    assert outcome.ok
    assert isinstance(outcome.value, str) and outcome.value == "x" * 256
    assert len(outcome.model_dump_json()) < 4096


def test_a_non_scalar_value_is_kept_as_short_text() -> None:
    outcome = evaluate(blob_probe(), env(blob_deployment()), "before").model_copy()
    kept = type(outcome).model_validate({**outcome.model_dump(), "value": {"a": BLOB}})
    assert isinstance(kept.value, str) and len(kept.value) == 256


def test_looping_probes_keep_outcomes_within_the_jobs_byte_budget() -> None:
    """20 continuous probes reading the blob, ticked well past the budget: what is kept
    stays under it, and every run is still counted."""
    fake = blob_deployment()
    clock = ManualClock(0.0)
    probes = [blob_probe(f"p{i}", mode="continuous", run={"interval": "0.5s",
                                                           "timeout": "0.4s"})
              for i in range(20)]
    loop = ProbeLoop(LoopContext(fake), probes, clock=clock).start()
    try:
        for tick in range(20):
            clock.now = tick * 0.5
            wait_until(lambda tick=tick: all(s.runs == tick + 1 for s in loop.summaries))
    finally:
        loop.stop()
    kept = sum(len(outcome.model_dump_json()) for outcome in loop.outcomes)
    assert kept <= KEEP_BYTES and loop.budget_spent
    assert 0 < len(loop.outcomes) < 400
    assert [summary.runs for summary in loop.summaries] == [20] * 20


# -- M1: the loop ends with its job --------------------------------------------------------


def test_a_looping_probe_whose_run_is_longer_than_its_interval_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        JobSpec.model_validate({**KILL_ONE, "probes": [
            {"type": "k8s", "name": "p", "namespace": "shop", "mode": "continuous",
             "object": {"kind": "Pod", "name": "web-1"},
             "run": {"interval": 1, "timeout": 1, "attempts": 10, "retry_interval": 3600,
                     "stop_on_failure": True}}]})
    [error] = refused.value.errors()
    assert error["loc"][:2] == ("probes", 0) and error["loc"][-1] == "run"
    assert "attempts x timeout" in error["msg"]
    JobSpec.model_validate({**KILL_ONE, "probes": [
        {"type": "k8s", "name": "p", "namespace": "shop", "mode": "continuous",
         "object": {"kind": "Pod", "name": "web-1"},
         "run": {"interval": 4, "timeout": 1, "attempts": 3, "retry_interval": 0.5}}]})


def test_stop_ends_a_retry_pause_at_once_and_nothing_is_reported_after() -> None:
    """A failing stop-on-failure probe is between attempts when its job ends: `stop()`
    ends the pause, and the second attempt's failure never stops the job (or its run)."""
    fake = FakeCluster()  # no pod web-1: every attempt fails
    ctx = LoopContext(fake)
    failing = probe({"type": "k8s", "name": "p", "namespace": "shop", "mode": "continuous",
                     "object": {"kind": "Pod", "name": "web-1"},
                     "run": {"interval": 20, "timeout": 0.4, "attempts": 2,
                             "retry_interval": 19, "stop_on_failure": True}})
    loop = ProbeLoop(ctx, [failing]).start()
    time.sleep(0.5)  # the first attempt failed; the loop waits for the second
    loop.stop()
    assert loop._thread is not None and not loop._thread.is_alive()
    time.sleep(0.2)
    assert ctx.stopped_for == [] and not ctx.stop.is_set()
    assert [kind for kind, _ in ctx.events] == ["probing"]
    assert loop.left_running == 0


def test_a_failure_seen_as_the_job_ends_is_not_reported() -> None:
    """The job ends while a read is under way, and the read then fails: that failure is
    not the job's, so it neither stops the job nor reaches the timeline."""
    fake = FakeCluster()
    ctx = LoopContext(fake)
    failing = probe({"type": "k8s", "name": "p", "namespace": "shop", "mode": "continuous",
                     "object": {"kind": "Pod", "name": "web-1"},
                     "run": {"interval": 1, "timeout": 0.5, "stop_on_failure": True}})
    loop = ProbeLoop(ctx, [failing])

    def job_ends_during_the_read(request: Request) -> Any:
        threading.Thread(target=loop.stop, daemon=True).start()
        wait_until(loop._done.is_set)
        raise ClusterError("Kubernetes API answered 503: busy", 503)
    fake.prepend_reactor("get", "pods", job_ends_during_the_read)
    loop.start()
    wait_until(lambda: loop._thread is not None and not loop._thread.is_alive())
    assert ctx.stopped_for == [] and [kind for kind, _ in ctx.events] == ["probing"]


# -- M3: Prometheus endpoints ---------------------------------------------------------------


PROM = {"type": "prometheus", "endpoint": "main", "query": "up", "op": "eq", "threshold": 1}
GUARD = {"endpoint": "main", "query": "slo:burn_rate:1h", "max": 1.0}


def prom_policy(namespaces: list[str] | None = None, url: str = "http://127.0.0.1:9") -> Policy:
    endpoint: dict[str, Any] = {"name": "main", "url": url}
    if namespaces is not None:
        endpoint["namespaces"] = namespaces
    return Policy(probes=ProbePolicy(allow=["127.0.0.1/32"]),
                  prometheus=PrometheusPolicy(endpoints=[PrometheusEndpoint(**endpoint)]))


def checked(spec: dict[str, Any], policy: Policy, **options: Any) -> dict[str, str]:
    job = JobSpec.model_validate(spec)
    action, params = validate_job(job, default_registry(), Settings())
    return {p.loc: p.msg for p in policy_problems(job, action, params, policy,
                                                  datetime.now(), **options)}


def test_an_endpoint_is_closed_to_everyone_until_the_admin_opens_it() -> None:
    found = checked({**KILL_ONE, "probes": [PROM], "guard": GUARD}, prom_policy())
    assert set(found) == {"probes[0].endpoint", "guard.endpoint"}
    assert "does not open endpoint 'main' to shop" in found["probes[0].endpoint"]
    assert checked({**KILL_ONE, "probes": [PROM]}, prom_policy(["shop"])) == {}


@pytest.mark.parametrize("scope", [["*"], ["?*"], ["[a-z]*", "[0-9]*"]])
@pytest.mark.parametrize(("use", "loc"), [({"probes": [PROM]}, "probes[0].endpoint"),
                                          ({"guard": GUARD}, "guard.endpoint")])
def test_an_endpoint_open_to_every_namespace_needs_cluster_chaos(
        scope: list[str], use: dict[str, Any], loc: str) -> None:
    spec = JobSpec.model_validate({**KILL_ONE, **use})
    action, params = validate_job(spec, default_registry(), Settings())
    policy = prom_policy(scope)
    with pytest.raises(AccessDenied) as refused:
        grant_for(spec, action, params, SHOP, policy)
    assert refused.value.loc == loc and "cluster.chaos" in str(refused.value)
    assert grant_for(spec, action, params, ADMIN, policy).cluster
    # a namespaced endpoint is no cluster scope
    assert not grant_for(spec, action, params, SHOP, prom_policy(["shop"])).cluster


class SentJobs:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, job_id: str, **_: Any) -> None:
        self.sent.append(job_id)


def test_a_submission_to_a_wide_endpoint_is_403_unless_cluster_chaos() -> None:
    """Through the submission service every producer uses (API, CLI, watcher)."""
    store = JobStore(fakeredis.FakeRedis())
    queue = SentJobs()
    service = SubmissionService(store, queue, default_registry(), Settings(),
                                HaltSwitch(store.redis), policy=prom_policy(["*"]))
    spec = JobSpec.model_validate({**KILL_ONE, "guard": GUARD})
    with pytest.raises(AccessDenied) as refused:
        service.submit(spec, Source.API, SHOP)
    assert refused.value.loc == "guard.endpoint"
    assert store.list().items == [] and queue.sent == []
    record, _ = service.submit(spec, Source.API, ADMIN)
    assert record.grant is not None and record.grant.cluster


def test_the_worker_refuses_a_wide_endpoint_without_a_cluster_grant() -> None:
    """The policy was widened after submission (or the submitter had no cluster.chaos):
    the worker judges the sealed grant again, before the query."""
    with fake_prometheus() as server:
        server.answer = scalar("0.5")
        jobs = FakeJobs(policy=prom_policy(["*"], server.url))
        app_deployment(jobs.fake, replicas=3)
        spec = JobSpec.model_validate({**KILL_ONE, "guard": GUARD})
        job_id = store_job(jobs.store, spec, identity=SHOP, settings=jobs.settings,
                           registry=jobs.runner.registry).id
        record = jobs.run_stored(job_id)
    assert record.status == JobStatus.FAILED
    assert "guard.endpoint" in (record.reason or "") and "cluster.chaos" in (record.reason
                                                                             or "")
    assert server.requests == []


# -- M4: body_contains -----------------------------------------------------------------------


def test_body_contains_on_a_url_probe_needs_the_admins_opt_in() -> None:
    url_probe = {"type": "http", "name": "p", "url": "http://127.0.0.1:9/env",
                 "body_contains": "DB_PASSWORD=a"}
    found = checked({**KILL_ONE, "probes": [url_probe]}, Policy(
        probes=ProbePolicy(allow=["127.0.0.1/32"])))
    assert list(found) == ["probes[0].body_contains"]
    assert "probes.url_body_checks" in found["probes[0].body_contains"]
    assert checked({**KILL_ONE, "probes": [url_probe]}, Policy(
        probes=ProbePolicy(allow=["127.0.0.1/32"], url_body_checks=True))) == {}
    service_probe = {"type": "http", "name": "p", "body_contains": "ok",
                     "service": {"namespace": "shop", "name": "web"}}
    assert checked({**KILL_ONE, "probes": [service_probe]}, Policy()) == {}


def test_the_worker_does_not_test_a_url_body_without_the_opt_in() -> None:
    with http_server() as base:
        outcome = evaluate(probe({"url": f"{base}/200", "body_contains": "ok"}), env(),
                           "before")
        allowed = evaluate(probe({"url": f"{base}/200", "body_contains": "ok"}), env(
            policy=Policy(probes=ProbePolicy(allow=["127.0.0.1/32"], url_body_checks=True))),
            "before")
    assert not outcome.ok and "url_body_checks" in (outcome.error or "")
    assert allowed.ok


# -- L2: every call bounded by run.timeout ----------------------------------------------------


def test_a_prometheus_probe_is_cut_off_at_its_own_timeout() -> None:
    with fake_prometheus() as server:
        server.delay = 3.0
        outcome = evaluate(probe({**PROM, "run": {"timeout": "0.3s"}}),
                           env(policy=prom_policy(["shop"], server.url)), "before")
    assert not outcome.ok and "timed out after 0.3s" in (outcome.error or "")


class SlowReads:
    """API server reads that hang until `released` (a slow API server)."""

    def __init__(self, fake: FakeCluster) -> None:
        self.released = threading.Event()
        fake.prepend_reactor("get", "pods", self.hang)

    def hang(self, request: Request) -> Any:
        self.released.wait(3.0)
        return PASS


def test_a_k8s_probe_is_cut_off_at_its_timeout_and_ends_on_a_stop() -> None:
    fake = FakeCluster()
    fake.add_pod("shop", "web-1")
    slow = SlowReads(fake)
    present = {"type": "k8s", "namespace": "shop", "object": {"kind": "Pod", "name": "web-1"},
               "run": {"timeout": "0.3s"}}
    try:
        outcome = evaluate(probe(present), env(fake), "before")
        assert not outcome.ok and "timed out after 0.3s" in (outcome.error or "")
        stopping = env(fake)
        stopping.should_stop = lambda: True
        with pytest.raises(ProbeStopped):
            evaluate(probe({**present, "run": {"timeout": "5s"}}), stopping, "before")
    finally:
        slow.released.set()
