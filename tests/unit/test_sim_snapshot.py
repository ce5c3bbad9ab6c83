"""`pystol-sim --snapshot`: a kubectl List in, the manifests of a living copy out.

The lists here are shaped like `kubectl get nodes,...,pods -A -o yaml` prints them
(metadata with uid/resourceVersion/managedFields, ownerReferences, status timestamps),
so what is kept, dropped and inferred is checked on what users will really feed in.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from click.testing import CliRunner

from pystol_sim import snapshot as snapshot_module
from pystol_sim.cli import main
from pystol_sim.cluster import Cluster, Timings
from pystol_sim.resources import Catalogue
from pystol_sim.snapshot import Snapshot, SnapshotError, parse_snapshot, read_snapshot
from pystol_sim.store import Store

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SECRET_VALUE = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk"


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    """Metadata as the API server returns it: with everything a copy must not carry."""
    out: dict[str, Any] = {"name": name, "uid": f"uid-{namespace}-{name}",
                           "resourceVersion": "4711", "creationTimestamp": stamp(0),
                           "managedFields": [{"manager": "kubectl", "operation": "Update"}]}
    if namespace is not None:
        out["namespace"] = namespace
    out.update(extra)
    return out


def node(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": meta(name, labels={"kubernetes.io/hostname": name,
                                           "topology.kubernetes.io/zone": "eu-1a"}),
            "spec": {"podCIDR": "10.244.1.0/24", **spec},
            "status": {"capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "allocatable": {"cpu": "7800m", "memory": "30Gi", "pods": "110"},
                       "conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True",
                                       "lastTransitionTime": stamp(0)}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                       "nodeInfo": {"kubeletVersion": "v1.31.2", "machineID": "abc"}}}


def deployment(name: str, namespace: str = "shop", replicas: Any = 3,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": name}
    template_meta: dict[str, Any] = {"labels": labels, "creationTimestamp": None}
    if annotations:
        template_meta["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(name, namespace, labels=labels, generation=7, annotations={
                "deployment.kubernetes.io/revision": "7",
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "team": "shop"}),
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                     "template": {"metadata": template_meta,
                                  "spec": {"containers": [{"name": "app",
                                                           "image": f"shop/{name}:1.0"}]}}},
            "status": {"replicas": replicas, "readyReplicas": replicas}}


def replicaset(deploy: str, namespace: str = "shop", template_hash: str = "5d6bb1858c"
               ) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": meta(f"{deploy}-{template_hash}", namespace, ownerReferences=[
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": deploy,
                 "uid": f"uid-{namespace}-{deploy}", "controller": True}]),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": deploy}}}}


def pod(name: str, namespace: str = "shop", owner: tuple[str, str] | None = None,
        start: float | None = 2.0, ready: float | None = 1.0, created: float = 0.0,
        restarts: int = 0, labels: dict[str, str] | None = None,
        node_name: str = "worker-1") -> dict[str, Any]:
    """A pod scheduled at `created`, running `start` s later, Ready `ready` s after that."""
    extra: dict[str, Any] = {"labels": labels or {}}
    if owner is not None:
        extra["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                     "uid": "x", "controller": True}]
    status: dict[str, Any] = {"phase": "Pending"}
    if start is not None:
        running = created + start
        conditions = [{"type": "PodScheduled", "status": "True",
                       "lastTransitionTime": stamp(created)},
                      {"type": "Ready", "status": "True" if ready is not None else "False",
                       "lastTransitionTime": stamp(running + (ready or 0))}]
        status = {"phase": "Running", "startTime": stamp(created), "conditions": conditions,
                  "containerStatuses": [{"name": "app", "ready": ready is not None,
                                         "restartCount": restarts,
                                         "state": {"running": {"startedAt": stamp(running)}}}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": meta(name, namespace, creationTimestamp=stamp(created), **extra),
            "spec": {"nodeName": node_name,
                     "containers": [{"name": "app", "image": "shop/app:1.0"}]},
            "status": status}


def service(name: str, namespace: str = "shop", cluster_ip: str = "10.43.0.17"
            ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, namespace),
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080,
                                                           "protocol": "TCP"}]},
            "status": {"loadBalancer": {}}}


def kubectl_list(*items: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
            "items": list(items)}


def a_cluster() -> dict[str, Any]:
    """Two nodes, a namespace, a Deployment with its ReplicaSet and three pods, a
    StatefulSet with two pods, a standalone pod, a static pod's mirror, a Service with its
    Endpoints, a PodDisruptionBudget, and a Secret that must not travel."""
    return kubectl_list(
        node("worker-1"),
        node("worker-2", unschedulable=True,
             taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": meta("shop", labels={"team": "shop"}), "status": {"phase": "Active"}},
        deployment("web"),
        replicaset("web"),
        pod("web-5d6bb1858c-a", owner=("ReplicaSet", "web-5d6bb1858c"), start=2, ready=1,
            labels={"app": "web", "pod-template-hash": "5d6bb1858c"}),
        pod("web-5d6bb1858c-b", owner=("ReplicaSet", "web-5d6bb1858c"), start=3, ready=1,
            labels={"app": "web", "pod-template-hash": "5d6bb1858c"}),
        pod("web-5d6bb1858c-c", owner=("ReplicaSet", "web-5d6bb1858c"), start=2, ready=4,
            labels={"app": "web", "pod-template-hash": "5d6bb1858c"}),
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": meta("db", "shop"),
         "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                  "template": {"metadata": {"labels": {"app": "db"}},
                               "spec": {"containers": [{"name": "pg", "image": "pg:16"}]}}}},
        pod("db-0", owner=("StatefulSet", "db"), start=20, ready=10, labels={"app": "db"}),
        pod("db-1", owner=("StatefulSet", "db"), start=30, ready=10, labels={"app": "db"}),
        pod("debug", start=1, ready=0, labels={"run": "debug"}),
        pod("etcd-worker-1", "kube-system", owner=("Node", "worker-1"), start=1, ready=1),
        service("web"),
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("web", "shop"),
         "subsets": [{"addresses": [{"ip": "10.244.1.5"}]}]},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("web", "shop"),
         "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
         "status": {"currentHealthy": 3}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("db-password", "shop"),
         "type": "Opaque", "data": {"password": SECRET_VALUE}},
    )


def as_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def parsed(data: Any) -> Snapshot:
    return parse_snapshot(as_yaml(data), "cluster.yaml")


def find(snap: Snapshot, kind: str, name: str) -> dict[str, Any]:
    [manifest] = [m for m in snap.manifests if m["kind"] == kind
                  and m["metadata"]["name"] == name]
    return manifest


def refusal(text: str) -> list[str]:
    with pytest.raises(SnapshotError) as caught:
        parse_snapshot(text, "cluster.yaml")
    return caught.value.lines()


# --------------------------------------------------------------------------- keeping


def test_keeps_what_a_rehearsal_needs_and_drops_what_the_sim_rebuilds() -> None:
    snap = parsed(a_cluster())
    kinds = sorted({(m["kind"], m["metadata"]["name"]) for m in snap.manifests
                    if m["kind"] != "Namespace"})
    assert kinds == [("Deployment", "web"), ("Node", "worker-1"), ("Node", "worker-2"),
                     ("Pod", "debug"), ("Pod", "etcd-worker-1"), ("PodDisruptionBudget", "web"),
                     ("Service", "web"), ("StatefulSet", "db")]
    namespaces = [m["metadata"]["name"] for m in snap.manifests if m["kind"] == "Namespace"]
    assert namespaces == ["default", "kube-system", "kube-public", "kube-node-lease", "shop"]
    assert find(snap, "Namespace", "shop")["metadata"]["labels"] == {"team": "shop"}

    worker = find(snap, "Node", "worker-2")
    assert worker["metadata"]["labels"]["topology.kubernetes.io/zone"] == "eu-1a"
    assert worker["spec"] == {"unschedulable": True, "taints": [
        {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}
    assert worker["status"]["capacity"] == {"cpu": "8", "memory": "32Gi", "pods": "110"}
    assert worker["status"]["allocatable"]["cpu"] == "7800m"
    assert [c["type"] for c in worker["status"]["conditions"]] == ["Ready"]
    assert worker["status"]["conditions"][0]["status"] == "True"
    assert worker["status"]["nodeInfo"]["kubeletVersion"] == "v1.31.2"

    web = find(snap, "Deployment", "web")
    assert web["spec"]["replicas"] == 3
    assert web["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    assert "status" not in web
    assert set(web["metadata"]) == {"name", "namespace", "labels", "annotations"}
    assert web["metadata"]["annotations"]["team"] == "shop"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in web["metadata"]["annotations"]

    # The standalone pod keeps its node; the mirror pod too, without its Node owner.
    assert find(snap, "Pod", "debug")["spec"]["nodeName"] == "worker-1"
    mirror = find(snap, "Pod", "etcd-worker-1")
    assert mirror["metadata"]["namespace"] == "kube-system"
    assert "ownerReferences" not in mirror["metadata"] and "status" not in mirror
    # The Service keeps the address the real cluster gave it.
    assert find(snap, "Service", "web")["spec"]["clusterIP"] == "10.43.0.17"
    assert find(snap, "PodDisruptionBudget", "web")["spec"]["minAvailable"] == 2
    for manifest in snap.manifests:
        assert not {"uid", "resourceVersion", "creationTimestamp",
                    "managedFields"} & set(manifest["metadata"]), manifest

    assert snap.dropped["Endpoints"] == 1
    assert snap.dropped["ReplicaSets (recreated from their Deployments)"] == 1
    assert snap.dropped["pods owned by a workload (recreated by the sim)"] == 5


def test_secrets_and_configmaps_never_reach_the_copy() -> None:
    cluster = a_cluster()
    cluster["items"].append({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": meta("settings", "shop"), "data": {"k": "v"}})
    snap = parsed(cluster)
    assert not [m for m in snap.manifests if m["kind"] in ("Secret", "ConfigMap")]
    assert SECRET_VALUE.encode() not in orjson.dumps(snap.manifests)
    summary = "\n".join(snap.summary())
    assert "dropped 2 Secret/ConfigMap objects: a snapshot does not carry them" in summary


def test_a_copy_loads_into_the_simulated_cluster_and_its_pods_come_back() -> None:
    snap = parsed(a_cluster())

    async def load() -> Cluster:
        catalogue = Catalogue()
        cluster = Cluster(Store(), catalogue, Timings())
        for batch in snap.batches():
            cluster.load(batch)
        return cluster

    cluster = asyncio.run(load())
    pods_t = cluster.catalogue.get("", "v1", "pods")
    endpoints_t = cluster.catalogue.get("", "v1", "endpoints")
    assert pods_t is not None and endpoints_t is not None
    pods = cluster.store.list_objects(pods_t, "shop")
    names = sorted(p["metadata"]["name"] for p in pods)
    assert len([n for n in names if n.startswith("web-")]) == 3
    assert [n for n in names if not n.startswith("web-")] == ["db-0", "db-1", "debug"]
    assert all(p["status"]["phase"] == "Running" for p in pods)
    # The Service (loaded with its clusterIP) lists the copy's own web pods.
    [subset] = cluster.store.get(endpoints_t, "shop", "web")["subsets"]
    assert sorted(a["targetRef"]["name"] for a in subset["addresses"]) == \
        sorted(n for n in names if n.startswith("web-"))


def test_json_and_multi_document_yaml_and_nested_lists_are_read() -> None:
    cluster = a_cluster()
    from_json = parse_snapshot(json.dumps(cluster), "cluster.json")
    items = cluster["items"]
    stream = as_yaml(kubectl_list(*items[:5])) + "---\n" + as_yaml(
        kubectl_list(kubectl_list(*items[5:10]), *items[10:]))
    from_stream = parse_snapshot(stream, "cluster.yaml")
    assert from_json.manifests == parsed(cluster).manifests
    assert from_stream.manifests == parsed(cluster).manifests


# --------------------------------------------------------------------------- inference


def annotations(snap: Snapshot, kind: str, name: str) -> dict[str, str]:
    return find(snap, kind, name)["spec"]["template"]["metadata"].get("annotations", {})


def test_delays_are_the_median_over_each_workloads_pods() -> None:
    snap = parsed(a_cluster())
    # web's pods: start 2, 3, 2 and ready 1, 1, 4 -> medians 2 and 1.
    assert annotations(snap, "Deployment", "web") == {"sim.pystol.org/start-seconds": "2",
                                                      "sim.pystol.org/ready-seconds": "1"}
    # db's pods: start 20, 30 -> 25; ready 10.
    assert annotations(snap, "StatefulSet", "db") == {"sim.pystol.org/start-seconds": "25",
                                                      "sim.pystol.org/ready-seconds": "10"}
    debug = find(snap, "Pod", "debug")["metadata"]["annotations"]
    assert debug["sim.pystol.org/start-seconds"] == "1"
    assert debug["sim.pystol.org/ready-seconds"] == "0"
    web = find(snap, "Deployment", "web")["metadata"]["annotations"]
    assert web["sim.pystol.org/snapshot-delays"] == \
        "start 2s (median of 3 pods), ready 1s (median of 3 pods)"
    summary = snap.summary()
    assert "  Deployment shop/web: start 2s (median of 3 pods), ready 1s (median of 3 pods)" \
        in summary


def test_pods_are_found_without_their_replicaset_or_without_owners() -> None:
    # No ReplicaSet in the file: the pod-template-hash label names the Deployment.
    by_hash = parsed(kubectl_list(
        node("worker-1"), deployment("web"),
        pod("web-abc12-x", owner=("ReplicaSet", "web-abc12"), start=4, ready=2,
            labels={"app": "web", "pod-template-hash": "abc12"})))
    assert annotations(by_hash, "Deployment", "web") == {"sim.pystol.org/start-seconds": "4",
                                                         "sim.pystol.org/ready-seconds": "2"}
    # ownerReferences stripped: the Deployment's selector picks the pods, which are then
    # its pods (not kept as standalone pods: the sim makes the workload's own).
    by_selector = parsed(kubectl_list(
        node("worker-1"), deployment("web"),
        pod("web-1", start=6, ready=3, labels={"app": "web"})))
    assert annotations(by_selector, "Deployment", "web") == {
        "sim.pystol.org/start-seconds": "6", "sim.pystol.org/ready-seconds": "3"}
    assert not [m for m in by_selector.manifests if m["kind"] == "Pod"]


def test_missing_timestamps_leave_the_default_and_restarts_do_not_count_as_starts() -> None:
    snap = parsed(kubectl_list(
        node("worker-1"), deployment("pending"), deployment("crashy"), deployment("slow"),
        pod("pending-1", owner=("ReplicaSet", "pending-h"), start=None,
            labels={"app": "pending", "pod-template-hash": "h"}),
        pod("crashy-1", owner=("ReplicaSet", "crashy-h"), start=50, ready=2, restarts=3,
            labels={"app": "crashy", "pod-template-hash": "h"}),
        pod("slow-1", owner=("ReplicaSet", "slow-h"), start=3000, ready=1,
            labels={"app": "slow", "pod-template-hash": "h"})))
    assert annotations(snap, "Deployment", "pending") == {}
    assert "start default (no pod timestamps), ready default" in \
        find(snap, "Deployment", "pending")["metadata"]["annotations"][
            "sim.pystol.org/snapshot-delays"]
    # A restarted container's startedAt is its last start: only the ready delay counts.
    assert annotations(snap, "Deployment", "crashy") == {"sim.pystol.org/ready-seconds": "2"}
    assert annotations(snap, "Deployment", "slow")["sim.pystol.org/start-seconds"] == "600"


def test_a_simulated_clusters_own_timing_annotations_are_kept() -> None:
    snap = parsed(kubectl_list(
        node("worker-1"),
        deployment("web", annotations={"sim.pystol.org/ready-seconds": "5"}),
        pod("web-1", owner=("ReplicaSet", "web-h"), start=2, ready=1,
            labels={"app": "web", "pod-template-hash": "h"})))
    assert annotations(snap, "Deployment", "web") == {"sim.pystol.org/ready-seconds": "5",
                                                      "sim.pystol.org/start-seconds": "2"}


# --------------------------------------------------------------------------- refusals


def test_a_field_of_the_wrong_type_is_refused_with_its_path() -> None:
    cluster = kubectl_list(node("worker-1"), deployment("web", replicas="three"))
    assert refusal(as_yaml(cluster)) == [
        "cluster.yaml: items[1] (Deployment shop/web): spec.replicas: "
        "Input should be a valid integer"]


def test_every_bad_part_is_listed_at_once() -> None:
    broken_pod = pod("web-1", labels={"app": "web"})
    broken_pod["status"]["conditions"][0]["lastTransitionTime"] = "yesterday"
    bad_node = node("worker-2", taints=[{"key": "x", "effect": "Sometimes"}])
    bad_node["status"]["capacity"]["memory"] = "32GB"
    cluster = kubectl_list(node("worker-1"), {"apiVersion": "v1", "metadata": {"name": "x"}},
                           broken_pod, bad_node)
    lines = refusal(as_yaml(cluster))
    assert lines[0] == "cluster.yaml: items[1]: kind: required field is missing"
    assert lines[1].startswith("cluster.yaml: items[2] (Pod shop/web-1): "
                               "status.conditions[0].lastTransitionTime: Input should be a "
                               "valid datetime")
    assert "cluster.yaml: items[3] (Node worker-2): spec.taints[0].effect: Input should be " \
           "'NoSchedule', 'PreferNoSchedule' or 'NoExecute'" in lines
    assert any(line.startswith("cluster.yaml: items[3] (Node worker-2): "
                               "status.capacity.memory: Value error, '32GB' is not a Kubernetes "
                               "quantity") for line in lines)


def test_paths_in_streams_and_nested_lists_name_the_document_and_the_list() -> None:
    stream = as_yaml(kubectl_list(node("worker-1"))) + "---\n" + as_yaml(
        kubectl_list(kubectl_list(deployment("web"), deployment("api", replicas=-1))))
    assert refusal(stream) == ["cluster.yaml: document 2, items[0].items[1] (Deployment "
                               "shop/api): spec.replicas: Input should be greater than or "
                               "equal to 0"]


def test_what_the_api_server_would_refuse_is_refused_here() -> None:
    bad = deployment("Web_Server")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    [name, labels] = refusal(as_yaml(kubectl_list(node("worker-1"), bad)))
    assert name.startswith("cluster.yaml: items[1] (Deployment shop/Web_Server): "
                           "metadata.name: Invalid value")
    assert labels == ("cluster.yaml: items[1] (Deployment shop/Web_Server): "
                      "spec.template.metadata.labels: Invalid value: `selector` does not "
                      "match template `labels`")
    twice = refusal(as_yaml(kubectl_list(node("worker-1"), service("web"), service("web"))))
    assert twice == ["cluster.yaml: items[2] (Service shop/web): the same Service as items[1]"]


def test_bad_yaml_and_bad_json_say_where() -> None:
    assert refusal("apiVersion: v1\nkind: List\nitems:\n  - kind: Node\n   bad: [\n") == [
        "cluster.yaml: invalid YAML at line 5, column 4: did not find expected '-' indicator "
        "(while parsing a block collection)"]
    lines = refusal('{"kind": "List", "items": [}')
    assert lines == ["cluster.yaml: invalid JSON at line 1, column 28: Expecting value"]


def test_a_file_that_is_not_a_list_or_has_no_nodes_is_refused() -> None:
    assert refusal("- a\n- b\n") == [
        "cluster.yaml: expected a kubectl List (kind: List, items: [...]) or a Kubernetes "
        "object, got a list"]
    assert refusal("") == ["cluster.yaml: the file is empty; make it with `kubectl get "
                           "nodes,namespaces,... -A -o yaml`"]
    assert refusal(as_yaml(kubectl_list(deployment("web")))) == [
        "cluster.yaml: no Node in the file: a cluster needs nodes (put `nodes` in the kubectl "
        "get command)"]
    assert refusal("kind: List\nitems: {a: 1}\n") == [
        "cluster.yaml: items: expected a list, got a mapping"]


def test_alias_bombs_and_absurd_nesting_are_refused_before_anything_is_copied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Ten levels of ten aliases each: 10**10 values once expanded, from 300 bytes of text.
    lines = ["kind: List", "x0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    lines += ["items: [{apiVersion: v1, kind: Node, metadata: {name: n1}, "
              "status: {images: *a9}}]"]
    [line] = refusal("\n".join(lines) + "\n")
    assert line == ("cluster.yaml: items[0].status.images[9][9][9]: expands to more than "
                    "5,000,000 values (YAML aliases repeating each other)")
    [line] = refusal("kind: List\nitems: &loop [*loop]\n")
    assert line == "cluster.yaml: items[0]: a YAML alias that contains itself"
    deep = "kind: List\nitems:\n- kind: Node\n  x: " + "[" * 150 + "]" * 150 + "\n"
    [line] = refusal(deep)
    assert line.startswith("cluster.yaml: ") and "nested more than 100 levels deep" in line


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(as_yaml(a_cluster()))
    monkeypatch.setattr(snapshot_module, "MAX_BYTES", 2 * 2**20)
    with path.open("a") as out:
        out.write("#" * (3 * 2**20))
    with pytest.raises(SnapshotError) as caught:
        read_snapshot(path)
    assert caught.value.lines() == [f"{path}: the file is 3 MiB, more than the 2 MiB a "
                                    "snapshot may be; leave out namespaces you do not need"]


# --------------------------------------------------------------------------- command line


def test_the_command_refuses_a_bad_snapshot_with_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(as_yaml(kubectl_list(node("worker-1"), deployment("web", replicas="3"))))
    result = CliRunner().invoke(main, ["--snapshot", str(path), "--kubeconfig",
                                       str(tmp_path / "kubeconfig")])
    assert result.exit_code == 2
    assert result.stderr == (f"pystol-sim: {path}: items[1] (Deployment shop/web): "
                             "spec.replicas: Input should be a valid integer\n")
    assert not (tmp_path / "kubeconfig").exists()

    both = CliRunner().invoke(main, ["--snapshot", str(path), "--scenario", str(path),
                                     "--kubeconfig", str(tmp_path / "kubeconfig")])
    assert both.exit_code == 2
    assert "give --scenario or --snapshot, not both" in both.stderr
    missing = CliRunner().invoke(main, ["--snapshot", str(tmp_path / "nope.yaml"),
                                        "--kubeconfig", str(tmp_path / "kubeconfig")])
    assert missing.exit_code == 2
    assert missing.stderr == (f"pystol-sim: {tmp_path / 'nope.yaml'}: cannot read the file: "
                              "No such file or directory\n")


# --------------------------------------------------------------------------- hostile input

FORGED = "x\npystol-sim: serving https://evil.example:6443 kubeconfig=/tmp/evil.kubeconfig\n"


def test_names_in_problems_and_the_summary_cannot_forge_lines(tmp_path: Path) -> None:
    """Problems and the summary quote the file's own names; a name with a line break in
    it must come out as one escaped line, not as a line of its own (`pystol up` reads the
    sim's output)."""
    bad = deployment(FORGED, replicas="3")
    lines = refusal(as_yaml(kubectl_list(node("worker-1"), bad)))
    assert len(lines) == 1 and "\\npystol-sim: serving" in lines[0]
    odd = {"apiVersion": "example.com/v1", "kind": FORGED + "\x1b[2J", "metadata": meta("o")}
    snap = parsed(kubectl_list(node("worker-1"), deployment("web"), odd))
    summary = snap.summary()
    assert all(line.isprintable() for line in summary)
    assert any("\\npystol-sim: serving" in line and "\\x1b[2J" in line for line in summary)
    path = tmp_path / "cluster.yaml"
    path.write_text(as_yaml(kubectl_list(node("worker-1"), bad)))
    result = CliRunner().invoke(main, ["--snapshot", str(path), "--kubeconfig",
                                       str(tmp_path / "kubeconfig")])
    assert result.exit_code == 2
    assert not any(line.startswith("pystol-sim: serving")
                   for line in result.stderr.splitlines())


@pytest.mark.parametrize(("value", "what"), [
    ("!!set {a: null}", "a set"), ("!!binary aGVsbG8=", "binary data"),
    (".inf", "an infinite number"), (".nan", "not a number"), ("2024-01-01", "a date"),
    ("2024-01-01T10:00:00Z", "a date"), ("99999999999999999999999", "64-bit range"),
    ("-99999999999999999999999", "64-bit range")])
def test_values_json_cannot_hold_are_refused_with_their_path(value: str, what: str) -> None:
    text = as_yaml(kubectl_list(node("worker-1"), deployment("web"))).replace(
        "image: shop/web:1.0", "image: shop/web:1.0\n"
        f"          ports: [{{containerPort: 80, extra: {value}}}]")
    assert "extra:" in text
    [line] = refusal(text)
    assert line.startswith("cluster.yaml: items[1].spec.template.spec.containers[0]."
                           "ports[0].extra: ")
    assert what in line
