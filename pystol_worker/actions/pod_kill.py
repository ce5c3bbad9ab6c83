"""pod-kill: delete selected pods, optionally spread over `duration`, and time the recovery.

The original Pystol's headline action. Kills are spread with a `distribution`:
`uniform` spaces them evenly over the duration; `poisson` places them as a
Poisson process would, given that many arrivals in that window (independent
uniform times, sorted) — random, but with a known mean rate.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pystol_worker.actions.base import Action, Selection
from pystol_worker.core.model import JobSpec, TargetKind
from pystol_worker.faults.pod_selection import select_pods
from pystol_worker.faults.recovery import kill_pods_and_observe
from pystol_worker.safety.job_context import JobContext


class PodKillParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period_seconds: int | None = Field(
        None, ge=0, le=3600, description="Grace period for the delete; default: the pod's own.")
    distribution: Literal["uniform", "poisson"] | None = Field(
        None, description="Spread the kills over `duration` (needs a duration); default: "
                          "all at once.")
    seed: int | None = Field(None, description="Random seed for selection and timing, to "
                                               "repeat an experiment exactly.")


class PodKill(Action):
    name = "pod-kill"
    description = ("Delete the selected pods (optionally spread over the duration) and measure "
                   "how long their workloads take to be fully ready again.")
    target_kind = TargetKind.PODS
    takes_pods = True
    Params = PodKillParams

    def check(self, spec: JobSpec, params: BaseModel | None) -> list[tuple[str, str]]:
        if isinstance(params, PodKillParams) and params.distribution and not spec.duration:
            return [("params.distribution", "spreading kills needs a duration to spread them "
                     "over (e.g. \"duration\": \"60s\")")]
        return []

    def select(self, ctx: JobContext, spec: JobSpec, params: BaseModel) -> Selection:
        assert isinstance(params, PodKillParams)
        return select_pods(ctx.cluster, spec.target, ctx.settings, seed=params.seed)

    def execute(self, ctx: JobContext, spec: JobSpec, params: BaseModel,
                selection: Selection) -> None:
        assert isinstance(params, PodKillParams)

        kill_pods_and_observe(ctx, spec, selection, grace_period=params.grace_period_seconds,
                              distribution=params.distribution, seed=params.seed,
                              reselect=lambda: self.guarded_select(ctx, spec, params))
