"""The one way experiments are stored, started, followed, cancelled and resumed.

Every surface (the HTTP API, the CLI through it, the PystolExperiment watcher, schedules,
the in-process rehearsal) calls `ExperimentService`; none repeats a check. It mirrors
`jobs/submission.py: SubmissionService` and raises the same exceptions, so each surface
maps them the way it already maps a job's:

- `ExperimentInvalid` (the model's raw-shape check: `loc` is a tuple path) and
  `JobInvalid` (every problem with a field path such as
  `method[1].steps[0].job.target.namespaces[0]`) → 422;
- `AccessDenied` → 403 (`loc` names the field that asked for it); `PolicyRefused` → 403;
- `ChaosHalted` → 409 (or 423, as jobs do);
- `ExperimentNotFound` / `RunNotFound` → 404 (also when the caller may not read it: a
  hidden experiment is indistinguishable from a missing one);
- `VersionConflict` → 412 (`If-Match` did not match the stored version);
- `RunEnded`, `NotSuspended` → 409;
- `IdempotencyConflict` → 409 (a start key reused for a different experiment).

Why a service and not functions in the routes: the run is started with a grant sealed
over (run id, spec) — what the starter was allowed, in every namespace the experiment
touches (targets *and* probes) — and the engine (`engine.py`) submits each step later on
their behalf with exactly that authority, as a schedule fires on behalf of whoever last
changed it. The check on the way in and the check in the worker must be the same code.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from pydantic import BaseModel, Field, ValidationError

from pystol_worker.actions.registry import ActionRegistry
from pystol_worker.core.access import (
    AccessDenied,
    Actor,
    ActorKind,
    Authority,
    Grant,
    GrantAuthority,
    Identity,
    Permission,
    is_sealed,
    seal,
)
from pystol_worker.core.experiment_model import (
    ActionStep,
    ExperimentInvalid,
    ExperimentRun,
    ExperimentRunPage,
    ExperimentSpec,
    ProbeStep,
    StepStatus,
    check_shape,
    describe_bound,
)
from pystol_worker.core.model import (
    EventKind,
    JobRecord,
    JobSpec,
    Source,
    TimelineEvent,
    utcnow,
)
from pystol_worker.core.names import DNS_LABEL
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import (
    PolicyRefused,
    ResolveBudget,
    grant_for,
    policy_problems,
)
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.jobs.validation import FieldProblem, JobInvalid, validate_job
from pystol_worker.safety.outbound_http import Resolver, resolve_host
from pystol_worker.store.audit_log import AuditLog
from pystol_worker.store.halt import ChaosHalted
from pystol_worker.store.job_store import IdempotencyConflict
from pystol_worker.store.run_signals import stop_run

from .engine import AFTER, BEFORE, ExperimentEngine, initial_steps, nodes_of, step_job_spec
from .store import (
    RUNS_KEY,
    ExperimentStore,
    StoredRunNotFound,
    new_run_id,
    runs_namespace_key,
    runs_submitter_key,
)
from .sweep import sweep

log = logging.getLogger("pystol.experiments")
#: A listing's bounds per request, whatever the installation holds: items returned,
#: index rows examined (then a cursor), and namespaces asked one by one for a caller whose
#: namespaces are not a list (Kubernetes RBAC).
MAX_LIST = 100
MAX_EXAMINED = 500
MAX_ASKED_NAMESPACES = 200

__all__ = [
    "AccessDenied",
    "ChaosHalted",
    "ExperimentExists",
    "ExperimentInvalid",
    "ExperimentNotFound",
    "ExperimentPage",
    "ExperimentService",
    "FieldProblem",
    "IdempotencyConflict",
    "JobInvalid",
    "NotSuspended",
    "PolicyRefused",
    "RunEnded",
    "RunNotFound",
    "StoredExperiment",
    "VersionConflict",
    "field_path",
    "parse_experiment",
]


class ExperimentNotFound(KeyError):
    """404: no experiment of that name (or one the caller may not read)."""


class RunNotFound(KeyError):
    """404: no run of that id (or one the caller may not read)."""


class ExperimentExists(Exception):
    """409: `put(..., create_only=True)` for a name that is taken."""


class VersionConflict(Exception):
    """412: the stored document's version is not the `if_match` the caller read."""

    def __init__(self, name: str, expected: int, actual: int) -> None:
        super().__init__(f"experiment {name!r} is at version {actual}, not {expected}: "
                         "read it again and retry")
        self.expected = expected
        self.actual = actual


class RunEnded(Exception):
    """409: the run has already ended (cancel, resume)."""


class ExperimentChanged(Exception):
    """A start on a grant sealed over one version of the document (a schedule's) found
    another: what would run is not what was granted."""


def document_digest(spec: ExperimentSpec) -> str:
    """A digest of what an experiment document runs (its spec, canonical JSON): a
    schedule seals it with its grant, so an edit of the document after the schedule was
    granted is refused at the fire rather than run with the schedule owner's grant."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class NotSuspended(Exception):
    """409: resume named a step that is not a suspend step waiting now."""


class StoredExperiment(BaseModel):
    """An experiment document as stored: the spec, who wrote it, and its version (the
    API's ETag; `put(if_match=...)` compares it)."""

    name: str
    spec: ExperimentSpec
    namespaces: list[str] = Field(default_factory=list,
                                  description="Every namespace its steps target or its "
                                              "probes read.")
    version: int = 1
    source: Source = Source.API
    created_at: datetime
    updated_at: datetime
    created_by: Actor | None = None
    updated_by: Actor | None = None
    grant: Grant | None = Field(None, description="What updated_by was allowed, sealed: "
                                                  "schedules and custom resources start "
                                                  "runs with it.")


class ExperimentPage(BaseModel):
    items: list[StoredExperiment]
    next_cursor: str | None = None


_UNION_TAGS = frozenset({"action", "probe", "serial", "parallel", "wait", "suspend", "release",
                         "http", "k8s", "prometheus"})


def field_path(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """`('method', 1, 'steps', 0, 'job', 'target')` → `method[1].steps[0].job.target`
    (pydantic's discriminated-union tags dropped: users never wrote them)."""
    text = ""
    previous: str | int | None = None
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(previous, int) and part in _UNION_TAGS:
            pass
        else:
            text += ("." if text else "") + str(part)
        previous = part
    return text


def parse_experiment(raw: Any) -> ExperimentSpec:
    """A document (parsed JSON or YAML) as an ExperimentSpec; JobInvalid with every
    problem and its field path otherwise. The raw shape is checked first (size, depth,
    step count, parallel width), without recursion, so a hostile document costs no more
    than its bytes."""
    try:
        check_shape(raw)
    except ExperimentInvalid as invalid:
        raise JobInvalid([FieldProblem(field_path(invalid.loc), invalid.message)]) from None
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors()[:50]:
            cause = (item.get("ctx") or {}).get("error")
            loc = field_path(item["loc"])
            if isinstance(cause, ExperimentInvalid):
                loc = field_path(cause.loc) or loc
            problems.append(FieldProblem(loc, item["msg"]))
        raise JobInvalid(problems) from None


def _prefixed(error: JobInvalid, prefix: str) -> JobInvalid:
    return JobInvalid([FieldProblem(f"{prefix}.{problem.loc}", problem.msg)
                       for problem in error.problems])


def experiment_grant(spec: ExperimentSpec, identity: Identity, *, registry: ActionRegistry,
                     settings: Settings, policy: Policy, now: datetime,
                     permission: Permission = Permission.JOBS_SUBMIT,
                     resolve: ResolveBudget | None = None) -> Grant:
    """Every job the experiment would submit, validated and authorized as the
    submission service would (field paths under each step), the hypothesis and
    probe steps' namespaces, the admin policy; returns the union grant (unsealed).
    `permission`: jobs.submit to run, experiments.write to store the document.

    The cheap checks of the whole document (each job's shape, the caller's permissions,
    the bound against PYSTOL_MAX_EXPERIMENT_SECONDS) come first; only a document that
    passes them gets the admin policy's checks, whose URL checks resolve names. Those
    share one `ResolveBudget` for the whole document (`resolve`, a fresh one of
    RESOLVE_SECONDS by default): a hundred steps naming hosts on a dead name server
    cost one budget, not one each; names left unresolved are judged by the worker."""
    who = identity.actor.submitter
    if permission != Permission.JOBS_SUBMIT:
        identity = Identity(identity.actor, _Instead(identity.authority, permission))
    invalid: list[FieldProblem] = []
    refused: list[FieldProblem] = []
    checked: list[tuple[str, JobSpec, Any, Any]] = []
    namespaces: set[str] = set()
    cluster = False
    steps, rollbacks = initial_steps(spec)
    nodes = nodes_of(spec)
    paths = [step.path for step in [*steps, *rollbacks]
             if step.path in (BEFORE, AFTER)
             or isinstance(nodes.get(step.path), ActionStep | ProbeStep)]
    for path in paths:
        prefix = "hypothesis" if path in (BEFORE, AFTER) else f"{path}.job"
        if isinstance(nodes.get(path), ProbeStep):
            prefix = path
        try:
            job = step_job_spec(spec, path, "x-00000000T000000-000000")
        except ValidationError as error:
            invalid += [FieldProblem(f"{prefix}.{field_path(item['loc'])}", item["msg"])
                        for item in error.errors()[:20]]
            continue
        try:
            action, params = validate_job(job, registry, settings)
        except JobInvalid as error:
            invalid += _prefixed(error, prefix).problems
            continue
        try:
            grant = grant_for(job, action, params, identity, policy)
        except AccessDenied as denied:
            loc = f"{prefix}.{denied.loc}" if denied.loc else prefix
            if prefix == "hypothesis" or isinstance(nodes.get(path), ProbeStep):
                # The check's job is built by the engine: name the probe the user wrote.
                loc = (_where(spec, denied.namespace) if denied.namespace else None) \
                    or loc
            raise AccessDenied(denied.detail, loc=loc, permission=denied.permission,
                               namespace=denied.namespace) from None
        namespaces.update(grant.namespaces)
        cluster = cluster or grant.cluster
        checked.append((prefix, job, action, params))
    bound = spec.deadline if spec.deadline is not None else \
        spec.bound_seconds(settings.recovery_timeout_seconds)
    limit = settings.max_experiment_seconds
    if bound > limit:
        where = "deadline" if spec.deadline is not None else "method"
        invalid.append(FieldProblem(where, f"the run may take up to "
                                    f"{describe_bound(bound)}; this installation allows "
                                    f"at most {describe_bound(limit)} "
                                    "(PYSTOL_MAX_EXPERIMENT_SECONDS)"))
    if invalid:
        raise JobInvalid(invalid)
    # Every namespace the experiment touches, its probes' included, is the caller's.
    for index, namespace in enumerate(spec.namespaces()):
        if not identity.authority.allows(permission, namespace):
            raise AccessDenied(f"{who} may not {permission.value} in namespace "
                               f"{namespace!r}, which the experiment touches",
                               loc=_where(spec, namespace) or f"namespaces[{index}]",
                               permission=permission, namespace=namespace)
    budget = resolve if resolve is not None else ResolveBudget()
    for prefix, job, action, params in checked:
        refused += [FieldProblem(f"{prefix}.{problem.loc}", problem.msg)
                    for problem in policy_problems(job, action, params, policy, now,
                                                   settings=settings, resolve=budget)]
    if refused:
        raise PolicyRefused(refused)
    return Grant(submitter=who, namespaces=sorted(namespaces | set(spec.namespaces())),
                 cluster=cluster)


def _where(spec: ExperimentSpec, namespace: str) -> str | None:
    """The first field that names `namespace` (for a 403's field path)."""
    if spec.hypothesis is not None:
        for index, probe in enumerate(spec.hypothesis.probes):
            if namespace in probe.namespaces():
                return f"hypothesis.probes[{index}]"
    for path, node in nodes_of(spec).items():
        if isinstance(node, ActionStep):
            if namespace in node.job.target.namespaces:
                return f"{path}.job.target.namespaces"
            for index, probe in enumerate(node.job.probes):
                if namespace in probe.namespaces():
                    return f"{path}.job.probes[{index}]"
        elif isinstance(node, ProbeStep):
            for index, probe in enumerate(node.probes):
                if namespace in probe.namespaces():
                    return f"{path}.probes[{index}]"
    return None


@dataclass(frozen=True)
class _Instead:
    """An authority asked `permission` wherever a job check asks `jobs.submit`: storing a
    document needs `experiments.write` where running it needs `jobs.submit` (and
    `cluster.chaos` stays `cluster.chaos`)."""

    authority: Authority
    permission: Permission

    def allows(self, permission: Permission, namespace: str | None) -> bool:
        asked = self.permission if permission == Permission.JOBS_SUBMIT else permission
        return self.authority.allows(asked, namespace)


class ExperimentService:
    """Experiment documents and runs; see the module docstring.

    Everything is injected (built once per process), so the API, the watcher, the worker
    and the rehearsal each pass their own: `send_advance(run_id)` is Celery's
    `pystol.advance_experiment` in production and a local queue in a rehearsal;
    `send_advance_later(run_id, seconds)` (optional) does the same after a delay, so that
    waits and holds are noticed on time rather than at the next reaper pass."""

    def __init__(self, redis_client: redis.Redis, settings: Settings, policy: Policy,
                 submission: SubmissionService, send_advance: Callable[[str], None], *,
                 audit: AuditLog | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 send_advance_later: Callable[[str, float], None] | None = None,
                 resolver: Resolver = resolve_host) -> None:
        self.redis = redis_client
        self.resolver = resolver  # names in URL steps, at submission (ResolveBudget)
        self.settings = settings
        self.policy = policy
        self.submission = submission
        self.send_advance = send_advance
        self.audit = audit
        self.clock = clock
        self.store = ExperimentStore(redis_client, settings.job_retention_seconds, clock)
        self.engine = ExperimentEngine(self.store, submission.store, submission,
                                       settings.signing_key_bytes, send_advance,
                                       send_advance_later=send_advance_later, clock=clock)

    # -- checks ----------------------------------------------------------------------------

    def check_steps(self, spec: ExperimentSpec, identity: Identity, *,
                    permission: Permission = Permission.JOBS_SUBMIT) -> Grant:
        """`experiment_grant` with this service's registry, settings, policy and clock."""
        return experiment_grant(spec, identity, registry=self.submission.registry,
                                settings=self.settings, policy=self.policy, now=self.clock(),
                                permission=permission,
                                resolve=ResolveBudget(resolver=self.resolver))

    def _may(self, identity: Identity, permission: Permission, namespaces: list[str],
             cluster: bool = False) -> bool:
        """What the identity may do now in every namespace (and at cluster scope, for a run
        whose grant acts there) decides, not who started a run or stored a document: a
        token name can be revoked and created again for someone else, and a Kubernetes
        user can lose a RoleBinding."""
        if (cluster or not namespaces) and not identity.authority.allows(permission, None):
            return False
        return all(identity.authority.allows(permission, namespace)
                   for namespace in namespaces)

    @staticmethod
    def _run_scope(run: ExperimentRun) -> tuple[list[str], bool]:
        """The namespaces a run's grant covers, and whether it acts at cluster scope."""
        if run.grant is None:
            return run.spec.namespaces(), False
        return list(run.grant.namespaces), run.grant.cluster

    # -- documents -------------------------------------------------------------------------

    def _load(self, name: str) -> tuple[StoredExperiment, bytes] | None:
        raw = self.store.get_document(name)
        if raw is None:
            return None
        try:
            return StoredExperiment.model_validate_json(raw), raw
        except ValueError:
            log.warning("experiment %s: unreadable document", name)
            return None

    def put(self, spec: ExperimentSpec, identity: Identity, *, if_match: int | None = None,
            create_only: bool = False, source: Source = Source.API) -> StoredExperiment:
        """Create or replace the document named `spec.name`. Needs `experiments.write` in
        every namespace the experiment touches (and `cluster.chaos` for node-level
        steps); every action step is validated as a job (JobInvalid with paths under
        `method[i]...job.`). `if_match`: VersionConflict unless the stored version is that
        one (0: must not exist yet). `create_only`: ExperimentExists when taken. Audits
        `experiment.put`."""
        try:
            grant = self.check_steps(spec, identity, permission=Permission.EXPERIMENTS_WRITE)
            if not spec.namespaces() and not identity.authority.allows(
                    Permission.EXPERIMENTS_WRITE, None):
                # Only cluster-wide readers can see a document of no namespace: a
                # namespaced writer could store it but never read, replace or delete it.
                raise AccessDenied(
                    f"{identity.actor.submitter} may not store an experiment that touches "
                    "no namespace (only cluster-wide readers could see it): name a "
                    "namespace in a step or probe", loc="method",
                    permission=Permission.EXPERIMENTS_WRITE)
        except (JobInvalid, AccessDenied, PolicyRefused) as error:
            self._audit(identity, "experiment.put", "refused", spec.name, spec.namespaces(),
                        str(error))
            raise
        now = self.clock()
        for _ in range(5):
            found = self._load(spec.name)
            old, raw = found if found is not None else (None, None)
            if old is not None and not self._may(identity, Permission.EXPERIMENTS_WRITE,
                                                 old.namespaces):
                if not self._may(identity, Permission.EXPERIMENTS_READ, old.namespaces):
                    raise ExperimentNotFound(spec.name)  # hidden, as GET hides it
                raise AccessDenied(f"{identity.actor.submitter} may not replace experiment "
                                   f"{spec.name!r}", loc="name",
                                   permission=Permission.EXPERIMENTS_WRITE)
            if create_only and old is not None:
                raise ExperimentExists(f"experiment {spec.name!r} exists")
            version = old.version if old is not None else 0
            if if_match is not None and if_match != version:
                raise VersionConflict(spec.name, if_match, version)
            stored = StoredExperiment(
                name=spec.name, spec=spec, namespaces=spec.namespaces(), version=version + 1,
                source=source, created_at=old.created_at if old else now, updated_at=now,
                created_by=old.created_by if old else identity.actor,
                updated_by=identity.actor, grant=grant)
            stored = stored.model_copy(update={"grant": grant.model_copy(update={
                "signature": seal(self.settings.signing_key_bytes,
                                  grant.payload(spec.name, spec.model_dump(mode="json")))})})
            if self.store.put_document(spec.name, stored.model_dump_json(), stored.namespaces,
                                       old.namespaces if old else [], raw, check=True):
                self._audit(identity, "experiment.put", "ok", spec.name, stored.namespaces,
                            f"version {stored.version}")
                return stored
        raise VersionConflict(spec.name, if_match or 0, -1)

    def get(self, name: str, identity: Identity) -> StoredExperiment:
        """ExperimentNotFound when missing or when the caller lacks `experiments.read` in
        any of its namespaces (hidden, not 403)."""
        found = self._load(name) if DNS_LABEL.fullmatch(name) else None
        if found is None or not self._may(identity, Permission.EXPERIMENTS_READ,
                                          found[0].namespaces):
            raise ExperimentNotFound(name)
        return found[0]

    def _readable_namespaces(self, identity: Identity, permission: Permission
                             ) -> builtins.list[str] | None:
        """The namespaces the caller may use `permission` in; None: every one (cluster
        scope). What a listing reads from, so that it never reads what it may not show."""
        if identity.authority.allows(permission, None):
            return None
        listed = getattr(identity.authority, "namespaces", None)
        candidates = sorted(listed) if isinstance(listed, frozenset) else \
            self.store.known_namespaces(MAX_ASKED_NAMESPACES)
        return [namespace for namespace in candidates
                if identity.authority.allows(permission, namespace)]

    def list(self, identity: Identity, *, namespace: str | None = None,
             tag: str | None = None, cursor: str | None = None,
             limit: int = 50) -> ExperimentPage:
        """Documents the caller may read, by name; `next_cursor` for the next page. Read
        from the per-namespace indexes of the namespaces the caller may read (a document
        of no namespace is for cluster-wide readers), at most MAX_EXAMINED per request."""
        limit = max(1, min(limit, MAX_LIST))
        readable = self._readable_namespaces(identity, Permission.EXPERIMENTS_READ)
        if namespace is not None:
            indexes: builtins.list[str | None] = \
                [namespace] if readable is None or namespace in readable else []
        else:
            indexes = [None] if readable is None else builtins.list(readable)
        items: builtins.list[StoredExperiment] = []
        after = cursor
        examined = 0
        while indexes and len(items) < limit and examined < MAX_EXAMINED:
            count = min(100, MAX_EXAMINED - examined)
            names = sorted({name for index in indexes
                            for name in self.store.document_names(index, after, count)}
                           )[:count]
            if not names:
                after = None
                break
            examined += len(names)
            for name in names:
                after = name
                found = self._load(name)
                if found is None:
                    continue
                stored = found[0]
                if tag is not None and tag not in stored.spec.tags:
                    continue
                if not self._may(identity, Permission.EXPERIMENTS_READ, stored.namespaces):
                    continue
                items.append(stored)
                if len(items) >= limit:
                    break
            if len(names) < count and len(items) < limit:
                after = None
                break
        else:
            if not indexes:
                after = None
        return ExperimentPage(items=items, next_cursor=after)

    def delete(self, name: str, identity: Identity) -> None:
        """Needs `experiments.write` in every namespace of the document; runs already
        started go on (they carry their own copy of the spec). Audits
        `experiment.delete`."""
        stored = self.get(name, identity)
        if not self._may(identity, Permission.EXPERIMENTS_WRITE, stored.namespaces):
            raise AccessDenied(f"{identity.actor.submitter} may not delete experiment "
                               f"{name!r}", loc="name", permission=Permission.EXPERIMENTS_WRITE)
        self.store.delete_document(name, stored.namespaces)
        self._audit(identity, "experiment.delete", "ok", name, stored.namespaces, None)

    def stored_identity(self, stored: StoredExperiment) -> Identity | None:
        """Who whoever last wrote the document was allowed to be, from its sealed grant
        (for a schedule or a custom resource starting it later); None when the grant
        does not verify."""
        grant = stored.grant
        if grant is None or not is_sealed(
                self.settings.signing_key_bytes,
                grant.payload(stored.name, stored.spec.model_dump(mode="json")),
                grant.signature):
            return None
        actor = stored.updated_by or Actor(kind=ActorKind.EXPERIMENT, name=stored.name)
        return Identity(actor, GrantAuthority(grant))

    # -- runs ------------------------------------------------------------------------------

    def start(self, experiment: str | ExperimentSpec, source: Source, identity: Identity, *,
              dry_run: bool = False, idempotency_key: str | None = None,
              granted_digest: str | None = None) -> ExperimentRun:
        """Start a run of a stored experiment (by name) or of a document given inline
        (not stored). Before anything is stored: every action step validated as a job
        (paths `method[1].steps[0].job....`), `jobs.submit` (+ `cluster.chaos` for node
        steps) in every namespace the experiment touches, its probes' included, the
        admin policy for each step, the halt switch, and the bound
        (`spec.bound_seconds` or `deadline` ≤ PYSTOL_MAX_EXPERIMENT_SECONDS, JobInvalid at
        `deadline`/`method`). Then the run is stored `queued` with a grant sealed over
        (run id, spec), `experiment.run` is audited and the first advance is sent.

        `idempotency_key`: the same key from the same submitter within the retention
        returns the earlier run (IdempotencyConflict when it was for another experiment
        document)."""
        if isinstance(experiment, str) and isinstance(identity.authority, GrantAuthority):
            # A schedule or custom resource acting on a sealed grant: it was allowed to
            # start this experiment when the grant was made, and `check_steps` below
            # still keeps every step inside the grant's namespaces.
            found = self._load(experiment) if DNS_LABEL.fullmatch(experiment) else None
            if found is None:
                raise ExperimentNotFound(experiment)
            spec = found[0].spec
            if granted_digest is None or document_digest(spec) != granted_digest:
                # The grant covered the document as it was (a schedule seals its digest):
                # someone who may only edit documents must not change what runs under
                # another's grant (review M6).
                raise ExperimentChanged(f"the experiment {experiment!r} changed since the "
                                        "schedule was granted; save the schedule again")
        elif isinstance(experiment, str):
            spec = self.get(experiment, identity).spec
        else:
            spec = experiment
        if dry_run and not spec.dry_run:
            spec = spec.model_copy(update={"dry_run": True})
        who = identity.actor.submitter
        if idempotency_key is not None:
            earlier_id = self.store.idempotent_run_id(who, idempotency_key)
            if earlier_id is not None:
                try:
                    earlier = self.store.get_run(earlier_id)
                except StoredRunNotFound:
                    earlier = None
                if earlier is not None:
                    if earlier.spec != spec or not self._may_read_run(identity, earlier):
                        # A different spec; or a run started under this name by someone
                        # the caller is not (a re-created token), which is not theirs.
                        raise IdempotencyConflict(earlier_id)
                    return earlier
        try:
            grant = self.check_steps(spec, identity)
            self.submission.refuse_if_halted()
        except (JobInvalid, AccessDenied, PolicyRefused, ChaosHalted) as error:
            outcome = "invalid" if isinstance(error, JobInvalid) else "refused"
            self._audit(identity, "experiment.run", outcome, spec.name, spec.namespaces(),
                        str(error))
            raise
        now = self.clock()
        run_id = new_run_id(now)
        spec_json = spec.model_dump(mode="json")
        sealed = grant.model_copy(update={"signature": seal(
            self.settings.signing_key_bytes, grant.payload(run_id, spec_json))})
        bound = spec.deadline if spec.deadline is not None else \
            spec.bound_seconds(self.settings.recovery_timeout_seconds)
        steps, rollbacks = initial_steps(spec)
        run = ExperimentRun(
            id=run_id, experiment=spec.name, spec=spec, source=source, submitter=who,
            actor=identity.actor, grant=sealed, created_at=now, steps=steps,
            rollbacks=rollbacks,
            output={"deadline_at": (now + timedelta(seconds=bound)).isoformat(),
                    "bound_seconds": bound})
        run, created = self.store.create_run(
            run, (who, idempotency_key) if idempotency_key is not None else None)
        if not created:
            return run
        self.store.set_due(run.id, now + timedelta(seconds=bound))
        self._audit(identity, "experiment.run", "ok", spec.name, spec.namespaces(),
                    f"run {run.id}")
        try:
            self.send_advance(run.id)
        except Exception:
            # The run is stored: the reaper's sweep sends it on (a queued run not advanced
            # for a while counts as due).
            log.exception("could not send the first advance of run %s; the sweep will",
                          run.id)
        return run

    def run(self, run_id: str, identity: Identity | None = None) -> ExperimentRun:
        """One run; RunNotFound when missing or when `identity` lacks `jobs.read` in one
        of its grant's namespaces. identity None: no check (the worker, the rehearsal)."""
        try:
            run = self.store.get_run(run_id)
        except StoredRunNotFound:
            raise RunNotFound(run_id) from None
        if identity is not None and not self._may_read_run(identity, run):
            raise RunNotFound(run_id)
        return run

    def _may_read_run(self, identity: Identity, run: ExperimentRun) -> bool:
        return self._may(identity, Permission.JOBS_READ, *self._run_scope(run))

    def timeline(self, run_id: str, identity: Identity | None = None,
                 start: int = 0) -> builtins.list[TimelineEvent]:
        """The run's events (step started/ended, waiting, rolling back, ...)."""
        self.run(run_id, identity)
        return self.store.timeline(run_id, start)

    def runs(self, identity: Identity, *, experiment: str | None = None,
             cursor: str | None = None, limit: int = 50) -> ExperimentRunPage:
        """Runs the caller may read, newest first; `experiment` limits them to one
        document's runs (its trend: verdict and score over time).

        Bounded per request whatever the installation holds: a namespaced caller lists
        from the indexes of its namespaces and of its own runs, each run's small summary
        is checked before its record is read, at most MAX_LIST runs are returned and
        MAX_EXAMINED index rows examined; then `next_cursor` goes on."""
        limit = max(1, min(limit, MAX_LIST))
        before = int(cursor) if cursor and cursor.isdigit() else None
        readable = self._readable_namespaces(identity, Permission.JOBS_READ)
        if experiment is not None:
            indexes = [self.store.experiment_runs_key(experiment)]
        elif readable is None:
            indexes = [RUNS_KEY]
        else:
            indexes = [runs_namespace_key(namespace) for namespace in readable] + \
                [runs_submitter_key(identity.actor.submitter)]
        items: builtins.list[ExperimentRun] = []
        examined = 0
        exhausted = False
        while len(items) < limit and examined < MAX_EXAMINED:
            count = min(100, MAX_EXAMINED - examined)
            rows = self.store.run_ids_in(indexes, before, count)
            if not rows:
                exhausted = True
                break
            summaries = self.store.run_summaries([row[0] for row in rows])
            candidates = [run_id for run_id, _ in rows
                          if run_id not in summaries
                          or self._may(identity, Permission.JOBS_READ,
                                       summaries[run_id][0])]
            wanted = set(candidates[:limit - len(items)])
            by_id = {run.id: run for run in self.store.iter_runs(
                [run_id for run_id in candidates if run_id in wanted])}
            unread = set(candidates) - wanted
            for run_id, seq in rows:
                if run_id in unread:
                    break  # not read this time: the next round starts here
                examined += 1
                before = seq
                run = by_id.get(run_id)
                if run is None or not self._may_read_run(identity, run):
                    continue
                items.append(run)
                if len(items) >= limit:
                    break
            else:
                if len(rows) < count:
                    exhausted = True
                    break
        return ExperimentRunPage(items=items, next_cursor=None if exhausted or before is None
                                 else str(before))

    def cancel(self, run_id: str, identity: Identity,
               reason: str | None = None) -> ExperimentRun:
        """Stop a run: its stop key makes every running step job abort and revert, then
        the rollbacks run and the run ends `cancelled`. Needs `jobs.cancel` in every
        namespace of its grant; RunEnded when it has already ended. Returns the run as
        it is now (still going: the stop is asynchronous)."""
        run = self.run(run_id, identity)
        namespaces, cluster = self._run_scope(run)
        if not self._may(identity, Permission.JOBS_CANCEL, namespaces, cluster):
            raise AccessDenied(f"{identity.actor.submitter} may not cancel run {run_id}",
                               permission=Permission.JOBS_CANCEL)
        if run.status.terminal:
            raise RunEnded(f"run {run_id} already ended {run.status.value}")
        who = identity.actor.submitter
        text = f"cancelled by {who}" + (f": {reason}" if reason else "")
        stop_run(self.redis, run_id, "cancel", text, by=who)
        self.store.append_event(run_id, EventKind.CANCEL_REQUESTED, text)
        self._audit(identity, "experiment.cancel", "ok", run.experiment, namespaces,
                    f"run {run_id}")
        self.send_advance(run_id)
        return run

    def resume(self, run_id: str, step_path: str, identity: Identity) -> ExperimentRun:
        """Resume a suspend step (`method[2]`) that is waiting now; NotSuspended
        otherwise. Needs `jobs.submit` in every namespace of the run's grant."""
        run = self.run(run_id, identity)
        namespaces, cluster = self._run_scope(run)
        if not self._may(identity, Permission.JOBS_SUBMIT, namespaces, cluster):
            raise AccessDenied(f"{identity.actor.submitter} may not resume run {run_id}",
                               permission=Permission.JOBS_SUBMIT)
        if run.status.terminal:
            raise RunEnded(f"run {run_id} already ended {run.status.value}")
        step = next((step for step in run.steps if step.path == step_path), None)
        if step is None or step.type != "suspend" or step.status != StepStatus.RUNNING:
            raise NotSuspended(f"{step_path!r} is not a suspend step waiting now")
        self.store.resume(run_id, step_path)
        self._audit(identity, "experiment.resume", "ok", run.experiment, namespaces,
                    f"run {run_id} step {step_path}")
        self.send_advance(run_id)
        return run

    # -- what the worker calls -------------------------------------------------------------

    def advance(self, run_id: str) -> None:
        """Move the run on as far as it can go now (the `pystol.advance_experiment` task,
        and the rehearsal's local queue). Idempotent and safe to call at any time, from
        any number of processes at once: see `engine.py`."""
        self.engine.advance(run_id)

    def job_finished(self, record: JobRecord) -> None:
        """The `JobRunner(on_finished=...)` and reaper hook: a step job ended, so its run
        may move on (sends an advance when the job belongs to a run)."""
        run_id = record.experiment_run_id or (record.spec.experiment.run_id
                                              if record.spec.experiment else None)
        if run_id:
            self.send_advance(run_id)

    def sweep(self, now: datetime | None = None) -> builtins.list[str]:
        """The reaper pass: advance runs whose wait/suspend timer is due, that have a
        step job ended but not folded in, or that are past their deadline (their stop
        key set first). At most 100 per pass; returns the run ids advanced."""
        return sweep(self.store, self.submission.store, self.send_advance,
                     now or self.clock())

    def stop_running(self, cause: str, reason: str, by: str | None = None) -> int:
        """Set the stop key of every running run (the halt); how many were stopped."""
        stopped = 0
        for run_id in self.store.running_ids():
            stopped += stop_run(self.redis, run_id, cause, reason, by)  # type: ignore[arg-type]
        return stopped

    def _audit(self, identity: Identity, operation: str, outcome: str, name: str,
               namespaces: builtins.list[str], detail: str | None) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(identity.actor, operation, outcome=outcome,  # type: ignore[arg-type]
                              targets=[name], namespaces=namespaces,
                              detail=f"{name}: {detail}" if detail else name)
        except Exception:
            log.exception("could not audit %s of %s", operation, name)
