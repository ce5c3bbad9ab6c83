"""Named Pystol tokens: a role in some namespaces, until they expire or are revoked.

A token's secret (`pst_` + 43 URL-safe characters, 256 random bits) is shown once, when
it is created, and never stored: Redis holds its SHA-256 only, so whoever reads Redis
(or a backup of it) learns no credential. Layout (prefix `pystol:`):

- `token:{name}`           the entry as JSON: the record, the secret's digest, a seal
- `token-digest:{hex}`     the secret's SHA-256 -> the token's name (the lookup index)
- `tokens`                 the set of token names

Every entry is sealed with an HMAC under `PYSTOL_SIGNING_KEY`, which Redis never holds,
over everything it says (name, digest, role, namespaces, expiry, creation). Whoever can
write to Redis but has not the key can neither mint a token (a forged entry has no valid
seal) nor widen one (an altered role or namespace list breaks the seal): `lookup`
refuses such an entry and logs a warning naming it.

`lookup` runs on every authenticated request, so it costs two Redis reads whatever the
number of tokens: the digest index, then the entry. An expiring token's keys also expire
in Redis a week after the token does, so expired tokens stay visible in `list` for a
while and then disappear by themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from pystol_worker.core.access import Actor, ActorKind, Role, RoleAuthority, is_sealed, seal
from pystol_worker.core.model import DNS_LABEL, NamespaceName

log = logging.getLogger("pystol.tokens")

PREFIX = "pystol:"
TOKEN_PREFIX = PREFIX + "token:"
DIGEST_PREFIX = PREFIX + "token-digest:"
NAMES_KEY = PREFIX + "tokens"
SECRET_PREFIX = "pst_"
#: Expired tokens stay listed this long, then their keys expire in Redis.
EXPIRED_KEPT_SECONDS = 7 * 86400
#: The longest expiry a token may have (about 100 years).
MAX_EXPIRY_SECONDS = 100 * 365 * 86400
MAX_NAMESPACES = 1000
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: What the seal says it covers, so a signature made for something else (a job's grant)
#: can never pass for a token's.
SEAL_PURPOSE = "pystol-token-v1"


def scope_problem(role: Role, namespaces: Iterable[str]) -> str | None:
    """Why `namespaces` do not fit `role`, or None: an admin acts everywhere (no list), a
    viewer or operator in the namespaces named (at least one)."""
    named = list(namespaces)
    if role == Role.ADMIN and named:
        return "an admin token acts in every namespace: give no namespaces"
    if role != Role.ADMIN and not named:
        return f"a {role.value} token needs at least one namespace"
    return None


def digest_of(secret: str) -> str:
    """The hex SHA-256 of a secret: what is stored instead of it."""
    return hashlib.sha256(secret.encode()).hexdigest()


class NamedToken(BaseModel):
    """A named token as the API shows it: never its secret."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN, examples=["ci-shop"],
                      description="Lower-case letters, digits and '-' (a DNS label).")
    role: Role
    namespaces: list[NamespaceName] = Field(
        default_factory=list, max_length=MAX_NAMESPACES, examples=[["shop", "cart"]],
        description="Where the role applies; empty for an admin (every namespace).")
    expires_at: datetime | None = Field(None, description="None: never expires.")
    created_at: datetime
    created_by: str = Field(description="Who created it (the submitter name).")
    intact: bool = Field(True, description="False when the entry in Redis does not carry a "
                                           "valid seal (written or altered without "
                                           "PYSTOL_SIGNING_KEY): it authenticates nobody.")

    @field_validator("namespaces")
    @classmethod
    def _sorted(cls, value: list[str]) -> list[str]:
        return sorted(set(value))

    @model_validator(mode="after")
    def _scope(self) -> NamedToken:
        problem = scope_problem(self.role, self.namespaces)
        if problem:
            raise ValueError(problem)
        return self

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def actor(self) -> Actor:
        """The actor requests with this token are recorded as."""
        return Actor(kind=ActorKind.TOKEN, name=self.name, role=self.role,
                     namespaces=None if self.role == Role.ADMIN else list(self.namespaces),
                     uid=self.uid)

    @property
    def uid(self) -> str:
        """Which token of this name: a name revoked and created again (perhaps for someone
        else) is another token, and what acts on the first one's behalf (a schedule it
        last changed) must not go on under the second one's rights."""
        return f"created:{self.created_at.isoformat()}"

    def authority(self) -> RoleAuthority:
        """What requests with this token may do."""
        return RoleAuthority(self.role, None if self.role == Role.ADMIN
                             else frozenset(self.namespaces))


class _Entry(BaseModel):
    """What `token:{name}` holds."""

    token: NamedToken
    digest: str
    signature: str

    @staticmethod
    def payload(token: NamedToken, digest: str) -> bytes:
        return json.dumps({
            "purpose": SEAL_PURPOSE,
            "name": token.name,
            "digest": digest,
            "role": token.role.value,
            "namespaces": sorted(token.namespaces),
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            "created_at": token.created_at.isoformat(),
            "created_by": token.created_by,
        }, sort_keys=True, separators=(",", ":")).encode()


class TokenExists(Exception):
    """A token with this name exists (revoke it first)."""


class TokenNotFound(KeyError):
    """No token has this name."""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class TokenStore:
    """Named tokens in Redis; `key` is the signing key (`Settings.signing_key_bytes`)."""

    def __init__(self, redis_client: redis.Redis, key: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        if not key:
            raise ValueError("the token store needs a signing key")
        self.redis = redis_client
        self._key = key
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def create(self, name: str, role: Role, namespaces: Iterable[str],
               expires_in_seconds: float | None, created_by: str) -> tuple[NamedToken, str]:
        """A new token and its secret (show it once: it cannot be read back). TokenExists
        when the name is taken; ValueError (pydantic's ValidationError is one) when the
        name, role, namespaces or expiry are not acceptable."""
        if expires_in_seconds is not None and not (
                math.isfinite(expires_in_seconds)
                and 0 < expires_in_seconds <= MAX_EXPIRY_SECONDS):
            raise ValueError(f"the expiry must be more than 0 and at most "
                             f"{MAX_EXPIRY_SECONDS} seconds (about 100 years)")
        now = self._now()
        token = NamedToken(
            name=name, role=role, namespaces=list(namespaces), created_at=now,
            created_by=created_by,
            expires_at=now + timedelta(seconds=expires_in_seconds)
            if expires_in_seconds is not None else None)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        digest = digest_of(secret)
        entry = _Entry(token=token, digest=digest,
                       signature=seal(self._key, _Entry.payload(token, digest)))
        ttl = None if expires_in_seconds is None \
            else math.ceil(expires_in_seconds) + EXPIRED_KEPT_SECONDS
        # The name is claimed first (SET NX): of two creations of one name, one wins.
        if not self.redis.set(TOKEN_PREFIX + token.name,
                              entry.model_dump_json(exclude={"token": {"intact"}}),
                              nx=True, ex=ttl):
            raise TokenExists(token.name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(DIGEST_PREFIX + digest, token.name, ex=ttl)
        pipe.sadd(NAMES_KEY, token.name)
        pipe.execute()
        log.info("token %s created (%s%s) by %s", token.name, token.role.value,
                 f" in {', '.join(token.namespaces)}" if token.namespaces else "", created_by)
        return token, secret

    def _entry(self, name: str, raw: bytes | str | None) -> _Entry | None:
        if raw is None:
            return None
        try:
            entry = _Entry.model_validate_json(raw)
        except ValidationError:
            log.warning("token %s: the entry in Redis is not a token entry; it is refused",
                        name)
            return None
        intact = entry.token.name == name and is_sealed(
            self._key, _Entry.payload(entry.token, entry.digest), entry.signature)
        entry.token.intact = intact
        return entry

    def list(self) -> list[NamedToken]:
        """Every token (expired ones until their keys expire), sorted by name; an entry
        whose seal does not verify is listed with `intact` false."""
        names = sorted(_text(name) for name in cast(set[Any], self.redis.smembers(NAMES_KEY)))
        if not names:
            return []
        raws = cast(list[Any], self.redis.mget([TOKEN_PREFIX + name for name in names]))
        found: list[NamedToken] = []
        gone: list[str] = []
        for name, raw in zip(names, raws, strict=True):
            if raw is None:
                gone.append(name)  # expired in Redis
                continue
            entry = self._entry(name, raw)
            if entry is not None:
                found.append(entry.token)
        if gone:
            self.redis.srem(NAMES_KEY, *gone)
        return found

    def revoke(self, name: str) -> NamedToken:
        """Delete the token: requests with its secret fail from now on. TokenNotFound if
        there is none (an entry that is not a token entry at all is deleted too)."""
        key = TOKEN_PREFIX + name
        raw = cast(bytes | None, self.redis.get(key))
        entry = self._entry(name, raw)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        if entry is not None:
            # Only an index entry that points at this name: an altered digest must not let
            # a revocation delete another token's index.
            index = DIGEST_PREFIX + entry.digest
            pointed = self.redis.get(index)
            if pointed is not None and _text(pointed) == name:
                pipe.delete(index)
        pipe.srem(NAMES_KEY, name)
        pipe.execute()
        if entry is None:
            raise TokenNotFound(name)
        log.info("token %s revoked", name)
        return entry.token

    def active(self, name: str) -> NamedToken | None:
        """The token called `name` if it still exists, is intact and has not expired (a
        schedule's fire asks this of whoever last changed the schedule)."""
        if not DNS_LABEL.fullmatch(name) or len(name) > 63:
            return None
        entry = self._entry(name, cast(bytes | None, self.redis.get(TOKEN_PREFIX + name)))
        if entry is None or not entry.token.intact or entry.token.expired(self._now()):
            return None
        return entry.token

    def lookup(self, secret: str) -> NamedToken | None:
        """The token this secret belongs to, or None when it is unknown, expired, revoked
        or its entry does not carry a valid seal (logged as a warning naming it). Two
        Redis reads, whatever the number of tokens."""
        if not secret.startswith(SECRET_PREFIX):
            return None  # not one of ours: spare Redis (Kubernetes tokens come here too)
        digest = digest_of(secret)
        raw_name = self.redis.get(DIGEST_PREFIX + digest)
        if raw_name is None:
            return None
        name = _text(raw_name)
        if not DNS_LABEL.fullmatch(name) or len(name) > 63:
            log.warning("token index entry %s… names no valid token (%r); refused",
                        digest[:8], name[:80])
            return None
        entry = self._entry(name, cast(bytes | None, self.redis.get(TOKEN_PREFIX + name)))
        if entry is None:
            return None
        if not entry.token.intact:
            log.warning("token %s: its entry in Redis is not sealed with PYSTOL_SIGNING_KEY "
                        "(written or altered by someone without the key); refused", name)
            return None
        if not secrets.compare_digest(entry.digest, digest):
            log.warning("token %s: the digest index points at it, but its entry is for "
                        "another secret (the index was altered); refused", name)
            return None
        if entry.token.expired(self._now()):
            return None
        return entry.token
