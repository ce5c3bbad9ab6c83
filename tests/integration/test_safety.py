"""Safety rules under concurrency: halt, no overlap, blast-radius guards, a 429 storm."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from pystol_worker.safety.target_locks import journal_key, lock_key
from tests.integration.conftest import TOKEN, Stack
from tests.integration.test_pipeline import make_workload, pod_kill, pods
from tests.support.kube_helpers import pod_ready
from tests.support.pystol_processes import api, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess


def timeline_kinds(record: dict) -> list[str]:
    return [event["kind"] for event in record["timeline"]]


def spread_kill(namespace: str, selector: str, seconds: str = "60s", **extra: object) -> dict:
    """A pod-kill that keeps injecting: its 3 kills are spread evenly over `seconds`."""
    return pod_kill(namespace, selector, mode="all", value=None, duration=seconds,
                    params={"distribution": "uniform"}, **extra)


def test_halt_stops_injections_aborts_running_cancels_queued_refuses_new(stack: Stack) -> None:
    namespace, selector = make_workload(stack, replicas=3, start=0.5, ready=0.5)
    running = [stack.submit(spread_kill(namespace, selector, "3s", on_conflict="wait"))
               for _ in range(2)]
    stack.wait_for_job(running[0]["id"], until=("running",))
    queued = stack.submit(pod_kill(namespace, selector))
    time.sleep(0.5)  # the first job has made its first kill; the next is 1 s later

    response = stack.call("POST", "/api/v1/halt", json={"reason": "incident drill"})
    halted_at = time.time()
    assert response.status_code == 200, response.text
    state = response.json()
    assert state["halted"] is True and state["reason"] == "incident drill"

    refused = stack.call("POST", "/api/v1/jobs", json=pod_kill(namespace, selector))
    assert refused.status_code == 409
    assert "halted" in refused.json()["detail"]
    assert stack.call("GET", "/api/v1/halt").json()["halted"] is True

    for job in running:
        record = stack.wait_for_job(job["id"], timeout=15)
        assert record["status"] in ("aborted", "cancelled")
        assert "halt" in record["reason"]
    assert stack.wait_for_job(queued["id"])["status"] == "cancelled"
    time.sleep(1.5)
    killed_after = [p for p in stack.sim.truth(namespace)
                    if p["deleted"] and p["deleted"] > halted_at + 1.0]
    assert killed_after == [], "a pod was killed more than 1 s after the halt"

    assert stack.call("DELETE", "/api/v1/halt").json()["halted"] is False
    job = stack.submit(pod_kill(namespace, selector))
    assert stack.wait_for_job(job["id"])["status"] == "succeeded"


def test_overlapping_jobs_wait_or_are_refused(stack: Stack) -> None:
    namespace, selector = make_workload(stack, replicas=3, start=0.5, ready=0.5)
    holder = stack.submit(spread_kill(namespace, selector, "3s"))
    stack.wait_for_job(holder["id"], until=("running",))
    time.sleep(0.3)
    rejected = stack.submit(pod_kill(namespace, selector, on_conflict="reject"))
    waiting = stack.submit(pod_kill(namespace, selector, on_conflict="wait"))

    record = stack.wait_for_job(rejected["id"])
    assert record["status"] == "failed"
    assert f"Deployment/{namespace}/timed" in record["reason"]
    assert holder["id"] in record["reason"]
    assert record["metrics"]["targets_affected"] == 0

    first = stack.wait_for_job(holder["id"], timeout=30)
    second = stack.wait_for_job(waiting["id"], timeout=30)
    assert first["status"] == "succeeded" and second["status"] == "succeeded"
    assert "waiting" in timeline_kinds(second)
    first_done = datetime.fromisoformat(first["finished_at"])
    second_kill = datetime.fromisoformat(second["result"]["changes"][0]["at"])
    assert second_kill >= first_done, "the waiting job injected while the first held the lock"
    # The first job killed every pod the waiting one had chosen; after the wait it chose
    # again, and its record names the pod it then killed (what the dashboard shows).
    killed = [change["target"]["name"] for change in second["result"]["changes"]]
    assert [target["name"] for target in second["targets"]] == killed
    assert second["metrics"]["targets_selected"] == len(killed)


def test_max_targets_and_min_available_shrink_the_selection(stack: Stack) -> None:
    namespace, selector = make_workload(stack, replicas=3, start=0.5, ready=0.5)
    capped = stack.submit(pod_kill(namespace, selector, mode="all", value=None,
                                   target_extra={"max_targets": 1}))
    record = stack.wait_for_job(capped["id"])
    assert record["status"] == "succeeded" and record["metrics"]["targets_affected"] == 1
    selected = next(e for e in record["timeline"] if e["kind"] == "selected")
    assert any("max_targets=1" in note for note in selected["data"]["excluded"])

    guarded = stack.submit(pod_kill(namespace, selector, mode="all", value=None,
                                    target_extra={"min_available": 2}))
    record = stack.wait_for_job(guarded["id"])
    assert record["status"] == "succeeded"
    assert record["metrics"]["targets_affected"] == 1
    selected = next(e for e in record["timeline"] if e["kind"] == "selected")
    assert any("min_available=2" in note and "must keep 2" in note
               for note in selected["data"]["excluded"])

    preview = stack.call("POST", "/api/v1/preview", json=pod_kill(
        namespace, selector, mode="all", value=None, target_extra={"min_available": "100%"}))
    assert preview.status_code == 200 and preview.json()["chosen"] == []
    refused = stack.submit(pod_kill(namespace, selector, mode="all", value=None,
                                    target_extra={"min_available": "100%"}))
    record = stack.wait_for_job(refused["id"])
    assert record["status"] == "failed" and "min_available=100%" in record["reason"]
    assert len(pods(stack, namespace, selector)) == 3


def test_a_429_storm_is_absorbed_by_retries(stack: Stack) -> None:
    namespace, selector = make_workload(stack, replicas=3, start=0.5, ready=0.5)
    before = {p.metadata.uid for p in pods(stack, namespace, selector)}
    stack.sim.request("DELETE", "/_sim/requests")
    # A storm in two parts. For the first 2 s every list/get/delete is answered 429: the
    # job's first requests fall in it for certain, so 429s are served on every run, yet
    # with Retry-After: 1 no request meets more than 2 of them there. After that (and
    # during it) 15% of them are answered 429 until the job is done. The worker gives a
    # request 6 attempts, so a run fails only if one of its ~6 requests drew 4 of those
    # in a row after the first phase (0.15^4 each: about 0.3% of runs); 50% made it ~10%.
    for verb in ("list", "delete", "get"):
        for rate, seconds in ((1.0, 2), (0.15, 20)):
            status, _ = stack.sim.request("POST", "/_sim/faults", {
                "verb": verb, "resource": "*", "rate": rate, "code": 429,
                "duration_seconds": seconds})
            assert status == 201
    try:
        job = stack.submit(pod_kill(namespace, selector, mode="fixed", value=2))
        record = stack.wait_for_job(job["id"], timeout=60)
    finally:
        stack.sim.request("DELETE", "/_sim/faults")
        _, served = stack.sim.request("GET", "/_sim/requests")

    # The storm really happened: the sim's own log shows 429s served, pod deletes among
    # them, and every delete that was answered 429 was retried until 2 went through.
    throttled = {(f["verb"], f["resource"]): f["count"] for f in served["faults_served"]
                 if f["code"] == 429}
    assert sum(throttled.values()) > 0, served
    requests = {(r["verb"], r["resource"]): r["count"] for r in served["requests"]}
    assert requests[("delete", "pods")] - throttled.get(("delete", "pods"), 0) == 2, served

    # The job ended as if there had been no storm ...
    assert record["status"] == "succeeded", record["reason"]
    assert record["metrics"]["targets_affected"] == 2
    killed = {change["target"]["uid"] for change in record["result"]["changes"]}
    assert len(killed) == 2 and killed <= before
    assert [r["recovered"] for r in record["result"]["recovery"]] == [True]
    # ... and left nothing behind: the killed pods replaced and ready, no journal entry,
    # no lock on the workload.
    after = pods(stack, namespace, selector)
    assert len(after) == 3 and not killed & {p.metadata.uid for p in after}
    assert all(pod_ready(p) for p in after)
    redis_client = stack.redis.client()
    assert redis_client.hlen("pystol:journal") == 0
    assert not redis_client.exists(f"pystol:journal:job:{job['id']}")
    lock = lock_key("Deployment", namespace, "timed")
    assert not redis_client.exists(lock, journal_key(lock))


@pytest.fixture(scope="module")
def big_cluster(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
                ) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("big")
    scenario = workdir / "big.yaml"
    scenario.write_text(yaml.safe_dump({
        "nodes": [{"name_prefix": "node", "count": 100, "capacity": {"pods": 200}}],
        "namespaces": ["crowd"],
        "deployments": [{"name": "many", "namespace": "crowd", "replicas": 10_000}],
    }))
    with SimProcess.start(workdir, scenario=scenario, speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig)}
        port = free_port()
        with worker(env, concurrency=1) as worker_process, api(env, port, TOKEN) as api_process:
            yield Stack(sim, redis_server, worker_process, api_process,
                        f"http://127.0.0.1:{port}", TOKEN)


def test_selecting_from_10000_pods_pages_instead_of_flooding(big_cluster: Stack) -> None:
    big_cluster.sim.request("DELETE", "/_sim/requests")
    response = big_cluster.call("POST", "/api/v1/preview", json={
        "action": "pod-kill", "target": {"namespaces": ["crowd"], "label_selector": "app=many",
                                         "mode": "fixed", "value": 3}})
    assert response.status_code == 200, response.text
    assert response.json()["matched"] == 10_000
    _, counts = big_cluster.sim.request("GET", "/_sim/requests")
    pod_requests = {(c["verb"], c["resource"]): c["count"] for c in counts["requests"]}
    assert pod_requests == {("list", "pods"): 20}  # 10,000 pods in pages of 500
