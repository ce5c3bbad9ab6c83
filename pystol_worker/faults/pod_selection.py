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

Memory: a parsed pod is ~10 KB of dicts (its status alone 5.7 KB), and selection reads
whole namespaces. Each page of the list is projected as it is parsed (`slim_pod`, the
few fields selection, the blast-radius guards, the no-overlap locks and the recovery
observers read) and dropped before the next, so a selection holds one page plus a small
record per matching pod. An action that reads more of the chosen pods (their containers)
passes its own projection, or `project=None` for whole pods.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from pystol_worker.core.model import Target, TargetMode, TargetRef
from pystol_worker.core.settings import Settings
from pystol_worker.faults.selection import PodListing, Selection
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


Pod = dict[str, Any]


def slim_pod(pod: Pod) -> Pod:
    """A pod cut to what selection and its followers read, in the API's own shape (so
    `pod_ref`, `is_ready`, `is_terminating` and `controller_ref` read it unchanged):
    name, namespace, uid, deletionTimestamp, the controller ownerReference, nodeName,
    phase and the Ready condition. About 1 KB of dicts where the whole pod is ~10 KB."""
    meta = pod.get("metadata") or {}
    slim_meta = {key: meta[key] for key in ("name", "namespace", "uid", "deletionTimestamp")
                 if key in meta}
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            slim_meta["ownerReferences"] = [{"kind": ref.get("kind"), "name": ref.get("name"),
                                             "uid": ref.get("uid"), "controller": True}]
            break
    slim: Pod = {"metadata": slim_meta}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        slim["spec"] = {"nodeName": node}
    status = pod.get("status") or {}
    slim_status: dict[str, Any] = {}
    if "phase" in status:
        slim_status["phase"] = status["phase"]
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            slim_status["conditions"] = [{"type": "Ready", "status": condition.get("status")}]
            break
    if slim_status:
        slim["status"] = slim_status
    return slim


def slim_pod_with_containers(pod: Pod) -> Pod:
    """`slim_pod` plus the containers and their statuses (container-kill, pod-failure)."""
    slim = slim_pod(pod)
    containers = (pod.get("spec") or {}).get("containers")
    if containers is not None:
        slim.setdefault("spec", {})["containers"] = containers
    statuses = (pod.get("status") or {}).get("containerStatuses")
    if statuses is not None:
        slim.setdefault("status", {})["containerStatuses"] = statuses
    return slim


def select_pods(cluster: Cluster, target: Target, settings: Settings,
                seed: int | None = None,
                project: Callable[[Pod], Pod] | None = None) -> Selection:
    """Choose pods. `project` cuts each listed pod as it is read (`slim_pod`: what
    selection, locks and recovery need, as pod-kill asks); None, the default, keeps whole
    pods, because an action plug-in may read anything of the pods it chose (annotations,
    labels, containers). `Selection.listings` keeps each namespace's list (its pods as
    projected) for the recovery observers."""
    rng = random.Random(seed)
    candidates: list[dict[str, Any]] = []
    excluded: list[str] = []
    listings: dict[str, PodListing] = {}
    for namespace in target.namespaces:
        if settings.is_protected(namespace):
            excluded.append(f"namespace {namespace} is protected")
            continue
        pods, version = cluster.list_pods(namespace, target.label_selector,
                                          target.field_selector, project=project)
        listings[namespace] = PodListing(namespace, target.label_selector,
                                         target.field_selector, pods, version)
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
                     excluded=excluded, objects=chosen, listings=listings)
