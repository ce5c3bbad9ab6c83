"""ResourceQuota: the pod-count admission check and the quota's `status.used`.

A real cluster enforces quotas in an admission plug-in that every create passes through,
API request or controller, and words its refusal in one fixed way that tools and people
grep for (`exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2`). The
sim's store calls `check_pod_create` from `Store.create`, so a ReplicaSet or Job
controller creating a pod meets the same 403 as `kubectl run`, and `quota_status`
after every pod write that changes usage and every quota write, so `kubectl describe
quota` shows current usage. Usage is kept as running per-namespace sums of `pod_usage`,
updated from each write's before and after, never by re-reading the namespace's pods.

Pods are counted like the apiserver's pod evaluator counts them: every pod whose phase
is neither Succeeded nor Failed. CPU and memory sums (`requests.cpu`, `limits.memory`,
…) are kept in `status.used` for `kubectl describe quota` but only the pod count is
enforced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pystol_sim.errors import ApiError
from pystol_sim.metrics_api import quantity

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
POD_COUNT_RESOURCES = ("pods", "count/pods")
# hard resource name -> (which container resources, which quantity)
SUMMED_RESOURCES = {
    "cpu": ("requests", "cpu"), "requests.cpu": ("requests", "cpu"),
    "memory": ("requests", "memory"), "requests.memory": ("requests", "memory"),
    "limits.cpu": ("limits", "cpu"), "limits.memory": ("limits", "memory"),
}
_BINARY_SUFFIXES = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20),
                    ("Ki", 2**10))


def counts_against_quota(phase: str | None) -> bool:
    return phase not in TERMINAL_PHASES


def hard_pod_limits(quota: dict[str, Any]) -> list[tuple[str, int]]:
    """The (resource name, limit) pairs of a quota that cap the number of pods."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    if not isinstance(hard, dict):
        return []
    limits = []
    for resource in POD_COUNT_RESOURCES:
        if resource in hard:
            value = quantity(hard[resource])
            if value is not None:
                limits.append((resource, int(value)))
    return limits


def check_pod_create(pod: dict[str, Any], quotas: Iterable[dict[str, Any]],
                     used_pods: int) -> None:
    """Refuse (403, as kube-apiserver's quota admission does) a pod that would exceed a
    quota's pod count; `used_pods` are the namespace's pods that count now."""
    if not counts_against_quota((pod.get("status") or {}).get("phase")):
        return
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        for resource, limit in hard_pod_limits(quota):
            if used_pods + 1 > limit:
                name = pod["metadata"]["name"]
                raise ApiError(
                    403, f'pods "{name}" is forbidden: exceeded quota: '
                    f'{quota["metadata"]["name"]}, requested: {resource}=1, '
                    f"used: {resource}={used_pods}, limited: {resource}={limit}",
                    details={"name": name, "kind": "pods"})


def format_cpu(cores: float) -> str:
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(count: float) -> str:
    whole = round(count)
    for suffix, size in _BINARY_SUFFIXES:
        if whole and whole % size == 0:
            return f"{whole // size}{suffix}"
    return str(whole)


def pod_usage(pod: dict[str, Any] | None) -> dict[str, int]:
    """What one pod adds to its namespace's quota usage: `pods` 1 and its containers'
    requests and limits (`requests.cpu` in millicores, memory in bytes); nothing for a
    finished (or absent) pod. The store adds and subtracts these on every pod write, so
    `status.used` never needs the namespace's pods read again."""
    if not pod or not counts_against_quota((pod.get("status") or {}).get("phase")):
        return {}
    usage = {"pods": 1}
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    for container in containers if isinstance(containers, list) else ():
        resources = container.get("resources") if isinstance(container, dict) else None
        if not isinstance(resources, dict):
            continue
        for part in ("requests", "limits"):
            values = resources.get(part)
            if not isinstance(values, dict):
                continue
            for what in ("cpu", "memory"):
                try:
                    value = quantity(values.get(what))
                except OverflowError:  # an integer too large for a float
                    value = None
                if value is None or not math.isfinite(value):
                    continue
                amount = round(value * 1000) if what == "cpu" else round(value)
                usage[f"{part}.{what}"] = usage.get(f"{part}.{what}", 0) + amount
    return usage


def quota_status(quota: dict[str, Any], usage: dict[str, int]) -> dict[str, Any]:
    """The `status` a quota should have: `hard` copied from its spec, `used` for the pod
    count and the CPU/memory sums it names, from the namespace's summed `pod_usage`."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    if not isinstance(hard, dict):
        hard = {}
    used: dict[str, str] = {}
    for resource in hard:
        if resource in POD_COUNT_RESOURCES:
            used[resource] = str(usage.get("pods", 0))
        elif resource in SUMMED_RESOURCES:
            part, what = SUMMED_RESOURCES[resource]
            amount = usage.get(f"{part}.{what}", 0)
            used[resource] = format_cpu(amount / 1000) if what == "cpu" else \
                format_bytes(amount)
    return {"hard": dict(hard), "used": used}
