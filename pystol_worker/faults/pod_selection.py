"""Choosing pods: server-side selectors, paging, then Chaos Mesh's mode/value rules.

| mode               | how many of n matching pods                          |
| ------------------ | ---------------------------------------------------- |
| one                | 1                                                    |
| all                | n                                                    |
| fixed              | min(value, n)                                        |
| fixed-percent      | floor(n * value / 100), at least 1                   |
| random-max-percent | a random count in 1 .. max(1, floor(n * value / 100)) |

Protected namespaces are checked again here, at execution time, whatever the
entry point validated: it is the last line before a pod is touched.
"""

from __future__ import annotations

import math
import random
from typing import Any

from pystol_worker.core.model import Target, TargetMode, TargetRef
from pystol_worker.core.settings import Settings
from pystol_worker.faults.selection import Selection
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.objects import is_terminating


def choose_count(matched: int, mode: TargetMode, value: float | None,
                 rng: random.Random) -> int:
    if matched <= 0:
        return 0
    if mode == TargetMode.ONE:
        return 1
    if mode == TargetMode.ALL:
        return matched
    assert value is not None
    if mode == TargetMode.FIXED:
        return min(int(value), matched)
    # round() first: 375 * 18.4 / 100 is 68.99999999999999 in binary floating point.
    ceiling = max(1, math.floor(round(matched * value / 100, 9)))
    if mode == TargetMode.FIXED_PERCENT:
        return min(ceiling, matched)
    return rng.randint(1, min(ceiling, matched))


def choose(candidates: list[Any], mode: TargetMode, value: float | None,
           rng: random.Random) -> list[Any]:
    count = choose_count(len(candidates), mode, value, rng)
    return rng.sample(candidates, count)


def pod_ref(pod: dict[str, Any]) -> TargetRef:
    meta = pod["metadata"]
    return TargetRef(kind="Pod", namespace=meta.get("namespace"), name=meta["name"],
                     uid=meta.get("uid"), node=(pod.get("spec") or {}).get("nodeName"))


def select_pods(cluster: Cluster, target: Target, settings: Settings,
                seed: int | None = None) -> Selection:
    rng = random.Random(seed)
    candidates: list[dict[str, Any]] = []
    excluded: list[str] = []
    for namespace in target.namespaces:
        if settings.is_protected(namespace):
            excluded.append(f"namespace {namespace} is protected")
            continue
        pods, _ = cluster.list_pods(namespace, target.label_selector, target.field_selector)
        terminating = 0
        for pod in pods:
            if is_terminating(pod):
                terminating += 1
                continue
            candidates.append(pod)
        if terminating:
            excluded.append(f"{terminating} pod(s) in {namespace} already terminating")
    candidates.sort(key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))
    chosen = choose(candidates, target.mode, target.value, rng)
    chosen.sort(key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))
    return Selection(matched=len(candidates), chosen=[pod_ref(p) for p in chosen],
                     excluded=excluded, objects=chosen)
