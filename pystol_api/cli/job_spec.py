"""Command-line options into a job spec: the JSON `pystol run` and `pystol schedules add` send.

Both commands build the same `JobSpec` JSON from the same options, so the parsing lives
here once; the API validates what arrives, this only shapes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import click


def parse_param_value(text: str) -> Any:
    """JSON when it parses (`3`, `true`, `[1,2]`, `{"a":1}`, `"x"`), else the text as is."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return text


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """`k=v` pairs into a dict; values as `parse_param_value` reads them, the last one wins."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        params[key] = parse_param_value(value)
    return params


def check_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    # Imported here, not at the top: the job model brings pydantic (0.2 s), and commands
    # that never parse a duration (`pystol health`, the liveness probe) must stay light.
    from pystol_worker.core.model import parse_duration

    try:
        parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


def number(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def build_job_spec(action: str, *, namespaces: Iterable[str] = (), selector: str | None = None,
                   field_selector: str | None = None, mode: str | None = None,
                   value: float | None = None, nodes: Iterable[str] = (),
                   amount: int | None = None, params: Mapping[str, Any] | None = None,
                   duration: str | None = None, recovery_timeout: str | None = None,
                   dry_run: bool = False, idempotency_key: str | None = None) -> dict[str, Any]:
    """The JobSpec JSON for POST /api/v1/jobs; unset options are left to the API's defaults."""
    target: dict[str, Any] = {}
    if namespaces:
        target["namespaces"] = list(namespaces)
    if selector:
        target["label_selector"] = selector
    if field_selector:
        target["field_selector"] = field_selector
    if nodes:
        target["names"] = list(nodes)
    if amount is not None:
        target["amount"] = amount
    if mode is not None:
        target["mode"] = mode
    if value is not None:
        target["value"] = number(value)
    spec: dict[str, Any] = {"action": action, "target": target, "params": dict(params or {}),
                            "dry_run": dry_run}
    if duration is not None:
        spec["duration"] = duration
    if recovery_timeout is not None:
        spec["recovery_timeout"] = recovery_timeout
    if idempotency_key is not None:
        spec["idempotency_key"] = idempotency_key
    return spec
