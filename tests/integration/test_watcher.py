"""`pystol watch` as a user runs it: CRDs applied with kubectl, PystolActions become jobs.

Real redis-server, pystol-sim, a Celery worker and the API (the `stack` fixture), and the
watcher as a subprocess (`python -m pystol_api.cli watch`), stopped with SIGTERM.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from pystol_api.crds import crd_dir
from pystol_worker.store.job_store import JobStore
from tests.integration.conftest import Stack
from tests.support.pystol_processes import Process, spawn, start_beat
from tests.support.recovery_truth import assert_matches_truth, whole_again_at
from tests.support.redis_server import free_port

GROUP, VERSION, PLURAL = "pystol.org", "v1alpha1", "pystolactions"


@pytest.fixture(scope="module")
def kube(stack: Stack) -> client.ApiClient:
    stack.sim.kubectl("apply", "-f", str(crd_dir()))
    stack.sim.kubectl("wait", "--for", "condition=Established", "--timeout", "30s",
                      "crd/pystolactions.pystol.org", "crd/clusterkopfpeerings.kopf.dev")
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    for namespace in ("burst", "peers"):
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": namespace}})
    return api_client


@contextmanager
def watcher(stack: Stack, *args: str, name: str = "watch") -> Iterator[Process]:
    handle = start_watcher(stack, *args, name=name)
    try:
        yield handle
    finally:
        handle.stop()


def start_watcher(stack: Stack, *args: str, name: str = "watch") -> Process:
    port = free_port()
    handle = spawn(name, [sys.executable, "-m", "pystol_api.cli", "watch", "--liveness",
                          f"http://127.0.0.1:{port}/healthz", *args], stack.env())
    handle.liveness = f"http://127.0.0.1:{port}/healthz"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(handle.liveness, timeout=2).status_code == 200:  # type: ignore
                return handle
        except requests.RequestException:
            pass
        if handle.process.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"watcher did not start:\n{handle.tail()}")
        time.sleep(0.1)


def objects(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def action(name: str, spec: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolAction",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def apply(stack: Stack, *manifests: dict[str, Any]) -> None:
    text = yaml.safe_dump_all(list(manifests))
    result = subprocess.run(["kubectl", "apply", "-f", "-"], input=text, env=stack.sim.env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def get(kube: client.ApiClient, name: str, namespace: str = "shop") -> dict[str, Any] | None:
    try:
        return objects(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                          name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def wait_for_phase(stack: Stack, kube: client.ApiClient, name: str,
                   phases: tuple[str, ...] = ("Succeeded", "Failed", "Aborted", "Cancelled"),
                   namespace: str = "shop", timeout: float = 60.0,
                   watchers: tuple[Process, ...] = ()) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj = None
    while time.monotonic() < deadline:
        obj = get(kube, name, namespace)
        if obj and (obj.get("status") or {}).get("phase") in phases:
            return obj
        time.sleep(0.1)
    logs = "\n".join(w.tail(60) for w in watchers)
    raise AssertionError(f"{namespace}/{name} not in {phases} after {timeout}s: {obj}\n{logs}"
                         f"\nworker:\n{stack.worker.tail()}")


def jobs_from(stack: Stack, prefix: str) -> list[Any]:
    """Every job record submitted by a custom resource whose namespace/name starts so."""
    store = JobStore(stack.redis.client())
    found, cursor = [], None
    while True:
        page = store.list(cursor=cursor, limit=200)
        found += [r for r in page.items if r.source.value == "cr"
                  and r.submitter.startswith(prefix)]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def queued_lines(handle: Process) -> list[str]:
    return [line for line in handle.output if "pystol.watcher" in line and "queued job" in line]


def test_action_runs_and_status_shows_the_result(stack: Stack,
                                                 kube: client.ApiClient) -> None:
    with watcher(stack) as handle:
        apply(stack, action("kill-one-web", {
            "action": "pod-kill",
            "target": {"namespaces": ["shop"], "labelSelector": "app=web", "mode": "fixed",
                       "value": 1},
            "params": {"gracePeriodSeconds": 0}}))
        obj = wait_for_phase(stack, kube, "kill-one-web", watchers=(handle,))
        status = obj["status"]
        assert status["phase"] == "Succeeded", status
        assert status["action"] == "pod-kill" and status["jobId"].startswith("j-")
        assert status["startedAt"] <= status["finishedAt"]
        result = status["result"]
        assert result["targetsSelected"] == result["targetsAffected"] == 1
        assert result["changes"][0].startswith("deleted Pod shop/web-")
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "Accepted": "True", "Ready": "True", "Succeeded": "True"}
        assert "pystol.org/abort-job" in obj["metadata"]["finalizers"]

        # The same job record as one submitted over HTTP, from source cr.
        record = stack.call("GET", f"/api/v1/jobs/{status['jobId']}").json()
        assert record["source"] == "cr" and record["submitter"] == "shop/kill-one-web"
        assert record["status"] == "succeeded"
        assert record["spec"]["target"]["label_selector"] == "app=web"
        # The status carries the job's recovery, and it matches the sim's truth: from the
        # kill to the replacement (the last web pod) ready.
        assert result["recoverySeconds"] == record["metrics"]["recovery_seconds"]
        [victim] = [c["target"] for c in record["result"]["changes"]]
        truth = stack.sim.truth("shop")
        killed_at = next(p["deleted"] for p in truth if p["uid"] == victim["uid"])
        assert_matches_truth(result["recoverySeconds"], killed_at,
                             whole_again_at(truth, "Deployment", "shop", "web"), "CR pod-kill")
        assert record["spec"]["idempotency_key"] == \
            f"pystolaction:{obj['metadata']['uid']}:1"

        table = stack.sim.kubectl("get", "pystolactions", "-n", "shop").stdout.splitlines()
        assert table[0].split() == ["NAME", "ACTION", "PHASE", "JOB", "AGE"]
        row = next(line.split() for line in table if line.startswith("kill-one-web"))
        assert row[1:4] == ["pod-kill", "Succeeded", status["jobId"]]
        wide = stack.sim.kubectl("get", "pa", "kill-one-web", "-n", "shop", "-o", "wide").stdout
        assert wide.splitlines()[0].split()[:7] == ["NAME", "ACTION", "PHASE", "JOB",
                                                    "AFFECTED", "RECOVERY", "MESSAGE"]

        events = stack.sim.kubectl("get", "events", "-n", "shop", "--field-selector",
                                   "involvedObject.name=kill-one-web", "-o", "json").stdout
        reasons = {e["reason"] for e in json.loads(events)["items"]}
        assert {"JobQueued", "JobSucceeded"} <= reasons, reasons

        liveness = requests.get(handle.liveness, timeout=5)  # type: ignore[attr-defined]
        assert liveness.status_code == 200 and "jobsQueued" in liveness.json()


def test_invalid_cr_fails_with_the_reason_and_a_fixed_spec_runs(stack: Stack,
                                                               kube: client.ApiClient
                                                               ) -> None:
    bad = action("bad-kill", {
        "action": "pod-kill", "target": {"namespaces": ["kube-system"], "mode": "one"},
        "params": {"gracePeriodSeconds": -5}})
    with watcher(stack) as handle:
        apply(stack, bad)
        obj = wait_for_phase(stack, kube, "bad-kill", watchers=(handle,))
        status = obj["status"]
        assert status["phase"] == "Failed" and not status.get("jobId")
        assert "spec.target.namespaces[0]" in status["message"]
        assert "protected" in status["message"]
        assert "spec.params.gracePeriodSeconds" in status["message"]
        assert {c["reason"] for c in status["conditions"]} == {"InvalidSpec"}
        assert jobs_from(stack, "shop/bad-kill") == []
        time.sleep(1.0)  # no crash loop: it stays failed, the watcher keeps running
        assert handle.process.poll() is None
        assert not any("Traceback" in line for line in handle.output), handle.tail()
        assert get(kube, "bad-kill")["status"]["phase"] == "Failed"  # type: ignore[index]

        # Fixing the spec (a new generation) runs it.
        bad["spec"] = {"action": "pod-kill", "dryRun": True,
                       "target": {"namespaces": ["shop"], "labelSelector": "app=web"}}
        apply(stack, bad)
        obj = wait_for_phase(stack, kube, "bad-kill", phases=("Succeeded",),
                             watchers=(handle,))
        assert obj["status"]["observedGeneration"] == 2
        assert len(jobs_from(stack, "shop/bad-kill")) == 1


def test_cr_is_refused_while_chaos_is_halted(stack: Stack, kube: client.ApiClient) -> None:
    with watcher(stack) as handle:
        assert stack.call("POST", "/api/v1/halt", json={"reason": "game day over"}).ok
        try:
            apply(stack, action("while-halted", {
                "action": "pod-kill", "dryRun": True, "target": {"namespaces": ["shop"]}}))
            obj = wait_for_phase(stack, kube, "while-halted", watchers=(handle,))
        finally:
            stack.call("DELETE", "/api/v1/halt")
        assert obj["status"]["phase"] == "Failed"
        assert "chaos is halted" in obj["status"]["message"]
        assert "game day over" in obj["status"]["message"]
        assert jobs_from(stack, "shop/while-halted") == []


def test_original_pystol_shape_runs(stack: Stack, kube: client.ApiClient) -> None:
    killpods = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolAction",
        "metadata": {"name": "pystol-action-pystol-actions-killpods-x1y2z",
                     "namespace": "shop"},
        "spec": {"namespace": "pystol", "collection": "actions", "role": "killpods",
                 "source": "", "action_state": "PystolActionCreating",
                 "workflow_state": "PystolOperatorWaitingAction", "action_stderr": "{}",
                 "action_stdout": "{}",
                 "extra_vars": json.dumps({"pystol_killpods_namespace": "shop",
                                           "pystol_killpods_distribution": "poisson",
                                           "pystol_killpods_amount": 2,
                                           "pystol_killpods_duration": "2s"})}}
    pingtest = action("pystol-action-pystol-actions-pingtest-q7w8e", {
        "collection": "actions", "role": "pingtest", "extra_vars": json.dumps({
            "pystol_pingtest_url": f"{stack.url}/healthz", "pystol_pingtest_count": 2})})
    with watcher(stack) as handle:
        apply(stack, killpods, pingtest)
        obj = wait_for_phase(stack, kube, "pystol-action-pystol-actions-killpods-x1y2z",
                             watchers=(handle,))
        status = obj["status"]
        assert status["phase"] == "Succeeded", status
        assert status["action"] == "pod-kill"
        assert status["result"]["targetsAffected"] == 2
        record = stack.call("GET", f"/api/v1/jobs/{status['jobId']}").json()
        assert record["spec"]["params"] == {"distribution": "poisson"}
        assert record["spec"]["target"]["field_selector"] == "status.phase=Running"

        probe = wait_for_phase(stack, kube, "pystol-action-pystol-actions-pingtest-q7w8e",
                               watchers=(handle,))["status"]
        assert probe["phase"] == "Succeeded" and probe["action"] == "http-probe", probe


def node(stack: Stack, name: str) -> dict[str, Any]:
    return json.loads(stack.sim.kubectl("get", "node", name, "-o", "json").stdout)


def test_deleting_a_running_cr_aborts_and_reverts_before_it_goes(stack: Stack,
                                                                 kube: client.ApiClient
                                                                 ) -> None:
    with watcher(stack) as handle:
        apply(stack, action("cordon-a", {"action": "node-cordon", "duration": "30s",
                                         "target": {"names": ["worker-a"]}}))
        obj = wait_for_phase(stack, kube, "cordon-a", phases=("Running",),
                             watchers=(handle,))
        job_id = obj["status"]["jobId"]
        stack.sim.wait_for(lambda: node(stack, "worker-a")["spec"].get("unschedulable"),
                           timeout=20)

        started = time.monotonic()
        stack.sim.kubectl("delete", "pystolaction", "cordon-a", "-n", "shop", "--wait=false")
        seen_terminating = False
        while (obj := get(kube, "cordon-a")) is not None:
            seen_terminating |= bool(obj["metadata"].get("deletionTimestamp"))
            assert time.monotonic() - started < 25, f"not gone: {obj}\n{handle.tail()}"
            time.sleep(0.02)
        gone_after = time.monotonic() - started
        # The moment the object is gone, the fault is already reverted and the job ended.
        assert not node(stack, "worker-a")["spec"].get("unschedulable")
        record = stack.call("GET", f"/api/v1/jobs/{job_id}").json()
        assert record["status"] == "aborted", record
        assert "deletion of PystolAction shop/cordon-a" in record["reason"]
        assert all(change["reverted_at"] for change in record["result"]["changes"])
        assert seen_terminating or gone_after < 0.1
        assert any("releasing the finalizer" in line for line in handle.output)


def test_restart_in_the_middle_of_a_burst_queues_each_cr_exactly_once(
        stack: Stack, kube: client.ApiClient) -> None:
    total, restart_at = 200, 70
    created: list[str] = []
    api = objects(config.new_client_from_config(config_file=str(stack.sim.kubeconfig)))
    handle = start_watcher(stack, name="watch-1")
    try:
        def create(index: int) -> None:
            name = f"burst-{index:03d}"
            api.create_namespaced_custom_object(GROUP, VERSION, "burst", PLURAL, action(name, {
                "action": "pod-kill", "dryRun": True,
                "target": {"namespaces": ["shop"], "labelSelector": "app=web"}}, "burst"))
            created.append(name)

        for index in range(restart_at):
            create(index)
        # Restart while the watcher is busy with the burst; creation goes on meanwhile.
        handle.process.terminate()
        rest = threading.Thread(target=lambda: [create(i) for i in range(restart_at, total)])
        rest.start()
        handle.process.wait(30)
        first_output = list(handle.output)
        handle = start_watcher(stack, name="watch-2")
        rest.join(120)
        assert len(created) == total

        deadline = time.monotonic() + 120
        while True:
            items = api.list_namespaced_custom_object(GROUP, VERSION, "burst", PLURAL)["items"]
            done = [o for o in items if (o.get("status") or {}).get("phase") == "Succeeded"]
            if len(done) == total:
                break
            assert time.monotonic() < deadline, (f"{len(done)}/{total} succeeded\n"
                                                 f"{handle.tail()}")
            time.sleep(0.5)
    finally:
        handle.stop()
    jobs = jobs_from(stack, "burst/")
    assert len(jobs) == total
    assert len({record.submitter for record in jobs}) == total
    assert {o["status"]["jobId"] for o in items} == {record.id for record in jobs}
    assert all(record.status.value == "succeeded" for record in jobs)
    # Both watchers queued part of the burst.
    assert queued_lines(Process("old", handle.process, first_output))
    assert queued_lines(handle)


def resumed(handle: Process) -> int:
    return sum("Resuming operations" in line for line in handle.output)


def test_two_watchers_with_peering_only_one_acts(stack: Stack, kube: client.ApiClient
                                                 ) -> None:
    def cr(index: int) -> dict[str, Any]:
        return action(f"peer-{index:02d}", {
            "action": "pod-kill", "dryRun": True,
            "target": {"namespaces": ["shop"], "labelSelector": "app=web"}}, "peers")

    with watcher(stack, "--priority", "10", name="watch-low") as low:
        high = start_watcher(stack, "--priority", "20", name="watch-high")
        try:
            stack.sim.wait_for(lambda: any("Pausing operations in favour of" in line
                                           for line in low.output), timeout=30)
            apply(stack, *(cr(i) for i in range(20)))
            for i in range(20):
                wait_for_phase(stack, kube, f"peer-{i:02d}", namespace="peers",
                               phases=("Succeeded",), watchers=(low, high))
            assert len(queued_lines(high)) == 20
            assert queued_lines(low) == []
            resumed_before = resumed(low)
        finally:
            high.stop()
        # The active watcher went away cleanly: the other one takes over.
        stack.sim.wait_for(lambda: resumed(low) > resumed_before, timeout=30)
        apply(stack, *(cr(i) for i in range(20, 25)))
        for i in range(20, 25):
            wait_for_phase(stack, kube, f"peer-{i:02d}", namespace="peers",
                           phases=("Succeeded",), watchers=(low,))
        assert len(queued_lines(low)) == 5
    jobs = jobs_from(stack, "peers/")
    assert len(jobs) == 25 and len({record.submitter for record in jobs}) == 25



def test_schedule_runs_on_beat_and_follows_its_object(stack: Stack,
                                                      kube: client.ApiClient) -> None:
    from pystol_worker.core.settings import Settings
    from pystol_worker.schedules import ScheduleStore

    store = ScheduleStore(stack.redis.client(), Settings(redis_url=stack.redis.url))
    api = objects(kube)

    def schedule() -> dict[str, Any]:
        return api.get_namespaced_custom_object(GROUP, VERSION, "shop", "pystolschedules",
                                                "every-2s")

    def status_where(predicate: Any, timeout: float = 45.0) -> dict[str, Any]:
        return stack.sim.wait_for(lambda: predicate(schedule().get("status") or {})
                                  and schedule()["status"], timeout=timeout, interval=0.2)

    beat = start_beat(stack.env())
    try:
        with watcher(stack) as handle:
            apply(stack, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolSchedule",
                "metadata": {"name": "every-2s", "namespace": "shop"},
                "spec": {"interval": "2s", "concurrencyPolicy": "Forbid", "historyLimit": 5,
                         "template": {"action": "pod-kill", "dryRun": True, "target": {
                             "namespaces": ["shop"], "labelSelector": "app=web"}}}},
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolSchedule",
                 "metadata": {"name": "bad-cron", "namespace": "shop"},
                 "spec": {"schedule": "61 * * * *", "template": {
                     "action": "pod-kill", "target": {"namespaces": ["kube-system"]}}}})
            status = status_where(lambda s: s.get("phase") == "Active")
            assert status["scheduleId"] == "cr.shop.every-2s"
            assert status["nextRunAt"] and status["message"] == "every 2s"
            record = store.get("cr.shop.every-2s")
            assert record.source.value == "cr" and record.submitter == "shop/every-2s"
            assert record.spec.concurrency_policy.value == "Forbid"

            bad = api.get_namespaced_custom_object(GROUP, VERSION, "shop", "pystolschedules",
                                                   "bad-cron")["status"]
            assert bad["phase"] == "Failed"
            assert "spec.schedule: invalid cron expression" in bad["message"]
            assert not store.exists("cr.shop.bad-cron")

            # Beat fires it; the timer puts the runs in the status.
            status = status_where(lambda s: s.get("lastJobId") and s.get("recentRuns"))
            assert status["recentRuns"][0]["outcome"] in ("started", "skipped")
            job = stack.wait_for_job(status["lastJobId"])
            assert job["source"] == "schedule" and job["status"] == "succeeded", job
            table = stack.sim.kubectl("get", "pystolschedules", "-n", "shop").stdout
            assert table.splitlines()[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND",
                                                     "PHASE", "LAST", "RUN", "NEXT", "RUN",
                                                     "AGE"]

            # Suspending the object pauses the schedule.
            stack.sim.kubectl("patch", "pystolschedule", "every-2s", "-n", "shop", "--type",
                              "merge", "-p", '{"spec": {"suspend": true}}')
            status_where(lambda s: s.get("phase") == "Suspended", timeout=20)
            assert store.get("cr.shop.every-2s").spec.paused

            # Deleted through the API behind the watcher's back: the timer puts it back.
            store.delete("cr.shop.every-2s")
            stack.sim.wait_for(lambda: store.exists("cr.shop.every-2s"), timeout=30)
            assert store.get("cr.shop.every-2s").spec.paused

            # Deleting the object removes the schedule.
            stack.sim.kubectl("delete", "pystolschedule", "every-2s", "-n", "shop")
            assert not store.exists("cr.shop.every-2s")
            assert handle.process.poll() is None
    finally:
        beat.stop()
