"""A CronJob's `schedule` and `timeZone`: parsing and "when is the next run".

The five cron fields are parsed by Celery's `crontab` (already a dependency of
Pystol) rather than by a parser of our own. Two known differences from the
cron that kube-controller-manager uses (robfig/cron): when both day-of-month
and day-of-week are restricted, Celery requires both to match (cron: either);
and `TZ=`/`CRON_TZ=` prefixes are refused, as Kubernetes refuses them too.
The `@hourly`-style macros Kubernetes accepts are expanded first.

A schedule longer than 1,024 characters or a time zone name longer than 64 is
refused: Kubernetes sets no hard limit, but real schedules are a few dozen
characters, and parsing a 200 KB list of minutes costs a third of a second. Each
expression's `crontab` is built once and cached, not at every "next run".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


MAX_SCHEDULE_LENGTH = 1024
MAX_TIME_ZONE_LENGTH = 64  # the longest IANA zone name is about 30 characters


@functools.lru_cache(maxsize=512)
def _crontab(expression: str) -> Any:
    """Celery's crontab for five normalised fields (raises on a bad one); built once."""
    from celery.schedules import crontab  # imported here: the sim starts without Celery

    minute, hour, day_of_month, month, day_of_week = expression.split()
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month, day_of_week=day_of_week)


class ScheduleError(ValueError):
    """The schedule or time zone cannot be used; the message says why."""


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    zone: tzinfo

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after `moment` (an aware datetime), in UTC."""
        schedule = _crontab(self.expression)
        local = moment.astimezone(self.zone).replace(second=0, microsecond=0)
        last, delta, _ = schedule.remaining_delta(local, tz=self.zone)
        result: datetime = last + delta
        return result.astimezone(UTC)


def parse_schedule(schedule: str, time_zone: str | None = None) -> CronSchedule:
    """Parse and check now, so a bad schedule is refused when the CronJob is written."""
    if time_zone is not None and not isinstance(time_zone, str):
        raise ScheduleError(f"Invalid value: {time_zone!r}: time zone must be a string")
    if not isinstance(schedule, str | None):
        raise ScheduleError(f"Invalid value: {schedule!r}: must be a string")
    if time_zone is not None and len(time_zone) > MAX_TIME_ZONE_LENGTH:
        raise ScheduleError(f"Too long: time zone may not be longer than "
                            f"{MAX_TIME_ZONE_LENGTH} characters")
    if len(schedule or "") > MAX_SCHEDULE_LENGTH:
        raise ScheduleError(f"Too long: may not be longer than {MAX_SCHEDULE_LENGTH} "
                            "characters")
    text = (schedule or "").strip()
    if not text:
        raise ScheduleError("Required value")
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        raise ScheduleError(f'Invalid value: "{schedule}": cannot use TZ or CRON_TZ in '
                            "schedule, use timeZone field instead")
    text = MACROS.get(text.lower(), text)
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f'Invalid value: "{schedule}": expected exactly 5 fields, '
                            f"found {len(fields)}")
    try:
        zone: tzinfo = ZoneInfo(time_zone) if time_zone else UTC
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ScheduleError(f'Invalid value: "{time_zone}": unknown time zone') from error
    try:
        _crontab(" ".join(fields))
    except Exception as error:  # Celery raises ValueError or its own ParseException
        raise ScheduleError(f'Invalid value: "{schedule}": {error}') from error
    return CronSchedule(" ".join(fields), zone)
