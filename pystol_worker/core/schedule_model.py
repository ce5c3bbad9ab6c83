"""Schedules: what a schedule is (the model) and when it runs (pure time arithmetic).

A schedule runs a job template, or a stored experiment (by name), at times given by
exactly one of:

- `cron`: a five-field cron expression (Vixie cron syntax: lists, ranges, steps, month and
  weekday names, `@daily`-style macros) read in the schedule's `time_zone`;
- `interval`: a fixed period, the slots anchored on the moment the timing was set
  (`anchor + k·interval`, so runs never drift);
- `mtbf`: a mean time between failures, kube-monkey style: runs at random times whose
  gaps are exponentially distributed with that mean (a Poisson process).

Optional `windows` (weekdays and hours) and `excluded_dates`, both in the schedule's time
zone, say when chaos is allowed at all: a run whose time falls outside is skipped and
recorded as such, never moved.

Everything here is pure (no Redis, no clock): times go in as arguments, in UTC. Slots are
identified by integer milliseconds since the epoch, so a slot compares exactly and makes a
stable idempotency key.

Cron semantics, as in Vixie cron and Kubernetes CronJobs: when both day-of-month and
day-of-week are restricted (neither starts with `*`), a day matches if either matches.
Around daylight-saving changes a local time that does not exist (spring forward) is
skipped, and one that happens twice (fall back) runs once, at its first occurrence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from pystol_worker.core.access import Actor
from pystol_worker.core.model import (
    Duration,
    JobSpec,
    JobStatus,
    Run,
    Source,
    format_duration,
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# The hard floor of a schedule's interval or mean time between failures, whatever the admin
# policy's `min_schedule_period` (default 1 minute) allows: a schedule is a queue producer
# nobody watches, and one firing 10 times a second fills the queue and the job store.
MIN_PERIOD_SECONDS = 1.0
MAX_PERIOD_SECONDS = 366 * 86400
SEARCH_DAYS = 400  # how far ahead window openings and allowed slots are searched
CRON_SEARCH_DAYS = 8 * 366 + 2  # a 29 February that is also a given weekday recurs within 28y
HHMM = re.compile(r"^(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)$")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,149}$"


# -- cron --------------------------------------------------------------------------------

CRON_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
               "dec")
CRON_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names for lowest.. )
CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 7, CRON_DOW_NAMES),
)


class CronError(ValueError):
    pass


def _cron_value(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + low
    if not text.isdigit():
        hint = f" or a name ({names[0]}…{names[-1]})" if names else ""
        raise CronError(f"{field} field: {text!r} is not a number{hint}")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{field} field: {value} is out of range {low}-{high}")
    return value


def _cron_field(text: str, index: int) -> frozenset[int]:
    field, low, high, names = CRON_FIELDS[index]
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{field} field: empty list item in {text!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field} field: step {step_text!r} must be a whole number "
                                "of at least 1")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _cron_value(first, field, low, high, names)
            end = _cron_value(last, field, low, high, names)
            if end < start:
                raise CronError(f"{field} field: range {base!r} runs backwards")
        else:
            start = _cron_value(base, field, low, high, names)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:  # 7 is Sunday too
        values = (values - {7}) | {0}
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed five-field cron expression; weekdays are cron's (0 = Sunday)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    dom_restricted: bool
    dow_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        expanded = text.strip()
        if expanded.startswith("@"):
            macro = expanded.lower()
            if macro not in CRON_MACROS:
                hint = " (use `interval` for fixed periods)" if macro.startswith("@every") \
                    else ""
                raise CronError(f"unknown macro {expanded!r}{hint}; known: "
                                + ", ".join(CRON_MACROS))
            expanded = CRON_MACROS[macro]
        parts = expanded.split()
        if len(parts) != 5:
            raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), "
                            f"got {len(parts)}")
        sets = [_cron_field(part, index) for index, part in enumerate(parts)]
        return cls(text=text, minutes=tuple(sorted(sets[0])), hours=tuple(sorted(sets[1])),
                   days=sets[2], months=sets[3], weekdays=sets[4],
                   dom_restricted=not parts[2].startswith("*"),
                   dow_restricted=not parts[4].startswith("*"))

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.dom_restricted and self.dow_restricted:
            return dom or dow
        return dom and dow

    def _day_times(self, day: date, zone: ZoneInfo, reverse: bool, near: datetime
                   ) -> Iterator[datetime]:
        """This day's fire times (UTC) in order (or reverse order), skipping local times
        that do not exist; on the local day of `near`, starting two hours from it."""
        local_near = near.astimezone(zone)
        hours = self.hours[::-1] if reverse else self.hours
        minutes = self.minutes[::-1] if reverse else self.minutes
        for hour in hours:
            if day == local_near.date() and (
                    (not reverse and hour < local_near.hour - 2)
                    or (reverse and hour > local_near.hour + 2)):
                continue
            for minute in minutes:
                local = datetime.combine(day, time(hour, minute), tzinfo=zone)
                utc = local.astimezone(UTC)
                if utc.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
                    continue  # in a spring-forward gap
                yield utc

    def next_after(self, after: datetime, zone: ZoneInfo) -> datetime | None:
        """The first fire time strictly after `after` (UTC), within SEARCH_DAYS days."""
        return next(self.slots_after(after, zone), None)

    def slots_after(self, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
        """The fire times strictly after `after` (UTC), in order, within SEARCH_DAYS days.

        One walk over the days: asking `next_after` 500 times instead started each search
        again from the day before, and cost 0.76 s of API CPU for `* * * * *`, which any
        operator could spend per request by varying the expression."""
        day = after.astimezone(zone).date() - timedelta(days=1)
        for _ in range(CRON_SEARCH_DAYS):
            day_end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
            if self.matches_day(day) and day_end.astimezone(UTC) + timedelta(hours=3) > after:
                for moment in self._day_times(day, zone, reverse=False, near=after):
                    if moment > after:
                        yield moment
            day += timedelta(days=1)

    def latest_at_or_before(self, when: datetime, zone: ZoneInfo) -> datetime | None:
        day = when.astimezone(zone).date() + timedelta(days=1)
        for _ in range(CRON_SEARCH_DAYS):
            day_start = datetime.combine(day, time(), tzinfo=zone)
            if self.matches_day(day) and day_start.astimezone(UTC) - timedelta(hours=3) <= when:
                for moment in self._day_times(day, zone, reverse=True, near=when):
                    if moment <= when:
                        return moment
            day -= timedelta(days=1)
        return None


@lru_cache(maxsize=256)
def parse_cron(text: str) -> CronExpression:
    return CronExpression.parse(text)


# -- the model ---------------------------------------------------------------------------


def _parse_days(value: Any) -> Any:
    """`"mon-fri"`, `["mon", "wed"]`, `["sat-sun"]`, `"Monday"` -> sorted `["mon", ...]`."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\s]+", value) if part]
    if not isinstance(value, list):
        return value
    chosen: set[int] = set()
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"expected weekday names such as mon or mon-fri, got {item!r}")
        first, dash, last = item.strip().lower().partition("-")
        start = _day_index(first)
        end = _day_index(last) if dash else start
        index = start
        while True:  # ranges may wrap: fri-mon is fri, sat, sun, mon
            chosen.add(index)
            if index == end:
                break
            index = (index + 1) % 7
    return [WEEKDAYS[index] for index in sorted(chosen)]


def _day_index(name: str) -> int:
    for index, full in enumerate(DAY_NAMES):
        if len(name) >= 3 and full.startswith(name):
            return index
    raise ValueError(f"{name!r} is not a weekday: use mon, tue, wed, thu, fri, sat, sun "
                     "or a range such as mon-fri")


def _minutes(text: str) -> int:
    match = HHMM.match(text)
    if not match:
        raise ValueError(f"expected a time of day as HH:MM (00:00 to 24:00), got {text!r}")
    minutes = int(match["h"]) * 60 + int(match["m"])
    if minutes > 24 * 60:
        raise ValueError(f"expected a time of day as HH:MM (00:00 to 24:00), got {text!r}")
    return minutes


class TimeWindow(BaseModel):
    """When chaos is allowed: these weekdays, from `start` to `end` (local time, end not
    included). Also written compactly as `"mon-fri 09:00-17:00"`."""

    model_config = ConfigDict(extra="forbid")

    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS),
                            description="Weekdays (mon … sun, ranges such as mon-fri).",
                            examples=[["mon", "tue", "wed", "thu", "fri"]])
    start: str = Field("00:00", description="Local time the window opens, HH:MM.",
                       examples=["09:00"])
    end: str = Field("24:00", description="Local time the window closes, HH:MM (24:00: "
                                          "midnight at the end of the day).",
                     examples=["17:00"])

    @model_validator(mode="before")
    @classmethod
    def _compact(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        days, hours = None, None
        for part in data.split():
            if re.fullmatch(r"[0-9:]+-[0-9:]+", part):
                if hours is not None:
                    raise ValueError(f"two time ranges in window {data!r}")
                hours = part
            else:
                days = f"{days},{part}" if days else part
        result: dict[str, Any] = {}
        if days is not None:
            result["days"] = days
        if hours is not None:
            result["start"], _, result["end"] = hours.partition("-")
        if not result:
            raise ValueError(f"window {data!r}: expected e.g. \"mon-fri 09:00-17:00\"")
        return result

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        return _parse_days(value)

    @field_validator("days")
    @classmethod
    def _some_days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("empty window: it allows no weekday")
        return value

    @field_validator("start", "end")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        _minutes(value)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if _minutes(self.end) <= _minutes(self.start):
            raise ValueError(f"empty window: end {self.end} is not after start {self.start} "
                             "(a window cannot span midnight: use two windows, e.g. "
                             "22:00-24:00 and 00:00-06:00)")
        if _minutes(self.start) >= 24 * 60:
            raise ValueError("empty window: it starts at 24:00")
        return self

    @property
    def day_indexes(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(day) for day in self.days)

    @property
    def start_minute(self) -> int:
        return _minutes(self.start)

    @property
    def end_minute(self) -> int:
        return _minutes(self.end)

    def describe(self) -> str:
        days = ",".join(self.days) if len(self.days) < 7 else "every day"
        return f"{days} {self.start}-{self.end}"


class ConcurrencyPolicy(StrEnum):
    """What a run does when an earlier run of the same schedule is still going
    (Kubernetes CronJob's vocabulary)."""

    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


def _check_period(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if not MIN_PERIOD_SECONDS <= value <= MAX_PERIOD_SECONDS:
        raise ValueError(f"{name} must be between {MIN_PERIOD_SECONDS:g}s and 366 days")
    return value


def _zone_name(value: str) -> str:
    problem = zone_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def zone_problem(name: str) -> str | None:
    """Why `name` is not a usable IANA time zone, or None."""
    if not name or len(name) > 100:
        return "expected an IANA time zone name such as Europe/Berlin or UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return (f"unknown time zone {name!r}: expected an IANA name such as Europe/Berlin, "
                "America/New_York or UTC")
    return None


#: An IANA time zone name that this machine's zoneinfo knows.
ZoneName = Annotated[str, AfterValidator(_zone_name)]


class ScheduleSpec(BaseModel):
    """When to run a job template: exactly one of `cron`, `interval` or `mtbf`, with
    optional windows, a concurrency policy and a starting deadline."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(None, max_length=200, examples=["0 9-17 * * mon-fri"],
                             description="Five-field cron expression (or @hourly, @daily, …) "
                                         "in `time_zone`.")
    interval: Duration | None = Field(None, description="Run every this long (e.g. 30m); "
                                                        "slots are anchored, never drift.")
    mtbf: Duration | None = Field(None, description="Mean time between failures: run at "
                                                    "random times, exponential gaps of this "
                                                    "mean.")
    time_zone: ZoneName = Field("UTC", max_length=100, examples=["Europe/Berlin"],
                           description="IANA time zone of the cron expression, the windows "
                                       "and the excluded dates.")
    windows: list[TimeWindow] = Field(default_factory=list, max_length=50,
                                      description="When chaos is allowed (any window); none: "
                                                  "always.")
    excluded_dates: list[date] = Field(default_factory=list, max_length=1000,
                                       description="Local dates without chaos (release days, "
                                                   "holidays).")
    # Forbid unless Allow is chosen: overlapping runs pile faults onto the same targets and
    # a slow job would multiply, so overlaps are something one asks for.
    concurrency_policy: ConcurrencyPolicy = Field(
        ConcurrencyPolicy.FORBID, description="Forbid (the default): skip a run while the "
        "previous one is running. Allow: runs may overlap. Replace: abort the previous one "
        "(it reverts), then start.")
    starting_deadline_seconds: float | None = Field(
        None, gt=0, le=MAX_PERIOD_SECONDS, allow_inf_nan=False,
        description="A run that cannot start within this many seconds of its time is "
                    "skipped; none: late runs still start (only the latest missed one).")
    history_limit: int = Field(20, ge=1, le=1000, description="Runs (and skips) kept.")
    paused: bool = Field(False, description="A paused schedule fires nothing.")
    template: JobSpec | None = Field(None, description="The job each run submits (give "
                                                        "this or `experiment`).")
    experiment: str | None = Field(None, min_length=1, max_length=63,
                                   pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                                   description="A stored experiment's name: each run starts "
                                               "a run of it (give this or `template`).")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            expression = parse_cron(value)
        except CronError as error:
            raise ValueError(f"invalid cron expression {value!r}: {error}") from None
        if not any(expression.matches_day(date(2024, 1, 1) + timedelta(days=offset))
                   for offset in range(CRON_SEARCH_DAYS)):
            raise ValueError(f"cron expression {value!r} never fires: no date matches its "
                             "day-of-month, month and day-of-week fields")
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float | None) -> float | None:
        return _check_period(value, "interval")

    @field_validator("mtbf")
    @classmethod
    def _mtbf(cls, value: float | None) -> float | None:
        return _check_period(value, "mtbf")


    @field_validator("concurrency_policy", mode="before")
    @classmethod
    def _policy_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            for policy in ConcurrencyPolicy:
                if value.lower() == policy.value.lower():
                    return policy
        return value

    @field_validator("excluded_dates")
    @classmethod
    def _sorted_dates(cls, value: list[date]) -> list[date]:
        return sorted(set(value))

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleSpec:
        given = [name for name in ("cron", "interval", "mtbf") if getattr(self, name) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            raise ValueError(f"give exactly one of cron, interval or mtbf (got {found}; to "
                             "switch with PATCH, set the old one to null)")
        return self

    @model_validator(mode="after")
    def _one_thing_to_run(self) -> ScheduleSpec:
        if (self.template is None) == (self.experiment is None):
            raise ValueError("give exactly one of template (a job) or experiment (a stored "
                             "experiment's name)")
        return self

    def namespaces(self) -> list[str]:
        """Where a template's runs act (an experiment's come from its document and are in
        the schedule's grant: `ScheduleRecord.namespaces`)."""
        return list(self.template.target.namespaces) if self.template is not None else []

    @property
    def kind(self) -> Literal["cron", "interval", "mtbf"]:
        if self.cron is not None:
            return "cron"
        return "interval" if self.interval is not None else "mtbf"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def timing(self) -> tuple[Any, ...]:
        """What decides the slots; a change re-anchors the schedule."""
        return (self.cron, self.interval, self.mtbf, self.time_zone)

    def describe(self) -> str:
        """`every 30m`, `cron 0 9 * * mon-fri (Europe/Berlin)`, `mtbf 1h`."""
        if self.cron is not None:
            text = f"cron {self.cron}"
        elif self.interval is not None:
            text = f"every {format_duration(self.interval)}"
        else:
            text = f"mtbf {format_duration(self.mtbf or 0)}"
        return text if self.time_zone == "UTC" else f"{text} ({self.time_zone})"


class SkipReason(StrEnum):
    PAUSED = "paused"
    OUTSIDE_WINDOW = "outside-window"
    FORBID = "forbid"
    MISSED_DEADLINE = "missed-deadline"
    HALTED = "halted"
    NOT_FIRED = "not-fired"


class RunOutcome(StrEnum):
    STARTED = "started"
    SKIPPED = "skipped"
    FAILED = "failed"


class ScheduleRun(Run):
    """One slot of a schedule and what became of it (consecutive skips for the same
    reason are kept as one entry with a count). It runs from when beat sent the fire
    (`started_at`, also `fired_at`) to when the worker decided (`ended_at`, also
    `decided_at`); a failed run's `reason` is its `error`."""

    legacy_names = {"fired_at": "started_at", "decided_at": "ended_at"}

    slot_at: datetime = Field(description="The run's nominal time.")
    started_at: datetime | None = Field(None, description="When beat sent the fire.")
    ended_at: datetime = Field(description="When the run was started, skipped or failed.")
    outcome: RunOutcome
    skipped: SkipReason | None = Field(None, description="Why the run was skipped.")
    reason: str = ""
    job_id: str | None = Field(None, description="The job it submitted, or the experiment "
                                                 "run it started (`x-...`).")
    job_status: JobStatus | None = Field(None, description="The job's status when read.")
    replaced: list[str] = Field(default_factory=list, description="Jobs aborted by Replace.")
    count: int = Field(1, description="Slots this entry stands for (coalesced skips).")
    last_slot_at: datetime | None = Field(None, description="Latest slot of a coalesced "
                                                            "entry.")

    @model_validator(mode="after")
    def _failure_is_the_error(self) -> ScheduleRun:
        if self.outcome == RunOutcome.FAILED and self.error is None and self.reason:
            self.error = self.reason
        return self

    @computed_field(description="The same as outcome.")  # type: ignore[prop-decorator]
    @property
    def status(self) -> RunOutcome:
        return self.outcome

    @computed_field(description="The same as started_at.")  # type: ignore[prop-decorator]
    @property
    def fired_at(self) -> datetime | None:
        return self.started_at

    @fired_at.setter
    def fired_at(self, value: datetime | None) -> None:
        self.started_at = value

    @computed_field(description="The same as ended_at.")  # type: ignore[prop-decorator]
    @property
    def decided_at(self) -> datetime:
        return self.ended_at

    @decided_at.setter
    def decided_at(self, value: datetime) -> None:
        self.ended_at = value


class ScheduleRecord(BaseModel):
    """A schedule: its spec, who made it, when it runs next and its latest runs."""

    id: str
    spec: ScheduleSpec
    source: Source
    submitter: str
    changed_by: Actor | None = Field(None, description="Whoever last created, changed or "
                                                       "resumed it: its runs act on their "
                                                       "behalf.")
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None = Field(None, description="When the next run is expected "
                                                           "to start (inside the windows); "
                                                           "none while paused.")
    last_runs: list[ScheduleRun] = Field(default_factory=list, description="Newest first.")
    namespaces: list[str] = Field(default_factory=list, description="Where its runs act: the "
                                  "template's namespaces, or every namespace of the "
                                  "experiment (as granted when the schedule was last "
                                  "changed).")


# -- time arithmetic ---------------------------------------------------------------------


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def interval_ms(spec: ScheduleSpec) -> int:
    return max(1, round((spec.interval or 0) * 1000))


def next_slot_after(spec: ScheduleSpec, anchor_ms: int, after_ms: int) -> int | None:
    """The first slot strictly after `after_ms` (cron and interval schedules)."""
    if spec.interval is not None:
        period = interval_ms(spec)
        steps = max(1, (after_ms - anchor_ms) // period + 1)
        return anchor_ms + steps * period
    if spec.cron is not None:
        moment = parse_cron(spec.cron).next_after(ms_to_datetime(after_ms), spec.zone)
        return None if moment is None else datetime_to_ms(moment)
    raise ValueError("mtbf schedules have no fixed slots")


def latest_slot_at_or_before(spec: ScheduleSpec, anchor_ms: int, when_ms: int) -> int | None:
    if spec.interval is not None:
        period = interval_ms(spec)
        steps = (when_ms - anchor_ms) // period
        return anchor_ms + steps * period if steps >= 1 else None
    if spec.cron is not None:
        moment = parse_cron(spec.cron).latest_at_or_before(ms_to_datetime(when_ms), spec.zone)
        return None if moment is None else datetime_to_ms(moment)
    raise ValueError("mtbf schedules have no fixed slots")


def _seconds_of_day(local: datetime) -> float:
    return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6


class WindowSpec(Protocol):
    """What the window arithmetic reads: a schedule's spec, or the admin policy."""

    @property
    def windows(self) -> list[TimeWindow]: ...
    @property
    def excluded_dates(self) -> list[date]: ...
    @property
    def time_zone(self) -> str: ...
    @property
    def zone(self) -> ZoneInfo: ...


def window_problem(spec: WindowSpec, when: datetime) -> str | None:
    """Why a run at `when` is not allowed (excluded date, outside every window), or None."""
    local = when.astimezone(spec.zone)
    if local.date() in spec.excluded_dates:
        return f"{local.date().isoformat()} is an excluded date"
    if not spec.windows:
        return None
    seconds = _seconds_of_day(local)
    for window in spec.windows:
        if local.weekday() in window.day_indexes and \
                window.start_minute * 60 <= seconds < window.end_minute * 60:
            return None
    windows = "; ".join(window.describe() for window in spec.windows)
    return (f"{local.strftime('%a %H:%M:%S')} {spec.time_zone} is outside the windows "
            f"({windows})")


def is_allowed(spec: WindowSpec, when: datetime) -> bool:
    return window_problem(spec, when) is None


def next_opening(spec: WindowSpec, when: datetime) -> datetime | None:
    """The earliest moment at or after `when` at which runs are allowed (UTC)."""
    if is_allowed(spec, when):
        return when
    zone = spec.zone
    first = when.astimezone(zone).date()
    for offset in range(SEARCH_DAYS):
        day = first + timedelta(days=offset)
        if day in spec.excluded_dates:
            continue
        if spec.windows:
            starts = sorted({w.start_minute for w in spec.windows if day.weekday()
                             in w.day_indexes})
        else:
            starts = [0]
        for minute in starts:
            local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
            moment = local.astimezone(UTC)
            if moment >= when and is_allowed(spec, moment):
                return moment
    return None


def next_allowed_slot(spec: ScheduleSpec, anchor_ms: int, after_ms: int) -> int | None:
    """The first slot after `after_ms` that falls inside the windows (cron, interval)."""
    horizon = after_ms + SEARCH_DAYS * 86_400_000
    cursor = after_ms
    for _ in range(10_000):
        slot = next_slot_after(spec, anchor_ms, cursor)
        if slot is None or slot > horizon:
            return None
        moment = ms_to_datetime(slot)
        if is_allowed(spec, moment):
            return slot
        opening = next_opening(spec, moment)
        if opening is None:
            return None
        cursor = max(slot, datetime_to_ms(opening) - 1)
    return None


def firing_tolerance_ms(spec: ScheduleSpec) -> int:
    """How early a fire may arrive and still count for the slot it was aimed at."""
    period = spec.interval if spec.interval is not None else spec.mtbf
    if period is not None:
        return max(1, min(1000, math.floor(period * 1000 * 0.05)))
    return 1000
