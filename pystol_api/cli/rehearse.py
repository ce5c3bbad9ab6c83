"""`pystol rehearse -f FILE --snapshot cluster.yaml`: an experiment on a copy, first.

Loads the snapshot (the output of `kubectl get … -A -o yaml`, as `pystol-sim --snapshot`
reads it) into a private simulated cluster, runs the experiment there at high speed with
Pystol's own job and experiment code (`pystol_worker.rehearsal`), and prints what it
would do: the targets each step would hit, the blast radius (ready pods lost per
workload, PodDisruptionBudgets that blocked or were violated), the recovery per workload
in the real cluster's seconds, and the verdict. Nothing touches the real cluster, the
API or Redis: this command needs neither a Pystol server nor a token.

The exit code is `pystol run -f FILE --wait`'s for the verdict on the copy (0 passed,
1 failed or deviated, 3 skipped, 4 aborted), so a CI step can refuse an experiment that
would not pass; 2 when the rehearsal itself could not run (a bad file, a bad snapshot).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pystol_api.cli.experiments import experiment_from, read_document
from pystol_api.cli.output import (
    VERDICT_EXIT_CODES,
    CliError,
    dump_json,
    format_score,
    format_table,
    problem_lines,
    styled_verdict,
)
from pystol_api.experiment_documents import kind_of

if TYPE_CHECKING:
    from pystol_api.cli.commands import Runtime
    from pystol_worker.core.experiment_model import ExperimentSpec

FAILED_TO_REHEARSE = 2


def _speed(ctx: click.Context, param: click.Parameter, value: str) -> float | None:
    from pystol_worker.rehearsal.timescale import parse_speed

    try:
        return parse_speed(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def load_experiment(path: str, declared: str | None) -> ExperimentSpec:
    """The Pystol experiment in `path` (a Chaos Toolkit one is converted first); every
    problem with its field path, as `pystol run -f` and the API report them."""
    from pystol_worker.experiments.service import JobInvalid, parse_experiment

    document = read_document(path)
    kind = kind_of(document, declared)
    if kind == "job":
        raise CliError(f"{path}: a job spec, not an experiment; rehearse an experiment "
                       "(a job is an experiment of one action step)")
    document = experiment_from(document, kind, path)
    try:
        return parse_experiment(document)
    except JobInvalid as error:
        raise CliError(f"{path}: not a valid experiment", problem_lines(
            [(problem.loc, problem.msg) for problem in error.problems][:20])) from None


def predicted_workload(item: dict[str, Any]) -> str:
    """`1 of 3 pods of Deployment shop/web`, or `Deployment shop/web` when the step
    targets the workload itself."""
    workload = item["workload"]
    name = f"{workload['kind']} {workload['namespace']}/{workload['name']}"
    if item.get("target_kind", "Pod") != "Pod":
        return name
    of = f" of {item['desired']}" if item.get("desired") is not None else ""
    return f"{item['chosen']}{of} pods of {name}"


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as tables, the way a person reads it before a change window."""
    took = report.get("duration_seconds")
    lines = [f"rehearsal of {report['experiment']} on {report['snapshot']} at "
             f"{report['speed']:g}x" + (f" (took {took:.0f}s)" if took is not None else ""),
             f"verdict {styled_verdict(report.get('verdict'))}  score "
             f"{format_score(report.get('score'))}"
             + (f"  ({report['reason']})" if report.get("reason") else ""), ""]
    lines.append("PREDICTED TARGETS")
    rows = []
    for step in report.get("predicted") or []:
        workloads = "; ".join(predicted_workload(w) for w in step.get("workloads") or [])
        rows.append([step["path"], step["action"], step["matched"], step["chosen"],
                     step.get("error") or workloads or "-"])
    lines += format_table(("STEP", "ACTION", "MATCHED", "CHOSEN", "WORKLOADS"), rows) \
        if rows else ["  (no action steps)"]
    lines += ["", "BLAST RADIUS"]
    rows = [[f"{b['workload']['kind']} {b['workload']['namespace']}/{b['workload']['name']}",
             b["desired"], b["min_ready"], b["lost"]] for b in report.get("blast_radius") or []]
    lines += format_table(("WORKLOAD", "DESIRED", "MIN READY", "LOST"), rows) if rows \
        else ["  (no workload lost a ready pod)"]
    budgets = report.get("budgets") or []
    if budgets:
        lines += ["", "DISRUPTION BUDGETS"]
        lines += format_table(
            ("BUDGET", "MIN AVAILABLE", "MIN HEALTHY", "BLOCKED EVICTIONS", "VIOLATED"),
            [[f"{b['namespace']}/{b['name']}", b["min_available"], b["min_healthy"],
              b["blocked_evictions"], "yes" if b["violated"] else "no"] for b in budgets])
    lines += ["", "RECOVERY (seconds on the real cluster)"]
    rows = [[f"{r['workload']['kind']} {r['workload']['namespace']}/{r['workload']['name']}",
             r.get("step") or "-", "yes" if r["recovered"] else "no",
             "-" if r.get("simulated_seconds") is None else f"{r['simulated_seconds']:.1f}"]
            for r in report.get("recovery") or []]
    lines += format_table(("WORKLOAD", "STEP", "RECOVERED", "SECONDS"), rows) if rows \
        else ["  (nothing to recover)"]
    for title, key in (("NOT REHEARSED", "not_rehearsed"), ("NOTES", "notes")):
        if report.get(key):
            lines += ["", title, *(f"- {item}" for item in report[key])]
    return lines


@click.command("rehearse")
@click.option("--file", "-f", "file_path", required=True, metavar="FILE",
              help="The experiment (YAML or JSON; a Chaos Toolkit experiment is converted).")
@click.option("--snapshot", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The cluster to copy: `kubectl get nodes,namespaces,deployments,"
                   "statefulsets,daemonsets,replicasets,pods,services,endpoints,"
                   "poddisruptionbudgets -A -o yaml`.")
@click.option("--speed", default="auto", show_default=True, callback=_speed,
              metavar="auto|N", help="How much faster the copy's clock runs (1..100); auto: "
                                     "as fast as keeps the shortest targeted recovery at 2s.")
@click.option("--format", "declared", type=click.Choice(["pystol", "chaostoolkit"]),
              default=None, help="The file's format, when it cannot be told from it.")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: the report as one document on stdout.")
@click.pass_obj
def rehearse(runtime: Runtime, file_path: str, snapshot: Path, speed: float | None,
             declared: str | None, output: str) -> None:
    """Rehearse an experiment on a private copy of a cluster before running it.

    \b
    pystol rehearse -f experiment.yaml --snapshot cluster.yaml
    pystol rehearse -f experiment.yaml --snapshot cluster.yaml --speed 10 -o json
    """
    from pystol_worker.core.policy import PolicyError, load_policy
    from pystol_worker.rehearsal.engine import RehearsalFailed
    from pystol_worker.rehearsal.engine import rehearse as run_rehearsal
    from pystol_worker.rehearsal.private_stack import PrivateSimError

    spec = load_experiment(file_path, declared)
    settings = runtime.settings()
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as error:
        raise CliError(f"the admin policy (PYSTOL_POLICY_FILE) cannot be used: {error}") \
            from None

    def progress(text: str) -> None:
        if output != "json":
            click.echo(f"… {text}", err=True)

    with tempfile.TemporaryDirectory(prefix="pystol-rehearsal-") as workdir:
        try:
            report = run_rehearsal(spec, snapshot, speed=speed, settings=settings,
                                   policy=policy, workdir=Path(workdir), progress=progress)
        except (RehearsalFailed, PrivateSimError) as error:
            raise CliError(f"the rehearsal could not run: {error}",
                           exit_code=FAILED_TO_REHEARSE) from None
    data = report.model_dump(mode="json")
    if output == "json":
        click.echo(dump_json(data))
    else:
        for line in report_lines(data):
            click.echo(line, color=runtime.colour())
    code = VERDICT_EXIT_CODES.get(str(data.get("verdict")), VERDICT_EXIT_CODES["aborted"])
    if code:
        raise SystemExit(code)
