"""Reading and writing the parts of objects that every controller touches.

Conditions, owner references and the pod predicates (ready, active) are the
vocabulary controllers share; keeping them here, free of any controller state,
lets each controller module import them without importing another controller.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from pystol_sim.store import now_rfc3339


def quantity_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def count_of(value: Any, default: int = 0) -> int:
    """A non-negative count read from an object anyone may have written (a status counter
    patched through a subresource, a spec field of a scenario object): a missing, null,
    non-integer or negative value reads as `default`, so a reconcile never raises on it."""
    if value is None or isinstance(value, bool):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if number >= 0 else default


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or ():
        if cond.get("type") == kind:
            return cond
    return None


def put_condition(obj: dict[str, Any], kind: str, value: str, reason: str | None = None
                  ) -> None:
    """Set a pod/node-style condition, moving lastTransitionTime only when status flips."""
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    for cond in conditions:
        if cond["type"] == kind:
            if cond.get("status") != value:
                cond["status"] = value
                cond["lastTransitionTime"] = now_rfc3339()
            if reason:
                cond["reason"] = reason
            else:
                cond.pop("reason", None)
            return
    cond = {"type": kind, "status": value, "lastProbeTime": None,
            "lastTransitionTime": now_rfc3339()}
    if reason:
        cond["reason"] = reason
    conditions.append(cond)


def pod_is_ready(pod: dict[str, Any]) -> bool:
    cond = condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def pod_is_active(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:10]


def tolerates(pod_spec: dict[str, Any], taint: dict[str, Any]) -> bool:
    for tol in pod_spec.get("tolerations") or ():
        if tol.get("operator") == "Exists" and not tol.get("key"):
            return True
        if tol.get("key") != taint.get("key"):
            continue
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" or tol.get("value") == taint.get("value"):
            return True
    return False


def annotation_seconds(obj: dict[str, Any], annotation: str, default: float) -> float:
    """A simulated duration read from an annotation (`sim.pystol.org/...-seconds`)."""
    value = (obj.get("metadata", {}).get("annotations") or {}).get(annotation)
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default
