"""PystolExperiment specs <-> the experiment model, and a run as the object's status.

A `PystolExperiment`'s `spec` is the experiment document of the HTTP API
(`ExperimentSpec`) in camelCase, recursively: steps of steps, each action step's `job`
(a PystolAction's spec), probes with their `run` properties. The experiment's name is the
object's `metadata.name`. `PystolClusterExperiment` (cluster-scoped, for node-level steps,
cluster admins only) has the same spec and status.

A namespaced PystolExperiment acts only in its own namespace: every step's targets and
every probe's namespace must be that namespace (`scope_problems`), or the object ends
`Failed` with a `Forbidden` condition and nothing runs. The experiment service checks the
same again with the object's authority (an operator of its namespace), so a spec this
module missed is still refused.

Pure: no cluster, no Redis; `pystol_api.watcher.experiment_handlers` does the talking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pystol_api.watcher.cr_mapping import (
    CrInvalid,
    _condition,
    _model_from_camel,
    _pydantic_problems,
    camel_data,
    camel_path,
    merge_conditions,
    rfc3339,
)
from pystol_worker.core.experiment_model import (
    ActionStep,
    ExperimentInvalid,
    ExperimentRun,
    ExperimentSpec,
    ExperimentStatus,
    ProbeStep,
    check_shape,
    walk,
)
from pystol_worker.jobs.validation import FieldProblem

EXPERIMENTS = "pystolexperiments"
CLUSTER_EXPERIMENTS = "pystolclusterexperiments"
#: Fields of the document a custom resource does not write: the name is the object's,
#: the Chaos Toolkit fields belong to an imported document.
NOT_IN_CR = frozenset({"name", "sourceFormat", "sourceDocument"})
RUN_PHASES = {ExperimentStatus.QUEUED: "Pending", ExperimentStatus.RUNNING: "Running",
              ExperimentStatus.ROLLING_BACK: "Running",
              ExperimentStatus.COMPLETED: "Completed", ExperimentStatus.ABORTED: "Aborted",
              ExperimentStatus.CANCELLED: "Aborted", ExperimentStatus.SKIPPED: "Skipped"}
EXPERIMENT_PHASES = ("Pending", "Running", "Completed", "Aborted", "Skipped", "Failed")
TERMINAL_EXPERIMENT_PHASES = frozenset({"Completed", "Aborted", "Skipped", "Failed"})
MAX_STEPS_SHOWN = 100


def experiment_spec_from_cr(spec: Any, name: str | None, where: str = "spec"
                            ) -> ExperimentSpec:
    """The ExperimentSpec a camelCase custom-resource spec describes, named after the
    object; CrInvalid names the object's own fields (`spec.method[0].job.target…`)."""
    if not isinstance(spec, Mapping):
        raise CrInvalid([FieldProblem(where, "must be an object")])
    problems = [FieldProblem(f"{where}.{key}", "not part of a custom resource's spec"
                             + (" (the experiment is named after the object)"
                                if key == "name" else ""))
                for key in spec if key in NOT_IN_CR]
    data = {key: value for key, value in spec.items() if key not in NOT_IN_CR}
    try:
        check_shape(data)  # bounds first: no deep recursion below on a hostile spec
    except ExperimentInvalid as error:
        raise CrInvalid([*problems, FieldProblem(camel_path(error.loc, where),
                                                 error.message)]) from None
    snake = _model_from_camel(data, ExperimentSpec, where, problems)
    snake["name"] = name
    try:
        experiment = ExperimentSpec.model_validate(snake)
    except ValidationError as error:
        problems += _pydantic_problems(error, lambda loc: camel_path(loc, where))
    except (ArithmeticError, RecursionError) as error:
        problems.append(FieldProblem(where, f"cannot be read ({type(error).__name__})"))
    if problems:
        raise CrInvalid(problems)
    return experiment


def experiment_spec_to_cr(spec: ExperimentSpec) -> dict[str, Any]:
    """The camelCase spec of a custom resource for `spec` (defaults left out)."""
    exclude = {"name", "source_format", "source_document"}
    data = spec.model_dump(mode="json", exclude_defaults=True, exclude=exclude)
    _keep_types(spec.model_dump(mode="json", exclude=exclude), data)
    converted: dict[str, Any] = camel_data(data)
    return converted


def _keep_types(full: Any, reduced: Any) -> None:
    """Put back every `type` that leaving defaults out removed: the step and probe unions
    are told apart by it (iterative: the tree is bounded, but no recursion is needed)."""
    pending = [(full, reduced)]
    while pending:
        whole, part = pending.pop()
        if isinstance(whole, dict) and isinstance(part, dict):
            if "type" in whole and isinstance(whole["type"], str):
                part.setdefault("type", whole["type"])
            pending.extend((whole[key], part[key]) for key in part if key in whole)
        elif isinstance(whole, list) and isinstance(part, list):
            pending.extend(zip(whole, part, strict=False))


def scope_problems(spec: ExperimentSpec, namespace: str,
                   where: str = "spec") -> list[FieldProblem]:
    """Every step target and probe outside `namespace` (the object's own), with its path.
    Node-level steps and Node probes (no namespace) are refused too: they are for the
    cluster-scoped PystolClusterExperiment."""
    found: list[FieldProblem] = []

    def probes(owner: str, items: Iterable[Any]) -> None:
        for index, probe in enumerate(items):
            spaces = probe.namespaces()
            if not spaces:
                found.append(FieldProblem(f"{owner}[{index}]", "reads no namespace (a Node "
                                          "or the whole cluster)"))
            for space in spaces:
                if space != namespace:
                    found.append(FieldProblem(f"{owner}[{index}]",
                                              f"reads namespace {space!r}"))

    def job(path: str, step: ActionStep) -> None:
        spaces = step.job.target.namespaces
        if not spaces and step.job.target.names:
            found.append(FieldProblem(f"{path}.job.target", "node-level chaos"))
        for index, space in enumerate(spaces):
            if space != namespace:
                found.append(FieldProblem(f"{path}.job.target.namespaces[{index}]",
                                          f"names namespace {space!r}"))
        probes(f"{path}.job.probes", step.job.probes)

    if spec.hypothesis is not None:
        probes(f"{where}.hypothesis.probes", spec.hypothesis.probes)
    for path, step in walk(spec.method, f"{where}.method"):
        if isinstance(step, ActionStep):
            job(path, step)
        elif isinstance(step, ProbeStep):
            probes(f"{path}.probes", step.probes)
    for index, rollback in enumerate(spec.rollbacks):
        if isinstance(rollback, ActionStep):
            job(f"{where}.rollbacks[{index}]", rollback)
    return [FieldProblem(camel_path(problem.loc, ""), problem.msg) for problem in found]


def run_message(run: ExperimentRun) -> str:
    """The status message: the run's phase, verdict and Pystol's own `reason`."""
    text = f"run {run.id} {run.status.value}"
    if run.verdict is not None:
        text += f": {run.verdict.value}"
        if run.score is not None:
            text += f", score {run.score:.2f}"
    if run.reason:
        text += f" ({run.reason})"
    return text[:1024]


def experiment_status(run: ExperimentRun, generation: int | None,
                      conditions: Iterable[Mapping[str, Any]] | None = None
                      ) -> dict[str, Any]:
    """The object's status for its run: phase, verdict, score, steps, times."""
    phase = RUN_PHASES[run.status]
    steps = [{"path": step.path, "name": step.name, "phase": step.status.value,
              **({"jobId": step.job_id} if step.job_id else {}),
              **({"verdict": step.verdict.value} if step.verdict else {})}
             for step in [*run.steps, *run.rollbacks]][:MAX_STEPS_SHOWN]
    status: dict[str, Any] = {
        "phase": phase, "runId": run.id, "observedGeneration": generation,
        "verdict": run.verdict.value if run.verdict else None, "score": run.score,
        "startedAt": rfc3339(run.started_at), "finishedAt": rfc3339(run.ended_at),
        "message": run_message(run), "steps": steps}
    done = phase in TERMINAL_EXPERIMENT_PHASES
    now = rfc3339(datetime.now(UTC)) or ""
    status["conditions"] = merge_conditions(conditions, [
        _condition("Accepted", "True", "RunStarted", f"run {run.id}", generation, now),
        _condition("Completed", "True" if done else "False", phase, status["message"],
                   generation, now)])
    return status


def refused_experiment_status(reason: str, message: str, generation: int | None,
                              conditions: Iterable[Mapping[str, Any]] | None = None
                              ) -> dict[str, Any]:
    """Nothing runs: phase Failed, the reason as a condition (Forbidden, InvalidSpec, …)."""
    return {"phase": "Failed", "runId": None, "verdict": None, "score": None,
            "observedGeneration": generation, "message": message[:1024], "steps": [],
            "conditions": merge_conditions(conditions, [
                _condition("Accepted", "False", reason, message, generation,
                           rfc3339(datetime.now(UTC)) or "")])}
