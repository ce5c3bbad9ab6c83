"""Named tokens in (fake) Redis: create, list, revoke, expiry, and entries forged or
altered by someone who can write to Redis but has not the signing key."""

from __future__ import annotations

import json
import logging

import fakeredis
import pytest

from pystol_worker.core.access import ActorKind, Permission, Role, seal
from pystol_worker.store.token_store import (
    DIGEST_PREFIX,
    NAMES_KEY,
    SECRET_PREFIX,
    TOKEN_PREFIX,
    NamedToken,
    TokenExists,
    TokenNotFound,
    TokenStore,
    digest_of,
)
from tests.support.manual_clock import ManualClock

KEY = b"unit-test-signing-key-0123456789"



@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)


@pytest.fixture
def store(fake: fakeredis.FakeRedis, clock: ManualClock) -> TokenStore:
    return TokenStore(fake, KEY, clock=clock)


def test_create_returns_the_secret_once_and_lookup_finds_the_token(store: TokenStore) -> None:
    token, secret = store.create("ci-shop", Role.OPERATOR, ["shop", "cart", "shop"], None,
                                 "token-abcd1234")
    assert secret.startswith(SECRET_PREFIX) and len(secret) >= 40
    assert token.namespaces == ["cart", "shop"]
    assert token.expires_at is None and token.created_by == "token-abcd1234"
    found = store.lookup(secret)
    assert found is not None and found.name == "ci-shop" and found.role == Role.OPERATOR
    assert store.lookup(secret + "x") is None
    assert store.lookup("not-a-pystol-token") is None
    actor, authority = found.actor(), found.authority()
    assert actor.kind == ActorKind.TOKEN and actor.submitter == "token:ci-shop"
    assert authority.allows(Permission.JOBS_SUBMIT, "shop")
    assert not authority.allows(Permission.JOBS_SUBMIT, "payments")
    assert not authority.allows(Permission.TOKENS_MANAGE, None)


def test_the_secret_is_never_stored(store: TokenStore, fake: fakeredis.FakeRedis) -> None:
    _, secret = store.create("ci", Role.ADMIN, [], 3600, "admin")
    everything = b""
    for key in fake.scan_iter():
        everything += key
        kind = fake.type(key)
        if kind == b"string":
            everything += fake.get(key) or b""
        elif kind == b"set":
            everything += b"".join(fake.smembers(key))
    assert secret.encode() not in everything
    assert secret.removeprefix(SECRET_PREFIX).encode() not in everything
    assert digest_of(secret).encode() in everything  # only its SHA-256


def test_names_are_unique_and_validated(store: TokenStore) -> None:
    store.create("ci", Role.VIEWER, ["shop"], None, "admin")
    with pytest.raises(TokenExists):
        store.create("ci", Role.ADMIN, [], None, "admin")
    for bad in ("", "CI", "ci_shop", "-ci", "x" * 64):
        with pytest.raises(ValueError):
            store.create(bad, Role.VIEWER, ["shop"], None, "admin")


def test_scope_must_fit_the_role(store: TokenStore) -> None:
    with pytest.raises(ValueError, match="at least one namespace"):
        store.create("v", Role.VIEWER, [], None, "admin")
    with pytest.raises(ValueError, match="every namespace"):
        store.create("a", Role.ADMIN, ["shop"], None, "admin")
    with pytest.raises(ValueError, match="namespace"):
        store.create("o", Role.OPERATOR, ["Not_A_Namespace"], None, "admin")
    for bad in (0, -1, float("inf"), float("nan"), 1e12):
        with pytest.raises(ValueError, match="expiry"):
            store.create("e", Role.ADMIN, [], bad, "admin")


def test_list_is_sorted_and_never_has_secrets(store: TokenStore) -> None:
    for name in ("zeta", "alpha", "mid"):
        store.create(name, Role.VIEWER, ["shop"], None, "admin")
    listed = store.list()
    assert [token.name for token in listed] == ["alpha", "mid", "zeta"]
    assert all(token.intact for token in listed)
    assert "pst_" not in json.dumps([token.model_dump(mode="json") for token in listed])


def test_revoke(store: TokenStore, fake: fakeredis.FakeRedis) -> None:
    _, secret = store.create("ci", Role.OPERATOR, ["shop"], None, "admin")
    _, other = store.create("other", Role.OPERATOR, ["shop"], None, "admin")
    revoked = store.revoke("ci")
    assert revoked.name == "ci"
    assert store.lookup(secret) is None
    assert store.lookup(other) is not None
    assert [token.name for token in store.list()] == ["other"]
    assert fake.get(DIGEST_PREFIX + digest_of(secret)) is None
    with pytest.raises(TokenNotFound):
        store.revoke("ci")
    store.create("ci", Role.VIEWER, ["cart"], None, "admin")  # the name is free again


def test_expiry_follows_the_clock(store: TokenStore, clock: ManualClock,
                                  fake: fakeredis.FakeRedis) -> None:
    token, secret = store.create("temp", Role.VIEWER, ["shop"], 30 * 86400, "admin")
    assert token.expires_at is not None
    assert (token.expires_at - token.created_at).total_seconds() == 30 * 86400
    clock.now += 30 * 86400 - 1
    assert store.lookup(secret) is not None
    clock.now += 1
    assert store.lookup(secret) is None
    assert [t.name for t in store.list()] == ["temp"]  # still listed, as expired
    ttl = fake.ttl(TOKEN_PREFIX + "temp")
    assert 30 * 86400 < ttl <= 37 * 86400  # Redis forgets it a week after it expired


def test_a_token_forged_in_redis_is_refused(store: TokenStore, fake: fakeredis.FakeRedis,
                                            caplog: pytest.LogCaptureFixture) -> None:
    secret = SECRET_PREFIX + "forged-secret-of-someone-with-redis-access"
    digest = digest_of(secret)
    entry = {"token": {"name": "intruder", "role": "admin", "namespaces": [],
                       "created_at": "2025-01-01T00:00:00Z", "created_by": "nobody",
                       "intact": True},
             "digest": digest, "signature": seal(b"a-guessed-key-xxxxxxx", b"anything")}
    fake.set(TOKEN_PREFIX + "intruder", json.dumps(entry))
    fake.set(DIGEST_PREFIX + digest, "intruder")
    fake.sadd(NAMES_KEY, "intruder")
    with caplog.at_level(logging.WARNING, logger="pystol.tokens"):
        assert store.lookup(secret) is None
    assert "intruder" in caplog.text and "PYSTOL_SIGNING_KEY" in caplog.text
    [listed] = store.list()
    assert listed.name == "intruder" and not listed.intact
    store.revoke("intruder")
    assert store.list() == [] and fake.get(DIGEST_PREFIX + digest) is None


def test_a_widened_token_is_refused(store: TokenStore, fake: fakeredis.FakeRedis,
                                    caplog: pytest.LogCaptureFixture) -> None:
    _, secret = store.create("ci", Role.VIEWER, ["shop"], None, "admin")
    key = TOKEN_PREFIX + "ci"
    original = fake.get(key)
    assert original is not None
    for change in ({"role": "admin", "namespaces": []}, {"namespaces": ["shop", "payments"]},
                   {"expires_at": None, "created_by": "someone-else"}):
        entry = json.loads(original)
        entry["token"].update(change)
        fake.set(key, json.dumps(entry))
        with caplog.at_level(logging.WARNING, logger="pystol.tokens"):
            assert store.lookup(secret) is None, change
        assert "token ci" in caplog.text
    fake.set(key, original)
    assert store.lookup(secret) is not None


def test_an_index_pointed_at_another_token_is_refused(store: TokenStore,
                                                      fake: fakeredis.FakeRedis) -> None:
    store.create("admin-token", Role.ADMIN, [], None, "admin")
    mine = SECRET_PREFIX + "a-secret-the-attacker-knows"
    fake.set(DIGEST_PREFIX + digest_of(mine), "admin-token")
    assert store.lookup(mine) is None
    fake.set(DIGEST_PREFIX + digest_of(mine), "../weird name")
    assert store.lookup(mine) is None


def test_a_seal_under_another_key_does_not_verify(fake: fakeredis.FakeRedis) -> None:
    _, secret = TokenStore(fake, KEY).create("ci", Role.ADMIN, [], None, "admin")
    assert TokenStore(fake, KEY).lookup(secret) is not None
    assert TokenStore(fake, b"another-key-0123456789").lookup(secret) is None


def test_garbage_entries_do_not_break_listing(store: TokenStore,
                                              fake: fakeredis.FakeRedis) -> None:
    store.create("good", Role.VIEWER, ["shop"], None, "admin")
    fake.set(TOKEN_PREFIX + "junk", b"{not json")
    fake.sadd(NAMES_KEY, "junk", "vanished")
    assert [token.name for token in store.list()] == ["good"]
    assert fake.smembers(NAMES_KEY) == {b"good", b"junk"}  # keys gone in Redis are dropped
    with pytest.raises(TokenNotFound):
        store.revoke("junk")
    assert fake.get(TOKEN_PREFIX + "junk") is None


def test_named_token_model_checks_scope() -> None:
    with pytest.raises(ValueError):
        NamedToken(name="x", role=Role.OPERATOR, namespaces=[],
                   created_at="2025-01-01T00:00:00Z", created_by="a")  # type: ignore[arg-type]
