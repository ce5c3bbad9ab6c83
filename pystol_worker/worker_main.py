"""`pystol worker`: a Celery worker consuming Pystol's job queue."""

from __future__ import annotations

import os

from pystol_worker.celery_app import make_celery
from pystol_worker.kube_access import preload_client_modules
from pystol_worker.settings import Settings
from pystol_worker.tasks import register_tasks


def run_worker(settings: Settings, concurrency: int | None = None, pool: str = "prefork",
               loglevel: str = "INFO") -> None:
    preload_client_modules()
    app = make_celery(settings)
    register_tasks(app, settings)
    app.worker_main([
        "worker", f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--pool={pool}", "-Q", settings.queue, f"--loglevel={loglevel}",
        "--without-gossip", "--without-mingle", "-n", f"pystol-{os.getpid()}@%h",
    ])
