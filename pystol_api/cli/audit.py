"""`pystol audit`: read the audit trail (admin only), newest first, as a table or JSON.

Follows the API's `next_cursor` until `--limit` records are shown (a page may be short:
the API reads a bounded part of the trail per request). `--since` and `--until` take an
RFC 3339 time or an age (`2h`, `7d`: that long ago). Imports only click and the output
helpers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from pystol_api.cli.output import dump_json, format_table, local_time, parse_time

API_PREFIX = "/api/v1"
OUTCOMES = ("ok", "refused", "invalid", "failed")
AUDIT_HEADERS = ("TIME", "ACTOR", "OPERATION", "TARGETS", "OUTCOME", "JOB")
OUTCOME_COLOURS = {"ok": "green", "refused": "red", "invalid": "yellow", "failed": "red"}
AGE_PART = re.compile(r"(\d+(?:\.\d+)?)(w|d|h|m|s)")
AGE_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_PAGE = 500
MAX_REQUESTS = 50


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 time, or an age such as `90m`, `2h`, `7d`, `1d12h` (that long ago)."""
    parsed = parse_time(text)
    if parsed is not None:
        return parsed
    stripped = text.strip()
    seconds, position = 0.0, 0
    for match in AGE_PART.finditer(stripped):
        if match.start() != position:
            break
        seconds += float(match[1]) * AGE_UNITS[match[2]]
        position = match.end()
    if not stripped or position != len(stripped):
        raise click.BadParameter(f"{text!r}: expected an RFC 3339 time "
                                 "(2025-01-31T09:00:00Z) or an age such as 2h or 7d")
    return (now or datetime.now(UTC)) - timedelta(seconds=seconds)


def describe_actor(actor: Mapping[str, Any]) -> str:
    """`token:ci`, `token-1a2b3c4d`, `kubernetes:alice`, `schedule:nightly (for token:ci)`."""
    kind, name = str(actor.get("kind") or "?"), str(actor.get("name") or "?")
    text = name if kind in ("settings-token", "custom-resource") else f"{kind}:{name}"
    if actor.get("on_behalf_of"):
        text += f" (for {actor['on_behalf_of']})"
    return text


def describe_targets(targets: Iterable[str], most: int = 3) -> str:
    items = list(targets)
    if len(items) > most:
        return ",".join(items[:most]) + f" +{len(items) - most}"
    return ",".join(items) or "-"


def audit_rows(records: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    return [[local_time(record.get("at")), describe_actor(record.get("actor") or {}),
             str(record.get("operation")), describe_targets(record.get("targets") or []),
             str(record.get("outcome")), str(record.get("job_id") or "-")]
            for record in records]


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else parse_when(value).isoformat()


@click.command()
@click.option("--actor", metavar="NAME", help="Who: a token name, `token:ci`, "
              "`kubernetes:alice`, a custom resource `ns/name`.")
@click.option("--operation", metavar="OP", help="job.submit, halt.engage, token.create, … "
              "or a family: job, schedule, token.")
@click.option("--namespace", "-n", metavar="NS", help="Records that touched this namespace.")
@click.option("--outcome", type=click.Choice(OUTCOMES))
@click.option("--since", metavar="TIME", callback=_when,
              help="RFC 3339 time or an age (2h, 7d).")
@click.option("--until", metavar="TIME", callback=_when,
              help="RFC 3339 time or an age (2h, 7d).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="Show at most this many records.")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: one machine-readable document on stdout.")
@click.pass_obj
def audit(runtime: Any, actor: str | None, operation: str | None, namespace: str | None,
          outcome: str | None, since: str | None, until: str | None, limit: int,
          output: str) -> None:
    """Read the audit trail, newest first (admin only).

    \b
    pystol audit --since 24h
    pystol audit --operation job --namespace shop --outcome refused
    pystol audit --actor token:ci -o json
    """
    filters = {key: value for key, value in (
        ("actor", actor), ("operation", operation), ("namespace", namespace),
        ("outcome", outcome), ("since", since), ("until", until)) if value is not None}
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    with runtime.client() as client:
        for _ in range(MAX_REQUESTS):
            params: dict[str, Any] = {**filters, "limit": min(MAX_PAGE, limit - len(items))}
            if cursor:
                params["cursor"] = cursor
            page = client.request("GET", f"{API_PREFIX}/audit", params=params)
            items += page.get("items") or []
            cursor = page.get("next_cursor")
            if not cursor or len(items) >= limit:
                break
    if output == "json":
        click.echo(dump_json({"items": items, "next_cursor": cursor}))
        return
    if not items:
        click.echo("no audit records" + (" match" if filters else ""), err=True)
    else:
        colour = runtime.colour()

        def colour_of(column: int, text: str) -> str | None:
            return OUTCOME_COLOURS.get(text) if column == 4 else None

        for line in format_table(AUDIT_HEADERS, audit_rows(items),
                                 colour_of if colour else None):
            click.echo(line, color=colour)
    if cursor:
        oldest = local_time(items[-1].get("at")) if items else None
        click.echo("older records exist: raise --limit" + (
            f" or pass --until before {oldest}" if oldest else " or narrow --since/--until"),
            err=True)
