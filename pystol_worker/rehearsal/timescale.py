"""Running an experiment faster on the copy than it would run for real.

The private simulated cluster runs its clock `speed` times faster (a pod that takes 9 s
to start takes 9/speed s), so the experiment must be shortened by the same factor: a
60 s hold becomes 60/speed s, a 10 s wait 10/speed s, a probe every 5 s one every
5/speed s. What is measured in wall seconds is then multiplied back by `speed` to give
simulated seconds, the unit of the real cluster.

What is *not* scaled: probe timeouts. The simulated services answer in real milliseconds
(`pystol_sim.service_traffic`: latencies are not divided by `--speed`), so a probe's
timeout means the same on the copy as on the cluster.

The speed itself (`auto_speed`): the faster the better, but Pystol's own latency (a watch
event reaching the observer, 1-6 ms) is multiplied by the speed too; keeping every
scaled recovery at least ~2 s of wall time keeps that error under 1 % (design §6 "Within
10 %"). So `auto` = min over the targeted workloads of (start + ready seconds) / 2 s,
clamped to 1..50.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pystol_worker.core.durations import parse_duration
from pystol_worker.core.experiment_model import (
    ActionStep,
    ExperimentSpec,
    Hypothesis,
    ParallelStep,
    ProbeStep,
    SerialStep,
    SuspendStep,
    WaitStep,
)
from pystol_worker.core.model import JobSpec
from pystol_worker.core.probe_model import MIN_PROBE_INTERVAL_SECONDS

MIN_SPEED = 1.0
MAX_AUTO_SPEED = 50.0
MAX_SPEED = 100.0  # what the simulator accepts (`PUT /_sim/speed`)
SHORTEST_WALL_SECONDS = 2.0  # no scaled recovery shorter than this (see the module doc)
START_ANNOTATION = "sim.pystol.org/start-seconds"
READY_ANNOTATION = "sim.pystol.org/ready-seconds"
SIM_DEFAULT_SECONDS = 1.0  # the simulator's start and ready delay when none is annotated
#: Action params that are simulated time (how long to retry an eviction a budget refuses,
#: the pause between http-probe calls). Grace periods are not here: the simulator already
#: divides a pod's termination by its speed.
SCALED_PARAMS: dict[str, tuple[str, ...]] = {
    "node-drain": ("eviction_timeout",),
    "http-probe": ("interval",),
}


def parse_speed(text: str) -> float | None:
    """`auto` → None (decided from the snapshot), else a number within 1..100."""
    if text.strip().lower() == "auto":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"speed must be auto or a number within {MIN_SPEED:g}.."
                         f"{MAX_SPEED:g}, not {text!r}") from None
    if not MIN_SPEED <= speed <= MAX_SPEED:  # NaN fails this too
        raise ValueError(f"speed must be within {MIN_SPEED:g}..{MAX_SPEED:g}, not {text!r}")
    return speed


def template_delay_seconds(workload: dict[str, Any]) -> float:
    """Start + ready seconds of a workload's pods, from its pod template's annotations
    (which `pystol-sim --snapshot` inferred from the snapshot's pod timestamps)."""
    annotations = (((workload.get("spec") or {}).get("template") or {}).get("metadata")
                   or {}).get("annotations") or {}
    total = 0.0
    for key in (START_ANNOTATION, READY_ANNOTATION):
        try:
            value = float(annotations.get(key, SIM_DEFAULT_SECONDS))
        except (TypeError, ValueError):
            value = SIM_DEFAULT_SECONDS
        total += value if value >= 0 else SIM_DEFAULT_SECONDS
    return total


def auto_speed(delays: Iterable[float]) -> float:
    """clamp(min(delays) / 2 s, 1, 50); 1 when nothing is targeted."""
    shortest = min(delays, default=0.0)
    return max(MIN_SPEED, min(MAX_AUTO_SPEED, shortest / SHORTEST_WALL_SECONDS))


@dataclass
class Scaler:
    """Divides an experiment's times by `speed`; `notes` says where a bound stopped it
    (a continuous probe's interval cannot go below 0.5 s, nor below its timeout)."""

    speed: float
    default_recovery_timeout: float
    notes: list[str] = field(default_factory=list)

    def seconds(self, value: float) -> float:
        return value / self.speed

    def experiment(self, spec: ExperimentSpec) -> ExperimentSpec:
        hypothesis = spec.hypothesis
        if hypothesis is not None:
            hypothesis = Hypothesis(title=hypothesis.title,
                                    probes=[self.probe(p, "hypothesis") for p in
                                            hypothesis.probes])
        return spec.model_copy(update={
            "hypothesis": hypothesis,
            "method": [self.step(step, f"method[{i}]") for i, step in enumerate(spec.method)],
            "rollbacks": [self.step(step, f"rollbacks[{i}]")
                          for i, step in enumerate(spec.rollbacks)],
            "deadline": None if spec.deadline is None else self.seconds(spec.deadline),
        })

    def step(self, step: Any, path: str) -> Any:
        if isinstance(step, ActionStep):
            return step.model_copy(update={"job": self.job(step.job, f"{path}.job")})
        if isinstance(step, WaitStep):
            return step.model_copy(update={"duration": self.seconds(step.duration)})
        if isinstance(step, SuspendStep):
            return step.model_copy(update={"deadline": self.seconds(step.deadline)})
        if isinstance(step, ProbeStep):
            return step.model_copy(update={"probes": [self.probe(p, f"{path}.probes")
                                                      for p in step.probes]})
        if isinstance(step, SerialStep | ParallelStep):
            return step.model_copy(update={"steps": [
                self.step(child, f"{path}.steps[{i}]") for i, child in enumerate(step.steps)]})
        return step  # a release rollback: no time in it

    def job(self, job: JobSpec, path: str) -> JobSpec:
        recovery = job.recovery_timeout if job.recovery_timeout is not None \
            else self.default_recovery_timeout
        params = dict(job.params)
        for name in SCALED_PARAMS.get(job.action, ()):
            if name in params:
                # A bad value is left as written: the action's own validation says why.
                with contextlib.suppress(ValueError):
                    params[name] = self.seconds(parse_duration(params[name]))
        return job.model_copy(update={
            "duration": None if job.duration is None else self.seconds(job.duration),
            "recovery_timeout": self.seconds(recovery),
            "probes": [self.probe(p, f"{path}.probes") for p in job.probes],
            "params": params,
        })

    def probe(self, probe: Any, path: str) -> Any:
        run = probe.run
        update: dict[str, Any] = {
            "initial_delay": self.seconds(run.initial_delay),
            "retry_interval": self.seconds(run.retry_interval),
        }
        if run.interval is not None:
            wanted = self.seconds(run.interval)
            interval = max(wanted, MIN_PROBE_INTERVAL_SECONDS, run.timeout)
            if interval > wanted:
                self.notes.append(
                    f"{path}: probe {probe.name}'s interval {run.interval:g}s ÷ "
                    f"{self.speed:g} = {wanted:.3g}s was raised to {interval:g}s (its "
                    "timeout, or the 0.5s minimum): it ran less often than it would for real")
            update["interval"] = interval
        return probe.model_copy(update={"run": run.model_copy(update=update)})


def scale_experiment(spec: ExperimentSpec, speed: float, default_recovery_timeout: float
                     ) -> tuple[ExperimentSpec, list[str]]:
    """The experiment with its times divided by `speed`, and notes on what could not be."""
    scaler = Scaler(speed, default_recovery_timeout)
    return scaler.experiment(spec), scaler.notes
