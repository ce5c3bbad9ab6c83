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
  namespaces the job names in `target.namespaces`, or at cluster scope when it names none.

Policy (`policy_problems`): allowed actions per namespace, the target cap when the spec
fixes a count, images and signals (the action's own `policy_problems`), the longest
fault, the chaos windows, and every URL the job would have a worker fetch (a URL
action's `params.url`, each steady-state probe's `url`: `safety.outbound_http`).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from pystol_worker.actions.base import Action, ActionError
from pystol_worker.core.access import (
    AccessDenied,
    Grant,
    Identity,
    Permission,
    is_sealed,
    seal,
)
from pystol_worker.core.model import JobRecord, JobSpec, TargetKind, TargetMode
from pystol_worker.core.policy import OutsideWindows, Policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.validation import FieldProblem
from pystol_worker.safety.outbound_http import RESOLVE_SECONDS, DestinationGuard


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


def grant_for(spec: JobSpec, action: Action[Any], params: BaseModel,
              identity: Identity) -> Grant:
    """What `identity` may do with this job, as an unsealed Grant; AccessDenied (403)
    naming the namespace or the action otherwise."""
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


def policy_problems(spec: JobSpec, action: Action[Any], params: BaseModel, policy: Policy,
                    now: datetime, *, windows: bool | None = None,
                    settings: Settings | None = None) -> list[FieldProblem]:
    """Everything the admin policy refuses in this job. Windows: at submission only in
    refuse mode (in wait mode the job is deferred instead); the worker passes
    `windows=True`, because a job may only start inside a window whatever the mode (a
    deferred job is released when its window opens; one sent earlier by other means is
    refused).

    `settings` name Pystol's own Redis and API, which probes may not reach: the
    submission service passes its own. Without them those two are refused only when the
    worker connects (it always knows its settings)."""
    problems: list[FieldProblem] = url_problems(spec, action, params, policy, settings)
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


def url_problems(spec: JobSpec, action: Action[Any], params: BaseModel, policy: Policy,
                 settings: Settings | None) -> list[FieldProblem]:
    """The URLs this job would have a worker fetch that the policy's `probes` section
    refuses (literal addresses, and names as they resolve now), and steady-state probe
    timeouts above its cap. The worker judges each URL again when it connects."""
    url = getattr(params, "url", None)
    urls = [("params.url", url)] if action.target_kind == TargetKind.URL and \
        isinstance(url, str) else []
    urls += [(f"probes[{index}].url", probe.url) for index, probe in enumerate(spec.probes)]
    if not urls:
        return []
    guard = DestinationGuard.for_settings(policy.probes, settings) if settings is not None \
        else DestinationGuard(policy.probes)
    # One budget for every name the job asks to resolve (up to 21 URLs): a submission holds
    # an API thread while it waits, so a job full of names on a dead DNS server must not
    # hold it for 21 timeouts. What does not resolve in time is judged by the worker.
    deadline = time.monotonic() + RESOLVE_SECONDS
    problems = [FieldProblem(loc, problem) for loc, text in urls
                if (problem := guard.problem(
                    text, seconds=max(deadline - time.monotonic(), 0.01))) is not None]
    problems += [FieldProblem(f"probes[{index}].timeout", f"{probe.timeout:g}s; the admin "
                              f"policy caps one call at {policy.probes.max_seconds:g}s "
                              "(probes.max_seconds)")
                 for index, probe in enumerate(spec.probes)
                 if probe.timeout > policy.probes.max_seconds]
    return problems


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
    outside = sorted(set(record.spec.target.namespaces) - set(grant.namespaces))
    if outside:
        raise GrantInvalid(f"refused: namespaces {', '.join(outside)} are outside the grant")
    if is_cluster_level(record.spec, action, params) and not grant.cluster:
        raise GrantInvalid("refused: the grant does not allow cluster-level chaos")
