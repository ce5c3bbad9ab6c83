"""How the `pystol` command line shows things: tables, job views, JSON, progress and errors.

Everything here turns data into text and decides nothing about HTTP or processes, so
it can be tested as pure functions. Two rules shape it:

- `--output json` must give a script exactly one JSON document on stdout, so the JSON
  helpers never colour and never mix prose in; progress and notes go to stderr.
- Human output is aligned from the content (column widths are measured on the plain
  text, then colour is added), and colour is only a hint: `click.echo` strips it when
  the stream is not a terminal, so the same strings serve both.

It imports nothing heavier than click: `pystol --help` must start fast.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

import click

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "aborted", "cancelled", "skipped"})
#: An experiment run's terminal statuses (`rolling-back` is not one: rollbacks still run).
RUN_TERMINAL_STATUSES = frozenset({"completed", "aborted", "cancelled", "skipped"})
STATUS_COLOURS: Mapping[str, str] = {
    "queued": "blue",
    "running": "cyan",
    "rolling-back": "cyan",
    "pending": "blue",
    "succeeded": "green",
    "completed": "green",
    "failed": "red",
    "aborted": "yellow",
    "cancelled": "yellow",
    "skipped": "magenta",
}
#: Verdicts (jobs and experiment runs), coloured as a person reads them.
VERDICT_COLOURS: Mapping[str, str] = {
    "passed": "green",
    "failed": "red",
    "deviated": "red",
    "aborted": "yellow",
    "skipped": "magenta",
}
#: `pystol run -f … --wait`'s exit code per verdict: 0 only when the hypothesis held.
VERDICT_EXIT_CODES: Mapping[str, int] = {
    "passed": 0,
    "failed": 1,
    "deviated": 1,
    "skipped": 3,
    "aborted": 4,
}
SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
COLUMN_GAP = "  "

ColourOf = Callable[[int, str], str | None]


class CliError(click.ClickException):
    """A user-facing failure: `error: <message>`, extra lines, an exit code, no traceback."""

    def __init__(self, message: str, lines: Sequence[str] = (), exit_code: int = 2) -> None:
        super().__init__(message)
        self.lines = list(lines)
        # click declares exit_code a class variable; click exits with the instance's value
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.message}", err=file is None, file=file)
        for line in self.lines:
            click.echo(line, err=file is None, file=file)


def dump_json(data: object) -> str:
    """The one JSON style of the CLI: indented, UTF-8 kept, key order as the API sent it."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def status_colour(status: str) -> str | None:
    return STATUS_COLOURS.get(status)


def styled_verdict(verdict: str | None) -> str:
    if not verdict:
        return "-"
    return click.style(verdict, fg=VERDICT_COLOURS.get(verdict), bold=True)


def format_score(score: object) -> str:
    """A resilience score with two decimals (already cut, as LitmusChaos does), or -."""
    if isinstance(score, int | float) and not isinstance(score, bool):
        return f"{score:.2f}"
    return "-"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]],
                 colour_of: ColourOf | None = None) -> list[str]:
    """Aligned rows: each column as wide as its widest cell, the last one not padded.

    `colour_of(column, text)` may name a click colour for a cell; widths are measured
    before colouring, so alignment survives both colour and its removal.
    """
    table = [[_cell(value) for value in row] for row in rows]
    width = [len(header) for header in headers]
    for row in table:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)} columns")
        for index, text in enumerate(row):
            width[index] = max(width[index], len(text))
    last = len(headers) - 1

    def line(cells: Sequence[str], header: bool) -> str:
        parts = []
        for index, text in enumerate(cells):
            padded = text if index == last else text.ljust(width[index])
            if header and colour_of is not None:
                padded = click.style(padded, bold=True)
            elif colour_of is not None and (colour := colour_of(index, text)):
                padded = click.style(text, fg=colour) + padded[len(text):]
            parts.append(padded)
        return COLUMN_GAP.join(parts).rstrip()

    return [line(list(headers), True), *(line(row, False) for row in table)]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text.replace("\n", " ") if text else "-"


def parse_time(value: object) -> datetime | None:
    """An API timestamp (ISO 8601, `Z` or offset) as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def local_time(value: object, with_date: bool = True) -> str:
    """A timestamp in the reader's local time zone; the raw value when it does not parse."""
    parsed = parse_time(value)
    if parsed is None:
        return "-" if value in (None, "") else str(value)
    local = parsed.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def format_seconds(seconds: object) -> str:
    """`0.42s`, `3.4s`, `2m05s`, `1h02m` for a number of seconds; `-` for none."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def job_seconds(record: Mapping[str, Any]) -> float | None:
    started, finished = parse_time(record.get("started_at")), parse_time(record.get("finished_at"))
    if started and finished:
        return (finished - started).total_seconds()
    return None


def styled_status(status: str) -> str:
    return click.style(status, fg=status_colour(status), bold=status in TERMINAL_STATUSES)


def format_event(event: Mapping[str, Any]) -> str:
    """One timeline event: local time, kind, message."""
    when = local_time(event.get("at"), with_date=False)
    kind = str(event.get("kind", "?"))
    colour = status_colour(kind) or ("red" if kind in ("error", "revert-failed") else None)
    return f"{when}  {click.style(kind.ljust(10), fg=colour)}  {event.get('message', '')}"


def describe_target(spec: Mapping[str, Any]) -> str:
    """`pods in shop,cart · app=web · fixed 2` from a job spec's target."""
    target = spec.get("target") or {}
    parts = []
    if target.get("names"):
        parts.append("nodes " + ",".join(target["names"]))
    if target.get("namespaces"):
        parts.append("in " + ",".join(target["namespaces"]))
    if target.get("label_selector"):
        parts.append(target["label_selector"])
    if target.get("field_selector"):
        parts.append(target["field_selector"])
    mode = target.get("mode") or "one"
    value = target.get("value")
    if target.get("amount") is not None:
        mode, value = "fixed", target["amount"]
    parts.append(mode if value is None else f"{mode} {_number(value)}")
    return " · ".join(parts)


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe_ref(ref: Mapping[str, Any]) -> str:
    """`Pod/shop/web-7d9f (node worker-a)` for a target or workload reference."""
    name = "/".join(str(part) for part in (ref.get("kind"), ref.get("namespace"), ref.get("name"))
                    if part)
    return f"{name} (node {ref['node']})" if ref.get("node") else name


def recovery_lines(record: Mapping[str, Any]) -> list[str]:
    lines = []
    for item in (record.get("result") or {}).get("recovery") or []:
        workload = describe_ref(item.get("workload") or {})
        if item.get("recovered"):
            lines.append(f"{workload}  {format_seconds(item.get('recovery_seconds'))}")
        else:
            ready, desired = item.get("ready_replicas", 0), item.get("desired_replicas", "?")
            lines.append(f"{workload}  {click.style('not recovered', fg='red')} "
                         f"({ready}/{desired} ready)")
    return lines


def target_lines(record: Mapping[str, Any], limit: int = 10) -> list[str]:
    targets = record.get("targets") or []
    lines = [describe_ref(ref) for ref in targets[:limit]]
    if len(targets) > limit:
        lines.append(f"… and {len(targets) - limit} more")
    return lines


def format_summary(record: Mapping[str, Any]) -> list[str]:
    """What `run --wait` prints at the end: status, reason, targets, recovery per workload."""
    status = str(record.get("status", "?"))
    took = job_seconds(record)
    spec = record.get("spec") or {}
    title = f"job {record.get('id')} {styled_status(status)}"
    if took is not None:
        title += f" in {format_seconds(took)}"
    if spec.get("dry_run"):
        title += " (dry run: nothing was changed)"
    lines = [title]
    if record.get("verdict"):
        verdict = f"  verdict:   {styled_verdict(str(record['verdict']))}"
        if record.get("score") is not None:
            verdict += f", resilience score {format_score(record.get('score'))}"
        lines.append(verdict)
    if record.get("reason"):
        lines.append(f"  reason:    {record['reason']}")
    if record.get("error"):
        lines.append(f"  error:     {click.style(str(record['error']), fg='red')}")
    metrics = record.get("metrics") or {}
    if spec.get("dry_run"):
        lines.append(f"  targets:   {metrics.get('targets_selected', 0)} selected, none "
                     "changed")
    else:
        lines.append(f"  targets:   {metrics.get('targets_affected', 0)} affected of "
                     f"{metrics.get('targets_selected', 0)} selected")
    lines += [f"    {line}" for line in target_lines(record)]
    recovery = recovery_lines(record)
    if recovery:
        lines.append("  recovery:")
        lines += [f"    {line}" for line in recovery]
    return lines


def format_job_detail(record: Mapping[str, Any]) -> list[str]:
    """`pystol jobs show`: the record as a human reads it, timeline last."""
    spec = record.get("spec") or {}
    metrics = record.get("metrics") or {}
    submitter = record.get("submitter")
    source = str(record.get("source", "?")) + (f" (by {submitter})" if submitter else "")
    fields: list[tuple[str, str]] = [
        ("id", str(record.get("id"))),
        ("action", str(spec.get("action", "?"))),
        ("status", styled_status(str(record.get("status", "?")))),
        ("source", source),
        ("target", describe_target(spec)),
    ]
    if spec.get("params"):
        fields.append(("params", json.dumps(spec["params"], ensure_ascii=False)))
    if spec.get("duration") is not None:
        fields.append(("duration", str(spec["duration"])))
    if spec.get("dry_run"):
        fields.append(("dry run", "yes: nothing is changed"))
    fields += [("created", local_time(record.get("created_at"))),
               ("started", local_time(record.get("started_at"))),
               ("finished", local_time(record.get("finished_at")))]
    if (took := job_seconds(record)) is not None:
        fields.append(("took", format_seconds(took)))
    if record.get("worker"):
        fields.append(("worker", str(record["worker"])))
    if record.get("reason"):
        fields.append(("reason", str(record["reason"])))
    if record.get("error"):
        fields.append(("error", click.style(str(record["error"]), fg="red")))
    fields.append(("targets", f"{metrics.get('targets_affected', 0)} affected of "
                              f"{metrics.get('targets_selected', 0)} selected"))
    if metrics.get("recovery_seconds") is not None:
        fields.append(("recovery", format_seconds(metrics["recovery_seconds"])))
    width = max(len(name) for name, _ in fields) + 1
    lines = [f"{(name + ':').ljust(width)}  {value}" for name, value in fields]
    lines += [f"  {line}" for line in target_lines(record, limit=50)]
    recovery = recovery_lines(record)
    if recovery:
        lines.append("recovery per workload:")
        lines += [f"  {line}" for line in recovery]
    timeline = record.get("timeline") or []
    if timeline:
        lines.append("timeline:")
        lines += [f"  {format_event(event)}" for event in timeline]
    return lines


JOB_HEADERS = ("ID", "STATUS", "ACTION", "TARGET", "AFFECTED", "CREATED", "SOURCE")


def job_rows(records: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for record in records:
        spec = record.get("spec") or {}
        metrics = record.get("metrics") or {}
        affected = f"{metrics.get('targets_affected', 0)}/{metrics.get('targets_selected', 0)}"
        if spec.get("dry_run"):
            affected += " (dry)"
        rows.append([str(record.get("id")), str(record.get("status", "?")),
                     str(spec.get("action", "?")), describe_target(spec), affected,
                     local_time(record.get("created_at")), str(record.get("source", "?"))])
    return rows


def job_colour(column: int, text: str) -> str | None:
    return status_colour(text) if column == 1 else None


ACTION_HEADERS = ("NAME", "TARGETS", "DESCRIPTION")


def action_rows(actions: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for action in actions:
        description = str(action.get("description") or "").strip()
        rows.append([str(action.get("name", "?")), str(action.get("targets", "?")),
                     description.splitlines()[0] if description else "-"])
    return rows


class ProgressLine:
    """A spinner, status and elapsed time redrawn in place on a terminal; silent elsewhere.

    Output that must stay (events) calls `clear()` first, so the spinner never leaves
    half-lines behind in a scroll-back or a log file.
    """

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.frame = 0
        self.shown = False

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        columns = shutil.get_terminal_size((80, 24)).columns
        spinner = SPINNER_FRAMES[self.frame % len(SPINNER_FRAMES)]
        self.frame += 1
        self.stream.write(f"\r\x1b[2K{spinner} {text}"[: columns + 6])
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False


def problem_lines(errors: Iterable[tuple[str, str]]) -> list[str]:
    """One `  field.path: message` line per validation problem."""
    return [f"  {loc}: {msg}" if loc else f"  {msg}" for loc, msg in errors]


def now_utc() -> datetime:
    return datetime.now(UTC)
