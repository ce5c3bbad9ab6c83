"""Schedules in Redis, and the celery-redbeat entry that makes beat fire each of them.

Layout (prefix `pystol:`):
- `schedule:{id}`           the stored schedule as JSON (spec, who, when, slot anchor)
- `schedules`               sorted set of schedule ids by creation time
- `schedule:{id}:state`     hash: `aimed` (the slot beat is aimed at, epoch ms),
                            `last_slot` (highest slot decided), `last_task` (the fire that
                            decided it)
- `schedule:{id}:runs`      list of ScheduleRun JSON, newest first, trimmed to history_limit
- `schedule:{id}:active`    hash job id -> slot of runs whose jobs may still be going
- `redbeat:schedule:{id}`   the redbeat entry (hash `definition` + `meta`), scored in the
                            zset `redbeat::schedule`, exactly as `redbeat.RedBeatScheduler`
                            reads them with `redbeat_key_prefix = "pystol:redbeat:"`

How beat is aimed. Redbeat persists only Celery's standard schedule types and no time zone
per entry, so every Pystol schedule is stored in redbeat as a plain interval entry aimed at
its next slot: `last_run_at + run_every = next slot`. Each fire (the task in
`schedule_firing`) decides its slot and aims the entry at the following one, in the same
transaction: for `interval` schedules that is simply the next anchored slot (`run_every`
stays the interval, so even an entry nobody re-aims keeps the right period); for `cron` the
next cron time computed in the schedule's zone with zoneinfo; for `mtbf` a fresh draw from
an exponential distribution of the mean. Writes to the entry go through this module only,
inside WATCH/MULTI transactions on the schedule, so a PATCH and a fire that race never leave
the entry aimed by a stale spec.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import json
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis
from celery import Celery
from celery.schedules import schedule as interval_schedule
from pydantic import BaseModel
from redbeat.decoder import RedBeatJSONEncoder

from pystol_worker.actions.registry import ActionRegistry, default_registry
from pystol_worker.core.access import (
    AccessDenied,
    Actor,
    ActorKind,
    Grant,
    GrantAuthority,
    Identity,
    Permission,
    is_sealed,
    seal,
)
from pystol_worker.core.experiment_model import ExperimentStatus, is_run_id
from pystol_worker.core.model import JobStatus, Source, utcnow
from pystol_worker.core.policy import Policy, load_policy
from pystol_worker.core.schedule_model import (
    ID_PATTERN,
    RunOutcome,
    ScheduleRecord,
    ScheduleRun,
    ScheduleSpec,
    datetime_to_ms,
    interval_ms,
    is_allowed,
    latest_slot_at_or_before,
    ms_to_datetime,
    next_allowed_slot,
    next_opening,
    next_slot_after,
    parse_cron,
)
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.service import (
    StoredExperiment,
    document_digest,
    experiment_grant,
)
from pystol_worker.experiments.store import ExperimentStore, StoredRunNotFound
from pystol_worker.jobs.authorization import PolicyRefused, grant_for, policy_problems
from pystol_worker.jobs.validation import FieldProblem, JobInvalid, validate_job
from pystol_worker.store.job_store import JobNotFound, JobStore
from pystol_worker.store.redis_connection import redbeat_options

PREFIX = "pystol:"
REDBEAT_KEY_PREFIX = "pystol:redbeat:"
REDBEAT_SCHEDULE_KEY = REDBEAT_KEY_PREFIX + ":schedule"  # as redbeat's RedBeatConfig makes it
FIRE_TASK = "pystol.fire_schedule"
FIRED_AT_HEADER = "pystol_fired_at"
BEAT_MAX_LOOP_INTERVAL = 1.0  # seconds; Celery's default lets beat sleep up to 300 s
ID_RE = re.compile(ID_PATTERN)


def configure_redbeat(app: Celery, settings: Settings) -> Celery:
    """Point redbeat at Pystol's Redis (password, TLS, Sentinel: `redis_connection`) and
    key prefix, and keep beat's sleeps short."""
    app.conf.update(
        **redbeat_options(settings, socket_keepalive=True, socket_connect_timeout=10),
        redbeat_key_prefix=REDBEAT_KEY_PREFIX,
        beat_max_loop_interval=BEAT_MAX_LOOP_INTERVAL,
        beat_scheduler="redbeat.RedBeatScheduler",
    )
    return app


def entry_name(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


def entry_key(schedule_id: str) -> str:
    return REDBEAT_KEY_PREFIX + entry_name(schedule_id)


class ScheduleNotFound(KeyError):
    pass


class ScheduleExists(Exception):
    """create(..., replace=False) for an id that is taken."""


def new_schedule_id() -> str:
    return "s-" + utcnow().strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)


def validate_schedule(spec: ScheduleSpec, registry: ActionRegistry, settings: Settings,
                      now: datetime | None = None) -> None:
    """JobInvalid with every problem: the template as `validate_job` sees it (paths under
    `template.`), and a schedule that could never run inside its windows."""
    problems: list[FieldProblem] = []
    if spec.template is not None:
        try:
            validate_job(spec.template, registry, settings)
        except JobInvalid as invalid:
            problems += [FieldProblem(f"template.{p.loc}", p.msg) for p in invalid.problems]
    if spec.template is not None and spec.template.idempotency_key is not None:
        problems.append(FieldProblem("template.idempotency_key", "each run gets its own "
                                     "idempotency key (schedule id + slot); remove this one"))
    moment = now or utcnow()
    if spec.kind == "mtbf":
        never = next_opening(spec, moment) is None
    else:
        now_ms = datetime_to_ms(moment)
        never = next_allowed_slot(spec, now_ms, now_ms) is None
    if never:
        where = "windows" if spec.windows else ("excluded_dates" if spec.excluded_dates
                                                else spec.kind)
        problems.append(FieldProblem(where, "the schedule would never run: no time in the "
                                     "next 400 days is both one of its slots and inside its "
                                     "windows and outside its excluded dates"))
    if problems:
        raise JobInvalid(problems)


class StoredSchedule(BaseModel):
    id: str
    spec: ScheduleSpec
    source: Source
    submitter: str
    created_at: datetime
    updated_at: datetime
    anchor_ms: int
    changed_by: Actor | None = None  # whoever last created, changed, paused or resumed it
    grant: Grant | None = None       # what changed_by allowed its runs, sealed
    #: A schedule of an experiment: the digest of the document as its grant was made
    #: (`document_digest`); a fire finding another document is refused.
    experiment_digest: str | None = None

    def sealed_payload(self, grant: Grant) -> bytes:
        """What a schedule's seal covers: its id, its whole spec (template, timing, windows,
        paused, concurrency policy), who last changed it and, for an experiment, the
        document it was granted for, so that nothing of it can be changed in Redis, not
        even how often it runs."""
        covered: dict[str, Any] = {"schedule": self.spec.model_dump(mode="json"),
                                   "changed_by": self.changed_by.submitter
                                   if self.changed_by else None}
        if self.experiment_digest is not None:
            covered["experiment_digest"] = self.experiment_digest
        return grant.payload(self.id, covered)

    def sealed(self, key: bytes) -> StoredSchedule:
        """This schedule with its grant sealed (no grant: unchanged)."""
        if self.grant is None:
            return self
        signature = seal(key, self.sealed_payload(self.grant))
        return self.model_copy(update={"grant": self.grant.model_copy(
            update={"signature": signature})})

    def identity(self, key: bytes) -> Identity | None:
        """Who its runs are submitted as: the schedule, on behalf of whoever last changed
        it, with the authority of the sealed grant; None when the grant does not verify
        (the schedule was written or changed in Redis by someone without the key)."""
        grant = self.grant
        if grant is None or not is_sealed(key, self.sealed_payload(grant), grant.signature):
            return None
        actor = Actor(kind=ActorKind.SCHEDULE, name=self.id,
                      on_behalf_of=self.changed_by.submitter if self.changed_by else None,
                      namespaces=list(grant.namespaces))
        return Identity(actor, GrantAuthority(grant))


@dataclass
class ScheduleState:
    aimed: int | None
    last_slot: int | None
    last_task: str | None


def _int(value: Any) -> int | None:
    if value is None or value in (b"", ""):
        return None
    return int(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


DAY_MS = 86_400_000


@functools.lru_cache(maxsize=256)
def _shortest_cron_gap_of(cron: str, time_zone: str, day_ms: int) -> float | None:
    """The smallest gap between a cron's next 500 slots from `day_ms` (a week of
    `* * * * *` is 10,080; 500 finds every-minute, every-5-minutes and hourly patterns
    alike). One walk over the days costs a few milliseconds; a schedule's create and every
    change ask it, so it is also cached per expression, zone and day: the gaps change only
    with DST, which the day catches. Fires ask only the gaps around their slot
    (`_gap_around`)."""
    expression, zone = parse_cron(cron), ZoneInfo(time_zone)
    slots = list(itertools.islice(expression.slots_after(ms_to_datetime(day_ms), zone), 500))
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(slots)]
    return min(gaps) if gaps else None


def _gap_around(spec: ScheduleSpec, slot_ms: int) -> float | None:
    """The shorter of the gaps between a cron slot and the slots just before and after."""
    before = latest_slot_at_or_before(spec, slot_ms, slot_ms - 1)
    after = next_slot_after(spec, slot_ms, slot_ms)
    gaps = [slot_ms - before if before is not None else None,
            after - slot_ms if after is not None else None]
    known = [gap for gap in gaps if gap is not None]
    return min(known) / 1000 if known else None


class ScheduleStore:
    """Create, read, change and delete schedules; every change keeps the redbeat entry in
    sync. `registry` validates templates (default: the installed actions); `clock` (epoch
    seconds) and `rng` (mtbf draws) are there for tests."""

    def __init__(self, redis_client: redis.Redis, settings: Settings, *,
                 registry: ActionRegistry | None = None,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, policy: Policy | None = None) -> None:
        self.redis = redis_client
        self.settings = settings
        self.policy = policy if policy is not None else load_policy(settings.policy_file)
        self._registry = registry
        self.clock = clock
        self.rng = rng or random.Random()
        self.jobs = JobStore(redis_client, retention_seconds=settings.job_retention_seconds)

    @property
    def registry(self) -> ActionRegistry:
        if self._registry is None:
            self._registry = default_registry()
        return self._registry

    # -- keys -----------------------------------------------------------------------------

    @staticmethod
    def key(schedule_id: str) -> str:
        return f"{PREFIX}schedule:{schedule_id}"

    @classmethod
    def state_key(cls, schedule_id: str) -> str:
        return cls.key(schedule_id) + ":state"

    @classmethod
    def runs_key(cls, schedule_id: str) -> str:
        return cls.key(schedule_id) + ":runs"

    @classmethod
    def active_key(cls, schedule_id: str) -> str:
        return cls.key(schedule_id) + ":active"

    INDEX = PREFIX + "schedules"

    # -- public API -----------------------------------------------------------------------

    def create(self, spec: ScheduleSpec, source: Source, identity: Identity,
               schedule_id: str | None = None, *, replace: bool = True) -> ScheduleRecord:
        """Store a schedule for `identity` and aim beat at its first slot. With the id of an
        existing schedule: replace its spec (keeping its history), or ScheduleExists if not
        `replace`. Raises JobInvalid, AccessDenied (the identity may not create schedules
        or submit the template's jobs there) or PolicyRefused."""
        if schedule_id is not None and not ID_RE.match(schedule_id):
            raise JobInvalid([FieldProblem("id", "expected 1-150 letters, digits, '.', '_', "
                                                 "':' or '-', starting with a letter or digit")])
        validate_schedule(spec, self.registry, self.settings, ms_to_datetime(self._now_ms()))
        schedule_id = schedule_id or new_schedule_id()
        grant, digest = self._grant(spec, identity, Permission.SCHEDULES_CREATE)
        submitter = identity.actor.submitter
        key = self.settings.signing_key_bytes

        def build(existing: StoredSchedule | None, now: datetime) -> StoredSchedule:
            if existing is not None and not replace:
                raise ScheduleExists(schedule_id)
            if existing is None:
                return StoredSchedule(id=schedule_id, spec=spec, source=source,
                                      submitter=submitter, created_at=now, updated_at=now,
                                      anchor_ms=datetime_to_ms(now),
                                      changed_by=identity.actor, grant=grant,
                                      experiment_digest=digest).sealed(key)
            self._require(existing.spec, identity, Permission.SCHEDULES_UPDATE, existing)
            anchor = existing.anchor_ms if existing.spec.timing() == spec.timing() \
                else datetime_to_ms(now)
            return existing.model_copy(update={"spec": spec, "source": source,
                                               "submitter": submitter, "updated_at": now,
                                               "anchor_ms": anchor, "changed_by": identity.actor,
                                               "grant": grant,
                                               "experiment_digest": digest}).sealed(key)
        return self._write(schedule_id, build, creating=True)

    # -- who may ------------------------------------------------------------------------------

    def _require(self, spec: ScheduleSpec, identity: Identity, permission: Permission,
                 stored: StoredSchedule | None = None) -> None:
        """AccessDenied unless `identity` has `permission` where the schedule acts: each of
        the template's namespaces (cluster scope when it names none), or each namespace of
        the experiment (its document now, or as granted to a stored schedule)."""
        who = identity.actor.submitter
        checks: list[tuple[str | None, str]]
        if spec.template is not None:
            checks = [(namespace, f"template.target.namespaces[{index}]")
                      for index, namespace in enumerate(spec.template.target.namespaces)] \
                or [(None, "template.action")]
        else:
            if stored is not None and stored.spec == spec and stored.grant is not None:
                namespaces = list(stored.grant.namespaces)
            else:
                namespaces = self._experiment(spec).namespaces
            checks = [(namespace, "experiment") for namespace in namespaces] \
                or [(None, "experiment")]
        for namespace, loc in checks:
            if not identity.authority.allows(permission, namespace):
                where = f"in namespace {namespace!r}" if namespace else "at cluster scope"
                raise AccessDenied(f"{who} may not {permission.value} {where}", loc=loc,
                                   permission=permission, namespace=namespace)

    def _grant(self, spec: ScheduleSpec, identity: Identity, permission: Permission
               ) -> tuple[Grant, str | None]:
        """The template's grant for `identity` (sealed with the schedule when it is
        stored); AccessDenied or PolicyRefused (field paths under `template.`; windows are
        checked at each run)."""
        if spec.template is not None and spec.template.experiment is not None:
            # Engine-only (it links a step job to its experiment run): the submission
            # refuses it from a schedule at every fire, so refuse it here, once, by name.
            raise JobInvalid([FieldProblem("template.experiment", "set only by the "
                                           "experiment engine for its step jobs; a "
                                           "schedule of an experiment names it in "
                                           "`experiment` instead")])
        self._require(spec, identity, permission)
        if spec.template is None:
            return self._experiment_grant(spec, identity)
        action, params = validate_job(spec.template, self.registry, self.settings)
        try:
            grant = grant_for(spec.template, action, params, identity, self.policy)
        except AccessDenied as denied:
            denied.loc = f"template.{denied.loc}" if denied.loc else None
            raise
        problems = [FieldProblem(f"template.{p.loc}", p.msg)
                    for p in policy_problems(spec.template, action, params, self.policy,
                                             self.now(), settings=self.settings)
                    if p.loc != "policy.windows"]
        too_often = self.period_problem(spec)
        if too_often is not None:
            problems.append(too_often)
        if problems:
            raise PolicyRefused(problems)
        return grant, None

    def _experiment(self, spec: ScheduleSpec) -> StoredExperiment:
        """The stored experiment a schedule names; JobInvalid at `experiment` if none."""
        raw = ExperimentStore(self.redis).get_document(spec.experiment or "")
        try:
            if raw is not None:
                return StoredExperiment.model_validate_json(raw)
        except ValueError:
            pass
        raise JobInvalid([FieldProblem("experiment", f"there is no experiment named "
                                                     f"{spec.experiment!r}")])

    def _experiment_grant(self, spec: ScheduleSpec, identity: Identity
                          ) -> tuple[Grant, str | None]:
        """What the experiment's runs may do, checked as a start would check it now (every
        step's job, every namespace its steps and probes touch, the admin policy), plus
        the admin policy's shortest schedule period; and the digest of the document so
        checked, which the schedule seals (its fires run exactly that document)."""
        stored = self._experiment(spec)
        grant = experiment_grant(stored.spec, identity, registry=self.registry,
                                 settings=self.settings, policy=self.policy, now=self.now())
        too_often = self.period_problem(spec)
        if too_often is not None:
            raise PolicyRefused([too_often])
        return grant, document_digest(stored.spec)

    def period_problem(self, spec: ScheduleSpec,
                       slot_ms: int | None = None) -> FieldProblem | None:
        """The problem when `spec` runs more often than the admin policy's shortest schedule
        period allows, or None. Checked when a schedule is created or changed (over its
        next 500 slots), and again at every fire (`slot_ms`: the gaps to the slots before
        and after this one, two cron steps instead of 500), so a policy tightened later
        holds for schedules stored before, without letting many cron schedules make every
        fire expensive."""
        shortest = (self._shortest_gap(spec) if slot_ms is None or spec.cron is None
                    else _gap_around(spec, slot_ms))
        if shortest is None or shortest >= self.policy.min_schedule_period:
            return None
        return FieldProblem(spec.kind, f"runs as often as every {shortest:g}s; the admin "
                            "policy allows schedules no more often than every "
                            f"{self.policy.min_schedule_period:g}s")

    def _shortest_gap(self, spec: ScheduleSpec) -> float | None:
        """The shortest time between two runs: the interval, the mtbf's mean, or for cron
        the smallest gap between its next 500 slots."""
        if spec.interval is not None:
            return spec.interval
        if spec.mtbf is not None:
            return spec.mtbf
        day_ms = self._now_ms() // DAY_MS * DAY_MS
        return _shortest_cron_gap_of(spec.cron or "", spec.time_zone, day_ms)

    def get(self, schedule_id: str) -> ScheduleRecord:
        stored = self._load(schedule_id)
        return self._record(stored, self.state(schedule_id))

    def exists(self, schedule_id: str) -> bool:
        return bool(self.redis.exists(self.key(schedule_id)))

    def list(self) -> list[ScheduleRecord]:
        """Every schedule, oldest first."""
        records = []
        for member in self.redis.zrange(self.INDEX, 0, -1):
            try:
                records.append(self.get(_text(member) or ""))
            except ScheduleNotFound:
                continue
        return records

    def update(self, schedule_id: str, spec: ScheduleSpec, identity: Identity
               ) -> ScheduleRecord:
        """Replace the spec; a change of timing re-anchors the slots at now. `identity` needs
        schedules.update where the schedule acts now and where it will act; its runs are
        then submitted on the new changer's behalf."""
        validate_schedule(spec, self.registry, self.settings, ms_to_datetime(self._now_ms()))
        grant, digest = self._grant(spec, identity, Permission.SCHEDULES_UPDATE)
        key = self.settings.signing_key_bytes

        def build(existing: StoredSchedule | None, now: datetime) -> StoredSchedule:
            if existing is None:
                raise ScheduleNotFound(schedule_id)
            self._require(existing.spec, identity, Permission.SCHEDULES_UPDATE, existing)
            anchor = existing.anchor_ms if existing.spec.timing() == spec.timing() \
                else datetime_to_ms(now)
            return existing.model_copy(update={"spec": spec, "updated_at": now,
                                               "anchor_ms": anchor,
                                               "changed_by": identity.actor,
                                               "grant": grant,
                                               "experiment_digest": digest}).sealed(key)
        return self._write(schedule_id, build)

    def set_paused(self, schedule_id: str, paused: bool, identity: Identity) -> ScheduleRecord:
        """Pause or resume. Resuming grants the runs anew for `identity` (who then owns
        them). Pausing keeps the owner and their grant, re-sealed over the paused spec — but
        only a grant that verifies: one forged in Redis is dropped, not laundered."""
        key = self.settings.signing_key_bytes

        def build(existing: StoredSchedule | None, now: datetime) -> StoredSchedule:
            if existing is None:
                raise ScheduleNotFound(schedule_id)
            self._require(existing.spec, identity, Permission.SCHEDULES_UPDATE, existing)
            spec = existing.spec.model_copy(update={"paused": paused})
            update: dict[str, Any] = {"spec": spec, "updated_at": now}
            if not paused:
                update["grant"], update["experiment_digest"] = self._grant(
                    spec, identity, Permission.SCHEDULES_UPDATE)
                update["changed_by"] = identity.actor
            elif existing.identity(key) is None:
                update["grant"] = None
            return existing.model_copy(update=update).sealed(key)
        return self._write(schedule_id, build)

    def delete(self, schedule_id: str, identity: Identity | None = None) -> None:
        """Delete a schedule (and its history); with `identity`, AccessDenied unless it may
        delete schedules where this one acts (None: the caller already checked, e.g. the
        watcher deleting the schedule of a custom resource that is gone)."""
        if identity is not None:
            loaded = self._load(schedule_id)
            self._require(loaded.spec, identity, Permission.SCHEDULES_DELETE, loaded)
        if not self.exists(schedule_id):
            raise ScheduleNotFound(schedule_id)
        with self.redis.pipeline() as pipe:
            pipe.delete(self.key(schedule_id), self.state_key(schedule_id),
                        self.runs_key(schedule_id), self.active_key(schedule_id),
                        entry_key(schedule_id))
            pipe.zrem(self.INDEX, schedule_id)
            pipe.zrem(REDBEAT_SCHEDULE_KEY, entry_key(schedule_id))
            pipe.execute()

    # -- reading ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def now(self) -> datetime:
        return ms_to_datetime(self._now_ms())

    def _load(self, schedule_id: str, client: Any = None) -> StoredSchedule:
        raw = (client or self.redis).get(self.key(schedule_id))
        if raw is None:
            raise ScheduleNotFound(schedule_id)
        return StoredSchedule.model_validate_json(raw)

    def state(self, schedule_id: str, client: Any = None) -> ScheduleState:
        values = (client or self.redis).hmget(self.state_key(schedule_id),
                                              ["aimed", "last_slot", "last_task"])
        return ScheduleState(_int(values[0]), _int(values[1]), _text(values[2]))

    def runs(self, schedule_id: str) -> builtins.list[ScheduleRun]:  # `list` is a method here
        raw = self.redis.lrange(self.runs_key(schedule_id), 0, -1)
        runs = [ScheduleRun.model_validate_json(item) for item in raw]
        ids = [run.job_id for run in runs if run.job_id]
        if ids:
            with self.redis.pipeline() as pipe:
                for job_id in ids:
                    pipe.get(JobStore._key(job_id))
                found = dict(zip(ids, pipe.execute(), strict=True))
            for run in runs:
                raw_job = found.get(run.job_id or "")
                if raw_job is not None:
                    run.job_status = JobStatus(json.loads(raw_job)["status"])
        return runs

    def next_run_ms(self, stored: StoredSchedule, state: ScheduleState) -> int | None:
        spec = stored.spec
        if spec.paused:
            return None
        if spec.kind == "mtbf":
            return state.aimed
        after = max(self._now_ms(), state.last_slot or 0)
        if state.aimed is not None and state.aimed > after - 1000 and \
                is_allowed(spec, ms_to_datetime(state.aimed)):
            return state.aimed
        return next_allowed_slot(spec, stored.anchor_ms, after)

    def _record(self, stored: StoredSchedule, state: ScheduleState) -> ScheduleRecord:
        next_ms = self.next_run_ms(stored, state)
        return ScheduleRecord(id=stored.id, spec=stored.spec, source=stored.source,
                              submitter=stored.submitter, changed_by=stored.changed_by,
                              created_at=stored.created_at,
                              updated_at=stored.updated_at,
                              next_run_at=None if next_ms is None else ms_to_datetime(next_ms),
                              last_runs=self.runs(stored.id),
                              namespaces=stored.spec.namespaces() if stored.spec.template
                              else list(stored.grant.namespaces if stored.grant else []))

    # -- writing ------------------------------------------------------------------------------

    def _write(self, schedule_id: str,
               build: Callable[[StoredSchedule | None, datetime], StoredSchedule],
               creating: bool = False) -> ScheduleRecord:
        key, state_key = self.key(schedule_id), self.state_key(schedule_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, state_key)
                    raw = pipe.get(key)
                    existing = StoredSchedule.model_validate_json(raw) if raw else None
                    now_ms = self._now_ms()
                    stored = build(existing, ms_to_datetime(now_ms))
                    state = self.state(schedule_id, pipe)
                    aimed = self.first_aim(stored, state, existing, now_ms)
                    pipe.multi()
                    pipe.set(key, stored.model_dump_json())
                    if existing is None:
                        pipe.zadd(self.INDEX, {schedule_id: now_ms})
                    if aimed is not None:
                        pipe.hset(state_key, "aimed", aimed)
                    else:
                        pipe.hdel(state_key, "aimed")
                    self.write_entry(pipe, stored, aimed, base_ms=now_ms)
                    pipe.execute()
                    return self._record(stored, self.state(schedule_id))
                except redis.WatchError:
                    continue

    def first_aim(self, stored: StoredSchedule, state: ScheduleState,
                  before: StoredSchedule | None, now_ms: int) -> int | None:
        """The slot beat should fire next after a create or a change: the first slot after
        both now and the last one decided (never one already decided)."""
        spec = stored.spec
        after = max(now_ms, state.last_slot or 0)
        if spec.kind == "mtbf":
            unchanged = before is not None and before.spec.timing() == spec.timing() \
                and before.spec.windows == spec.windows \
                and before.spec.excluded_dates == spec.excluded_dates
            if unchanged and state.aimed is not None and state.aimed > after:
                return state.aimed
            return self.draw_mtbf(spec, after)
        return next_slot_after(spec, stored.anchor_ms, after)

    def draw_mtbf(self, spec: ScheduleSpec, from_ms: int, now_ms: int | None = None
                  ) -> int | None:
        """The next event of a Poisson process with mean gap `mtbf`, counted in allowed
        time only: a gap that ends outside the windows restarts at the next opening (the
        exponential is memoryless, so this is the same process with the closed hours cut
        out). Events that fall before `now_ms` (a fire handled late) are passed over."""
        mean_ms = (spec.mtbf or 1.0) * 1000
        moment = from_ms
        for _ in range(100_000):
            moment = moment + max(1, round(self.rng.expovariate(1.0 / mean_ms)))
            if now_ms is not None and moment < now_ms:
                continue
            when = ms_to_datetime(moment)
            if is_allowed(spec, when):
                return moment
            opening = next_opening(spec, when)
            if opening is None:
                return None
            moment = datetime_to_ms(opening)
        return None

    def write_entry(self, pipe: Any, stored: StoredSchedule, aimed: int | None,
                    base_ms: int) -> None:
        """Queue the commands that aim the redbeat entry at `aimed` (disabled while paused
        or when there is no next slot). `base_ms` is the time the gap is counted from (the
        slot just fired, or now); interval schedules always use their interval."""
        spec = stored.spec
        key = entry_key(stored.id)
        enabled = not spec.paused and aimed is not None
        if aimed is None:
            aimed = base_ms + 86_400_000
        gap_ms = interval_ms(spec) if spec.interval is not None else max(1, aimed - base_ms)
        # After firing an entry, beat sleeps its `run_every` (at most beat_max_loop_interval)
        # before it looks again. For gaps that short, half the gap makes it wake before the
        # next slot and then sleep exactly until it, instead of firing late by its own
        # overhead every time (lateness that would add up slot after slot).
        if gap_ms <= 2 * BEAT_MAX_LOOP_INTERVAL * 1000:
            gap_ms = max(1, gap_ms // 2)
        last_run_at = ms_to_datetime(aimed - gap_ms)
        definition = {
            "name": entry_name(stored.id),
            "task": FIRE_TASK,
            "args": [stored.id],
            "kwargs": {},
            "options": {"queue": self.settings.queue},
            "schedule": interval_schedule(run_every=timedelta(milliseconds=gap_ms)),
            "enabled": enabled,
        }
        meta = {"last_run_at": last_run_at, "total_run_count": 0}
        pipe.hset(key, mapping={"definition": json.dumps(definition, cls=RedBeatJSONEncoder),
                                "meta": json.dumps(meta, cls=RedBeatJSONEncoder)})
        # redbeat scores whole seconds (floor) and skips negative scores on every tick.
        pipe.zadd(REDBEAT_SCHEDULE_KEY, {key: aimed // 1000 if enabled else -1})

    # -- used by the fire task ---------------------------------------------------------------

    def record_run(self, schedule_id: str, run: ScheduleRun, history_limit: int) -> None:
        """Add a run to the history (newest first, trimmed); a skip for the same reason as
        the newest entry is folded into it, and a repeat of the same slot is dropped."""
        key = self.runs_key(schedule_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    head_raw = pipe.lindex(key, 0)
                    head = ScheduleRun.model_validate_json(head_raw) if head_raw else None
                    pipe.multi()
                    if head is not None and head.outcome == run.outcome \
                            and head.skipped == run.skipped \
                            and run.slot_at in (head.slot_at, head.last_slot_at):
                        pipe.execute()  # the same slot decided twice (a redelivered fire)
                        return
                    if head is not None and run.outcome == RunOutcome.SKIPPED \
                            and head.outcome == RunOutcome.SKIPPED \
                            and head.skipped == run.skipped:
                        merged = head.model_copy(update={
                            "count": head.count + run.count,
                            "last_slot_at": run.last_slot_at or run.slot_at,
                            "ended_at": run.ended_at, "reason": run.reason,
                            "started_at": run.started_at})
                        pipe.lset(key, 0, merged.model_dump_json())
                    else:
                        pipe.lpush(key, run.model_dump_json())
                    pipe.ltrim(key, 0, history_limit - 1)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def add_active(self, schedule_id: str, job_id: str, slot_ms: int) -> None:
        self.redis.hset(self.active_key(schedule_id), job_id, slot_ms)

    def active_jobs(self, schedule_id: str) -> dict[str, tuple[int, JobStatus]]:
        """Runs whose jobs have not ended: job id -> (slot, status); forgets ended ones."""
        key = self.active_key(schedule_id)
        found: dict[str, tuple[int, JobStatus]] = {}
        ended = []
        for raw_id, raw_slot in self.redis.hgetall(key).items():
            job_id = _text(raw_id) or ""
            try:
                status = self._run_status(job_id) if is_run_id(job_id) else \
                    self.jobs.get(job_id, with_timeline=False).status
            except (JobNotFound, StoredRunNotFound):
                ended.append(job_id)
                continue
            if status.terminal:
                ended.append(job_id)
            else:
                found[job_id] = (int(raw_slot), status)
        if ended:
            self.redis.hdel(key, *ended)
        return found

    def _run_status(self, run_id: str) -> JobStatus:
        """An experiment run's state in the terms of `active_jobs`: queued, running, or
        ended (any terminal state)."""
        run = ExperimentStore(self.redis).get_run(run_id)
        if run.status.terminal:
            return JobStatus.SUCCEEDED
        return JobStatus.QUEUED if run.status == ExperimentStatus.QUEUED \
            else JobStatus.RUNNING

    def remove_stale_entry(self, schedule_id: str) -> None:
        """A fire for a schedule that no longer exists: make sure beat forgets it."""
        with self.redis.pipeline() as pipe:
            pipe.zrem(REDBEAT_SCHEDULE_KEY, entry_key(schedule_id))
            pipe.delete(entry_key(schedule_id))
            pipe.execute()
