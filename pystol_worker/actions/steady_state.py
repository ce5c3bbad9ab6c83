"""steady-state: a job that changes nothing and only runs its probes.

It exists so that an experiment's hypothesis checks (its before and after probes, and its
guard) and Chaos Toolkit's method probes run as jobs through the one submission path,
with the same grant, policy, halt, audit and record as every other job, instead of a
second way to reach the cluster. The job's `probes` do the work (the runner runs the
before-probes before `execute` and the after-probes after it); `execute` holds nothing,
journals nothing and takes no lock.

Its target is a URL-kind placeholder; `target.namespaces` names where its probes read (a
Service or k8s probe's namespace must be listed, so the grant covers it; probes of URLs
only need no namespace, but the submitter then needs cluster-wide rights, as for any URL
job naming none).
"""

from __future__ import annotations

from pystol_worker.actions.base import Action, NoParams, Selection
from pystol_worker.core.model import EventKind, JobSpec, TargetKind, TargetRef
from pystol_worker.safety.job_context import RunContext, SelectContext

PLACEHOLDER = "steady-state"


class SteadyStateAction(Action[NoParams]):
    name = "steady-state"
    description = ("Change nothing; run the job's probes (an experiment's hypothesis "
                   "checks, or Chaos Toolkit method probes) or its error-budget guard. Needs "
                   "at least one of them.")
    target_kind = TargetKind.URL
    Params = NoParams

    def uses_namespaces(self, spec: JobSpec, params: NoParams | None) -> bool:
        return False

    def check(self, spec: JobSpec, params: NoParams | None) -> list[tuple[str, str]]:
        problems = []
        if not spec.probes and spec.guard is None:
            problems.append(("probes", "steady-state runs probes (or an error-budget guard) "
                             "and nothing else: give at least one"))
        if spec.duration:
            problems.append(("duration", "steady-state holds nothing"))
        if spec.target.label_selector or spec.target.field_selector or spec.target.names:
            problems.append(("target", "steady-state selects nothing: only "
                             "target.namespaces (where its probes read) applies"))
        wanted = set(spec.target.namespaces)
        for index, probe in enumerate(spec.probes):
            for namespace in probe.namespaces():
                if namespace not in wanted:
                    problems.append((f"probes[{index}]", f"reads namespace {namespace!r}: "
                                     "list it in target.namespaces"))
        return problems

    def select(self, ctx: SelectContext, spec: JobSpec, params: NoParams) -> Selection:
        return Selection(matched=1, chosen=[TargetRef(kind="URL", name=PLACEHOLDER)])

    def execute(self, ctx: RunContext, spec: JobSpec, params: NoParams,
                selection: Selection) -> None:
        ctx.check()
        ctx.event(EventKind.PROBING, "steady-state changes nothing: its probes are the "
                  "check")
