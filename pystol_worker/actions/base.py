"""What every action is: a typed contract between the runner and one kind of fault.

`Action[P]` is generic over its params model `P` (`Params = P`). `validate_job` turns
the spec's `params` into an instance of exactly that model before anything else sees
it, so `check`, `select` and `execute` receive a `P` and never need an isinstance check.

Two phases, two contexts (`pystol_worker.safety.job_context`):
- `select(ctx: SelectContext, ...)` chooses the targets. A `SelectContext` holds the
  cluster and the settings and nothing else: previews and dry runs call `select()` and
  stop, and there is no journal, lock or job in it to misuse.
- `execute(ctx: RunContext, ...)` injects, holds, reverts and observes. A `RunContext`
  always has the job id, its store, the revert journal, the target locks and the undo
  functions; none of them is ever None.

What an action declares on its class, for the registry to collect (no import-time side
effects, no lists of action names kept elsewhere):
- `undo`: every undo function its faults journal, by the name each journal entry
  carries (`Fault(undo=NAME)`). `ActionRegistry.undo_registry()` gathers them from all
  registered classes, plug-ins included; the runner and the reaper revert with that.
  The names are stored in Redis with each entry: never rename one.
- `takes_pods`: whether it takes pods out of service (kills, freezes, isolates them);
  then `target.min_available` shrinks its selection so each workload keeps enough pods.

Errors: raise `ActionError` (`pystol_worker.core.errors`; `PermanentError` is the same
class) to fail the job now with its message. Kubernetes API errors are retried by
`ClusterAccess` first and then fail the job with the error recorded. These names, with
`Selection` and the contexts, are re-exported from `pystol_worker.actions`, so a plug-in
imports its contract from one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from pystol_worker.core.errors import ActionError, PermanentError
from pystol_worker.core.model import JobSpec, TargetKind
from pystol_worker.core.policy import Policy
from pystol_worker.faults.blast_radius import cap_targets, keep_min_available
from pystol_worker.faults.selection import Selection
from pystol_worker.safety.job_context import RunContext, SelectContext
from pystol_worker.safety.revert_journal import JournalEntry, UndoFunction

__all__ = ["Action", "ActionError", "JournalEntry", "NoParams", "P", "PermanentError",
           "RunContext", "SelectContext", "Selection", "UndoFunction"]


class NoParams(BaseModel):
    """The params model of an action that takes none: `Action[NoParams]`."""

    model_config = ConfigDict(extra="forbid")


def moved_to_policy(value: Any, name: str, policy_field: str) -> Any:
    """Refuse a per-job switch that is the admin's now, saying where it went. `false` is
    what the policy's default says anyway, so stored schedules, experiments and custom
    resources that spell it out keep working."""
    if value is not None and value is not False:
        raise ValueError(f"`{name}` is not a job parameter: it is the admin policy's "
                         f"`{policy_field}` (see GET /api/v1/policy)")
    return value


class NodeChoosingParams(BaseModel):
    """The params every action that chooses nodes shares. Whether control-plane nodes may
    be chosen used to be a per-job switch; it is the admin policy's now, so a job still
    sending it is told so at `params.include_control_plane` rather than with a bare
    "extra inputs are not permitted"."""

    model_config = ConfigDict(extra="forbid")

    include_control_plane: SkipJsonSchema[Any] = Field(None, exclude=True)

    @field_validator("include_control_plane")
    @classmethod
    def _control_plane_is_policy(cls, value: Any) -> Any:
        return moved_to_policy(value, "include_control_plane", "include_control_plane")


P = TypeVar("P", bound=BaseModel)


class Action(ABC, Generic[P]):
    name: ClassVar[str]
    description: ClassVar[str]
    target_kind: ClassVar[TargetKind]
    Params: ClassVar[type[P]]  # set by every subclass: the model its params validate to
    takes_pods: ClassVar[bool] = False
    undo: ClassVar[Mapping[str, UndoFunction]] = MappingProxyType({})

    def uses_namespaces(self, spec: JobSpec, params: P | None) -> bool:
        """Whether this job selects inside namespaces (so `target.namespaces` is required).

        `params` is None when they did not validate (the other problems are still wanted)."""
        return self.target_kind in (TargetKind.PODS, TargetKind.WORKLOADS)

    def check(self, spec: JobSpec, params: P | None) -> list[tuple[str, str]]:
        """Cross-field problems between the spec and the params, as (field path, message).

        `params` is None when they did not validate (the other problems are still wanted)."""
        return []

    def policy_problems(self, spec: JobSpec, params: P, policy: Policy
                        ) -> list[tuple[str, str]]:
        """What the admin policy refuses in this job's params, as (field path, message).

        The default checks an `image` param: pod-failure, the stress actions and any
        plug-in that runs an image of the job's choosing get the policy's image list
        without writing a line for it."""
        image = getattr(params, "image", None)
        if isinstance(image, str) and not policy.image_allowed(image):
            return [("params.image", f"image {image!r} is not allowed by the admin policy "
                                     f"(allowed: {', '.join(policy.images) or 'none'})")]
        return []

    @abstractmethod
    def select(self, ctx: SelectContext, spec: JobSpec, params: P) -> Selection:
        """Choose targets; reads only (previews and dry runs call it, and stop there)."""

    def guarded_select(self, ctx: SelectContext, spec: JobSpec, params: P) -> Selection:
        """`select()` with the job's blast-radius guards applied: what previews, dry runs
        and runs all use, so that what a preview shows is what a run would hit."""
        selection = self.select(ctx, spec, params)
        if spec.target.min_available is not None and self.takes_pods and selection.objects:
            selection = keep_min_available(ctx, selection, spec.target.min_available)
        selection = cap_targets(selection, spec.target.max_targets)
        cap = ctx.policy.max_targets_per_job
        if len(selection.chosen) > cap:
            raise ActionError(f"this job would hit {len(selection.chosen)} "
                              f"{self.target_kind.value}; the admin policy allows at most "
                              f"{cap} per job (set target.max_targets, or a smaller mode/value)")
        return selection

    @abstractmethod
    def execute(self, ctx: RunContext, spec: JobSpec, params: P,
                selection: Selection) -> None:
        """Inject, hold, revert and observe; record changes and recovery in ctx.result."""

    @classmethod
    def catalogue_entry(cls) -> dict[str, Any]:
        return {"name": cls.name, "description": cls.description,
                "targets": cls.target_kind.value, "params_schema": cls.Params.model_json_schema()}
