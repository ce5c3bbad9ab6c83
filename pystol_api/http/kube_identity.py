"""Kubernetes identities: a bearer token Pystol does not know is asked of the cluster.

Chaos Mesh's "security mode" has people sign in with a Kubernetes token and lets RBAC
decide; Pystol does the same, with one mapping from its permissions to RBAC attributes
(`core.access.RBAC_MAPPING`): the Role that lets someone create PystolActions in `shop`
lets them run chaos in `shop` through the API, the CLI and the dashboard too.

- Who: a TokenReview. A token the cluster does not authenticate is a 401, like any
  unknown token. The answer is cached for `review_ttl` seconds by the token's SHA-256
  (never the token itself), so a dashboard polling every second costs one review per
  half minute, and a revoked token stops working within that time.
- What: a SubjectAccessReview per (permission, namespace), asked on first use and cached
  for `access_ttl` seconds per user, groups and extra. The SAR carries everything the
  TokenReview said about the user, `extra` included: authorizers that narrow a user by
  it (OpenShift's scoped tokens, `scopes.authorization.openshift.io`; webhooks keyed on
  `authentication.kubernetes.io/credential-id`) would otherwise judge a wider user than
  the one who signed in. `extra` stays out of the public Actor (job records, the audit
  trail): it can hold credential ids.
- A cluster that cannot be reached, or a Pystol without permission to ask, answers no:
  the token is refused (401) or the operation forbidden (403), never allowed.
- Reviews of tokens not seen before are rate-limited on their own (`reviews_per_second`,
  non-blocking): anyone can send a random bearer token, and without a limit a flood of
  them would spend the API's request budget towards the Kubernetes API (which previews
  and the cluster view share). Over the limit, a new token is refused (401) at once;
  tokens already reviewed keep working from the cache.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pystol_worker.core.access import (
    API_GROUP,
    RBAC_MAPPING,
    Actor,
    ActorKind,
    Identity,
    Permission,
)
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError

log = logging.getLogger("pystol.api.auth")
CACHE_SIZE = 10_000


class _TtlCache:
    """A small thread-safe LRU with per-entry expiry."""

    def __init__(self, ttl: float, size: int = CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> tuple[bool, Any]:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < self.clock():
                self._items.pop(key, None)
                return False, None
            self._items.move_to_end(key)
            return True, item[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = (self.clock() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


#: TokenReview's `user.extra`, frozen so that it can be part of a cache key: (key, values)
#: pairs sorted by key, each with its values in the order the cluster gave them.
Extra = tuple[tuple[str, tuple[str, ...]], ...]


#: The most of `user.extra` and `groups` a signed-in user may carry (characters, and
#: groups): every cached review keeps them, and every SubjectAccessReview sends them.
MAX_EXTRA_CHARS = 16 * 1024
MAX_GROUPS = 256


def frozen_extra(raw: Any) -> Extra | None:
    """`user.extra` as the TokenReview gave it (a map of string lists), frozen; None when
    it has another shape or is over MAX_EXTRA_CHARS. Such a user is refused rather than
    asked about without it: dropping or trimming `extra` would ask the authorizer about a
    wider user than the one who signed in."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        return None
    frozen: list[tuple[str, tuple[str, ...]]] = []
    size = 0
    for key, values in raw.items():
        if not isinstance(key, str) or not isinstance(values, list) \
                or not all(isinstance(value, str) for value in values):
            return None
        size += len(key) + sum(len(value) for value in values)
        if size > MAX_EXTRA_CHARS:
            return None
        frozen.append((key, tuple(values)))
    return tuple(sorted(frozen))


@dataclass(frozen=True)
class ReviewedUser:
    """Who a TokenReview said a token is: the public Actor and the `extra` every
    SubjectAccessReview for this user must carry."""

    actor: Actor
    extra: Extra = ()


class KubernetesIdentities:
    """TokenReview and SubjectAccessReview, cached; `cluster` is built on first use."""

    def __init__(self, cluster: Callable[[], ClusterAccess], *, review_ttl: float = 30.0,
                 access_ttl: float = 10.0, reviews_per_second: float = 10.0,
                 review_burst: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self._cluster = cluster
        self._reviews = _TtlCache(review_ttl, clock=clock)
        self._access = _TtlCache(access_ttl, clock=clock)
        self._rate = reviews_per_second
        self._burst = float(review_burst)
        self._allowance = float(review_burst)
        self._last = clock()
        self._clock = clock
        self._lock = threading.Lock()

    def _may_review(self) -> bool:
        with self._lock:
            now = self._clock()
            self._allowance = min(self._burst, self._allowance + (now - self._last) * self._rate)
            self._last = now
            if self._allowance < 1.0:
                return False
            self._allowance -= 1.0
            return True

    def identify(self, token: str) -> Identity | None:
        """The identity the cluster says `token` is, or None."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        found, user = self._reviews.get(digest)
        if not found:
            if not self._may_review():
                log.warning("too many new bearer tokens to review; refusing one (401)")
                return None
            try:
                user = self._review(token)
            except ClusterError as error:  # refused now, asked again next time
                log.warning("could not check a bearer token with the cluster (TokenReview): "
                            "%s", error)
                return None
            self._reviews.put(digest, user)
        if user is None:
            return None
        return Identity(user.actor, KubernetesAuthority(self, user))

    def _review(self, token: str) -> ReviewedUser | None:
        status = self._cluster().review_token(token)
        user = status.get("user") or {}
        if not status.get("authenticated") or not user.get("username"):
            return None
        groups = user.get("groups") or []
        extra = frozen_extra(user.get("extra"))
        if extra is None or not isinstance(groups, list) or len(groups) > MAX_GROUPS:
            log.warning("refusing %s: the TokenReview's extra or groups are malformed or "
                        "too large to ask about faithfully", str(user["username"])[:100])
            return None
        actor = Actor(kind=ActorKind.KUBERNETES, name=str(user["username"]),
                      groups=[str(group) for group in groups],
                      uid=str(user["uid"]) if user.get("uid") else None)
        return ReviewedUser(actor, extra)

    def allows(self, user: ReviewedUser, permission: Permission,
               namespace: str | None) -> bool:
        actor = user.actor
        # The uid and extra are in the key: two tokens of one user name that the cluster
        # tells apart (another credential, another scope) never share an answer.
        key = (actor.name, tuple(actor.groups), actor.uid, user.extra, permission, namespace)
        found, allowed = self._access.get(key)
        if found:
            return bool(allowed)
        verb, resource = RBAC_MAPPING[permission]
        # Only when there is some: a review without `extra` is the same question, and
        # callers' test doubles that predate `extra` keep working.
        extra = {"extra": {k: list(v) for k, v in user.extra}} if user.extra else {}
        try:
            allowed = self._cluster().review_access(actor.name, actor.groups, actor.uid, verb,
                                                    API_GROUP, resource, namespace, **extra)
        except ClusterError as error:
            log.warning("could not ask the cluster whether %s may %s %s.%s in %s: %s",
                        actor.name, verb, resource, API_GROUP, namespace or "the cluster",
                        error)
            return False  # not cached: the next request asks again
        self._access.put(key, allowed)
        return bool(allowed)


class KubernetesAuthority:
    """A Kubernetes user's authority: RBAC, through SubjectAccessReviews."""

    def __init__(self, identities: KubernetesIdentities, user: ReviewedUser) -> None:
        self._identities = identities
        self._user = user

    def allows(self, permission: Permission, namespace: str | None) -> bool:
        return self._identities.allows(self._user, permission, namespace)
