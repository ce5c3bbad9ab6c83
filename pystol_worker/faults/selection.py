"""`Selection`: the targets a job would hit now, and why others were left out.

It is what every action's `select()` returns and what the blast-radius guards shrink,
for previews, dry runs and runs alike. `record_selection` is how a run makes a
selection the job's own: its record's `targets` (what the dashboard, the CLI and the
topology overlay show) and a `selected` timeline event. The runner calls it for the
first selection, and an action calls it again whenever it selects anew (pod-kill does
after waiting for another job's lock), so the record never names pods the job did not
choose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pystol_worker.core.model import EventKind, TargetRef
from pystol_worker.kube.objects import selector_requirements

if TYPE_CHECKING:
    # Types only: a selection (a preview, `bench.safety`'s fresh process) need not import
    # the job context's Redis store and revert journal (~0.4 s of imports).
    from pystol_worker.core.model import JobRecord
    from pystol_worker.safety.job_context import RunContext


def _requirements(selector: str | None) -> frozenset[str]:
    """A selector's requirements, spelled one way (`a == b`, `a=b` alike), in any order."""
    return frozenset(part.replace(" ", "").replace("==", "=")
                     for part in selector_requirements(selector or ""))


@dataclass
class PodListing:
    """What one pod list of a selection returned: its query, its (slim) pods and its
    resourceVersion. A recovery observer of a workload whose selector is exactly this
    query starts from it instead of listing again: its watch from `resource_version`
    replays every event after the list, so a kill made since cannot be missed."""

    namespace: str
    label_selector: str | None
    field_selector: str | None
    pods: list[dict[str, Any]] = field(repr=False)
    resource_version: str

    def covers(self, namespace: str, selector: str) -> bool:
        """Whether this list holds exactly the pods `selector` selects in `namespace`."""
        return (bool(self.resource_version) and namespace == self.namespace
                and not self.field_selector
                and _requirements(self.label_selector) == _requirements(selector))


@dataclass
class Selection:
    """The targets a job would hit now, and why others were left out."""

    matched: int
    chosen: list[TargetRef]
    excluded: list[str] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list, repr=False)
    listings: dict[str, PodListing] = field(default_factory=dict, repr=False)

    def without(self, why_not: Callable[[dict[str, Any]], str | None]) -> Selection:
        """The selection minus the objects `why_not` has a reason to leave out (noted)."""
        chosen, objects, excluded = [], [], list(self.excluded)
        for ref, obj in zip(self.chosen, self.objects, strict=True):
            reason = why_not(obj)
            if reason:
                excluded.append(reason)
                continue
            chosen.append(ref)
            objects.append(obj)
        return Selection(matched=self.matched, chosen=chosen, excluded=excluded,
                         objects=objects, listings=self.listings)

    def summary(self) -> dict[str, Any]:
        return {"matched": self.matched, "chosen": [t.model_dump(mode="json", exclude_none=True)
                                                    for t in self.chosen],
                "excluded": self.excluded}


def record_selection(ctx: RunContext, selection: Selection, message: str) -> None:
    """Make `selection` the job's targets: in its record, its metrics and its timeline."""
    chosen = list(selection.chosen)
    ctx.metrics.targets_selected = len(chosen)

    def keep_targets(stored: JobRecord) -> None:
        stored.targets = chosen
        stored.metrics.targets_selected = len(chosen)
    # One compare-and-set with the event, against the record as the job last stored it; a
    # concurrent change (a cancel request) makes it retry on the current record, not lose it.
    ctx.update_record(keep_targets, EventKind.SELECTED, message, **selection.summary())
