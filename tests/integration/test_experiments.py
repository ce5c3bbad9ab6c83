"""Experiments end to end with real processes: redis-server, pystol-sim over HTTPS, real
Celery workers (prefork, `-c 4` so a parallel pair and its advances have slots).

The run is started the way every surface starts one — `ExperimentService.start` — from
the test process, with the production Celery senders: the worker does everything else
(the `pystol.advance_experiment` tasks, every step's job, the hooks, the reaper's sweep).
What is asserted is what a user sees: the run's status, verdict, score and reason, the
order of its steps' jobs, the cluster (the sim's truth) and Redis left clean.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client, config

from pystol_worker.actions import default_registry
from pystol_worker.core.experiment_model import ExperimentRun, ExperimentStatus, StepStatus
from pystol_worker.core.model import JobRecord, Source, Verdict
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.service import ExperimentService, parse_experiment
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.process.celery_app import CeleryAdvances, CeleryJobQueue
from pystol_worker.store.job_store import JobStore
from tests.integration.conftest import TOKEN, Stack, loopback_probes_policy
from tests.integration.test_action_http_probe_service import make_service, traffic
from tests.support.grants import ADMIN
from tests.support.kube_helpers import wait_for
from tests.support.pystol_processes import Process, worker
from tests.support.redis_server import RedisServer
from tests.support.sim_process import SimProcess

HEARTBEAT = 2.0
REAPER_EVERY = 0.5
FAST_REAPER = {"PYSTOL_HEARTBEAT_SECONDS": str(HEARTBEAT),
               "PYSTOL_REAPER_INTERVAL_SECONDS": str(REAPER_EVERY)}


@dataclass
class Experiments:
    """A sim, a Redis, a worker, and the experiment service as the API builds it."""

    sim: SimProcess
    redis_server: RedisServer
    env: dict[str, str]
    settings: Settings
    service: ExperimentService
    jobs: JobStore
    worker: Process | None = None

    @property
    def stack(self) -> Stack:
        """The shared helpers (make_service, traffic) take a Stack; they use its sim."""
        assert self.worker is not None
        return Stack(self.sim, self.redis_server, self.worker, self.worker, "", TOKEN)

    def kube(self) -> tuple[client.CoreV1Api, client.AppsV1Api, client.NetworkingV1Api]:
        api = config.new_client_from_config(config_file=str(self.sim.kubeconfig))
        return client.CoreV1Api(api), client.AppsV1Api(api), client.NetworkingV1Api(api)

    def start(self, raw: dict[str, Any]) -> ExperimentRun:
        return self.service.start(parse_experiment(raw), Source.API, ADMIN)

    def wait(self, run_id: str, timeout: float = 90.0) -> ExperimentRun:
        deadline = time.monotonic() + timeout
        while True:
            run = self.service.run(run_id)
            if run.status.terminal:
                return run
            if time.monotonic() > deadline:
                tail = self.worker.tail(80) if self.worker else ""
                raise AssertionError(f"run {run_id} still {run.status.value} after "
                                     f"{timeout}s:\n{run.model_dump_json(indent=1)}\n"
                                     f"worker:\n{tail}")
            time.sleep(0.2)

    def job(self, run: ExperimentRun, path: str) -> JobRecord:
        step = next(s for s in [*run.steps, *run.rollbacks] if s.path == path)
        assert step.job_id is not None, f"{path} ran no job"
        return self.jobs.get(step.job_id)

    def assert_clean(self, run: ExperimentRun) -> None:
        """Nothing held, nothing locked, nothing left to advance."""
        client_ = self.redis_server.client()
        assert client_.keys("pystol:journal:*") == [] or all(
            client_.scard(key) == 0 for key in client_.keys("pystol:journal:job:*"))
        assert client_.keys("pystol:lock:*") == []
        assert not client_.exists(f"pystol:xrun:{run.id}:advance")
        assert not client_.sismember("pystol:xruns:running", run.id)


def labelled_service(exp: Experiments, replicas: int = 3) -> str:
    """make_service's namespace, with the Deployment labelled app=svc (workload actions
    select Deployments by their own labels)."""
    namespace = make_service(exp.stack, replicas=replicas)
    _, apps, _ = exp.kube()
    apps.patch_namespaced_deployment("svc", namespace, {"metadata": {"labels": {"app": "svc"}}})
    return namespace


def service_probe(name: str, namespace: str, mode: str = "edge", **fields: Any
                  ) -> dict[str, Any]:
    return {"type": "http", "name": name, "mode": mode,
            "service": {"namespace": namespace, "name": "svc", "port": 80,
                        "path": "/healthz"}, **fields}


@contextmanager
def experiments(workdir: Path, redis_server: RedisServer, concurrency: int = 4
                ) -> Iterator[Experiments]:
    """A flushed Redis, a fresh sim and the service; the worker is the caller's (so that
    one test can kill it and start another)."""
    redis_server.client().flushdb()
    policy = workdir / "policy.yaml"
    policy.write_text(loopback_probes_policy())
    with SimProcess.start(workdir, speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               "PYSTOL_POLICY_FILE": str(policy), **FAST_REAPER}
        settings = Settings(redis_url=redis_server.url, kubeconfig=str(sim.kubeconfig),
                            policy_file=str(policy))
        client_ = redis.Redis.from_url(redis_server.url)
        jobs = JobStore(client_)
        submissions = SubmissionService.from_settings(settings, client_,
                                                      CeleryJobQueue(settings),
                                                      default_registry(), store=jobs)
        advances = CeleryAdvances(settings)
        service = ExperimentService(client_, settings, submissions.policy, submissions,
                                    advances.send, audit=submissions.audit,
                                    send_advance_later=advances.send_later)
        yield Experiments(sim, redis_server, env, settings, service, jobs)


@pytest.fixture(scope="module")
def exp(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
        ) -> Iterator[Experiments]:
    with experiments(tmp_path_factory.mktemp("experiments"), redis_server) as running, \
            worker(running.env, concurrency=4) as process:
        running.worker = process
        yield running


def ts(value: datetime | None) -> float:
    assert value is not None
    return value.timestamp()


# -- the SIGKILL test first: it runs its own workers on its own Redis ----------------------


def test_worker_sigkill_mid_experiment_leaves_nothing_held(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with RedisServer.start(tmp_path / "redis") as own_redis, \
            experiments(tmp_path, own_redis) as exp:
        doomed_cm = worker(exp.env, concurrency=2)
        exp.worker = doomed_cm.__enter__()
        try:
            namespace = labelled_service(exp)
            run = exp.start({
                "name": "sigkill",
                "method": [{"type": "action", "name": "cut", "job": {
                    "action": "network-partition", "duration": "60s",
                    "target": {"namespaces": [namespace], "label_selector": "app=svc",
                               "mode": "fixed", "value": 1}}}],
                "rollbacks": [{"type": "action", "name": "after", "job": {
                    "action": "pod-kill",
                    "target": {"namespaces": [namespace], "label_selector": "app=svc"}}}]})
            _, _, net = exp.kube()
            wait_for(lambda: net.list_namespaced_network_policy(namespace).items, timeout=30)
            exp.worker.kill_group()
            killed_at = time.monotonic()
        finally:
            doomed_cm.__exit__(None, None, None)
        with worker(exp.env, concurrency=2) as second:
            exp.worker = second
            ended = exp.wait(run.id, timeout=REAPER_EVERY + HEARTBEAT + 30)
            took = time.monotonic() - killed_at
            assert ended.status == ExperimentStatus.ABORTED, ended.reason
            assert ended.verdict == Verdict.ABORTED
            assert ended.reason is not None and "method[0]" in ended.reason
            assert "heartbeat" in ended.reason
            # the fault is gone from the cluster, nothing is held, the rollback ran
            assert net.list_namespaced_network_policy(namespace).items == []
            assert ended.rollbacks[0].status == StepStatus.SUCCEEDED
            exp.assert_clean(ended)
            assert took < REAPER_EVERY + HEARTBEAT + 15, took


# -- verdicts ------------------------------------------------------------------------------


def test_serial_then_parallel_passes_in_order_through_the_service_proxy(
        exp: Experiments) -> None:
    web, api = labelled_service(exp), labelled_service(exp)
    before = traffic(exp.stack, web)["requests"]
    run = exp.start({
        "name": "serial-then-parallel",
        "hypothesis": {"probes": [
            service_probe("web-ok", web),
            service_probe("web-live", web, mode="continuous", run={"interval": "1s",
                                                                    "timeout": "0.5s"})]},
        "method": [
            {"type": "action", "name": "kill-one", "job": {
                "action": "pod-kill",
                "target": {"namespaces": [web], "label_selector": "app=svc"}}},
            {"type": "parallel", "name": "stress-both", "steps": [
                {"type": "action", "name": "stress-web", "job": {
                    "action": "cpu-stress", "duration": "4s",
                    "params": {"workers": 1, "load": 50},
                    "target": {"namespaces": [web], "label_selector": "app=svc"}}},
                {"type": "action", "name": "stress-api", "job": {
                    "action": "cpu-stress", "duration": "4s",
                    "params": {"workers": 1, "load": 50},
                    "target": {"namespaces": [api], "label_selector": "app=svc"}}}]}]})
    ended = exp.wait(run.id)
    assert (ended.status, ended.verdict) == (ExperimentStatus.COMPLETED, Verdict.PASSED), \
        ended.model_dump_json(indent=1)
    assert ended.score == 100.0
    first = exp.job(ended, "method[0]")
    web_job = exp.job(ended, "method[1].steps[0]")
    api_job = exp.job(ended, "method[1].steps[1]")
    # step 2's jobs started after step 1 ended; the two parallel jobs overlapped
    assert ts(web_job.started_at) >= ts(first.ended_at)
    assert ts(api_job.started_at) >= ts(first.ended_at)
    assert ts(web_job.started_at) < ts(api_job.ended_at)
    assert ts(api_job.started_at) < ts(web_job.ended_at)
    # the continuous hypothesis probe watched every action step, through the proxy
    for job in (first, web_job, api_job):
        assert any(o.name == "web-live" and o.phase == "during" and o.ok
                   for o in job.result.probes), job.result.probes
    checks = [s for s in ended.steps if s.path in ("before", "after")]
    assert [s.status for s in checks] == [StepStatus.SUCCEEDED, StepStatus.SUCCEEDED]
    outcomes = sum(len(s.probes) for s in ended.steps)
    assert traffic(exp.stack, web)["requests"] - before >= outcomes
    exp.assert_clean(ended)


def test_a_failing_continuous_probe_stops_its_step_and_its_sibling_and_reverts(
        exp: Experiments) -> None:
    web, other = labelled_service(exp), labelled_service(exp)
    interval = 1.0
    run = exp.start({
        "name": "probe-stops",
        "method": [{"type": "parallel", "name": "together", "steps": [
            {"type": "action", "name": "cut-web", "job": {
                "action": "network-partition", "duration": "60s",
                "target": {"namespaces": [web], "label_selector": "app=svc", "mode": "all"},
                "probes": [service_probe("web-live", web, mode="continuous", run={
                    "interval": "1s", "timeout": "0.5s", "stop_on_failure": True})]}},
            {"type": "action", "name": "stress-other", "job": {
                "action": "cpu-stress", "duration": "60s",
                "params": {"workers": 1, "load": 50},
                "target": {"namespaces": [other], "label_selector": "app=svc"}}}]}],
        "rollbacks": [{"type": "action", "name": "tidy", "job": {
            "action": "pod-kill",
            "target": {"namespaces": [other], "label_selector": "app=svc"}}}]})
    ended = exp.wait(run.id, timeout=60)
    assert (ended.status, ended.verdict) == (ExperimentStatus.COMPLETED, Verdict.DEVIATED), \
        ended.model_dump_json(indent=1)
    assert "web-live" in (ended.reason or "")
    cut = exp.job(ended, "method[0].steps[0]")
    sibling = exp.job(ended, "method[0].steps[1]")
    assert cut.verdict == Verdict.DEVIATED and sibling.status.value == "aborted"
    failed = [o for o in cut.result.probes if not o.ok]
    assert failed, cut.result.probes
    first_failure = min(ts(o.ended_at) for o in failed)
    for job in (cut, sibling):
        assert job.result.changes
        for change in job.result.changes:
            assert change.ended_at is not None, change
            assert ts(change.ended_at) - first_failure < interval, (job.id, change)
    _, _, net = exp.kube()
    assert net.list_namespaced_network_policy(web).items == []
    assert ended.rollbacks[0].status == StepStatus.SUCCEEDED, (
        ended.rollbacks[0].model_dump_json(indent=1),
        exp.job(ended, "rollbacks[0]").model_dump_json(indent=1)
        if ended.rollbacks[0].job_id else "no job")
    exp.assert_clean(ended)


def test_a_method_that_leaves_the_hypothesis_unmet_fails(exp: Experiments) -> None:
    web = labelled_service(exp)
    run = exp.start({
        "name": "scaled-away",
        "hypothesis": {"probes": [service_probe("web-ok", web, mode="eot",
                                                run={"initial_delay": "3s"})]},
        "method": [{"type": "action", "name": "scale-to-zero", "hold": "until-rollback",
                    "job": {"action": "deployment-scale", "duration": "2m",
                            "params": {"replicas": 0, "kinds": ["Deployment"]},
                            "target": {"namespaces": [web], "label_selector": "app=svc",
                                       "mode": "all"}}}],
        "rollbacks": [{"type": "release", "name": "scale-back", "step": "scale-to-zero"}]})
    ended = exp.wait(run.id)
    assert (ended.status, ended.verdict) == (ExperimentStatus.COMPLETED, Verdict.FAILED), \
        ended.model_dump_json(indent=1)
    assert (ended.reason or "").startswith("steady state not met after the method")
    assert ended.score == 0.0
    _, apps, _ = exp.kube()
    assert apps.read_namespaced_deployment("svc", web).spec.replicas == 3
    assert ended.rollbacks[0].status == StepStatus.SUCCEEDED
    exp.assert_clean(ended)


def test_a_before_hypothesis_not_met_skips_the_run(exp: Experiments) -> None:
    web = labelled_service(exp)
    core, _, _ = exp.kube()
    pods = {p.metadata.name for p in core.list_namespaced_pod(web).items}
    run = exp.start({
        "name": "not-steady",
        "hypothesis": {"probes": [service_probe("teapot", web, mode="sot",
                                                expect_status=418)]},
        "method": [{"type": "action", "name": "kill", "job": {
            "action": "pod-kill",
            "target": {"namespaces": [web], "label_selector": "app=svc"}}}],
        "rollbacks": [{"type": "action", "name": "kill-again", "job": {
            "action": "pod-kill",
            "target": {"namespaces": [web], "label_selector": "app=svc"}}}]})
    ended = exp.wait(run.id)
    assert (ended.status, ended.verdict) == (ExperimentStatus.SKIPPED, Verdict.SKIPPED), \
        ended.model_dump_json(indent=1)
    assert ended.score is None
    assert [s.job_id is not None for s in ended.steps] == [True, False]
    assert ended.rollbacks[0].job_id is None
    assert {p.metadata.name for p in core.list_namespaced_pod(web).items} == pods
    exp.assert_clean(ended)
