"""`pystol beat`: Celery beat with celery-redbeat, the schedules kept in Redis.

Beat holds no schedule of its own: `redbeat.RedBeatScheduler` reads the entries that
`ScheduleStore` writes under `pystol:redbeat:` on every tick, so schedules are added,
changed, paused and removed at run time without restarting it, and a restarted beat
carries on from what Redis says (no pidfile, no local schedule file). Redbeat's lock keeps
a second beat from firing the same entries. Each fire is stamped with the moment it was
sent (header `pystol_fired_at`), which lets the fire task tell which slot it stands for
even when it waits in the queue. After each tick beat touches its health file, which the
chart's liveness probe checks (`pystol health`).
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish
from redbeat import RedBeatScheduler

from pystol_worker.core.settings import Settings
from pystol_worker.process.celery_app import make_celery
from pystol_worker.process.health_file import HealthFile, health_file_path
from pystol_worker.schedules.store import BEAT_MAX_LOOP_INTERVAL, FIRED_AT_HEADER, configure_redbeat

SCHEDULER = "redbeat.RedBeatScheduler"


def stamp_fired_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """`before_task_publish` handler: when beat sent this task."""
    if headers is not None:
        headers[FIRED_AT_HEADER] = time.time()


def health_scheduler(health: HealthFile) -> type[RedBeatScheduler]:
    """redbeat's scheduler, touching the health file after every tick that returns.

    Beat ticks at least every BEAT_MAX_LOOP_INTERVAL seconds, so the file stays fresh while
    the loop turns; a tick that hangs (on Redis, on the broker) leaves it to age.
    """

    class HealthScheduler(RedBeatScheduler):
        def tick(self, *args: Any, **kwargs: Any) -> float:
            interval: float = super().tick(*args, **kwargs)
            health.touch()
            return interval

    return HealthScheduler


def run_beat(settings: Settings, loglevel: str = "INFO") -> None:
    app = configure_redbeat(make_celery(settings), settings)
    before_task_publish.connect(stamp_fired_at, weak=False)
    scheduler: str | type[RedBeatScheduler] = SCHEDULER
    health_path = health_file_path(settings.health_dir, "beat")
    if health_path is not None:
        health = HealthFile(health_path)
        health.touch()  # fresh from the start: a file left by the last run says nothing
        scheduler = health_scheduler(health)
    # celery-types narrows both: Beat also takes a scheduler class, and seconds as a float
    app.Beat(scheduler=scheduler, loglevel=loglevel, pidfile=None,  # type: ignore[arg-type]
             schedule=None, max_interval=BEAT_MAX_LOOP_INTERVAL).run()  # type: ignore[arg-type]
