"""What of an experiment can run on a copy of the cluster, and what cannot.

The copy has the cluster's objects, not its surroundings: no Prometheus scrapes it, and a
URL outside the cluster answers for the real service, not for the copy. So on the copy:

- the error-budget guard (experiment's and jobs') and `prometheus` probes are removed:
  they would ask the real Prometheus about the real service, which the rehearsal does not
  touch (and the rehearsal's policy has no Prometheus endpoint anyway);
- `http` probes with a `url` are removed: the answer would be the real service's, while
  the fault is on the copy; `http` probes through a Service's proxy stay (the simulated
  services answer there, with the chaos visible), as do `k8s` probes.

Each removal is listed in the report under "not rehearsed", so the verdict on the copy
is never mistaken for one that checked what it could not.
"""

from __future__ import annotations

from typing import Any

from pystol_worker.core.experiment_model import (
    ActionStep,
    ExperimentSpec,
    Hypothesis,
    ParallelStep,
    ProbeStep,
    SerialStep,
    WaitStep,
)
from pystol_worker.core.model import JobSpec


def rehearsable(probe: Any) -> str | None:
    """None when the probe runs on the copy; else why not."""
    if probe.type == "prometheus":
        return "a prometheus probe (the copy has no Prometheus)"
    if probe.type == "http" and getattr(probe, "url", None):
        return "an http probe of a URL outside the cluster (it would see the real service)"
    return None


class Adapter:
    def __init__(self) -> None:
        self.not_rehearsed: list[str] = []

    def probes(self, probes: list[Any], path: str) -> list[Any]:
        kept = []
        for probe in probes:
            why = rehearsable(probe)
            if why is None:
                kept.append(probe)
            else:
                self.not_rehearsed.append(f"{path}: probe {probe.name}: {why}")
        return kept

    def job(self, job: JobSpec, path: str) -> JobSpec:
        if job.guard is not None:
            self.not_rehearsed.append(f"{path}.guard: the error-budget guard (the copy has no "
                                      "Prometheus)")
        return job.model_copy(update={"guard": None,
                                      "probes": self.probes(job.probes, f"{path}.probes")})

    def step(self, step: Any, path: str) -> Any:
        if isinstance(step, ActionStep):
            return step.model_copy(update={"job": self.job(step.job, f"{path}.job")})
        if isinstance(step, ProbeStep):
            kept = self.probes(step.probes, f"{path}.probes")
            if not kept:
                # A probe step must have a probe; an empty wait keeps the step's place.
                return WaitStep(name=step.name, duration=0)
            return step.model_copy(update={"probes": kept})
        if isinstance(step, SerialStep | ParallelStep):
            return step.model_copy(update={"steps": [
                self.step(child, f"{path}.steps[{i}]") for i, child in enumerate(step.steps)]})
        return step

    def experiment(self, spec: ExperimentSpec) -> ExperimentSpec:
        if spec.guard is not None:
            self.not_rehearsed.append("guard: the error-budget guard (the copy has no "
                                      "Prometheus)")
        hypothesis = spec.hypothesis
        if hypothesis is not None:
            hypothesis = Hypothesis(title=hypothesis.title, probes=self.probes(
                hypothesis.probes, "hypothesis.probes"))
        return spec.model_copy(update={
            "guard": None,
            "hypothesis": hypothesis,
            "method": [self.step(s, f"method[{i}]") for i, s in enumerate(spec.method)],
            "rollbacks": [self.step(s, f"rollbacks[{i}]") for i, s in enumerate(spec.rollbacks)],
        })


def for_the_copy(spec: ExperimentSpec) -> tuple[ExperimentSpec, list[str]]:
    """The experiment as it runs on the copy, and what was left out (with paths)."""
    adapter = Adapter()
    return adapter.experiment(spec), adapter.not_rehearsed
