"""`meta.k8s.io/v1 Table` answers, so `kubectl get` prints what a real cluster prints.

kubectl asks every list and get for `application/json;as=Table;v=v1;g=meta.k8s.io`
first. A server that cannot answer gets plain lists back and kubectl then prints only
NAME and AGE: no READY, STATUS, RESTARTS or NODE for pods, no STATUS for nodes, none
of a CRD's printer columns. The columns and cells are computed on the server (the
real ones in kubernetes `pkg/printers/internalversion/printers.go`, the CRD ones in
apiextensions' `tableconvertor`); kubectl only lays them out, hides priority > 0
columns unless `-o wide`, and prints `<none>` for a null cell.

So this module re-implements those printers over plain JSON objects (dicts as the
store keeps them), cell for cell, for the kinds the simulator serves:

- built-in kinds: the same columns, types, priorities and cell texts as the real
  printers (pod status reasons such as `ContainerCreating`, `CrashLoopBackOff`,
  `Init:0/1`, `Terminating`; restarts as `3 (5m ago)`; node roles and
  `SchedulingDisabled`; ...). Fields an object lacks are read the way the API's
  defaulting would have filled them (a Deployment without `spec.replicas` has 1).
- custom resources: `Name`, then the CRD's `additionalPrinterColumns` evaluated
  with a small JSONPath interpreter and converted per column type exactly like the
  apiextensions server (a `date` column becomes a human duration, a missing value a
  null cell). As on a real server, `Age` is *not* appended to explicit printer
  columns; a CRD without any is served `Name`, `Age`.
- kinds without a printer (Roles, ClusterRoles, CustomResourceDefinitions): the
  generic server-side default, `Name` and `Created At` (an RFC 3339 timestamp).

Ages use the same rounding as `k8s.io/apimachinery/pkg/util/duration.HumanDuration`
(`5s`, `3m2s`, `4h`, `2d`), computed against `now` so tests can pin the clock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pystol_sim.resources import PrinterColumn, ResourceType

__all__ = [
    "JSONPathError",
    "evaluate_jsonpath",
    "human_duration",
    "parse_timestamp",
    "render_table",
    "table_columns",
]

# The descriptions the real server sends for the two columns every table has
# (metav1.ObjectMeta{}.SwaggerDoc()["name"] / ["creationTimestamp"]).
NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
CREATION_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)

Row = dict[str, Any]
Printer = Callable[[dict[str, Any], datetime], Row]


# --------------------------------------------------------------------------- time


_FRACTION = re.compile(r"\.(\d+)")


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (metav1.Time or MicroTime) as an aware datetime, else None."""
    if not isinstance(value, str) or not value or value == "null":
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python takes at most microseconds; MicroTime and some clients send nanoseconds.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(delta: timedelta) -> str:
    """kubectl's human duration (apimachinery `duration.HumanDuration`), e.g. `3m2s`."""
    micros = delta // timedelta(microseconds=1)
    # Go converts with truncation towards zero.
    seconds = int(micros / 1_000_000) if micros < 0 else micros // 1_000_000
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def _since(value: Any, now: datetime) -> str:
    """`translateTimestampSince`: the age of a timestamp, `<unknown>` when unset."""
    stamp = parse_timestamp(value)
    if stamp is None:
        return "<unknown>"
    return human_duration(now - stamp)


def _age(obj: dict[str, Any], now: datetime) -> str:
    return _since(_meta(obj).get("creationTimestamp"), now)


# ------------------------------------------------------------------------ helpers


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _dig(obj: Any, *path: str | int) -> Any:
    """obj[path[0]][path[1]]..., None as soon as a step is missing."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list) or not -len(obj) <= step < len(obj):
                return None
            obj = obj[step]
        else:
            if not isinstance(obj, dict):
                return None
            obj = obj.get(step)
    return obj


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return default


def _replicas(obj: dict[str, Any]) -> int:
    """spec.replicas as the API's defaulting leaves it (1 when the field was omitted)."""
    value = _dig(obj, "spec", "replicas")
    return _int(value) if value is not None else 1


def _column(name: str, type_: str = "string", description: str = "", priority: int = 0,
            format_: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": format_, "description": description,
            "priority": priority}


def _name_column() -> dict[str, Any]:
    return _column("Name", format_="name", description=NAME_DESCRIPTION)


def _age_column() -> dict[str, Any]:
    return _column("Age", description=CREATION_DESCRIPTION)


def format_labels(labels: Any) -> str:
    """`labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty."""
    pairs = [f"{k}={v}" for k, v in sorted(_dict(labels).items())]
    return ",".join(pairs) if pairs else "<none>"


def selector_string(selector: Any) -> str:
    """`metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key."""
    sel = _dict(selector)
    requirements: list[tuple[str, str]] = []
    for key, value in _dict(sel.get("matchLabels")).items():
        requirements.append((key, f"{key}={value}"))
    for expr in _list(sel.get("matchExpressions")):
        expr = _dict(expr)
        key = str(expr.get("key", ""))
        values = ",".join(sorted(str(v) for v in _list(expr.get("values"))))
        op = expr.get("operator")
        if op == "In":
            requirements.append((key, f"{key} in ({values})"))
        elif op == "NotIn":
            requirements.append((key, f"{key} notin ({values})"))
        elif op == "Exists":
            requirements.append((key, key))
        elif op == "DoesNotExist":
            requirements.append((key, f"!{key}"))
        else:
            return "<error>"
    requirements.sort(key=lambda item: item[0])
    return ",".join(text for _, text in requirements)


def format_label_selector(selector: Any) -> str:
    """`metav1.FormatLabelSelector`: the selector string, `<none>` when empty."""
    text = selector_string(selector)
    return text or "<none>"


def _containers_cells(pod_spec: Any) -> tuple[str, str]:
    containers = [_dict(c) for c in _list(_dict(pod_spec).get("containers"))]
    names = ",".join(str(c.get("name", "")) for c in containers)
    images = ",".join(str(c.get("image", "")) for c in containers)
    return names, images


# ---------------------------------------------------------------------- printers


def _print_pod(pod: dict[str, Any], now: datetime) -> Row:
    spec = _dict(pod.get("spec"))
    status = _dict(pod.get("status"))
    meta = _meta(pod)

    init_specs = {str(c.get("name")): c for c in map(_dict, _list(spec.get("initContainers")))}

    def restartable(name: Any) -> bool:  # a sidecar: an init container that keeps running
        return _dict(init_specs.get(str(name))).get("restartPolicy") == "Always"

    restarts = 0
    restartable_restarts = 0
    total = len(_list(spec.get("containers"))) + sum(1 for n in init_specs if restartable(n))
    ready = 0
    last_restart: datetime | None = None
    last_restartable_restart: datetime | None = None

    phase = status.get("phase") or ""
    reason = str(status.get("reason") or phase)
    conditions = [_dict(c) for c in _list(status.get("conditions"))]
    for cond in conditions:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    row: Row = {}
    if phase == "Succeeded":
        row["conditions"] = [{"type": "Completed", "status": "True", "reason": "Succeeded",
                              "message": "The pod has completed successfully."}]
    elif phase == "Failed":
        row["conditions"] = [{"type": "Completed", "status": "True", "reason": "Failed",
                              "message": "The pod failed."}]

    def finished_at(container: dict[str, Any]) -> datetime | None:
        return parse_timestamp(_dig(container, "lastState", "terminated", "finishedAt"))

    def later(a: datetime | None, b: datetime | None) -> datetime | None:
        if a is None:
            return b
        if b is None:
            return a
        return max(a, b)

    init_statuses = [_dict(c) for c in _list(status.get("initContainerStatuses"))]
    n_init = len(init_specs)
    initializing = False
    for i, container in enumerate(init_statuses):
        count = _int(container.get("restartCount"))
        restarts += count
        last_restart = later(last_restart, finished_at(container))
        sidecar = restartable(container.get("name"))
        if sidecar:
            restartable_restarts += count
            last_restartable_restart = later(last_restartable_restart, finished_at(container))
        state = _dict(container.get("state"))
        terminated = state.get("terminated")
        waiting = state.get("waiting")
        if isinstance(terminated, dict) and _int(terminated.get("exitCode")) == 0:
            continue
        if sidecar and container.get("started") is True:
            if container.get("ready"):
                ready += 1
            continue
        if isinstance(terminated, dict):
            if not terminated.get("reason"):
                if _int(terminated.get("signal")):
                    reason = f"Init:Signal:{_int(terminated.get('signal'))}"
                else:
                    reason = f"Init:ExitCode:{_int(terminated.get('exitCode'))}"
            else:
                reason = f"Init:{terminated['reason']}"
        elif (isinstance(waiting, dict) and waiting.get("reason")
              and waiting.get("reason") != "PodInitializing"):
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break

    initialized = False  # isPodInitializedConditionTrue: the first Initialized condition
    for cond in conditions:
        if cond.get("type") == "Initialized":
            initialized = cond.get("status") == "True"
            break
    if not initializing or initialized:
        restarts = restartable_restarts
        last_restart = last_restartable_restart
        has_running = False
        for container in reversed([_dict(c) for c in _list(status.get("containerStatuses"))]):
            restarts += _int(container.get("restartCount"))
            last_restart = later(last_restart, finished_at(container))
            state = _dict(container.get("state"))
            waiting = state.get("waiting")
            terminated = state.get("terminated")
            if isinstance(waiting, dict) and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif isinstance(terminated, dict) and terminated.get("reason"):
                reason = str(terminated["reason"])
            elif isinstance(terminated, dict):
                if _int(terminated.get("signal")):
                    reason = f"Signal:{_int(terminated.get('signal'))}"
                else:
                    reason = f"ExitCode:{_int(terminated.get('exitCode'))}"
            elif container.get("ready") and isinstance(state.get("running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in conditions)
            reason = "Running" if pod_ready else "NotReady"

    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts != 0 and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"

    pod_ip = _dig(status, "podIPs", 0, "ip") or status.get("podIP") or "<none>"
    gates = [_dict(g) for g in _list(spec.get("readinessGates"))]
    readiness_gates = "<none>"
    if gates:
        true_count = 0
        for gate in gates:
            for cond in conditions:
                if cond.get("type") == gate.get("conditionType"):
                    if cond.get("status") == "True":
                        true_count += 1
                    break
        readiness_gates = f"{true_count}/{len(gates)}"

    row["cells"] = [
        meta.get("name", ""), f"{ready}/{total}", reason, restarts_text, _age(pod, now),
        pod_ip, spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>",
        readiness_gates,
    ]
    return row


def _node_roles(labels: dict[str, Any]) -> list[str]:
    roles: set[str] = set()
    for key, value in labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    return sorted(roles)


def _print_node(node: dict[str, Any], now: datetime) -> Row:
    meta = _meta(node)
    status = _dict(node.get("status"))
    info = _dict(status.get("nodeInfo"))
    conditions = {c.get("type"): c for c in map(_dict, _list(status.get("conditions")))}
    states: list[str] = []
    if "Ready" in conditions:
        states.append("Ready" if conditions["Ready"].get("status") == "True" else "NotReady")
    if not states:
        states.append("Unknown")
    if _dig(node, "spec", "unschedulable"):
        states.append("SchedulingDisabled")
    roles = ",".join(_node_roles(_dict(meta.get("labels")))) or "<none>"

    def address(kind: str) -> str:
        for addr in map(_dict, _list(status.get("addresses"))):
            if addr.get("type") == kind:
                return str(addr.get("address", ""))
        return "<none>"

    return {"cells": [
        meta.get("name", ""), ",".join(states), roles, _age(node, now),
        info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"),
        info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]}


def _print_deployment(obj: dict[str, Any], now: datetime) -> Row:
    status = _dict(obj.get("status"))
    names, images = _containers_cells(_dig(obj, "spec", "template", "spec"))
    return {"cells": [
        _meta(obj).get("name", ""),
        f"{_int(status.get('readyReplicas'))}/{_replicas(obj)}",
        _int(status.get("updatedReplicas")), _int(status.get("availableReplicas")),
        _age(obj, now), names, images, selector_string(_dig(obj, "spec", "selector")),
    ]}


def _print_replicaset(obj: dict[str, Any], now: datetime) -> Row:
    status = _dict(obj.get("status"))
    names, images = _containers_cells(_dig(obj, "spec", "template", "spec"))
    return {"cells": [
        _meta(obj).get("name", ""), _replicas(obj), _int(status.get("replicas")),
        _int(status.get("readyReplicas")), _age(obj, now), names, images,
        format_label_selector(_dig(obj, "spec", "selector")),
    ]}


def _print_statefulset(obj: dict[str, Any], now: datetime) -> Row:
    names, images = _containers_cells(_dig(obj, "spec", "template", "spec"))
    ready = _int(_dig(obj, "status", "readyReplicas"))
    return {"cells": [
        _meta(obj).get("name", ""), f"{ready}/{_replicas(obj)}", _age(obj, now), names, images,
    ]}


def _print_daemonset(obj: dict[str, Any], now: datetime) -> Row:
    status = _dict(obj.get("status"))
    names, images = _containers_cells(_dig(obj, "spec", "template", "spec"))
    return {"cells": [
        _meta(obj).get("name", ""), _int(status.get("desiredNumberScheduled")),
        _int(status.get("currentNumberScheduled")), _int(status.get("numberReady")),
        _int(status.get("updatedNumberScheduled")), _int(status.get("numberAvailable")),
        format_labels(_dig(obj, "spec", "template", "spec", "nodeSelector")), _age(obj, now),
        names, images, format_label_selector(_dig(obj, "spec", "selector")),
    ]}


def _service_external_ip(svc: dict[str, Any]) -> str:
    spec = _dict(svc.get("spec"))
    svc_type = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in _list(spec.get("externalIPs"))]
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if svc_type == "LoadBalancer":
        lb: list[str] = []
        for ingress in map(_dict, _list(_dig(svc, "status", "loadBalancer", "ingress"))):
            value = ingress.get("ip") or ingress.get("hostname")
            if value and value not in lb:
                lb.append(str(value))
        if external:
            return ",".join(lb + external)
        return ",".join(lb) if lb else "<pending>"
    if svc_type == "ExternalName":
        return str(spec.get("externalName", ""))
    return "<unknown>"


def _print_service(svc: dict[str, Any], now: datetime) -> Row:
    spec = _dict(svc.get("spec"))
    cluster_ip = _dig(spec, "clusterIPs", 0) or spec.get("clusterIP") or "<none>"
    pieces = []
    for port in map(_dict, _list(spec.get("ports"))):
        proto = port.get("protocol") or "TCP"
        if _int(port.get("nodePort")) > 0:
            pieces.append(f"{_int(port.get('port'))}:{_int(port.get('nodePort'))}/{proto}")
        else:
            pieces.append(f"{_int(port.get('port'))}/{proto}")
    return {"cells": [
        _meta(svc).get("name", ""), spec.get("type") or "ClusterIP", cluster_ip,
        _service_external_ip(svc), ",".join(pieces) or "<none>", _age(svc, now),
        format_labels(spec.get("selector")),
    ]}


def _print_namespace(obj: dict[str, Any], now: datetime) -> Row:
    phase = _dig(obj, "status", "phase") or "Active"
    return {"cells": [_meta(obj).get("name", ""), phase, _age(obj, now)]}


def _print_event(ev: dict[str, Any], now: datetime) -> Row:
    first = _since(ev.get("firstTimestamp"), now)
    if parse_timestamp(ev.get("firstTimestamp")) is None:
        first = _since(ev.get("eventTime"), now)
    last = _since(ev.get("lastTimestamp"), now)
    if parse_timestamp(ev.get("lastTimestamp")) is None:
        last = first
    count = _int(ev.get("count"))
    series = ev.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the events.k8s.io API carry no count
    involved = _dict(ev.get("involvedObject"))
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = _dict(ev.get("source"))
    component = source.get("component") or ev.get("reportingComponent") or ""
    instance = source.get("host") or ev.get("reportingInstance") or ""
    return {"cells": [
        last, ev.get("type", ""), ev.get("reason", ""), target,
        involved.get("fieldPath", ""), f"{component}, {instance}" if instance else component,
        str(ev.get("message", "")).strip(), first, count, _meta(ev).get("name", ""),
    ]}


def _intstr(value: Any) -> str:
    if value is None:
        return "N/A"
    return str(value)


def _print_pdb(obj: dict[str, Any], now: datetime) -> Row:
    spec = _dict(obj.get("spec"))
    return {"cells": [
        _meta(obj).get("name", ""), _intstr(spec.get("minAvailable")),
        _intstr(spec.get("maxUnavailable")), _int(_dig(obj, "status", "disruptionsAllowed")),
        _age(obj, now),
    ]}


def _print_configmap(obj: dict[str, Any], now: datetime) -> Row:
    data = len(_dict(obj.get("data"))) + len(_dict(obj.get("binaryData")))
    return {"cells": [_meta(obj).get("name", ""), data, _age(obj, now)]}


def _print_secret(obj: dict[str, Any], now: datetime) -> Row:
    return {"cells": [_meta(obj).get("name", ""), obj.get("type") or "Opaque",
                      len(_dict(obj.get("data"))), _age(obj, now)]}


def _print_serviceaccount(obj: dict[str, Any], now: datetime) -> Row:
    return {"cells": [_meta(obj).get("name", ""), len(_list(obj.get("secrets"))),
                      _age(obj, now)]}


def _format_endpoints(obj: dict[str, Any]) -> str:
    subsets = [_dict(s) for s in _list(obj.get("subsets"))]
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    more = False
    for subset in subsets:
        addresses = [str(_dict(a).get("ip", "")) for a in _list(subset.get("addresses"))]
        ports: list[dict[str, Any] | None] = [_dict(p) for p in _list(subset.get("ports"))]
        for port in ports or [None]:
            count += len(addresses)
            for ip in addresses:
                if len(shown) == 3:
                    more = True
                    break
                if port is None:
                    shown.append(ip)
                else:
                    host = f"[{ip}]" if ":" in ip else ip
                    shown.append(f"{host}:{_int(port.get('port'))}")
    text = ",".join(shown)
    return f"{text} + {count - 3} more..." if more else text


def _print_endpoints(obj: dict[str, Any], now: datetime) -> Row:
    return {"cells": [_meta(obj).get("name", ""), _format_endpoints(obj), _age(obj, now)]}


_ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                 "ReadWriteOncePod": "RWOP"}


def _print_pvc(obj: dict[str, Any], now: datetime) -> Row:
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    phase = "Terminating" if _meta(obj).get("deletionTimestamp") else status.get("phase", "")
    capacity = access = ""
    if spec.get("volumeName"):
        modes = [str(m) for m in _list(status.get("accessModes"))]
        access = ",".join(_ACCESS_MODES[m] for m in _ACCESS_MODES if m in modes)
        capacity = str(_dig(status, "capacity", "storage") or "")
    storage_class = spec.get("storageClassName") or _dict(_meta(obj).get("annotations")).get(
        "volume.beta.kubernetes.io/storage-class", "")
    return {"cells": [
        _meta(obj).get("name", ""), phase, spec.get("volumeName", ""), capacity, access,
        storage_class, spec.get("volumeAttributesClassName") or "<unset>", _age(obj, now),
        spec.get("volumeMode") or "<unset>",
    ]}


def _print_lease(obj: dict[str, Any], now: datetime) -> Row:
    return {"cells": [_meta(obj).get("name", ""), _dig(obj, "spec", "holderIdentity") or "",
                      _age(obj, now)]}


def _print_networkpolicy(obj: dict[str, Any], now: datetime) -> Row:
    return {"cells": [_meta(obj).get("name", ""),
                      format_label_selector(_dig(obj, "spec", "podSelector")), _age(obj, now)]}


def _print_binding(obj: dict[str, Any], now: datetime) -> Row:
    ref = _dict(obj.get("roleRef"))
    users: list[str] = []
    groups: list[str] = []
    sas: list[str] = []
    for subject in map(_dict, _list(obj.get("subjects"))):
        if subject.get("kind") == "ServiceAccount":
            sas.append(f"{subject.get('namespace', '')}/{subject.get('name', '')}")
        elif subject.get("kind") == "User":
            users.append(str(subject.get("name", "")))
        elif subject.get("kind") == "Group":
            groups.append(str(subject.get("name", "")))
    return {"cells": [
        _meta(obj).get("name", ""), f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _age(obj, now), ", ".join(users), ", ".join(groups), ", ".join(sas),
    ]}


def _print_created_at(obj: dict[str, Any], now: datetime) -> Row:
    stamp = parse_timestamp(_meta(obj).get("creationTimestamp"))
    text = (stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stamp
            else "0001-01-01T00:00:00Z")
    return {"cells": [_meta(obj).get("name", ""), text]}


def _print_name_age(obj: dict[str, Any], now: datetime) -> Row:
    return {"cells": [_meta(obj).get("name", ""), _age(obj, now)]}


def _has_condition(obj: dict[str, Any], kind: str) -> bool:
    """`hasJobCondition`: the condition is present with status True."""
    return any(_dict(c).get("type") == kind and _dict(c).get("status") == "True"
               for c in _list(_dig(obj, "status", "conditions")))


def _print_job(obj: dict[str, Any], now: datetime) -> Row:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_int(spec.get('completions'))}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec.get('parallelism'))}"
    else:
        completions = f"{succeeded}/1"
    started = parse_timestamp(status.get("startTime"))
    finished = parse_timestamp(status.get("completionTime"))
    duration = "" if started is None else human_duration((finished or now) - started)
    if _has_condition(obj, "Complete"):
        state = "Complete"
    elif _has_condition(obj, "Failed"):
        state = "Failed"
    elif _meta(obj).get("deletionTimestamp"):
        state = "Terminating"
    elif _has_condition(obj, "Suspended"):
        state = "Suspended"
    elif _has_condition(obj, "FailureTarget"):
        state = "FailureTarget"
    elif _has_condition(obj, "SuccessCriteriaMet"):
        state = "SuccessCriteriaMet"
    else:
        state = "Running"
    names, images = _containers_cells(_dig(spec, "template", "spec"))
    return {"cells": [_meta(obj).get("name", ""), state, completions, duration, _age(obj, now),
                      names, images, format_label_selector(spec.get("selector"))]}


def _print_cronjob(obj: dict[str, Any], now: datetime) -> Row:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    last = status.get("lastScheduleTime")
    suspend = spec.get("suspend")
    # `printBoolPtr`; the API server defaults suspend to false, so unset reads False.
    suspended = "True" if suspend is True else "False"
    job_spec = _dict(_dig(spec, "jobTemplate", "spec"))
    names, images = _containers_cells(_dig(job_spec, "template", "spec"))
    return {"cells": [
        _meta(obj).get("name", ""), spec.get("schedule", ""), spec.get("timeZone") or "<none>",
        suspended, len(_list(status.get("active"))),
        _since(last, now) if last else "<none>", _age(obj, now),
        names, images, format_label_selector(job_spec.get("selector")),
    ]}


def _print_resourcequota(obj: dict[str, Any], now: datetime) -> Row:
    hard = _dict(_dig(obj, "spec", "hard"))
    used = _dict(_dig(obj, "status", "used"))
    hard_seen = _dict(_dig(obj, "status", "hard"))
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        column = limits if resource.split(".")[0] == "limits" and "." in resource else requests
        column.append(f"{resource}: {used.get(resource, '0')}/{hard_seen.get(resource, '0')}")
    return {"cells": [_meta(obj).get("name", ""), _age(obj, now), ", ".join(requests),
                      ", ".join(limits)]}


def _print_ingress(obj: dict[str, Any], now: datetime) -> Row:
    spec = _dict(obj.get("spec"))
    rules = [_dict(r) for r in _list(spec.get("rules"))]
    hosts: list[str] = []
    more = False
    for rule in rules:  # `formatHosts`: at most three, then "+ N more..."
        if len(hosts) == 3:
            more = True
        if not more and rule.get("host"):
            hosts.append(str(rule["host"]))
    host_cell = ",".join(hosts) if hosts else "*"
    if more:
        host_cell = f"{host_cell} + {len(rules) - 3} more..."
    addresses: list[str] = []
    for ingress in _list(_dig(obj, "status", "loadBalancer", "ingress")):
        address = _dict(ingress).get("ip") or _dict(ingress).get("hostname")
        if address and address not in addresses:
            addresses.append(str(address))
    return {"cells": [
        _meta(obj).get("name", ""), spec.get("ingressClassName") or "<none>", host_cell,
        ",".join(addresses), "80, 443" if _list(spec.get("tls")) else "80", _age(obj, now),
    ]}


def _print_priorityclass(obj: dict[str, Any], now: datetime) -> Row:
    # preemptionPolicy as the API server's defaulting leaves it.
    return {"cells": [
        _meta(obj).get("name", ""), _int(obj.get("value")), obj.get("globalDefault") is True,
        _age(obj, now), obj.get("preemptionPolicy") or "PreemptLowerPriority",
    ]}


_CONTAINERS = "Names of each container in the template."
_IMAGES = "Images referenced by each container in the template."

_POD_COLUMNS = [
    _name_column(),
    _column("Ready", description="The aggregate readiness state of this pod for accepting "
            "traffic."),
    _column("Status", description="The aggregate status of the containers in this pod."),
    _column("Restarts", description="The number of times the containers in this pod have been "
            "restarted and when the last container in this pod has restarted."),
    _age_column(),
    _column("IP", priority=1, description="podIP address allocated to the pod."),
    _column("Node", priority=1, description="NodeName indicates in which node this pod is "
            "scheduled."),
    _column("Nominated Node", priority=1, description="nominatedNodeName is set only when this "
            "pod preempts other pods on the node."),
    _column("Readiness Gates", priority=1, description="If specified, all readiness gates will "
            "be evaluated for pod readiness."),
]
_NODE_COLUMNS = [
    _name_column(),
    _column("Status", description="The status of the node"),
    _column("Roles", description="The roles of the node"),
    _age_column(),
    _column("Version", description="Kubelet Version reported by the node."),
    _column("Internal-IP", priority=1, description="List of addresses reachable to the node."),
    _column("External-IP", priority=1, description="List of addresses reachable to the node."),
    _column("OS-Image", priority=1, description="OS Image reported by the node."),
    _column("Kernel-Version", priority=1, description="Kernel Version reported by the node."),
    _column("Container-Runtime", priority=1, description="ContainerRuntime Version reported by "
            "the node."),
]
_DEPLOYMENT_COLUMNS = [
    _name_column(),
    _column("Ready", description="Number of the pod with ready state"),
    _column("Up-to-date", description="Total number of non-terminated pods targeted by this "
            "deployment that have the desired template spec."),
    _column("Available", description="Total number of available non-terminating pods targeted "
            "by this deployment."),
    _age_column(),
    _column("Containers", priority=1, description=_CONTAINERS),
    _column("Images", priority=1, description=_IMAGES),
    _column("Selector", priority=1, description="Label selector for pods."),
]
_REPLICASET_COLUMNS = [
    _name_column(),
    _column("Desired", "integer", "Replicas is the number of desired pods."),
    _column("Current", "integer", "Replicas is the most recently observed number of non-"
            "terminating pods."),
    _column("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet "
            "with a Ready Condition."),
    _age_column(),
    _column("Containers", priority=1, description=_CONTAINERS),
    _column("Images", priority=1, description=_IMAGES),
    _column("Selector", priority=1, description="Selector is a label query over pods."),
]
_STATEFULSET_COLUMNS = [
    _name_column(),
    _column("Ready", description="Number of the pod with ready state"),
    _age_column(),
    _column("Containers", priority=1, description=_CONTAINERS),
    _column("Images", priority=1, description=_IMAGES),
]
_DAEMONSET_COLUMNS = [
    _name_column(),
    _column("Desired", "integer", "The total number of nodes that should be running the daemon "
            "pod."),
    _column("Current", "integer", "The number of nodes that are running at least 1 daemon pod."),
    _column("Ready", "integer", "The number of nodes that should be running the daemon pod and "
            "have one or more of the daemon pod running with a Ready Condition."),
    _column("Up-to-date", "integer", "The total number of nodes that are running updated daemon "
            "pod"),
    _column("Available", "integer", "The number of nodes that should be running the daemon pod "
            "and have one or more of the daemon pod running and available."),
    _column("Node Selector", description="NodeSelector is a selector which must be true for the "
            "pod to fit on a node."),
    _age_column(),
    _column("Containers", priority=1, description=_CONTAINERS),
    _column("Images", priority=1, description=_IMAGES),
    _column("Selector", priority=1, description="A label query over pods that are managed by "
            "the daemon set."),
]
_SERVICE_COLUMNS = [
    _name_column(),
    _column("Type", description="type determines how the Service is exposed."),
    _column("Cluster-IP", description="clusterIP is the IP address of the service."),
    _column("External-IP", description="externalIPs is a list of IP addresses for which nodes "
            "in the cluster will also accept traffic for this service."),
    _column("Port(s)", description="The list of ports that are exposed by this service."),
    _age_column(),
    _column("Selector", priority=1, description="Route service traffic to pods with label keys "
            "and values matching this selector."),
]
_NAMESPACE_COLUMNS = [
    _name_column(),
    _column("Status", description="The status of the namespace"),
    _age_column(),
]
_EVENT_COLUMNS = [
    _column("Last Seen", description="The time at which the most recent occurrence of this "
            "event was recorded."),
    _column("Type", description="Type of this event (Normal, Warning), new types could be added "
            "in the future"),
    _column("Reason", description="This should be a short, machine understandable string that "
            "gives the reason for the transition into the object's current status."),
    _column("Object", description="The object that this event is about."),
    _column("Subobject", priority=1, description="If referring to a piece of an object instead "
            "of an entire object, this string should contain a valid JSON/Go field access "
            "statement, such as desiredState.manifest.containers[2]."),
    _column("Source", priority=1, description="The component reporting this event."),
    _column("Message", description="A human-readable description of the status of this "
            "operation."),
    _column("First Seen", priority=1, description="The time at which the event was first "
            "recorded."),
    _column("Count", priority=1, description="The number of times this event has occurred."),
    _column("Name", priority=1, format_="name", description=NAME_DESCRIPTION),
]
_PDB_COLUMNS = [
    _name_column(),
    _column("Min Available", description="The minimum number of pods that must be available."),
    _column("Max Unavailable", description="The maximum number of pods that may be "
            "unavailable."),
    _column("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted "
            "at this time."),
    _age_column(),
]
_CONFIGMAP_COLUMNS = [
    _name_column(),
    _column("Data", description="Data contains the configuration data."),
    _age_column(),
]
_SECRET_COLUMNS = [
    _name_column(),
    _column("Type", description="Used to facilitate programmatic handling of secret data."),
    _column("Data", description="Data contains the secret data."),
    _age_column(),
]
_SERVICEACCOUNT_COLUMNS = [
    _name_column(),
    _column("Secrets", description="Secrets is a list of the secrets in the same namespace that "
            "pods running using this ServiceAccount are allowed to use."),
    _age_column(),
]
_ENDPOINTS_COLUMNS = [
    _name_column(),
    _column("Endpoints", description="The set of all endpoints is the union of all subsets."),
    _age_column(),
]
_PVC_COLUMNS = [
    _name_column(),
    _column("Status", description="phase represents the current phase of "
            "PersistentVolumeClaim."),
    _column("Volume", description="volumeName is the binding reference to the PersistentVolume "
            "backing this claim."),
    _column("Capacity", description="capacity represents the actual resources of the underlying "
            "volume."),
    _column("Access Modes", description="accessModes contains the actual access modes the "
            "volume backing the PVC has."),
    _column("StorageClass", description="StorageClass of the pvc"),
    _column("VolumeAttributesClass", description="VolumeAttributesClass of the pvc"),
    _age_column(),
    _column("VolumeMode", priority=1, description="volumeMode defines what type of volume is "
            "required by the claim."),
]
_LEASE_COLUMNS = [
    _name_column(),
    _column("Holder", description="holderIdentity contains the identity of the holder of a "
            "current lease."),
    _age_column(),
]
_NETWORKPOLICY_COLUMNS = [
    _name_column(),
    _column("Pod-Selector", description="podSelector selects the pods to which this "
            "NetworkPolicy object applies."),
    _age_column(),
]

_JOB_COLUMNS = [
    _name_column(),
    _column("Status", description="Status of the job."),
    _column("Completions", description="The number of pods which reached phase Succeeded."),
    _column("Duration", description="Time required to complete the job."),
    _age_column(),
    _column("Containers", priority=1, description=_CONTAINERS),
    _column("Images", priority=1, description=_IMAGES),
    _column("Selector", priority=1, description="A label query over pods that should match "
            "the pod count."),
]
_CRONJOB_COLUMNS = [
    _name_column(),
    _column("Schedule", description="The schedule in Cron format."),
    _column("Timezone", description="The time zone name for the given schedule."),
    _column("Suspend", "boolean", "This flag tells the controller to suspend subsequent "
            "executions."),
    _column("Active", "integer", "A list of pointers to currently running jobs."),
    _column("Last Schedule", description="Information when was the last time the job was "
            "successfully scheduled."),
    _age_column(),
    _column("Containers", priority=1, description=_CONTAINERS),
    _column("Images", priority=1, description=_IMAGES),
    _column("Selector", priority=1, description="A label query over pods that should match "
            "the pod count."),
]
_RESOURCEQUOTA_COLUMNS = [
    _name_column(),
    _age_column(),
    _column("Request", description="Request represents a minimum amount of cpu/memory that a "
            "container may consume."),
    _column("Limit", description="Limits control the maximum amount of cpu/memory that a "
            "container may use independent of contention on the node."),
]
_INGRESS_COLUMNS = [
    _name_column(),
    _column("Class", description="The name of the IngressClass resource that should be used "
            "for additional configuration"),
    _column("Hosts", description="Hosts that incoming requests are matched against before the "
            "ingress rule"),
    _column("Address", description="Address is a list containing ingress points for the "
            "load-balancer"),
    _column("Ports", description="Ports of TLS configurations that open"),
    _age_column(),
]
_PRIORITYCLASS_COLUMNS = [
    _name_column(),
    _column("Value", "integer", "value represents the integer value of this priority class."),
    _column("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass "
            "should be considered as the default priority for pods that do not have any "
            "priority class."),
    _age_column(),
    _column("PreemptionPolicy", description="preemptionPolicy is the Policy for preempting "
            "pods with lower priority."),
]


def _binding_columns(what: str) -> list[dict[str, Any]]:
    return [
        _name_column(),
        _column("Role", description="RoleRef can reference a Role in the current namespace or a "
                "ClusterRole in the global namespace."),
        _age_column(),
        _column("Users", priority=1, description=f"Users in the {what}"),
        _column("Groups", priority=1, description=f"Groups in the {what}"),
        _column("ServiceAccounts", priority=1, description=f"ServiceAccounts in the {what}"),
    ]


_CREATED_AT_COLUMNS = [
    _name_column(),
    _column("Created At", "date", CREATION_DESCRIPTION),
]

# (group, plural) -> (columns, printer), as registered by the real server.
_PRINTERS: dict[tuple[str, str], tuple[list[dict[str, Any]], Printer]] = {
    ("", "pods"): (_POD_COLUMNS, _print_pod),
    ("", "nodes"): (_NODE_COLUMNS, _print_node),
    ("", "services"): (_SERVICE_COLUMNS, _print_service),
    ("", "namespaces"): (_NAMESPACE_COLUMNS, _print_namespace),
    ("", "events"): (_EVENT_COLUMNS, _print_event),
    ("", "configmaps"): (_CONFIGMAP_COLUMNS, _print_configmap),
    ("", "secrets"): (_SECRET_COLUMNS, _print_secret),
    ("", "serviceaccounts"): (_SERVICEACCOUNT_COLUMNS, _print_serviceaccount),
    ("", "endpoints"): (_ENDPOINTS_COLUMNS, _print_endpoints),
    ("", "persistentvolumeclaims"): (_PVC_COLUMNS, _print_pvc),
    ("apps", "deployments"): (_DEPLOYMENT_COLUMNS, _print_deployment),
    ("apps", "replicasets"): (_REPLICASET_COLUMNS, _print_replicaset),
    ("apps", "statefulsets"): (_STATEFULSET_COLUMNS, _print_statefulset),
    ("apps", "daemonsets"): (_DAEMONSET_COLUMNS, _print_daemonset),
    ("policy", "poddisruptionbudgets"): (_PDB_COLUMNS, _print_pdb),
    ("batch", "jobs"): (_JOB_COLUMNS, _print_job),
    ("batch", "cronjobs"): (_CRONJOB_COLUMNS, _print_cronjob),
    ("", "resourcequotas"): (_RESOURCEQUOTA_COLUMNS, _print_resourcequota),
    ("networking.k8s.io", "ingresses"): (_INGRESS_COLUMNS, _print_ingress),
    ("scheduling.k8s.io", "priorityclasses"): (_PRIORITYCLASS_COLUMNS, _print_priorityclass),
    ("coordination.k8s.io", "leases"): (_LEASE_COLUMNS, _print_lease),
    ("networking.k8s.io", "networkpolicies"): (_NETWORKPOLICY_COLUMNS, _print_networkpolicy),
    ("rbac.authorization.k8s.io", "rolebindings"):
        (_binding_columns("roleBinding"), _print_binding),
    ("rbac.authorization.k8s.io", "clusterrolebindings"):
        (_binding_columns("clusterRoleBinding"), _print_binding),
    # No printer on the real server: the generic default table (Name, Created At).
    ("rbac.authorization.k8s.io", "roles"): (_CREATED_AT_COLUMNS, _print_created_at),
    ("rbac.authorization.k8s.io", "clusterroles"): (_CREATED_AT_COLUMNS, _print_created_at),
    ("apiextensions.k8s.io", "customresourcedefinitions"):
        (_CREATED_AT_COLUMNS, _print_created_at),
}


# ---------------------------------------------------------------------- JSONPath


class JSONPathError(ValueError):
    """A printer column's JSONPath that this interpreter cannot parse."""


_TOKEN = re.compile(
    r"""
    (?P<recurse>\.\.)
  | \.(?P<star>\*)(?=[.\[]|$)
  | \.(?P<field>(?:\\.|[^.\[\\])+)
  | \[(?P<bracket>(?:'[^']*'|"[^"]*"|[^\]'"])*)\]
    """,
    re.VERBOSE,
)
_FILTER = re.compile(
    r"""^\?\(\s*@(?P<path>(?:\.(?:\\.|[^.\s=!<>\[\]\\])+|\[[^\]]*\])*)\s*
        (?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>.+?))?\s*\)$""",
    re.VERBOSE,
)


def _parse_path(path: str) -> list[tuple[str, Any]]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    if text and not text.startswith((".", "[")):
        text = "." + text
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise JSONPathError(f"unrecognised JSONPath {path!r} at {text[pos:]!r}")
        pos = match.end()
        if match.group("recurse") is not None:
            # `..x`, `..*`, `..[0]`: the next step applies at every depth.
            rest = text[pos:]
            if rest.startswith("["):
                steps.append(("recurse", None))
                continue
            nxt = _TOKEN.match("." + rest)
            if not nxt or nxt.group("recurse") is not None:
                raise JSONPathError(f"unrecognised JSONPath {path!r} after '..'")
            pos += nxt.end() - 1
            field = nxt.group("field")
            steps.append(("recurse", None if field is None else _unescape(field)))
        elif match.group("field") is not None:
            steps.append(("field", _unescape(match.group("field"))))
        elif match.group("star") is not None:
            steps.append(("wildcard", None))
        else:
            steps.append(_parse_bracket(match.group("bracket").strip(), path))
    return steps


def _unescape(name: str) -> str:
    return re.sub(r"\\(.)", r"\1", name)


def _parse_bracket(inner: str, path: str) -> tuple[str, Any]:
    if inner == "*":
        return ("wildcard", None)
    if inner.startswith("?"):
        match = _FILTER.match(inner)
        if not match:
            raise JSONPathError(f"unrecognised filter in JSONPath {path!r}: [{inner}]")
        sub = _parse_path(match.group("path") or "") if match.group("path") else []
        literal = None
        if match.group("op"):  # without an operator the filter tests for existence
            literal = _parse_literal(match.group("value").strip(), path)
        return ("filter", (sub, match.group("op"), literal))
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return ("field", inner[1:-1])
    if ":" in inner:
        parts = [p.strip() for p in inner.split(":")]
        try:
            bounds = [int(p) if p else None for p in parts[:3]]
        except ValueError as exc:
            raise JSONPathError(f"bad slice in JSONPath {path!r}: [{inner}]") from exc
        return ("slice", tuple(bounds + [None] * (3 - len(bounds))))
    if "," in inner:
        return ("union", [_parse_bracket(p.strip(), path) for p in inner.split(",")])
    try:
        return ("index", int(inner))
    except ValueError as exc:
        raise JSONPathError(f"bad index in JSONPath {path!r}: [{inner}]") from exc


def _parse_literal(text: str, path: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return json.loads(text)
    except ValueError as exc:
        raise JSONPathError(f"bad literal {text!r} in JSONPath {path!r}") from exc


def _descendants(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for child in value.values():
            found.extend(_descendants(child))
    elif isinstance(value, list):
        for child in value:
            found.extend(_descendants(child))
    return found


def _compare(left: Any, op: str, right: Any) -> bool:
    """A filter comparison; like Go's template compare, mixed kinds never match."""
    if op in ("==", "!="):
        equal = left == right and isinstance(left, bool) == isinstance(right, bool)
        return equal if op == "==" else not equal
    if isinstance(left, bool) or isinstance(right, bool):
        return False
    numbers = isinstance(left, (int, float)) and isinstance(right, (int, float))
    strings = isinstance(left, str) and isinstance(right, str)
    if not (numbers or strings):
        return False
    if op == "<":
        return left < right
    if op == ">":
        return left > right
    if op == "<=":
        return left <= right
    return left >= right


def _apply(steps: list[tuple[str, Any]], values: list[Any]) -> list[Any]:
    for kind, arg in steps:
        out: list[Any] = []
        for value in values:
            if kind == "field":
                if isinstance(value, dict) and arg in value:
                    out.append(value[arg])
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    out.append(value[arg])
            elif kind == "wildcard":
                if isinstance(value, dict):
                    out.extend(value.values())
                elif isinstance(value, list):
                    out.extend(value)
            elif kind == "slice":
                if isinstance(value, list):
                    out.extend(value[slice(*arg)])
            elif kind == "union":
                for sub in arg:
                    out.extend(_apply([sub], [value]))
            elif kind == "recurse":
                for node in _descendants(value):
                    if arg is None:
                        out.append(node)
                    elif isinstance(node, dict) and arg in node:
                        out.append(node[arg])
            elif kind == "filter":
                sub, op, literal = arg
                items = value if isinstance(value, list) else (
                    list(value.values()) if isinstance(value, dict) else [])
                for item in items:
                    got = _apply(sub, [item])
                    if op is None:
                        if got and got[0] is not None and got[0] is not False:
                            out.append(item)
                    elif got and _compare(got[0], op, literal):
                        out.append(item)
        values = out
    return values


def evaluate_jsonpath(obj: Any, path: str) -> list[Any]:
    """Every value `path` selects in `obj` (kubectl's JSONPath, missing keys allowed).

    Supports `.a.b`, `.a[0].b`, `.a[-1]`, `.a[*].b`, `.a['x.y']`, `.a\\.b`, `..a`,
    slices, unions and filters such as `.a[?(@.type=="Ready")].status`.
    """
    return _apply(_parse_path(path), [obj])


def _go_float(value: float) -> str:
    """A float64 as Go's fmt prints it with %v: shortest digits, %e when exp < -4 or >= 6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text_digits = "".join(map(str, digits))
    nd = len(text_digits)
    dp = nd + int(exponent)
    exp = dp - 1
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text_digits[0] + ("." + text_digits[1:] if nd > 1 else "")
        return f"{neg}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{text_digits}"
    if dp >= nd:
        return f"{neg}{text_digits}{'0' * (dp - nd)}"
    return f"{neg}{text_digits[:dp]}.{text_digits[dp:]}"


def _go_text(value: Any) -> str | None:
    """How kubectl's JSONPath printer writes one value (maps and lists as compact JSON)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return str(value)


def _custom_cell(column: PrinterColumn, obj: dict[str, Any], now: datetime) -> Any:
    """One printer-column cell, converted the way the apiextensions table convertor does."""
    try:
        results = evaluate_jsonpath(obj, column.json_path)
    except JSONPathError:
        return None
    if not results:
        return None
    value = results[0]
    if column.type == "string":
        return _go_text(value)
    if value is None:
        return None
    if column.type == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return int(value)
        return None
    if column.type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)
    if column.type == "boolean":
        return value if isinstance(value, bool) else None
    if column.type == "date":
        if not isinstance(value, str):
            return None
        if value in ("", "null"):
            return "<unknown>"
        stamp = parse_timestamp(value)
        return human_duration(now - stamp) if stamp else "<invalid>"
    return None


def _custom_columns(rtype: ResourceType) -> list[dict[str, Any]]:
    columns = [_name_column()]
    for col in rtype.printer_columns:
        description = col.description or (
            f"Custom resource definition column (in JSONPath format): {col.json_path}")
        columns.append(_column(col.name, col.type, description, col.priority, col.format))
    return columns


# ----------------------------------------------------------------------- tables


def _row_object(rtype: ResourceType, obj: dict[str, Any], include_object: str) -> Any:
    mode = (include_object or "Metadata").lower()
    if mode == "none":
        return None
    if mode == "object":
        if "kind" in obj and "apiVersion" in obj:
            return obj
        return {"kind": rtype.kind, "apiVersion": rtype.api_version, **obj}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": _meta(obj)}


def table_columns(rtype: ResourceType) -> list[dict[str, Any]]:
    """The columnDefinitions `kubectl get` receives for this resource type."""
    if rtype.printer_columns:
        return _custom_columns(rtype)
    known = _PRINTERS.get((rtype.group, rtype.plural))
    if known:
        return [dict(c) for c in known[0]]
    return [_name_column(), _column("Age", "date", CREATION_DESCRIPTION)]


def render_table(rtype: ResourceType, objects: list[dict[str, Any]],
                 list_metadata: dict[str, Any], include_object: str = "Metadata",
                 now: datetime | None = None) -> dict[str, Any]:
    """A `meta.k8s.io/v1` Table of `objects` as the real API server would print them.

    `list_metadata` (resourceVersion, continue, remainingItemCount) is passed through;
    `include_object` is the request's `includeObject` ("None", "Metadata", "Object").
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)

    printer: Printer
    if rtype.printer_columns:
        def custom_printer(obj: dict[str, Any], now: datetime) -> Row:
            cells = [_meta(obj).get("name", "")]
            cells.extend(_custom_cell(c, obj, now) for c in rtype.printer_columns)
            return {"cells": cells}
        printer = custom_printer
    else:
        known = _PRINTERS.get((rtype.group, rtype.plural))
        printer = known[1] if known else _print_name_age

    rows = []
    for obj in objects:
        row = printer(obj, now)
        embedded = _row_object(rtype, obj, include_object)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": table_columns(rtype),
        "rows": rows,
    }
