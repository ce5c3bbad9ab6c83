"""Whether a job may run: the caller's scope, then the admin policy; and, in the worker,
whether the job read back from Redis is still the job that was allowed.

Called from exactly two places: `SubmissionService.submit` (every producer) before
anything is stored, and `JobRunner` before the job touches the cluster. Both use the
same functions, so a rule cannot be checked on the way in and forgotten on the way out.

Scope (`grant_for`):
- an action that selects in namespaces needs `jobs.submit` in each of them;
- node-level and cluster-wide actions (nodes, stress pinned to nodes) need
  `cluster.chaos`: admins and cluster-scoped custom resources;
- a URL action (http-probe) touches no namespace: it needs `jobs.submit` in the
  namespaces the job names in `target.namespaces`, or at cluster scope when it names none;
- the job's steady-state probes read too: a Service probe or a k8s probe needs
  `jobs.submit` in its namespace (a probe is no way to look into another tenant's
  namespace), a k8s probe of a Node needs `cluster.chaos`. The grant's namespaces are the
  union, sealed with the spec, so the worker refuses a record whose probes were edited.

Policy (`policy_problems`): allowed actions per namespace, the target cap when the spec
fixes a count, images and signals (the action's own `policy_problems`), the longest
fault, the chaos windows, every URL the job would have a worker fetch (a URL
action's `params.url`, each steady-state probe's `url`: `safety.outbound_http`), and the
Prometheus endpoint of each prometheus probe and of the guard (named in the policy's
`prometheus.endpoints`, open to every namespace of the job).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import redis
from pydantic import BaseModel

from pystol_worker.actions.base import Action, ActionError
from pystol_worker.core.access import (
    AccessDenied,
    Actor,
    ActorKind,
    Grant,
    Identity,
    Permission,
    is_sealed,
    seal,
)
from pystol_worker.core.destinations import Address
from pystol_worker.core.model import (
    HttpProbe,
    JobRecord,
    JobSpec,
    K8sProbe,
    PrometheusProbe,
    TargetKind,
    TargetMode,
)
from pystol_worker.core.policy import OutsideWindows, Policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.validation import FieldProblem
from pystol_worker.safety.outbound_http import (
    RESOLVE_SECONDS,
    DestinationGuard,
    Resolver,
    resolve_host,
)
from pystol_worker.store.token_store import TokenStore


class PolicyRefused(Exception):
    """403: the admin policy does not allow this job; `problems` name the fields."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.loc}: {p.msg}" for p in problems))
        self.problems = problems


class GrantInvalid(ActionError):
    """The worker's check failed: the record is not the job that was allowed."""


def is_cluster_level(spec: JobSpec, action: Action[Any], params: BaseModel) -> bool:
    """Node-level or cluster-wide: the job does not stay inside namespaces it names."""
    return not action.uses_namespaces(spec, params) and action.target_kind != TargetKind.URL


def probe_namespaces(spec: JobSpec) -> list[tuple[str, str]]:
    """(field path, namespace) of every namespace the job's probes read."""
    found = []
    for index, probe in enumerate(spec.probes):
        if isinstance(probe, HttpProbe) and probe.service is not None:
            found.append((f"probes[{index}].service.namespace", probe.service.namespace))
        elif isinstance(probe, K8sProbe) and probe.namespace is not None:
            found.append((f"probes[{index}].namespace", probe.namespace))
    return found


def node_probes(spec: JobSpec) -> list[str]:
    """Field paths of the k8s probes that read a Node (cluster scope)."""
    return [f"probes[{index}].object.kind" for index, probe in enumerate(spec.probes)
            if isinstance(probe, K8sProbe) and probe.cluster_scoped]


def job_namespaces(spec: JobSpec) -> list[str]:
    """Every namespace the job acts or reads in: its targets' and its probes'."""
    seen = list(spec.target.namespaces)
    for _, namespace in probe_namespaces(spec):
        if namespace not in seen:
            seen.append(namespace)
    return seen


def grant_for(spec: JobSpec, action: Action[Any], params: BaseModel,
              identity: Identity, policy: Policy | None = None) -> Grant:
    """What `identity` may do with this job, as an unsealed Grant; AccessDenied (403)
    naming the namespace, the probe or the action otherwise. With the admin `policy`, a
    Prometheus endpoint open to every namespace counts as cluster scope (a query reads
    any tenant's series): only `cluster.chaos` may use one, and the grant says so
    (`cluster`), so the worker can check it again. Without the policy such a job is
    refused by the worker."""
    grant = _target_grant(spec, action, params, identity)
    who = identity.actor.submitter
    authority = identity.authority
    for loc, namespace in probe_namespaces(spec):
        if not authority.allows(Permission.JOBS_SUBMIT, namespace):
            raise AccessDenied(f"{who} may not probe namespace {namespace!r} (a probe needs "
                               "jobs.submit where it reads)", loc=loc,
                               permission=Permission.JOBS_SUBMIT, namespace=namespace)
    cluster = grant.cluster
    for loc in node_probes(spec):
        if not authority.allows(Permission.CLUSTER_CHAOS, None):
            raise AccessDenied(f"{who} may not probe Nodes: reading nodes is cluster-wide "
                               "(cluster.chaos)", loc=loc,
                               permission=Permission.CLUSTER_CHAOS)
        cluster = True
    for loc, name in prometheus_uses(spec) if policy is not None else []:
        endpoint = policy.prometheus.endpoint(name) if policy is not None else None
        if endpoint is None or not endpoint.cluster_wide:
            continue  # an unknown or namespaced endpoint: policy_problems judges it
        if not authority.allows(Permission.CLUSTER_CHAOS, None):
            raise AccessDenied(f"{who} may not query Prometheus endpoint {name!r}: it is "
                               "open to every namespace, so a query reads any tenant's "
                               "series (cluster scope, cluster.chaos)", loc=loc,
                               permission=Permission.CLUSTER_CHAOS)
        cluster = True
    return grant.model_copy(update={"namespaces": job_namespaces(spec), "cluster": cluster})


def _target_grant(spec: JobSpec, action: Action[Any], params: BaseModel,
                  identity: Identity) -> Grant:
    who = identity.actor.submitter
    authority = identity.authority
    if is_cluster_level(spec, action, params):
        if not authority.allows(Permission.CLUSTER_CHAOS, None):
            raise AccessDenied(f"{who} may not run {action.name} on "
                               f"{action.target_kind.value}: node-level and cluster-wide "
                               "chaos is for admins (and PystolClusterActions)",
                               loc="action", permission=Permission.CLUSTER_CHAOS)
        return Grant(submitter=who, namespaces=list(spec.target.namespaces), cluster=True)
    if not spec.target.namespaces:  # a URL action naming no namespace
        if not authority.allows(Permission.JOBS_SUBMIT, None):
            raise AccessDenied(f"{who} may not run {action.name} without naming a namespace "
                               "it may run chaos in (target.namespaces)",
                               loc="target.namespaces", permission=Permission.JOBS_SUBMIT)
        return Grant(submitter=who, namespaces=[], cluster=True)
    for index, namespace in enumerate(spec.target.namespaces):
        if not authority.allows(Permission.JOBS_SUBMIT, namespace):
            raise AccessDenied(f"{who} may not run chaos in namespace {namespace!r}",
                               loc=f"target.namespaces[{index}]",
                               permission=Permission.JOBS_SUBMIT, namespace=namespace)
    return Grant(submitter=who, namespaces=list(spec.target.namespaces), cluster=False)


def prometheus_uses(spec: JobSpec) -> list[tuple[str, str]]:
    """(field path, endpoint name) of each prometheus probe and of the guard."""
    uses = [(f"probes[{index}].endpoint", probe.endpoint)
            for index, probe in enumerate(spec.probes) if isinstance(probe, PrometheusProbe)]
    if spec.guard is not None:
        uses.append(("guard.endpoint", spec.guard.endpoint))
    return uses


def prometheus_problems(spec: JobSpec, policy: Policy, *,
                        cluster: bool | None = None) -> list[FieldProblem]:
    """Each prometheus probe's and the guard's endpoint must be one the policy names and
    open to every namespace of the job (or, for a job in no namespace, to `*`). The
    worker passes its sealed grant's `cluster`: an endpoint open to every namespace is
    for cluster scope only (the policy may have been widened since submission)."""
    namespaces: list[str | None] = list(job_namespaces(spec)) or [None]
    problems = []
    for loc, name in prometheus_uses(spec):
        endpoint = policy.prometheus.endpoint(name)
        if endpoint is None:
            problems.append(FieldProblem(loc, f"endpoint {name!r} is not one of the admin "
                                         "policy's prometheus.endpoints"))
            continue
        closed = [namespace or "(cluster scope)" for namespace in namespaces
                  if not endpoint.allows(namespace)]
        if cluster is False and endpoint.cluster_wide:
            problems.append(FieldProblem(loc, f"endpoint {name!r} is open to every "
                                         "namespace: only a submitter with cluster.chaos "
                                         "may query it"))
        elif closed:
            problems.append(FieldProblem(loc, f"the admin policy does not open endpoint "
                                         f"{name!r} to {', '.join(closed)}"))
    return problems


def policy_problems(spec: JobSpec, action: Action[Any], params: BaseModel, policy: Policy,
                    now: datetime, *, windows: bool | None = None,
                    settings: Settings | None = None,
                    cluster: bool | None = None,
                    resolve: ResolveBudget | None = None) -> list[FieldProblem]:
    """Everything the admin policy refuses in this job. Windows: at submission only in
    refuse mode (in wait mode the job is deferred instead); the worker passes
    `windows=True`, because a job may only start inside a window whatever the mode (a
    deferred job is released when its window opens; one sent earlier by other means is
    refused).

    `settings` name Pystol's own Redis and API, which probes may not reach: the
    submission service passes its own. Without them those two are refused only when the
    worker connects (it always knows its settings). The worker passes its sealed grant's
    `cluster` (see `prometheus_problems`)."""
    problems: list[FieldProblem] = url_problems(spec, action, params, policy, settings,
                                                resolve=resolve)
    problems += prometheus_problems(spec, policy, cluster=cluster)
    problems += body_check_problems(spec, policy)
    cluster_level = is_cluster_level(spec, action, params)
    if cluster_level and not policy.action_allowed(action.name, None):
        problems.append(FieldProblem("action", f"the admin policy does not allow "
                                     f"{action.name} at cluster scope"))
    for index, namespace in enumerate(spec.target.namespaces):
        if not policy.action_allowed(action.name, namespace):
            problems.append(FieldProblem(f"target.namespaces[{index}]", f"the admin policy "
                                         f"does not allow {action.name} in namespace "
                                         f"{namespace!r}"))
    cap = policy.max_targets_per_job
    target = spec.target
    if target.mode == TargetMode.FIXED and target.value is not None and target.value > cap:
        problems.append(FieldProblem("target.value", f"{int(target.value)} targets; the "
                                     f"admin policy allows at most {cap} per job"))
    if len(target.names) > cap:
        problems.append(FieldProblem("target.names", f"{len(target.names)} names; the admin "
                                     f"policy allows at most {cap} targets per job"))
    if policy.max_fault_duration is not None and spec.duration is not None \
            and spec.duration > policy.max_fault_duration:
        problems.append(FieldProblem("duration", f"{spec.duration:g}s; the admin policy "
                                     f"holds a fault at most {policy.max_fault_duration:g}s"))
    problems += [FieldProblem(loc, msg) for loc, msg in
                 action.policy_problems(spec, params, policy)]
    if windows if windows is not None else policy.outside_windows == OutsideWindows.REFUSE:
        closed = policy.window_problem(now)
        if closed:
            opening = policy.next_opening(now)
            problems.append(FieldProblem("policy.windows", f"chaos is not allowed now: {closed}"
                                         + (f"; next window opens {opening.isoformat()}"
                                            if opening else "")))
    return problems


class ResolveBudget:
    """One deadline for every name one request asks to resolve, however many jobs it
    checks (an experiment: up to 100 steps), and each name resolved once.

    A submission holds an API thread while it waits for DNS; a budget per job would let
    one document of 100 URL steps on a name server that never answers hold it for 100
    timeouts. Past the deadline nothing more is resolved at submission: a name not judged
    here is judged by the worker when it connects (it always resolves and checks the
    address it connects to). `resolver` is the seam tests use for a dead DNS server."""

    def __init__(self, seconds: float = RESOLVE_SECONDS, *,
                 resolver: Resolver = resolve_host,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.deadline = clock() + seconds
        self.inner = resolver
        self.known: dict[tuple[str, int], Sequence[Address] | OSError] = {}

    def left(self) -> float:
        return self.deadline - self.clock()

    def __call__(self, name: str, port: int, seconds: float) -> Sequence[Address]:
        known = self.known.get((name, port))
        if known is None:
            left = self.left()
            if left <= 0:
                raise OSError("not resolved at submission (the request's time for name "
                              "lookups is used up); the worker checks it when it connects")
            try:
                known = self.inner(name, port, min(seconds, left))
            except OSError as error:
                known = error
            self.known[(name, port)] = known
        if isinstance(known, OSError):
            raise known
        return known


def url_problems(spec: JobSpec, action: Action[Any], params: BaseModel, policy: Policy,
                 settings: Settings | None, *,
                 resolve: ResolveBudget | None = None) -> list[FieldProblem]:
    """The URLs this job would have a worker fetch that the policy's `probes` section
    refuses (literal addresses, and names as they resolve now), and steady-state probe
    timeouts above its cap. The worker judges each URL again when it connects."""
    url = getattr(params, "url", None)
    urls = [("params.url", url)] if action.target_kind == TargetKind.URL and \
        isinstance(url, str) else []
    urls += [(f"probes[{index}].url", probe.url) for index, probe in enumerate(spec.probes)
             if isinstance(probe, HttpProbe) and probe.url is not None]
    timeouts = [FieldProblem(f"probes[{index}].run.timeout", f"{probe.run.timeout:g}s; the "
                             f"admin policy caps one call at "
                             f"{policy.probes.max_seconds:g}s (probes.max_seconds)")
                for index, probe in enumerate(spec.probes)
                if isinstance(probe, HttpProbe) and
                probe.run.timeout > policy.probes.max_seconds]
    if not urls:
        return timeouts
    # One budget for every name the job asks to resolve (up to 21 URLs), or the caller's
    # for the whole request (`ResolveBudget`): a submission holds an API thread while it
    # waits, so names on a dead DNS server must not hold it for a timeout each. What does
    # not resolve in time is judged by the worker.
    budget = resolve if resolve is not None else ResolveBudget()
    guard = DestinationGuard.for_settings(policy.probes, settings, resolver=budget) \
        if settings is not None else DestinationGuard(policy.probes, resolver=budget)
    problems = [FieldProblem(loc, problem) for loc, text in urls
                if (problem := guard.problem(
                    text, seconds=max(budget.left(), 0.01))) is not None]
    return problems + timeouts


def body_check_problems(spec: JobSpec, policy: Policy) -> list[FieldProblem]:
    """`body_contains` reads content, not just a status: on a `service` probe the
    Service is in a namespace of the grant, but a URL reaches any in-cluster Service of
    any tenant, and one substring test per probe leaks a secret a character at a time.
    So a URL probe may test its body only where the admin opts in
    (`probes.url_body_checks`)."""
    if policy.probes.url_body_checks:
        return []
    return [FieldProblem(f"probes[{index}].body_contains", "body_contains on a URL "
                         "probe needs the admin policy's probes.url_body_checks (a URL can "
                         "reach other tenants' Services); use a service probe instead")
            for index, probe in enumerate(spec.probes)
            if isinstance(probe, HttpProbe) and probe.url is not None
            and probe.body_contains is not None]


def sealed(grant: Grant, job_id: str, spec: JobSpec, key: bytes) -> Grant:
    """The grant with its signature for this job id and spec."""
    payload = grant.payload(job_id, spec.model_dump(mode="json"))
    return grant.model_copy(update={"signature": seal(key, payload)})


def check_grant(record: JobRecord, action: Action[Any], params: BaseModel,
                key: bytes) -> None:
    """GrantInvalid unless the record carries a grant sealed for exactly this job and
    spec, and the spec stays inside it (a record edited in Redis cannot widen it)."""
    grant = record.grant
    if grant is None:
        raise GrantInvalid("refused: the job carries no grant from the submission service "
                           "(queued before this version, or written to Redis directly)")
    if not is_sealed(key, grant.payload(record.id, record.spec.model_dump(mode="json")),
                     grant.signature):
        raise GrantInvalid("refused: the job's grant does not match its record (the record "
                           "was changed after it was submitted, or PYSTOL_SIGNING_KEY "
                           "differs between the API and the worker)")
    outside = sorted(set(job_namespaces(record.spec)) - set(grant.namespaces))
    if outside:
        raise GrantInvalid(f"refused: namespaces {', '.join(outside)} are outside the grant")
    if is_cluster_level(record.spec, action, params) and not grant.cluster:
        raise GrantInvalid("refused: the grant does not allow cluster-level chaos")
    if node_probes(record.spec) and not grant.cluster:
        raise GrantInvalid("refused: the grant does not allow probing Nodes")


def owner_lapsed(owner: Actor | None, grant: Grant | None, client: redis.Redis,
                 key: bytes, role: str = "") -> str | None:
    """Why the named token `owner` no longer covers `grant` (revoked, expired, or its role
    or namespaces narrowed), or None: what acts later on someone's behalf (a schedule, an
    experiment run's steps) must not outlive their rights. Settings tokens and Kubernetes
    users are not re-checked (the worker knows neither PYSTOL_API_TOKENS nor the cluster's
    RBAC); custom resources go with their resource. `role` says how the owner relates to
    what acts (", which last changed it,")."""
    if owner is None or grant is None or owner.kind != ActorKind.TOKEN:
        return None
    token = TokenStore(client, key).active(owner.name)
    if token is None:
        return f"token {owner.name}{role} was revoked or has expired"
    if owner.uid is not None and owner.uid != token.uid:  # None: recorded before uids
        return f"token {owner.name}{role} was revoked (a token of that name was created again)"
    authority = token.authority()
    if grant.cluster and not authority.allows(Permission.CLUSTER_CHAOS, None):
        return f"token {owner.name} may no longer run cluster-level chaos"
    for namespace in grant.namespaces:
        if not authority.allows(Permission.JOBS_SUBMIT, namespace):
            return f"token {owner.name} may no longer run chaos in namespace {namespace!r}"
    return None
