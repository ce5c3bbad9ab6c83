"""A copy of a cluster made with the one documented kubectl command, loaded into a second
pystol-sim with `--snapshot`: same nodes, workloads, services and budgets, pods running,
and delays inferred from what the first cluster's pods really did."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.support.sim_process import SimProcess

pytestmark = pytest.mark.e2e

# What the README tells users to run (resource list and flags exactly).
SNAPSHOT_COMMAND = ("get", "nodes,namespaces,deployments,statefulsets,daemonsets,replicasets,"
                    "pods,services,endpoints,poddisruptionbudgets", "-A", "-o", "yaml")
COMPARED = "nodes,namespaces,deployments,statefulsets,daemonsets,services,poddisruptionbudgets"


def items(sim: SimProcess, resources: str) -> list[dict[str, Any]]:
    return json.loads(sim.kubectl("get", resources, "-A", "-o", "json").stdout)["items"]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions") or ())


def settled(sim: SimProcess, expected: int) -> bool:
    pods = items(sim, "pods")
    return len(pods) == expected and all(ready(p) and not p["metadata"].get("deletionTimestamp")
                                         for p in pods)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimProcess, Path]]:
    """The demo cluster at real speed, where shop/web's pods were replaced once (so their
    timestamps show the demo's 1 s start and 2 s ready), and its snapshot file."""
    require_tool("kubectl")
    workdir = tmp_path_factory.mktemp("original")
    with SimProcess.start(workdir, speed=1.0) as sim:
        expected = len(items(sim, "pods"))
        sim.kubectl("delete", "pods", "-n", "shop", "-l", "app=web", "--wait=false")
        sim.wait_for(lambda: settled(sim, expected), timeout=30)
        snapshot = workdir / "cluster.yaml"
        snapshot.write_text(sim.kubectl(*SNAPSHOT_COMMAND).stdout)
        yield sim, snapshot


@pytest.fixture(scope="module")
def copy(original: tuple[SimProcess, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[SimProcess]:
    _, snapshot = original
    with SimProcess.start(tmp_path_factory.mktemp("copy"), speed=10.0,
                          extra_args=("--snapshot", str(snapshot))) as sim:
        yield sim


def described(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], Any]:
    """What a copy must keep of each object: labels, and the spec without what the sim
    fills in itself."""
    out = {}
    for obj in objects:
        meta = obj["metadata"]
        spec = dict(obj.get("spec") or {})
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            spec["template"] = {**spec["template"], "metadata": {
                "labels": spec["template"]["metadata"].get("labels")}}
        if obj["kind"] == "Node":
            spec = {"unschedulable": spec.get("unschedulable", False),
                    "taints": spec.get("taints"),
                    "capacity": obj["status"]["capacity"]}
        out[(obj["kind"], meta.get("namespace", ""), meta["name"])] = (meta.get("labels"), spec)
    return out


def test_the_copy_has_the_same_objects_and_its_pods_come_up(
        original: tuple[SimProcess, Path], copy: SimProcess) -> None:
    first, _ = original
    assert described(items(copy, COMPARED)) == described(items(first, COMPARED))
    pods = items(first, "pods")
    copy.wait_for(lambda: settled(copy, len(pods)), timeout=30)
    owners = sorted((p["metadata"]["namespace"], p["metadata"]["ownerReferences"][0]["kind"],
                     p["metadata"]["labels"]["app"]) for p in items(copy, "pods"))
    assert owners == sorted((p["metadata"]["namespace"], p["metadata"]["ownerReferences"][0][
        "kind"], p["metadata"]["labels"]["app"]) for p in pods)
    # Endpoints are recomputed from the copy's own pods.
    endpoints = {e["metadata"]["name"]: e for e in items(copy, "endpoints")}
    assert len(endpoints["web"]["subsets"][0]["addresses"]) == 3


def test_delays_come_from_the_original_pods_timestamps(copy: SimProcess) -> None:
    web = json.loads(copy.kubectl("get", "deployment", "web", "-n", "shop", "-o",
                                  "json").stdout)
    annotations = web["spec"]["template"]["metadata"]["annotations"]
    # The demo's web pods start in 1 s and are ready 2 s later; kubectl's timestamps are
    # whole seconds, so each delay may read up to one second more.
    assert annotations["sim.pystol.org/start-seconds"] in ("1", "2")
    assert annotations["sim.pystol.org/ready-seconds"] in ("2", "3")
    assert web["metadata"]["annotations"]["sim.pystol.org/snapshot-delays"].endswith(
        "(median of 3 pods)")
    # checkout's template carries the demo scenario's own `ready_seconds: 5`: kept.
    checkout = json.loads(copy.kubectl("get", "deployment", "checkout", "-n", "payments",
                                       "-o", "json").stdout)
    assert checkout["spec"]["template"]["metadata"]["annotations"][
        "sim.pystol.org/ready-seconds"] == "5"


def test_a_broken_snapshot_is_refused_with_the_path_of_the_bad_part(
        original: tuple[SimProcess, Path], tmp_path: Path) -> None:
    _, snapshot = original
    text = snapshot.read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("replicas: 3\n", "replicas: three\n", 1))
    with pytest.raises(RuntimeError) as caught, SimProcess.start(
            tmp_path, extra_args=("--snapshot", str(broken))):
        pass
    message = str(caught.value)
    assert f"pystol-sim: {broken}: items[" in message
    assert "spec.replicas: Input should be a valid integer" in message
