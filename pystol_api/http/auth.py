"""Bearer-token authentication for the API: every route is protected unless declared public.

The check runs once per request in a `before_request` hook instead of a decorator on
each view, so a route added later is protected by default; only the probes and the
API documentation are listed as public by the application factory.

Tokens are compared as SHA-256 digests with `hmac.compare_digest` against every
configured token, so the time taken does not reveal how much of a guess was right.
A job records its submitter as `token-` plus the first 8 hex digits of the token's
SHA-256: stable across restarts, distinct per token, and useless to an attacker who
reads job records.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from flask import Flask, g, request

from pystol_api.http.problems import ApiProblem

REALM = "pystol"


def submitter_name(token: str) -> str:
    """The stable, non-secret name a token's jobs are recorded under."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


class TokenAuth:
    """The configured tokens, kept as digests, and the names they map to."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._known = [(hashlib.sha256(token.encode()).digest(), submitter_name(token))
                       for token in tokens if token]

    def identify(self, authorization: str | None) -> str:
        """The submitter name for an `Authorization` header; ApiProblem 401 otherwise."""
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise ApiProblem(401, "unauthorized", "Authentication required",
                             "this route needs an `Authorization: Bearer <token>` header",
                             headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})
        digest = hashlib.sha256(credentials.encode()).digest()
        found: str | None = None
        for known, name in self._known:  # no early exit: same work whichever token matches
            if hmac.compare_digest(known, digest):
                found = name
        if found is None:
            raise ApiProblem(401, "invalid-token", "Authentication failed",
                             "the bearer token is not one the API accepts",
                             headers={"WWW-Authenticate":
                                      f'Bearer realm="{REALM}", error="invalid_token"'})
        return found


def install(app: Flask, auth: TokenAuth, public_endpoints: Iterable[str]) -> None:
    """Require a bearer token on every endpoint of `app` except `public_endpoints`."""
    public = frozenset(public_endpoints)

    @app.before_request
    def _authenticate() -> None:
        # No matched rule: let routing answer 404/405 (there is nothing to protect).
        if request.url_rule is None or request.endpoint in public:
            return
        g.submitter = auth.identify(request.headers.get("Authorization"))


def current_submitter() -> str:
    """Who sent the current (authenticated) request."""
    submitter: str = g.submitter
    return submitter
