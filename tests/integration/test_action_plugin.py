"""A third-party action installed with pip is found through the `pystol.actions` entry points.

The example package under examples/pystol-action-example is installed (editable) into
the running venv for this module only; the stack is started after that, because a
worker sees entry points only when it starts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.integration.conftest import TOKEN, Stack
from tests.support.pystol_processes import api, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pystol-action-example"
DIST = "pystol-action-example"
KEY = "example.pystol.org/chaos"


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def plugin() -> Iterator[None]:
    egg_info = EXAMPLE / "pystol_action_example.egg-info"
    had_egg_info = egg_info.exists()
    # Offline: build with the venv's own setuptools. Setuptools older than 70.1 cannot
    # build an editable wheel without the `wheel` package; then let pip build it in an
    # isolated environment from the configured index.
    result = pip("install", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE))
    if result.returncode != 0:
        result = pip("install", "--no-deps", "-e", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        found = subprocess.run(
            [sys.executable, "-c", "from importlib import metadata; print([e.name for e in "
             "metadata.entry_points(group='pystol.actions')])"],
            capture_output=True, text=True, check=True, timeout=60).stdout
        assert "example-annotate" in found
        yield
    finally:
        removed = pip("uninstall", "-y", DIST)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        if not had_egg_info:
            shutil.rmtree(egg_info, ignore_errors=True)


@pytest.fixture(scope="module")
def plugin_stack(plugin: None, tmp_path_factory: pytest.TempPathFactory,
                 redis_server: RedisServer) -> Iterator[Stack]:
    """A stack of this module's own, started after the plug-in was installed."""
    redis_server.client().flushdb()
    workdir = tmp_path_factory.mktemp("plugin-stack")
    with SimProcess.start(workdir, speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig)}
        port = free_port()
        with worker(env, concurrency=2) as worker_process, \
                api(env, port, TOKEN) as api_process:
            yield Stack(sim, redis_server, worker_process, api_process,
                        f"http://127.0.0.1:{port}", TOKEN)


def core_api(stack: Stack) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(stack.sim.kubeconfig)))


def make_workload(stack: Stack) -> str:
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    namespace = f"plugin-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "notes"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "notes"},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": {"team": "blue"}},
                              "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}})
    deadline = time.monotonic() + 30
    while (apps.read_namespaced_deployment("notes", namespace).status.ready_replicas or 0) < 3:
        assert time.monotonic() < deadline, "deployment never became ready"
        time.sleep(0.1)
    return namespace


def annotations(stack: Stack, namespace: str) -> dict[str, dict[str, str]]:
    return {p.metadata.name: dict(p.metadata.annotations or {})
            for p in core_api(stack).list_namespaced_pod(namespace,
                                                         label_selector="app=notes").items}


def annotate(namespace: str, **extra: Any) -> dict[str, Any]:
    return {"action": "example-annotate", "duration": "2s",
            "target": {"namespaces": [namespace], "label_selector": "app=notes",
                       "mode": "fixed", "value": 2}, **extra}


def wait_for_holding(stack: Stack, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        record = stack.call("GET", f"/api/v1/jobs/{job_id}").json()
        if "holding" in [event["kind"] for event in record["timeline"]]:
            return record
        assert record["status"] in ("queued", "running"), record
        assert time.monotonic() < deadline, record
        time.sleep(0.05)


def test_catalogue_lists_the_plugin_with_its_params_schema(plugin_stack: Stack) -> None:
    response = plugin_stack.call("GET", "/api/v1/actions")
    assert response.status_code == 200
    entries = {entry["name"]: entry for entry in response.json()["items"]}
    assert "pod-kill" in entries  # the built-ins are still there
    entry = entries["example-annotate"]
    assert entry["targets"] == "pods"
    assert "example third-party action" in entry["description"]
    schema = entry["params_schema"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"key", "value", "seed"}
    assert schema["properties"]["key"]["default"] == KEY


def test_plugin_annotates_while_held_and_restores_after(plugin_stack: Stack) -> None:
    stack = plugin_stack
    namespace = make_workload(stack)
    before = annotations(stack, namespace)
    job = stack.submit(annotate(namespace, params={"value": "held"}))
    record = wait_for_holding(stack, job["id"])
    chosen = {target["name"] for target in record["targets"]}
    assert len(chosen) == 2
    held = annotations(stack, namespace)
    for name, notes in held.items():
        if name in chosen:
            assert notes == {**before[name], KEY: "held"}
        else:
            assert notes == before[name]

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert annotations(stack, namespace) == before
    changes = record["result"]["changes"]
    assert {c["target"]["name"] for c in changes} == chosen
    assert all(c["reverted_at"] and c["revert"] == "undo example-annotate/restore-annotation"
               for c in changes)
    core = core_api(stack)
    for name in chosen:
        events = core.list_namespaced_event(namespace,
                                            field_selector=f"involvedObject.name={name}").items
        mine = sorted(e.reason for e in events if job["id"] in (e.message or ""))
        assert mine == ["PystolChaos", "PystolRevert"]
    assert stack.redis.client().hlen("pystol:journal") == 0


def test_plugin_restores_a_value_that_was_there(plugin_stack: Stack) -> None:
    stack = plugin_stack
    namespace = make_workload(stack)
    before = annotations(stack, namespace)
    job = stack.submit(annotate(namespace, params={"key": "team", "value": "red"}))
    record = wait_for_holding(stack, job["id"])
    chosen = {target["name"] for target in record["targets"]}
    assert {annotations(stack, namespace)[name]["team"] for name in chosen} == {"red"}
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert annotations(stack, namespace) == before


def test_plugin_params_are_validated_and_dry_run_changes_nothing(plugin_stack: Stack) -> None:
    stack = plugin_stack
    response = stack.call("POST", "/api/v1/jobs", json=annotate("shop", params={"colour": 1}))
    assert response.status_code == 422 and "params.colour" in response.text
    response = stack.call("POST", "/api/v1/jobs", json=annotate("shop", duration=None))
    assert response.status_code == 422 and "duration" in response.text
    namespace = make_workload(stack)
    before = annotations(stack, namespace)
    job = stack.submit(annotate(namespace, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    assert annotations(stack, namespace) == before
