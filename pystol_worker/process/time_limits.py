"""Celery time limits for each job, derived from the job's own limits.

A job holds a worker slot for as long as it said it needs, and no longer:

    soft = duration + recovery timeout + its probes (each timeout, before and after)
           + what its action waits on its own (http-probe's calls, node-drain's evictions)
           + a margin for talking to Kubernetes (MARGIN_SECONDS, plus REQUESTS_PER_TARGET
             requests per target it may hit, at PYSTOL_KUBE_QPS),
           at most PYSTOL_MAX_JOB_SECONDS;
    hard = soft + that margin again (time to revert what it injected), at most twice
           PYSTOL_MAX_JOB_SECONDS (the broker's visibility timeout).

At the soft limit the pool sends the job's process SIGUSR1; while a job runs,
`soft_limit_aborts_job` turns that into `JobTimeLimitExceeded`, a `JobAborted`, raised
wherever the job is (a hold, a hung Kubernetes call, a lock wait): `hold_faults` reverts
in its `finally`, and the runner ends the job `aborted` with a reason naming the limit,
as it does for a cancel. At the hard limit the pool kills the process; the job's
heartbeat then lapses and the reaper reverts whatever the journal still holds.

Where the limits come from: the worker computes them when it receives the task
(`time_limited_request`), from the record it is about to run and its own settings and
policy, rather than the producer at send time. So every way a job reaches the queue (a
submission, a deferred job released, an adopted one, a redelivery) gets them, and a
producer that does not set them cannot send a job without them.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from billiard.process import current_process
from celery.worker.request import Request
from pydantic import BaseModel

from pystol_worker.actions.http_probe import HttpProbeParams
from pystol_worker.actions.node_drain import NodeDrainParams
from pystol_worker.core.model import JobSpec, TargetMode
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.probes import probe_seconds
from pystol_worker.jobs.runner import JobRunner
from pystol_worker.safety.job_context import JobAborted

log = logging.getLogger("pystol.worker")

MARGIN_SECONDS = 30.0  # selecting, Redis, process scheduling: what no field accounts for
REQUESTS_PER_TARGET = 4  # inject, its Event, revert, its Event


@dataclass(frozen=True)
class TimeLimits:
    soft: float
    hard: float


class JobTimeLimitExceeded(JobAborted):
    """The job ran past its soft time limit: it is aborted (and reverted) like a cancel."""

    def __init__(self, soft: float, settings: Settings) -> None:
        super().__init__(f"aborted: the job ran past its time limit of {soft:g}s (its "
                         "duration, recovery timeout and probes plus a margin, at most "
                         f"PYSTOL_MAX_JOB_SECONDS={settings.max_job_seconds})")


def target_bound(spec: JobSpec, policy: Policy) -> int:
    """The most targets this job can hit: what its target asks for, within the policy's cap."""
    target = spec.target
    bound = policy.max_targets_per_job
    if target.max_targets is not None:
        bound = min(bound, target.max_targets)
    if target.names:
        bound = min(bound, len(target.names))
    elif target.mode == TargetMode.ONE:
        bound = 1
    elif target.mode == TargetMode.FIXED and target.value is not None:
        bound = min(bound, int(target.value))
    return max(1, bound)


def action_seconds(params: BaseModel) -> float:
    """How long a built-in action waits beyond the spec's duration by its own params.

    Listed here for the two that do; an `Action` method saying it would let plug-ins
    declare theirs (until then a plug-in's waits must fit in the margin)."""
    if isinstance(params, HttpProbeParams):
        return params.count * params.timeout + (params.count - 1) * params.interval
    if isinstance(params, NodeDrainParams):
        return params.eviction_timeout
    return 0.0


def guard_seconds(spec: JobSpec, policy: Policy) -> float:
    """The longest the job's error-budget guard query may take (its endpoint's cap)."""
    if spec.guard is None:
        return 0.0
    endpoint = policy.prometheus.endpoint(spec.guard.endpoint)
    return endpoint.max_seconds if endpoint is not None else 0.0


def job_time_limits(spec: JobSpec, params: BaseModel, settings: Settings,
                    policy: Policy) -> TimeLimits:
    """The soft and hard limits of one job (see the module docstring)."""
    budget = ((spec.duration or 0.0)
              + (spec.recovery_timeout or settings.recovery_timeout_seconds)
              + probe_seconds(spec.probes, guard_seconds=guard_seconds(spec, policy))
              + action_seconds(params))
    margin = MARGIN_SECONDS + REQUESTS_PER_TARGET * target_bound(spec, policy) / settings.kube_qps
    soft = min(budget + margin, float(settings.max_job_seconds))
    return TimeLimits(soft=soft, hard=min(soft + margin, 2.0 * settings.max_job_seconds))


def fallback_limits(settings: Settings) -> TimeLimits:
    """For a task whose job cannot be read (the runner then drops or fails it quickly)."""
    soft = float(settings.max_job_seconds)
    return TimeLimits(soft=soft, hard=soft + MARGIN_SECONDS)


class JobTimeLimits:
    """What the worker's consumer asks for each task it receives: the job's limits, from
    its stored record, validated as the runner will validate it."""

    def __init__(self, settings: Settings, runner: Callable[[], JobRunner]) -> None:
        self.settings = settings
        self.runner = runner

    def __call__(self, job_id: str) -> TimeLimits:
        try:
            runner = self.runner()
            spec = runner.store.get(job_id, with_timeline=False).spec
            params = runner.registry.get(spec.action).Params.model_validate(spec.params)
            return job_time_limits(spec, params, self.settings, runner.policy)
        except Exception as error:  # the job is not runnable as stored: the runner says why
            log.warning("job %s: time limits from the settings (%s: %s)", job_id,
                        type(error).__name__, error)
            return fallback_limits(self.settings)


def time_limited_request(limits_of: Callable[[str], TimeLimits]) -> type[Request]:
    """The Request class of the run-job task: Celery's, with the job's own time limits.

    The pool reads `time_limits` (hard, soft) when it starts the task; the task reads the
    same pair from its request (`timelimit`) to know its soft limit."""

    class TimeLimitedRequest(Request):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            job_id = self.args[0] if self.args else self.kwargs.get("job_id", "")
            limits = limits_of(str(job_id))
            self.time_limits = (limits.hard, limits.soft)
            self.request_dict["timelimit"] = [limits.hard, limits.soft]

    return TimeLimitedRequest


def soft_limit_of(request: Any) -> float | None:
    """The soft limit a task's request carries (set by `time_limited_request`), or None."""
    timelimit = getattr(request, "timelimit", None)
    if not timelimit or len(timelimit) != 2 or timelimit[1] is None:
        return None
    return float(timelimit[1])


@contextmanager
def soft_limit_aborts_job(soft: float | None, settings: Settings) -> Iterator[None]:
    """While the block runs a job, the pool's soft-limit signal aborts it (see the module
    docstring) instead of raising Celery's SoftTimeLimitExceeded, which the runner would
    take for a crash.

    Only in a prefork pool process, where the pool sends SIGUSR1 at the soft limit and the
    job runs in the main thread (signals are handled there); in Celery's main process
    SIGUSR1 means "log every thread's stack", and other pools have no soft limit."""
    if soft is None or not hasattr(signal, "SIGUSR1") \
            or threading.current_thread() is not threading.main_thread() \
            or current_process().name == "MainProcess":
        yield
        return

    def abort(signum: int, frame: Any) -> None:
        raise JobTimeLimitExceeded(soft, settings)

    previous = signal.signal(signal.SIGUSR1, abort)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)
