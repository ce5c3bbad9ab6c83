"""What happens when beat fires a schedule: which slot it was, and whether that slot runs.

Beat sends `pystol.fire_schedule(schedule_id)` to the job queue; `pystol beat` stamps each
message with the moment it sent it (header `pystol_fired_at`). The task, in a worker:

1. **Claims the slot** (one WATCH/MULTI transaction on the schedule): the slot is the latest
   one at or before the fire time, counted from the slot beat was aimed at. A fire earlier
   than the aimed slot is a duplicate (say, a beat that restarted and fired an entry
   again) or stale: it decides nothing and only re-aims the entry. Slots between the aimed
   one and the claimed one never got a fire (beat was down): they are recorded once as
   `not-fired` and never run, like a Kubernetes CronJob that runs only the latest missed
   schedule. The same transaction aims the redbeat entry at the following slot, so a slot
   is decided by exactly one fire.
2. **Decides**: paused? inside the windows (in the schedule's time zone)? started within
   `starting_deadline_seconds` of its slot? chaos halted? concurrency policy (Forbid: skip
   while an earlier run's job has not ended; Replace: ask it to abort, then start)?
3. **Runs**: submits the template through the submission service every producer uses
   (`SubmissionService.submit(source=schedule, schedule_id=…)`: validate, halt, store,
   queue) with an idempotency key made of the schedule id and the slot, and turns its
   errors into the run's outcome. A redelivered fire (its worker died) re-runs the same
   decision and the key returns the same job: a slot never makes two jobs.
4. **Records** the outcome in the schedule's history (trimmed to `history_limit`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from pystol_worker.core.access import Actor, ActorKind, Identity
from pystol_worker.core.experiment_model import is_run_id
from pystol_worker.core.model import Source
from pystol_worker.core.schedule_model import (
    ConcurrencyPolicy,
    RunOutcome,
    ScheduleRun,
    SkipReason,
    firing_tolerance_ms,
    interval_ms,
    latest_slot_at_or_before,
    ms_to_datetime,
    next_allowed_slot,
    next_slot_after,
    window_problem,
)
from pystol_worker.experiments.service import (
    ExperimentChanged,
    ExperimentNotFound,
    ExperimentService,
)
from pystol_worker.jobs.authorization import owner_lapsed
from pystol_worker.jobs.submission import (
    AccessDenied,
    ChaosHalted,
    IdempotencyConflict,
    JobInvalid,
    PolicyRefused,
    QueueUnavailable,
    SubmissionService,
)
from pystol_worker.schedules.store import (
    ScheduleState,
    ScheduleStore,
    StoredSchedule,
)
from pystol_worker.store.job_store import JobNotFound, TransitionRefused
from pystol_worker.store.run_signals import stop_run

log = logging.getLogger("pystol.schedules")
COUNT_CAP = 1000  # cron slots counted one by one (skipped or missed) at most


@dataclass
class FireResult:
    """What one fire did: `started`, `skipped`, `failed`, or nothing (`early`: a duplicate
    or stale fire; `gone`: the schedule was deleted)."""

    outcome: str
    slot_ms: int | None = None
    job_id: str | None = None
    skipped: SkipReason | None = None
    reason: str = ""


@dataclass
class Claim:
    stored: StoredSchedule
    slot_ms: int
    missed: int = 0
    first_missed_ms: int | None = None
    last_missed_ms: int | None = None
    jumped: int = 0  # slots outside the windows passed over after this one
    last_jumped_ms: int | None = None
    next_ms: int | None = None
    redelivered: bool = False


def idempotency_key(schedule_id: str, slot_ms: int) -> str:
    return f"schedule:{schedule_id}:{slot_ms}"


def _count_slots(stored: StoredSchedule, after_ms: int, before_ms: int
                 ) -> tuple[int, int | None]:
    """How many slots lie strictly between two slots, and the last of them."""
    spec = stored.spec
    if spec.interval is not None:
        period = interval_ms(spec)
        count = max(0, (before_ms - after_ms) // period - 1)
        return count, (before_ms - period if count else None)
    count, last, cursor = 0, None, after_ms
    while count < COUNT_CAP:
        following = next_slot_after(spec, stored.anchor_ms, cursor)
        if following is None or following >= before_ms:
            break
        count, last, cursor = count + 1, following, following
    return count, last


class ScheduleFirer:
    """Handles fires. Jobs are submitted through `submissions` (built by the worker process
    on the same Redis, with the worker's Celery app as its queue; tests inject theirs)."""

    def __init__(self, schedules: ScheduleStore, submissions: SubmissionService,
                 experiments: ExperimentService | None = None) -> None:
        self.schedules = schedules
        self.jobs = schedules.jobs
        self.submissions = submissions
        self.experiments = experiments  # starts the runs of schedules of an experiment

    @property
    def redis(self) -> redis.Redis:
        return self.schedules.redis

    # -- 1. claim -----------------------------------------------------------------------------

    def claim(self, schedule_id: str, fired_ms: int, task_id: str | None
              ) -> Claim | FireResult:
        store = self.schedules
        key, state_key = store.key(schedule_id), store.state_key(schedule_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, state_key)
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.reset()
                        store.remove_stale_entry(schedule_id)
                        return FireResult("gone", reason="the schedule was deleted")
                    stored = StoredSchedule.model_validate_json(raw)
                    state = store.state(schedule_id, pipe)
                    result = self._claim_in(pipe, stored, state, fired_ms, task_id)
                    return result
                except redis.WatchError:
                    continue

    def _claim_in(self, pipe: Any, stored: StoredSchedule, state: ScheduleState,
                  fired_ms: int, task_id: str | None) -> Claim | FireResult:
        store, spec = self.schedules, stored.spec
        now_ms = store._now_ms()
        if task_id and task_id == state.last_task and state.last_slot is not None:
            pipe.reset()  # the same fire again: its worker died while deciding
            return Claim(stored, state.last_slot, redelivered=True)
        aimed = state.aimed
        if aimed is None or fired_ms + firing_tolerance_ms(spec) < aimed:
            # Early: a duplicate or stale fire (beat restarted, or the entry was re-aimed
            # after beat loaded it). Beat's own bookkeeping just moved the entry: put it back.
            if aimed is None:
                aimed = store.first_aim(stored, state, stored, now_ms)
            pipe.multi()
            if aimed is not None:
                pipe.hset(store.state_key(stored.id), "aimed", aimed)
            store.write_entry(pipe, stored, aimed, base_ms=fired_ms)
            pipe.execute()
            return FireResult("early", reason="no slot due: a duplicate or stale fire")
        claim = Claim(stored, aimed)
        if spec.kind != "mtbf":
            latest = latest_slot_at_or_before(spec, stored.anchor_ms,
                                              fired_ms + firing_tolerance_ms(spec))
            if latest is not None and latest > aimed:
                claim.slot_ms = latest
                claim.missed, claim.last_missed_ms = _count_slots(stored, aimed, latest)
                claim.missed += 1  # the aimed slot itself
                claim.first_missed_ms = aimed
                claim.last_missed_ms = claim.last_missed_ms or aimed
        slot = claim.slot_ms
        if spec.kind == "mtbf":
            claim.next_ms = store.draw_mtbf(spec, slot, now_ms)
        else:
            claim.next_ms = next_slot_after(spec, stored.anchor_ms, slot)
            if window_problem(spec, ms_to_datetime(slot)) is not None:
                # Outside the windows: aim straight at the next allowed slot, so a closed
                # window costs one fire, and count the slots passed over.
                claim.next_ms = next_allowed_slot(spec, stored.anchor_ms, slot)
                if claim.next_ms is not None:
                    claim.jumped, claim.last_jumped_ms = _count_slots(stored, slot,
                                                                      claim.next_ms)
        pipe.multi()
        mapping: dict[str, Any] = {"last_slot": slot, "last_task": task_id or ""}
        if claim.next_ms is not None:
            mapping["aimed"] = claim.next_ms
        else:
            pipe.hdel(store.state_key(stored.id), "aimed")
        pipe.hset(store.state_key(stored.id), mapping=mapping)
        store.write_entry(pipe, stored, claim.next_ms, base_ms=slot)
        pipe.execute()
        return claim

    # -- 2. to 4. decide, run, record ----------------------------------------------------------

    def fire(self, schedule_id: str, fired_at: float | None = None,
             task_id: str | None = None) -> FireResult:
        now_ms = self.schedules._now_ms()
        fired_ms = round(fired_at * 1000) if fired_at else now_ms
        claim = self.claim(schedule_id, fired_ms, task_id)
        if isinstance(claim, FireResult):
            log.info("schedule %s: %s (%s)", schedule_id, claim.outcome, claim.reason)
            return claim
        spec = claim.stored.spec
        fired = ms_to_datetime(fired_ms)
        if claim.missed:
            first = ms_to_datetime(claim.first_missed_ms or claim.slot_ms)
            self.schedules.record_run(schedule_id, ScheduleRun(
                slot_at=first, ended_at=self.schedules.now(), outcome=RunOutcome.SKIPPED,
                skipped=SkipReason.NOT_FIRED, count=claim.missed,
                last_slot_at=ms_to_datetime(claim.last_missed_ms or claim.slot_ms),
                reason=f"{claim.missed} slot(s) from {first.isoformat()} got no fire (was "
                       "beat running?); only the latest missed slot runs"),
                spec.history_limit)
        # One decision at a time per schedule: two fires handled by two worker processes
        # at once must not both see "no previous run" under Forbid.
        lock = self.redis.lock(self.schedules.key(schedule_id) + ":deciding", timeout=60,
                               blocking_timeout=30)
        locked = lock.acquire()
        try:
            run = self.decide(claim, fired)
            self.schedules.record_run(schedule_id, run, spec.history_limit)
        finally:
            if locked:
                with contextlib.suppress(redis.exceptions.LockError):
                    lock.release()
        log.info("schedule %s slot %s: %s%s", schedule_id, run.slot_at.isoformat(),
                 run.outcome.value, f" ({run.reason})" if run.reason else "")
        return FireResult(run.outcome.value, claim.slot_ms, run.job_id, run.skipped,
                          run.reason)

    def decide(self, claim: Claim, fired: Any) -> ScheduleRun:
        stored, spec, slot_ms = claim.stored, claim.stored.spec, claim.slot_ms
        slot = ms_to_datetime(slot_ms)

        def skip(reason: SkipReason, message: str, **extra: Any) -> ScheduleRun:
            return ScheduleRun(slot_at=slot, fired_at=fired, decided_at=self.schedules.now(),
                               outcome=RunOutcome.SKIPPED, skipped=reason, reason=message,
                               **extra)

        if spec.paused:
            return skip(SkipReason.PAUSED, "the schedule is paused")
        outside = window_problem(spec, slot)
        if outside is not None:
            extra: dict[str, Any] = {}
            if claim.jumped:
                extra = {"count": 1 + claim.jumped,
                         "last_slot_at": ms_to_datetime(claim.last_jumped_ms or slot_ms)}
            upcoming = (f"; next run at {ms_to_datetime(claim.next_ms).isoformat()}"
                        if claim.next_ms is not None else "")
            return skip(SkipReason.OUTSIDE_WINDOW, outside + upcoming, **extra)
        late = self.schedules.clock() - slot_ms / 1000
        deadline = spec.starting_deadline_seconds
        if deadline is not None and late > deadline:
            return skip(SkipReason.MISSED_DEADLINE,
                        f"could start only {late:.1f}s after its time, later than "
                        f"starting_deadline_seconds={deadline:g}")
        # Asked here as well as on submitting: a halted slot must not go on to the
        # concurrency policy, whose Forbid would name the wrong reason and whose Replace
        # would cancel earlier runs.
        try:
            self.submissions.refuse_if_halted()
        except ChaosHalted as halted:
            return skip(SkipReason.HALTED, str(halted))
        replaced: list[str] = []
        if spec.concurrency_policy != ConcurrencyPolicy.ALLOW:
            earlier = {job_id: status for job_id, (job_slot, status)
                       in self.schedules.active_jobs(stored.id).items() if job_slot != slot_ms}
            if earlier and spec.concurrency_policy == ConcurrencyPolicy.FORBID:
                listed = ", ".join(f"{job_id} is {status.value}"
                                   for job_id, status in sorted(earlier.items()))
                return skip(SkipReason.FORBID, f"concurrency policy Forbid: previous run "
                                                f"{listed}")
            for job_id in sorted(earlier):
                if is_run_id(job_id):
                    if self._replace_run(stored, job_id):
                        replaced.append(job_id)
                    continue
                try:
                    if self.jobs.get(job_id, with_timeline=False).cancel_requested:
                        continue  # already asked to abort (by an earlier Replace or a user)
                    self.jobs.request_cancel(job_id, by=f"schedule {stored.id} (Replace)")
                    replaced.append(job_id)
                    if self.submissions.audit is not None:
                        owner = stored.changed_by
                        self.submissions.audit.record(
                            Actor(kind=ActorKind.SCHEDULE, name=stored.id,
                                  on_behalf_of=owner.submitter if owner else None),
                            "job.cancel", targets=[job_id], job_id=job_id,
                            schedule_id=stored.id, detail="concurrency policy Replace")
                except (TransitionRefused, JobNotFound):
                    continue
        return self.start(claim, fired, replaced)

    def _replace_run(self, stored: StoredSchedule, run_id: str) -> bool:
        """Concurrency policy Replace for an experiment run: stop it (its step jobs abort
        and revert, its rollbacks run); True when this call stopped it."""
        if not stop_run(self.redis, run_id, "cancel",
                        f"replaced by the next run of schedule {stored.id}",
                        by=f"schedule:{stored.id}"):
            return False  # already stopping
        if self.experiments is not None:
            with contextlib.suppress(Exception):  # the sweep advances it otherwise
                self.experiments.send_advance(run_id)
        return True

    def _owner_lapsed(self, stored: StoredSchedule) -> str | None:
        """Why the named token that last changed the schedule no longer covers its grant,
        or None: a schedule must not outlive its owner's rights (`owner_lapsed`)."""
        return owner_lapsed(stored.changed_by, stored.grant, self.schedules.redis,
                            self.submissions.settings.signing_key_bytes,
                            role=", which last changed it,")

    def start(self, claim: Claim, fired: Any, replaced: list[str]) -> ScheduleRun:
        """Submit the slot's job and say how that went (the submission service's errors
        become the run's outcome)."""
        stored, slot_ms = claim.stored, claim.slot_ms
        slot = ms_to_datetime(slot_ms)

        def run(outcome: RunOutcome, reason: str, job_id: str | None = None,
                skipped: SkipReason | None = None) -> ScheduleRun:
            return ScheduleRun(slot_at=slot, started_at=fired, replaced=replaced,
                               ended_at=self.schedules.now(), outcome=outcome,
                               skipped=skipped, job_id=job_id, reason=reason)

        identity = stored.identity(self.submissions.settings.signing_key_bytes)
        if identity is None:
            log.warning("schedule %s: its grant does not verify; not running it", stored.id)
            return run(RunOutcome.FAILED, "refused: the schedule's grant does not verify (it "
                       "was written to Redis without Pystol's key, or PYSTOL_SIGNING_KEY "
                       "changed); change or resume the schedule to grant it again")
        lapsed = self._owner_lapsed(stored)
        if lapsed is not None:
            log.warning("schedule %s: %s; not running it", stored.id, lapsed)
            return run(RunOutcome.FAILED, f"refused: {lapsed}; whoever may run it now can "
                       "change or resume the schedule to grant it again")
        too_often = self.schedules.period_problem(stored.spec, slot_ms)
        if too_often is not None:
            log.warning("schedule %s: %s; not running it", stored.id, too_often.msg)
            return run(RunOutcome.FAILED, f"refused by the admin policy: {too_often.loc} "
                       f"{too_often.msg}; change the schedule to run less often")
        if stored.spec.template is None:
            return self._start_experiment(stored, identity, slot_ms, run)
        spec = stored.spec.template.model_copy(
            update={"idempotency_key": idempotency_key(stored.id, slot_ms)})
        try:
            record, created = self.submissions.submit(spec, Source.SCHEDULE, identity,
                                                      schedule_id=stored.id)
        except JobInvalid as invalid:
            return run(RunOutcome.FAILED, f"the template is no longer valid: {invalid}")
        except (AccessDenied, PolicyRefused) as refused:
            return run(RunOutcome.FAILED, f"refused: {refused}")
        except ChaosHalted as halted:  # engaged since `decide` asked
            return run(RunOutcome.SKIPPED, str(halted), skipped=SkipReason.HALTED)
        except IdempotencyConflict as conflict:
            return run(RunOutcome.STARTED, "already started for this slot",
                       conflict.job_id or None)
        except QueueUnavailable as refused:
            return run(RunOutcome.FAILED, f"could not be queued: {refused.cause}",
                       refused.job_id)
        # Tracked for Forbid and Replace once queued; again on a redelivered fire (not
        # created), in case the first one died between queuing and this line.
        self.schedules.add_active(stored.id, record.id, slot_ms)
        if not created:
            return run(RunOutcome.STARTED, "already started for this slot", record.id)
        return run(RunOutcome.STARTED, f"replaced {', '.join(replaced)}" if replaced else "",
                   record.id)

    def _start_experiment(self, stored: StoredSchedule, identity: Identity, slot_ms: int,
                          run: Callable[..., ScheduleRun]) -> ScheduleRun:
        """A run of the schedule's experiment, on behalf of whoever last changed the
        schedule, with the schedule's sealed grant (the experiment service checks every
        step against it: a document changed since to touch more namespaces is refused)."""
        if self.experiments is None:
            return run(RunOutcome.FAILED, "this process cannot start experiments")
        name = stored.spec.experiment or ""
        try:
            xrun = self.experiments.start(name, Source.SCHEDULE, identity,
                                          idempotency_key=idempotency_key(stored.id, slot_ms),
                                          granted_digest=stored.experiment_digest)
        except ExperimentChanged as changed:
            return run(RunOutcome.FAILED, f"refused: {changed}")
        except ExperimentNotFound:
            return run(RunOutcome.FAILED, f"there is no experiment named {name!r} any more")
        except JobInvalid as invalid:
            return run(RunOutcome.FAILED, f"the experiment is no longer valid: {invalid}")
        except (AccessDenied, PolicyRefused) as refused:
            return run(RunOutcome.FAILED, f"refused: {refused}")
        except ChaosHalted as halted:
            return run(RunOutcome.SKIPPED, str(halted), skipped=SkipReason.HALTED)
        except IdempotencyConflict as conflict:
            return run(RunOutcome.STARTED, "already started for this slot",
                       conflict.job_id or None)
        self.schedules.add_active(stored.id, xrun.id, slot_ms)
        return run(RunOutcome.STARTED, f"experiment {name}", xrun.id)
