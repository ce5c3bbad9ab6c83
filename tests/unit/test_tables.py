"""`pystol_sim.tables`: the Table cells kubectl prints, checked against what a real
API server sends for the same objects (kubernetes printers.go, apiextensions'
tableconvertor)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pystol_sim.resources import BUILTIN_TYPES, PrinterColumn, ResourceType
from pystol_sim.tables import (
    evaluate_jsonpath,
    human_duration,
    parse_timestamp,
    render_table,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ago(**kwargs: float) -> str:
    return (NOW - timedelta(**kwargs)).strftime("%Y-%m-%dT%H:%M:%SZ")


def rtype(plural: str) -> ResourceType:
    return next(t for t in BUILTIN_TYPES if t.plural == plural)


def table(plural: str, obj: dict, **kwargs) -> dict:
    return render_table(rtype(plural), [obj], {"resourceVersion": "7"}, now=NOW, **kwargs)


def cells(plural: str, obj: dict) -> list:
    return table(plural, obj)["rows"][0]["cells"]


def names(result: dict, wide: bool = True) -> list[str]:
    return [c["name"] for c in result["columnDefinitions"] if wide or c["priority"] == 0]


# ----------------------------------------------------------------------------- age


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (182, "3m2s"), (599, "9m59s"),
    (601, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (4 * 3600 + 300, "4h5m"),
    (8 * 3600 + 59, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (50 * 3600, "2d2h"),
    (8 * 86400, "8d"), (400 * 86400, "400d"), (730 * 86400, "2y"), (800 * 86400, "2y70d"),
    (3000 * 86400, "8y"), (-1, "0s"), (-5, "<invalid>"),
])
def test_human_duration_matches_kubectl(seconds: int, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text


def test_timestamps_parse_with_z_fractions_and_offsets() -> None:
    assert parse_timestamp("2026-03-01T12:00:00Z") == NOW
    assert parse_timestamp("2026-03-01T12:00:00.123456789Z") == NOW.replace(microsecond=123456)
    assert parse_timestamp("2026-03-01T13:00:00+01:00") == NOW
    assert parse_timestamp(None) is None
    assert parse_timestamp("yesterday") is None


# ----------------------------------------------------------------------------- pods


def pod(**status) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "creationTimestamp": ago(minutes=3,
                                                                                    seconds=2),
                     "resourceVersion": "5", "labels": {"app": "web"}},
        "spec": {"nodeName": "worker-a", "containers": [{"name": "app", "image": "nginx"},
                                                        {"name": "sidecar", "image": "envoy"}]},
        "status": {"phase": "Running", "podIP": "10.244.0.7", **status},
    }


def running(name: str, ready: bool = True, restarts: int = 0, **extra) -> dict:
    return {"name": name, "ready": ready, "restartCount": restarts,
            "state": {"running": {"startedAt": ago(minutes=3)}}, **extra}


def test_pod_columns_and_a_running_pod() -> None:
    result = table("pods", pod(containerStatuses=[running("app"), running("sidecar")]))
    assert names(result, wide=False) == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert names(result)[5:] == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert result["columnDefinitions"][0]["format"] == "name"
    assert result["rows"][0]["cells"] == [
        "web-1", "2/2", "Running", "0", "3m2s", "10.244.0.7", "worker-a", "<none>", "<none>"]


def test_pod_waiting_container_reason_wins() -> None:
    waiting = {"name": "app", "ready": False, "restartCount": 0,
               "state": {"waiting": {"reason": "ContainerCreating"}}}
    row = cells("pods", pod(phase="Pending", containerStatuses=[waiting, running("sidecar")]))
    assert row[1:3] == ["1/2", "ContainerCreating"]


def test_pod_crash_loop_with_last_restart_age() -> None:
    crashing = {"name": "app", "ready": False, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                             "finishedAt": ago(seconds=40)}}}
    row = cells("pods", pod(containerStatuses=[crashing, running("sidecar", restarts=1)]))
    assert row[1:4] == ["1/2", "CrashLoopBackOff", "5 (40s ago)"]


def test_pod_terminated_without_reason_shows_exit_code() -> None:
    done = {"name": "app", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137}}}
    assert cells("pods", pod(containerStatuses=[done]))[2] == "ExitCode:137"


def test_pod_deleting_is_terminating() -> None:
    obj = pod(containerStatuses=[running("app"), running("sidecar")])
    obj["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert cells("pods", obj)[2] == "Terminating"
    obj["status"]["phase"] = "Succeeded"
    assert cells("pods", obj)[2] == "Succeeded"  # a finished pod is not "Terminating"


def test_pod_pending_without_statuses_and_unscheduled() -> None:
    obj = pod(phase="Pending")
    del obj["spec"]["nodeName"]
    del obj["status"]["podIP"]
    assert cells("pods", obj) == [
        "web-1", "0/2", "Pending", "0", "3m2s", "<none>", "<none>", "<none>", "<none>"]


def test_pod_init_containers_and_sidecars() -> None:
    obj = pod(phase="Pending", containerStatuses=[
        {"name": "app", "ready": False, "state": {"waiting": {"reason": "PodInitializing"}}}])
    obj["spec"]["initContainers"] = [{"name": "migrate", "image": "tool"}]
    obj["status"]["initContainerStatuses"] = [
        {"name": "migrate", "ready": False, "restartCount": 0,
         "state": {"running": {"startedAt": ago(seconds=3)}}}]
    assert cells("pods", obj)[1:3] == ["0/2", "Init:0/1"]

    # A restartable init container (sidecar) counts in READY once it has started.
    obj["spec"]["initContainers"] = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    obj["status"]["initContainerStatuses"] = [
        {"name": "proxy", "ready": True, "started": True, "restartCount": 0,
         "state": {"running": {"startedAt": ago(seconds=3)}}}]
    obj["status"]["phase"] = "Running"
    obj["status"]["conditions"] = [{"type": "Initialized", "status": "True"}]
    obj["status"]["containerStatuses"] = [running("app"), running("sidecar")]
    assert cells("pods", obj)[1:3] == ["3/3", "Running"]


def test_pod_completed_row_conditions_and_readiness_gates() -> None:
    obj = pod(phase="Succeeded", containerStatuses=[
        {"name": "app", "ready": False, "state": {"terminated": {"exitCode": 0,
                                                                 "reason": "Completed"}}}],
        podIPs=[{"ip": "10.244.0.9"}],
        conditions=[{"type": "example.com/gate", "status": "True"}])
    obj["spec"]["readinessGates"] = [{"conditionType": "example.com/gate"},
                                     {"conditionType": "example.com/other"}]
    row = table("pods", obj)["rows"][0]
    assert row["cells"][2] == "Completed"
    assert row["cells"][5] == "10.244.0.9"
    assert row["cells"][8] == "1/2"
    assert row["conditions"][0]["type"] == "Completed"


# ---------------------------------------------------------------------------- nodes


def node(**spec) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "worker-a", "creationTimestamp": ago(days=2, hours=3),
                     "labels": {"node-role.kubernetes.io/control-plane": "",
                                "node-role.kubernetes.io/etcd": "", "kubernetes.io/os": "linux"}},
        "spec": spec,
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"},
                           {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.2"},
                          {"type": "Hostname", "address": "worker-a"}],
            "nodeInfo": {"kubeletVersion": "v1.35.0", "osImage": "Debian GNU/Linux 12",
                         "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://2.0"},
        },
    }


def test_node_columns_and_cells() -> None:
    result = table("nodes", node())
    assert names(result, wide=False) == ["Name", "Status", "Roles", "Age", "Version"]
    assert result["rows"][0]["cells"] == [
        "worker-a", "Ready", "control-plane,etcd", "2d3h", "v1.35.0", "10.0.0.2", "<none>",
        "Debian GNU/Linux 12", "6.1.0", "containerd://2.0"]


def test_node_cordoned_not_ready_and_roleless() -> None:
    obj = node(unschedulable=True)
    obj["status"]["conditions"][1]["status"] = "Unknown"
    obj["metadata"]["labels"] = {}
    row = cells("nodes", obj)
    assert row[1:3] == ["NotReady,SchedulingDisabled", "<none>"]
    obj["status"]["conditions"] = []
    assert cells("nodes", obj)[1] == "Unknown,SchedulingDisabled"


# ------------------------------------------------------------------------ workloads


def deployment(**status) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": ago(hours=4)},
        "spec": {"replicas": 3,
                 "selector": {"matchLabels": {"app": "web", "tier": "front"},
                              "matchExpressions": [{"key": "env", "operator": "In",
                                                    "values": ["prod", "canary"]}]},
                 "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"},
                                                      {"name": "log", "image": "fluent"}]}}},
        "status": status,
    }


def test_deployment_cells() -> None:
    result = table("deployments", deployment(replicas=3, readyReplicas=2, updatedReplicas=3,
                                             availableReplicas=2))
    assert names(result) == ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers",
                             "Images", "Selector"]
    assert result["rows"][0]["cells"] == [
        "web", "2/3", 3, 2, "4h", "app,log", "nginx:1.27,fluent",
        "app=web,env in (canary,prod),tier=front"]


def test_deployment_without_status_or_replicas() -> None:
    obj = deployment()
    del obj["spec"]["replicas"]  # defaulted to 1 by the API
    assert cells("deployments", obj)[1:4] == ["0/1", 0, 0]


def test_replicaset_statefulset_daemonset_cells() -> None:
    rs = deployment(replicas=3, readyReplicas=1)
    assert cells("replicasets", rs)[:5] == ["web", 3, 3, 1, "4h"]
    sts = deployment(readyReplicas=2)
    assert cells("statefulsets", sts) == ["web", "2/3", "4h", "app,log", "nginx:1.27,fluent"]
    ds = {"metadata": {"name": "agent", "creationTimestamp": ago(days=1)},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                         "containers": [{"name": "a", "image": "agent:1"}]}}},
          "status": {"desiredNumberScheduled": 4, "currentNumberScheduled": 4,
                     "numberReady": 3, "updatedNumberScheduled": 4, "numberAvailable": 3}}
    result = table("daemonsets", ds)
    assert names(result, wide=False) == ["Name", "Desired", "Current", "Ready", "Up-to-date",
                                         "Available", "Node Selector", "Age"]
    assert result["rows"][0]["cells"] == [
        "agent", 4, 4, 3, 4, 3, "kubernetes.io/os=linux", "24h", "a", "agent:1", "app=agent"]


# ------------------------------------------------------------- services and others


def test_service_cells() -> None:
    svc = {"metadata": {"name": "web", "creationTimestamp": ago(seconds=30)},
           "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "selector": {"app": "web"},
                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                              {"port": 53, "protocol": "UDP"}]}}
    result = table("services", svc)
    assert names(result, wide=False) == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)",
                                         "Age"]
    assert result["rows"][0]["cells"] == [
        "web", "NodePort", "10.96.0.10", "<none>", "80:30080/TCP,53/UDP", "30s", "app=web"]
    svc["spec"]["type"] = "LoadBalancer"
    assert cells("services", svc)[3] == "<pending>"
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}
    assert cells("services", svc)[3] == "203.0.113.5"


def test_namespace_event_pdb_cells() -> None:
    ns = {"metadata": {"name": "shop", "creationTimestamp": ago(days=9)},
          "status": {"phase": "Terminating"}}
    assert cells("namespaces", ns) == ["shop", "Terminating", "9d"]

    ev = {"metadata": {"name": "web-1.17a", "namespace": "shop"},
          "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
          "reason": "BackOff", "type": "Warning", "message": " Back-off restarting \n",
          "firstTimestamp": ago(minutes=5), "lastTimestamp": ago(seconds=12), "count": 7,
          "source": {"component": "kubelet", "host": "worker-a"}}
    result = table("events", ev)
    assert names(result, wide=False) == ["Last Seen", "Type", "Reason", "Object", "Message"]
    assert result["rows"][0]["cells"] == [
        "12s", "Warning", "BackOff", "pod/web-1", "spec.containers{app}", "kubelet, worker-a",
        "Back-off restarting", "5m", 7, "web-1.17a"]

    pdb = {"metadata": {"name": "web", "creationTimestamp": ago(hours=1)},
           "spec": {"maxUnavailable": "25%"}, "status": {"disruptionsAllowed": 1}}
    result = table("poddisruptionbudgets", pdb)
    assert names(result) == ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions",
                             "Age"]
    assert result["rows"][0]["cells"] == ["web", "N/A", "25%", 1, "60m"]


def test_types_without_a_printer_use_the_server_default() -> None:
    crd = {"metadata": {"name": "pystolactions.pystol.org",
                        "creationTimestamp": "2026-02-27T08:15:00Z"}}
    result = table("customresourcedefinitions", crd)
    assert names(result) == ["Name", "Created At"]
    assert result["columnDefinitions"][1]["type"] == "date"
    assert result["rows"][0]["cells"] == ["pystolactions.pystol.org", "2026-02-27T08:15:00Z"]

    other = ResourceType("example.com", "v1", "widgets", "Widget", True)
    result = render_table(other, [{"metadata": {"name": "w", "creationTimestamp": ago(seconds=9)}}],
                          {}, now=NOW)
    assert names(result) == ["Name", "Age"]
    assert result["rows"][0]["cells"] == ["w", "9s"]


# ------------------------------------------------------------------ table envelope


def test_table_envelope_and_include_object() -> None:
    obj = pod()
    result = render_table(rtype("pods"), [obj], {"resourceVersion": "42", "continue": "x"},
                          now=NOW)
    assert result["kind"] == "Table"
    assert result["apiVersion"] == "meta.k8s.io/v1"
    assert result["metadata"] == {"resourceVersion": "42", "continue": "x"}
    for column in result["columnDefinitions"]:
        assert set(column) == {"name", "type", "format", "description", "priority"}
    assert result["rows"][0]["object"] == {"kind": "PartialObjectMetadata",
                                           "apiVersion": "meta.k8s.io/v1",
                                           "metadata": obj["metadata"]}
    full = render_table(rtype("pods"), [obj], {}, include_object="Object", now=NOW)
    assert full["rows"][0]["object"] == obj
    none = render_table(rtype("pods"), [obj], {}, include_object="None", now=NOW)
    assert "object" not in none["rows"][0]
    assert render_table(rtype("pods"), [], {}, now=NOW)["rows"] == []


def test_object_rows_get_kind_and_api_version_when_stored_without() -> None:
    bare = {"metadata": {"name": "n"}}
    row = render_table(rtype("nodes"), [bare], {}, include_object="Object", now=NOW)["rows"][0]
    assert row["object"]["kind"] == "Node"
    assert row["object"]["apiVersion"] == "v1"


# ------------------------------------------------------------------ custom resources


ACTION = ResourceType(
    "pystol.org", "v1alpha1", "pystolactions", "PystolAction", True,
    printer_columns=(
        PrinterColumn("Action", "string", ".spec.action"),
        PrinterColumn("Phase", "string", ".status.phase", description="Where the job is"),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Targets", "integer", ".status.result.targets[0].count"),
        PrinterColumn("Started", "date", ".status.startedAt", priority=1),
        PrinterColumn("Selector", "string", ".spec.target"),
    ),
)


def action(**status) -> dict:
    return {"apiVersion": "pystol.org/v1alpha1", "kind": "PystolAction",
            "metadata": {"name": "kill-web", "namespace": "shop",
                         "creationTimestamp": ago(minutes=2)},
            "spec": {"action": "pod-kill", "target": {"mode": "fixed", "value": 2}},
            "status": status}


def test_custom_resource_printer_columns() -> None:
    obj = action(phase="Running", startedAt=ago(seconds=75),
                 conditions=[{"type": "Injected", "status": "True"},
                             {"type": "Ready", "status": "False"}],
                 result={"targets": [{"count": 2.0}]})
    result = render_table(ACTION, [obj], {"resourceVersion": "3"}, now=NOW)
    # As on a real server: Name, then exactly the CRD's columns (no Age added).
    assert names(result) == ["Name", "Action", "Phase", "Ready", "Targets", "Started",
                             "Selector"]
    defs = {c["name"]: c for c in result["columnDefinitions"]}
    assert defs["Started"]["priority"] == 1
    assert defs["Started"]["type"] == "date"
    assert defs["Phase"]["description"] == "Where the job is"
    assert defs["Action"]["description"] == (
        "Custom resource definition column (in JSONPath format): .spec.action")
    assert result["rows"][0]["cells"] == [
        "kill-web", "pod-kill", "Running", "False", 2, "75s", '{"mode":"fixed","value":2}']


def test_custom_resource_missing_values_are_null() -> None:
    row = render_table(ACTION, [action()], {}, now=NOW)["rows"][0]
    assert row["cells"] == ["kill-web", "pod-kill", None, None, None, None,
                            '{"mode":"fixed","value":2}']


def test_custom_resource_without_printer_columns_gets_name_and_age() -> None:
    plain = ResourceType("pystol.org", "v1alpha1", "pystolschedules", "PystolSchedule", True,
                         schema={"type": "object"})
    result = render_table(plain, [action()], {}, now=NOW)
    assert names(result) == ["Name", "Age"]
    assert result["rows"][0]["cells"] == ["kill-web", "2m"]


def test_custom_resource_cell_types() -> None:
    columns = ResourceType("x.io", "v1", "things", "Thing", False, printer_columns=(
        PrinterColumn("Num", "number", ".n"), PrinterColumn("Flag", "boolean", ".b"),
        PrinterColumn("Text", "string", ".f"), PrinterColumn("When", "date", ".bad"),
        PrinterColumn("IntFromText", "integer", ".s"), PrinterColumn("Age", "date",
                                                                    ".metadata.creationTimestamp"),
    ))
    obj = {"metadata": {"name": "t", "creationTimestamp": ago(days=3)}, "n": 3, "b": True,
           "f": 1.5, "bad": "not-a-date", "s": "7"}
    result = render_table(columns, [obj], {}, now=NOW)
    assert names(result)[-1] == "Age"
    assert result["rows"][0]["cells"] == ["t", 3.0, True, "1.5", "<invalid>", None, "3d"]


@pytest.mark.parametrize(("path", "expected"), [
    (".spec.action", ["pod-kill"]),
    ("{.spec.action}", ["pod-kill"]),
    (".status.conditions[0].type", ["Injected"]),
    (".status.conditions[-1].type", ["Ready"]),
    ('.status.conditions[?(@.type=="Ready")].status', ["False"]),
    (".status.conditions[?(@.type=='Injected')].status", ["True"]),
    ('.status.conditions[?(@.status!="True")].type', ["Ready"]),
    (".status.conditions[*].type", ["Injected", "Ready"]),
    (".status.conditions[?(@.reason)].type", []),
    (".status.result.targets[?(@.count>1)].count", [2]),
    (".metadata.labels.app\\.kubernetes\\.io/name", ["web"]),
    (".metadata.labels['app.kubernetes.io/name']", ["web"]),
    (".status.missing.deeper", []),
    (".status.conditions[5].type", []),
    ("..count", [2]),
])
def test_jsonpath_forms(path: str, expected: list) -> None:
    obj = action(conditions=[{"type": "Injected", "status": "True"},
                             {"type": "Ready", "status": "False"}],
                 result={"targets": [{"count": 2}]})
    obj["metadata"]["labels"] = {"app.kubernetes.io/name": "web"}
    assert evaluate_jsonpath(obj, path) == expected


def test_unparseable_jsonpath_gives_a_null_cell() -> None:
    broken = ResourceType("x.io", "v1", "things", "Thing", False,
                          printer_columns=(PrinterColumn("Bad", "string", ".a[?(@.b ~ 1)]"),))
    row = render_table(broken, [{"metadata": {"name": "t"}}], {}, now=NOW)["rows"][0]
    assert row["cells"] == ["t", None]
