"""Rehearsals the worker runs (the dashboard's "Rehearse", `POST …/rehearse`).

`pystol rehearse --snapshot FILE` runs on a person's machine with a snapshot they made.
A rehearsal asked of the server has no file: the worker makes the snapshot itself, from
the real cluster, limited to the namespaces the experiment touches (and every node) —
read-only lists with its own credentials (`cluster_snapshot.py`) — and then runs the same
rehearsal (`engine.rehearse`) on a private copy of it.

`RehearsalService`:
- `start(spec, identity)` checks the caller exactly as starting the experiment would
  (`ExperimentService.check_steps`: `jobs.submit` in every namespace its steps target or
  its probes read, `cluster.chaos` for node steps, the admin policy), because the
  rehearsal *reads* those namespaces to copy them and shows what is in them. It stores a
  queued `RehearsalRun` with that grant sealed over (run id, spec) and sends it to the
  worker (`send`, the `pystol.rehearse` task in production);
- `execute(run_id, cluster, ...)` is the task's body: it verifies the seal (a record
  edited in Redis to copy another tenant's namespace is refused), takes one of the
  rehearsal slots (a Redis counter: `PYSTOL_MAX_REHEARSALS`-style bound, default 1 per
  cluster, so rehearsals never crowd out chaos), snapshots, rehearses, stores the report.
  A run that cannot get a slot stays queued and says why; the caller retries the send.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import redis
import yaml
from pydantic import Field

from pystol_worker.core.access import Actor, Grant, Identity, is_sealed, seal
from pystol_worker.core.experiment_model import ExperimentSpec
from pystol_worker.core.model import Run, utcnow
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster_access import ClusterAccess
from pystol_worker.rehearsal import cluster_snapshot
from pystol_worker.rehearsal.engine import rehearse
from pystol_worker.rehearsal.report import RehearsalReport

PREFIX = "pystol:"
SLOTS_KEY = f"{PREFIX}rehearsals:slots"
DEFAULT_SLOTS = 1
#: A slot is held at most this long (a worker killed mid-rehearsal frees it by expiry).
SLOT_SECONDS = 3600


class RehearsalStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"   # the report is there (whatever the verdict on the copy)
    FAILED = "failed"         # the rehearsal itself could not run: `error` says why


class RehearsalNotFound(KeyError):
    """404: no rehearsal of that id (or one the caller may not read)."""


class RehearsalRefused(Exception):
    """The stored record does not carry a valid seal: refused, nothing read."""


class RehearsalRun(Run):
    """One rehearsal the worker ran (or will): its copy of the spec, who asked, the
    report."""

    id: str = Field(examples=["r-20261206T120000-1a2b3c4d"])
    experiment: str
    spec: ExperimentSpec
    status: RehearsalStatus = RehearsalStatus.QUEUED
    submitter: str
    actor: Actor | None = None
    grant: Grant | None = None
    speed: float | None = Field(None, description="None: auto.")
    created_at: datetime
    reason: str | None = None
    report: RehearsalReport | None = None


def new_rehearsal_id(now: datetime) -> str:
    return f"r-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"


def _key(run_id: str) -> str:
    return f"{PREFIX}rehearsal:{run_id}"


def _payload(run: RehearsalRun, grant: Grant) -> bytes:
    return grant.payload(run.id, run.spec.model_dump(mode="json"))


class RehearsalService:
    """Start, read and execute server-side rehearsals; see the module docstring."""

    def __init__(self, redis_client: redis.Redis, settings: Settings,
                 check: Callable[[ExperimentSpec, Identity], Grant],
                 send: Callable[[str], None], *, slots: int = DEFAULT_SLOTS,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.redis = redis_client
        self.settings = settings
        self.check = check
        self.send = send
        self.slots = slots
        self.clock = clock

    # -- the API side ----------------------------------------------------------------------

    def start(self, spec: ExperimentSpec, identity: Identity, *,
              speed: float | None = None) -> RehearsalRun:
        """Check as a run would be checked (raises what `ExperimentService.start` raises),
        store the run queued with the grant sealed, send it."""
        grant = self.check(spec, identity)
        now = self.clock()
        run = RehearsalRun(id=new_rehearsal_id(now), experiment=spec.name, spec=spec,
                           submitter=identity.actor.submitter, actor=identity.actor,
                           speed=speed, created_at=now)
        grant = grant.model_copy(update={"signature": ""})
        grant.signature = seal(self.settings.signing_key_bytes, _payload(run, grant))
        run.grant = grant
        self._save(run)
        self.send(run.id)
        return run

    def get(self, run_id: str, identity: Identity | None = None) -> RehearsalRun:
        """The run; RehearsalNotFound when missing, or when `identity` may not `jobs.read`
        in every namespace it copies (and at cluster scope for one whose grant acts
        there). Having asked for it is not enough: the name may be someone else's now."""
        from pystol_worker.core.access import Permission

        raw = self.redis.get(_key(run_id))
        if raw is None:
            raise RehearsalNotFound(run_id)
        run = RehearsalRun.model_validate_json(raw)
        if identity is not None:
            namespaces = run.grant.namespaces if run.grant else []
            cluster = run.grant.cluster if run.grant else True
            authority = identity.authority
            if (cluster or not namespaces) and not authority.allows(Permission.JOBS_READ, None):
                raise RehearsalNotFound(run_id)
            if not all(authority.allows(Permission.JOBS_READ, ns) for ns in namespaces):
                raise RehearsalNotFound(run_id)
        return run

    def _save(self, run: RehearsalRun) -> None:
        self.redis.set(_key(run.id), run.model_dump_json(),
                       ex=int(self.settings.job_retention_seconds))

    # -- the worker side -------------------------------------------------------------------

    def execute(self, run_id: str, cluster: ClusterAccess, policy: Policy, *,
                workdir: Path | None = None) -> RehearsalRun:
        """The `pystol.rehearse` task: snapshot, rehearse, store the report."""
        run = self.get(run_id)
        if run.status != RehearsalStatus.QUEUED:
            return run  # delivered twice: the first delivery has it
        grant = run.grant
        if grant is None or not is_sealed(self.settings.signing_key_bytes,
                                          _payload(run, grant), grant.signature):
            return self._end(run, RehearsalStatus.FAILED, "refused: the stored rehearsal "
                             "does not carry a valid grant (edited in Redis?)")
        outside = [ns for ns in run.spec.namespaces() if ns not in grant.namespaces]
        if outside and not grant.cluster:
            return self._end(run, RehearsalStatus.FAILED, "refused: the grant does not "
                             f"cover namespace(s) {', '.join(outside)}")
        # The seal covers the run id and the spec, not the speed: read back from Redis, it
        # is checked again (a speed of 1e9 would make every timer fire at once).
        if run.speed is not None and not 1 <= run.speed <= 100:
            return self._end(run, RehearsalStatus.FAILED, f"refused: speed {run.speed:g} is "
                             "outside 1..100")
        if not self._take_slot():
            run.reason = (f"waiting: {self.slots} rehearsal(s) already running; "
                          "retry later")
            self._save(run)
            return run
        try:
            run.status, run.started_at = RehearsalStatus.RUNNING, self.clock()
            self._save(run)
            with tempfile.TemporaryDirectory(prefix="pystol-rehearsal-",
                                             dir=workdir) as tmp:
                where = Path(tmp)
                copied = cluster_snapshot.snapshot(cluster, run.spec.namespaces())
                snapshot_file = where / "cluster.yaml"
                snapshot_file.write_text(yaml.safe_dump(copied, sort_keys=False))
                report = rehearse(run.spec, snapshot_file, speed=run.speed,
                                  settings=self.settings, policy=policy, workdir=where)
            report.snapshot = f"{len(copied['items'])} objects of namespaces " + \
                ", ".join(sorted(set(run.spec.namespaces()))) + " (and every node)"
            run.report = report
            return self._end(run, RehearsalStatus.COMPLETED, None)
        except Exception as error:
            return self._end(run, RehearsalStatus.FAILED, f"{type(error).__name__}: {error}")
        finally:
            self._release_slot()

    def _end(self, run: RehearsalRun, status: RehearsalStatus, error: str | None
             ) -> RehearsalRun:
        run.status, run.error, run.ended_at = status, error, self.clock()
        run.reason = None if error is None else error[:1000]
        self._save(run)
        return run

    def _take_slot(self) -> bool:
        taken = int(self.redis.incr(SLOTS_KEY))
        self.redis.expire(SLOTS_KEY, SLOT_SECONDS)
        if taken > self.slots:
            self.redis.decr(SLOTS_KEY)
            return False
        return True

    def _release_slot(self) -> None:
        if int(self.redis.decr(SLOTS_KEY)) < 0:
            self.redis.set(SLOTS_KEY, 0, ex=SLOT_SECONDS)

