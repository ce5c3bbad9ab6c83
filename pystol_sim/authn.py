"""Who a request is: the sim's authenticator (bearer tokens only, kept in memory).

Three kinds of token are accepted, as a kube-apiserver with a static token file and
bound ServiceAccount tokens would:

- the admin token (`--token`, written into the kubeconfig): `system:admin` in
  `system:masters`, which the server lets through without any RBAC check;
- scenario users (`users:` in the scenario file) and users added at run time with
  `POST /_sim/users`: a fixed name and groups for a fixed token;
- ServiceAccount tokens made by a TokenRequest (`kubectl create token`): the user
  `system:serviceaccount:NS:NAME` in `system:serviceaccounts`,
  `system:serviceaccounts:NS`. A token is bound to the ServiceAccount's uid and stops
  working when it expires or when that ServiceAccount is deleted (or replaced by a new
  one of the same name). They are opaque random strings, not JWTs.

Every authenticated user is also in `system:authenticated`. Nothing here knows HTTP:
the server hands in the token and the ServiceAccount writes it sees.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ADMIN_NAME = "system:admin"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
# The audience kube-apiserver accepts by default (kubeadm's --api-audiences).
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


@dataclass(frozen=True)
class UserInfo:
    """An authenticated identity, as in `TokenReview.status.user`."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"username": self.username}
        if self.uid:
            body["uid"] = self.uid
        body["groups"] = list(self.groups)
        if self.extra:
            body["extra"] = {key: list(values) for key, values in self.extra}
        return body

    @property
    def is_master(self) -> bool:
        return MASTERS in self.groups


ADMIN = UserInfo(ADMIN_NAME, groups=(MASTERS, AUTHENTICATED))


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}", AUTHENTICATED)


def with_authenticated(groups: Iterable[str]) -> tuple[str, ...]:
    """The groups, deduplicated in order, plus `system:authenticated`."""
    out = list(dict.fromkeys(groups))
    if AUTHENTICATED not in out:
        out.append(AUTHENTICATED)
    return tuple(out)


@dataclass
class ServiceAccountToken:
    """What a TokenRequest issued: the ServiceAccount it speaks for, until when."""

    namespace: str
    name: str
    sa_uid: str
    expires_at: float  # unix seconds
    audiences: tuple[str, ...]
    credential_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    bound_object: dict[str, Any] | None = None

    def user(self) -> UserInfo:
        return UserInfo(service_account_username(self.namespace, self.name), self.sa_uid,
                        service_account_groups(self.namespace),
                        ((CREDENTIAL_ID, (f"JTI={self.credential_id}",)),))


@dataclass(frozen=True)
class AuthResult:
    """The answer for one token: a user, or why not (`TokenReview.status.error`)."""

    user: UserInfo | None
    audiences: tuple[str, ...] = ()
    error: str = ""


class AuthError(ValueError):
    """A user definition that cannot be accepted (duplicate token, bad field)."""


def _check_token(token: Any) -> str:
    if not isinstance(token, str) or not token:
        raise AuthError("token must be a non-empty string")
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise AuthError("token must be printable ASCII without spaces")
    return token


class Authenticator:
    """Maps bearer tokens to users. `clock` is injectable so expiry can be tested."""

    def __init__(self, admin_token: str, clock: Callable[[], float] = time.time) -> None:
        self.admin_token = admin_token
        self.clock = clock
        self._users: dict[str, UserInfo] = {}  # token -> static user
        self._sa_tokens: dict[str, ServiceAccountToken] = {}
        self._sa_uids: dict[tuple[str, str], str] = {}  # live ServiceAccounts' uids
        self._prune_at = 64

    # -- static users --------------------------------------------------------------------------

    def add_user(self, name: Any, token: Any, groups: Any = (), uid: Any = "") -> UserInfo:
        """Accept `token` as user `name` (replacing the user the token named before)."""
        if not isinstance(name, str) or not name.strip():
            raise AuthError("name must be a non-empty string")
        token = _check_token(token)
        if groups is None:
            groups = ()
        if isinstance(groups, str) or not all(isinstance(g, str) and g for g in groups):
            raise AuthError("groups must be a list of non-empty strings")
        if not isinstance(uid, str):
            raise AuthError("uid must be a string")
        if token == self.admin_token or token in self._sa_tokens:
            raise AuthError("that token is already in use")
        user = UserInfo(name, uid, with_authenticated(groups))
        self._users[token] = user
        return user

    def remove_user(self, name: str) -> int:
        """Forget every token of user `name`; how many there were."""
        tokens = [t for t, user in self._users.items() if user.username == name]
        for token in tokens:
            del self._users[token]
        return len(tokens)

    def users(self) -> list[UserInfo]:
        return sorted(self._users.values(), key=lambda u: u.username)

    # -- ServiceAccount tokens -----------------------------------------------------------------

    def observe_service_account(self, event: str, obj: Mapping[str, Any]) -> None:
        """A ServiceAccount was written: remember the uid of the live ones."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if event == "DELETED" or meta.get("deletionTimestamp"):
            self._sa_uids.pop(key, None)
        else:
            self._sa_uids[key] = str(meta.get("uid", ""))

    def issue_service_account_token(self, namespace: str, name: str, sa_uid: str,
                                    expiration_seconds: int,
                                    audiences: Iterable[str] = (API_AUDIENCE,),
                                    bound_object: dict[str, Any] | None = None
                                    ) -> tuple[str, ServiceAccountToken]:
        """A new token for ServiceAccount NS/NAME (whose uid is `sa_uid`)."""
        self._sa_uids.setdefault((namespace, name), sa_uid)
        self._prune()
        token = secrets.token_urlsafe(32)
        record = ServiceAccountToken(namespace, name, sa_uid,
                                     self.clock() + expiration_seconds,
                                     tuple(audiences) or (API_AUDIENCE,),
                                     bound_object=bound_object)
        self._sa_tokens[token] = record
        return token, record

    def _prune(self) -> None:
        """Drop expired and orphaned tokens, now and then (amortised O(1) per issue)."""
        if len(self._sa_tokens) < self._prune_at:
            return
        now = self.clock()
        self._sa_tokens = {t: r for t, r in self._sa_tokens.items()
                           if r.expires_at > now
                           and self._sa_uids.get((r.namespace, r.name)) == r.sa_uid}
        self._prune_at = max(64, 2 * len(self._sa_tokens))

    # -- authentication ------------------------------------------------------------------------

    def authenticate(self, token: str, audiences: Iterable[str] | None = None) -> AuthResult:
        """Who `token` is for the given audiences (default: the API server's own)."""
        wanted = tuple(audiences) if audiences else (API_AUDIENCE,)
        if token == self.admin_token:
            return AuthResult(ADMIN, wanted)
        user = self._users.get(token)
        if user is not None:
            return AuthResult(user, wanted)
        record = self._sa_tokens.get(token)
        if record is None:
            return AuthResult(None, error="invalid bearer token")
        if self.clock() >= record.expires_at:
            return AuthResult(None, error="[invalid bearer token, service account token has "
                                          "expired]")
        live_uid = self._sa_uids.get((record.namespace, record.name))
        if live_uid is None:
            return AuthResult(None, error=f'[invalid bearer token, serviceaccounts '
                                          f'"{record.name}" not found]')
        if live_uid != record.sa_uid:
            return AuthResult(None, error=f"[invalid bearer token, service account UID "
                                          f"({live_uid}) does not match claim "
                                          f"({record.sa_uid})]")
        matched = tuple(a for a in wanted if a in record.audiences)
        if not matched:
            return AuthResult(None, error="[invalid bearer token, token audiences "
                                          f"{list(record.audiences)} is invalid for the "
                                          f"target audiences {list(wanted)}]")
        return AuthResult(record.user(), matched)

    def user_for_header(self, header: str) -> UserInfo | None:
        """The user of an `Authorization: Bearer TOKEN` header, None when unknown."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return self.authenticate(token.strip()).user
