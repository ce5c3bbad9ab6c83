"""The `pystol` console script against the real thing: the API under gunicorn, a Celery
worker, redis-server and pystol-sim (the `stack` fixture). tests/unit/test_cli.py checks
the CLI against canned answers; here every command's effect is checked where it lands,
through the API and in the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import Stack
from tests.integration.test_pipeline import make_workload, pods
from tests.support.kube_helpers import pod_ready, wait_for

PYSTOL = str(Path(sys.executable).with_name("pystol"))  # the console script pip installed


def pystol(stack: Stack, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYSTOL_API_URL=stack.url, PYSTOL_TOKEN=stack.token)
    env.pop("PYSTOL_CONFIG", None)  # the environment alone says where the API is
    return subprocess.run([PYSTOL, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def pystol_json(stack: Stack, *args: str, expect: int = 0) -> Any:
    result = pystol(stack, *args, "-o", "json")
    assert result.returncode == expect, (args, result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)  # one JSON document on stdout, nothing else


def unschedulable(stack: Stack, node: str) -> bool:
    core, _ = stack.kube_clients()
    return bool(core.read_node(node).spec.unschedulable)


def node_names(stack: Stack) -> list[str]:
    core, _ = stack.kube_clients()
    return sorted(n.metadata.name for n in core.list_node().items
                  if "node-role.kubernetes.io/control-plane" not in (n.metadata.labels or {}))


def cordon_jobs(stack: Stack) -> list[str]:
    items = stack.call("GET", "/api/v1/jobs?action=node-cordon&limit=100").json()["items"]
    return [job["id"] for job in items]


def test_actions_lists_what_the_api_offers(stack: Stack) -> None:
    catalogue = stack.call("GET", "/api/v1/actions").json()["items"]
    assert pystol_json(stack, "actions") == catalogue
    table = pystol(stack, "actions")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TARGETS", "DESCRIPTION"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(a["name"] for a in catalogue)
    assert {"pod-kill", "node-cordon", "memory-stress"} <= {a["name"] for a in catalogue}


def test_run_wait_then_jobs_list_and_show(stack: Stack) -> None:
    namespace, selector = make_workload(stack, replicas=3, start=0.5, ready=0.5)
    before = {p.metadata.uid for p in pods(stack, namespace, selector)}

    # run --wait: follows the job to its end, the record on stdout, exit 0 for success.
    record = pystol_json(stack, "run", "pod-kill", "-n", namespace, "-l", selector,
                         "--mode", "fixed", "--value", "1", "--wait")
    job_id = record["id"]
    assert record["status"] == "succeeded", record
    assert record["source"] == "cli"
    # ... and it did happen, in the cluster: one pod replaced, all ready again.
    [change] = record["result"]["changes"]
    assert change["target"]["uid"] in before
    after = pods(stack, namespace, selector)
    assert len(after) == 3 and all(pod_ready(p) for p in after)
    assert change["target"]["uid"] not in {p.metadata.uid for p in after}
    stored = stack.call("GET", f"/api/v1/jobs/{job_id}").json()
    assert stored["status"] == "succeeded" and stored["source"] == "cli"

    # A run that does not succeed exits 1 (nothing matches this selector).
    failed = pystol(stack, "run", "pod-kill", "-n", namespace, "-l", "app=nothing", "--wait")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)

    # jobs list: the API's list, filtered as asked; the table shows the same jobs.
    listed = pystol_json(stack, "jobs", "list", "-n", namespace)
    api_list = stack.call("GET", f"/api/v1/jobs?namespace={namespace}").json()["items"]
    assert [j["id"] for j in listed["items"]] == [j["id"] for j in api_list]
    assert job_id in [j["id"] for j in listed["items"]] and len(listed["items"]) == 2
    succeeded = pystol_json(stack, "jobs", "list", "-n", namespace, "--status", "succeeded")
    assert [j["id"] for j in succeeded["items"]] == [job_id]
    table = pystol(stack, "jobs", "list", "-n", namespace)
    assert table.returncode == 0, table.stderr
    assert job_id in table.stdout and "succeeded" in table.stdout

    # jobs show: the stored record; the human form names the pod it killed.
    shown = pystol_json(stack, "jobs", "show", job_id)
    assert shown["id"] == job_id and shown["status"] == "succeeded"
    assert shown["result"] == stored["result"]
    text = pystol(stack, "jobs", "show", job_id)
    assert text.returncode == 0, text.stderr
    assert "succeeded" in text.stdout and change["target"]["name"] in text.stdout

    missing = pystol(stack, "jobs", "show", "j-does-not-exist")
    assert missing.returncode == 2 and missing.stderr.startswith("error:")


def test_jobs_cancel_aborts_a_held_fault_and_reverts_it(stack: Stack) -> None:
    node = node_names(stack)[-1]
    assert not unschedulable(stack, node)
    queued = pystol_json(stack, "run", "node-cordon", "--node", node, "--duration", "60s")
    job_id = queued["id"]
    wait_for(lambda: unschedulable(stack, node), timeout=20)
    assert stack.call("GET", f"/api/v1/jobs/{job_id}").json()["status"] == "running"

    cancelled_at = time.monotonic()
    answer = pystol_json(stack, "jobs", "cancel", job_id)
    assert answer["id"] == job_id and answer["status"] == "running"  # asked to abort
    record = stack.wait_for_job(job_id, timeout=15)
    assert record["status"] == "aborted", record
    assert time.monotonic() - cancelled_at < 10, "the 60 s hold was not cut short"
    assert not unschedulable(stack, node)  # reverted
    [change] = record["result"]["changes"]
    assert change["reverted_at"] is not None and change["error"] is None
    assert stack.redis.client().hlen("pystol:journal") == 0

    # Cancelling it again is refused: exit 2 and one error line.
    again = pystol(stack, "jobs", "cancel", job_id)
    assert again.returncode == 2 and again.stderr.startswith("error:"), again.stderr


def test_halt_on_status_off(stack: Stack) -> None:
    node = node_names(stack)[0]
    holder = stack.submit({"action": "node-cordon", "target": {"names": [node]},
                           "duration": "60s"})
    wait_for(lambda: unschedulable(stack, node), timeout=20)
    try:
        state = pystol_json(stack, "halt", "--reason", "cli drill")
        assert state["halted"] is True and state["reason"] == "cli drill"
        assert state["aborted_jobs"] == 1
        # The running job aborts and reverts; the API agrees chaos is halted.
        record = stack.wait_for_job(holder["id"], timeout=15)
        assert record["status"] in ("aborted", "cancelled") and "halt" in record["reason"]
        assert not unschedulable(stack, node)
        assert stack.call("GET", "/api/v1/halt").json()["halted"] is True

        status = pystol_json(stack, "halt", "--status")
        assert status["halted"] is True and status["reason"] == "cli drill"
        shown = pystol(stack, "halt", "--status")
        assert shown.returncode == 0 and "chaos is HALTED" in shown.stdout
        assert "cli drill" in shown.stdout
        # While halted the CLI's own jobs are refused (409: exit 2) and nothing is stored.
        jobs_before = cordon_jobs(stack)
        refused = pystol(stack, "run", "node-cordon", "--node", node, "--duration", "5s")
        assert refused.returncode == 2 and "halted" in refused.stderr, refused.stderr
        assert cordon_jobs(stack) == jobs_before

        lifted = pystol_json(stack, "halt", "--off")
        assert lifted["halted"] is False
    finally:
        stack.call("DELETE", "/api/v1/halt")
    assert stack.call("GET", "/api/v1/halt").json()["halted"] is False
    shown = pystol(stack, "halt", "--status")
    assert shown.returncode == 0 and "chaos is not halted" in shown.stdout
    # Chaos runs again.
    record = pystol_json(stack, "run", "node-cordon", "--node", node, "--duration", "1s",
                         "--wait")
    assert record["status"] == "succeeded", record
    assert not unschedulable(stack, node)
