"""The job model shared by the API, the CLI, the CR watcher and the worker.

A job spec is what someone asked for; a job record is what happened. Every record of
something that ran (the job, its probes, each change it made, a schedule's run) is a
`Run`, the shape of chaostoolkit's activity runs (status, start, end, duration, error)
but typed: every field a user sees is declared here, so the API's OpenAPI document, the
CLI and the worker cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from pystol_worker.core.access import Actor, Grant
from pystol_worker.core.durations import (
    DURATION_PART as DURATION_PART,
)
from pystol_worker.core.durations import (
    Duration as Duration,
)
from pystol_worker.core.durations import (
    at_most as at_most,
)
from pystol_worker.core.durations import (
    format_duration as format_duration,
)
from pystol_worker.core.durations import (
    parse_duration as parse_duration,
)
from pystol_worker.core.names import (
    DNS_LABEL as DNS_LABEL,
)
from pystol_worker.core.names import (
    MAX_NAME_LENGTH as MAX_NAME_LENGTH,
)
from pystol_worker.core.names import (
    NamespaceName as NamespaceName,
)
from pystol_worker.core.names import (
    NodeName as NodeName,
)
from pystol_worker.core.probe_model import (
    MAX_COMPARED_TEXT,
)
from pystol_worker.core.probe_model import (
    MAX_PROBE_TIMEOUT_SECONDS as MAX_PROBE_TIMEOUT_SECONDS,
)
from pystol_worker.core.probe_model import (
    ErrorBudgetGuard as ErrorBudgetGuard,
)
from pystol_worker.core.probe_model import (
    HttpProbe as HttpProbe,
)
from pystol_worker.core.probe_model import (
    K8sProbe as K8sProbe,
)
from pystol_worker.core.probe_model import (
    Probe as Probe,
)
from pystol_worker.core.probe_model import (
    ProbeMode as ProbeMode,
)
from pystol_worker.core.probe_model import (
    PrometheusProbe as PrometheusProbe,
)
from pystol_worker.core.probe_model import (
    ServiceTarget as ServiceTarget,
)
from pystol_worker.core.probe_model import (
    typed_probes as typed_probes,
)
from pystol_worker.core.probe_model import (
    unique_probe_names as unique_probe_names,
)
from pystol_worker.core.probe_model import (
    with_probe_type as with_probe_type,
)

# Limits on everything a job carries. They live here, in the model, so that the API, the
# custom resources, schedules' templates and the worker (which validates the stored record
# again) refuse the same things with the same field paths: a job is read, stored, listed
# and run many times, and none of that may cost more than a bounded amount.
MAX_NAMESPACES = 100  # target.namespaces
MAX_NODE_NAMES = 1000  # target.names
MAX_SELECTOR_LENGTH = 1024  # label_selector, field_selector
MAX_TARGET_COUNT = 1_000_000  # mode=fixed value, amount, a min_available count
MAX_PROBES = 20
MAX_JOB_DURATION_SECONDS = 7 * 86400  # duration, recovery_timeout (PYSTOL_MAX_JOB_SECONDS
#                                       bounds their sum again, per installation)
MAX_PARAMS_BYTES = 16 * 1024  # params, as JSON
MAX_PARAMS_DEPTH = 8  # params: objects and lists nested in each other
MAX_SPEC_BYTES = 32 * 1024  # the whole spec, as JSON


def json_depth(value: object, stop_at: int) -> int:
    """How deeply objects and lists nest in `value` (a scalar is 0), counted without
    recursion so that no input can exhaust the stack; counting stops past `stop_at`."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        children: Any
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > stop_at:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def utcnow() -> datetime:
    return datetime.now(UTC)


class TargetMode(StrEnum):
    """Chaos Mesh's vocabulary for how many of the matching targets to hit."""

    ONE = "one"
    ALL = "all"
    FIXED = "fixed"
    FIXED_PERCENT = "fixed-percent"
    RANDOM_MAX_PERCENT = "random-max-percent"


class TargetKind(StrEnum):
    PODS = "pods"
    WORKLOADS = "workloads"
    NODES = "nodes"
    URL = "url"


class Target(BaseModel):
    """What a job hits: pods or workloads (namespaces + selectors) or nodes (names/selector)."""

    model_config = ConfigDict(extra="forbid")

    namespaces: list[NamespaceName] = Field(default_factory=list, max_length=MAX_NAMESPACES,
                                  description="Namespaces to select from (pods, workloads).")
    label_selector: str | None = Field(None, max_length=MAX_SELECTOR_LENGTH,
                                       examples=["app=web"])
    field_selector: str | None = Field(None, max_length=MAX_SELECTOR_LENGTH,
                                       examples=["status.phase=Running"])
    names: list[NodeName] = Field(default_factory=list, max_length=MAX_NODE_NAMES,
                                  description="Node names (node actions); take precedence.")
    amount: int | None = Field(None, ge=1, le=1_000_000,
                               description="Original Pystol's node count: same as mode=fixed, "
                                           "value=amount.")
    max_targets: int | None = Field(None, ge=1, le=100_000,
                                    description="Never hit more than this many targets.")
    min_available: int | str | None = Field(
        None, description="Keep at least this many (or this percent, e.g. \"50%\") of each "
                          "workload's desired pods ready; the action takes fewer targets.")
    mode: TargetMode = TargetMode.ONE
    value: float | None = Field(None, allow_inf_nan=False, validate_default=True,
                                description="Count (fixed) or percent (fixed-percent, "
                                            "random-max-percent).")

    @model_validator(mode="before")
    @classmethod
    def _amount_means_fixed(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("amount") is None:
            return data
        if data.get("value") is not None or data.get("mode", "fixed") != "fixed":
            raise ValueError("amount is the original Pystol's way to say mode=fixed; "
                             "give either amount or mode/value, not both")
        amount = data["amount"]
        if isinstance(amount, float) and amount.is_integer():
            # JSON `3.0`: the int field accepts it as 3, so it must mean mode=fixed here too
            # (left alone, it was ignored, and the dump no longer validated).
            amount = int(amount)
        if isinstance(amount, int) and not isinstance(amount, bool) and 1 <= amount <= 1_000_000:
            return {**data, "mode": "fixed", "value": amount, "amount": None}
        return data

    @field_validator("min_available")
    @classmethod
    def _count_or_percent(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, bool):
            raise ValueError("expected a count or a percent such as \"50%\"")
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must not be negative")
            if value > MAX_TARGET_COUNT:
                raise ValueError(f"at most {MAX_TARGET_COUNT:,} (or a percent)")
        elif isinstance(value, str) and not re.fullmatch(r"(100|[1-9]?[0-9])%", value):
            raise ValueError("expected a count or a percent from 0% to 100%, e.g. \"50%\"")
        return value

    @field_validator("value", mode="before")
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        return value

    @field_validator("value")
    @classmethod
    def _value_fits_mode(cls, value: float | None, info: ValidationInfo) -> float | None:
        mode = info.data.get("mode")
        if mode is None:
            return value
        if mode in (TargetMode.ONE, TargetMode.ALL):
            if value is not None:
                raise ValueError(f"mode {mode.value} takes no value")
        elif value is None:
            raise ValueError(f"mode {mode.value} needs a value")
        elif mode == TargetMode.FIXED:
            if value < 1 or value != int(value):
                raise ValueError("mode fixed needs a whole number value of at least 1")
            if value > MAX_TARGET_COUNT:
                raise ValueError(f"mode fixed takes at most {MAX_TARGET_COUNT:,} targets")
        elif not 0 < value <= 100:
            raise ValueError(f"mode {mode.value} needs a percent value in (0, 100]")
        return value


class ExperimentLink(BaseModel):
    """Which experiment run and step a job runs for (set by the engine, not by users: the
    submission service refuses it from anyone else)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(min_length=1, max_length=100)
    path: str = Field(min_length=1, max_length=500, examples=["method[1].steps[0]"])
    hold_until_released: bool = Field(False, description="Hold the fault until the run "
                                      "releases it (or `duration` ends).")


class JobSpec(BaseModel):
    """What someone asked for."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=100, examples=["pod-kill"])
    target: Target
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Validated by the action's own params model.")
    duration: Duration | None = Field(None, description="How long the fault is held (or the "
                                                        "kills are spread) before revert.")
    recovery_timeout: Duration | None = Field(None, description="How long workloads get to "
                                                                "recover; default from settings.")
    probes: list[Probe] = Field(default_factory=list, max_length=MAX_PROBES,
                                description="Steady-state probes: http (url or service), "
                                            "k8s, prometheus; modes sot, eot, edge, "
                                            "continuous, on-chaos.")
    guard: ErrorBudgetGuard | None = Field(None, description="Error-budget guard: above its "
                                           "threshold the job does not start (skipped).")
    experiment: ExperimentLink | None = Field(None, description="Set by the experiment "
                                              "engine on the jobs of an experiment's steps.")
    dry_run: bool = False
    on_conflict: Literal["wait", "reject"] = Field(
        "wait", description="When another running job holds a fault on the same workload or "
                            "node: wait for it, or fail at once.")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("duration", "recovery_timeout")
    @classmethod
    def _bounded_duration(cls, value: float | None) -> float | None:
        return at_most(value, MAX_JOB_DURATION_SECONDS)

    @field_validator("probes", mode="before")
    @classmethod
    def _typed_probes(cls, value: Any) -> Any:
        return typed_probes(value)

    @field_validator("probes")
    @classmethod
    def _unique_probe_names(cls, value: list[Any]) -> list[Any]:
        return unique_probe_names(value)

    @field_validator("params")
    @classmethod
    def _bounded_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Built-in actions' params models are strict, but a plug-in's may take anything:
        bound the shape here, before any of it is stored, so that no action has to."""
        if json_depth(value, MAX_PARAMS_DEPTH) > MAX_PARAMS_DEPTH:
            raise ValueError(f"nested more than {MAX_PARAMS_DEPTH} levels deep")
        size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"{size:,} bytes as JSON; at most {MAX_PARAMS_BYTES:,}")
        return value

    @model_validator(mode="after")
    def _bounded_size(self) -> JobSpec:
        """Every field has its own limit; this one bounds their sum (say, 1,000 node names
        of 253 characters), which is what every read, list and run of the job pays.
        Measured as written (defaults left out): a probe's defaults add a bounded few
        hundred bytes each, and the limit a user reads is the size of what they send."""
        size = len(self.model_dump_json(exclude_defaults=True).encode())
        if size > MAX_SPEC_BYTES:
            raise ValueError(f"the job spec is {size:,} bytes as JSON; at most "
                             f"{MAX_SPEC_BYTES:,} (fewer or shorter names, selectors, probes "
                             "or params)")
        return self


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # the guard or the before-probes said no; nothing changed

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class Source(StrEnum):
    API = "api"
    CLI = "cli"
    CR = "cr"
    SCHEDULE = "schedule"
    EXPERIMENT = "experiment"


class Verdict(StrEnum):
    """What a job or an experiment says about the system (not about the job's own
    plumbing, which `status` says)."""

    PASSED = "passed"      # the fault ran, every probe passed
    FAILED = "failed"      # the hypothesis was not met after the method (or recovery)
    DEVIATED = "deviated"  # a probe failed while the fault was held
    ABORTED = "aborted"    # cancelled, halted, lost, refused or broken: no judgement
    SKIPPED = "skipped"    # nothing was changed: the guard or the before-probes said no

    @property
    def rank(self) -> int:
        """Precedence when several are combined: aborted > deviated > failed > passed."""
        return {Verdict.PASSED: 0, Verdict.SKIPPED: 0, Verdict.FAILED: 1,
                Verdict.DEVIATED: 2, Verdict.ABORTED: 3}[self]


class Run(BaseModel):
    """What every record of something that ran shares, as every activity run in Chaos
    Toolkit's journal has status, start, end, duration and exception: a job, a probe, a
    change made to the cluster, a schedule's run.

    `started_at` and `ended_at` are stored and `duration_seconds` is computed from them
    (none until both are known); `error` says what went wrong, none when nothing did.
    Each record types its own `status` (`JobStatus`, `ChangeStatus`, `RunOutcome`),
    except a probe, whose `status` is the HTTP status it got (a name clients read before
    this shape existed): its outcome is `ok`.

    Records that had their own names for the two times (a job's `finished_at`, a change's
    `at` and `reverted_at`, a schedule run's `fired_at` and `decided_at`) keep them, in the
    JSON and as attributes, as computed copies of the shared fields listed in
    `legacy_names`; input under an old name (a record stored before, a caller not moved
    yet) is read into the shared field.
    """

    legacy_names: ClassVar[dict[str, str]] = {}  # old field name -> shared field name

    started_at: datetime | None = Field(None, description="When it started.")
    ended_at: datetime | None = Field(None, description="When it ended; none while it runs.")
    error: str | None = Field(None, description="What went wrong, if anything.")

    @computed_field(  # type: ignore[prop-decorator]
        description="Seconds from started_at to ended_at; none until both are known.")
    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @model_validator(mode="before")
    @classmethod
    def _read_legacy_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return _shared_names(data, cls.legacy_names)

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> Self:
        """As BaseModel's, with `update` under an old field name applied to the shared
        field (pydantic would store it beside the computed copy, where nobody reads it)."""
        if update:
            update = _shared_names(update, self.legacy_names)
        return super().model_copy(update=update, deep=deep)


def _shared_names(data: Mapping[str, Any], legacy_names: dict[str, str]) -> dict[str, Any]:
    """`data` with the keys under an old field name moved to the shared one (a value
    under the shared name wins)."""
    moved = dict(data)
    for old, new in legacy_names.items():
        if old in moved:
            value = moved.pop(old)
            moved.setdefault(new, value)
    return moved


# tests/unit/test_event_kinds.py checks that every kind the code emits is listed here.
class EventKind(StrEnum):
    """What a timeline event says happened."""

    # the job's life (the store): its status changes are events of the same name
    QUEUED = "queued"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel-requested"
    CUSTOM_RESOURCE = "custom-resource"  # the CR watcher submitted it
    DEFERRED = "deferred"  # outside the admin policy's chaos windows: queued when one opens
    # selecting and injecting (the runner, faults, actions)
    SELECTED = "selected"
    WAITING = "waiting"  # for another job's fault on the same target
    INJECTED = "injected"
    HOLDING = "holding"
    SKIPPED = "skipped"
    KILL_FAILED = "kill-failed"
    PARTITIONING = "partitioning"
    MIN_AVAILABLE = "min-available"
    DRAINING = "draining"
    KEPT = "kept"
    EVICTED = "evicted"
    EVICTION_BLOCKED = "eviction-blocked"
    NOT_EVICTED = "not-evicted"
    PROBING = "probing"
    PROBED = "probed"
    # reverting and recovering
    REVERTED = "reverted"
    REVERT_FAILED = "revert-failed"
    OBSERVING = "observing"
    RECOVERED = "recovered"
    # probes, the guard and experiments
    GUARDED = "guarded"  # the error-budget guard was evaluated
    PROBE_FAILED = "probe-failed"
    PROBE_STOPPED = "probe-stopped"  # a stop-on-failure probe ended the fault
    RELEASED = "released"  # the experiment released a held fault
    STEP_STARTED = "step-started"
    STEP_ENDED = "step-ended"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    ROLLING_BACK = "rolling-back"
    COMPLETED = "completed"


class TimelineEvent(BaseModel):
    at: datetime
    # Pystol's own kinds are EventKind members (tests/unit/test_event_kinds.py checks every
    # emitter); a kind an action plug-in made up is kept as its string, so a timeline
    # stored with one still loads and such a job is not failed over a label.
    kind: EventKind | str = Field(examples=["queued", "started", "selected", "injected",
                                            "recovered"])
    message: str
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, EventKind):
            with contextlib.suppress(ValueError):
                return EventKind(value)
        return value


class WorkloadRef(BaseModel):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


class TargetRef(BaseModel):
    """One object a job selected."""

    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None
    node: str | None = None
    workload: WorkloadRef | None = None


class ChangeStatus(StrEnum):
    APPLIED = "applied"  # in place: not reverted (yet), or nothing to revert
    REVERTED = "reverted"
    FAILED = "failed"  # the revert failed: the reaper retries it


class Change(Run):
    """One change made to the cluster, and its undo when there is one: it runs from when it
    was made (`started_at`, also `at`) until it was reverted (`ended_at`, also
    `reverted_at`)."""

    legacy_names = {"at": "started_at", "reverted_at": "ended_at"}

    target: TargetRef
    action: str = Field(examples=["deleted"])
    started_at: datetime = Field(description="When the change was made.")
    ended_at: datetime | None = Field(None, description="When it was reverted.")
    revert: str | None = None
    error: str | None = Field(None, description="Why the revert failed.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> ChangeStatus:
        if self.ended_at is not None:
            return ChangeStatus.REVERTED
        if self.error is not None:
            return ChangeStatus.FAILED
        return ChangeStatus.APPLIED

    @computed_field(description="The same as started_at.")  # type: ignore[prop-decorator]
    @property
    def at(self) -> datetime:
        return self.started_at

    @at.setter
    def at(self, value: datetime) -> None:
        self.started_at = value

    @computed_field(description="The same as ended_at.")  # type: ignore[prop-decorator]
    @property
    def reverted_at(self) -> datetime | None:
        return self.ended_at

    @reverted_at.setter
    def reverted_at(self, value: datetime | None) -> None:
        self.ended_at = value


class WorkloadRecovery(BaseModel):
    workload: WorkloadRef
    desired_replicas: int
    first_injection_at: datetime
    recovered: bool
    recovered_at: datetime | None = None
    recovery_seconds: float | None = None
    ready_replicas: int = 0


OUTCOME_VALUE_CHARS = MAX_COMPARED_TEXT  # no text a probe compares against is longer


class ProbeOutcome(Run):
    """One probe evaluation: `ok` is its outcome, `status` the HTTP status it got (http
    probes), `value` what was compared (a count, a field, a query's value)."""

    probe: Probe
    name: str | None = Field(None, description="The probe's name.")
    mode: ProbeMode | None = None
    phase: Literal["before", "during", "after"]
    origin: Literal["job", "hypothesis", "step", "guard"] = "job"
    iteration: int = Field(0, ge=0, description="A looping probe's run number.")
    ok: bool
    status: int | None = Field(None, description="The HTTP status of the answer.")
    value: float | int | str | bool | None = Field(None, description="What was compared.")
    seconds: float | None = Field(None, description="How long the call took (monotonic "
                                                    "clock).")
    output: str | None = Field(None, description="What it saw, in a sentence.")

    @field_validator("probe", mode="before")
    @classmethod
    def _typed_probe(cls, value: Any) -> Any:
        return with_probe_type(value)

    @field_validator("value", mode="before")
    @classmethod
    def _bounded_value(cls, value: Any) -> Any:
        """What was compared, kept small: a probe reads fields the tenant writes (an
        annotation of 250 KB), and every kept outcome lands in the job's record — a
        string is cut to the longest text a probe may compare against, anything that is
        not a scalar is kept as the start of its text."""
        if value is None or isinstance(value, bool | int | float):
            return value
        text = value if isinstance(value, str) else repr(value)
        return text[:OUTCOME_VALUE_CHARS]


class ProbeSummary(BaseModel):
    """A looping probe's runs, counted (its outcomes are kept up to a cap)."""

    name: str
    mode: ProbeMode
    runs: int = 0
    passed: int = 0
    failed: int = 0
    first_failure_at: datetime | None = None


class Metrics(BaseModel):
    targets_selected: int = 0
    targets_affected: int = 0
    injected_at: datetime | None = None
    reverted_at: datetime | None = None
    recovery_seconds: float | None = Field(None, description="Slowest workload's recovery.")


class JobResult(BaseModel):
    changes: list[Change] = Field(default_factory=list)
    recovery: list[WorkloadRecovery] = Field(default_factory=list)
    probes: list[ProbeOutcome] = Field(default_factory=list)
    probe_summary: list[ProbeSummary] = Field(default_factory=list)
    output: dict[str, Any] = Field(default_factory=dict, description="Action-specific output.")


class JobRecord(Run):
    """What happened to one job; the API's job resource."""

    legacy_names = {"finished_at": "ended_at"}

    id: str
    spec: JobSpec
    status: JobStatus = JobStatus.QUEUED
    source: Source
    submitter: str
    created_at: datetime
    started_at: datetime | None = Field(None, description="When a worker took it.")
    ended_at: datetime | None = Field(None, description="When it reached its terminal "
                                                        "status.")
    reason: str | None = Field(None, description="Why the job ended as it did.")
    error: str | None = Field(None, description="The exception that ended it, if any.")
    worker: str | None = None
    schedule_id: str | None = None
    verdict: Verdict | None = Field(None, description="passed, failed, deviated, aborted or "
                                                      "skipped; none until it ends.")
    score: float | None = Field(None, description="Resilience score, 0-100 (LitmusChaos's "
                                                  "form); none when no probe ran.")
    experiment_run_id: str | None = Field(None, description="The experiment run this job is "
                                                            "a step of.")
    step: str | None = Field(None, description="Its step's path in that experiment.")
    actor: Actor | None = Field(None, description="Who submitted it: the token, Kubernetes "
                                                  "user, custom resource or schedule.")
    grant: Grant | None = Field(None, description="What the submission service allowed, "
                                                  "sealed; the worker checks it.")
    not_before: datetime | None = Field(None, description="Queued when the admin policy's "
                                                          "next chaos window opens.")
    cancel_requested: bool = False
    targets: list[TargetRef] = Field(default_factory=list)
    result: JobResult = Field(default_factory=JobResult)
    metrics: Metrics = Field(default_factory=Metrics)
    timeline: list[TimelineEvent] = Field(default_factory=list)

    @computed_field(description="The same as ended_at.")  # type: ignore[prop-decorator]
    @property
    def finished_at(self) -> datetime | None:
        return self.ended_at

    @finished_at.setter
    def finished_at(self, value: datetime | None) -> None:
        self.ended_at = value


class Page(BaseModel):
    items: list[JobRecord]
    next_cursor: str | None = None
