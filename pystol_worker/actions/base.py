"""What every action is: a params model, a target kind, select() and execute().

Errors split as in kopf: a `PermanentError` fails the job with its message
(bad input discovered late, a workload that never recovers); anything else
raised by the Kubernetes client is retried by the cluster access layer first
and then fails the job with the error recorded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pystol_worker.model import JobSpec, TargetKind, TargetRef

if TYPE_CHECKING:
    from pystol_worker.job_context import JobContext


class ActionError(Exception):
    """An action cannot go on; the job fails with this message."""


class PermanentError(ActionError):
    """Retrying will not help (the target is gone, the input is wrong)."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class Action(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    target_kind: ClassVar[TargetKind]
    Params: ClassVar[type[BaseModel]] = NoParams

    def uses_namespaces(self, spec: JobSpec, params: BaseModel | None) -> bool:
        """Whether this job selects inside namespaces (so `target.namespaces` is required)."""
        return self.target_kind in (TargetKind.PODS, TargetKind.WORKLOADS)

    def check(self, spec: JobSpec, params: BaseModel | None) -> list[tuple[str, str]]:
        """Cross-field problems between the spec and the params, as (field path, message)."""
        return []

    @abstractmethod
    def select(self, ctx: JobContext, spec: JobSpec, params: BaseModel) -> Selection:
        """Choose targets; must not change the cluster (preview and dry runs call it)."""

    @abstractmethod
    def execute(self, ctx: JobContext, spec: JobSpec, params: BaseModel,
                selection: Selection) -> None:
        """Inject, hold, revert and observe; record changes and recovery in ctx.result."""

    @classmethod
    def catalogue_entry(cls) -> dict[str, Any]:
        return {"name": cls.name, "description": cls.description,
                "targets": cls.target_kind.value, "params_schema": cls.Params.model_json_schema()}
