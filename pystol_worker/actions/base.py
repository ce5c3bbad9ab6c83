"""What every action is: a params model, a target kind, select() and execute().

Errors split as in kopf (`pystol_worker.core.errors`): a `PermanentError` fails the job
with its message (bad input discovered late, a workload that never recovers); anything
raised by the Kubernetes client is retried by the cluster access layer first and then
fails the job with the error recorded. They are re-exported here, with `Selection`, so an
action plug-in imports everything it needs from `pystol_worker.actions`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pystol_worker.core.errors import ActionError, PermanentError, TemporaryError
from pystol_worker.core.model import JobSpec, TargetKind
from pystol_worker.faults.blast_radius import cap_targets, keep_min_available
from pystol_worker.faults.selection import Selection
from pystol_worker.safety.job_context import JobContext

__all__ = ["Action", "ActionError", "NoParams", "PermanentError", "Selection",
           "TemporaryError"]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Action(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    target_kind: ClassVar[TargetKind]
    Params: ClassVar[type[BaseModel]] = NoParams
    # Whether the action takes pods out of service (kills, freezes, isolates them): then
    # `target.min_available` shrinks its selection so each workload keeps enough pods.
    takes_pods: ClassVar[bool] = False

    def uses_namespaces(self, spec: JobSpec, params: BaseModel | None) -> bool:
        """Whether this job selects inside namespaces (so `target.namespaces` is required)."""
        return self.target_kind in (TargetKind.PODS, TargetKind.WORKLOADS)

    def check(self, spec: JobSpec, params: BaseModel | None) -> list[tuple[str, str]]:
        """Cross-field problems between the spec and the params, as (field path, message)."""
        return []

    @abstractmethod
    def select(self, ctx: JobContext, spec: JobSpec, params: BaseModel) -> Selection:
        """Choose targets; must not change the cluster (preview and dry runs call it)."""

    def guarded_select(self, ctx: JobContext, spec: JobSpec, params: BaseModel) -> Selection:
        """`select()` with the job's blast-radius guards applied: what previews, dry runs
        and runs all use, so that what a preview shows is what a run would hit."""
        selection = self.select(ctx, spec, params)
        if spec.target.min_available is not None and self.takes_pods and selection.objects:
            selection = keep_min_available(ctx, selection, spec.target.min_available)
        return cap_targets(selection, spec.target.max_targets)

    @abstractmethod
    def execute(self, ctx: JobContext, spec: JobSpec, params: BaseModel,
                selection: Selection) -> None:
        """Inject, hold, revert and observe; record changes and recovery in ctx.result."""

    @classmethod
    def catalogue_entry(cls) -> dict[str, Any]:
        return {"name": cls.name, "description": cls.description,
                "targets": cls.target_kind.value, "params_schema": cls.Params.model_json_schema()}
