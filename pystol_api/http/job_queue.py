"""How the API hands a stored job to the workers: a one-method protocol and its Celery form.

The routes only need "queue this job id"; keeping that behind a protocol lets tests
inject a recording queue instead of patching Celery, and keeps the API free of any
worker task code: `CeleryJobQueue` sends the task by name (`send_job`), so importing
the API never imports what `pystol worker` runs.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from pystol_worker.core.settings import Settings
from pystol_worker.process.celery_app import make_celery, send_job


class JobQueue(Protocol):
    def send(self, job_id: str) -> None:
        """Queue a job already stored in the job store; raise when it cannot be queued."""


class CeleryJobQueue:
    """Queue jobs on the Celery broker at `settings.redis_url` (connects on first send)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._celery: Celery = make_celery(settings)

    def send(self, job_id: str) -> None:
        send_job(self._celery, self._settings, job_id)
