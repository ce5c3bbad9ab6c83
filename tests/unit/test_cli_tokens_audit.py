"""`pystol tokens …` and `pystol audit` against the real app (fakeredis, a recording queue)
served from a werkzeug server in a thread: the command line, the HTTP client, the routes
and the stores together, without any process or real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import fakeredis
import pytest
from click.testing import CliRunner, Result
from flask import Flask

from pystol_api.cli.audit import audit_rows, describe_actor, parse_when
from pystol_api.cli.commands import Runtime, cli
from pystol_api.cli.tokens import token_rows, token_state
from pystol_api.http.app import create_app, services_of
from pystol_api.http.auth import submitter_name
from pystol_worker.core.access import Actor, ActorKind, Role
from pystol_worker.core.settings import Settings
from tests.support.served_app import serving

ADMIN_TOKEN = "cli-test-admin-token"
SIGNING_KEY = "cli-test-signing-key-0123456789"


class RecordingQueue:
    def send(self, job_id: str) -> None:
        pass


@pytest.fixture(scope="module")
def module_app() -> Flask:
    settings = Settings(api_tokens=[ADMIN_TOKEN], signing_key=SIGNING_KEY,
                        kubernetes_auth=False, redis_url="redis://127.0.0.1:6379/0")
    return create_app(settings, redis_client=fakeredis.FakeRedis(), queue=RecordingQueue())


@pytest.fixture(scope="module")
def served(module_app: Flask) -> Iterator[str]:
    with serving(module_app) as url:
        yield url


@pytest.fixture
def app(module_app: Flask, served: str) -> Flask:
    services_of(module_app).redis.flushall()
    return module_app


def invoke(url: str, args: list[str], token: str = ADMIN_TOKEN) -> Result:
    env = {"PYSTOL_API_URL": url, "PYSTOL_TOKEN": token, "PYSTOL_CONFIG": None,
           "NO_COLOR": None}
    return CliRunner().invoke(cli, args, env=env, obj=Runtime(tty=False))


def test_tokens_create_prints_the_secret_once_on_stdout(app: Flask, served: str) -> None:
    created = invoke(served, ["tokens", "create", "ci-shop", "--role", "operator",
                              "--namespace", "shop", "-n", "cart", "--expires", "30d"])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("pst_") and "\n" not in secret  # alone: TOKEN=$(pystol …)
    assert "shown once" in created.stderr
    assert "token ci-shop: operator in cart,shop, expires" in created.stderr

    # the new token works for what an operator may do, and not for more
    whoami = services_of(app).tokens.lookup(secret)
    assert whoami is not None and whoami.role == Role.OPERATOR
    refused = invoke(served, ["tokens", "list"], token=secret)
    assert refused.exit_code == 2 and "may not tokens.manage" in refused.output

    listed = invoke(served, ["tokens", "list"])
    assert listed.exit_code == 0, listed.output
    assert secret not in listed.output
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "NAMESPACES", "EXPIRES", "CREATED", "BY",
                              "STATE"]
    assert row.split()[:3] == ["ci-shop", "operator", "cart,shop"]
    assert row.split()[-2:] == [submitter_name(ADMIN_TOKEN), "active"]
    assert header.index("ROLE") == row.index("operator")  # aligned

    as_json = json.loads(invoke(served, ["tokens", "list", "-o", "json"]).stdout)
    assert [item["name"] for item in as_json["items"]] == ["ci-shop"]
    assert "token" not in as_json["items"][0]

    revoked = invoke(served, ["tokens", "revoke", "ci-shop"])
    assert revoked.exit_code == 0 and "token ci-shop revoked" in revoked.output
    assert services_of(app).tokens.lookup(secret) is None
    assert invoke(served, ["tokens", "list"]).stderr.strip() == "no named tokens"


def test_tokens_create_json_and_errors(app: Flask, served: str) -> None:
    made = invoke(served, ["tokens", "create", "oncall", "--role", "admin", "-o", "json"])
    assert made.exit_code == 0, made.output
    document = json.loads(made.stdout)
    assert document["token"].startswith("pst_") and document["expires_at"] is None
    assert document["namespaces"] == []

    again = invoke(served, ["tokens", "create", "oncall", "--role", "admin"])
    assert again.exit_code == 2 and "already a token oncall" in again.output
    scoped = invoke(served, ["tokens", "create", "v", "--role", "viewer"])
    assert scoped.exit_code == 2 and "namespaces" in scoped.output
    assert "at least one namespace" in scoped.output
    bad = invoke(served, ["tokens", "create", "x", "--role", "admin", "--expires", "soon"])
    assert bad.exit_code == 2 and "expires" in bad.output
    missing = invoke(served, ["tokens", "revoke", "nope"])
    assert missing.exit_code == 2 and "there is no token nope" in missing.output
    usage = invoke(served, ["tokens", "create", "x", "--role", "root"])
    assert usage.exit_code == 2 and "root" in usage.output


def test_audit_table_filters_and_json(app: Flask, served: str) -> None:
    invoke(served, ["tokens", "create", "a1", "--role", "viewer", "-n", "shop"])
    invoke(served, ["tokens", "create", "a2", "--role", "operator", "-n", "cart"])
    invoke(served, ["tokens", "revoke", "a1"])
    services_of(app).audit.record(
        Actor(kind=ActorKind.TOKEN, name="ci"), "job.submit", targets=["shop"],
        namespaces=["shop"], job_id="j-42")

    table = invoke(served, ["audit"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TIME", "ACTOR", "OPERATION", "TARGETS", "OUTCOME", "JOB"]
    assert [line.split()[2:] for line in lines[1:]] == [
        ["token:ci", "job.submit", "shop", "ok", "j-42"],
        [submitter_name(ADMIN_TOKEN), "token.revoke", "a1", "ok", "-"],
        [submitter_name(ADMIN_TOKEN), "token.create", "a2", "ok", "-"],
        [submitter_name(ADMIN_TOKEN), "token.create", "a1", "ok", "-"]]
    assert lines[0].index("OPERATION") == lines[1].index("job.submit")

    shop = invoke(served, ["audit", "--namespace", "shop", "--operation", "token"])
    assert [line.split()[4] for line in shop.stdout.splitlines()[1:]] == ["a1", "a1"]
    limited = invoke(served, ["audit", "--limit", "2"])
    assert len(limited.stdout.splitlines()) == 3 and "older records exist" in limited.stderr
    since = invoke(served, ["audit", "--since", "1h", "--actor", "token:ci", "-o", "json"])
    document = json.loads(since.stdout)
    assert [item["job_id"] for item in document["items"]] == ["j-42"]
    assert document["next_cursor"] is None
    none = invoke(served, ["audit", "--outcome", "refused"])
    assert none.exit_code == 0 and none.stdout == "" and "no audit records match" in none.stderr
    future = invoke(served, ["audit", "--since", "2999-01-01T00:00:00Z"])
    assert future.stdout == ""
    bad = invoke(served, ["audit", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "RFC 3339" in bad.output


def test_audit_is_admin_only(app: Flask, served: str) -> None:
    _, secret = services_of(app).tokens.create("op", Role.OPERATOR, ["shop"], None, "t")
    refused = invoke(served, ["audit"], token=secret)
    assert refused.exit_code == 2 and "may not audit.read" in refused.output


def test_audit_follows_cursors_up_to_the_limit(app: Flask, served: str) -> None:
    trail = services_of(app).audit
    actor = Actor(kind=ActorKind.TOKEN, name="ci")
    for index in range(620):
        trail.record(actor, "job.cancel", job_id=f"j-{index}")
    every = json.loads(invoke(served, ["audit", "--limit", "1000", "-o", "json"]).stdout)
    assert len(every["items"]) == 620 and every["next_cursor"] is None
    assert every["items"][0]["job_id"] == "j-619" and every["items"][-1]["job_id"] == "j-0"
    some = json.loads(invoke(served, ["audit", "--limit", "510", "-o", "json"]).stdout)
    assert len(some["items"]) == 510 and some["next_cursor"]


# -- the pure helpers ---------------------------------------------------------------------


def test_parse_when() -> None:
    now = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_when("2h", now) == now - timedelta(hours=2)
    assert parse_when("1d12h", now) == now - timedelta(hours=36)
    assert parse_when("2025-01-01T00:00:00Z", now) == datetime(2025, 1, 1, tzinfo=UTC)
    for bad in ("", "2x", "h2", "yesterday"):
        with pytest.raises(click.BadParameter):
            parse_when(bad, now)


def test_describe_actor_and_rows() -> None:
    assert describe_actor({"kind": "settings-token", "name": "token-1a2b3c4d"}) == \
        "token-1a2b3c4d"
    assert describe_actor({"kind": "custom-resource", "name": "shop/kill"}) == "shop/kill"
    assert describe_actor({"kind": "schedule", "name": "nightly",
                           "on_behalf_of": "token:ci"}) == "schedule:nightly (for token:ci)"
    [row] = audit_rows([{"at": None, "actor": {"kind": "kubernetes", "name": "alice"},
                         "operation": "job.submit", "targets": ["a", "b", "c", "d", "e"],
                         "outcome": "refused", "job_id": None}])
    assert row[1:] == ["kubernetes:alice", "job.submit", "a,b,c +2", "refused", "-"]


def test_token_state_and_rows() -> None:
    now = datetime(2025, 1, 31, tzinfo=UTC)
    base: dict[str, Any] = {"name": "t", "role": "admin", "namespaces": [], "intact": True,
                            "created_at": "2025-01-01T00:00:00Z", "created_by": "x"}
    assert token_state({**base, "expires_at": None}, now) == "active"
    assert token_state({**base, "expires_at": "2025-01-30T00:00:00Z"}, now) == "expired"
    assert token_state({**base, "intact": False}, now) == "tampered"
    [row] = token_rows([{**base, "expires_at": None}], now)
    assert row[:4] == ["t", "admin", "(all)", "never"]
