"""The README's first-run story: `pystol up --sim`, then the line it prints, pasted."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.redis_server import free_port


def read_until(process: subprocess.Popen[str], lines: list[str], pattern: str,
               timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            match = re.search(pattern, line)
            if match:
                return match
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(lines))


def start_up(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    """`pystol up ARGS` with its output collected, line by line, into the list returned."""
    process = subprocess.Popen([sys.executable, "-m", "pystol_api.cli", "up", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
    threading.Thread(target=pump, daemon=True).start()
    return process, lines


@pytest.mark.parametrize("redis_choice", ["server", "fake"])
def test_up_sim_then_run_pod_kill_wait(tmp_path: Path, redis_choice: str) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               # nothing answers there, so `up` starts its own Redis of the chosen kind
               PYSTOL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", HOME=str(tmp_path))
    env.pop("PYSTOL_API_TOKENS", None)
    up, lines = start_up(["--sim", "--port", str(port), "--redis", redis_choice], env)
    try:
        exports = read_until(up, lines, r"^export PYSTOL_API_URL=(\S+) PYSTOL_TOKEN=(\S+)$", 90)
        api_url, token = exports.group(1), shlex.split(exports.group(2))[0]
        assert api_url == f"http://127.0.0.1:{port}" and token
        example = read_until(up, lines, r"^(pystol run pod-kill .*)$", 5).group(1)
        assert "--namespace shop" in example and "--selector app=web" in example
        if redis_choice == "fake":
            assert any("for trying things out" in line for line in lines)

        argv = shlex.split(example)
        assert argv[0] == "pystol" and "--wait" in argv
        # Paste the printed block into "a new terminal": a shell whose PATH has no
        # virtualenv and whose environment has none of Pystol's variables, so the block
        # alone must find `pystol` and say where the API is and as whom to talk to it.
        start = next(i for i, line in enumerate(lines) if line == "In another terminal:")
        block = "\n".join(lines[start + 1: lines.index(example) + 1])
        fresh = {"HOME": str(tmp_path), "PATH": "/usr/local/bin:/usr/bin:/bin",
                 "LANG": "C.UTF-8"}
        assert subprocess.run(["bash", "-c", "command -v pystol"], env=fresh,
                              capture_output=True).returncode != 0, \
            "this test needs a PATH without pystol to mean anything"
        run = subprocess.run(["bash", "-ec", block], env=fresh, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr + "\n".join(lines[-40:])
        assert "succeeded" in run.stdout
        assert re.search(r"recover", run.stdout), run.stdout

        # The same stack runs chaos declared as a custom resource (watcher + installed CRDs).
        kubeconfig = read_until(up, lines, r"^export KUBECONFIG=(\S+)", 5).group(1)
        manifest = tmp_path / "action.yaml"
        manifest.write_text(
            "apiVersion: pystol.org/v1alpha1\nkind: PystolAction\n"
            "metadata: {name: kill-one-cart, namespace: shop}\n"
            "spec: {action: pod-kill, target: {namespaces: [shop], labelSelector: app=cart}}\n")
        kube_env = dict(env, KUBECONFIG=shlex.split(kubeconfig)[0])
        subprocess.run(["kubectl", "apply", "-f", str(manifest)], env=kube_env, check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        phase = ""
        while phase != "Succeeded":
            assert time.monotonic() < deadline, f"PystolAction ended {phase!r}"
            phase = subprocess.run(["kubectl", "get", "pystolaction", "kill-one-cart", "-n",
                                    "shop", "-o", "jsonpath={.status.phase}"], env=kube_env,
                                   capture_output=True, text=True, timeout=30).stdout
            assert phase not in ("Failed", "Aborted"), phase
            time.sleep(0.3)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
    assert code == 0, "\n".join(lines[-30:])
    for child in ("worker", "sim", "beat", "watcher", "api"):
        assert any(f"[{child}" in line for line in lines), child


SNAPSHOT = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: prod-node-1, labels: {kubernetes.io/hostname: prod-node-1}}
  status:
    capacity: {cpu: "8", memory: 32Gi, pods: "110"}
    allocatable: {cpu: "8", memory: 32Gi, pods: "110"}
    conditions: [{type: Ready, status: "True"}]
- apiVersion: v1
  kind: Namespace
  metadata: {name: billing}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: invoices, namespace: billing}
  spec:
    replicas: 2
    selector: {matchLabels: {app: invoices}}
    template:
      metadata: {labels: {app: invoices}}
      spec: {containers: [{name: app, image: registry.example/invoices:7}]}
"""


def test_up_snapshot_runs_chaos_on_a_copy_of_a_cluster(tmp_path: Path) -> None:
    """`pystol up --snapshot FILE`: the stack on a copy of someone's cluster, not the demo."""
    snapshot = tmp_path / "cluster.yaml"
    snapshot.write_text(SNAPSHOT)
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", HOME=str(tmp_path),
               PYSTOL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    env.pop("PYSTOL_API_TOKENS", None)
    up, lines = start_up(["--snapshot", str(snapshot), "--port", str(port), "--redis",
                          "server"], env)
    try:
        exports = read_until(up, lines, r"^export PYSTOL_API_URL=(\S+) PYSTOL_TOKEN=(\S+)$", 90)
        token = shlex.split(exports.group(2))[0]
        # The demo's `shop`/`app=web` is not in this cluster, so no such example is offered.
        assert not any("--namespace shop" in line for line in lines)
        run = subprocess.run(
            [sys.executable, "-m", "pystol_api.cli", "run", "pod-kill", "--namespace", "billing",
             "--selector", "app=invoices", "--wait"],
            env=dict(env, PYSTOL_API_URL=exports.group(1), PYSTOL_TOKEN=token),
            capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr + "\n".join(lines[-40:])
        assert "succeeded" in run.stdout and "billing/invoices-" in run.stdout, run.stdout
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
    assert code == 0, "\n".join(lines[-30:])
