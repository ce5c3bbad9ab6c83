"""Experiments on the command line: `pystol run -f FILE` and `pystol experiments …`.

`pystol run -f FILE` reads one document (JSON or YAML, at most 128 KiB, YAML aliases
bounded: `pystol_api.experiment_documents`, the same reader the API uses) and does what
the document is:

- a job spec (it has `action`) → `POST /jobs`, as `pystol run ACTION` would;
- a Pystol experiment → stored under its name (`PUT /experiments/{name}`, create or
  replace) and run (`POST /experiments/{name}/run`);
- a Chaos Toolkit experiment (activities with a `provider`, or `--format chaostoolkit`) →
  converted here by `experiments.ctk_import`, with `${…}` configuration resolved from this
  shell's environment as `chaos run` resolves it, then stored and run as a Pystol one.

`--wait` follows the run until it ends and exits with its verdict: 0 passed, 1 failed or
deviated, 3 skipped, 4 aborted (cancelled counts as aborted), so a CI step can gate on
the hypothesis holding.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from pystol_api.cli.output import (
    RUN_TERMINAL_STATUSES,
    VERDICT_EXIT_CODES,
    CliError,
    dump_json,
    format_score,
    format_seconds,
    format_table,
    local_time,
    problem_lines,
    styled_status,
    styled_verdict,
)
from pystol_api.experiment_documents import DocumentInvalid, kind_of, load_document

EXIT_STOPPED_FOLLOWING = 130
RUN_HEADERS = ("RUN", "EXPERIMENT", "STATUS", "VERDICT", "SCORE", "STARTED", "TOOK")
EXPERIMENT_HEADERS = ("NAME", "STEPS", "NAMESPACES", "VERSION", "TITLE")
STEP_HEADERS = ("STEP", "TYPE", "STATUS", "VERDICT", "JOB", "PSP")


def _output(function: Any) -> Any:
    return click.option("--output", "-o", type=click.Choice(["table", "json"]),
                        default="table", show_default=True,
                        help="json: one machine-readable document on stdout.")(function)


# -- reading a file ------------------------------------------------------------------------


def read_document(path: str) -> dict[str, Any]:
    """The document in `path` (`-`: standard input), bounded as the API bounds it."""
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(200 * 1024 + 1)
        else:
            with Path(path).open("rb") as handle:
                raw = handle.read(200 * 1024 + 1)  # never more than a little over the cap
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return load_document(raw)
    except DocumentInvalid as error:
        where = f"{path}: {error.loc}" if error.loc else path
        raise CliError(f"{where}: {error.message}") from None


def experiment_from(document: dict[str, Any], kind: str, path: str,
                    environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Pystol experiment document to send: as it is, or converted from Chaos Toolkit's
    format here (configuration from `environ`, this shell's environment)."""
    if kind != "chaostoolkit":
        return document
    from pydantic import ValidationError

    from pystol_worker.core.experiment_model import ExperimentInvalid
    from pystol_worker.experiments import ctk_import

    # Only the variables the file's configuration names (`type: env`), never PYSTOL_*
    # (the import refuses those by name): a file someone hands over must not be able to
    # copy this shell's token or cloud keys into the stored experiment unnoticed.
    source = os.environ if environ is None else environ
    names = ctk_import.env_variables(document)
    read = {name: source[name] for name in names if name in source}
    if read:
        click.echo(f"{path}: read environment variables {', '.join(sorted(read))} "
                   "(named by its configuration)", err=True)
    try:
        spec = ctk_import.import_experiment(document, environ=read)
    except ExperimentInvalid as error:
        raise CliError(f"{path}: {_loc(error.loc)}: {error.message}") from None
    except ValidationError as error:
        lines = [f"  {_loc(item['loc'])}: {item['msg']}" for item in error.errors()]
        raise CliError(f"{path}: the Chaos Toolkit experiment does not convert", lines) \
            from None
    except ValueError as error:
        problems = getattr(error, "problems", None)
        if not problems:
            raise CliError(f"{path}: {error}") from None
        pairs = [_problem_pair(problem) for problem in problems]
        raise CliError(f"{path}: the Chaos Toolkit experiment cannot be run by Pystol",
                       problem_lines(pairs)) from None
    converted: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
    return converted


def _loc(loc: Iterable[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the document)"


def _problem_pair(problem: Any) -> tuple[str, str]:
    if isinstance(problem, tuple) and len(problem) == 2:
        loc, message = problem
    else:
        loc = getattr(problem, "loc", "")
        message = getattr(problem, "msg", None) or getattr(problem, "message", None) or problem
    return (_loc(loc) if isinstance(loc, tuple) else str(loc)), str(message)


# -- following a run -----------------------------------------------------------------------


def _steps(run: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(run.get("steps") or []), *(run.get("rollbacks") or [])]


def step_line(step: Mapping[str, Any]) -> str:
    status = str(step.get("status", "?"))
    line = f"  {step.get('path', '?')} {step.get('name', '')} ({step.get('type', '?')}): " \
           f"{styled_status(status)}"
    if step.get("job_id"):
        line += f"  job {step['job_id']}"
    if step.get("verdict"):
        line += f"  {styled_verdict(str(step['verdict']))}"
    if step.get("error"):
        line += f"  {step['error']}"
    return line


def follow_run(runtime: Any, client: Any, run_id: str, events_to_stderr: bool
               ) -> dict[str, Any]:
    """Poll the run until it ends, printing each step whose status changed."""
    shown: dict[str, str] = {}
    status_shown = ""
    while True:
        run = client.get_run(run_id)
        status = str(run.get("status", "?"))
        if status != status_shown:
            click.echo(f"run {run_id}: {styled_status(status)}", err=events_to_stderr,
                       color=runtime.colour() and not events_to_stderr)
            status_shown = status
        for step in _steps(run):
            key = str(step.get("path"))
            state = f"{step.get('status')}:{step.get('job_id')}"
            if shown.get(key) != state:
                shown[key] = state
                click.echo(step_line(step), err=events_to_stderr,
                           color=runtime.colour() and not events_to_stderr)
        if status in RUN_TERMINAL_STATUSES:
            return dict(run)
        runtime.sleep(runtime.poll_interval)


def exit_code_of(run: Mapping[str, Any]) -> int:
    """0 passed, 1 failed/deviated, 3 skipped, 4 aborted (and cancelled, and unknown)."""
    if run.get("status") == "cancelled":
        return VERDICT_EXIT_CODES["aborted"]
    return VERDICT_EXIT_CODES.get(str(run.get("verdict")), VERDICT_EXIT_CODES["aborted"])


def format_run_summary(run: Mapping[str, Any]) -> list[str]:
    took = run.get("duration_seconds")
    title = (f"run {run.get('id')} of {run.get('experiment')}: "
             f"{styled_verdict(run.get('verdict'))}")
    if run.get("score") is not None:
        title += f", resilience score {format_score(run.get('score'))}"
    if isinstance(took, int | float):
        title += f" in {format_seconds(took)}"
    if (run.get("spec") or {}).get("dry_run"):
        title += " (dry run: nothing was changed)"
    lines = [title, f"  status:    {styled_status(str(run.get('status', '?')))}"]
    if run.get("reason"):
        lines.append(f"  reason:    {run['reason']}")
    if run.get("error"):
        lines.append(f"  error:     {click.style(str(run['error']), fg='red')}")
    steps = _steps(run)
    if steps:
        lines.append("  steps:")
        lines += ["  " + line for line in format_table(STEP_HEADERS, step_rows(steps))]
    return lines


def step_rows(steps: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    return [[f"{step.get('path', '?')} {step.get('name', '')}", str(step.get("type", "?")),
             str(step.get("status", "?")), str(step.get("verdict") or "-"),
             str(step.get("job_id") or "-"),
             "-" if step.get("psp") is None else str(step.get("psp"))] for step in steps]


def run_rows(runs: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    return [[str(run.get("id", "?")), str(run.get("experiment", "?")),
             str(run.get("status", "?")), str(run.get("verdict") or "-"),
             format_score(run.get("score")), local_time(run.get("started_at")),
             format_seconds(run.get("duration_seconds"))
             if run.get("duration_seconds") is not None else "-"] for run in runs]


def _count_steps(steps: Iterable[Any]) -> int:
    pending = list(steps)
    count = 0
    while pending:
        step = pending.pop()
        count += 1
        if isinstance(step, Mapping):
            pending.extend(step.get("steps") or [])
    return count


def experiment_rows(items: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for item in items:
        spec = item.get("spec") or {}
        rows.append([str(item.get("name", "?")), str(_count_steps(spec.get("method") or [])),
                     ",".join(item.get("namespaces") or []) or "-",
                     str(item.get("version", "?")), str(spec.get("title") or "")])
    return rows


# -- pystol run -f ---------------------------------------------------------------------------


def run_file(runtime: Any, path: str, *, declared: str | None, wait: bool, dry_run: bool,
             idempotency_key: str | None, output: str,
             follow_job: Any = None) -> int:
    """`pystol run -f FILE`: the exit code (see the module docstring)."""
    document = read_document(path)
    kind = kind_of(document, declared)
    with runtime.client() as client:
        if kind == "job":
            if dry_run:
                document = {**document, "dry_run": True}
            if idempotency_key:
                document = {**document, "idempotency_key": idempotency_key}
            record = client.submit_job(document)
            job_id = str(record.get("id"))
            if not wait or follow_job is None:
                if output == "json":
                    click.echo(dump_json(record))
                else:
                    click.echo(f"job {job_id} {styled_status(str(record.get('status', '?')))}: "
                               f"{document.get('action')}", color=runtime.colour())
                    click.echo(f"follow it: pystol jobs show {job_id} --follow")
                return 0
            code: int = follow_job(runtime, client, job_id, output)
            return code
        spec = experiment_from(document, kind, path)
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise CliError(f"{path}: name: an experiment needs a name (a DNS label), it is "
                           "stored under it")
        client.put_experiment(name, spec)
        run = client.run_experiment(name, dry_run=dry_run, idempotency_key=idempotency_key)
        run_id = str(run.get("id"))
        if not wait:
            if output == "json":
                click.echo(dump_json(run))
            else:
                click.echo(f"run {run_id} of experiment {name}: "
                           f"{styled_status(str(run.get('status', '?')))}",
                           color=runtime.colour())
                click.echo(f"follow it: pystol experiments runs {name}  ·  "
                           f"pystol jobs show {run_id} --journal -")
            return 0
        try:
            final = follow_run(runtime, client, run_id, events_to_stderr=output == "json")
        except KeyboardInterrupt:
            click.echo(f"\nstopped following run {run_id}; it goes on (cancel it with "
                       f"`pystol experiments cancel {run_id}`)", err=True)
            return EXIT_STOPPED_FOLLOWING
    if output == "json":
        click.echo(dump_json(final))
    else:
        for line in format_run_summary(final):
            click.echo(line, color=runtime.colour())
    return exit_code_of(final)


# -- pystol experiments ----------------------------------------------------------------------


@click.group()
def experiments() -> None:
    """Stored experiments and their runs."""


@experiments.command("list")
@click.option("--namespace", "-n", metavar="NS", help="Only experiments touching NS.")
@click.option("--tag", metavar="TAG", help="Only experiments with this tag.")
@_output
@click.pass_obj
def experiments_list(runtime: Any, namespace: str | None, tag: str | None,
                     output: str) -> None:
    """List the experiments you may read."""
    with runtime.client() as client:
        items = client.list_experiments(namespace=namespace, tag=tag)
    if output == "json":
        click.echo(dump_json({"items": items}))
        return
    if not items:
        click.echo("no experiments", err=True)
        return
    for line in format_table(EXPERIMENT_HEADERS, experiment_rows(items)):
        click.echo(line)


@experiments.command("show")
@click.argument("name")
@_output
@click.pass_obj
def experiments_show(runtime: Any, name: str, output: str) -> None:
    """Show one stored experiment (json: the whole document)."""
    with runtime.client() as client:
        item = client.get_experiment(name)
        runs = client.experiment_runs(name, limit=5)
    if output == "json":
        click.echo(dump_json(item))
        return
    spec = item.get("spec") or {}
    click.echo(f"experiment {item.get('name')} (version {item.get('version')})")
    if spec.get("title"):
        click.echo(f"  title:      {spec['title']}")
    click.echo(f"  namespaces: {', '.join(item.get('namespaces') or []) or '-'}")
    click.echo(f"  steps:      {_count_steps(spec.get('method') or [])} in the method, "
               f"{len(spec.get('rollbacks') or [])} rollback(s)")
    probes = (spec.get("hypothesis") or {}).get("probes") or []
    click.echo(f"  hypothesis: {len(probes)} probe(s)")
    if runs:
        click.echo("  latest runs:")
        for line in format_table(RUN_HEADERS, run_rows(runs)):
            click.echo(f"    {line}")


@experiments.command("apply")
@click.option("--file", "-f", "path", required=True, metavar="FILE",
              help="The experiment (JSON or YAML; - reads standard input).")
@click.option("--format", "declared", type=click.Choice(["pystol", "chaostoolkit"]),
              help="The file's format [default: detected].")
@_output
@click.pass_obj
def experiments_apply(runtime: Any, path: str, declared: str | None, output: str) -> None:
    """Store an experiment (create, or replace the one of that name) without running it."""
    document = read_document(path)
    kind = kind_of(document, declared)
    if kind == "job":
        raise CliError(f"{path}: this is a job spec (it has `action`), not an experiment; "
                       "run it with `pystol run -f`")
    spec = experiment_from(document, kind, path)
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise CliError(f"{path}: name: an experiment needs a name")
    with runtime.client() as client:
        stored = client.put_experiment(name, spec)
    if output == "json":
        click.echo(dump_json(stored))
        return
    click.echo(f"experiment {name} stored (version {stored.get('version')})")


@experiments.command("rm")
@click.argument("name")
@click.pass_obj
def experiments_rm(runtime: Any, name: str) -> None:
    """Delete a stored experiment (runs already started go on)."""
    with runtime.client() as client:
        client.delete_experiment(name)
    click.echo(f"experiment {name} deleted")


@experiments.command("runs")
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@_output
@click.pass_obj
def experiments_runs(runtime: Any, name: str | None, limit: int, output: str) -> None:
    """Runs of one experiment (its trend), or of every experiment, newest first."""
    with runtime.client() as client:
        runs = client.experiment_runs(name, limit=limit)
    if output == "json":
        click.echo(dump_json({"items": runs}))
        return
    if not runs:
        click.echo("no runs", err=True)
        return
    for line in format_table(RUN_HEADERS, run_rows(runs)):
        click.echo(line)


@experiments.command("show-run")
@click.argument("run_id", metavar="RUN")
@click.option("--wait", "-w", is_flag=True, help="Follow it until it ends; exit with its "
                                                 "verdict (0 passed, 1 failed/deviated, "
                                                 "3 skipped, 4 aborted).")
@_output
@click.pass_obj
def experiments_show_run(runtime: Any, run_id: str, wait: bool, output: str) -> None:
    """One run: its steps, verdict and score."""
    with runtime.client() as client:
        run = (follow_run(runtime, client, run_id, events_to_stderr=output == "json")
               if wait else client.get_run(run_id))
    if output == "json":
        click.echo(dump_json(run))
    else:
        for line in format_run_summary(run):
            click.echo(line, color=runtime.colour())
    if wait:
        code = exit_code_of(run)
        if code:
            sys.exit(code)


@experiments.command("cancel")
@click.argument("run_id", metavar="RUN")
@click.option("--reason", metavar="TEXT", help="Why (kept in the run).")
@_output
@click.pass_obj
def experiments_cancel(runtime: Any, run_id: str, reason: str | None, output: str) -> None:
    """Stop a run: running steps abort and revert, then the rollbacks run."""
    with runtime.client() as client:
        run = client.cancel_run(run_id, reason)
    if output == "json":
        click.echo(dump_json(run))
        return
    click.echo(f"run {run_id}: stop requested (status now "
               f"{styled_status(str(run.get('status', '?')))}); rollbacks run before it ends")


@experiments.command("resume")
@click.argument("run_id", metavar="RUN")
@click.argument("step", metavar="STEP")
@_output
@click.pass_obj
def experiments_resume(runtime: Any, run_id: str, step: str, output: str) -> None:
    """Resume a suspended step of a run (STEP is its path, e.g. method[2])."""
    with runtime.client() as client:
        run = client.resume_run(run_id, step)
    if output == "json":
        click.echo(dump_json(run))
        return
    click.echo(f"run {run_id}: {step} resumed")


def write_journal(runtime: Any, run_or_job_id: str, destination: str) -> None:
    """`pystol jobs show ID --journal [PATH|-]`: the Chaos Toolkit journal of a run or job."""
    with runtime.client() as client:
        journal = client.journal(run_or_job_id)
    text = dump_json(journal) + "\n"
    if destination == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(destination).write_text(text, encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write {destination}: {error.strerror or error}") from None
    click.echo(f"journal of {run_or_job_id} written to {destination}", err=True)


__all__ = ["experiments", "run_file", "write_journal"]
