"""The experiment model: a hypothesis, a method of steps, rollbacks, and what a run did.

An experiment is what chaos engineers actually run (Chaos Toolkit's experiment, Chaos
Mesh's workflow): a steady-state hypothesis checked before and after, a method of faults
in order (`serial`) or together (`parallel`) with `wait` and `suspend` steps between, and
rollbacks that always run. Each action step is a `JobSpec` and runs as a job through the
one submission service, so halt, policy, scopes, locks, the revert journal and the reaper
apply to every step; the experiment itself holds nothing.

Pure and bounded, like `schedule_model`: the limits are checked on the raw document
(`check_shape`) before pydantic builds a tree from it, so a 1,000-deep or 10,000-step
document is a 422 naming the field, never a RecursionError or a slow request.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pystol_worker.core.access import Actor, Grant
from pystol_worker.core.durations import Duration, at_most, format_duration
from pystol_worker.core.model import (
    MAX_JOB_DURATION_SECONDS,
    JobSpec,
    ProbeOutcome,
    Run,
    Source,
    Verdict,
    WorkloadRecovery,
    json_depth,
)
from pystol_worker.core.names import DNS_LABEL
from pystol_worker.core.probe_model import (
    ErrorBudgetGuard,
    Probe,
    typed_probes,
    unique_probe_names,
)

MAX_EXPERIMENT_BYTES = 128 * 1024  # the whole document, as JSON
MAX_STEPS = 100  # every node of the method and the rollbacks, counted recursively
MAX_GROUP_DEPTH = 6  # serial/parallel groups nested in each other
MAX_PARALLEL = 10  # steps of one parallel group
MAX_PROBES_PER_EXPERIMENT = 40  # hypothesis and every step, jobs' probes included
MAX_HYPOTHESIS_PROBES = 20
MAX_EXPERIMENT_SECONDS = 24 * 3600  # a deadline; PYSTOL_MAX_EXPERIMENT_SECONDS bounds it
MAX_TEXT = 4000
#: Added once to a run's computed bound: queueing, dispatch and the reaper's sweep
#: interval are not in any step's own bound, and a run must not hit its deadline for them.
RUN_MARGIN_SECONDS = 120.0
#: Raw JSON nesting a valid document can reach: 6 groups of (object + steps list) plus a
#: job spec with nested params (and the experiment's own levels).
MAX_RAW_DEPTH = 2 * MAX_GROUP_DEPTH + 8 + 8

StepName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL.pattern)]


class ExperimentInvalid(ValueError):
    """The raw document breaks a limit; `loc` is the field path (a tuple, as pydantic's)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{dotted(loc)}: {message}" if loc else message)
        self.loc = loc
        self.message = message


def dotted(loc: tuple[str | int, ...]) -> str:
    """`("method", 1, "steps", 0)` → `method[1].steps[0]`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def check_shape(raw: Any) -> None:
    """Refuse a document too big, too deep, too wide or with too many steps before
    pydantic recurses into it. Counted without recursion."""
    if not isinstance(raw, dict):
        raise ExperimentInvalid((), "an experiment is a JSON object (or a YAML mapping)")
    if json_depth(raw, MAX_RAW_DEPTH) > MAX_RAW_DEPTH:
        raise ExperimentInvalid((), f"nested more than {MAX_RAW_DEPTH} levels deep")
    count = 0
    pending: list[tuple[Any, tuple[str | int, ...], int]] = []
    for key in ("method", "rollbacks"):
        steps = raw.get(key)
        if isinstance(steps, list):
            pending.extend((step, (key, index), 1) for index, step in enumerate(steps))
    while pending:
        step, loc, depth = pending.pop()
        count += 1
        if count > MAX_STEPS:
            raise ExperimentInvalid(loc, f"more than {MAX_STEPS} steps in all")
        if not isinstance(step, dict) or step.get("type") not in ("serial", "parallel"):
            continue
        children = step.get("steps")
        if not isinstance(children, list):
            continue
        if depth >= MAX_GROUP_DEPTH:
            raise ExperimentInvalid(loc, f"groups nested more than {MAX_GROUP_DEPTH} deep")
        if step.get("type") == "parallel" and len(children) > MAX_PARALLEL:
            raise ExperimentInvalid((*loc, "steps"), f"a parallel group runs at most "
                                                      f"{MAX_PARALLEL} steps")
        pending.extend((child, (*loc, "steps", index), depth + 1)
                       for index, child in enumerate(children))
    # Last, and streamed: a tree whose shared parts repeat (YAML aliases) can be tiny in
    # memory and gigabytes as one string, so count chunk by chunk and stop at the cap.
    size = 0
    encoder = json.JSONEncoder(separators=(",", ":"), default=str)
    try:
        for chunk in encoder.iterencode(raw):
            size += len(chunk.encode())
            if size > MAX_EXPERIMENT_BYTES:
                raise ExperimentInvalid((), f"the experiment is over {size:,} bytes as "
                                            f"JSON; at most {MAX_EXPERIMENT_BYTES:,}")
    except (ValueError, TypeError) as error:  # e.g. an integer over Python's digit limit
        if isinstance(error, ExperimentInvalid):
            raise
        raise ExperimentInvalid((), f"not JSON data: {error}") from None


class StepBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StepName


class ActionStep(StepBase):
    """One fault: a job."""

    type: Literal["action"] = "action"
    job: JobSpec
    weight: int = Field(10, ge=0, le=100, description="Its weight in the resilience score "
                                                      "(LitmusChaos's default 10).")
    hold: Literal["duration", "until-rollback"] = Field(
        "duration", description="until-rollback: the fault stays until a release rollback "
                                "(or the end of the rollbacks), at most job.duration.")
    on_failure: Literal["abort", "continue"] = Field(
        "abort", description="When the step's job fails or finds no targets: abort the "
                             "experiment, or record it and go on (Chaos Toolkit's way).")

    @model_validator(mode="after")
    def _held_steps_have_a_cap(self) -> ActionStep:
        if self.hold == "until-rollback" and self.job.duration is None:
            raise ValueError("an until-rollback step needs job.duration: the longest it "
                             "may be held")
        if self.job.experiment is not None:
            raise ValueError("job.experiment is set by the engine, not by the document")
        if self.job.idempotency_key is not None:
            raise ValueError("job.idempotency_key is set by the engine (one per run and "
                             "step)")
        return self


class ProbeStep(StepBase):
    """Probes run once between faults; recorded, never part of the verdict (Chaos
    Toolkit's probes in a method)."""

    type: Literal["probe"] = "probe"
    probes: list[Probe] = Field(min_length=1, max_length=MAX_HYPOTHESIS_PROBES)

    _typed = field_validator("probes", mode="before")(lambda cls, v: typed_probes(v))
    _unique = field_validator("probes")(lambda cls, v: unique_probe_names(v))


class WaitStep(StepBase):
    type: Literal["wait"] = "wait"
    duration: Duration

    @field_validator("duration")
    @classmethod
    def _bounded(cls, value: float) -> float:
        at_most(value, MAX_JOB_DURATION_SECONDS)
        return value


class SuspendStep(StepBase):
    """Wait for a person to resume (`…/resume`), at most `deadline` (Chaos Mesh's suspend,
    with the deadline it requires)."""

    type: Literal["suspend"] = "suspend"
    deadline: Duration
    on_deadline: Literal["continue", "abort"] = "abort"

    @field_validator("deadline")
    @classmethod
    def _bounded(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        at_most(value, MAX_JOB_DURATION_SECONDS)
        return value


class SerialStep(StepBase):
    type: Literal["serial"] = "serial"
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    @field_validator("steps")
    @classmethod
    def _unique(cls, steps: list[Any]) -> list[Any]:
        return unique_step_names(steps)


class ParallelStep(StepBase):
    type: Literal["parallel"] = "parallel"
    steps: list[Step] = Field(min_length=1, max_length=MAX_PARALLEL)

    @field_validator("steps")
    @classmethod
    def _unique(cls, steps: list[Any]) -> list[Any]:
        return unique_step_names(steps)


Step = Annotated[ActionStep | ProbeStep | SerialStep | ParallelStep | WaitStep | SuspendStep,
                 Field(discriminator="type")]
SerialStep.model_rebuild()
ParallelStep.model_rebuild()


class ReleaseStep(StepBase):
    """Rollback: end the fault of an `until-rollback` step now (its journal reverts it)."""

    type: Literal["release"] = "release"
    step: str = Field(min_length=1, max_length=500, description="The held step's name.")


Rollback = Annotated[ActionStep | ReleaseStep, Field(discriminator="type")]


def unique_step_names(steps: list[Any]) -> list[Any]:
    seen: set[str] = set()
    for step in steps:
        if step.name in seen:
            raise ValueError(f"step name {step.name!r} is used twice in one group")
        seen.add(step.name)
    return steps


class Hypothesis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field("steady state", max_length=200)
    probes: list[Probe] = Field(default_factory=list, max_length=MAX_HYPOTHESIS_PROBES)

    _typed = field_validator("probes", mode="before")(lambda cls, v: typed_probes(v))
    _unique = field_validator("probes")(lambda cls, v: unique_probe_names(v))


class ExperimentSpec(BaseModel):
    """A stored, named experiment document."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL.pattern,
                      examples=["checkout-survives-pod-loss"])
    title: str = Field("", max_length=200)
    description: str = Field("", max_length=MAX_TEXT)
    tags: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list,
                                                             max_length=20)
    hypothesis: Hypothesis | None = None
    method: list[Step] = Field(default_factory=list, max_length=MAX_STEPS,
                               description="Steps in order (an implicit serial group).")
    rollbacks: list[Rollback] = Field(default_factory=list, max_length=MAX_STEPS,
                                      description="Always run, whatever happened.")
    guard: ErrorBudgetGuard | None = None
    deadline: Duration | None = Field(None, description="The whole run's limit; default: "
                                      "the sum of its steps' bounds.")
    dry_run: bool = False
    source_format: Literal["pystol", "chaostoolkit"] = "pystol"
    source_document: dict[str, Any] | None = Field(
        None, description="The imported Chaos Toolkit document, kept for its journal.")

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        check_shape(data)
        return data

    @field_validator("method")
    @classmethod
    def _unique_method(cls, steps: list[Any]) -> list[Any]:
        return unique_step_names(steps)

    @field_validator("deadline")
    @classmethod
    def _bounded_deadline(cls, value: float | None) -> float | None:
        return at_most(value, MAX_EXPERIMENT_SECONDS)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        probes = len(self.hypothesis.probes) if self.hypothesis else 0
        held: set[str] = set()
        for _, step in walk(self.method, "method"):
            if isinstance(step, ActionStep):
                probes += len(step.job.probes)
                if step.hold == "until-rollback":
                    if step.name in held:
                        raise ValueError(f"two until-rollback steps are named {step.name!r}; "
                                         "a release step names one")
                    held.add(step.name)
            elif isinstance(step, ProbeStep):
                probes += len(step.probes)
        for index, rollback in enumerate(self.rollbacks):
            if isinstance(rollback, ReleaseStep) and rollback.step not in held:
                raise ValueError(f"rollbacks[{index}].step: {rollback.step!r} is not an "
                                 "until-rollback step of the method")
            if isinstance(rollback, ActionStep):
                probes += len(rollback.job.probes)
                if rollback.hold == "until-rollback":
                    raise ValueError(f"rollbacks[{index}].hold: a rollback cannot be held "
                                     "until-rollback")
        if probes > MAX_PROBES_PER_EXPERIMENT:
            raise ValueError(f"{probes} probes in all; at most {MAX_PROBES_PER_EXPERIMENT}")
        return self

    def bound_seconds(self, recovery_timeout: float) -> float:
        """The longest the run can take: serial steps add up, a parallel group takes its
        longest; each job's hold and recovery, waits, suspends' deadlines; plus one
        RUN_MARGIN_SECONDS for the time between steps."""
        def bound(step: Any) -> float:
            if isinstance(step, ActionStep):
                return (step.job.duration or 0) + (step.job.recovery_timeout
                                                   or recovery_timeout) + 60
            if isinstance(step, ProbeStep):
                return 60.0 * len(step.probes)
            if isinstance(step, WaitStep):
                return step.duration
            if isinstance(step, SuspendStep):
                return step.deadline
            if isinstance(step, SerialStep):
                return sum(bound(child) for child in step.steps)
            if isinstance(step, ParallelStep):
                return max(bound(child) for child in step.steps)
            return 60.0
        hypothesis = 2 * 60.0 if self.hypothesis and self.hypothesis.probes else 0.0
        return (RUN_MARGIN_SECONDS + hypothesis + sum(bound(step) for step in self.method)
                + sum(bound(step) for step in self.rollbacks))

    def namespaces(self) -> list[str]:
        """Every namespace a step targets or a probe reads."""
        found: list[str] = []
        probes: list[Any] = list(self.hypothesis.probes) if self.hypothesis else []
        for _, step in walk(self.method, "method"):
            if isinstance(step, ActionStep):
                found.extend(step.job.target.namespaces)
                probes.extend(step.job.probes)
            elif isinstance(step, ProbeStep):
                probes.extend(step.probes)
        for rollback in self.rollbacks:
            if isinstance(rollback, ActionStep):
                found.extend(rollback.job.target.namespaces)
                probes.extend(rollback.job.probes)
        for probe in probes:
            found.extend(probe.namespaces())
        return sorted(set(found))


def walk(steps: list[Any], prefix: str) -> list[tuple[str, Any]]:
    """(path, step) for every step, groups and their children, in document order:
    `method[1]`, `method[1].steps[0]`."""
    found: list[tuple[str, Any]] = []
    pending = [(f"{prefix}[{index}]", step) for index, step in enumerate(steps)][::-1]
    while pending:
        path, step = pending.pop()
        found.append((path, step))
        if isinstance(step, SerialStep | ParallelStep):
            pending.extend([(f"{path}.steps[{index}]", child)
                            for index, child in enumerate(step.steps)][::-1])
    return found


# -- what a run did --------------------------------------------------------------------------


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING)


class StepRun(Run):
    """One node of the tree as it ran (Chaos Toolkit's activity run)."""

    path: str = Field(examples=["method[1].steps[0]", "rollbacks[0]", "before", "after"])
    type: str
    name: str
    status: StepStatus = StepStatus.PENDING
    job_id: str | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    probes: list[ProbeOutcome] = Field(default_factory=list)
    verdict: Verdict | None = None
    psp: int | None = Field(None, description="Probe success percentage (action steps).")
    weight: int = 0
    wake_at: datetime | None = Field(None, description="When a wait ends or a suspend's "
                                                       "deadline falls.")


class ExperimentStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    ROLLING_BACK = "rolling-back"
    COMPLETED = "completed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in (ExperimentStatus.COMPLETED, ExperimentStatus.ABORTED,
                        ExperimentStatus.CANCELLED, ExperimentStatus.SKIPPED)


class ExperimentRun(Run):
    """One run of an experiment: its steps as they ran, the verdict and the score."""

    id: str = Field(examples=["x-20261206T120000-1a2b3c"])
    experiment: str
    spec: ExperimentSpec = Field(description="The document as it was when the run started.")
    status: ExperimentStatus = ExperimentStatus.QUEUED
    verdict: Verdict | None = None
    score: float | None = None
    reason: str | None = None
    source: Source
    submitter: str
    actor: Actor | None = None
    grant: Grant | None = None
    version: int = 0
    created_at: datetime
    steps: list[StepRun] = Field(default_factory=list)
    rollbacks: list[StepRun] = Field(default_factory=list)
    recovery: list[WorkloadRecovery] = Field(default_factory=list)
    output: dict[str, Any] = Field(default_factory=dict)


class ExperimentRunPage(BaseModel):
    items: list[ExperimentRun]
    next_cursor: str | None = None


def describe_bound(seconds: float) -> str:
    return format_duration(seconds)


_RUN_ID = re.compile(r"^x-[0-9]{8}T[0-9]{6}-[0-9a-f]{6,32}$")


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.fullmatch(text))
