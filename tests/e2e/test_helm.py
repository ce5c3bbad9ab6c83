"""Real helm v4 installs a small chart into pystol-sim and removes it again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.sim_process import SimProcess

pytestmark = pytest.mark.e2e
CHART = Path(__file__).parent / "charts" / "hello"


def helm(sim: SimProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["helm", *args], env=sim.env(), capture_output=True, text=True,
                            timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_helm_install_list_uninstall(fresh_sim: SimProcess) -> None:
    require_tool("helm")
    assert "v4." in helm(fresh_sim, "version", "--short").stdout
    out = helm(fresh_sim, "install", "demo", str(CHART), "-n", "shop", "--wait",
               "--timeout", "60s").stdout
    assert "STATUS: deployed" in out

    releases = json.loads(helm(fresh_sim, "list", "-n", "shop", "-o", "json").stdout)
    assert [(r["name"], r["status"], r["chart"]) for r in releases] == [
        ("demo", "deployed", "hello-0.1.0")]
    deploy = json.loads(fresh_sim.kubectl("get", "deployment", "demo-hello", "-n", "shop",
                                          "-o", "json").stdout)
    assert deploy["status"]["readyReplicas"] == 2
    config = json.loads(fresh_sim.kubectl("get", "configmap", "demo-hello", "-n", "shop",
                                          "-o", "json").stdout)
    assert config["data"] == {"greeting": "hello"}
    fresh_sim.kubectl("get", "service", "demo-hello", "-n", "shop")

    out = helm(fresh_sim, "upgrade", "demo", str(CHART), "-n", "shop", "--set",
               "greeting=bonjour", "--wait", "--timeout", "60s").stdout
    assert "REVISION: 2" in out
    config = json.loads(fresh_sim.kubectl("get", "configmap", "demo-hello", "-n", "shop",
                                          "-o", "json").stdout)
    assert config["data"] == {"greeting": "bonjour"}

    assert 'release "demo" uninstalled' in helm(fresh_sim, "uninstall", "demo", "-n",
                                                "shop").stdout
    assert json.loads(helm(fresh_sim, "list", "-n", "shop", "-o", "json").stdout) == []
    for kind in ("deployment", "service", "configmap"):
        missing = fresh_sim.kubectl("get", kind, "demo-hello", "-n", "shop", check=False)
        assert missing.returncode != 0 and "NotFound" in missing.stderr
    secrets = json.loads(fresh_sim.kubectl("get", "secrets", "-n", "shop", "-l", "owner=helm",
                                           "-o", "json").stdout)["items"]
    assert secrets == []
