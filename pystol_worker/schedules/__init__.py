"""Scheduled chaos: the public API of schedules, for the API, the CLI and the CR watcher.

- `schedule_model`: `ScheduleSpec` (cron / interval / mtbf, windows, policy, template),
  `ScheduleRecord`, `ScheduleRun`, and the time arithmetic (slots, windows, time zones).
- `schedule_store`: `ScheduleStore` (Redis; keeps the celery-redbeat entry in sync),
  `ScheduleNotFound`, `validate_schedule`, `configure_redbeat`.
- `schedule_firing`: the `pystol.fire_schedule` task that beat sends and a worker runs:
  which slot, whether it runs (paused, windows, deadline, halt, concurrency policy), the
  job, the history.

Usage (the CR watcher, for a `PystolSchedule`):

    store = ScheduleStore(redis_client, settings)
    record = store.create(spec, Source.CR, "cr:shop/nightly", schedule_id="cr.shop.nightly")
    store.update(record.id, new_spec); store.set_paused(record.id, True); store.delete(record.id)
"""

from pystol_worker.core.schedule_model import (
    ConcurrencyPolicy,
    RunOutcome,
    ScheduleRecord,
    ScheduleRun,
    ScheduleSpec,
    SkipReason,
    TimeWindow,
)
from pystol_worker.schedules.firing import FireResult, ScheduleFirer
from pystol_worker.schedules.store import (
    FIRE_TASK,
    REDBEAT_KEY_PREFIX,
    ScheduleExists,
    ScheduleNotFound,
    ScheduleStore,
    configure_redbeat,
    validate_schedule,
)

__all__ = [
    "FIRE_TASK",
    "REDBEAT_KEY_PREFIX",
    "ConcurrencyPolicy",
    "FireResult",
    "RunOutcome",
    "ScheduleExists",
    "ScheduleFirer",
    "ScheduleNotFound",
    "ScheduleRecord",
    "ScheduleRun",
    "ScheduleSpec",
    "ScheduleStore",
    "SkipReason",
    "TimeWindow",
    "configure_redbeat",
    "validate_schedule",
]
