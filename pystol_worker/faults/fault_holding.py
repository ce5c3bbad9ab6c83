"""Inject → hold → revert, with the journal written before every change.

Every action that changes something reversible (an image, a cordon, a replica
count, a NetworkPolicy, a stress pod) describes its changes as `Fault`s and
hands them to `hold_faults` (after taking the no-overlap locks on the
affected workloads and nodes with `lock_targets`), which:
1. for each fault: checks cancel/halt, writes the journal entry, injects, posts
   a `PystolChaos` Event on the object and a timeline event,
2. runs `after_inject`, if given (node-drain evicts there),
3. holds for the duration (`ctx.hold`: waking at once on cancel, halt, a run stop or a
   stop-on-failure probe; ending early, without an error, when an experiment releases
   the fault),
4. always reverts, newest first, in a `finally`: undo, drop the journal entry,
   post `PystolRevert`; an undo that fails keeps its entry for the reaper and
   fails the job, saying so.

Before the first injection it checks that every fault's `undo` names a function
some registered action declares (`Action.undo`): a change nobody could revert —
not this worker, not the reaper — is never made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pystol_worker.core.errors import ActionError
from pystol_worker.core.model import Change, EventKind, JobSpec, TargetRef
from pystol_worker.kube.objects import utc
from pystol_worker.safety.job_context import RunContext
from pystol_worker.safety.revert_journal import JournalEntry
from pystol_worker.safety.target_locks import target_lock_keys

log = logging.getLogger("pystol.faults")
LOCK_WAIT_POLL = 0.5


@dataclass
class Fault:
    target: TargetRef
    undo: str
    description: str
    inject: Callable[[], None]
    data: dict[str, Any] = field(default_factory=dict)
    api_version: str = "v1"


def lock_targets(ctx: RunContext, spec: JobSpec, refs: list[TargetRef]) -> bool:
    """Take the no-overlap locks, waiting or refusing as the job asked (`on_conflict`).
    Returns True when it had to wait: the targets chosen before may be stale by then."""
    keys = target_lock_keys(refs)
    announced = False
    deadline = time.monotonic() + ctx.settings.max_job_seconds
    while True:
        ctx.check()
        conflicts = ctx.locks.acquire(ctx.job_id, keys, ctx.settings.heartbeat_seconds)
        if not conflicts:
            ctx.locked = sorted(set(ctx.locked) | set(keys))
            return announced
        held = ", ".join(f"{target} (job {job})" for target, job in sorted(conflicts.items()))
        if spec.on_conflict == "reject":
            raise ActionError(f"refused: another running job holds a fault on {held}")
        if not announced:
            ctx.event(EventKind.WAITING, f"waiting for {held} to be released")
            announced = True
        if time.monotonic() > deadline:
            raise ActionError(f"gave up waiting for {held}")
        ctx.stop.wait(LOCK_WAIT_POLL)


def post_event(ctx: RunContext, fault: Fault, reason: str, message: str) -> None:
    try:
        ctx.cluster.post_event(fault.target, fault.api_version, reason, message)
    except Exception as error:
        log.warning("could not post %s event on %s: %s", reason, fault.target.name, error)


def hold_faults(ctx: RunContext, spec: JobSpec, action: str, faults: list[Fault],
                hold_seconds: float | None,
                after_inject: Callable[[], None] | None = None) -> None:
    """Inject every fault, hold, and revert them all whatever happens."""
    unknown = sorted({fault.undo for fault in faults} - set(ctx.undo_functions.names()))
    if unknown:
        raise ActionError(f"{action} would journal undo {', '.join(unknown)}, which no "
                          "registered action declares (Action.undo): nothing could revert "
                          "it, so nothing was injected")
    applied: list[tuple[Fault, JournalEntry, Change]] = []
    try:
        for fault in faults:
            ctx.check()
            entry = ctx.journal.record(JournalEntry(job_id=ctx.job_id, action=action,
                                                    undo=fault.undo, target=fault.target,
                                                    data=fault.data))
            at = time.time()
            try:
                fault.inject()
            except Exception:
                # The change may have half-happened: the undo is idempotent, so run it.
                try:
                    ctx.journal.undo(ctx.cluster, entry, ctx.undo_functions)
                except Exception as error:
                    log.warning("undo after failed injection kept for the reaper: %s", error)
                raise
            change = Change(target=fault.target, action=fault.description, started_at=utc(at))
            applied.append((fault, entry, change))
            ctx.result.changes.append(change)
            ctx.metrics.targets_affected += 1
            if ctx.metrics.injected_at is None:
                ctx.metrics.injected_at = change.at
            post_event(ctx, fault, "PystolChaos", f"{fault.description} by Pystol job "
                       f"{ctx.job_id}")
            ctx.event(EventKind.INJECTED, fault.description, target=fault.target.name,
                      namespace=fault.target.namespace)
        if after_inject is not None:
            after_inject()
        if hold_seconds:
            ctx.event(EventKind.HOLDING, f"holding {len(applied)} fault(s) for {hold_seconds:g}s")
            ctx.hold(hold_seconds)
    finally:
        revert_all(ctx, applied)


def revert_all(ctx: RunContext, applied: list[tuple[Fault, JournalEntry, Change]]) -> None:
    failures = []
    for fault, entry, change in reversed(applied):
        try:
            ctx.journal.undo(ctx.cluster, entry, ctx.undo_functions)
        except Exception as error:
            change.error = f"revert failed: {error}"
            failures.append(f"{fault.description}: {error}")
            ctx.event(EventKind.REVERT_FAILED, f"could not revert {fault.description}: {error}; "
                      "the reaper will retry")
            continue
        change.reverted_at = datetime.now(UTC)
        change.revert = f"undo {entry.undo}"
        ctx.metrics.reverted_at = change.reverted_at
        post_event(ctx, fault, "PystolRevert", f"reverted {fault.description} (Pystol job "
                   f"{ctx.job_id})")
        ctx.event(EventKind.REVERTED, f"reverted {fault.description}", target=fault.target.name,
                  namespace=fault.target.namespace)
    if failures:
        raise ActionError("revert failed (the journal keeps it for the reaper): "
                          + "; ".join(failures))
