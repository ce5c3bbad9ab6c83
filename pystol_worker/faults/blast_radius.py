"""Blast-radius guards applied to every selection, for previews and runs alike.

- `max_targets` caps any selection.
- `min_available` (a count or a percent of each workload's desired replicas,
  PodDisruptionBudget-style) is never breached by actions that take pods away:
  the selection shrinks to what each workload can spare right now, and says so.
"""

from __future__ import annotations

import math

from pystol_worker.faults.selection import Selection
from pystol_worker.kube.objects import Workload, is_ready, resolve_workload
from pystol_worker.safety.job_context import SelectContext


def required_available(min_available: int | str, desired: int) -> int:
    """Pods that must stay ready: a count, or a percent of desired rounded up (as a PDB)."""
    if isinstance(min_available, str):
        return math.ceil(desired * int(min_available.rstrip("%")) / 100)
    return int(min_available)


def cap_targets(selection: Selection, max_targets: int | None) -> Selection:
    if max_targets is None or len(selection.chosen) <= max_targets:
        return selection
    note = f"max_targets={max_targets}: kept {max_targets} of {len(selection.chosen)} chosen"
    return Selection(matched=selection.matched, chosen=selection.chosen[:max_targets],
                     excluded=[*selection.excluded, note],
                     objects=selection.objects[:max_targets], listings=selection.listings)


def keep_min_available(ctx: SelectContext, selection: Selection, min_available: int | str
                       ) -> Selection:
    cache: dict[tuple[str, str, str], Workload | None] = {}
    by_workload: dict[str, list[int]] = {}
    workloads: dict[str, Workload] = {}
    for index, pod in enumerate(selection.objects):
        workload = resolve_workload(ctx.cluster, pod, cache)
        if workload is None:
            continue
        key = str(workload.ref)
        workloads[key] = workload
        by_workload.setdefault(key, []).append(index)
    dropped: set[int] = set()
    notes = []
    for key, indexes in by_workload.items():
        workload = workloads[key]
        pods, _ = ctx.cluster.list_pods(workload.ref.namespace, workload.selector)
        ready = sum(1 for pod in pods if is_ready(pod))
        required = required_available(min_available, workload.desired)
        spare = max(0, ready - required)
        if spare < len(indexes):
            dropped.update(indexes[spare:])
            notes.append(f"min_available={min_available}: {workload.ref} has {ready} ready and "
                         f"must keep {required}, so only {spare} of its {len(indexes)} chosen "
                         "pod(s) are taken")
    if not dropped:
        return selection
    keep = [i for i in range(len(selection.chosen)) if i not in dropped]
    return Selection(matched=selection.matched, chosen=[selection.chosen[i] for i in keep],
                     excluded=[*selection.excluded, *notes],
                     objects=[selection.objects[i] for i in keep],
                     listings=selection.listings)
