"""The custom resource kinds the watcher serves, and who each object is.

A custom resource is an identity, as an API token is (issue 12). Whoever may create a
`PystolAction` in `team-a` may make Pystol act in `team-a` and nowhere else, so:

- a namespaced `PystolAction` / `PystolSchedule` is an **operator of its own namespace**
  (`RoleAuthority(Role.OPERATOR, {namespace})`): a spec naming another namespace, or
  node-level and cluster-wide chaos, is refused by the submission service (the same
  `grant_for` as the API's), before anything is stored;
- a cluster-scoped `PystolClusterAction` / `PystolClusterSchedule` has the **admin's**
  authority: only who may create cluster-scoped objects (cluster admins, by RBAC; a Role
  cannot grant them) can make one. Its jobs still meet the admin policy and the protected
  namespaces.

The actor names the object (`namespace/name`, or `name` when cluster-scoped: the
submitter string job records and idempotency keys have always used), its uid (the one
thing the watcher trusts to tell its own jobs from others', see `owns_job`), its kind and
its last manager from `managedFields` (for the audit trail).

Pure: no cluster, no Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pystol_api.watcher.cr_mapping import (
    ACTIONS,
    CLUSTER_ACTIONS,
    CLUSTER_SCHEDULES,
    SCHEDULES,
)
from pystol_worker.actions.registry import ActionRegistry, UnknownAction
from pystol_worker.core.access import Actor, ActorKind, Identity, Role, RoleAuthority
from pystol_worker.core.model import JobRecord, JobSpec, Source, TargetKind

#: managedFields managers that are the watcher itself (kopf's own requests: finalizers,
#: progress annotations), not whoever changed the object.
WATCHER_MANAGERS = ("kopf",)


@dataclass(frozen=True)
class CrKind:
    """One custom resource kind: its name, plural, and whether it lives in a namespace."""

    kind: str
    plural: str
    namespaced: bool

    def where(self, namespace: str | None, name: str | None) -> str:
        """`PystolAction team-a/kill`, `PystolClusterAction drain-b`: for logs and reasons."""
        return f"{self.kind} {submitter_of(namespace if self.namespaced else None, name)}"

    @property
    def key_prefix(self) -> str:
        """The idempotency-key prefix of its jobs (`pystolaction`, as before)."""
        return self.kind.lower()


PYSTOL_ACTION = CrKind("PystolAction", ACTIONS, namespaced=True)
PYSTOL_CLUSTER_ACTION = CrKind("PystolClusterAction", CLUSTER_ACTIONS, namespaced=False)
PYSTOL_SCHEDULE = CrKind("PystolSchedule", SCHEDULES, namespaced=True)
PYSTOL_CLUSTER_SCHEDULE = CrKind("PystolClusterSchedule", CLUSTER_SCHEDULES, namespaced=False)
PYSTOL_EXPERIMENT = CrKind("PystolExperiment", "pystolexperiments", namespaced=True)
PYSTOL_CLUSTER_EXPERIMENT = CrKind("PystolClusterExperiment", "pystolclusterexperiments",
                                   namespaced=False)
ACTION_KINDS = (PYSTOL_ACTION, PYSTOL_CLUSTER_ACTION)
SCHEDULE_KINDS = (PYSTOL_SCHEDULE, PYSTOL_CLUSTER_SCHEDULE)
EXPERIMENT_KINDS = (PYSTOL_EXPERIMENT, PYSTOL_CLUSTER_EXPERIMENT)


def submitter_of(namespace: str | None, name: str | None) -> str:
    """`namespace/name`, or `name` for a cluster-scoped object."""
    return f"{namespace}/{name}" if namespace else str(name)


def last_manager(meta: Mapping[str, Any]) -> str | None:
    """The manager of the latest `managedFields` entry by `time` that is a change of the
    object itself: not a status write, not the watcher's own (kopf's finalizer and
    annotation patches). None when there is none."""
    entries = [entry for entry in meta.get("managedFields") or ()
               if isinstance(entry, Mapping) and entry.get("manager")
               and not entry.get("subresource")
               and not str(entry["manager"]).startswith(WATCHER_MANAGERS)]
    if not entries:
        return None
    # RFC 3339 times in UTC sort as text; an entry without a time counts as the oldest.
    latest = max(entries, key=lambda entry: str(entry.get("time") or ""))
    return str(latest["manager"])


def cr_identity(kind: CrKind, meta: Mapping[str, Any]) -> Identity:
    """Who the object is and what it may do (see the module docstring)."""
    name = meta.get("name")
    namespace = meta.get("namespace") if kind.namespaced else None
    actor = Actor(kind=ActorKind.CUSTOM_RESOURCE, name=submitter_of(namespace, name),
                  uid=str(meta["uid"]) if meta.get("uid") else None,
                  resource_kind=kind.kind, manager=last_manager(meta))
    if kind.namespaced:
        return Identity(actor, RoleAuthority(Role.OPERATOR, frozenset({str(namespace)})))
    return Identity(actor, RoleAuthority(Role.ADMIN))


def owns_job(kind: CrKind, meta: Mapping[str, Any], record: JobRecord) -> bool:
    """Whether the object created this job: the record's actor is this object (by uid).

    A record written before records named their actor is the object's when it came
    from a custom resource of the same namespace/name (PystolActions only: there were no
    cluster-scoped kinds then). Anything else a `status.jobId` names is someone else's."""
    uid = meta.get("uid")
    actor = record.actor
    if actor is not None:
        return bool(uid) and actor.kind == ActorKind.CUSTOM_RESOURCE and actor.uid == uid \
            and actor.resource_kind == kind.kind
    return kind.namespaced and record.source == Source.CR and \
        record.submitter == submitter_of(meta.get("namespace"), meta.get("name"))


def owns_run(kind: CrKind, meta: Mapping[str, Any], actor: Actor | None) -> bool:
    """Whether a run (by its `actor`) was started by this object: same uid and kind. A
    `status.runId` naming any other run is someone else's and is not followed or
    cancelled (whoever may write an object's status may write any id into it)."""
    uid = meta.get("uid")
    return actor is not None and bool(uid) and actor.kind == ActorKind.CUSTOM_RESOURCE \
        and actor.uid == uid and actor.resource_kind == kind.kind


def in_own_namespace(spec: JobSpec, namespace: str, registry: ActionRegistry) -> JobSpec:
    """A namespaced object's URL action (http-probe, the original pingtest) that names no
    namespace runs as a job of the object's own namespace: it selects nothing, and the
    scope check wants a namespace the object may act in. Every other spec as it is."""
    if spec.target.namespaces:
        return spec
    try:
        action = registry.get(spec.action)
    except UnknownAction:
        return spec  # validation says so
    if action.target_kind != TargetKind.URL:
        return spec
    return spec.model_copy(update={"target": spec.target.model_copy(
        update={"namespaces": [namespace]})})
