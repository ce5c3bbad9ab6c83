"""The reaper: revert what dead workers left behind and close their jobs.

It runs in every worker's main process, once when the worker starts and then
every `PYSTOL_REAPER_INTERVAL_SECONDS`, on Celery's own timer (no extra
thread in a process that forks). One reaper acts at a time (a Redis lock).
A job counts as lost when its heartbeat lapsed: its journal entries are
undone, and the job, if still `running`, ends `aborted` saying why.

The undo functions are passed in (`ActionRegistry.undo_registry()`, the same table
the runner reverts with), never found by importing modules for their side effects:
a reaper can revert exactly what the actions its process knows declared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pystol_worker.core.model import JobRecord, JobStatus, utcnow
from pystol_worker.kube.cluster import Cluster
from pystol_worker.safety.revert_journal import (
    MISSING_UNDO,
    JournalEntryRefused,
    RevertJournal,
    UndoRegistry,
)
from pystol_worker.store.job_store import JobStore, TransitionRefused

log = logging.getLogger("pystol.reaper")


@dataclass
class ReapReport:
    reverted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    aborted_jobs: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


REFUSED_EVENT_REASON = "PystolRevertRefused"
_API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1",
                 "NetworkPolicy": "networking.k8s.io/v1"}


#: Events one reaper pass posts about refused entries; the rest are only logged and counted.
#: A Redis writer can forge any number of entries, and each Event is a request to the API
#: server made from the worker's main loop.
MAX_REFUSED_EVENTS = 10


def report_refused(cluster: Cluster, refused: list[JournalEntryRefused],
                   is_protected: Callable[[str], bool] | None = None,
                   limit: int = MAX_REFUSED_EVENTS) -> None:
    """A Warning Event on each object a refused journal entry named (at most `limit` a
    pass), so the people who own it see (in `kubectl describe`, `kubectl get events`) that
    something tried to make Pystol change it. The journal already logged and counted them.
    No Event goes into a protected namespace (Pystol writes nothing there), and an Event
    that cannot be posted (the namespace is gone, no permission) is only logged."""
    posted = 0
    for item in refused:
        entry = item.entry
        if entry is None:
            continue  # unreadable: nothing names an object to warn on
        if is_protected is not None and any(is_protected(ns) for ns in entry.namespaces()):
            continue
        if posted >= limit:
            log.warning("reaper: %d more refused journal entries are not reported as Events "
                        "this pass (see the log and pystol_revert_journal_refused_total)",
                        len(refused) - posted)
            return
        posted += 1
        try:
            cluster.post_event(entry.target, _API_VERSIONS.get(entry.target.kind, "v1"),
                               REFUSED_EVENT_REASON,
                               f"Pystol refused a revert-journal entry that would run "
                               f"{entry.undo!r} on this {entry.target.kind}: "
                               f"{item.detail}. It was not applied. Something other than "
                               "Pystol wrote to its Redis.", event_type="Warning")
        except Exception as error:  # reporting must never stop the reaper
            log.warning("could not post an Event for refused entry %s: %s", item.entry_id,
                        error)


def lost_job_reason(reverted: int, failed: int, missing: list[str] | None = None) -> str:
    """The aborted job's reason; `missing` are undo names no installed action declares (those
    reverts are not retried until the action is installed, so the reason must not say so)."""
    missing = missing or []
    text = "the worker running this job stopped (its heartbeat lapsed)"
    if reverted:
        text += f"; the reaper reverted {reverted} change(s)"
    if failed - len(missing):
        text += f"; {failed - len(missing)} revert(s) failed and will be retried"
    if missing:
        text += (f"; {len(missing)} change(s) cannot be reverted: no installed action "
                 f"declares undo {', '.join(sorted(set(missing)))} (install or update the "
                 "action plug-in that made them)")
    return text


def reap_once(store: JobStore, journal: RevertJournal, cluster: Cluster,
              heartbeat_seconds: float, undo_functions: UndoRegistry,
              budget_seconds: float | None = None,
              on_aborted: Callable[[JobRecord], None] | None = None) -> ReapReport:
    """One pass: undo the entries of every dead job, end those jobs aborted.

    `on_aborted(record)` is told of each job this pass ended (the experiment engine
    advances the job's run from there, so a run whose step was lost ends promptly); its
    exceptions are logged, never raised."""
    report = ReapReport()
    token = journal.lock_reaper()
    if token is None:
        return report
    try:
        found = journal.read()
        report_refused(cluster, found.refused, journal.is_protected)
        report.refused += [item.detail for item in found.refused]
        entries = found.entries
        suspects = {entry.job_id for entry in entries}
        suspects |= {record.id for record in _running_jobs(store)
                     if (utcnow() - (record.started_at or record.created_at)).total_seconds()
                     >= heartbeat_seconds}
        # Decide who is dead once, so a heartbeat lapsing mid-pass cannot split the verdict.
        dead = {job_id for job_id in suspects if not journal.alive(job_id)}
        deadline = time.monotonic() + budget_seconds if budget_seconds else None
        for job_id in sorted(dead):
            if deadline is not None and time.monotonic() > deadline:
                break  # the rest waits for the next pass
            undone, failed = journal.undo_all(
                cluster, [entry for entry in entries if entry.job_id == job_id],
                undo_functions)
            report.reverted += [entry.describe() for entry in undone]
            report.failed += [f"{entry.describe()}: {error}" for entry, error in failed]
            try:
                current = store.get(job_id, with_timeline=False)
            except KeyError:
                continue
            if current.status != JobStatus.RUNNING:
                continue
            try:
                missing = [entry.undo for entry, error in failed
                           if error.startswith(MISSING_UNDO)]
                ended = store.finish(job_id, JobStatus.ABORTED,
                                     lost_job_reason(len(undone), len(failed), missing))
                report.aborted_jobs.append(job_id)
            except TransitionRefused:
                continue
            if on_aborted is not None:
                try:
                    on_aborted(ended)
                except Exception:
                    log.exception("reaper: the hook for aborted job %s failed", job_id)
    finally:
        journal.unlock_reaper(token)
    if report.reverted or report.failed or report.aborted_jobs:
        log.warning("reaper: reverted %d change(s), %d failed, aborted jobs %s",
                    len(report.reverted), len(report.failed), report.aborted_jobs)
    return report


def _running_jobs(store: JobStore) -> list[JobRecord]:
    records: list[JobRecord] = []
    cursor = None
    while True:
        page = store.list(status=JobStatus.RUNNING, cursor=cursor, limit=200)
        records += page.items
        if page.next_cursor is None:
            return records
        cursor = page.next_cursor
