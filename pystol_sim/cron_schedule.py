"""A CronJob's `schedule` and `timeZone`: parsing and "when is the next run".

The five cron fields are parsed by Celery's `crontab` (already a dependency of
Pystol) rather than by a parser of our own. Two known differences from the
cron that kube-controller-manager uses (robfig/cron): when both day-of-month
and day-of-week are restricted, Celery requires both to match (cron: either);
and `TZ=`/`CRON_TZ=` prefixes are refused, as Kubernetes refuses them too.
The `@hourly`-style macros Kubernetes accepts are expanded first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class ScheduleError(ValueError):
    """The schedule or time zone cannot be used; the message says why."""


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    zone: tzinfo

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after `moment` (an aware datetime), in UTC."""
        from celery.schedules import crontab  # imported here: the sim starts without Celery

        minute, hour, day_of_month, month, day_of_week = self.expression.split()
        schedule = crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                           month_of_year=month, day_of_week=day_of_week)
        local = moment.astimezone(self.zone).replace(second=0, microsecond=0)
        last, delta, _ = schedule.remaining_delta(local, tz=self.zone)
        result: datetime = last + delta
        return result.astimezone(UTC)


def parse_schedule(schedule: str, time_zone: str | None = None) -> CronSchedule:
    """Parse and check now, so a bad schedule is refused when the CronJob is written."""
    from celery.schedules import crontab

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
        minute, hour, day_of_month, month, day_of_week = fields
        crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                day_of_week=day_of_week)
    except Exception as error:  # Celery raises ValueError or its own ParseException
        raise ScheduleError(f'Invalid value: "{schedule}": {error}') from error
    return CronSchedule(" ".join(fields), zone)
