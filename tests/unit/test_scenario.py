"""Scenario files: the demo loads, generators scale, and bad files are refused clearly."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pystol_sim.scenario import (
    BUILTIN_NAMESPACES,
    KUBELET_VERSION,
    READY_ANNOTATION,
    TERMINATE_ANNOTATION,
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_manifests,
)


def _by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid scenario\n"), message
    assert "Traceback" not in message
    return path, message


# --------------------------------------------------------------------------- the demo


def test_demo_loads_and_expands() -> None:
    scenario = load_scenario(None)
    assert scenario.name == "demo"
    manifests = scenario_manifests(scenario)
    kinds = Counter(m["kind"] for m in manifests)
    assert kinds == {"Namespace": 7, "Node": 4, "Deployment": 3, "StatefulSet": 1,
                     "DaemonSet": 1, "Service": 4, "PodDisruptionBudget": 1}
    assert "Pod" not in kinds  # controllers create workload pods

    # Dependency order: namespaces, nodes, workloads, pods, services, budgets.
    order = ["Namespace", "Node", "Deployment", "StatefulSet", "DaemonSet", "Pod", "Service",
             "PodDisruptionBudget"]
    ranks = [order.index(m["kind"]) for m in manifests]
    assert ranks == sorted(ranks)

    namespaces = [m["metadata"]["name"] for m in manifests if m["kind"] == "Namespace"]
    assert namespaces[:4] == list(BUILTIN_NAMESPACES)
    assert set(namespaces[4:]) == {"shop", "payments", "monitoring"}

    for m in manifests:
        assert "uid" not in m["metadata"]
        assert "resourceVersion" not in m["metadata"]
        assert "creationTimestamp" not in m["metadata"]


def test_demo_nodes() -> None:
    nodes = _by_kind(scenario_manifests(load_scenario(None)), "Node")
    assert len(nodes) == 4
    control = [n for n in nodes.values()
               if "node-role.kubernetes.io/control-plane" in n["metadata"]["labels"]]
    assert len(control) == 1
    assert control[0]["spec"]["taints"][0]["effect"] == "NoSchedule"
    workers = [n for n in nodes.values() if n not in control]
    zones = {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in workers}
    assert len(zones) == 3
    for name, node in nodes.items():
        assert node["apiVersion"] == "v1"
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == name
        assert node["status"]["nodeInfo"]["kubeletVersion"] == KUBELET_VERSION
        assert node["status"]["capacity"]["pods"] == "110"
        assert node["status"]["allocatable"] == node["status"]["capacity"]
        assert node["status"]["conditions"] == [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status"}]
        assert node["spec"]["unschedulable"] is False
    ips = [n["status"]["addresses"][0]["address"] for n in nodes.values()]
    assert len(set(ips)) == 4 and all(ip.startswith("10.0.") for ip in ips)


def test_demo_workloads() -> None:
    manifests = scenario_manifests(load_scenario(None))
    deployments = _by_kind(manifests, "Deployment")
    assert set(deployments) == {"web", "cart", "checkout"}
    web = deployments["web"]
    assert web["apiVersion"] == "apps/v1"
    assert web["metadata"]["namespace"] == "shop"
    assert web["spec"]["replicas"] == 3
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web", "tier": "frontend"}}
    assert web["spec"]["template"]["metadata"]["labels"] == {"app": "web", "tier": "frontend"}
    assert "annotations" not in web["metadata"]
    assert deployments["cart"]["spec"]["replicas"] == 2
    assert deployments["cart"]["spec"]["selector"]["matchLabels"] == {"app": "cart"}

    checkout = deployments["checkout"]
    assert checkout["metadata"]["namespace"] == "payments"
    assert checkout["metadata"]["annotations"] == {READY_ANNOTATION: "5"}
    assert checkout["spec"]["template"]["metadata"]["annotations"] == {READY_ANNOTATION: "5"}

    sts = _by_kind(manifests, "StatefulSet")["orders-db"]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "orders-db"
    assert sts["metadata"]["namespace"] == "payments"
    assert sts["spec"]["template"]["metadata"]["annotations"][TERMINATE_ANNOTATION] == "10"

    ds = _by_kind(manifests, "DaemonSet")["node-exporter"]
    assert ds["metadata"]["namespace"] == "monitoring"
    assert "replicas" not in ds["spec"]
    assert ds["spec"]["template"]["spec"]["tolerations"][0]["operator"] == "Exists"

    services = _by_kind(manifests, "Service")
    assert set(services) >= {"web", "cart", "checkout"}
    assert services["cart"]["spec"]["ports"] == [
        {"port": 80, "targetPort": 8080, "protocol": "TCP"}]
    assert services["orders-db"]["spec"]["clusterIP"] == "None"

    pdb = _by_kind(manifests, "PodDisruptionBudget")["web"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 2}


# --------------------------------------------------------------------------- generators


def test_generated_node_group_of_1000(tmp_path: Path) -> None:
    path = _write(tmp_path, """
nodes:
  - name_prefix: worker
    count: 1000
    labels: {pool: bench}
    roles: [worker]
    capacity: {cpu: 8, memory: 32Gi, pods: 250}
  - name: cordoned
    ready: false
    unschedulable: true
deployments:
  - name_prefix: load
    count: 100
    replicas: 1000
    labels: {tier: load}
""")
    started = time.perf_counter()
    manifests = scenario_manifests(load_scenario(path))
    assert time.perf_counter() - started < 5
    nodes = _by_kind(manifests, "Node")
    assert len(nodes) == 1001
    assert {f"worker-{i}" for i in range(1000)} <= set(nodes)
    ips = [n["status"]["addresses"][0]["address"] for n in nodes.values()]
    assert len(set(ips)) == 1001
    worker = nodes["worker-999"]
    assert worker["metadata"]["labels"]["pool"] == "bench"
    assert worker["metadata"]["labels"]["node-role.kubernetes.io/worker"] == ""
    assert worker["status"]["capacity"] == {"cpu": "8", "memory": "32Gi", "pods": "250"}
    cordoned = nodes["cordoned"]
    assert cordoned["spec"]["unschedulable"] is True
    assert cordoned["status"]["conditions"][0]["status"] == "False"

    deployments = _by_kind(manifests, "Deployment")
    assert len(deployments) == 100
    assert sum(d["spec"]["replicas"] for d in deployments.values()) == 100_000
    # Each generated member selects only its own pods.
    selectors = {frozenset(d["spec"]["selector"]["matchLabels"].items())
                 for d in deployments.values()}
    assert len(selectors) == 100
    assert deployments["load-7"]["spec"]["selector"]["matchLabels"] == {"tier": "load",
                                                                        "app": "load-7"}
    assert not any(m["kind"] == "Pod" for m in manifests)


def test_scenario_built_in_python_gets_builtin_namespaces() -> None:
    scenario = Scenario.model_validate({"nodes": [{"name": "n"}], "namespaces": ["shop"]})
    assert [ns.name for ns in scenario.namespaces] == [*BUILTIN_NAMESPACES, "shop"]


def test_anchors_and_standalone_pods(tmp_path: Path) -> None:
    path = _write(tmp_path, """
x-pod: &pod
  containers: [{name: app, image: "busybox:1.36", ports: [8080]}]
nodes: [{name: n1}]
pods:
  - <<: *pod
    name: debug
    node_name: n1
    labels: {role: debug}
    timings: {start_seconds: 0.5}
""")
    pod = _by_kind(scenario_manifests(load_scenario(path)), "Pod")["debug"]
    assert pod["spec"]["nodeName"] == "n1"
    assert pod["spec"]["containers"][0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert pod["metadata"]["annotations"] == {"sim.pystol.org/start-seconds": "0.5"}


# --------------------------------------------------------------------------- bad files


def test_yaml_syntax_error(tmp_path: Path) -> None:
    _, message = _error(tmp_path, "nodes:\n  - name: a\n    labels: {zone: a\n")
    assert "invalid YAML at line 4, column 1" in message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    _, message = _error(tmp_path, "nodes:\n  - name: a\n    name: b\n")
    assert "line 3" in message and "duplicate key 'name'" in message


def test_negative_replicas(tmp_path: Path) -> None:
    _, message = _error(tmp_path, """
nodes: [{name: n}]
deployments:
  - name: a
  - name: b
  - name: c
    replicas: -1
""")
    assert ("  deployments[2].replicas: Input should be greater than or equal to 0 (got -1)"
            " [line 7]") in message


def test_unknown_field_typo(tmp_path: Path) -> None:
    _, message = _error(tmp_path, """
nodes: [{name: n}]
deployments:
  - name: web
    replica: 3
""")
    assert "deployments[0].replica: unknown field 'replica'; did you mean 'replicas'?" in message


def test_unknown_namespace(tmp_path: Path) -> None:
    _, message = _error(tmp_path, """
nodes: [{name: n}]
namespaces: [shop]
deployments:
  - name: web
    namespace: shopp
""")
    assert "deployments[0].namespace: namespace 'shopp' is not declared" in message
    assert "[line 6]" in message


def test_name_and_name_prefix(tmp_path: Path) -> None:
    _, message = _error(tmp_path, """
nodes:
  - name: a
    name_prefix: worker
    count: 3
""")
    assert "nodes[0]: give either 'name'" in message and "not both" in message


def test_pdb_with_both_limits(tmp_path: Path) -> None:
    _, message = _error(tmp_path, """
nodes: [{name: n}]
pod_disruption_budgets:
  - name: web
    selector: {app: web}
    min_available: 2
    max_unavailable: "50%"
""")
    assert "pod_disruption_budgets[0]:" in message
    assert "'min_available' and 'max_unavailable', not both" in message


def test_empty_nodes(tmp_path: Path) -> None:
    _, message = _error(tmp_path, "nodes: []\n")
    assert "  nodes: List should have at least 1 item" in message


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    _, message = _error(tmp_path, """
nodes:
  - name: Bad_Name
    capacity: {memory: 16GB}
    taints: [{key: a, effect: NoSchedul}]
""")
    assert "nodes[0].name: 'Bad_Name' is not a valid" in message
    assert "nodes[0].capacity.memory: '16GB' is not a Kubernetes quantity" in message
    assert "nodes[0].taints[0].effect:" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("nodes: [{name: n}]\ndeployments: [{name: a}, {name: a}]\n",
     "deployments[1].name: 'a' is already a Deployment in namespace 'default'"),
    ("nodes: [{name_prefix: w, count: 3}, {name: w-2}]\n",
     "nodes[1].name: node 'w-2' is already declared by nodes[0]"),
    ("nodes: [{name: n}]\ndaemonsets: [{name: d, replicas: 2}]\n",
     "daemonsets[0].replicas: unknown field 'replicas'"),
    ("nodes: [{name: n}]\nnamespaces: [Shop]\n",
     "namespaces[0].name: 'Shop' is not a valid DNS-1123 label"),
    ("nodes: [{name: n, labels: {'bad key!': x}}]\n",
     "nodes[0].labels: label key 'bad key!'"),
    ("nodes: [{name: n}]\npods: [{name: p, node_name: ghost}]\n",
     "pods[0].node_name: node 'ghost' is not declared"),
    ("nodes: [{name: n}]\ndeployments: [{name_prefix: w, count: 2, labels: {app: same}}]\n",
     "deployments[0].labels: 'w-1' has the same labels (its selector) as 'w-0'"),
    ("nodes: [{name: n}]\npod_disruption_budgets: [{name: p, selector: {}, "
     "max_unavailable: 150%}]\n",
     "pod_disruption_budgets[0].max_unavailable: expected a whole number of pods or a "
     "percentage"),
    ("nodes: [{name: n}]\ntimings: {start_seconds: -1}\n",
     "timings.start_seconds: Input should be greater than or equal to 0 (got -1)"),
    ("- just\n- a list\n", "expected a mapping"),
    ("", "the file is empty"),
])
def test_more_bad_files(tmp_path: Path, text: str, expected: str) -> None:
    _, message = _error(tmp_path, text)
    assert expected in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: invalid scenario\n  cannot read the file")
