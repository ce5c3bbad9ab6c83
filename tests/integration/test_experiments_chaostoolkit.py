"""The same Chaos Toolkit experiment file gives the same verdict under `chaos run` and under
Pystol (issue 15, "Done when").

Each file of `tests/data/ctk` runs twice, each time against a fresh `pystol-sim` loaded
from the same scenario:

1. by Chaos Toolkit itself — `.tools/ctk/bin/chaos run --journal-path j.json FILE`
   (chaostoolkit 1.19.0, chaostoolkit-lib 1.44.0, chaostoolkit-kubernetes 0.39.0, the
   versions the mapping follows; `scripts/dev.sh setup` installs them in their own venv),
   with the sim's kubeconfig and its CA in `REQUESTS_CA_BUNDLE`, so TLS stays verified;
   its journal is read by `ctk_verdict`;
2. by Pystol — `pystol run -f FILE --wait -o json` against a whole stack (redis-server,
   a Celery worker, the API), then `pystol jobs show RUN --journal -`.

Both must give the expected verdict: passes → passed, deviates (Chaos Toolkit's
"deviated") → failed, before-fails → skipped. Both read the API server address and token
from the environment (`CTK_*`), as a user's experiment would.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from pystol_worker.core.model import Verdict
from pystol_worker.experiments.ctk_journal import JOURNAL_KEYS, ctk_verdict
from tests.integration.conftest import Stack, running_stack
from tests.support.kube_helpers import wait_for
from tests.support.redis_server import RedisServer
from tests.support.sim_process import SimProcess

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data" / "ctk"
CHAOS = ROOT / ".tools" / "ctk" / "bin" / "chaos"
PYSTOL = str(Path(sys.executable).with_name("pystol"))
# web: 3 replicas behind Service web:80; a replacement pod is ready 1 s after it is created
# (10 simulated seconds at the sim's speed 10), well within the files' 10 s pause.
SCENARIO = """
nodes: [{name: node-a}, {name: node-b}]
namespaces: [shop]
timings: {start_seconds: 0, ready_seconds: 0}
deployments:
  - name: web
    namespace: shop
    replicas: 3
    labels: {app: web}
    timings: {start_seconds: 5, ready_seconds: 5}
    containers: [{name: app, image: shop/web:1, ports: [8080]}]
services:
  - name: web
    namespace: shop
    selector: {app: web}
    ports: [{name: http, port: 80, target_port: 8080}]
"""
CASES = [("passes.json", Verdict.PASSED, 0),
         ("deviates.json", Verdict.FAILED, 1),
         ("before-fails.json", Verdict.SKIPPED, 3)]


def chaos_toolkit() -> Path:
    if not CHAOS.exists():
        pytest.fail(f"{CHAOS} is missing: `bash scripts/dev.sh setup` installs Chaos Toolkit "
                    "there (this test compares Pystol's verdict with its own)")
    return CHAOS


def ctk_environment(sim: SimProcess, workdir: Path) -> dict[str, str]:
    """What a user's shell would have: the experiment's variables (API server, token)."""
    config = yaml.safe_load(sim.kubeconfig.read_text())
    ca = workdir / "sim-ca.pem"
    ca.write_bytes(base64.b64decode(config["clusters"][0]["cluster"]
                                    ["certificate-authority-data"]))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("KUBERNETES_", "PYSTOL_"))}
    return {**env, "KUBECONFIG": str(sim.kubeconfig), "REQUESTS_CA_BUNDLE": str(ca),
            "CTK_API_SERVER": sim.url, "CTK_TOKEN": sim.token}


def web_ready(sim: SimProcess) -> bool:
    status, pods = sim.request("GET", "/api/v1/namespaces/shop/pods?labelSelector=app%3Dweb")
    return status == 200 and sum(
        any(c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or ())
        for pod in pods["items"]) == 3


def scenario_file(workdir: Path) -> Path:
    path = workdir / "scenario.yaml"
    path.write_text(SCENARIO)
    return path


@contextmanager
def fresh_sim(workdir: Path) -> Iterator[SimProcess]:
    workdir.mkdir(parents=True, exist_ok=True)
    with SimProcess.start(workdir, scenario=scenario_file(workdir), speed=10.0) as sim:
        wait_for(lambda: web_ready(sim), timeout=30)
        yield sim


def chaos_run(experiment: Path, workdir: Path) -> tuple[int, dict[str, Any]]:
    """(exit code, journal) of `chaos run` on a fresh sim."""
    with fresh_sim(workdir) as sim:
        journal_path = workdir / "journal.json"
        result = subprocess.run(
            [str(chaos_toolkit()), "--no-version-check", "run", "--journal-path",
             str(journal_path), str(experiment)],
            env=ctk_environment(sim, workdir), cwd=workdir, capture_output=True, text=True,
            timeout=180)
        assert journal_path.exists(), (result.returncode, result.stdout, result.stderr)
        return result.returncode, json.loads(journal_path.read_text())


def pystol(stack: Stack, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**ctk_environment(stack.sim, workdir), "PYSTOL_API_URL": stack.url,
           "PYSTOL_TOKEN": stack.token}
    try:
        return subprocess.run([PYSTOL, *args], env=env, capture_output=True, text=True,
                              timeout=150)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"pystol {' '.join(args)} still ran after 150s:\n{expired.stdout!s}\n"
                    f"{expired.stderr!s}\nworker:\n{stack.worker.tail()}")


@pytest.mark.parametrize(("name", "expected", "pystol_exit"), CASES,
                         ids=[case[0].removesuffix(".json") for case in CASES])
def test_same_verdict_under_chaos_run_and_pystol(tmp_path: Path, redis_server: RedisServer,
                                                 name: str, expected: Verdict,
                                                 pystol_exit: int) -> None:
    experiment = DATA / name

    ctk_exit, journal = chaos_run(experiment, tmp_path / "chaos-run")

    assert ctk_verdict(journal) == expected, json.dumps(journal, indent=1)[:4000]
    assert ctk_exit == (1 if expected == Verdict.FAILED else 0)

    workdir = tmp_path / "pystol"
    workdir.mkdir()
    with running_stack(workdir, redis_server,
                       sim_args=("--scenario", str(scenario_file(workdir)))) as stack:
        wait_for(lambda: web_ready(stack.sim), timeout=30)
        result = pystol(stack, workdir, "run", "-f", str(experiment), "--wait", "-o", "json")
        assert result.stdout, (result.returncode, result.stderr, stack.worker.tail())
        run = json.loads(result.stdout)

        assert run["verdict"] == expected.value, (run, stack.worker.tail())
        assert result.returncode == pystol_exit, (result.returncode, result.stderr)

        shown = pystol(stack, workdir, "jobs", "show", run["id"], "--journal", "-")
        assert shown.returncode == 0, shown.stderr
        pystol_journal = json.loads(shown.stdout)
        assert tuple(pystol_journal) == JOURNAL_KEYS
        assert ctk_verdict(pystol_journal) == expected
        # the journal a journal reader sees says what chaos run's said
        assert (pystol_journal["status"], pystol_journal["deviated"]) == (
            journal["status"], journal["deviated"])
        assert [entry["activity"] for entry in pystol_journal["run"]] == [
            entry["activity"] for entry in journal["run"]]

        if name == "deviates.json":
            # the rollback released the held scale: web has its 3 replicas again
            status, web = stack.sim.request("GET",
                                            "/apis/apps/v1/namespaces/shop/deployments/web")
            assert status == 200 and web["spec"]["replicas"] == 3
            assert stack.redis.client().hlen("pystol:journal") == 0
