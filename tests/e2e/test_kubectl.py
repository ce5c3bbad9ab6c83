"""Real kubectl v1.35 against pystol-sim: the commands an SRE types every day."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.sim_process import SimProcess

pytestmark = pytest.mark.e2e

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"""

WIDGET = """
apiVersion: example.com/v1
kind: Widget
metadata: {name: big, namespace: shop}
spec: {size: 7}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    require_tool("kubectl")
    with SimProcess.start(tmp_path_factory.mktemp("kubectl"), speed=10.0) as sim:
        yield sim


def pods(sim: SimProcess, *args: str) -> list[dict]:
    out = sim.kubectl("get", "pods", "-o", "json", *args).stdout
    return json.loads(out)["items"]


def test_version_is_1_35(cluster: SimProcess) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["minor"] == "35"
    assert out["serverVersion"]["gitVersion"].startswith("v1.35")


def test_get_nodes_prints_status_and_version_columns(cluster: SimProcess) -> None:
    out = cluster.kubectl("get", "nodes").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert set(rows) == {"control-plane", "worker-a", "worker-b", "worker-c"}
    assert all(row[1] == "Ready" for row in rows.values())
    assert rows["control-plane"][2] == "control-plane"


def test_get_pods_with_selector_and_wide_columns(cluster: SimProcess) -> None:
    out = cluster.kubectl("get", "pods", "-n", "shop", "-l", "app=web", "-o", "wide").stdout
    lines = out.splitlines()
    assert lines[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert len(lines) == 4
    for line in lines[1:]:
        cells = line.split()
        assert cells[0].startswith("web-") and cells[1] == "1/1" and cells[2] == "Running"
        assert cells[6].startswith("worker-") or cells[6] == "control-plane"


def test_get_deployments_and_output_formats(cluster: SimProcess) -> None:
    lines = cluster.kubectl("get", "deployments", "-n", "shop").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert any(line.split()[:2] == ["web", "3/3"] for line in lines[1:])
    as_json = json.loads(cluster.kubectl("get", "deployment", "web", "-n", "shop",
                                         "-o", "json").stdout)
    assert as_json["status"]["readyReplicas"] == 3
    as_yaml = cluster.kubectl("get", "deployment", "web", "-n", "shop", "-o", "yaml").stdout
    assert "kind: Deployment" in as_yaml and "readyReplicas: 3" in as_yaml


def test_describe_pod_shows_events(cluster: SimProcess) -> None:
    before = {p["metadata"]["name"] for p in pods(cluster, "-n", "shop", "-l", "app=cart")}
    victim = sorted(before)[0]
    cluster.kubectl("delete", "pod", victim, "-n", "shop")

    def replacement() -> str | None:
        names = {p["metadata"]["name"] for p in pods(cluster, "-n", "shop", "-l", "app=cart")}
        fresh = sorted(names - before)
        return fresh[0] if fresh else None
    new_pod = cluster.wait_for(replacement)
    def described() -> str | None:
        text = cluster.kubectl("describe", "pod", new_pod, "-n", "shop").stdout
        # Wait for the events, not for "Start Time:", which is there from the beginning.
        return text if "Successfully assigned" in text and "Started container" in text \
            else None
    out = cluster.wait_for(described)
    assert "Successfully assigned shop/" in out
    assert re.search(rf"^Name:\s+{new_pod}$", out, re.M)
    assert re.search(r"^Status:\s+Running$", out, re.M)


def test_delete_pod_comes_back(cluster: SimProcess) -> None:
    before = {p["metadata"]["name"] for p in pods(cluster, "-n", "shop", "-l", "app=web")}
    victim = sorted(before)[0]
    cluster.kubectl("delete", "pod", victim, "-n", "shop")
    cluster.kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=web", "-n", "shop",
                    "--timeout=30s")
    after = {p["metadata"]["name"] for p in pods(cluster, "-n", "shop", "-l", "app=web")}
    assert victim not in after
    assert len(after) == 3


def test_scale_and_rollout_status(cluster: SimProcess) -> None:
    cluster.kubectl("scale", "deployment", "web", "-n", "shop", "--replicas=5")
    out = cluster.kubectl("rollout", "status", "deployment/web", "-n", "shop",
                          "--timeout=30s").stdout
    assert 'deployment "web" successfully rolled out' in out
    assert len(pods(cluster, "-n", "shop", "-l", "app=web")) == 5
    cluster.kubectl("scale", "deployment", "web", "-n", "shop", "--replicas=3")
    cluster.wait_for(lambda: len(pods(cluster, "-n", "shop", "-l", "app=web")) == 3)


def test_cordon_drain_uncordon(cluster: SimProcess) -> None:
    node = "worker-b"
    cluster.kubectl("cordon", node)
    status = cluster.kubectl("get", "node", node).stdout.splitlines()[1].split()[1]
    assert status == "Ready,SchedulingDisabled"
    out = cluster.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                          "--timeout=60s", timeout=90).stdout
    assert f"node/{node} drained" in out
    left = pods(cluster, "-A", "--field-selector", f"spec.nodeName={node}")
    assert left and all(p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
                        for p in left)
    cluster.kubectl("uncordon", node)
    status = cluster.kubectl("get", "node", node).stdout.splitlines()[1].split()[1]
    assert status == "Ready"
    cluster.kubectl("rollout", "status", "deployment/web", "-n", "shop", "--timeout=30s")


def test_apply_crd_then_custom_resource(cluster: SimProcess, tmp_path: Path) -> None:
    (tmp_path / "crd.yaml").write_text(CRD)
    (tmp_path / "widget.yaml").write_text(WIDGET)
    assert "created" in cluster.kubectl("apply", "-f", str(tmp_path / "crd.yaml")).stdout
    cluster.wait_for(lambda: cluster.kubectl("get", "widgets", "-A", check=False)
                     .returncode == 0)
    assert "widget.example.com/big created" in cluster.kubectl(
        "apply", "-f", str(tmp_path / "widget.yaml")).stdout
    lines = cluster.kubectl("get", "wd", "-n", "shop").stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "SIZE"]
    assert lines[1].split()[:2] == ["big", "7"]
    # Applying the same file again is a no-op; a change is patched in.
    assert "unchanged" in cluster.kubectl("apply", "-f", str(tmp_path / "widget.yaml")).stdout
    (tmp_path / "widget.yaml").write_text(WIDGET.replace("size: 7", "size: 9"))
    assert "configured" in cluster.kubectl("apply", "-f", str(tmp_path / "widget.yaml")).stdout
    widget = json.loads(cluster.kubectl("get", "widget", "big", "-n", "shop", "-o",
                                        "json").stdout)
    assert widget["spec"]["size"] == 9 and widget["metadata"]["generation"] == 2
    (tmp_path / "bad.yaml").write_text(WIDGET.replace("size: 7", "size: 0")
                                       .replace("name: big", "name: tiny"))
    bad = cluster.kubectl("apply", "-f", str(tmp_path / "bad.yaml"), check=False)
    assert bad.returncode != 0 and "spec.size" in bad.stderr


def test_wait_for_ready_pods(cluster: SimProcess) -> None:
    out = cluster.kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=checkout",
                          "-n", "payments", "--timeout=30s").stdout
    assert out.count("condition met") == 2


def test_wrong_token_is_refused(cluster: SimProcess) -> None:
    out = cluster.kubectl("get", "pods", "--token", "not-the-token", check=False)
    assert out.returncode != 0
    assert "Unauthorized" in out.stderr or "provide credentials" in out.stderr


STRESS_POD = """
apiVersion: v1
kind: Pod
metadata: {name: burner, namespace: load}
spec:
  nodeName: worker-c
  containers:
    - name: stress
      image: ghcr.io/colinianking/stress-ng:latest
      resources:
        limits: {cpu: "2", memory: 2Gi}
"""


def top(sim: SimProcess, *args: str) -> dict[str, tuple[int, int]]:
    """`kubectl top ...` as {name: (millicores, MiB)}."""
    lines = sim.kubectl("top", *args, "--no-headers").stdout.splitlines()
    usage = {}
    for line in lines:
        name, cpu, *rest = line.split()
        memory = next(value for value in rest if value.endswith("Mi"))
        usage[name] = (int(cpu.removesuffix("m")), int(memory.removesuffix("Mi")))
    return usage


def test_kubectl_top_shows_usage_and_a_stress_pod_raises_its_nodes(
        cluster: SimProcess, tmp_path: Path) -> None:
    """metrics.k8s.io as metrics-server serves it: `kubectl top` works against the sim, and
    what Pystol's stress actions create (a stress-ng pod) shows on its node."""
    nodes = top(cluster, "nodes")
    assert set(nodes) == {"control-plane", "worker-a", "worker-b", "worker-c"}
    assert all(cpu > 0 and memory > 0 for cpu, memory in nodes.values())
    shop = top(cluster, "pods", "-n", "shop")
    running = {pod["metadata"]["name"] for pod in pods(cluster, "-n", "shop")
               if pod["status"].get("phase") == "Running"}
    assert set(shop) == running and shop
    web = top(cluster, "pods", "-n", "shop", "-l", "app=web")
    assert web and set(web) < set(shop)

    cluster.kubectl("create", "namespace", "load")
    manifest = tmp_path / "burner.yaml"
    manifest.write_text(STRESS_POD)
    cluster.kubectl("apply", "-f", str(manifest))
    try:
        cluster.wait_for(lambda: pods(cluster, "-n", "load")[0]["status"].get("phase")
                         == "Running", timeout=30)
        after = top(cluster, "nodes")
        assert after["worker-c"][0] - nodes["worker-c"][0] >= 1500  # the 2 cores it may use
        assert after["worker-c"][1] - nodes["worker-c"][1] >= 1500  # and its 2 GiB
        assert top(cluster, "pods", "-n", "load")["burner"] == (2000, 2048)
    finally:
        cluster.kubectl("delete", "namespace", "load", "--wait=false")
