"""Who may do what: roles, the permissions they carry, the actor behind every change, and
the signed grant a job carries from the submission service to the worker.

One model for every way in. An API request, a CLI command (it is an API request), a
dashboard click, a custom resource and a schedule's fire are all an `Actor` with an
`Authority` that answers one question: may it use `Permission` in `namespace`
(`None`: at cluster scope)? A named Pystol token answers from its role and namespaces
(`RoleAuthority`); a Kubernetes user answers with SubjectAccessReviews
(`pystol_api.http.kube_identity`), so the cluster's RBAC decides; a `PystolAction` is an
operator of its own namespace; a cluster-scoped `PystolClusterAction` has the admin's
chaos permissions, because only who may create cluster-scoped objects can make one.

Why a signed grant. The submission service decides once, with the actor in front of it;
the worker runs the job later, reading it back from Redis, which any pod that can reach
Redis could edit. So the submission service seals what it allowed (the namespaces the
job may touch, whether it may act at cluster scope, the spec itself) with an HMAC under
a key Redis never holds (`PYSTOL_SIGNING_KEY`). The worker verifies the seal and
re-checks the spec against it before it touches anything: a record edited in Redis
cannot widen what its submitter was allowed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel, Field


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Permission(StrEnum):
    """Pystol's operations. Namespaced ones are asked per namespace; cluster ones with
    namespace None."""

    JOBS_READ = "jobs.read"
    JOBS_SUBMIT = "jobs.submit"            # also previews
    JOBS_CANCEL = "jobs.cancel"
    SCHEDULES_READ = "schedules.read"
    SCHEDULES_CREATE = "schedules.create"
    SCHEDULES_UPDATE = "schedules.update"  # patch, pause, resume
    SCHEDULES_DELETE = "schedules.delete"
    CLUSTER_CHAOS = "cluster.chaos"        # node-level and cluster-wide actions
    HALT_ENGAGE = "halt.engage"
    HALT_LIFT = "halt.lift"
    TOKENS_MANAGE = "tokens.manage"
    AUDIT_READ = "audit.read"
    EXPERIMENTS_READ = "experiments.read"
    EXPERIMENTS_WRITE = "experiments.write"  # create, replace, delete experiment documents

    @property
    def namespaced(self) -> bool:
        return self in NAMESPACED


NAMESPACED = frozenset({Permission.JOBS_READ, Permission.JOBS_SUBMIT, Permission.JOBS_CANCEL,
                        Permission.SCHEDULES_READ, Permission.SCHEDULES_CREATE,
                        Permission.SCHEDULES_UPDATE, Permission.SCHEDULES_DELETE,
                        Permission.EXPERIMENTS_READ, Permission.EXPERIMENTS_WRITE})

_VIEWER = frozenset({Permission.JOBS_READ, Permission.SCHEDULES_READ,
                     Permission.EXPERIMENTS_READ})
_OPERATOR = _VIEWER | {Permission.JOBS_SUBMIT, Permission.JOBS_CANCEL,
                       Permission.EXPERIMENTS_WRITE,
                       Permission.SCHEDULES_CREATE, Permission.SCHEDULES_UPDATE,
                       Permission.SCHEDULES_DELETE, Permission.HALT_ENGAGE}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADMIN: frozenset(Permission),
}

API_GROUP = "pystol.org"


class RbacAttributes(NamedTuple):
    """What a SubjectAccessReview asks for a permission (group pystol.org)."""

    verb: str
    resource: str


#: How each permission is asked of Kubernetes RBAC for a Kubernetes identity. The
#: namespaced ones use the custom resources' own names, so the Role that lets someone
#: create PystolActions in `shop` also lets them run chaos in `shop` through the API.
#: `halts`, `tokens` and `auditrecords` are not served resources; RBAC rules may name them.
RBAC_MAPPING: dict[Permission, RbacAttributes] = {
    Permission.JOBS_READ: RbacAttributes("list", "pystolactions"),
    Permission.JOBS_SUBMIT: RbacAttributes("create", "pystolactions"),
    Permission.JOBS_CANCEL: RbacAttributes("delete", "pystolactions"),
    Permission.SCHEDULES_READ: RbacAttributes("list", "pystolschedules"),
    Permission.SCHEDULES_CREATE: RbacAttributes("create", "pystolschedules"),
    Permission.SCHEDULES_UPDATE: RbacAttributes("patch", "pystolschedules"),
    Permission.SCHEDULES_DELETE: RbacAttributes("delete", "pystolschedules"),
    Permission.CLUSTER_CHAOS: RbacAttributes("create", "pystolclusteractions"),
    Permission.HALT_ENGAGE: RbacAttributes("create", "halts"),
    Permission.HALT_LIFT: RbacAttributes("delete", "halts"),
    Permission.TOKENS_MANAGE: RbacAttributes("create", "tokens"),
    Permission.AUDIT_READ: RbacAttributes("list", "auditrecords"),
    Permission.EXPERIMENTS_READ: RbacAttributes("list", "pystolexperiments"),
    Permission.EXPERIMENTS_WRITE: RbacAttributes("create", "pystolexperiments"),
}


class ActorKind(StrEnum):
    SETTINGS_TOKEN = "settings-token"  # one of PYSTOL_API_TOKENS: an admin
    TOKEN = "token"                    # a named Pystol token
    KUBERNETES = "kubernetes"          # a bearer token the cluster's TokenReview accepted
    CUSTOM_RESOURCE = "custom-resource"
    SCHEDULE = "schedule"
    EXPERIMENT = "experiment"  # a step of an experiment run, on behalf of who started it


class Actor(BaseModel):
    """Who did something, as the job record, the audit trail and the API show it."""

    kind: ActorKind
    name: str = Field(description="Token name, Kubernetes user name, `namespace/name` of a "
                                  "custom resource (`name` for a cluster-scoped one) or "
                                  "schedule id.")
    role: Role | None = Field(None, description="None for Kubernetes users: RBAC decides.")
    namespaces: list[str] | None = Field(None, description="Where the role applies; None: "
                                                           "every namespace.")
    groups: list[str] = Field(default_factory=list)
    uid: str | None = Field(None, description="A custom resource's or Kubernetes user's "
                                              "uid; for a named token, which token of that "
                                              "name (its creation time).")
    resource_kind: str | None = Field(None, description="A custom resource's kind.")
    manager: str | None = Field(None, description="A custom resource's last manager "
                                                  "(managedFields).")
    on_behalf_of: str | None = Field(None, description="A schedule's fire: who last changed "
                                                       "the schedule.")
    address: str | None = Field(None, description="The client address of an API request.")

    @property
    def submitter(self) -> str:
        """The name job records and idempotency keys use."""
        return self.name if self.kind in (ActorKind.SETTINGS_TOKEN,
                                          ActorKind.CUSTOM_RESOURCE) \
            else f"{self.kind.value}:{self.name}"


class Authority(Protocol):
    """Answers whether an actor may use a permission in a namespace (None: cluster scope)."""

    def allows(self, permission: Permission, namespace: str | None) -> bool: ...


@dataclass(frozen=True)
class RoleAuthority:
    """A role in some namespaces (None: all of them). A namespaced permission asked at
    cluster scope (namespace None) needs the role in every namespace."""

    role: Role
    namespaces: frozenset[str] | None = None

    def allows(self, permission: Permission, namespace: str | None) -> bool:
        if permission not in ROLE_PERMISSIONS[self.role]:
            return False
        if not permission.namespaced:
            return True
        if self.namespaces is None:
            return True
        return namespace is not None and namespace in self.namespaces


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: who (for records and the audit trail) and what they may do."""

    actor: Actor
    authority: Authority


@dataclass(frozen=True)
class GrantAuthority:
    """The authority a sealed grant carries (a schedule firing as whoever last changed it):
    submit in its namespaces; everything at cluster scope when the grant says so."""

    grant: Grant

    def allows(self, permission: Permission, namespace: str | None) -> bool:
        if permission == Permission.CLUSTER_CHAOS:
            return self.grant.cluster
        if permission == Permission.JOBS_SUBMIT:
            return self.grant.cluster or (namespace is not None
                                          and namespace in self.grant.namespaces)
        return False


class AccessDenied(Exception):
    """403: the actor may not do this. `loc` names the field that asked for it (a
    namespace, the action), when there is one."""

    def __init__(self, detail: str, loc: str | None = None,
                 permission: Permission | None = None, namespace: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.loc = loc
        self.permission = permission
        self.namespace = namespace


def require(authority: Authority, permission: Permission, namespace: str | None,
            who: str, loc: str | None = None) -> None:
    """AccessDenied unless `authority` allows `permission` in `namespace`."""
    if not authority.allows(permission, namespace):
        where = f"in namespace {namespace!r}" if namespace is not None else "at cluster scope"
        raise AccessDenied(f"{who} may not {permission.value} {where}", loc=loc,
                           permission=permission, namespace=namespace)


# -- the grant a job carries ---------------------------------------------------------------


class Grant(BaseModel):
    """What the submission service allowed a job, sealed with PYSTOL_SIGNING_KEY."""

    submitter: str
    namespaces: list[str] = Field(default_factory=list,
                                  description="The namespaces the job may touch.")
    cluster: bool = Field(False, description="It may act at cluster scope (nodes).")
    signature: str = ""

    def payload(self, job_id: str, spec: Any) -> bytes:
        """The bytes the signature covers: the job's (or schedule's) id, its spec (or
        template) and this grant."""
        return json.dumps({"job": job_id, "spec": spec, "submitter": self.submitter,
                           "namespaces": sorted(self.namespaces), "cluster": self.cluster},
                          sort_keys=True, separators=(",", ":"), default=str).encode()


def seal(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def is_sealed(key: bytes, payload: bytes, signature: str) -> bool:
    return bool(signature) and hmac.compare_digest(seal(key, payload), signature)
