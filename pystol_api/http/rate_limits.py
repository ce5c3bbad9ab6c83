"""Per-identity rate limits on the API, counted in Pystol's Redis in one round trip.

Without them one client (a runaway script, a stolen token, an unauthenticated flood) can
spend every API thread and the Redis behind it, and the people who need the API during an
incident, to halt chaos, wait behind it. The rules:

- **Who is counted**: a bearer token, by its SHA-256 (the raw token is never a Redis key:
  anyone who can read Redis would see it); a request without one, by its client address.
  The check runs *before* authentication, so a flood is refused before it costs a token
  lookup or a TokenReview. A client inventing a new token per request would get a fresh
  count each time, so every request also counts against its client address
  (`PYSTOL_API_ADDRESS_RATE_LIMIT`, higher: several identities may share an address) --
  except a token that authenticated on this process within `KNOWN_TOKEN_SECONDS`. Behind
  a proxy every client shares one address; a noisy client or a flood of guesses there
  spent that address's budget and locked every operator out of `jobs cancel` with it.
  An invented token never authenticates, so it never escapes the address budget; a known
  one still has its own.
- **How much**: `PYSTOL_API_RATE_LIMIT` ("50/second;1200/minute"; empty: off), one budget
  per identity across the whole API, not per route.
- **The halt switch apart**: every method of `/api/v1/halt` is exempt from that budget
  and counted on its own (`PYSTOL_HALT_RATE_LIMIT`), so an identity that exhausted its
  budget, or a flood from elsewhere, never stands between an operator and the kill switch.
- **Probes exempt**: `/healthz` and `/readyz` are the kubelet's and the load balancer's;
  refusing them would restart or unlist a healthy API.
- **Failing open**: the limiter shares the application's Redis client (its connection
  pool: same server, TLS, password or Sentinel master). When Redis cannot be reached the
  counts move to this process's memory (Redis is tried again after
  `RETRY_REDIS_SECONDS`), and any other limiter error lets the request through: a Redis
  outage must not turn every request into a 500; the routes that need Redis answer their
  own 503.
- **One round trip**: every window of every budget a request counts against (the
  identity's and the address's, each possibly "N/second;M/minute") is incremented by one
  Lua script (`COUNT_LUA`), where flask-limiter made one EVALSHA per window. Windows
  are fixed: a counter starts at a request's first hit and expires after the window,
  like flask-limiter's "fixed-window" strategy (and `limits`' key notation). Every
  window is counted, also when another one refuses the request.

A refused request is a 429 problem document with `Retry-After` (seconds until the window
that refused it ends; one more round trip, on refusals only).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import redis
from flask import Flask, Response, g, request
from limits import RateLimitItem, parse_many

from pystol_api.http.problems import problem_response
from pystol_api.http.routes.common import API_PREFIX
from pystol_worker.core.settings import Settings, SettingsError

log = logging.getLogger("pystol.api")

HALT_PATH = API_PREFIX + "/halt"
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})
STORAGE_KEY_PREFIX = "pystol:ratelimit"
MAX_MEMORY_KEYS = 100_000  # windows counted in memory while Redis is down, per process
#: After Redis failed to answer, count in memory for this long before trying it again
#: (so that an outage costs one connect timeout per interval, not one per request).
RETRY_REDIS_SECONDS = 5.0
#: A token that authenticated on this process this recently is not counted against its
#: client address (only against its own budget).
KNOWN_TOKEN_SECONDS = 60.0
MAX_KNOWN_TOKENS = 10_000  # per process; the least recently seen are forgotten first

# KEYS: one counter per window; ARGV: each window's length in seconds. Returns the counts.
COUNT_LUA = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCRBY', key, 1)
  if n == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  counts[i] = n
end
return counts
"""


def identity_key() -> str:
    """The rate-limit key of the current request: `token:` and the first 32 hex digits of
    the bearer token's SHA-256, or `address:` and the client address."""
    key: str | None = g.get("rate_limit_identity")
    if key is None:  # once per request: the budgets, the address check and the
        #              after-request hook all ask
        scheme, _, credentials = (request.headers.get("Authorization") or ""
                                  ).strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            key = "token:" + hashlib.sha256(credentials.encode()).hexdigest()[:32]
        else:
            key = "address:" + (request.remote_addr or "unknown")
        g.rate_limit_identity = key
    return key


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


@dataclass(frozen=True)
class Budget:
    """One setting's windows: whom they count (`key`), on which requests (`applies`, by
    endpoint), and what a refusal says. `spares_known_tokens`: not counted for a request
    whose token authenticated lately (the address budget)."""

    scope: str
    windows: list[RateLimitItem]
    key: Callable[[], str]
    applies: Callable[[str], bool]
    message: str
    spares_known_tokens: bool = False


class RateLimits:
    """Counts each request against every budget that applies to it, in one round trip."""

    def __init__(self, budgets: list[Budget], client: redis.Redis,
                 clock: Callable[[], float] = time.monotonic,
                 max_memory_keys: int = MAX_MEMORY_KEYS) -> None:
        self.budgets = budgets
        self.redis = client
        self._count = client.register_script(COUNT_LUA)
        self._clock = clock
        # key -> (count, window end), least recently hit first: bounded, because while Redis
        # is down a client inventing a token per request adds keys at its own pace.
        self._memory: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_memory_keys = max_memory_keys
        self._redis_down_until = 0.0
        # identity key ("token:<hash>") -> when it stops being known, least recent first
        self._known: OrderedDict[str, float] = OrderedDict()

    def remember(self, identity: str) -> None:
        """`identity` (a `token:` key) just authenticated: spare it the address budget for
        KNOWN_TOKEN_SECONDS."""
        with self._lock:
            self._known[identity] = self._clock() + KNOWN_TOKEN_SECONDS
            self._known.move_to_end(identity)
            while len(self._known) > MAX_KNOWN_TOKENS:
                self._known.popitem(last=False)

    def is_known(self, identity: str) -> bool:
        with self._lock:
            until = self._known.get(identity)
        return until is not None and until > self._clock()

    def check(self) -> Response | None:
        """The before-request hook: None to go on, or the 429 answer."""
        endpoint = request.endpoint
        if not endpoint or endpoint.rsplit(".", 1)[-1] == "static":
            return None
        counted: list[tuple[str, RateLimitItem, Budget]] = []
        identity = identity_key()
        for budget in self.budgets:
            if not budget.applies(endpoint):
                continue
            if budget.spares_known_tokens and self.is_known(identity):
                continue
            who = budget.key()
            for window in budget.windows:
                counted.append((f"{STORAGE_KEY_PREFIX}:{window.key_for(budget.scope, who)}",
                                window, budget))
        if not counted:
            return None
        try:
            counts, in_redis = self._hit([key for key, _, _ in counted],
                                         [window.get_expiry() for _, window, _ in counted])
        except Exception:  # a limiter failure must never fail the request
            log.exception("rate limiting failed; the request goes through")
            return None
        refused = [(key, window, budget)
                   for (key, window, budget), count in zip(counted, counts, strict=True)
                   if count > window.amount]
        if not refused:
            return None
        # Every refusing window must have ended before a retry can pass: the longest wait.
        waits = [(self._retry_after(key, window, in_redis), budget)
                 for key, window, budget in refused]
        retry_after, budget = max(waits, key=lambda wait: wait[0])
        return problem_response(429, "rate-limited", "Too many requests",
                                f"{budget.message}; retry in {retry_after} s",
                                headers={"Retry-After": str(retry_after)})

    def _hit(self, keys: list[str], expiries: list[int]) -> tuple[list[int], bool]:
        """The counts after this hit, and whether Redis kept them (else this process)."""
        if self._clock() >= self._redis_down_until:
            try:
                return [int(n) for n in cast(list[int], self._count(keys=keys,
                                                                    args=expiries))], True
            except redis.RedisError as error:  # unreachable, full (OOM), read-only…
                log.warning("rate limits counted in memory for %gs: Redis did not answer "
                            "(%s)", RETRY_REDIS_SECONDS, error)
                self._redis_down_until = self._clock() + RETRY_REDIS_SECONDS
        now = self._clock()
        counts = []
        with self._lock:
            for key, expiry in zip(keys, expiries, strict=True):
                count, ends = self._memory.get(key, (0, 0.0))
                if ends <= now:
                    count, ends = 0, now + expiry
                self._memory[key] = (count + 1, ends)
                self._memory.move_to_end(key)
                counts.append(count + 1)
            # O(1) per request whatever the flood: the least recently hit keys go first (a
            # flood's own address key is hit on every request, so it stays and keeps counting).
            while len(self._memory) > self._max_memory_keys:
                self._memory.popitem(last=False)
        return counts, False

    def _retry_after(self, key: str, window: RateLimitItem, in_redis: bool) -> int:
        """Whole seconds until the refusing window ends (at least 1)."""
        try:
            if in_redis:
                seconds = float(self.redis.pttl(key)) / 1000
            else:
                with self._lock:
                    seconds = self._memory.get(key, (0, 0.0))[1] - self._clock()
        except Exception:  # the storage failed between the check and now
            return 1
        if seconds <= 0:  # no expiry (should not happen): the window's length
            seconds = float(window.get_expiry())
        return max(1, math.ceil(seconds))


def install(app: Flask, settings: Settings, client: redis.Redis) -> RateLimits | None:
    """Rate-limit every request of `app` (call after the routes are registered and before
    authentication is installed, so that the check runs first). None when every limit
    is empty."""
    check_limits(settings)
    halt = _endpoints_at(app, [HALT_PATH])
    unlimited = _endpoints_at(app, UNLIMITED_PATHS)
    if not halt:
        raise RuntimeError(f"no route at {HALT_PATH}: install the rate limits after the routes")

    def general(endpoint: str) -> bool:
        return endpoint not in halt and endpoint not in unlimited

    budgets: list[Budget] = []
    if settings.api_rate_limit.strip():
        budgets.append(Budget(
            "api", list(parse_many(settings.api_rate_limit)), identity_key, general,
            "this identity sent more requests than PYSTOL_API_RATE_LIMIT "
            f"({settings.api_rate_limit}) allows"))
    if settings.api_address_rate_limit.strip():
        budgets.append(Budget(
            "address", list(parse_many(settings.api_address_rate_limit)), address_key,
            general,
            "this client address sent more requests than PYSTOL_API_ADDRESS_RATE_LIMIT "
            f"({settings.api_address_rate_limit}) allows", spares_known_tokens=True))
    if settings.halt_rate_limit.strip():
        budgets.append(Budget(
            "halt", list(parse_many(settings.halt_rate_limit)), identity_key,
            lambda endpoint: endpoint in halt,
            "this identity sent more requests to the halt switch than "
            f"PYSTOL_HALT_RATE_LIMIT ({settings.halt_rate_limit}) allows"))
    if not budgets:
        return None
    limits = RateLimits(budgets, client)
    app.before_request(limits.check)

    @app.after_request
    def _remember_authenticated_token(response: Response) -> Response:
        # `g.identity` is set only once authentication succeeded (auth.install).
        if g.get("identity") is not None:
            identity = identity_key()
            if identity.startswith("token:"):
                limits.remember(identity)
        return response

    return limits
