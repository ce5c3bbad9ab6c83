"""The watcher's PystolExperiment and PystolClusterExperiment handlers.

- **create / resume / spec change**: one run per generation, started through the
  experiment service as the object (`cr_identity`: an operator of its own namespace, or
  the admin for the cluster-scoped kind) with the idempotency key
  `pystolexperiment:<uid>:<generation>`, so a restarted watcher finds the run it started
  instead of starting another. Before that, a namespaced object's every step target and
  probe namespace must be its own (`scope_problems`): otherwise `Failed` with a
  `Forbidden` condition, and nothing runs. An invalid spec, a refusal (permissions,
  policy, halt) is `Failed` with its reason; Redis down is a retry. A new generation
  first cancels the runs of the earlier ones (found by their idempotency keys, whatever
  the status says), refused or not: the object now says something else, and one object
  runs one experiment at a time.
- **follow** (a daemon while the run has not ended): polls the run and mirrors it into
  `status` (phase, verdict, score, steps, times); an Event when it ends.
- **delete** (behind the finalizer): cancel every run the object started, of every
  generation (running steps abort and revert, rollbacks run), and wait until they have
  all ended before the object goes — as a PystolAction checks every generation's job.

The watcher does not trust a status it did not write: `status.runId` is followed or
cancelled only when the run's actor is this object (`owns_run`); otherwise the object's
own run is found by its idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import redis

from pystol_api.watcher.cr_mapping import (
    GROUP,
    VERSION,
    CrInvalid,
    problems_message,
)
from pystol_api.watcher.experiment_mapping import (
    TERMINAL_EXPERIMENT_PHASES,
    experiment_spec_from_cr,
    experiment_status,
    refused_experiment_status,
    scope_problems,
)
from pystol_api.watcher.kinds import CrKind, cr_identity, in_own_namespace, owns_run
from pystol_worker.core.experiment_model import ActionStep, ExperimentRun, ExperimentSpec
from pystol_worker.core.model import Source
from pystol_worker.experiments.service import (
    AccessDenied,
    ChaosHalted,
    ExperimentService,
    IdempotencyConflict,
    JobInvalid,
    PolicyRefused,
    RunEnded,
    RunNotFound,
)

if TYPE_CHECKING:
    import kopf

    from pystol_api.watcher.operator import WatcherContext

log = logging.getLogger("pystol.watcher")
FOLLOW_POLL_SECONDS = 2.0
DELETE_WAIT_SECONDS = 30.0


def run_key(kind: CrKind, uid: str, generation: int | None) -> str:
    return f"{kind.key_prefix}:{uid}:{generation or 1}"


def _names(kind: CrKind, body: Any) -> tuple[str | None, str | None]:
    meta = body.get("metadata") or {}
    return (meta.get("namespace") if kind.namespaced else None), meta.get("name")


def _event(body: Any, reason: str, message: str, warning: bool = False) -> None:
    import kopf

    kopf.event(body, type="Warning" if warning else "Normal", reason=reason,
               message=message[:1024])


def _with_own_namespace(spec: ExperimentSpec, namespace: str, ctx: WatcherContext
                        ) -> ExperimentSpec:
    """URL-only steps (an http-probe naming no namespace) run as jobs of the object's own
    namespace, as a PystolAction's do."""
    def fix(step: Any) -> Any:
        if isinstance(step, ActionStep):
            return step.model_copy(update={"job": in_own_namespace(step.job, namespace,
                                                                   ctx.registry)})
        children = getattr(step, "steps", None)
        if children is not None:
            return step.model_copy(update={"steps": [fix(child) for child in children]})
        return step
    return spec.model_copy(update={"method": [fix(step) for step in spec.method],
                                   "rollbacks": [fix(step) for step in spec.rollbacks]})


def _own_run(ctx: WatcherContext, kind: CrKind, body: Any) -> ExperimentRun | None:
    """The run this object started: `status.runId` when its actor is this object, else
    the run of its current generation's idempotency key (None when there is none)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    service = ctx.experiments()
    run_id = status.get("runId")
    if run_id:
        try:
            run = service.run(str(run_id))
        except RunNotFound:
            run = None
        if run is not None and owns_run(kind, meta, run.actor):
            return run
        if run is not None:
            log.warning("%s: status.runId names run %s, which it did not start: ignored",
                        kind.where(*_names(kind, body)), run_id)
    submitter = cr_identity(kind, meta).actor.submitter
    found = service.store.idempotent_run_id(submitter, run_key(
        kind, str(meta.get("uid")), meta.get("generation")))
    if found is None:
        return None
    try:
        return service.run(found)
    except RunNotFound:
        return None


def _own_runs(ctx: WatcherContext, kind: CrKind, body: Any,
              before: int | None = None) -> list[ExperimentRun]:
    """Every run this object started, found by the idempotency keys of its generations
    1..current (or 1..`before`-1), plus `status.runId` when its actor is this object:
    what the run store says, whatever the status says (a refused later generation clears
    `runId` while an earlier run goes on)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    service = ctx.experiments()
    submitter = cr_identity(kind, meta).actor.submitter
    last = int(meta.get("generation") or 1) if before is None else before - 1
    ids: list[str] = []
    for generation in range(1, last + 1):
        found = service.store.idempotent_run_id(
            submitter, run_key(kind, str(meta.get("uid")), generation))
        if found is not None and found not in ids:
            ids.append(found)
    runs: list[ExperimentRun] = []
    for run_id in ids:
        try:
            runs.append(service.run(run_id))
        except RunNotFound:
            continue
    status_run = status.get("runId")
    if before is None and status_run and str(status_run) not in ids:
        try:
            run = service.run(str(status_run))
        except RunNotFound:
            run = None
        if run is not None and owns_run(kind, meta, run.actor):
            runs.append(run)
    return runs


def _cancel_runs(ctx: WatcherContext, kind: CrKind, body: Any, runs: list[ExperimentRun],
                 reason: str) -> list[str]:
    """Cancel the unfinished ones of `runs`; the ids cancelled now."""
    identity = cr_identity(kind, body.get("metadata") or {})
    cancelled = []
    for run in runs:
        if run.status.terminal:
            continue
        try:
            ctx.experiments().cancel(run.id, identity, reason)
        except RunEnded:
            continue
        cancelled.append(run.id)
    return cancelled


def reconcile_experiment(ctx: WatcherContext, body: Any, patch: Any, kind: CrKind) -> None:
    """Start this generation's run once, or say in the status why it cannot run."""
    import kopf

    meta, status = body.get("metadata") or {}, body.get("status") or {}
    namespace, name = _names(kind, body)
    generation = meta.get("generation")
    where = kind.where(namespace, name)
    if status.get("observedGeneration") == generation and status.get("phase"):
        return  # this generation was handled
    conditions = status.get("conditions")
    try:
        earlier = _own_runs(ctx, kind, body, before=int(generation or 1))
        for run_id in _cancel_runs(ctx, kind, body, earlier,
                                   f"{where} changed (generation {generation})"):
            log.info("%s: generation %s cancels run %s", where, generation, run_id)
            _event(body, "Cancelling", f"the spec changed: cancelling run {run_id} of an "
                   "earlier generation")
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the job store (PYSTOL_REDIS_URL) is unavailable: {error}",
                                  delay=5) from error

    def refuse(reason: str, message: str) -> None:
        log.warning("%s: %s", where, message)
        _event(body, reason, message, warning=True)
        patch.status.update(refused_experiment_status(reason, message, generation,
                                                      conditions))

    from pystol_api.watcher.operator import _plain

    try:
        spec = experiment_spec_from_cr(_plain(body.get("spec") or {}), name)
    except CrInvalid as invalid:
        refuse("InvalidSpec", problems_message(invalid))
        return
    if namespace is not None:
        spec = _with_own_namespace(spec, namespace, ctx)
        outside = scope_problems(spec, namespace)
        if outside:
            refuse("Forbidden", problems_message(
                CrInvalid(outside), prefix=f"a {kind.kind} acts only in its own namespace, "
                f"{namespace} (node-level steps and other namespaces are for "
                "PystolClusterExperiments, which only cluster admins can create)"))
            return
    identity = cr_identity(kind, meta)
    key = run_key(kind, str(meta.get("uid")), generation)
    try:
        run = ctx.experiments().start(spec, Source.CR, identity, idempotency_key=key)
    except JobInvalid as invalid:
        refuse("InvalidSpec", "invalid spec: " + "; ".join(
            f"spec.{problem.loc}: {problem.msg}" for problem in invalid.problems[:20]))
        return
    except AccessDenied as denied:
        refuse("Forbidden", f"forbidden: {denied.loc + ': ' if denied.loc else ''}"
                            f"{denied.detail}")
        return
    except PolicyRefused as refused:
        refuse("PolicyRefused", f"refused by the admin policy: {refused}")
        return
    except ChaosHalted as halted:
        refuse("ChaosHalted", f"refused: {halted}")
        return
    except IdempotencyConflict:
        found = _own_run(ctx, kind, body)
        if found is None:
            raise kopf.TemporaryError("the run of this generation cannot be found",
                                      delay=5) from None
        run = found
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the job store (PYSTOL_REDIS_URL) is unavailable: {error}",
                                  delay=5) from error
    log.info("%s: run %s started", where, run.id)
    _event(body, "RunStarted", f"run {run.id} started")
    patch.status.update(experiment_status(run, generation, conditions))


async def follow_experiment(ctx: WatcherContext, body: Any, stopped: Any,
                            kind: CrKind) -> None:
    """Mirror the object's run into its status until the run ends (a kopf daemon)."""
    import kopf

    namespace, name = _names(kind, body)
    where = kind.where(namespace, name)
    status = body.get("status") or {}
    generation = status.get("observedGeneration")
    try:
        run = await asyncio.to_thread(_own_run, ctx, kind, body)
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the job store is unavailable: {error}", delay=5) from error
    if run is None:
        return
    last: dict[str, Any] = {}
    while not stopped:
        live = body.get("status") or {}  # kopf keeps a daemon's body up to date
        if live.get("runId") and str(live["runId"]) != run.id:
            # A new generation started its own run (and cancelled this one): follow that
            # one, or this run's last status would be written over the new one's.
            try:
                newer = await asyncio.to_thread(_own_run, ctx, kind, body)
            except redis.RedisError as error:
                log.warning("%s: cannot read its run: %s", where, error)
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                continue
            if newer is None:
                return
            run, status, last = newer, live, {}
            generation = live.get("observedGeneration")
        try:
            run = await asyncio.to_thread(ctx.experiments().run, run.id)
        except RunNotFound:
            await asyncio.to_thread(ctx.patch_status, kind.plural, namespace, str(name),
                                    {"phase": "Failed",
                                     "message": f"run {run.id} is not stored any more"})
            return
        except redis.RedisError as error:
            log.warning("%s: cannot read run %s: %s", where, run.id, error)
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
            continue
        new = experiment_status(run, generation, status.get("conditions"))
        compared = {key: value for key, value in new.items() if key != "conditions"}
        if compared != last:
            if not await asyncio.to_thread(ctx.patch_status, kind.plural, namespace,
                                           str(name), new):
                return  # the object is gone
            last = compared
        if new["phase"] in TERMINAL_EXPERIMENT_PHASES:
            _event(body, f"Run{new['phase']}", new["message"],
                   warning=new["phase"] != "Completed" or run.verdict is None
                   or run.verdict.value != "passed")
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


async def abort_experiment(ctx: WatcherContext, body: Any, patch: Any,
                           kind: CrKind) -> None:
    """Before the object goes: cancel every run it started (every generation's) and wait
    until they have all ended (rolled back)."""
    import kopf

    where = kind.where(*_names(kind, body))
    try:
        runs = await asyncio.to_thread(_own_runs, ctx, kind, body)
        if not runs:
            return
        cancelled = await asyncio.to_thread(_cancel_runs, ctx, kind, body, runs,
                                            f"deletion of {where}")
        if cancelled:
            _event(body, "Cancelling", f"deleted: cancelling run{'s' * (len(cancelled) > 1)} "
                   f"{', '.join(cancelled)}; the object goes once the rollbacks have run")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELETE_WAIT_SECONDS
        while True:
            going = [run for run in runs if not run.status.terminal]
            if not going or loop.time() >= deadline:
                break
            await asyncio.sleep(1.0)
            runs = [run if run.status.terminal else
                    await asyncio.to_thread(ctx.experiments().run, run.id) for run in runs]
        going = [run for run in runs if not run.status.terminal]
        if going:
            raise kopf.TemporaryError(
                f"run {going[0].id} is still {going[0].status.value}: waiting for its steps "
                "to revert and its rollbacks to run", delay=1)
        patch.status.update(experiment_status(runs[-1], (body.get("status") or {}).get(
            "observedGeneration"), (body.get("status") or {}).get("conditions")))
    except redis.RedisError as error:
        raise kopf.TemporaryError(f"the job store is unavailable: {error}", delay=5) from error


def register(registry: kopf.OperatorRegistry, ctx: WatcherContext, kind: CrKind) -> None:
    """A PystolExperiment's or PystolClusterExperiment's handlers: the same code."""
    import kopf

    plural = kind.plural

    @kopf.on.create(GROUP, VERSION, plural, registry=registry, id="run", backoff=2)
    @kopf.on.resume(GROUP, VERSION, plural, registry=registry, id="resume-run", backoff=2)
    @kopf.on.update(GROUP, VERSION, plural, registry=registry, id="rerun", field="spec",
                    backoff=2)
    def changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        reconcile_experiment(ctx, body, patch, kind)

    def following(status: kopf.Status, **_: Any) -> bool:
        return bool(status.get("runId")) and \
            status.get("phase") not in TERMINAL_EXPERIMENT_PHASES

    @kopf.daemon(GROUP, VERSION, plural, registry=registry, id="follow-run", when=following,
                 backoff=2, cancellation_backoff=5, cancellation_timeout=5)
    async def follow(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await follow_experiment(ctx, body, stopped, kind)

    @kopf.on.delete(GROUP, VERSION, plural, registry=registry, id="cancel-run", backoff=1)
    async def deleted(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await abort_experiment(ctx, body, patch, kind)


def build_service(ctx: WatcherContext) -> ExperimentService:
    """The experiment service for the watcher, on its submission service; advances go to
    the workers through Celery (the engine's `CeleryAdvances`)."""
    from pystol_worker.process.celery_app import CeleryAdvances

    advances = CeleryAdvances(ctx.settings)
    return ExperimentService(ctx.redis, ctx.settings, ctx.submissions.policy,
                             ctx.submissions, advances.send, audit=ctx.submissions.audit,
                             send_advance_later=advances.send_later)
