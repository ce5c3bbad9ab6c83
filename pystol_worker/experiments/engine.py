"""The experiment engine: a pure transition function over a stored run, run by short tasks.

Why not one long task per experiment. A Celery task that blocks for the whole experiment
would hold a worker slot while its step jobs need slots of their own (with two slots, a
parallel pair plus its driver starves), and it would be one more thing a SIGKILL loses.
So an experiment holds nothing: every fault is held by a step *job* (heartbeat, revert
journal, target locks, reaper), and the run is a record that `advance(run_id)` moves on
whenever something may have changed — the run started, a step job ended (the runner's and
the reaper's hook), a timer fell due, a person cancelled or resumed (the reaper's sweep
catches anything a lost message missed).

`decide(run, step_jobs, now, stop, resumed)` is pure: given the run, the records of its
step jobs, the time, the run's stop signal and the resumed suspend steps, it returns the
next commands (fold a finished job into its step, submit a step's job, start a timer,
stop the run, release a held fault, move to the rollbacks, finish). `advance` applies
them one batch at a time until `decide` has nothing more to say, then writes the run with
a compare-and-set on its version. Submitting before writing is safe: each step's job is
submitted with the idempotency key `xr:{run}:{path}`, so an advance that is retried (its
write lost, its process killed) gets the same job back, never a second one.

Phases: queued → running (the before-check, the method, the after-check) → rolling-back
(the rollbacks in order, then every until-rollback hold still in place is released and
awaited) → completed | aborted | cancelled | skipped. Rollbacks always run once anything
may have changed; only a run skipped by its before-check (nothing changed, as Chaos
Toolkit's default rollback strategy) and a run whose grant does not verify (its record
cannot be trusted to say what to run) end without them.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis

from pystol_worker.core.access import (
    AccessDenied,
    Actor,
    ActorKind,
    GrantAuthority,
    Identity,
    is_sealed,
)
from pystol_worker.core.experiment_model import (
    ActionStep,
    ExperimentRun,
    ExperimentSpec,
    ExperimentStatus,
    ParallelStep,
    ProbeStep,
    ReleaseStep,
    SerialStep,
    StepRun,
    StepStatus,
    SuspendStep,
    WaitStep,
    walk,
)
from pystol_worker.core.model import (
    EventKind,
    ExperimentLink,
    JobRecord,
    JobSpec,
    JobStatus,
    ProbeMode,
    ProbeOutcome,
    Source,
    Target,
    Verdict,
    WorkloadRecovery,
    utcnow,
)
from pystol_worker.core.verdicts import (
    WeightedFault,
    combine,
    job_verdict,
    probe_success_percentage,
    resilience_score,
)
from pystol_worker.jobs.authorization import PolicyRefused, owner_lapsed
from pystol_worker.jobs.submission import QueueUnavailable, SubmissionService
from pystol_worker.jobs.validation import JobInvalid
from pystol_worker.store.halt import ChaosHalted
from pystol_worker.store.job_store import IdempotencyConflict, JobStore, TransitionRefused
from pystol_worker.store.run_signals import (
    RunStop,
    forget_run_stop,
    keep_run_stop,
    release_job,
    run_stopped,
    stop_run,
)

from .store import ExperimentStore, RunConflict, RunTooLarge, StoredRunNotFound

log = logging.getLogger("pystol.experiments")

STEADY_STATE_ACTION = "steady-state"
BEFORE = "before"
AFTER = "after"
HOLD_POLL_SECONDS = 0.5  # how soon to look again at an until-rollback step not yet holding
MAX_ITERATIONS = 1000  # decide/apply rounds per advance (a run has at most ~100 steps)
CAS_ATTEMPTS = 5
#: Rounds one advance task makes while other advances keep asking for another; then it
#: hands the run to a fresh task.
MAX_ROUNDS = 10
#: A step keeps one outcome per probe and phase of its job (the first failure, else the
#: last run: exactly what its PSP counts) and at most this many in all; the counts are in
#: `output.probe_summary`. Copying every outcome of every step job would let one run's
#: record grow with the number of probe runs (H1 of the review): it is read and written
#: back by every advance.
MAX_STEP_OUTCOMES = 24
MAX_OUTCOME_TEXT = 256  # characters of an outcome's `value` and `output` kept in a step


# -- commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetStatus:
    """queued → running, running → rolling-back (carrying the stop that caused it)."""

    status: ExperimentStatus
    stop: RunStop | None = None


@dataclass(frozen=True)
class SubmitStep:
    """Submit the step's job (action, probe step, hypothesis check, rollback action)."""

    path: str


@dataclass(frozen=True)
class StartTimer:
    """A wait or suspend step starts; it ends at `wake_at` (a suspend: earlier if resumed)."""

    path: str
    wake_at: datetime


@dataclass(frozen=True)
class EndStep:
    """A step ended: its job ended, its timer fell due, or it was refused/stopped."""

    path: str
    status: StepStatus
    reason: str | None = None
    verdict: Verdict | None = None


@dataclass(frozen=True)
class MarkHeld:
    """An until-rollback step's job is holding its fault: the method goes on."""

    path: str


@dataclass(frozen=True)
class ReleaseHeld:
    """End the fault of a held step now (`by`: the release rollback doing it, if any)."""

    path: str
    by: str | None = None


@dataclass(frozen=True)
class StopRun:
    """Ask every running step job of the run to stop (the first stop wins)."""

    cause: str
    reason: str


@dataclass(frozen=True)
class FinishRun:
    status: ExperimentStatus
    verdict: Verdict
    reason: str


Command = SetStatus | SubmitStep | StartTimer | EndStep | MarkHeld | ReleaseHeld | StopRun \
    | FinishRun


# -- the tree ------------------------------------------------------------------------------


def nodes_of(spec: ExperimentSpec) -> dict[str, Any]:
    """path -> the document's node, for the method and the rollbacks."""
    found: dict[str, Any] = dict(walk(spec.method, "method"))
    found.update((f"rollbacks[{index}]", step) for index, step in enumerate(spec.rollbacks))
    return found


def children_of(path: str, node: Any) -> list[str]:
    if isinstance(node, SerialStep | ParallelStep):
        return [f"{path}.steps[{index}]" for index in range(len(node.steps))]
    return []


def _check_probes(spec: ExperimentSpec, phase: str) -> list[Any]:
    """The hypothesis probes of the before (sot, edge) or after (eot, edge) check, each
    as a probe of that one phase."""
    if spec.hypothesis is None:
        return []
    probes = []
    for probe in spec.hypothesis.probes:
        mode = probe.mode
        if phase == BEFORE and mode.before:
            probes.append(probe.model_copy(update={"mode": ProbeMode.SOT}))
        elif phase == AFTER and mode.after:
            probes.append(probe.model_copy(update={"mode": ProbeMode.EOT}))
    return probes


def initial_steps(spec: ExperimentSpec) -> tuple[list[StepRun], list[StepRun]]:
    """Every step of a new run, pending: the before-check (when there are before-probes or
    a guard), the method's nodes in document order, the after-check; and the rollbacks."""
    steps: list[StepRun] = []
    if _check_probes(spec, BEFORE) or spec.guard is not None:
        steps.append(StepRun(path=BEFORE, type="hypothesis", name="steady state before"))
    for path, node in walk(spec.method, "method"):
        steps.append(StepRun(path=path, type=node.type, name=node.name,
                             weight=node.weight if isinstance(node, ActionStep) else 0))
    if _check_probes(spec, AFTER):
        steps.append(StepRun(path=AFTER, type="hypothesis", name="steady state after"))
    rollbacks = [StepRun(path=f"rollbacks[{index}]", type=step.type, name=step.name)
                 for index, step in enumerate(spec.rollbacks)]
    return steps, rollbacks


def _probe_name(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    renamed = f"h-{name}"[:63].rstrip("-")
    return renamed


def step_job_spec(spec: ExperimentSpec, path: str, run_id: str) -> JobSpec:
    """The job a step runs as. Action steps: their job, with the hypothesis's continuous
    and on-chaos probes added (they watch the steady state while the fault is held), the
    run link and the idempotency key `xr:{run}:{path}`. Probe steps and the hypothesis
    checks: a job of the built-in `steady-state` action carrying the probes (the
    before-check also the guard), in the experiment's namespaces."""
    link_hold = False
    namespaces = spec.namespaces()
    if path in (BEFORE, AFTER):
        job = JobSpec(action=STEADY_STATE_ACTION, target=Target(namespaces=namespaces),
                      probes=_check_probes(spec, path),
                      guard=spec.guard if path == BEFORE else None)
    else:
        node = nodes_of(spec).get(path)
        if isinstance(node, ActionStep):
            job = node.job
            link_hold = node.hold == "until-rollback"
            if path.startswith("method") and spec.hypothesis is not None:
                taken = {probe.name for probe in job.probes}
                extra = [probe.model_copy(update={"name": _probe_name(probe.name, taken)})
                         for probe in spec.hypothesis.probes if probe.mode.looping]
                if extra:
                    job = job.model_copy(update={"probes": [*job.probes, *extra]})
        elif isinstance(node, ProbeStep):
            job = JobSpec(action=STEADY_STATE_ACTION, target=Target(namespaces=namespaces),
                          probes=list(node.probes))
        else:
            raise KeyError(f"{path} is not a step that runs a job")
    update: dict[str, Any] = {
        "idempotency_key": f"xr:{run_id}:{path}",
        "experiment": ExperimentLink(run_id=run_id, path=path,
                                     hold_until_released=link_hold)}
    if spec.dry_run:
        update["dry_run"] = True
    # Validated again (not model_copy alone): the copy must pass every limit a job passes.
    return JobSpec.model_validate({**job.model_dump(mode="json"),
                                   **{key: (value.model_dump(mode="json")
                                            if hasattr(value, "model_dump") else value)
                                      for key, value in update.items()}})


def run_deadline(run: ExperimentRun) -> datetime | None:
    raw = run.output.get("deadline_at")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def stored_stop(run: ExperimentRun) -> RunStop | None:
    raw = run.output.get("stop")
    if not isinstance(raw, dict):
        return None
    return RunStop(str(raw.get("cause") or "cancel"), str(raw.get("reason") or "stopped"),
                   None if raw.get("by") is None else str(raw.get("by")))


# -- decide (pure) -------------------------------------------------------------------------


def step_status_of(record: JobRecord) -> StepStatus:
    return {JobStatus.SUCCEEDED: StepStatus.SUCCEEDED, JobStatus.FAILED: StepStatus.FAILED,
            JobStatus.ABORTED: StepStatus.ABORTED, JobStatus.CANCELLED: StepStatus.CANCELLED,
            JobStatus.SKIPPED: StepStatus.SKIPPED}.get(record.status, StepStatus.ABORTED)


def verdict_of(record: JobRecord) -> Verdict:
    if record.verdict is not None:
        return record.verdict
    return job_verdict(record.status, record.result.probes)


def is_holding(record: JobRecord) -> bool:
    """The job has injected its fault and holds it (its timeline says so)."""
    return record.status == JobStatus.RUNNING and (
        record.metrics.injected_at is not None
        or any(event.kind in (EventKind.HOLDING, EventKind.INJECTED)
               for event in record.timeline))


def _stops_method(step: StepRun, node: Any) -> bool:
    """A method step that ended this way stops the method (and the run ends aborted):
    an action step aborted or refused (not a probe's judgement) whose on_failure is
    abort, a suspend that reached its deadline with on_deadline abort."""
    if not step.status.terminal:
        return False
    if isinstance(node, ActionStep):
        if node.on_failure == "continue":
            return False
        return step.verdict in (Verdict.ABORTED, Verdict.SKIPPED) or \
            step.status == StepStatus.CANCELLED
    if isinstance(node, SuspendStep):
        return step.status == StepStatus.ABORTED
    return False


def _held(step: StepRun) -> bool:
    return step.status == StepStatus.RUNNING and bool(step.output.get("held"))


def decide(run: ExperimentRun, step_jobs: Mapping[str, JobRecord | None], now: datetime,
           stop: RunStop | None = None, resumed: Collection[str] = ()) -> list[Command]:
    """The next commands for `run`; [] when nothing can happen until something changes.

    `step_jobs`: job id -> record (None: the record is gone) for the run's running steps;
    `stop`: the run's stop signal; `resumed`: paths of suspend steps a person resumed."""
    if run.status.terminal:
        return []
    spec = run.spec
    nodes = nodes_of(spec)
    steps = {step.path: step for step in run.steps}
    rollbacks = {step.path: step for step in run.rollbacks}

    # 1. Fold what has ended: jobs, timers.
    commands: list[Command] = []
    for step in [*run.steps, *run.rollbacks]:
        if step.status != StepStatus.RUNNING:
            continue
        if step.job_id is not None:
            record = step_jobs.get(step.job_id)
            if step.job_id in step_jobs and record is None:
                commands.append(EndStep(step.path, StepStatus.ABORTED,
                                        f"its job {step.job_id} is gone (expired or deleted)",
                                        Verdict.ABORTED))
            elif record is not None and record.status.terminal:
                if step.type == "release":
                    commands.append(EndStep(step.path, StepStatus.SUCCEEDED,
                                            f"released; job {record.id} ended "
                                            f"{record.status.value}"))
                else:
                    commands.append(EndStep(step.path, step_status_of(record),
                                            record.reason, verdict_of(record)))
            elif record is not None and not step.output.get("held") and \
                    isinstance(nodes.get(step.path), ActionStep) and \
                    nodes[step.path].hold == "until-rollback" and is_holding(record):
                commands.append(MarkHeld(step.path))
        elif step.wake_at is not None:
            node = nodes.get(step.path)
            if isinstance(node, SuspendStep) and step.path in resumed:
                commands.append(EndStep(step.path, StepStatus.SUCCEEDED, "resumed"))
            elif now >= step.wake_at:
                if isinstance(node, SuspendStep) and node.on_deadline == "abort":
                    commands.append(EndStep(step.path, StepStatus.ABORTED,
                                            f"suspend step {step.path} was not resumed "
                                            f"before its deadline", Verdict.ABORTED))
                elif isinstance(node, SuspendStep):
                    commands.append(EndStep(step.path, StepStatus.SUCCEEDED,
                                            "not resumed before its deadline; continued"))
                else:
                    commands.append(EndStep(step.path, StepStatus.SUCCEEDED))
    if commands:
        return commands
    # Groups end when every child has ended.
    for path, node in nodes.items():
        group = steps.get(path)
        if group is None or group.status.terminal:
            continue
        children = [steps[child] for child in children_of(path, node) if child in steps]
        if children and all(child.status.terminal for child in children) and \
                group.status == StepStatus.RUNNING:
            commands.append(EndStep(path, _group_status(children),
                                    verdict=_group_verdict(children)))
    if commands:
        return commands

    if run.status == ExperimentStatus.QUEUED:
        return [SetStatus(ExperimentStatus.RUNNING)]

    deadline = run_deadline(run)
    if run.status == ExperimentStatus.RUNNING:
        return _decide_running(run, spec, nodes, steps, now, stop, deadline)
    if run.status == ExperimentStatus.ROLLING_BACK:
        return _decide_rolling_back(run, spec, nodes, steps, rollbacks, now, deadline)
    return []


def _group_status(children: list[StepRun]) -> StepStatus:
    for status in (StepStatus.ABORTED, StepStatus.CANCELLED, StepStatus.FAILED):
        if any(child.status == status for child in children):
            return status
    return StepStatus.SUCCEEDED


def _group_verdict(children: list[StepRun]) -> Verdict | None:
    verdicts = [child.verdict for child in children if child.verdict is not None]
    return combine(verdicts) if verdicts else None


def _stop_outcome(stop: RunStop) -> FinishRun:
    if stop.cause == "cancel":
        return FinishRun(ExperimentStatus.CANCELLED, Verdict.ABORTED, stop.reason)
    if stop.cause == "probe":
        return FinishRun(ExperimentStatus.COMPLETED, Verdict.DEVIATED, stop.reason)
    return FinishRun(ExperimentStatus.ABORTED, Verdict.ABORTED, stop.reason)


def _decide_running(run: ExperimentRun, spec: ExperimentSpec, nodes: dict[str, Any],
                    steps: dict[str, StepRun], now: datetime, stop: RunStop | None,
                    deadline: datetime | None) -> list[Command]:
    if stop is None and deadline is not None and now >= deadline:
        return [StopRun("deadline", f"the run exceeded its deadline "
                                    f"({deadline.isoformat()})")]
    before = steps.get(BEFORE)
    if before is not None and not before.status.terminal:
        if before.status == StepStatus.PENDING:
            if stop is not None:
                return [_stop_outcome(stop)]  # nothing started: nothing to roll back
            return [SubmitStep(BEFORE)]
        return []  # the check runs (a stop ends its job, which comes back here)
    if before is not None and before.status != StepStatus.SUCCEEDED:
        if before.status == StepStatus.SKIPPED:
            return [FinishRun(ExperimentStatus.SKIPPED, Verdict.SKIPPED,
                              f"steady state not met before the method: "
                              f"{before.error or 'a before-probe failed'}")]
        if stop is not None:
            return [_stop_outcome(stop)]
        return [FinishRun(ExperimentStatus.ABORTED, Verdict.ABORTED,
                          f"the steady-state check before the method ended "
                          f"{before.status.value}: {before.error or 'no reason given'}")]

    # The method: stopped by the run's stop signal, or by a step that must stop it.
    method_paths = [path for path in steps if path.startswith("method")]
    if stop is None:
        for path in method_paths:
            step = steps[path]
            if _stops_method(step, nodes[path]):
                job = f" (job {step.job_id})" if step.job_id else ""
                return [StopRun("step-aborted", f"step {path}{job} "
                                f"{step.status.value}: {step.error or 'no reason given'}")]
    if stop is not None:
        timers = [EndStep(path, StepStatus.CANCELLED, f"stopped: {stop.reason}")
                  for path in method_paths
                  if steps[path].status == StepStatus.RUNNING and steps[path].job_id is None
                  and steps[path].wake_at is not None]
        if timers:
            return list(timers)
        if any(steps[path].status == StepStatus.RUNNING and steps[path].job_id is not None
               for path in method_paths):
            return []  # its jobs read the stop signal and end; each end comes back here
        return [SetStatus(ExperimentStatus.ROLLING_BACK, stop)]

    commands: list[Command] = []
    top = [f"method[{index}]" for index in range(len(spec.method))]
    _activate_serial(top, nodes, steps, now, commands)
    if commands:
        return commands
    if not all(_done(path, nodes, steps) for path in top):
        return []
    after = steps.get(AFTER)
    if after is not None and after.status == StepStatus.PENDING:
        return [SubmitStep(AFTER)]
    if after is not None and not after.status.terminal:
        return []
    return [SetStatus(ExperimentStatus.ROLLING_BACK)]


def _done(path: str, nodes: dict[str, Any], steps: dict[str, StepRun]) -> bool:
    """Done for sequencing: ended, an until-rollback step holding its fault, or a group
    whose children are all done."""
    step = steps[path]
    if step.status.terminal or _held(step):
        return True
    children = children_of(path, nodes[path])
    return bool(children) and all(_done(child, nodes, steps) for child in children)


def _activate(path: str, nodes: dict[str, Any], steps: dict[str, StepRun], now: datetime,
              commands: list[Command]) -> None:
    node, step = nodes[path], steps[path]
    if isinstance(node, SerialStep):
        _activate_serial(children_of(path, node), nodes, steps, now, commands)
    elif isinstance(node, ParallelStep):
        for child in children_of(path, node):
            if not _done(child, nodes, steps):
                _activate(child, nodes, steps, now, commands)
    elif step.status == StepStatus.PENDING:
        if isinstance(node, WaitStep):
            commands.append(StartTimer(path, now + timedelta(seconds=node.duration)))
        elif isinstance(node, SuspendStep):
            commands.append(StartTimer(path, now + timedelta(seconds=node.deadline)))
        else:
            commands.append(SubmitStep(path))


def _activate_serial(paths: list[str], nodes: dict[str, Any], steps: dict[str, StepRun],
                     now: datetime, commands: list[Command]) -> None:
    for path in paths:
        if not _done(path, nodes, steps):
            _activate(path, nodes, steps, now, commands)
            return


def _decide_rolling_back(run: ExperimentRun, spec: ExperimentSpec, nodes: dict[str, Any],
                         steps: dict[str, StepRun], rollbacks: dict[str, StepRun],
                         now: datetime, deadline: datetime | None) -> list[Command]:
    stop = stored_stop(run)
    if deadline is not None and now >= deadline + timedelta(seconds=_rollback_grace(spec)):
        return [FinishRun(ExperimentStatus.ABORTED, Verdict.ABORTED,
                          (stop.reason + "; " if stop else "")
                          + "the run exceeded its deadline during its rollbacks")]
    for path, step in rollbacks.items():
        if step.status.terminal:
            continue
        if step.status == StepStatus.RUNNING:
            return []
        node = nodes[path]
        if isinstance(node, ReleaseStep):
            held = _held_step_named(node.step, nodes, steps)
            if held is not None and held.status == StepStatus.RUNNING and held.job_id:
                return [ReleaseHeld(held.path, by=path)]
            why = "it never ran" if held is None or held.status == StepStatus.PENDING \
                else f"it already ended {held.status.value}"
            return [EndStep(path, StepStatus.SUCCEEDED, f"nothing to release: step "
                                                        f"{node.step} {why}")]
        return [SubmitStep(path)]
    # Rollbacks done: every until-rollback hold still in place ends now.
    running = [step for path, step in steps.items()
               if path.startswith("method") and step.status == StepStatus.RUNNING
               and step.job_id is not None]
    releases: list[Command] = [ReleaseHeld(step.path) for step in running
                               if not step.output.get("released")]
    if releases:
        return releases
    if running:
        return []
    return [_outcome(run, stop)]


def _rollback_grace(spec: ExperimentSpec) -> float:
    """How long rollbacks may run past the deadline: their own bound, at least 5 minutes."""
    bound = ExperimentSpec.bound_seconds(spec.model_copy(update={"method": [],
                                                                 "hypothesis": None}), 300.0)
    return max(300.0, bound)


def _held_step_named(name: str, nodes: dict[str, Any], steps: dict[str, StepRun]
                     ) -> StepRun | None:
    for path, node in nodes.items():
        if path.startswith("method") and isinstance(node, ActionStep) and \
                node.name == name and node.hold == "until-rollback":
            return steps.get(path)
    return None


def _outcome(run: ExperimentRun, stop: RunStop | None) -> FinishRun:
    if stop is not None:
        return _stop_outcome(stop)
    nodes = nodes_of(run.spec)
    verdicts: list[Verdict] = []
    worst: StepRun | None = None
    for step in run.steps:
        node = nodes.get(step.path)
        if step.path == AFTER and step.verdict is not None:
            verdicts.append(step.verdict if step.verdict != Verdict.SKIPPED
                            else Verdict.FAILED)
            continue
        if not isinstance(node, ActionStep) or step.verdict is None:
            continue
        if node.on_failure == "continue" and step.verdict in (Verdict.ABORTED,
                                                               Verdict.SKIPPED):
            continue  # recorded (PSP 0) and the method went on
        verdicts.append(step.verdict)
        if worst is None or (worst.verdict is not None
                             and step.verdict.rank > worst.verdict.rank):
            worst = step
    verdict = combine(verdicts) if verdicts else Verdict.PASSED
    if verdict == Verdict.SKIPPED:
        verdict = Verdict.PASSED  # every step skipped itself: nothing changed, nothing broke
    after = next((step for step in run.steps if step.path == AFTER), None)
    if verdict == Verdict.PASSED:
        reason = "the steady state held: every step passed"
    elif verdict == Verdict.FAILED and after is not None and after.verdict != Verdict.PASSED:
        reason = f"steady state not met after the method: {after.error or 'an after-probe failed'}"
    elif worst is not None:
        reason = f"step {worst.path} {worst.verdict.value if worst.verdict else ''}: " \
                 f"{worst.error or 'no reason given'}"
    else:
        reason = f"the experiment {verdict.value}"
    status = ExperimentStatus.ABORTED if verdict == Verdict.ABORTED \
        else ExperimentStatus.COMPLETED
    return FinishRun(status, verdict, reason)


def score_of(run: ExperimentRun) -> tuple[float | None, dict[str, int | None]]:
    """The resilience score and each action step's PSP (None: never ran). A step's
    evaluations are its job's probes and the hypothesis checks' (LitmusChaos attaches the
    experiment's probes to each fault); a step that passed while the hypothesis failed
    after counts as failed."""
    if run.status == ExperimentStatus.SKIPPED:
        return None, {}
    nodes = nodes_of(run.spec)
    checks: list[ProbeOutcome] = []
    for step in run.steps:
        if step.path in (BEFORE, AFTER):
            checks.extend(outcome for outcome in step.probes if outcome.origin != "guard")
    checks_failed = any(not outcome.ok for outcome in checks)
    faults: list[WeightedFault] = []
    psps: dict[str, int | None] = {}
    for step in run.steps:
        node = nodes.get(step.path)
        if not isinstance(node, ActionStep):
            continue
        if step.job_id is None or step.verdict is None:
            psps[step.path] = None
            faults.append(WeightedFault(step.weight, None))
            continue
        verdict = step.verdict
        if verdict == Verdict.PASSED and checks_failed:
            verdict = Verdict.FAILED
        psp = probe_success_percentage([*step.probes, *checks], verdict)
        psps[step.path] = psp
        faults.append(WeightedFault(step.weight, psp))
    return resilience_score(faults), psps


# -- applying commands ---------------------------------------------------------------------


def _step(run: ExperimentRun, path: str) -> StepRun:
    for step in [*run.steps, *run.rollbacks]:
        if step.path == path:
            return step
    raise KeyError(path)


def _mark_ancestors_running(run: ExperimentRun, path: str, now: datetime) -> None:
    parts = path.split(".")
    for end in range(1, len(parts)):
        ancestor = ".".join(parts[:end])
        try:
            step = _step(run, ancestor)
        except KeyError:
            continue
        if step.status == StepStatus.PENDING:
            step.status = StepStatus.RUNNING
            step.started_at = now


def merged_recovery(records: list[WorkloadRecovery]) -> list[WorkloadRecovery]:
    """One entry per workload: the slowest recovery (a workload hit by two steps is as
    resilient as its worst)."""
    by_workload: dict[str, WorkloadRecovery] = {}
    for item in records:
        key = str(item.workload)
        known = by_workload.get(key)
        if known is None or not item.recovered or (
                known.recovered and (item.recovery_seconds or 0)
                > (known.recovery_seconds or 0)):
            by_workload[key] = item
    return list(by_workload.values())


class ExperimentEngine:
    """`advance(run_id)` with the stores and the submission service it needs."""

    def __init__(self, store: ExperimentStore, jobs: JobStore, submission: SubmissionService,
                 signing_key: bytes, send_advance: Callable[[str], None], *,
                 send_advance_later: Callable[[str, float], None] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.jobs = jobs
        self.submission = submission
        self.signing_key = signing_key
        self.send_advance = send_advance
        self.send_advance_later = send_advance_later
        self.clock = clock

    @property
    def redis(self) -> redis.Redis:
        return self.store.redis

    # -- the entry point -----------------------------------------------------------------

    def advance(self, run_id: str) -> None:
        """Move the run on as far as it can go now. One advance at a time per run (the
        lock); one that finds it taken asks the holder to go round once more, so a job
        ending while an advance runs is never left unfolded. The ask and the release are
        each one Redis step: an ask that came between the holder's "nothing asked" and its
        unlock was once lost, and the run waited for the sweep. After MAX_ROUNDS rounds
        a fresh advance task takes over, so one busy run cannot hold a worker."""
        token = self.store.lock_advance(run_id)
        if token is None:
            return  # the holder was asked to go round again
        asked_again = True
        try:
            for _ in range(MAX_ROUNDS):
                self._advance_with_retries(run_id)
                asked_again = self.store.release_advance(run_id, token)
                if not asked_again:
                    return
        finally:
            if asked_again:  # out of rounds, or an error: still holding the lock
                self.store.unlock_advance(run_id, token)
        self.send_advance(run_id)

    def _advance_with_retries(self, run_id: str) -> None:
        for attempt in range(CAS_ATTEMPTS):
            try:
                self._advance_once(run_id)
                return
            except RunConflict:
                log.info("run %s changed while it advanced (attempt %d); reading it again",
                         run_id, attempt + 1)
        log.warning("run %s: gave up after %d conflicting writes; the sweep retries",
                    run_id, CAS_ATTEMPTS)

    def grant_problem(self, run: ExperimentRun) -> str | None:
        """Why the run's record cannot be trusted, or None: its grant must be sealed over
        exactly this run id and spec, and cover every namespace the spec touches."""
        grant = run.grant
        if grant is None:
            return "refused: the run carries no grant from the experiment service"
        if not is_sealed(self.signing_key, grant.payload(run.id,
                                                         run.spec.model_dump(mode="json")),
                         grant.signature):
            return ("refused: the run's grant does not match its record (the record was "
                    "changed after the run started, or PYSTOL_SIGNING_KEY differs between "
                    "the API and the worker)")
        outside = sorted(set(run.spec.namespaces()) - set(grant.namespaces))
        if outside and not grant.cluster:
            return f"refused: namespaces {', '.join(outside)} are outside the run's grant"
        return None

    def _advance_once(self, run_id: str) -> None:
        try:
            run = self.store.get_run(run_id)
        except StoredRunNotFound:
            self.store.forget_running(run_id)
            return
        if run.status.terminal:
            self.store.forget_running(run_id)
            return
        version = run.version
        now = self.clock()
        problem = self.grant_problem(run)
        if problem is not None:
            # Nothing of this record may be acted on, its rollbacks included: stop what
            # runs (step jobs check their own grants too) and end it.
            stop_run(self.redis, run_id, "step-aborted", problem, by="experiment-engine")
            self._apply(run, FinishRun(ExperimentStatus.ABORTED, Verdict.ABORTED, problem),
                        now)
            self._write(run, version)
            # Its job ids cannot be trusted either: no cancel through them; the stop key
            # stays a day for whatever of the run still runs.
            forget_run_stop(self.redis, run_id, jobs_left=True)
            return
        key_stop = run_stopped(self.redis, run_id)
        cache: dict[str, JobRecord | None] = {}
        entered_rollbacks = False
        jobs_left: list[str] = []
        stop_cancelled = False
        lapse: list[str | None] = []  # the owner check, asked at most once per advance
        for _ in range(MAX_ITERATIONS):
            now = self.clock()
            self._load_jobs(run, cache)
            stop = stored_stop(run) if run.status == ExperimentStatus.ROLLING_BACK \
                else key_stop
            suspends = [step.path for step in run.steps
                        if step.type == "suspend" and step.status == StepStatus.RUNNING]
            resumed = self.store.resumed(run_id, suspends)
            if stop is not None and run.status == ExperimentStatus.RUNNING and \
                    not stop_cancelled:
                # Whoever set the stop (a person, a probe, the halt, a deadline), a step
                # job still queued or deferred (to the next chaos window) would read it
                # only when it starts, maybe days later: cancel it now.
                self._cancel_step_jobs(run, cache, queued_only=True)
                stop_cancelled = True
            commands = decide(run, cache, now, stop, resumed)
            if not commands:
                break
            for command in commands:
                if isinstance(command, SubmitStep) and injects(run.spec, command.path):
                    if not lapse:
                        lapse.append(self.owner_problem(run))
                    if lapse[0] is not None and key_stop is not None:
                        continue  # stopped already (a sibling of this batch)
                    if lapse[0] is not None:
                        command = StopRun("cancel", f"stopped before step {command.path}: "
                                          f"{lapse[0]}; the run's steps may no longer be "
                                          "submitted on their behalf")
                if isinstance(command, StopRun):
                    stop_run(self.redis, run_id, command.cause, command.reason,  # type: ignore[arg-type]
                             by="experiment-engine")
                    key_stop = run_stopped(self.redis, run_id)
                    if command.cause == "probe":
                        self.store.append_event(run_id, EventKind.PROBE_STOPPED,
                                                f"stopping: {command.reason}")
                    else:
                        self.store.append_event(run_id, EventKind.CANCEL_REQUESTED,
                                                f"stopping: {command.reason}")
                    continue
                if isinstance(command, SetStatus) and \
                        command.status == ExperimentStatus.ROLLING_BACK:
                    entered_rollbacks = True
                if isinstance(command, FinishRun):
                    # Nothing of a finished run may go on running or start later: cancel
                    # every step job not ended (method, rollback, queued or deferred).
                    jobs_left = self._cancel_step_jobs(run, cache, queued_only=False)
                if isinstance(command, SubmitStep) and command.path.startswith("rollbacks") \
                        and entered_rollbacks and stored_stop(run) is not None \
                        and not self._method_jobs_left(run):
                    # The stop did its work. Forget it before the first rollback job is
                    # queued, not after this advance: a worker can start that job at once,
                    # and a job that reads the run's stop skips itself ("steady state not
                    # met before injection") — a rollback that never ran.
                    forget_run_stop(self.redis, run_id, jobs_left=False)
                self._apply(run, command, now, cache)
        self._write(run, version)
        if run.status.terminal:
            forget_run_stop(self.redis, run_id, jobs_left=bool(jobs_left))
        elif entered_rollbacks and stored_stop(run) is not None and \
                not self._method_jobs_left(run):
            # The stop did its work (every method job has ended); rollback jobs must not
            # read it. A stop after this (a second cancel, a halt) stops them again.
            forget_run_stop(self.redis, run_id, jobs_left=False)
        else:
            keep_run_stop(self.redis, run_id)
        if not run.status.terminal:
            self._schedule_wake(run)

    def owner_problem(self, run: ExperimentRun) -> str | None:
        """Why whoever the run acts for may no longer run its steps (the schedules' rule,
        `owner_lapsed`), or None. A run started with a named token acts for that token
        (the sealed `grant.submitter`); one a schedule started, for whoever last changed
        the schedule. Settings tokens, Kubernetes users and custom resources are not
        re-checked (see `owner_lapsed`)."""
        grant = run.grant
        if grant is None:
            return None
        owner: Actor | None = None
        submitter = grant.submitter
        if run.actor is not None and run.actor.kind == ActorKind.SCHEDULE:
            submitter = run.actor.on_behalf_of or ""
        kind, _, name = submitter.partition(":")
        if kind == ActorKind.TOKEN.value and name:
            owner = Actor(kind=ActorKind.TOKEN, name=name)
        return owner_lapsed(owner, grant, self.redis, self.signing_key)

    def _method_jobs_left(self, run: ExperimentRun) -> bool:
        return any(step.path.startswith("method") and step.status == StepStatus.RUNNING
                   and step.job_id is not None for step in run.steps)

    def _cancel_step_jobs(self, run: ExperimentRun, cache: dict[str, JobRecord | None], *,
                          queued_only: bool) -> list[str]:
        """Ask the job store to cancel the run's step jobs that have not ended (a queued
        or deferred one ends at once; a running one aborts and reverts). Returns the ids
        of those not ended."""
        left: list[str] = []
        for step in [*run.steps, *run.rollbacks]:
            if step.status != StepStatus.RUNNING or step.job_id is None or \
                    step.job_id in left:
                continue
            record = cache.get(step.job_id)
            if record is None and step.job_id not in cache:
                try:
                    record = self.jobs.get(step.job_id)
                except KeyError:
                    record = None
            if record is None or record.status.terminal:
                continue
            left.append(step.job_id)
            if queued_only and record.status != JobStatus.QUEUED:
                continue
            with contextlib.suppress(TransitionRefused, KeyError):
                cache[step.job_id] = self.jobs.request_cancel(
                    step.job_id, by=f"experiment run {run.id}")
        return left

    def _write(self, run: ExperimentRun, version: int) -> None:
        """Write the run (CAS). A record past the store's size bound is made smaller
        rather than retried as it is (a write that cannot succeed would be retried by
        every advance and every sweep for ever): first each step keeps only its failed
        outcomes, then none (the counts stay in `output.probe_summary`). Should it still
        not fit, the run leaves the running set, so nothing loops on it."""
        for compact in (None, _failures_only, _no_outcomes):
            if compact is not None:
                for step in [*run.steps, *run.rollbacks]:
                    compact(step)
                run.output["probe_outcomes_dropped"] = True
            try:
                self.store.write_run(run, version)
                return
            except RunTooLarge as error:
                log.warning("run %s: %s; keeping fewer probe outcomes", run.id, error)
        log.error("run %s cannot be written even without its probe outcomes; stopping "
                  "its step jobs and no longer advancing it", run.id)
        stop_run(self.redis, run.id, "step-aborted", "the run's record grew past its size "
                 "bound", by="experiment-engine")
        self._cancel_step_jobs(run, {}, queued_only=False)
        self.store.forget_running(run.id)
        self.store.clear_due(run.id)

    def _load_jobs(self, run: ExperimentRun, cache: dict[str, JobRecord | None]) -> None:
        for step in [*run.steps, *run.rollbacks]:
            if step.status != StepStatus.RUNNING or step.job_id is None:
                continue
            known = cache.get(step.job_id)
            if step.job_id in cache and (known is None or known.status.terminal):
                continue
            try:
                cache[step.job_id] = self.jobs.get(step.job_id, with_timeline=True)
            except KeyError:
                cache[step.job_id] = None

    def _schedule_wake(self, run: ExperimentRun) -> None:
        now = self.clock()
        wakes: list[datetime] = []
        nodes = nodes_of(run.spec)
        for step in run.steps:
            if step.status != StepStatus.RUNNING:
                continue
            if step.wake_at is not None and step.job_id is None:
                wakes.append(step.wake_at)
            node = nodes.get(step.path)
            if isinstance(node, ActionStep) and node.hold == "until-rollback" and \
                    not step.output.get("held") and run.status == ExperimentStatus.RUNNING:
                wakes.append(now + timedelta(seconds=HOLD_POLL_SECONDS))
        deadline = run_deadline(run)
        if deadline is not None:
            wakes.append(deadline if run.status == ExperimentStatus.RUNNING else
                         deadline + timedelta(seconds=_rollback_grace(run.spec)))
        if not wakes:
            return
        at = min(wakes)
        self.store.set_due(run.id, at)
        delay = max((at - now).total_seconds(), 0.0)
        if self.send_advance_later is not None and delay < 3600:
            try:
                self.send_advance_later(run.id, delay)
            except Exception:  # the sweep advances it when due
                log.exception("could not schedule the next advance of run %s", run.id)

    # -- commands --------------------------------------------------------------------------

    def _apply(self, run: ExperimentRun, command: Command, now: datetime,
               cache: dict[str, JobRecord | None] | None = None) -> None:
        apply_state(run, command, now, cache or {})
        if isinstance(command, SubmitStep):
            self._submit(run, command.path, now, cache if cache is not None else {})
        elif isinstance(command, ReleaseHeld):
            step = _step(run, command.path)
            if step.job_id is not None:
                release_job(self.redis, step.job_id)
            self.store.append_event(run.id, EventKind.RELEASED,
                                    f"released the fault of step {command.path}"
                                    + (f" ({command.by})" if command.by else ""),
                                    step=command.path)
        elif isinstance(command, StartTimer):
            until = f"step {command.path} until {command.wake_at.isoformat()}"
            if _step(run, command.path).type == "suspend":
                self.store.append_event(run.id, EventKind.SUSPENDED, until, step=command.path)
            else:
                self.store.append_event(run.id, EventKind.WAITING, until, step=command.path)
        elif isinstance(command, EndStep):
            step = _step(run, command.path)
            if step.type == "suspend" and command.reason == "resumed":
                self.store.append_event(run.id, EventKind.RESUMED,
                                        f"step {command.path} resumed", step=command.path)
            self.store.append_event(run.id, EventKind.STEP_ENDED,
                                    f"step {command.path} {command.status.value}"
                                    + (f": {command.reason}" if command.reason else ""),
                                    step=command.path, status=command.status.value)
        elif isinstance(command, SetStatus):
            if command.status == ExperimentStatus.ROLLING_BACK:
                self.store.append_event(run.id, EventKind.ROLLING_BACK,
                                        "running the rollbacks")
            else:
                self.store.append_event(run.id, EventKind.STARTED, "run started")
        elif isinstance(command, FinishRun):
            text = f"{command.verdict.value}: {command.reason}"
            data: dict[str, Any] = {"verdict": command.verdict.value, "score": run.score}
            if command.status == ExperimentStatus.COMPLETED:
                self.store.append_event(run.id, EventKind.COMPLETED, text, **data)
            elif command.status == ExperimentStatus.CANCELLED:
                self.store.append_event(run.id, EventKind.CANCELLED, text, **data)
            elif command.status == ExperimentStatus.SKIPPED:
                self.store.append_event(run.id, EventKind.SKIPPED, text, **data)
            else:
                self.store.append_event(run.id, EventKind.ABORTED, text, **data)

    def identity(self, run: ExperimentRun) -> Identity:
        """Who a step is submitted as: the run, on behalf of who started it, with exactly
        the authority of the run's sealed grant."""
        assert run.grant is not None
        actor = Actor(kind=ActorKind.EXPERIMENT, name=run.id, on_behalf_of=run.submitter,
                      namespaces=list(run.grant.namespaces))
        return Identity(actor, GrantAuthority(run.grant))

    def _submit(self, run: ExperimentRun, path: str, now: datetime,
                cache: dict[str, JobRecord | None]) -> None:
        step = _step(run, path)
        try:
            spec = step_job_spec(run.spec, path, run.id)
            record, _ = self.submission.submit(spec, Source.EXPERIMENT, self.identity(run))
        except (JobInvalid, AccessDenied, PolicyRefused, ChaosHalted, QueueUnavailable,
                IdempotencyConflict, ValueError) as error:
            reason = f"refused: {error}"
            apply_state(run, EndStep(path, StepStatus.ABORTED, reason, Verdict.ABORTED),
                        now, cache)
            self.store.append_event(run.id, EventKind.STEP_ENDED,
                                    f"step {path} aborted: {reason}"[:2000], step=path,
                                    status=StepStatus.ABORTED.value)
            return
        step.job_id = record.id
        cache[record.id] = record
        self.store.append_event(run.id, EventKind.STEP_STARTED,
                                f"step {path} ({step.type} {step.name}): job {record.id}",
                                step=path, job_id=record.id)


def _trimmed(outcome: ProbeOutcome) -> ProbeOutcome:
    value = outcome.value
    if isinstance(value, str) and len(value) > MAX_OUTCOME_TEXT:
        value = value[:MAX_OUTCOME_TEXT] + "…"
    text = outcome.output
    if text is not None and len(text) > MAX_OUTCOME_TEXT:
        text = text[:MAX_OUTCOME_TEXT] + "…"
    error = outcome.error
    if error is not None and len(error) > MAX_OUTCOME_TEXT:
        error = error[:MAX_OUTCOME_TEXT] + "…"
    return outcome.model_copy(update={"value": value, "output": text, "error": error})


def step_outcomes(outcomes: list[ProbeOutcome]) -> list[ProbeOutcome]:
    """What a step keeps of its job's probe outcomes: per (probe, phase) the first
    failure, else the last outcome, so the step's PSP (one evaluation per probe and phase,
    failed at its first failure) is the same as over every outcome; the guard's first
    outcome; at most MAX_STEP_OUTCOMES, long values and texts cut."""
    kept: dict[tuple[str, str, str], ProbeOutcome] = {}
    for outcome in outcomes:
        key = (outcome.origin, outcome.name or outcome.probe.name, outcome.phase)
        known = kept.get(key)
        if known is None and len(kept) >= MAX_STEP_OUTCOMES:
            continue
        if known is None or (known.ok and (not outcome.ok or outcome.origin != "guard")):
            kept[key] = outcome
    return [_trimmed(outcome) for outcome in kept.values()]


def injects(spec: ExperimentSpec, path: str) -> bool:
    """A method step that runs an action (a fault): the owner check comes before it.
    Probe steps, the hypothesis checks and rollbacks (which only remove faults) do not."""
    return path.startswith("method") and isinstance(nodes_of(spec).get(path), ActionStep)


def _failures_only(step: StepRun) -> None:
    step.probes = [outcome for outcome in step.probes if not outcome.ok][:1]


def _no_outcomes(step: StepRun) -> None:
    step.probes = []


def apply_state(run: ExperimentRun, command: Command, now: datetime,
                jobs: Mapping[str, JobRecord | None]) -> None:
    """What a command changes in the run record itself (pure but for `run`)."""
    if isinstance(command, SetStatus):
        run.status = command.status
        if command.status == ExperimentStatus.RUNNING and run.started_at is None:
            run.started_at = now
        if command.stop is not None:
            run.output["stop"] = {"cause": command.stop.cause, "reason": command.stop.reason,
                                  "by": command.stop.by}
    elif isinstance(command, SubmitStep):
        step = _step(run, command.path)
        step.status = StepStatus.RUNNING
        step.started_at = now
        _mark_ancestors_running(run, command.path, now)
    elif isinstance(command, StartTimer):
        step = _step(run, command.path)
        step.status = StepStatus.RUNNING
        step.started_at = now
        step.wake_at = command.wake_at
        _mark_ancestors_running(run, command.path, now)
    elif isinstance(command, MarkHeld):
        _step(run, command.path).output["held"] = True
    elif isinstance(command, ReleaseHeld):
        held = _step(run, command.path)
        held.output["released"] = True
        if command.by is not None:
            rollback = _step(run, command.by)
            rollback.status = StepStatus.RUNNING
            rollback.started_at = now
            rollback.job_id = held.job_id
    elif isinstance(command, EndStep):
        step = _step(run, command.path)
        step.status = command.status
        step.ended_at = now
        if step.started_at is None:
            step.started_at = now
        if command.verdict is not None:
            step.verdict = command.verdict
        if command.reason and command.status not in (StepStatus.SUCCEEDED,):
            step.error = command.reason[:2000]
        elif command.reason:
            step.output["reason"] = command.reason[:2000]
        record = jobs.get(step.job_id) if step.job_id is not None and \
            step.type != "release" else None
        if record is not None:
            step.started_at = record.started_at or step.started_at
            step.ended_at = record.ended_at or now
            step.probes = step_outcomes(record.result.probes)
            step.output["probe_summary"] = [
                item.model_dump(mode="json")
                for item in record.result.probe_summary[:MAX_STEP_OUTCOMES]]
            step.output["probe_outcomes"] = {"total": len(record.result.probes),
                                             "kept": len(step.probes)}
            step.output.update({
                "job_status": record.status.value,
                "targets": len(record.targets),
                "changes": len(record.result.changes),
                "recovery": [item.model_dump(mode="json") for item in record.result.recovery],
            })
            if record.score is not None:
                step.output["job_score"] = record.score
    elif isinstance(command, FinishRun):
        run.status = command.status
        run.verdict = command.verdict
        run.reason = command.reason[:2000]
        run.ended_at = now
        if run.started_at is None:
            run.started_at = now
        for step in [*run.steps, *run.rollbacks]:
            if step.status == StepStatus.PENDING:
                step.status = StepStatus.SKIPPED
                step.output.setdefault("reason", "not run")
            elif step.status == StepStatus.RUNNING:
                step.status = StepStatus.CANCELLED
                step.ended_at = now
        score, psps = score_of(run)
        run.score = score
        for step in run.steps:
            if step.path in psps:
                step.psp = psps[step.path]
        recoveries = [WorkloadRecovery.model_validate(item)
                      for step in run.steps
                      for item in step.output.get("recovery", [])
                      if isinstance(item, dict)]
        run.recovery = merged_recovery(recoveries)
        if math.isnan(run.score or 0.0):
            run.score = None
