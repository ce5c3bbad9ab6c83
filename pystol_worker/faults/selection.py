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
from typing import Any

from pystol_worker.core.model import EventKind, JobRecord, TargetRef
from pystol_worker.safety.job_context import RunContext


@dataclass
class Selection:
    """The targets a job would hit now, and why others were left out."""

    matched: int
    chosen: list[TargetRef]
    excluded: list[str] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list, repr=False)

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
                         objects=objects)

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
    ctx.store.update(ctx.job_id, keep_targets)
    ctx.event(EventKind.SELECTED, message, **selection.summary())
