"""Who sent a request, and what they may do: every route is protected unless declared
public, and every view asks `require(permission, namespace)` before it acts.

Authentication runs once per request in a `before_request` hook instead of a decorator
on each view, so a route added later is protected by default; only the probes, the
metrics and the API documentation are listed as public by the application factory.

A bearer token is, in this order:
1. one of `PYSTOL_API_TOKENS`: an admin (installs from before named tokens keep
   working). Compared as SHA-256 digests with `hmac.compare_digest` against every
   configured token, so the time taken does not reveal how much of a guess was right;
   recorded as `token-` plus the first 8 hex digits of the token's SHA-256;
2. a named Pystol token (`TokenStore`): its role in its namespaces, until it expires or
   is revoked;
3. anything else, when `PYSTOL_KUBERNETES_AUTH` is on: a Kubernetes credential, checked
   with a TokenReview; what it may do is asked with SubjectAccessReviews
   (`kube_identity`), so the cluster's RBAC decides.

Authorization is not here but in the views (through `require`) and, for jobs, in the
submission service, because only they know the namespaces a request touches.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable

from flask import Flask, g, request

from pystol_api.http.problems import ApiProblem, FieldError
from pystol_worker.core.access import (
    AccessDenied,
    Actor,
    ActorKind,
    Authority,
    Identity,
    Permission,
    Role,
    RoleAuthority,
)

REALM = "pystol"


def submitter_name(token: str) -> str:
    """The stable, non-secret name a settings token's jobs are recorded under."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


#: Looks a bearer secret up among the named tokens: an Identity, or None if unknown.
NamedTokenLookup = Callable[[str], Identity | None]
#: Asks the cluster who a bearer token is: an Identity, or None if it is not a credential.
KubernetesLookup = Callable[[str], Identity | None]


class Authenticator:
    """Turns an `Authorization` header into an Identity; ApiProblem 401 otherwise."""

    def __init__(self, settings_tokens: Iterable[str], named: NamedTokenLookup | None = None,
                 kubernetes: KubernetesLookup | None = None) -> None:
        self._known = [(hashlib.sha256(token.encode()).digest(), submitter_name(token))
                       for token in settings_tokens if token]
        self._named = named
        self._kubernetes = kubernetes

    def identify(self, authorization: str | None, address: str | None = None) -> Identity:
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise ApiProblem(401, "unauthorized", "Authentication required",
                             "this route needs an `Authorization: Bearer <token>` header",
                             headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})
        identity = self._lookup(credentials)
        if identity is None:
            raise ApiProblem(401, "invalid-token", "Authentication failed",
                             "the bearer token is not one the API accepts (unknown, "
                             "expired or revoked)",
                             headers={"WWW-Authenticate":
                                      f'Bearer realm="{REALM}", error="invalid_token"'})
        if address:
            identity = Identity(identity.actor.model_copy(update={"address": address}),
                                identity.authority)
        return identity

    def _lookup(self, credentials: str) -> Identity | None:
        digest = hashlib.sha256(credentials.encode()).digest()
        found: str | None = None
        for known, name in self._known:  # no early exit: same work whichever token matches
            if hmac.compare_digest(known, digest):
                found = name
        if found is not None:
            return Identity(Actor(kind=ActorKind.SETTINGS_TOKEN, name=found, role=Role.ADMIN),
                            RoleAuthority(Role.ADMIN))
        if self._named is not None:
            identity = self._named(credentials)
            if identity is not None:
                return identity
        if self._kubernetes is not None:
            return self._kubernetes(credentials)
        return None


def install(app: Flask, authenticator: Authenticator, public_endpoints: Iterable[str]) -> None:
    """Require a bearer token on every endpoint of `app` except `public_endpoints`."""
    public = frozenset(public_endpoints)

    @app.before_request
    def _authenticate() -> None:
        # No matched rule: let routing answer 404/405 (there is nothing to protect).
        if request.url_rule is None or request.endpoint in public:
            return
        g.identity = authenticator.identify(request.headers.get("Authorization"),
                                            request.remote_addr)


def current_identity() -> Identity:
    identity: Identity = g.identity
    return identity


def current_actor() -> Actor:
    """Who sent the current (authenticated) request."""
    return current_identity().actor


def current_authority() -> Authority:
    return current_identity().authority


def current_submitter() -> str:
    """The name the current caller's jobs and schedules are recorded under."""
    return current_actor().submitter


def forbidden(error: AccessDenied) -> ApiProblem:
    """The 403 problem for an AccessDenied, naming the field that asked for it."""
    errors = [FieldError(loc=error.loc, msg=error.detail)] if error.loc else None
    return ApiProblem(403, "forbidden", "Forbidden", error.detail, errors=errors)


def allows(permission: Permission, namespace: str | None = None) -> bool:
    return current_authority().allows(permission, namespace)


def require(permission: Permission, namespace: str | None = None,
            loc: str | None = None) -> None:
    """403 unless the current caller may use `permission` in `namespace` (None: at
    cluster scope)."""
    if not allows(permission, namespace):
        where = f"in namespace {namespace!r}" if namespace is not None else "at cluster scope"
        raise forbidden(AccessDenied(f"{current_submitter()} may not {permission.value} "
                                     f"{where}", loc=loc, permission=permission,
                                     namespace=namespace))
