"""`pystol-sim` as a process: start-up line, kubeconfig, bad scenarios, clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.sim_process import SimProcess


def test_serves_demo_and_writes_a_usable_kubeconfig(tmp_path: Path) -> None:
    with SimProcess.start(tmp_path) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        config = yaml.safe_load(sim.kubeconfig.read_text())
        assert config["current-context"] == "pystol-sim"
        assert config["clusters"][0]["cluster"]["server"] == sim.url
        assert config["clusters"][0]["cluster"]["certificate-authority-data"]
        status, nodes = sim.request("GET", "/api/v1/nodes")
        assert status == 200
        assert {n["metadata"]["name"] for n in nodes["items"]} == {
            "control-plane", "worker-a", "worker-b", "worker-c"}
        status, body = sim.request("GET", "/api/v1/namespaces")
        assert {"shop", "payments", "kube-system"} <= {n["metadata"]["name"]
                                                        for n in body["items"]}
        sim.process.send_signal(signal.SIGTERM)
        assert sim.process.wait(10) == 0


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    with SimProcess.start(tmp_path) as sim:
        sim.process.send_signal(signal.SIGINT)
        assert sim.process.wait(10) == 0


def test_bad_scenario_is_refused_with_file_and_field(tmp_path: Path) -> None:
    scenario = tmp_path / "broken.yaml"
    scenario.write_text("nodes:\n  - name: n1\nnamespaces: [shop]\ndeployments:\n"
                        "  - name: web\n    namespace: shop\n    replicas: -2\n")
    result = subprocess.run([sys.executable, "-m", "pystol_sim", "--scenario", str(scenario),
                             "--kubeconfig", str(tmp_path / "kc")], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(scenario) in result.stderr
    assert "deployments[0].replicas" in result.stderr
    assert "greater than or equal to 0" in result.stderr
    assert not (tmp_path / "kc").exists()


def test_custom_scenario_and_speed(tmp_path: Path) -> None:
    scenario = tmp_path / "small.yaml"
    scenario.write_text(yaml.safe_dump({
        "nodes": [{"name_prefix": "n", "count": 5}],
        "namespaces": ["team"],
        "deployments": [{"name": "api", "namespace": "team", "replicas": 7}],
    }))
    with SimProcess.start(tmp_path, scenario=scenario, speed=20) as sim:
        status, pods = sim.request("GET", "/api/v1/namespaces/team/pods?labelSelector=app%3Dapi")
        assert status == 200 and len(pods["items"]) == 7
        nodes = {p["spec"]["nodeName"] for p in pods["items"]}
        assert nodes <= {f"n-{i}" for i in range(5)} and len(nodes) == 5


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with SimProcess.start(tmp_path) as sim:
        port = sim.url.rsplit(":", 1)[1]
        result = subprocess.run([sys.executable, "-m", "pystol_sim", "--port", port,
                                 "--kubeconfig", str(tmp_path / "other")], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 1
        assert f"cannot serve on 127.0.0.1:{port}" in result.stderr
        assert "Traceback" not in result.stderr


def test_help_lists_every_option() -> None:
    out = subprocess.run([sys.executable, "-m", "pystol_sim", "--help"], capture_output=True,
                         text=True, timeout=30).stdout
    for option in ("--scenario", "--host", "--port", "--kubeconfig", "--speed"):
        assert option in out
