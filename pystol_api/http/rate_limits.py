"""Per-identity rate limits on the API, counted in Pystol's Redis with flask-limiter.

Without them one client (a runaway script, a stolen token, an unauthenticated flood) can
spend every API thread and the Redis behind it, and the people who need the API during an
incident, to halt chaos, wait behind it. The rules:

- **Who is counted**: a bearer token, by its SHA-256 (the raw token is never a Redis key:
  anyone who can read Redis would see it); a request without one, by its client address.
  The check runs *before* authentication, so a flood is refused before it costs a token
  lookup or a TokenReview. A client inventing a new token per request would get a fresh
  count each time, so every request also counts against its client address
  (`PYSTOL_API_ADDRESS_RATE_LIMIT`, higher: several identities may share an address).
- **How much**: `PYSTOL_API_RATE_LIMIT` ("50/second;1200/minute"; empty: off), one budget
  per identity across the whole API, not per route.
- **The halt switch apart**: every method of `/api/v1/halt` is exempt from that budget
  and counted on its own (`PYSTOL_HALT_RATE_LIMIT`), so an identity that exhausted its
  budget, or a flood from elsewhere, never stands between an operator and the kill switch.
- **Probes exempt**: `/healthz` and `/readyz` are the kubelet's and the load balancer's;
  refusing them would restart or unlist a healthy API.
- **Failing open**: the limiter shares the application's Redis client (its connection
  pool: same server, TLS, password or Sentinel master). When Redis cannot be reached the
  counts move to this process's memory until it answers again (flask-limiter's in-memory
  fallback) and any other limiter error lets the request through (`swallow_errors`): a
  Redis outage must not turn every request into a 500; the routes that need Redis answer
  their own 503.

A refused request is a 429 problem document with `Retry-After` (seconds until the window
that refused it ends).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable

import redis
from flask import Flask, Response, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from limits import parse_many

from pystol_api.http.problems import problem_response
from pystol_api.http.routes.common import API_PREFIX
from pystol_worker.core.settings import Settings, SettingsError

HALT_PATH = API_PREFIX + "/halt"
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})
STORAGE_KEY_PREFIX = "pystol:ratelimit"
# The storage is the injected client's connection pool; the scheme only picks limits'
# Redis storage class (TLS and Sentinel live in the pool's connection class).
STORAGE_URI = "redis://"


def identity_key() -> str:
    """The rate-limit key of the current request: `token:` and the first 32 hex digits of
    the bearer token's SHA-256, or `address:` and the client address."""
    scheme, _, credentials = (request.headers.get("Authorization") or "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return "token:" + hashlib.sha256(credentials.encode()).hexdigest()[:32]
    return "address:" + (request.remote_addr or "unknown")


def address_key() -> str:
    """The client address (the proxy's, behind one): a budget no invented token escapes."""
    return "address:" + (request.remote_addr or "unknown")


def check_limits(settings: Settings) -> None:
    """SettingsError unless both limits are flask-limiter notation (or empty): a typo must
    stop the API at start-up, not switch rate limiting off at the first request."""
    for variable, value in (("PYSTOL_API_RATE_LIMIT", settings.api_rate_limit),
                            ("PYSTOL_API_ADDRESS_RATE_LIMIT", settings.api_address_rate_limit),
                            ("PYSTOL_HALT_RATE_LIMIT", settings.halt_rate_limit)):
        if not value.strip():
            continue
        try:
            parse_many(value)
        except ValueError:
            raise SettingsError(f"{variable}={value!r} is not a rate limit: use "
                                "flask-limiter's notation, e.g. '50/second;1200/minute', "
                                "or leave it empty for none") from None


def _endpoints_at(app: Flask, paths: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(paths)
    return frozenset(rule.endpoint for rule in app.url_map.iter_rules() if rule.rule in wanted)


def install(app: Flask, settings: Settings, client: redis.Redis) -> Limiter | None:
    """Rate-limit every request of `app` (call after the routes are registered and before
    authentication is installed, so that the check runs first). None when both limits
    are empty."""
    check_limits(settings)
    halt = _endpoints_at(app, [HALT_PATH])
    unlimited = _endpoints_at(app, UNLIMITED_PATHS)
    if not halt:
        raise RuntimeError(f"no route at {HALT_PATH}: install the rate limits after the routes")

    limits: list[str | Callable[[], str] | ApplicationLimit] = []
    if settings.api_rate_limit.strip():
        limits.append(ApplicationLimit(
            limit_provider=settings.api_rate_limit, scope="api", key_function=identity_key,
            exempt_when=lambda: request.endpoint in halt or request.endpoint in unlimited,
            error_message="this identity sent more requests than PYSTOL_API_RATE_LIMIT "
                          f"({settings.api_rate_limit}) allows"))
    if settings.api_address_rate_limit.strip():
        limits.append(ApplicationLimit(
            limit_provider=settings.api_address_rate_limit, scope="address",
            key_function=address_key,
            exempt_when=lambda: request.endpoint in halt or request.endpoint in unlimited,
            error_message="this client address sent more requests than "
                          f"PYSTOL_API_ADDRESS_RATE_LIMIT ({settings.api_address_rate_limit}) "
                          "allows"))
    if settings.halt_rate_limit.strip():
        limits.append(ApplicationLimit(
            limit_provider=settings.halt_rate_limit, scope="halt", key_function=identity_key,
            exempt_when=lambda: request.endpoint not in halt,
            error_message="this identity sent more requests to the halt switch than "
                          f"PYSTOL_HALT_RATE_LIMIT ({settings.halt_rate_limit}) allows"))
    if not limits:
        return None

    limiter = Limiter(
        identity_key,
        application_limits=limits,
        storage_uri=STORAGE_URI,
        storage_options={"connection_pool": client.connection_pool,  # type: ignore[dict-item]
                         "key_prefix": STORAGE_KEY_PREFIX},
        strategy="fixed-window",      # one round trip per limit and request
        headers_enabled=False,        # X-RateLimit-* would cost another round trip each
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.init_app(app)

    @app.errorhandler(RateLimitExceeded)
    def _too_many_requests(error: RateLimitExceeded) -> Response:
        retry_after = _retry_after(limiter)
        return problem_response(429, "rate-limited", "Too many requests",
                                f"{error.description}; retry in {retry_after} s",
                                headers={"Retry-After": str(retry_after)})

    return limiter


def _retry_after(limiter: Limiter) -> int:
    """Whole seconds until the refusing window ends (at least 1)."""
    breached = limiter.current_limit
    if breached is None:
        return 1
    try:
        return max(1, math.ceil(breached.window.reset_time - time.time()))
    except Exception:  # the storage failed between the check and now
        return 1
