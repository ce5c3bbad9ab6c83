"""Everything a job must pass before it is queued, in one place for every entry point.

The API, the CLI (through the API), the CR watcher and the scheduler all call
`validate_job`, so a job refused over HTTP is refused as a custom resource too,
with the same field paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from pystol_worker.actions.base import Action
from pystol_worker.actions.registry import ActionRegistry, UnknownAction
from pystol_worker.core.model import JobSpec
from pystol_worker.core.selector_syntax import field_selector_problem, label_selector_problem
from pystol_worker.core.settings import Settings


@dataclass
class FieldProblem:
    loc: str
    msg: str


class JobInvalid(Exception):
    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.loc}: {p.msg}" for p in problems))
        self.problems = problems


def _probe_namespace_fields(index: int, probe: Any) -> list[tuple[str, str]]:
    service = getattr(probe, "service", None)
    if service is not None:
        return [(f"probes[{index}].service.namespace", service.namespace)]
    namespace = getattr(probe, "namespace", None)
    return [(f"probes[{index}].namespace", namespace)] if isinstance(namespace, str) else []


def validate_job(spec: JobSpec, registry: ActionRegistry, settings: Settings
                 ) -> tuple[Action[Any], BaseModel]:
    """The action and its validated params; JobInvalid lists every problem found.

    The params are an instance of exactly `action.Params` (validated here, nowhere else):
    that is what lets `Action[P]` take a `P` in check, select and execute."""
    problems: list[FieldProblem] = []
    action: Action[Any] | None = None
    try:
        action = registry.get(spec.action)
    except UnknownAction as error:
        problems.append(FieldProblem("action", str(error)))
    params: BaseModel | None = None
    if action is not None:
        try:
            params = action.Params.model_validate(spec.params)
        except ValidationError as error:
            for item in error.errors():
                loc = ".".join(str(part) for part in ("params", *item["loc"]))
                problems.append(FieldProblem(loc, item["msg"]))
        problems += [FieldProblem(loc, msg) for loc, msg in action.check(spec, params)]
    target = spec.target
    if action is not None and action.uses_namespaces(spec, params):
        if not target.namespaces:
            problems.append(FieldProblem("target.namespaces", f"{action.name} targets "
                                         f"{action.target_kind.value}: name at least one "
                                         "namespace"))
        if target.names:
            problems.append(FieldProblem("target.names", "names select nodes; use "
                                         "label_selector or field_selector for "
                                         f"{action.target_kind.value}"))
    for index, namespace in enumerate(target.namespaces):
        if settings.is_protected(namespace):
            problems.append(FieldProblem(f"target.namespaces[{index}]",
                                         f"namespace {namespace!r} is protected "
                                         "(PYSTOL_PROTECTED_NAMESPACES); Pystol never "
                                         "targets it"))
    for index, probe in enumerate(spec.probes):
        for loc, namespace in _probe_namespace_fields(index, probe):
            if settings.is_protected(namespace):
                problems.append(FieldProblem(loc, f"namespace {namespace!r} is protected "
                                             "(PYSTOL_PROTECTED_NAMESPACES); Pystol never "
                                             "probes it"))
        pods = getattr(probe, "pods", None)
        if pods is not None and pods.label_selector and \
                (problem := label_selector_problem(pods.label_selector)):
            problems.append(FieldProblem(f"probes[{index}].pods.label_selector", problem))
    if target.label_selector and (problem := label_selector_problem(target.label_selector)):
        problems.append(FieldProblem("target.label_selector", problem))
    if target.field_selector and (problem := field_selector_problem(target.field_selector)):
        problems.append(FieldProblem("target.field_selector", problem))
    longest = (spec.duration or 0) + (spec.recovery_timeout or settings.recovery_timeout_seconds)
    if longest > settings.max_job_seconds:
        problems.append(FieldProblem("duration", f"duration plus recovery timeout is {longest:g}s, "
                                     f"longer than a job may run (PYSTOL_MAX_JOB_SECONDS="
                                     f"{settings.max_job_seconds})"))
    if problems:
        raise JobInvalid(problems)
    assert action is not None and params is not None
    return action, params
