"""The schedule store and the fire task against fakeredis, with a clock the test moves.

No beat runs here: a fire is `ScheduleFirer.fire(id, fired_at=…, task_id=…)`, exactly what
the `pystol.fire_schedule` task calls with the time beat stamped on the message. What beat
reads is checked by loading the entry with redbeat's own `RedBeatSchedulerEntry` and
`RedBeatScheduler` on the same fake Redis.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import fakeredis
import pytest
from celery import Celery
from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry

from pystol_worker.core.model import JobStatus, Source
from pystol_worker.core.policy import Policy
from pystol_worker.core.schedule_model import (
    RunOutcome,
    ScheduleSpec,
    SkipReason,
    datetime_to_ms,
    is_allowed,
    ms_to_datetime,
)
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.jobs.validation import JobInvalid
from pystol_worker.schedules.firing import ScheduleFirer, idempotency_key
from pystol_worker.schedules.store import (
    FIRE_TASK,
    REDBEAT_SCHEDULE_KEY,
    ScheduleExists,
    ScheduleNotFound,
    ScheduleStore,
    configure_redbeat,
    entry_key,
)
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore
from tests.support.grants import ADMIN
from tests.support.manual_clock import ManualClock

T0 = datetime(2025, 6, 11, 10, 0, tzinfo=UTC).timestamp()  # a Wednesday, 10:00 UTC
TEMPLATE: dict[str, Any] = {"action": "pod-kill",
                            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}
#: These tests step through slots a few seconds apart; the default policy allows a
#: schedule no more often than once a minute (tested in test_authorization).
SHORT_PERIODS = Policy(min_schedule_period=0.1)


class ListQueue:
    """A JobQueue that appends what it is asked to queue to a list."""

    def __init__(self, sent: list[str]) -> None:
        self.sent = sent

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)


class RefusingQueue:
    """A JobQueue whose broker is down."""

    def send(self, job_id: str) -> None:
        raise ConnectionError("broker down")


def firer(store: ScheduleStore, queue: Any) -> ScheduleFirer:
    """A firer with the submission service a worker process builds, on the store's Redis."""
    return ScheduleFirer(store, SubmissionService(store.jobs, queue, store.registry,
                                                  store.settings, HaltSwitch(store.redis)))



@dataclass
class Env:
    redis: fakeredis.FakeRedis
    clock: ManualClock
    store: ScheduleStore
    firer: ScheduleFirer
    sent: list[str] = field(default_factory=list)
    tasks: int = 0

    @property
    def jobs(self) -> JobStore:
        return self.store.jobs

    def add(self, schedule_id: str = "s1", **fields: Any) -> Any:
        spec = ScheduleSpec.model_validate({"template": TEMPLATE, **fields})
        return self.store.create(spec, Source.API, ADMIN, schedule_id=schedule_id)

    def aimed(self, schedule_id: str = "s1") -> int:
        aimed = self.store.state(schedule_id).aimed
        assert aimed is not None
        return aimed

    def fire(self, schedule_id: str = "s1", at: float | None = None, lag: float = 0.003,
             task_id: str | None = None) -> Any:
        """A fire stamped `at` (default: the aimed slot plus beat's usual few ms), handled
        now (the clock is moved to the stamp first if it is behind)."""
        stamp = at if at is not None else self.aimed(schedule_id) / 1000 + lag
        self.clock.now = max(self.clock.now, stamp)
        self.tasks += 1
        return self.firer.fire(schedule_id, fired_at=stamp,
                               task_id=task_id or f"task-{self.tasks}")

    def runs(self, schedule_id: str = "s1") -> list[Any]:
        return self.store.get(schedule_id).last_runs


@pytest.fixture
def env() -> Iterator[Env]:
    client = fakeredis.FakeRedis()
    clock = ManualClock(T0)
    store = ScheduleStore(client, Settings(), clock=clock, rng=random.Random(7),
                          policy=SHORT_PERIODS)
    sent: list[str] = []
    yield Env(client, clock, store, firer(store, ListQueue(sent)), sent)


def redbeat_app(client: fakeredis.FakeRedis) -> Celery:
    app = configure_redbeat(Celery("test", set_as_current=False), Settings())
    app.redbeat_redis = client  # what redbeat.get_redis returns from now on
    return app


# -- the redbeat entry ---------------------------------------------------------------------


def test_create_aims_a_redbeat_entry_that_beat_reads(env: Env) -> None:
    env.add(interval="10s")
    entry = RedBeatSchedulerEntry.from_key(entry_key("s1"), app=redbeat_app(env.redis))
    assert (entry.task, entry.args, entry.options) == (FIRE_TASK, ["s1"],
                                                      {"queue": "pystol.jobs"})
    assert entry.enabled
    aimed = ms_to_datetime(env.aimed())
    assert aimed == ms_to_datetime(round(T0 * 1000)) + timedelta(seconds=10)  # one interval
    assert entry.last_run_at + entry.schedule.run_every == aimed
    assert env.redis.zscore(REDBEAT_SCHEDULE_KEY, entry_key("s1")) == math.floor(T0 + 10)


def test_redbeat_scheduler_finds_the_entry_due_at_the_slot() -> None:
    client = fakeredis.FakeRedis()
    # The real clock: beat compares with it.
    store = ScheduleStore(client, Settings(), policy=SHORT_PERIODS)
    spec = ScheduleSpec.model_validate({"interval": "1s", "template": TEMPLATE})
    store.create(spec, Source.API, ADMIN, schedule_id="live")
    app = redbeat_app(client)
    scheduler = RedBeatScheduler(app=app, lazy=True)
    entries = scheduler.schedule
    assert list(entries) == ["schedule:live"]
    due, wait = entries["schedule:live"].is_due()
    assert not due and 0.5 < wait <= 1.0
    time.sleep(wait + 0.05)
    due, _ = scheduler.schedule["schedule:live"].is_due()
    assert due


def test_short_gaps_let_beat_wake_before_the_slot(env: Env) -> None:
    env.add(interval="1s")  # the shortest interval there is (MIN_PERIOD_SECONDS)
    entry = RedBeatSchedulerEntry.from_key(entry_key("s1"), app=redbeat_app(env.redis))
    # Beat sleeps run_every after a fire: half the gap, so it never oversleeps the slot.
    assert entry.schedule.run_every == timedelta(seconds=0.5)
    assert entry.last_run_at + entry.schedule.run_every == ms_to_datetime(env.aimed())


def test_pause_disables_and_resume_reaims(env: Env) -> None:
    env.add(interval="10s")
    record = env.store.set_paused("s1", True, ADMIN)
    assert record.spec.paused and record.next_run_at is None
    app = redbeat_app(env.redis)
    assert not RedBeatSchedulerEntry.from_key(entry_key("s1"), app=app).enabled
    assert env.redis.zscore(REDBEAT_SCHEDULE_KEY, entry_key("s1")) == -1  # never loaded
    env.clock.now += 95
    record = env.store.set_paused("s1", False, ADMIN)
    assert RedBeatSchedulerEntry.from_key(entry_key("s1"), app=app).enabled
    # Anchored slots: created at T0, resumed at T0+95: next slot T0+100.
    assert record.next_run_at == ms_to_datetime(round((T0 + 100) * 1000))
    assert not env.runs()


def test_delete_removes_schedule_and_entry(env: Env) -> None:
    env.add(interval="10s")
    env.store.delete("s1", ADMIN)
    assert not env.redis.exists(entry_key("s1"))
    assert env.redis.zscore(REDBEAT_SCHEDULE_KEY, entry_key("s1")) is None
    assert env.store.list() == []
    with pytest.raises(ScheduleNotFound):
        env.store.get("s1")
    with pytest.raises(ScheduleNotFound):
        env.store.delete("s1", ADMIN)
    # A fire already on its way finds nothing, and makes sure beat forgets the entry.
    env.redis.hset(entry_key("s1"), "definition", "{}")
    assert env.firer.fire("s1", fired_at=T0 + 10).outcome == "gone"
    assert not env.redis.exists(entry_key("s1"))


def test_create_with_an_id_is_create_or_replace(env: Env) -> None:
    env.add(interval="10s")
    env.fire()
    first = env.store.get("s1")
    env.clock.now += 3
    replaced = env.add(interval="10s", concurrency_policy="Forbid")
    assert replaced.created_at == first.created_at and replaced.updated_at > first.updated_at
    assert replaced.spec.concurrency_policy == "Forbid"
    assert len(replaced.last_runs) == 1  # history kept
    assert env.aimed() == round((T0 + 20) * 1000)  # same timing: same anchor
    spec = ScheduleSpec.model_validate({"interval": "10s", "template": TEMPLATE})
    with pytest.raises(ScheduleExists):
        env.store.create(spec, Source.API, ADMIN, schedule_id="s1", replace=False)
    with pytest.raises(JobInvalid, match="id"):
        env.store.create(spec, Source.API, ADMIN, schedule_id="bad id!")
    assert [record.id for record in env.store.list()] == ["s1"]


def test_a_timing_change_reanchors_and_never_redecides_a_slot(env: Env) -> None:
    env.add(interval="10s")
    env.fire()  # slot T0+10
    env.clock.now = T0 + 13
    spec = ScheduleSpec.model_validate({"interval": "4s", "template": TEMPLATE})
    record = env.store.update("s1", spec, ADMIN)
    assert record.next_run_at == ms_to_datetime(round((T0 + 17) * 1000))
    env.store.update("s1", spec.model_copy(update={"history_limit": 5}), ADMIN)
    assert env.aimed() == round((T0 + 17) * 1000)  # no timing change: same slots


def test_validation_refuses_what_could_never_run(env: Env) -> None:
    with pytest.raises(JobInvalid) as caught:
        env.add(cron="0 3 * * *", windows=["09:00-17:00"],
                template={**TEMPLATE, "idempotency_key": "mine",
                          "target": {"namespaces": ["kube-system"]}})
    locs = {problem.loc for problem in caught.value.problems}
    assert locs == {"template.target.namespaces[0]", "template.idempotency_key", "windows"}
    with pytest.raises(JobInvalid, match="no-such-action"):
        env.add(interval="1m", template={**TEMPLATE, "action": "no-such-action"})


# -- firing --------------------------------------------------------------------------------


def test_each_slot_makes_one_job_with_a_slot_idempotency_key(env: Env) -> None:
    env.add(interval="2s", concurrency_policy="Allow")  # its jobs stay queued here
    slot = env.aimed()
    result = env.fire()
    assert result.outcome == "started" and result.slot_ms == slot
    job = env.jobs.get(result.job_id)
    # Submitted as the schedule, on behalf of whoever last changed it.
    assert (job.source, job.schedule_id, job.submitter) == (Source.SCHEDULE, "s1",
                                                          "schedule:s1")
    assert job.actor is not None and job.actor.on_behalf_of == "token-test"
    assert job.spec.idempotency_key == idempotency_key("s1", slot) == f"schedule:s1:{slot}"
    assert env.sent == [result.job_id]
    assert env.aimed() == slot + 2000
    # The same slot fired again (a beat that restarted and fired once more): nothing.
    assert env.fire(at=slot / 1000 + 0.2).outcome == "early"
    # The same fire delivered again (its worker died): the same job, not a second one.
    again = env.firer.fire("s1", fired_at=slot / 1000 + 0.003, task_id=f"task-{env.tasks - 1}")
    assert again.outcome == "started" and again.job_id == result.job_id
    assert env.sent == [result.job_id] and len(env.runs()) == 1
    # The next slot runs.
    following = env.fire()
    assert following.outcome == "started" and following.slot_ms == slot + 2000
    assert env.sent == [result.job_id, following.job_id]


@pytest.mark.parametrize(("timing", "said"), [
    ({"interval": "2s"}, "interval runs as often as every 2s"),
    ({"cron": "* * * * *"}, "cron runs as often as every 60s"),  # the gaps around its slot
])
def test_a_schedule_too_frequent_for_a_tightened_policy_stops_firing(
        env: Env, timing: dict[str, str], said: str) -> None:
    """The admin raises `min_schedule_period` after a schedule was stored (a new policy
    file, a restarted worker): its next fire is refused, not run at the old rate."""
    env.add(**timing, concurrency_policy="Allow")
    assert env.fire().outcome == "started"
    env.store.policy = Policy(min_schedule_period=120)
    refused = env.fire()
    assert refused.outcome == "failed" and refused.job_id is None
    assert said in refused.reason and "no more often than every 120s" in refused.reason
    assert len(env.sent) == 1  # nothing more was queued


def test_slots_without_a_fire_are_recorded_and_only_the_latest_runs(env: Env) -> None:
    env.add(interval="2s", concurrency_policy="Allow")  # its jobs stay queued here
    first = env.fire()
    # Beat is down from here; it restarts 7.5 s later and fires at once.
    result = env.fire(at=first.slot_ms / 1000 + 7.5)
    assert result.outcome == "started" and result.slot_ms == first.slot_ms + 6000
    newest, missed, oldest = env.runs()
    assert (missed.skipped, missed.count) == (SkipReason.NOT_FIRED, 2)
    assert missed.slot_at == ms_to_datetime(first.slot_ms + 2000)
    assert missed.last_slot_at == ms_to_datetime(first.slot_ms + 4000)
    assert newest.job_id == result.job_id and oldest.job_id == first.job_id
    assert env.aimed() == first.slot_ms + 8000


def test_starting_deadline_skips_a_late_run(env: Env) -> None:
    env.add(interval="2s", starting_deadline_seconds=1.5)
    slot = env.aimed()
    env.clock.now = slot / 1000 + 1.6  # the fire waited in the queue
    result = env.firer.fire("s1", fired_at=slot / 1000 + 0.003, task_id="late")
    assert result.outcome == "skipped" and result.skipped == SkipReason.MISSED_DEADLINE
    assert "1.6s after its time" in result.reason and not env.sent
    assert env.fire().outcome == "started"


def test_paused_halted_and_outside_window_are_skips(env: Env) -> None:
    env.add(interval="2s")
    env.store.set_paused("s1", True, ADMIN)
    slot = env.store.state("s1").aimed or 0
    paused = env.firer.fire("s1", fired_at=slot / 1000, task_id="racing")  # fired before
    assert paused.skipped == SkipReason.PAUSED
    env.store.set_paused("s1", False, ADMIN)
    HaltSwitch(env.redis).engage(env.jobs, "sre", "incident")
    halted = env.fire()
    assert halted.skipped == SkipReason.HALTED and "halted (by sre" in halted.reason
    HaltSwitch(env.redis).release()
    assert env.fire().outcome == "started"
    assert not env.jobs.list().items[0].spec.dry_run


def test_outside_window_records_once_and_jumps_to_the_opening(env: Env) -> None:
    # Berlin 12:00 on a Wednesday; chaos only on Thursdays from 09:00.
    env.add(interval="30m", time_zone="Europe/Berlin", windows=["thu 09:00-17:00"])
    result = env.fire()
    assert result.outcome == "skipped" and result.skipped == SkipReason.OUTSIDE_WINDOW
    assert "outside the windows (thu 09:00-17:00)" in result.reason
    opening = datetime(2025, 6, 12, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert env.aimed() == datetime_to_ms(opening)  # the anchor is at :00 and :30
    [run] = env.runs()
    assert run.count == 41  # 12:30 to 08:30 Berlin time: this slot and 40 more
    assert run.last_slot_at == opening - timedelta(minutes=30)
    assert env.store.get("s1").next_run_at == opening
    assert env.fire().outcome == "started"


def test_an_excluded_date_is_outside_the_window(env: Env) -> None:
    env.add(interval="1h", excluded_dates=["2025-06-11"])
    result = env.fire()
    assert result.skipped == SkipReason.OUTSIDE_WINDOW
    assert result.reason.startswith("2025-06-11 is an excluded date")
    assert env.aimed() == datetime_to_ms(datetime(2025, 6, 12, 0, 0, tzinfo=UTC))


def test_forbid_skips_while_the_previous_run_is_going(env: Env) -> None:
    env.add(interval="2s", concurrency_policy="Forbid")
    first = env.fire()
    env.jobs.claim(first.job_id, "worker-1")
    second = env.fire()
    assert second.skipped == SkipReason.FORBID
    assert f"previous run {first.job_id} is running" in second.reason
    env.jobs.finish(first.job_id, JobStatus.SUCCEEDED, "done")
    third = env.fire()
    assert third.outcome == "started"
    assert [run.outcome for run in env.runs()] == [RunOutcome.STARTED, RunOutcome.SKIPPED,
                                                    RunOutcome.STARTED]
    assert env.runs()[2].job_status == JobStatus.SUCCEEDED


def test_replace_aborts_the_previous_run_then_starts(env: Env) -> None:
    env.add(interval="2s", concurrency_policy="Replace")
    first = env.fire()
    env.jobs.claim(first.job_id, "worker-1")
    second = env.fire()
    assert second.outcome == "started"
    assert env.jobs.get(first.job_id).cancel_requested
    assert env.jobs.cancel_requested_by(first.job_id) == "schedule s1 (Replace)"
    assert env.runs()[0].replaced == [first.job_id]
    # The first is still reverting; only the second is asked to abort next time.
    third = env.fire()
    assert env.runs()[0].replaced == [second.job_id]  # a queued job is cancelled at once
    assert env.jobs.get(second.job_id).status == JobStatus.CANCELLED
    assert third.outcome == "started"


def test_allow_lets_runs_overlap(env: Env) -> None:
    env.add(interval="2s", concurrency_policy="Allow")
    first = env.fire()
    env.jobs.claim(first.job_id, "worker-1")
    assert env.fire().outcome == "started"
    assert env.jobs.get(first.job_id).status == JobStatus.RUNNING


def test_history_is_trimmed_and_repeated_skips_are_folded(env: Env) -> None:
    env.add(interval="2s", history_limit=3, concurrency_policy="Forbid")
    started = []
    for _ in range(4):
        started.append(env.fire())
        env.jobs.finish(started[-1].job_id, JobStatus.SUCCEEDED, "done")
    assert [run.job_id for run in env.runs()] == [r.job_id for r in started[:0:-1]]
    env.jobs.claim(env.fire().job_id, "w")
    skips = [env.fire() for _ in range(5)]
    assert all(skip.skipped == SkipReason.FORBID for skip in skips)
    newest = env.runs()[0]
    assert newest.count == 5 and newest.slot_at == ms_to_datetime(skips[0].slot_ms or 0)
    assert newest.last_slot_at == ms_to_datetime(skips[-1].slot_ms or 0)
    assert len(env.runs()) == 3


def test_a_job_that_cannot_be_queued_fails_the_run(env: Env) -> None:
    env.firer = firer(env.store, RefusingQueue())
    env.add(interval="2s")
    result = env.fire()
    assert result.outcome == "failed" and "broker down" in result.reason
    assert env.jobs.get(result.job_id).status == JobStatus.FAILED


def test_cron_fires_are_aimed_at_the_next_cron_time_in_the_zone(env: Env) -> None:
    env.add(cron="15 12,18 * * *", time_zone="Europe/Berlin")  # 10:15 and 16:15 UTC
    assert env.aimed() == datetime_to_ms(datetime(2025, 6, 11, 10, 15, tzinfo=UTC))
    assert env.fire().outcome == "started"
    assert env.aimed() == datetime_to_ms(datetime(2025, 6, 11, 16, 15, tzinfo=UTC))
    entry = RedBeatSchedulerEntry.from_key(entry_key("s1"), app=redbeat_app(env.redis))
    assert entry.last_run_at + entry.schedule.run_every == ms_to_datetime(env.aimed())


# -- mtbf ----------------------------------------------------------------------------------


def test_mtbf_gaps_are_exponential_with_the_mean() -> None:
    store = ScheduleStore(fakeredis.FakeRedis(), Settings(), rng=random.Random(2024))
    spec = ScheduleSpec.model_validate({"mtbf": "10m", "template": TEMPLATE})
    mean = 600_000
    gaps = []
    moment = 0
    for _ in range(5000):
        following = store.draw_mtbf(spec, moment)
        assert following is not None
        gaps.append(following - moment)
        moment = following
    assert statistics.fmean(gaps) == pytest.approx(mean, rel=0.05)
    assert statistics.pstdev(gaps) == pytest.approx(mean, rel=0.07)  # exponential: sd = mean
    beyond_mean = sum(gap > mean for gap in gaps) / len(gaps)
    assert beyond_mean == pytest.approx(math.exp(-1), abs=0.03)  # P(X > mean) = 1/e
    short = sum(gap < mean / 10 for gap in gaps) / len(gaps)
    assert short == pytest.approx(1 - math.exp(-0.1), abs=0.02)


def test_mtbf_draws_fall_inside_the_windows() -> None:
    store = ScheduleStore(fakeredis.FakeRedis(), Settings(), rng=random.Random(5))
    spec = ScheduleSpec.model_validate({"mtbf": "2h", "time_zone": "Europe/Berlin",
                                        "windows": ["mon-fri 09:00-17:00"],
                                        "template": TEMPLATE})
    moment = round(T0 * 1000)
    for _ in range(300):
        following = store.draw_mtbf(spec, moment)
        assert following is not None and following > moment
        assert is_allowed(spec, ms_to_datetime(following))
        moment = following


def test_mtbf_fires_at_the_drawn_times_and_redraws(env: Env) -> None:
    env.add(mtbf="30s", concurrency_policy="Allow")  # its jobs stay queued here
    slots = []
    for _ in range(20):
        aimed = env.aimed()
        result = env.fire()
        assert result.outcome == "started" and result.slot_ms == aimed
        slots.append(aimed)
        entry = RedBeatSchedulerEntry.from_key(entry_key("s1"), app=redbeat_app(env.redis))
        assert entry.last_run_at + entry.schedule.run_every == ms_to_datetime(env.aimed())
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    assert len(set(gaps)) == len(gaps) and all(gap > 0 for gap in gaps)
    # A stale fire before the drawn time decides nothing.
    assert env.fire(at=env.aimed() / 1000 - 5).outcome == "early"
