"""The reaper's sweep over experiment runs: what no message said.

Runs move on when a message says something may have changed (the start, a step job's
end, a cancel). Messages can be lost — a worker killed between a job's end and the hook,
a broker restart — so every reaper pass also looks, cheaply and boundedly (at most
`MAX_PER_PASS` runs sent on per pass):

- runs whose timer is due (`xruns:due`: a wait, a suspend's deadline, a held step not yet
  seen holding, the run's deadline);
- runs past their deadline: the stop signal is set first ("exceeded its deadline"), so
  their step jobs stop and revert even if the run's own advance never comes;
- runs not being advanced now (their lock is free) that have a step job already ended
  but not folded in, a stop signal not acted on, or that are still queued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from pystol_worker.core.experiment_model import ExperimentStatus, StepStatus
from pystol_worker.store.job_store import JobStore
from pystol_worker.store.run_signals import run_stopped, stop_run

from .engine import run_deadline
from .store import ExperimentStore

log = logging.getLogger("pystol.experiments")

MAX_PER_PASS = 100
QUEUED_GRACE_SECONDS = 5.0  # a run queued longer than this lost its first advance


def sweep(store: ExperimentStore, jobs: JobStore, send_advance: Callable[[str], None],
          now: datetime, limit: int = MAX_PER_PASS) -> list[str]:
    """Send an advance for each run that needs one (see the module docstring); their
    ids. Never raises for one run's trouble: the next pass tries again."""
    sent: list[str] = []

    def send(run_id: str) -> None:
        if run_id in sent or len(sent) >= limit:
            return
        try:
            send_advance(run_id)
            sent.append(run_id)
        except Exception:
            log.exception("sweep: could not send an advance for run %s", run_id)

    for run_id in store.claim_due(now, limit):
        send(run_id)
    running = store.running_ids(limit=10 * limit)
    found = {run.id: run for run in store.iter_runs(running)}
    for run_id in running:
        if len(sent) >= limit:
            break
        run = found.get(run_id)
        if run is None:
            if not store.redis.exists(f"pystol:xrun:{run_id}"):
                store.forget_running(run_id)
            continue
        if run.status.terminal:
            store.forget_running(run_id)
            continue
        deadline = run_deadline(run)
        if deadline is not None and now >= deadline and \
                run.status == ExperimentStatus.RUNNING:
            stop_run(store.redis, run_id, "deadline",
                     f"the run exceeded its deadline ({deadline.isoformat()})",
                     by="reaper")
            send(run_id)
            continue
        if store.advance_locked(run_id):
            continue
        if run.status == ExperimentStatus.QUEUED and \
                now - run.created_at > timedelta(seconds=QUEUED_GRACE_SECONDS):
            send(run_id)
            continue
        if run.status == ExperimentStatus.RUNNING and run_stopped(store.redis, run_id):
            send(run_id)
            continue
        for step in [*run.steps, *run.rollbacks]:
            if step.status != StepStatus.RUNNING or step.job_id is None:
                continue
            try:
                record = jobs.get(step.job_id, with_timeline=False)
            except KeyError:
                send(run_id)
                break
            except ValueError:
                continue
            if record.status.terminal:
                send(run_id)
                break
    return sent
