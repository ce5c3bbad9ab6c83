"""`ProbeLoop`: a job's continuous and on-chaos probes, one thread per job.

Continuous probes start when the loop starts (right before the fault is injected);
on-chaos probes wait for the first injection or eviction (`ctx.injected`). Each probe
runs on its own monotonic schedule, `start + initial_delay + k·interval` — late ticks are
skipped, never bunched — and each call is bounded by `run.timeout ≤ interval`.

A failure is recorded (`probe-failed`); with `stop_on_failure` it ends the job now:
`ctx.stop_for_probe(reason)` sets the stop event that every `ctx.sleep`/`ctx.hold` waits
on, so `hold_faults` raises `JobAborted` at once and its `finally` reverts every change;
for a step of an experiment run the run's stop key is set too (cause `probe`), so the
sibling steps stop at their next check.

Outcomes are capped (§2.1 of the design): up to `KEEP_PER_PROBE` per probe, then only
failures (up to the same number again), and `KEEP_BYTES` of them for the whole job (an
outcome's `value` is cut to 256 characters by the model); every run is counted in a
`ProbeSummary`, so a 1-hour hold at 0.5 s of probes reading a 250 KB annotation cannot grow
a record past its cap.

`stop()` ends the loop for real: the loop's own stop event ends a wait, a pause between
attempts or a call under way at once, and nothing is reported after it returns — a
probe that failed after its job ended must not stop the next step of the run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pystol_worker.core.errors import ActionError
from pystol_worker.core.model import EventKind, Probe, ProbeOutcome, ProbeSummary
from pystol_worker.probes.evaluation import Origin, ProbeEnv, describe_failure, evaluate
from pystol_worker.safety.outbound_http import ProbeStopped
from pystol_worker.store import run_signals

log = logging.getLogger("pystol.probes")
KEEP_PER_PROBE = 200
KEEP_BYTES = 256 * 1024  # of kept outcomes (JSON), per job
JOIN_SECONDS = 5.0


def next_due(due: float, now: float, interval: float) -> float:
    """The next tick of the grid `due + k·interval` strictly after `now` (k ≥ 1): a run
    that ended late skips the ticks it missed instead of running them back to back."""
    steps = max(1, int((now - due) // interval) + 1)
    return due + steps * interval


@dataclass
class _Schedule:
    probe: Probe
    origin: Origin
    summary: ProbeSummary
    next_at: float | None = None  # monotonic; None: not started yet (on-chaos)
    kept: int = 0
    kept_failures: int = 0


@dataclass
class ProbeLoop:
    """Runs `probes` (the looping ones) for the job of `ctx` (a RunContext) until
    `stop()`; `outcomes` and `summaries` hold what they saw."""

    ctx: Any
    probes: list[Probe]
    origins: dict[str, Origin] = field(default_factory=dict)
    clock: Callable[[], float] | None = None
    keep_per_probe: int = KEEP_PER_PROBE
    keep_bytes: int = KEEP_BYTES
    kept_bytes: int = 0
    budget_spent: bool = False
    outcomes: list[ProbeOutcome] = field(default_factory=list)
    failed: bool = False
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    left_running: int = 0  # loops whose thread outlived stop() (a stuck call)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _acting: threading.Lock = field(default_factory=threading.Lock)
    _schedules: list[_Schedule] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The loop's own stop: `stop()` sets `_done`, which ends a wait, a retry pause
        # and a call under way at once (a call polls `should_stop`), so no probe outlives
        # the job and later stops a sibling step of its run. The job's stop and cancel
        # end it too.
        job = ProbeEnv.of(self.ctx)
        self.env = ProbeEnv(settings=job.settings, policy=job.policy, cluster=job.cluster,
                            should_stop=self._should_stop, stop=self._done)
        if self.clock is not None:
            self.env.clock = self.clock
        self._schedules = [
            _Schedule(probe, self.origins.get(probe.name, "job"),
                      ProbeSummary(name=probe.name, mode=probe.mode))
            for probe in self.probes if probe.mode.looping]

    @property
    def summaries(self) -> list[ProbeSummary]:
        return [schedule.summary for schedule in self._schedules]

    def start(self) -> ProbeLoop:
        if self._schedules:
            now = self.env.clock()
            for schedule in self._schedules:
                if schedule.probe.mode.value == "continuous":
                    schedule.next_at = now + schedule.probe.run.initial_delay
            names = ", ".join(f"{s.probe.name} ({s.probe.mode.value}, every "
                              f"{s.probe.run.interval:g}s)" for s in self._schedules)
            self.ctx.event(EventKind.PROBING, f"probing while the fault is held: {names}")
            self._thread = threading.Thread(target=self._run, name="probe-loop",
                                            daemon=True)
            self._thread.start()
        return self

    def _should_stop(self) -> bool:
        return self._done.is_set() or self.ctx.stop.is_set() or bool(self.ctx.cancelled())

    def stop(self) -> None:
        """End the loop now: a wait, a pause between attempts or a call under way ends at
        once. Once this returns the loop does nothing more — no event, no stop of the
        job or of its run (`_acting` is held while the loop acts, so a failure being
        reported finishes before `stop()` returns, and none starts after)."""
        with self._acting:
            self._done.set()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)
            if self._thread.is_alive():
                # it can only be stuck in a call that ignores its deadline; it acts no
                # more (`_done`), but say so
                self.left_running += 1
                log.warning("job %s: the probe loop did not end within %gs of the job",
                            self.ctx.job_id, JOIN_SECONDS)

    def __enter__(self) -> ProbeLoop:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._done.is_set() and not self.ctx.stop.is_set():
                now = self.env.clock()
                if self.ctx.injected.is_set():
                    for schedule in self._schedules:
                        if schedule.next_at is None:
                            schedule.next_at = now + schedule.probe.run.initial_delay
                due = [s for s in self._schedules if s.next_at is not None
                       and s.next_at <= now]
                for schedule in due:
                    self._tick(schedule)
                    if self.ctx.stop.is_set():
                        return
                waits = [s.next_at - self.env.clock() for s in self._schedules
                         if s.next_at is not None]
                pause = min([0.2, *waits]) if waits else 0.2
                self._done.wait(max(pause, 0.0))
        except ProbeStopped:
            return
        except Exception:  # a bug must not leave a fault held without its probes
            log.exception("job %s: the probe loop failed", self.ctx.job_id)
            with self._acting:
                if not self._done.is_set():
                    self.ctx.stop_for_probe("the probe loop failed (see the worker's "
                                            "log); the fault was ended to be safe")

    def _tick(self, schedule: _Schedule) -> None:
        probe = schedule.probe
        interval = probe.run.interval or 1.0
        summary = schedule.summary
        try:
            outcome = evaluate(probe, self.env, "during", origin=schedule.origin,
                               iteration=summary.runs, initial_delay=False)
        except ActionError as error:
            outcome = ProbeOutcome(probe=probe, name=probe.name, mode=probe.mode,
                                   phase="during", origin=schedule.origin,
                                   iteration=summary.runs, ok=False, error=str(error),
                                   started_at=datetime.now(UTC), ended_at=datetime.now(UTC))
        with self._acting:
            if self._done.is_set():
                return  # the job ended during the call: its outcome is not the job's
            assert schedule.next_at is not None
            schedule.next_at = next_due(schedule.next_at, self.env.clock(), interval)
            summary.runs += 1
            if outcome.ok:
                summary.passed += 1
            else:
                summary.failed += 1
                if summary.first_failure_at is None:
                    summary.first_failure_at = outcome.ended_at
            self._keep(schedule, outcome)
            if not outcome.ok:
                self.failed = True
                self._report(probe, outcome, first=summary.failed == 1)

    def _keep(self, schedule: _Schedule, outcome: ProbeOutcome) -> None:
        """Keep the outcome within both caps: a count per probe, and a byte budget for
        the whole loop (an outcome carries its probe, a 2 KB query at most, and what it
        saw): past either, the `ProbeSummary` still counts every run."""
        wanted = schedule.kept < self.keep_per_probe or (
            not outcome.ok and schedule.kept_failures < self.keep_per_probe)
        if not wanted or self.budget_spent:
            return
        size = len(outcome.model_dump_json())
        with self._lock:
            if self.kept_bytes + size > self.keep_bytes:
                if not self.budget_spent:
                    self.budget_spent = True
                    log.info("job %s: probe outcomes reached %d bytes; only counts are "
                             "kept from now on", self.ctx.job_id, self.kept_bytes)
                return
            self.kept_bytes += size
            if schedule.kept < self.keep_per_probe:
                schedule.kept += 1
            else:
                schedule.kept_failures += 1
            self.outcomes.append(outcome)

    def _report(self, probe: Probe, outcome: ProbeOutcome, first: bool) -> None:
        text = describe_failure(outcome)
        if first or probe.run.stop_on_failure:
            self.ctx.event(EventKind.PROBE_FAILED, text, probe=probe.name,
                           iteration=outcome.iteration)
        if not probe.run.stop_on_failure or self.ctx.stop.is_set():
            return
        reason = f"stopped by {text}"
        self.ctx.stop_for_probe(reason)
        self.ctx.event(EventKind.PROBE_STOPPED, reason, probe=probe.name)
        run_id = getattr(self.ctx, "run_id", None)
        if run_id is not None:
            try:
                run_signals.stop_run(self.ctx.store.redis, run_id, "probe", reason,
                                     by=self.ctx.job_id)
            except Exception:  # the job still stops; siblings stop when the run advances
                log.exception("job %s: could not set the run's stop key", self.ctx.job_id)
