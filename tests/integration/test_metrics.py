"""Observability across processes: `/metrics` with 4 worker processes (2 workers x
concurrency 2), checked against the job records and through a real Prometheus; and the
server-sent event stream of a running job, through gunicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

from pystol_api.cli.api_client import parse_event_stream
from pystol_worker.core.model import JobRecord
from tests.integration.conftest import TOKEN, Stack
from tests.integration.test_pipeline import make_workload, pod_kill
from tests.support.prometheus import real_prometheus
from tests.support.pystol_processes import api, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

#: PYSTOL_METRICS_TOKEN of this stack: /metrics then needs it, and shows namespaces.
METRICS_TOKEN = "metrics-scraper-token-0123456789"


@pytest.fixture(scope="module")
def stack4(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
           ) -> Iterator[Stack]:
    """Two worker processes of two pool processes each: four processes running jobs."""
    redis_server.client().flushdb()
    workdir: Path = tmp_path_factory.mktemp("stack4")
    with SimProcess.start(workdir, speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               "PYSTOL_METRICS_TOKEN": METRICS_TOKEN}
        port = free_port()
        with worker(env, concurrency=2) as first, worker(env, concurrency=2), \
                api(env, port, TOKEN) as api_process:
            yield Stack(sim, redis_server, first, api_process, f"http://127.0.0.1:{port}",
                        TOKEN)


def scrape(stack: Stack, token: str | None = METRICS_TOKEN
           ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(stack.url + "/metrics", timeout=10, headers=headers)
    assert response.status_code == 200, response.text
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return sum(value for (sample, have), value in found.items()
               if sample == name and set(labels.items()) <= set(have))


def test_metrics_match_the_job_records_and_reach_prometheus(stack4: Stack,
                                                             tmp_path: Path) -> None:
    workloads = [make_workload(stack4, replicas=2, start=1.0, ready=1.0) for _ in range(4)]
    targets = [(namespace, selector) for namespace, selector in workloads for _ in range(2)]
    jobs = [stack4.submit(pod_kill(namespace, selector)) for namespace, selector in targets[:7]]
    namespace, _ = workloads[0]
    jobs.append(stack4.submit(pod_kill(namespace, "app=nothing-matches")))
    records = [JobRecord.model_validate(stack4.wait_for_job(job["id"], timeout=90))
               for job in jobs]
    statuses = Counter(record.status.value for record in records)
    assert statuses == {"succeeded": 7, "failed": 1}, [r.reason for r in records]

    # Worker logs are JSON lines; those logged while a job ran carry its id.
    logged = [json.loads(line) for line in stack4.worker.output if line.startswith("{")]
    assert logged and all("level" in line and "message" in line for line in logged)
    with_job = {line["job_id"] for line in logged if "job_id" in line}
    assert with_job and with_job <= {record.id for record in records}

    found = scrape(stack4)
    assert total(found, "pystol_jobs_submitted_total", action="pod-kill", source="api") == 8
    assert total(found, "pystol_jobs_finished_total", status="succeeded",
                 verdict="passed") == 7
    # a job that failed for a reason that is not a probe's says nothing of the system
    assert total(found, "pystol_jobs_finished_total", status="failed", verdict="aborted") == 1
    assert total(found, "pystol_job_duration_seconds_count", action="pod-kill") == 8
    durations = sum((r.finished_at - r.started_at).total_seconds() for r in records
                    if r.finished_at and r.started_at)
    assert total(found, "pystol_job_duration_seconds_sum") == pytest.approx(durations,
                                                                            abs=1e-3)
    assert total(found, "pystol_job_duration_seconds_bucket", le="+Inf") == 8
    dispatch = sum((r.started_at - r.created_at).total_seconds() for r in records
                   if r.started_at)
    assert total(found, "pystol_dispatch_latency_seconds_count") == 8
    assert total(found, "pystol_dispatch_latency_seconds_sum") == pytest.approx(dispatch,
                                                                                abs=1e-3)
    recoveries = [item for r in records for item in r.result.recovery
                  if item.recovery_seconds is not None]
    assert len(recoveries) == 7
    assert total(found, "pystol_recovery_seconds_count", workload_kind="Deployment") == 7
    assert total(found, "pystol_recovery_seconds_sum") == pytest.approx(
        sum(item.recovery_seconds or 0 for item in recoveries), abs=1e-3)
    for ns, _ in workloads:
        expected = sum(len(r.result.changes) for r in records if ns in r.spec.target.namespaces)
        assert total(found, "pystol_targets_affected_total", namespace=ns) == expected
    assert total(found, "pystol_reverts_total", outcome="failed") == 0
    assert total(found, "pystol_kube_api_requests_total") > 0
    assert total(found, "pystol_kube_api_requests_total", verb="delete", code="200") >= 7
    assert total(found, "pystol_jobs_running") == 0
    assert total(found, "pystol_queue_depth", queue="pystol.jobs") == 0
    assert total(found, "pystol_revert_journal_entries") == 0
    assert total(found, "pystol_halted") == 0
    assert requests.get(stack4.url + "/metrics", timeout=10).status_code == 401

    jobs = [{"job_name": "pystol", "metrics_path": "/metrics",
               "authorization": {"credentials": METRICS_TOKEN},
               "static_configs": [{"targets": [stack4.url.removeprefix("http://")]}]}]
    with real_prometheus(tmp_path, jobs) as prometheus:
        prometheus.wait_for('sum(pystol_jobs_finished_total{status="succeeded"})',
                            lambda result: bool(result) and float(result[0]["value"][1]) == 7)
        failed = prometheus.query("sum(pystol_jobs_finished_total) by (status)")["data"][
            "result"]
        assert {item["metric"]["status"]: float(item["value"][1]) for item in failed} == {
            "succeeded": 7.0, "failed": 1.0}


def test_event_stream_follows_a_running_job(stack4: Stack) -> None:
    # Replacement pods take 2 s (real) to become ready: the job runs while we listen.
    namespace, selector = make_workload(stack4, replicas=2, start=0.5, ready=0.5)
    core_annotations = {"sim.pystol.org/start-seconds": "10",
                        "sim.pystol.org/ready-seconds": "10"}
    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(
        stack4.sim.kubeconfig)))
    apps.patch_namespaced_deployment("timed", namespace, {"spec": {"template": {
        "metadata": {"annotations": core_annotations}}}})
    deadline = time.monotonic() + 30
    while True:  # the rollout replaced the pods with slow ones
        status = apps.read_namespaced_deployment("timed", namespace).status
        if (status.updated_replicas or 0) == 2 and (status.ready_replicas or 0) == 2 and \
                (status.replicas or 0) == 2:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    job = stack4.submit(pod_kill(namespace, selector))
    started = time.monotonic()
    response = requests.get(f"{stack4.url}/api/v1/jobs/{job['id']}/events", stream=True,
                            headers={"Authorization": f"Bearer {TOKEN}",
                                     "Accept": "text/event-stream"}, timeout=(5, 30))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    arrivals: list[tuple[float, Any]] = []
    for message in parse_event_stream(response.iter_content(chunk_size=None)):
        arrivals.append((time.monotonic() - started, message))
        if message.event == "end":
            break
    response.close()
    events = [message for _, message in arrivals]
    assert events[-1].event == "end"
    assert json.loads(events[-1].data) == {"status": "succeeded"}
    record = stack4.wait_for_job(job["id"])
    timeline = [event["kind"] for event in record["timeline"]]
    assert [message.event for message in events[:-1]] == timeline
    assert [message.id for message in events[:-1]] == [str(i) for i in range(len(timeline))]
    assert [json.loads(message.data)["message"] for message in events[:-1]] == [
        event["message"] for event in record["timeline"]]
    # Live, not a replay: the terminal event came well after the first ones.
    first_at = arrivals[0][0]
    end_at = arrivals[-1][0]
    assert end_at - first_at > 1.0, arrivals


def test_cli_follow_uses_the_event_stream(stack4: Stack) -> None:
    namespace, selector = make_workload(stack4, replicas=2, start=1.0, ready=1.0)
    job = stack4.submit(pod_kill(namespace, selector))
    env = dict(os.environ, **stack4.env(), PYSTOL_CONFIG="", NO_COLOR="1")
    mark = len(stack4.api.output)
    done = subprocess.run([sys.executable, "-m", "pystol_api.cli", "jobs", "show", job["id"],
                           "--follow"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"job {job['id']} succeeded" in done.stdout
    for kind in ("started", "selected", "injected", "recovered", "succeeded"):
        assert kind in done.stdout, done.stdout
    assert done.stdout.count("injected") == 1  # each event printed once
    access = stack4.api.output[mark:]
    assert any(f"/api/v1/jobs/{job['id']}/events" in line for line in access), access
    # No polling: one read before following and one after the end event.
    polls = [line for line in access if f'GET /api/v1/jobs/{job["id"]} ' in line]
    assert len(polls) <= 2, polls
