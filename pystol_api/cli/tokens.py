"""`pystol tokens …`: create, list and revoke named API tokens (admin only).

A token's secret is printed once, by `create`, alone on stdout (so that
`TOKEN=$(pystol tokens create ci --role operator -n shop)` captures just it); the
description and the "shown once" notice go to stderr. With `--output json` the one JSON
document on stdout carries it as `token`. Imports only click and the output helpers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click

from pystol_api.cli.output import dump_json, format_table, local_time, parse_time

API_PREFIX = "/api/v1"
ROLES = ("viewer", "operator", "admin")
TOKEN_HEADERS = ("NAME", "ROLE", "NAMESPACES", "EXPIRES", "CREATED", "BY", "STATE")
STATE_COLOURS = {"active": "green", "expired": "yellow", "tampered": "red"}


def _output(function: Any) -> Any:
    return click.option("--output", "-o", type=click.Choice(["table", "json"]),
                        default="table", show_default=True,
                        help="json: one machine-readable document on stdout.")(function)


def token_state(token: Mapping[str, Any], now: datetime | None = None) -> str:
    """`active`, `expired`, or `tampered` (an entry the signing key did not seal)."""
    if token.get("intact") is False:
        return "tampered"
    expires = parse_time(token.get("expires_at"))
    if expires is not None and expires <= (now or datetime.now(UTC)):
        return "expired"
    return "active"


def describe_scope(token: Mapping[str, Any]) -> str:
    namespaces = token.get("namespaces") or []
    return ",".join(namespaces) if namespaces else "(all)"


def token_rows(tokens: Iterable[Mapping[str, Any]],
               now: datetime | None = None) -> list[list[str]]:
    return [[str(token.get("name")), str(token.get("role")), describe_scope(token),
             local_time(token.get("expires_at")) if token.get("expires_at") else "never",
             local_time(token.get("created_at")), str(token.get("created_by") or "-"),
             token_state(token, now)] for token in tokens]


@click.group()
def tokens() -> None:
    """Named API tokens: a role (viewer, operator, admin) in some namespaces (admin only)."""


@tokens.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES),
              help="viewer: read; operator: also run, cancel and schedule chaos, and halt; "
                   "admin: everything, in every namespace.")
@click.option("--namespace", "-n", "namespaces", multiple=True, metavar="NS",
              help="Where the role applies (repeatable; required for viewer and operator, "
                   "not allowed for admin).")
@click.option("--expires", metavar="DURATION",
              help="Valid for this long, e.g. 30d, 12h [default: until revoked].")
@_output
@click.pass_obj
def tokens_create(runtime: Any, name: str, role: str, namespaces: tuple[str, ...],
                  expires: str | None, output: str) -> None:
    """Create token NAME and print its secret, once.

    \b
    pystol tokens create ci-shop --role operator -n shop -n cart --expires 30d
    pystol tokens create oncall --role admin
    """
    body: dict[str, Any] = {"name": name, "role": role, "namespaces": list(namespaces),
                            "expires": expires}
    with runtime.client() as client:
        created = client.request("POST", f"{API_PREFIX}/tokens", json_body=body)
    if output == "json":
        click.echo(dump_json(created))
        return
    expiry = local_time(created.get("expires_at")) if created.get("expires_at") else "never"
    click.echo(f"token {created.get('name')}: {created.get('role')} in "
               f"{describe_scope(created)}, expires {expiry}", err=True)
    click.echo(created.get("token"))
    click.echo("This secret is shown once: store it now. It cannot be shown again (revoke "
               f"with `pystol tokens revoke {created.get('name')}`).", err=True)


@tokens.command("list")
@_output
@click.pass_obj
def tokens_list(runtime: Any, output: str) -> None:
    """List named tokens (never their secrets)."""
    with runtime.client() as client:
        answer = client.request("GET", f"{API_PREFIX}/tokens")
    items = answer.get("items", []) if isinstance(answer, dict) else []
    if output == "json":
        click.echo(dump_json({"items": items}))
        return
    if not items:
        click.echo("no named tokens", err=True)
        return
    colour = runtime.colour()

    def colour_of(column: int, text: str) -> str | None:
        return STATE_COLOURS.get(text) if column == len(TOKEN_HEADERS) - 1 else None

    for line in format_table(TOKEN_HEADERS, token_rows(items), colour_of if colour else None):
        click.echo(line, color=colour)


@tokens.command("revoke")
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@_output
@click.pass_obj
def tokens_revoke(runtime: Any, names: tuple[str, ...], output: str) -> None:
    """Revoke tokens: they authenticate nobody from now on."""
    with runtime.client() as client:
        for name in names:
            client.request("DELETE", f"{API_PREFIX}/tokens/{quote(name, safe='')}")
    if output == "json":
        click.echo(dump_json({"revoked": list(names)}))
        return
    for name in names:
        click.echo(f"token {name} revoked")
