"""Who the unit tests act as, and the one way they store a job the runner will run.

Since issue 12 the runner refuses a job whose record carries no grant sealed with
PYSTOL_SIGNING_KEY (tests/conftest.py sets one for every test), so a test that stores a
job for the runner stores it as `SubmissionService.submit` does: the actor on the record
and the identity's grant sealed for the job's id and spec (`store_job`). It checks scope
only, not the admin policy: the runner checks the policy itself, and the tests of that
store jobs the runner's policy refuses.
"""

from __future__ import annotations

from pystol_worker.actions import default_registry
from pystol_worker.actions.registry import ActionRegistry
from pystol_worker.core.access import (
    Actor,
    ActorKind,
    Grant,
    Identity,
    Permission,
    Role,
    RoleAuthority,
)
from pystol_worker.core.model import JobRecord, JobSpec, Source
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import grant_for, sealed
from pystol_worker.jobs.validation import JobInvalid, validate_job
from pystol_worker.safety.revert_journal import RevertJournal
from pystol_worker.store.job_store import JobStore

#: One of PYSTOL_API_TOKENS: an admin everywhere (what the tests before roles acted as).
ADMIN = Identity(Actor(kind=ActorKind.SETTINGS_TOKEN, name="token-test", role=Role.ADMIN),
                 RoleAuthority(Role.ADMIN))


def token(name: str, role: Role, *namespaces: str) -> Identity:
    """A named Pystol token with `role` in `namespaces` (none given: every namespace)."""
    scope = list(namespaces) or None
    return Identity(Actor(kind=ActorKind.TOKEN, name=name, role=role, namespaces=scope),
                    RoleAuthority(role, frozenset(namespaces) if namespaces else None))


def operator(name: str, *namespaces: str) -> Identity:
    return token(name, Role.OPERATOR, *namespaces)


def viewer(name: str, *namespaces: str) -> Identity:
    return token(name, Role.VIEWER, *namespaces)


def custom_resource(namespace: str, name: str) -> Identity:
    """A PystolAction `namespace/name`: an operator of its own namespace."""
    return Identity(Actor(kind=ActorKind.CUSTOM_RESOURCE, name=f"{namespace}/{name}",
                          role=Role.OPERATOR, namespaces=[namespace],
                          resource_kind="PystolAction"),
                    RoleAuthority(Role.OPERATOR, frozenset({namespace})))


def store_job(store: JobStore, spec: JobSpec, *, identity: Identity = ADMIN,
              source: Source = Source.API, settings: Settings | None = None,
              registry: ActionRegistry | None = None,
              schedule_id: str | None = None) -> JobRecord:
    """Store a queued job for `identity` exactly as the submission service stores it (its
    actor, and its grant sealed with the settings' signing key); nothing is queued.
    AccessDenied when `identity` may not submit it.

    A spec this registry refuses gets the grant its namespaces would have had: such a
    record comes from an API whose registry took it (another version, another plug-in
    set), and the runner must still fail it as invalid, naming the field."""
    settings = settings if settings is not None else Settings()
    registry = registry if registry is not None else default_registry()
    try:
        action, params = validate_job(spec, registry, settings)
        grant = grant_for(spec, action, params, identity)
    except JobInvalid:
        grant = Grant(submitter=identity.actor.submitter,
                      namespaces=list(spec.target.namespaces),
                      cluster=identity.authority.allows(Permission.CLUSTER_CHAOS, None))
    key = settings.signing_key_bytes
    record, _ = store.create(spec, source, identity.actor.submitter, schedule_id=schedule_id,
                             actor=identity.actor,
                             grant=lambda job_id: sealed(grant, job_id, spec, key))
    return record


def signed_journal(client: object, heartbeat_seconds: float = 15.0) -> RevertJournal:
    """The revert journal as a worker builds it: sealed with the tests' PYSTOL_SIGNING_KEY."""
    return RevertJournal(client, Settings().signing_key_bytes,  # type: ignore[arg-type]
                         heartbeat_seconds)
