"""The schedule model and its time arithmetic: validation, cron, windows, time zones."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import hypothesis
import pytest
from hypothesis import strategies as st
from pydantic import ValidationError

from pystol_api.http.problems import loc_path
from pystol_worker.core.schedule_model import (
    ConcurrencyPolicy,
    ScheduleSpec,
    TimeWindow,
    datetime_to_ms,
    is_allowed,
    latest_slot_at_or_before,
    ms_to_datetime,
    next_allowed_slot,
    next_opening,
    next_slot_after,
    parse_cron,
    window_problem,
)

TEMPLATE: dict[str, Any] = {"action": "pod-kill",
                            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}
BERLIN = ZoneInfo("Europe/Berlin")


def spec(**fields: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate({"template": TEMPLATE, **fields})


def problems(**fields: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        spec(**fields)
    return [(loc_path(item["loc"]), item["msg"]) for item in caught.value.errors()]


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


# -- validation: every invalid case names its field ---------------------------------------


@pytest.mark.parametrize(("fields", "loc", "fragment"), [
    ({"cron": "61 * * * *"}, "cron", "minute field: 61 is out of range 0-59"),
    ({"cron": "0 24 * * *"}, "cron", "hour field: 24 is out of range 0-23"),
    ({"cron": "* * * *"}, "cron", "expected 5 fields"),
    ({"cron": "*/0 * * * *"}, "cron", "step '0' must be a whole number"),
    ({"cron": "30-10 * * * *"}, "cron", "range '30-10' runs backwards"),
    ({"cron": "0 0 * * funday"}, "cron", "'funday' is not a number or a name"),
    ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
    ({"cron": "@every 5m"}, "cron", "use `interval`"),
    ({"cron": "0 9 * * *", "time_zone": "Mars/Olympus_Mons"}, "time_zone",
     "unknown time zone 'Mars/Olympus_Mons'"),
    ({"interval": "1m", "time_zone": "../etc/passwd"}, "time_zone", "unknown time zone"),
    ({"interval": "0.5s"}, "interval", "between 1s and 366 days"),
    ({"interval": "ten minutes"}, "interval", "invalid duration"),
    ({"mtbf": "400d"}, "mtbf", "invalid duration"),
    ({"interval": "1m", "windows": ["mon-fri 17:00-09:00"]}, "windows[0]",
     "empty window: end 09:00 is not after start 17:00"),
    ({"interval": "1m", "windows": [{"days": [], "start": "09:00", "end": "17:00"}]},
     "windows[0].days", "empty window: it allows no weekday"),
    ({"interval": "1m", "windows": [{"start": "10:00", "end": "10:00"}]}, "windows[0]",
     "empty window"),
    ({"interval": "1m", "windows": [{"days": ["mon", "someday"]}]}, "windows[0].days",
     "'someday' is not a weekday"),
    ({"interval": "1m", "windows": [{"start": "9am"}]}, "windows[0].start", "HH:MM"),
    ({"interval": "1m", "concurrency_policy": "Sometimes"}, "concurrency_policy",
     "Allow"),
    ({"interval": "1m", "history_limit": 0}, "history_limit", "greater than or equal to 1"),
    ({"interval": "1m", "starting_deadline_seconds": 0}, "starting_deadline_seconds",
     "greater than 0"),
    ({"interval": "1m", "excluded_dates": ["2025-02-30"]}, "excluded_dates[0]", "date"),
    ({"interval": "1m", "bogus": 1}, "bogus", "Extra inputs are not permitted"),
    ({"interval": "1m", "template": {"action": "pod-kill", "target": {"mode": "fixed"}}},
     "template.target.value", "mode fixed needs a value"),
])
def test_invalid_schedules_name_the_field(fields: dict[str, Any], loc: str,
                                          fragment: str) -> None:
    found = problems(**fields)
    assert any(where == loc and fragment in message for where, message in found), found


def test_exactly_one_of_cron_interval_mtbf() -> None:
    assert "got none" in problems()[0][1]
    assert "got cron and interval" in problems(cron="* * * * *", interval="1m")[0][1]
    assert spec(mtbf="1h").kind == "mtbf"


def test_defaults_and_normalisation() -> None:
    schedule = spec(cron="0 9 * * mon-fri", concurrency_policy="forbid",
                    excluded_dates=["2025-12-25", "2025-12-24", "2025-12-25"],
                    windows=["mon-fri 09:00-17:00", "Saturday 10:00-12:00", "fri-mon"])
    assert schedule.time_zone == "UTC" and schedule.history_limit == 20
    assert schedule.concurrency_policy == ConcurrencyPolicy.FORBID
    assert schedule.excluded_dates == [date(2025, 12, 24), date(2025, 12, 25)]
    assert schedule.windows[0].days == ["mon", "tue", "wed", "thu", "fri"]
    assert (schedule.windows[1].days, schedule.windows[1].start) == (["sat"], "10:00")
    assert schedule.windows[2].days == ["mon", "fri", "sat", "sun"]  # a range may wrap
    assert (schedule.windows[2].start, schedule.windows[2].end) == ("00:00", "24:00")
    assert spec(interval="90s").describe() == "every 90s"
    assert spec(cron="@daily", time_zone="Europe/Berlin").describe() == \
        "cron @daily (Europe/Berlin)"
    dumped = spec(interval="90s").model_dump(mode="json")
    assert dumped["interval"] == "90s" and ScheduleSpec.model_validate(dumped).interval == 90


# -- cron ----------------------------------------------------------------------------------


def test_cron_syntax() -> None:
    cron = parse_cron("*/15 9-17 1,15 jan-mar mon-fri")
    assert cron.minutes == (0, 15, 30, 45) and cron.hours == tuple(range(9, 18))
    assert cron.months == frozenset({1, 2, 3}) and cron.weekdays == frozenset(range(1, 6))
    assert parse_cron("0 0 * * 7").weekdays == frozenset({0})  # 7 is Sunday too
    assert parse_cron("5/20 * * * *").minutes == (5, 25, 45)
    assert parse_cron("@hourly").minutes == (0,)


def test_cron_day_of_month_or_day_of_week() -> None:
    either = parse_cron("0 0 13 * fri")  # Vixie cron: the 13th OR any Friday
    assert either.matches_day(date(2025, 6, 13))  # a Friday the 13th
    assert either.matches_day(date(2025, 5, 13))  # a Tuesday
    assert either.matches_day(date(2025, 5, 16))  # a Friday
    assert not either.matches_day(date(2025, 5, 14))
    stepped = parse_cron("0 0 */2 * fri")  # `*/2` counts as unrestricted: AND
    assert stepped.matches_day(date(2025, 5, 9)) and not stepped.matches_day(date(2025, 5, 16))


def test_cron_next_and_latest_in_a_time_zone() -> None:
    weekdays = spec(cron="30 9 * * mon-fri", time_zone="Europe/Berlin")
    friday_evening = datetime_to_ms(berlin(2025, 3, 28, 18, 0))
    following = next_slot_after(weekdays, 0, friday_evening)
    assert ms_to_datetime(following).astimezone(BERLIN) == berlin(2025, 3, 31, 9, 30)
    assert ms_to_datetime(following).hour == 7  # CEST: UTC+2 after the change on 30 March
    latest = latest_slot_at_or_before(weekdays, 0, friday_evening)
    assert ms_to_datetime(latest) == berlin(2025, 3, 28, 9, 30)
    # At the boundary: strictly after, at or before.
    exact = datetime_to_ms(berlin(2025, 3, 28, 9, 30))
    assert latest_slot_at_or_before(weekdays, 0, exact) == exact
    assert next_slot_after(weekdays, 0, exact) == datetime_to_ms(berlin(2025, 3, 31, 9, 30))


def test_cron_across_daylight_saving_changes() -> None:
    nightly = spec(cron="30 2 * * *", time_zone="Europe/Berlin")
    # 02:30 does not exist on 30 March 2025 (02:00 -> 03:00): that night is skipped.
    after = datetime_to_ms(berlin(2025, 3, 29, 12, 0))
    assert ms_to_datetime(next_slot_after(nightly, 0, after)) == berlin(2025, 3, 31, 2, 30)
    # 02:30 happens twice on 26 October 2025: it runs once, at the first.
    first = next_slot_after(nightly, 0, datetime_to_ms(berlin(2025, 10, 25, 12, 0)))
    assert ms_to_datetime(first) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)
    second = next_slot_after(nightly, 0, first)
    assert ms_to_datetime(second) == berlin(2025, 10, 27, 2, 30)


CRONS = ["* * * * *", "*/7 * * * *", "0 * * * *", "30 2 * * *", "15,45 1-3 * * *",
         "0 0 13 * fri", "59 23 * * sun", "0 0 29 2 *", "5/20 */5 1,15 * mon-fri"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


def slots_minute_by_minute(cron: str, zone: ZoneInfo, after: datetime,
                           until: datetime) -> list[datetime]:
    """The oracle: every UTC minute in (after, until] whose local time the expression names;
    a local time that happens twice fires at its first occurrence only (fold 0), one that
    does not exist never comes out of a UTC conversion."""
    expression = parse_cron(cron)
    minute = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    found = []
    while minute <= until:
        local = minute.astimezone(zone)
        if (local.minute in expression.minutes and local.hour in expression.hours
                and expression.matches_day(local.date()) and local.fold == 0):
            found.append(minute)
        minute += timedelta(minutes=1)
    return found


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
@hypothesis.given(cron=st.sampled_from(CRONS), zone=st.sampled_from(ZONES),
                  start=st.datetimes(min_value=datetime(2025, 1, 1),
                                     max_value=datetime(2027, 12, 31)),
                  near_a_change=st.booleans())
def test_the_cron_walk_gives_every_slot_the_clock_gives(cron: str, zone: str, start: datetime,
                                                        near_a_change: bool) -> None:
    """`slots_after` (one walk, used for the policy's shortest gap) yields exactly the
    slots a minute-by-minute clock finds, across DST changes in zones with 30-minute and
    1-hour shifts."""
    if near_a_change:  # the night before Europe's and the US's spring and autumn changes
        start = start.replace(month=(3, 10, 11)[start.day % 3], day=7 + start.day % 24)
    after = start.replace(tzinfo=UTC)
    until = after + timedelta(days=2)
    walked = [slot for slot in itertools.takewhile(
        lambda slot: slot <= until, parse_cron(cron).slots_after(after, ZoneInfo(zone)))]
    assert walked == slots_minute_by_minute(cron, ZoneInfo(zone), after, until)


# -- interval ------------------------------------------------------------------------------


def test_interval_slots_are_anchored() -> None:
    every = spec(interval="2s")
    anchor = 1_000_000
    assert next_slot_after(every, anchor, anchor) == anchor + 2000
    assert next_slot_after(every, anchor, anchor - 5000) == anchor + 2000  # never before
    assert next_slot_after(every, anchor, anchor + 2000) == anchor + 4000
    assert next_slot_after(every, anchor, anchor + 3999) == anchor + 4000
    assert latest_slot_at_or_before(every, anchor, anchor + 5999) == anchor + 4000
    assert latest_slot_at_or_before(every, anchor, anchor + 1999) is None


# -- windows -------------------------------------------------------------------------------


def test_windows_at_their_boundaries_in_the_schedule_time_zone() -> None:
    office = spec(interval="1m", time_zone="Europe/Berlin",
                  windows=["mon-fri 09:00-17:00"], excluded_dates=["2025-06-12"])
    assert is_allowed(office, berlin(2025, 6, 11, 9, 0))  # Wednesday, opening minute
    assert not is_allowed(office, berlin(2025, 6, 11, 8, 59, 59))
    assert is_allowed(office, berlin(2025, 6, 11, 16, 59, 59))
    assert not is_allowed(office, berlin(2025, 6, 11, 17, 0))  # the end is not included
    # 07:30 UTC is 09:30 in Berlin (CEST), allowed; 16:30 UTC is 18:30, not.
    assert is_allowed(office, datetime(2025, 6, 11, 7, 30, tzinfo=UTC))
    assert not is_allowed(office, datetime(2025, 6, 11, 16, 30, tzinfo=UTC))
    # Weekend, and the weekday boundary is Berlin's midnight, not UTC's.
    assert not is_allowed(office, berlin(2025, 6, 14, 12, 0))  # Saturday
    assert not is_allowed(office, datetime(2025, 6, 13, 22, 30, tzinfo=UTC))  # Sat 00:30
    # An excluded date (a release day), although a Thursday inside the hours.
    assert window_problem(office, berlin(2025, 6, 12, 12, 0)) == \
        "2025-06-12 is an excluded date"
    problem = window_problem(office, berlin(2025, 6, 14, 12, 0))
    assert problem is not None and "outside the windows (mon,tue,wed,thu,fri 09:00-17:00)" \
        in problem


def test_next_opening_and_next_allowed_slot() -> None:
    office = spec(interval="30m", time_zone="Europe/Berlin",
                  windows=["mon-fri 09:00-17:00"], excluded_dates=["2025-06-16"])
    friday_evening = berlin(2025, 6, 13, 18, 0)
    # Saturday, Sunday closed; Monday 16 June excluded: Tuesday 09:00.
    assert next_opening(office, friday_evening) == berlin(2025, 6, 17, 9, 0)
    inside = berlin(2025, 6, 13, 10, 0)
    assert next_opening(office, inside) == inside
    anchor = datetime_to_ms(berlin(2025, 6, 13, 8, 10))  # slots at :10 and :40
    slot = next_allowed_slot(office, anchor, datetime_to_ms(friday_evening))
    assert ms_to_datetime(slot) == berlin(2025, 6, 17, 9, 10)
    nightly = spec(cron="0 3 * * *", windows=["09:00-17:00"])
    assert next_allowed_slot(nightly, 0, datetime_to_ms(friday_evening)) is None


def test_compact_window_strings() -> None:
    window = TimeWindow.model_validate("sat,sun 10:00-12:30")
    assert (window.days, window.start, window.end) == (["sat", "sun"], "10:00", "12:30")
    assert TimeWindow.model_validate("08:00-24:00").days == \
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    with pytest.raises(ValidationError, match=r"expected e\.g\."):
        TimeWindow.model_validate("")


def test_interval_far_from_anchor_is_cheap() -> None:
    every = spec(interval="1s", windows=["mon 09:00-09:01"])
    start = datetime_to_ms(datetime(2025, 6, 10, 12, 0, tzinfo=UTC))  # a Tuesday
    slot = next_allowed_slot(every, start, start)
    assert ms_to_datetime(slot) == datetime(2025, 6, 16, 9, 0, tzinfo=UTC)
    assert ms_to_datetime(slot) - ms_to_datetime(start) < timedelta(days=7)
