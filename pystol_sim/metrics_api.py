"""`metrics.k8s.io/v1beta1`: what metrics-server serves, and `kubectl top nodes|pods` reads.

The simulated cluster runs no process, so usage is derived from what the objects say:

- a running container uses its requests (or, without requests, a small baseline), times a
  deterministic noise in 0.85..1.15 that changes every `WINDOW_SECONDS` (so two reads in
  one window agree, as metrics-server's scrapes do);
- a container whose image is a load generator (`stress` in its name: Pystol's
  `cpu-stress`/`memory-stress` run stress-ng) uses its limits: a stress pod raises its
  node's usage by what it was allowed, which is the effect the stress actions are for;
- a node uses what its running pods use plus a system reserve, at most its capacity.

Pods that are not running have no metrics (metrics-server reports none either).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
WINDOW_SECONDS = 15
#: A container without requests still uses something.
BASELINE_CPU_CORES = 0.005
BASELINE_MEMORY_BYTES = 16 * 1024 * 1024
#: The kubelet, the runtime and the system's daemons on every node.
SYSTEM_CPU_CORES = 0.1
SYSTEM_MEMORY_BYTES = 300 * 1024 * 1024

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {"": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9,
             "T": 1e12, "P": 1e15, "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30,
             "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}


def quantity(value: Any) -> float | None:
    """A Kubernetes quantity (`250m`, `1.5`, `64Mi`, `1e9`) as a number; None if unreadable."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(str(value or "").strip())
    if not match or match.group(2) not in _SUFFIXES:
        return None
    try:
        return float(match.group(1)) * _SUFFIXES[match.group(2)]
    except ValueError:
        return None


def _noise(*parts: str, now: float) -> float:
    seed = "|".join((*parts, str(int(now // WINDOW_SECONDS)))).encode()
    return 0.85 + 0.3 * (int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") / 2**32)


def container_usage(pod: dict[str, Any], container: dict[str, Any],
                    now: float) -> tuple[float, float]:
    """(CPU cores, memory bytes) one container of a running pod uses now."""
    resources = container.get("resources") or {}
    if "stress" in str(container.get("image") or "").lower():
        limits = resources.get("limits") or resources.get("requests") or {}
        return (quantity(limits.get("cpu")) or 1.0,
                quantity(limits.get("memory")) or BASELINE_MEMORY_BYTES)
    requests = resources.get("requests") or resources.get("limits") or {}
    cpu = quantity(requests.get("cpu")) or BASELINE_CPU_CORES
    memory = quantity(requests.get("memory")) or BASELINE_MEMORY_BYTES
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    name = str(container.get("name") or "")
    return (cpu * _noise(uid, name, "cpu", now=now),
            memory * _noise(uid, name, "memory", now=now))


def is_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and \
        not (pod.get("metadata") or {}).get("deletionTimestamp")


def _stamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _usage(cpu: float, memory: float) -> dict[str, str]:
    return {"cpu": f"{max(int(cpu * 1e9), 0)}n", "memory": f"{max(int(memory / 1024), 0)}Ki"}


def pod_metrics(pod: dict[str, Any], now: float) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    containers = [{"name": container.get("name"),
                   "usage": _usage(*container_usage(pod, container, now))}
                  for container in (pod.get("spec") or {}).get("containers") or ()]
    return {"kind": "PodMetrics", "apiVersion": API_VERSION,
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                         "labels": meta.get("labels") or {},
                         "creationTimestamp": _stamp(now)},
            "timestamp": _stamp(now - WINDOW_SECONDS / 2), "window": f"{WINDOW_SECONDS}s",
            "containers": containers}


def node_metrics(node: dict[str, Any], pods: Iterable[dict[str, Any]],
                 now: float) -> dict[str, Any]:
    """The node's usage: its running pods' plus the system reserve, at most its capacity."""
    meta = node.get("metadata") or {}
    cpu, memory = SYSTEM_CPU_CORES, float(SYSTEM_MEMORY_BYTES)
    for pod in pods:
        for container in (pod.get("spec") or {}).get("containers") or ():
            used_cpu, used_memory = container_usage(pod, container, now)
            cpu += used_cpu
            memory += used_memory
    capacity = (node.get("status") or {}).get("capacity") or {}
    cpu = min(cpu, quantity(capacity.get("cpu")) or cpu)
    memory = min(memory, quantity(capacity.get("memory")) or memory)
    return {"kind": "NodeMetrics", "apiVersion": API_VERSION,
            "metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {},
                         "creationTimestamp": _stamp(now)},
            "timestamp": _stamp(now - WINDOW_SECONDS / 2), "window": f"{WINDOW_SECONDS}s",
            "usage": _usage(cpu, memory)}


def metrics_list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": f"{kind}List", "apiVersion": API_VERSION,
            "metadata": {"resourceVersion": ""}, "items": items}


def now() -> float:
    return time.time()
