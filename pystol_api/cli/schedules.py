"""`pystol schedules …`: list, add, show, pause, resume and remove scheduled chaos.

Plain API clients like the `jobs` commands (see `cli.py` for the conventions: `--output
json` prints exactly one JSON document, errors are `error:` lines with exit code 2 or 3).
Kept in its own module so the `schedules` group does not crowd `cli.py`; it imports only
click and the output helpers at import time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from pystol_api.cli.job_spec import build_job_spec, parse_params
from pystol_api.cli.output import (
    CliError,
    describe_target,
    dump_json,
    format_table,
    local_time,
    status_colour,
)

POLICIES = ("Allow", "Forbid", "Replace")
MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")
SCHEDULE_HEADERS = ("ID", "WHEN", "ACTION", "TARGET", "POLICY", "STATE", "NEXT RUN", "LAST RUN")
RUN_HEADERS = ("SLOT", "OUTCOME", "JOB", "STATUS", "REASON")
OUTCOME_COLOURS = {"started": "green", "skipped": "yellow", "failed": "red"}


def _output(function: Any) -> Any:
    return click.option("--output", "-o", type=click.Choice(["table", "json"]),
                        default="table", show_default=True,
                        help="json: one machine-readable document on stdout.")(function)


def describe_when(spec: Mapping[str, Any]) -> str:
    """`every 2s`, `cron 0 9 * * mon-fri (Europe/Berlin)`, `mtbf 1h`, plus `, windows`."""
    if spec.get("cron"):
        text = f"cron {spec['cron']}"
    elif spec.get("interval") is not None:
        text = f"every {spec['interval']}"
    else:
        text = f"mtbf {spec.get('mtbf')}"
    zone = spec.get("time_zone") or "UTC"
    if zone != "UTC":
        text += f" ({zone})"
    if spec.get("windows") or spec.get("excluded_dates"):
        text += " in windows"
    return text


def describe_run(run: Mapping[str, Any]) -> str:
    """`started j-… (succeeded)`, `skipped x3: outside-window`."""
    outcome = str(run.get("outcome", "?"))
    if outcome == "skipped":
        count = run.get("count") or 1
        times = f" x{count}" if count > 1 else ""
        return f"skipped{times}: {run.get('skipped')}"
    job = run.get("job_id") or "-"
    status = run.get("job_status")
    return f"{outcome} {job}" + (f" ({status})" if status else "")


def schedule_rows(records: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for record in records:
        spec = record.get("spec") or {}
        template = spec.get("template") or {}
        runs = record.get("last_runs") or []
        rows.append([str(record.get("id")), describe_when(spec), str(template.get("action")),
                     describe_target(template), str(spec.get("concurrency_policy", "Allow")),
                     "paused" if spec.get("paused") else "active",
                     local_time(record.get("next_run_at")),
                     describe_run(runs[0]) if runs else "-"])
    return rows


def run_rows(runs: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for run in runs:
        slot = local_time(run.get("slot_at"))
        count = run.get("count") or 1
        if count > 1 and run.get("last_slot_at"):
            slot += f" … {local_time(run.get('last_slot_at'))} ({count})"
        outcome = str(run.get("outcome", "?"))
        if outcome == "skipped":
            outcome += f": {run.get('skipped')}"
        rows.append([slot, outcome, run.get("job_id") or "-", run.get("job_status") or "-",
                     run.get("reason") or "-"])
    return rows


def format_schedule_detail(record: Mapping[str, Any],
                           colour_of: Any = None) -> list[str]:
    spec = record.get("spec") or {}
    template = spec.get("template") or {}
    fields: list[tuple[str, str]] = [
        ("id", str(record.get("id"))),
        ("when", describe_when(spec)),
        ("state", "paused" if spec.get("paused") else "active"),
        ("next run", local_time(record.get("next_run_at"))),
        ("action", str(template.get("action"))),
        ("target", describe_target(template)),
        ("policy", f"{spec.get('concurrency_policy', 'Allow')}, starting deadline "
                   + (f"{spec['starting_deadline_seconds']:g}s"
                      if spec.get("starting_deadline_seconds") is not None else "none")),
        ("source", f"{record.get('source')} (by {record.get('submitter')})"),
        ("created", local_time(record.get("created_at"))),
        ("updated", local_time(record.get("updated_at"))),
    ]
    for window in spec.get("windows") or []:
        fields.append(("window", f"{','.join(window.get('days') or [])} "
                                 f"{window.get('start')}-{window.get('end')}"))
    if spec.get("excluded_dates"):
        fields.append(("excluded", ", ".join(spec["excluded_dates"])))
    if template.get("params"):
        fields.append(("params", json.dumps(template["params"], ensure_ascii=False)))
    if template.get("duration") is not None:
        fields.append(("duration", str(template["duration"])))
    width = max(len(name) for name, _ in fields) + 1
    lines = [f"{(name + ':').ljust(width)}  {value}" for name, value in fields]
    runs = record.get("last_runs") or []
    lines.append(f"last runs ({len(runs)} of at most {spec.get('history_limit')}):")
    if runs:
        lines += ["  " + line for line in format_table(RUN_HEADERS, run_rows(runs), colour_of)]
    else:
        lines.append("  none yet")
    return lines


def _runs_colour(column: int, text: str) -> str | None:
    if column == 1:
        return OUTCOME_COLOURS.get(text.split(":")[0])
    if column == 3:
        return status_colour(text)
    return None


@click.group()
def schedules() -> None:
    """Scheduled chaos: cron, interval or mtbf schedules with windows (needs `pystol beat`)."""


@schedules.command("list")
@_output
@click.pass_obj
def schedules_list(runtime: Any, output: str) -> None:
    """List schedules with their next and last run."""
    with runtime.client() as client:
        items = client.list_schedules()
    if output == "json":
        click.echo(dump_json({"items": items}))
        return
    if not items:
        click.echo("no schedules", err=True)
        return
    colour = runtime.colour()
    for line in format_table(SCHEDULE_HEADERS, schedule_rows(items),
                             (lambda column, text: None) if colour else None):
        click.echo(line, color=colour)


def _load_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:
        raise CliError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a schedule object (cron/interval/mtbf, template, …)")
    return data


@schedules.command("add")
@click.argument("action", required=False)
@click.option("--file", "-f", "file", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
              help="A whole schedule as JSON or YAML (options below override its fields).")
@click.option("--id", "schedule_id", metavar="ID", help="The schedule's id [default: generated].")
@click.option("--cron", metavar="EXPR", help="Cron expression, e.g. '0 9-17 * * mon-fri'.")
@click.option("--every", "interval", metavar="DURATION", help="Fixed interval, e.g. 30m.")
@click.option("--mtbf", metavar="DURATION", help="Mean time between failures: random times.")
@click.option("--tz", "time_zone", metavar="ZONE", help="IANA time zone [default: UTC].")
@click.option("--window", "windows", multiple=True, metavar="'DAYS HH:MM-HH:MM'",
              help="When chaos is allowed, e.g. 'mon-fri 09:00-17:00' (repeatable).")
@click.option("--exclude-date", "excluded_dates", multiple=True, metavar="YYYY-MM-DD",
              help="A local date without chaos (repeatable).")
@click.option("--policy", "concurrency_policy", type=click.Choice(POLICIES, case_sensitive=False),
              help="When the previous run is still going [default: Allow].")
@click.option("--starting-deadline", type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Skip a run that cannot start this soon after its time.")
@click.option("--history-limit", type=click.IntRange(1, 1000), metavar="N",
              help="Runs kept in the history [default: 20].")
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--namespace", "-n", "namespaces", multiple=True, metavar="NS",
              help="Namespace to select from (repeatable).")
@click.option("--selector", "-l", metavar="SEL", help="Label selector, e.g. app=web.")
@click.option("--mode", type=click.Choice(MODES), help="How many of the matches to hit.")
@click.option("--value", type=float, metavar="V", help="Count (fixed) or percent (*-percent).")
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Node name (repeatable).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Action parameter (repeatable); VALUE is JSON when it parses.")
@click.option("--duration", metavar="DURATION", help="How long each run holds its fault.")
@click.option("--dry-run", is_flag=True, help="Runs select and report; change nothing.")
@_output
@click.pass_obj
def schedules_add(runtime: Any, action: str | None, file: Path | None, schedule_id: str | None,
                  cron: str | None, interval: str | None, mtbf: str | None,
                  time_zone: str | None, windows: tuple[str, ...],
                  excluded_dates: tuple[str, ...], concurrency_policy: str | None,
                  starting_deadline: float | None, history_limit: int | None, paused: bool,
                  namespaces: tuple[str, ...], selector: str | None, mode: str | None,
                  value: float | None, nodes: tuple[str, ...], params: tuple[str, ...],
                  duration: str | None, dry_run: bool, output: str) -> None:
    """Schedule ACTION (or the schedule in --file); the API validates everything.

    \b
    pystol schedules add pod-kill -n shop -l app=web --every 30m --window 'mon-fri 09:00-17:00'
    pystol schedules add pod-kill -n shop -l app=web --mtbf 2h --policy Forbid --tz Europe/Berlin
    pystol schedules add -f nightly.yaml
    """
    body: dict[str, Any] = _load_file(file) if file is not None else {}
    if action is not None:
        template = build_job_spec(action, namespaces=namespaces, selector=selector, mode=mode,
                                  value=value, nodes=nodes, params=parse_params(params),
                                  duration=duration, dry_run=dry_run)
        body["template"] = template
    elif "template" not in body:
        raise click.UsageError("name an ACTION (or give a schedule file with a template)")
    for key, given in (("id", schedule_id), ("cron", cron), ("interval", interval),
                       ("mtbf", mtbf), ("time_zone", time_zone),
                       ("concurrency_policy", concurrency_policy),
                       ("starting_deadline_seconds", starting_deadline),
                       ("history_limit", history_limit)):
        if given is not None:
            body[key] = given
    if windows:
        body["windows"] = list(windows)
    if excluded_dates:
        body["excluded_dates"] = list(excluded_dates)
    if paused:
        body["paused"] = True
    if not any(body.get(key) is not None for key in ("cron", "interval", "mtbf")):
        raise click.UsageError("say when: --cron, --every or --mtbf")
    with runtime.client() as client:
        record = client.create_schedule(body)
    if output == "json":
        click.echo(dump_json(record))
        return
    click.echo(f"schedule {record.get('id')}: {describe_when(record.get('spec') or {})}, "
               f"next run {local_time(record.get('next_run_at'))}")


@schedules.command("show")
@click.argument("schedule_id", metavar="ID")
@_output
@click.pass_obj
def schedules_show(runtime: Any, schedule_id: str, output: str) -> None:
    """Show a schedule: its timing, template, next run and latest runs."""
    with runtime.client() as client:
        record = client.get_schedule(schedule_id)
    if output == "json":
        click.echo(dump_json(record))
        return
    colour = runtime.colour()
    for line in format_schedule_detail(record, _runs_colour if colour else None):
        click.echo(line, color=colour)


def _set_paused(runtime: Any, schedule_id: str, paused: bool, output: str) -> None:
    with runtime.client() as client:
        record = client.patch_schedule(schedule_id, {"paused": paused})
    if output == "json":
        click.echo(dump_json(record))
        return
    if paused:
        click.echo(f"schedule {schedule_id} paused: it fires nothing until resumed")
    else:
        click.echo(f"schedule {schedule_id} resumed: next run "
                   f"{local_time(record.get('next_run_at'))}")


@schedules.command("pause")
@click.argument("schedule_id", metavar="ID")
@_output
@click.pass_obj
def schedules_pause(runtime: Any, schedule_id: str, output: str) -> None:
    """Pause a schedule (runs already started go on)."""
    _set_paused(runtime, schedule_id, True, output)


@schedules.command("resume")
@click.argument("schedule_id", metavar="ID")
@_output
@click.pass_obj
def schedules_resume(runtime: Any, schedule_id: str, output: str) -> None:
    """Resume a paused schedule from its next slot."""
    _set_paused(runtime, schedule_id, False, output)


@schedules.command("rm")
@click.argument("schedule_ids", metavar="ID...", nargs=-1, required=True)
@_output
@click.pass_obj
def schedules_rm(runtime: Any, schedule_ids: tuple[str, ...], output: str) -> None:
    """Delete schedules (runs already started go on)."""
    with runtime.client() as client:
        for schedule_id in schedule_ids:
            client.delete_schedule(schedule_id)
    if output == "json":
        click.echo(dump_json({"deleted": list(schedule_ids)}))
        return
    for schedule_id in schedule_ids:
        click.echo(f"schedule {schedule_id} deleted")
