"""Custom resources and the job model: camelCase specs, the original Pystol's shape, status.

A `PystolAction`'s `spec` is the job model of the HTTP API (`JobSpec`) with camelCase
field names, as Kubernetes objects spell them; `params` keys may be camelCase or
snake_case (they are the action's own model, which is snake_case). The original Pystol
(2020) wrote `spec: {collection, role, extra_vars}` with `extra_vars` a JSON string of
Ansible variables; those roles map onto today's actions:

| role       | action     | variables (`pystol_<role>_<name>`, or `<name>`)                      |
|------------|------------|-----------------------------------------------------------------------|
| killpods   | pod-kill   | namespace, amount, distribution (poisson), duration (Pystol: 100s)    |
| drainnodes | node-drain | names (take precedence), amount, duration (60)                        |
| pingtest   | http-probe | url (Pystol; default: the first node's kube-proxy /healthz), count (2) |

A `PystolSchedule`'s spec is the schedule model (`ScheduleSpec`) with Kubernetes
CronJob's names where it has one: `schedule` (cron), `timeZone`, `suspend`,
`concurrencyPolicy`, `startingDeadlineSeconds`, plus `historyLimit`, `interval`, `mtbf`,
`windows`, `excludedDates`, and `template` (a PystolAction's camelCase job) or
`experimentRef` (the name of a stored experiment each run starts).

Nested models map recursively, by the models themselves (`_model_from_camel`): a probe's
`run` properties, a `guard`, an experiment's steps of steps with their `job`s (see
`pystol_api.watcher.experiment_mapping`); the union members (probe kinds, step types) are
told apart by their `type`, as the models do.

The cluster-scoped `PystolClusterAction` and `PystolClusterSchedule` (node-level and
cluster-wide chaos, for cluster admins) have the same specs and statuses, so they map the
same way; who each kind may act as is `pystol_api.watcher.kinds`.

Everything here is pure (no cluster, no Redis) so that the watcher and the unit tests
share it; `pystol_api.watcher.operator` does the talking. Problems are reported with the path of
the custom resource's own field (`spec.target.labelSelector`,
`spec.extra_vars.pystol_killpods_amount`), never the snake_case path of the job model.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pystol_worker.core.access import AccessDenied
from pystol_worker.core.experiment_model import (
    ActionStep,
    ExperimentSpec,
    Hypothesis,
    ParallelStep,
    ProbeStep,
    ReleaseStep,
    SerialStep,
    SuspendStep,
    WaitStep,
)
from pystol_worker.core.model import HttpProbe, JobRecord, JobSpec, JobStatus, Target
from pystol_worker.core.probe_model import (
    ErrorBudgetGuard,
    FieldCheck,
    K8sProbe,
    ObjectCheck,
    PodCount,
    PrometheusProbe,
    RunProperties,
    ServiceTarget,
)
from pystol_worker.core.schedule_model import ScheduleSpec
from pystol_worker.jobs.authorization import PolicyRefused
from pystol_worker.jobs.validation import FieldProblem, JobInvalid

GROUP = "pystol.org"
VERSION = "v1alpha1"
ACTIONS = "pystolactions"
SCHEDULES = "pystolschedules"
CLUSTER_ACTIONS = "pystolclusteractions"     # node-level and cluster-wide: cluster admins
CLUSTER_SCHEDULES = "pystolclusterschedules"
API_VERSION = f"{GROUP}/{VERSION}"

PHASES = {JobStatus.QUEUED: "Pending", JobStatus.RUNNING: "Running",
          JobStatus.SUCCEEDED: "Succeeded", JobStatus.FAILED: "Failed",
          JobStatus.ABORTED: "Aborted", JobStatus.CANCELLED: "Cancelled",
          JobStatus.SKIPPED: "Skipped"}
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Aborted", "Cancelled", "Skipped"})
MAX_CHANGES_SHOWN = 20

# -- names --------------------------------------------------------------------------------------

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def to_camel(name: str) -> str:
    """`label_selector` -> `labelSelector` (names without `_` are left as they are)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def to_snake(name: str) -> str:
    """`labelSelector` -> `label_selector` (snake_case names are left as they are)."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def _field_table(model: type[BaseModel]) -> dict[str, str]:
    return {to_camel(name): name for name in model.model_fields}


JOB_FIELDS = _field_table(JobSpec)
TARGET_FIELDS = _field_table(Target)
PROBE_FIELDS = _field_table(HttpProbe)
#: Every model a custom resource's spec is made of, for camelCase field names in messages.
_SPEC_MODELS: tuple[type[BaseModel], ...] = (
    JobSpec, Target, HttpProbe, K8sProbe, PrometheusProbe, RunProperties, ErrorBudgetGuard,
    ServiceTarget, ObjectCheck, PodCount, FieldCheck, ExperimentSpec, ActionStep, ProbeStep,
    SerialStep, ParallelStep, WaitStep, SuspendStep, ReleaseStep, Hypothesis, ScheduleSpec)
_SNAKE_NAMES = sorted({name for model in _SPEC_MODELS for name in model.model_fields
                       if "_" in name}, key=len, reverse=True)
_SNAKE_IN_TEXT = re.compile(r"\b(" + "|".join(map(re.escape, _SNAKE_NAMES)) + r")\b")
# Segments pydantic adds to a location for union members and validators, not fields.
_TYPE_TAGS = frozenset({"int", "str", "float", "bool", "none", "list", "dict"})
# The `type` values of the probe and step unions, which pydantic puts in a location right
# after the list index of the member it validated.
_UNION_TAGS = frozenset({"http", "k8s", "prometheus", "action", "probe", "serial",
                         "parallel", "wait", "suspend", "release"})


def camel_message(message: str) -> str:
    """A validation message with the job model's snake_case field names in camelCase."""
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return _SNAKE_IN_TEXT.sub(lambda match: to_camel(match[1]), message)


def camel_path(loc: str | Sequence[str | int], where: str = "spec") -> str:
    """A job-model location (`target.namespaces[0]`, `params.grace_period_seconds`, or a
    pydantic loc tuple) as the custom resource's field path (`spec.target.namespaces[0]`)."""
    parts: list[str | int] = []
    if isinstance(loc, str):
        for segment in loc.split(".") if loc else ():
            name, _, rest = segment.partition("[")
            if name.isdigit():
                parts.append(int(name))
            elif name:
                parts.append(name)
            for index in re.findall(r"(\d+)\]", "[" + rest if rest else ""):
                parts.append(int(index))
    else:
        parts = list(loc)
    path = where
    previous: str | int | None = None
    for part in parts:
        after_index, previous = isinstance(previous, int), part
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or "(" in part or part in _TYPE_TAGS:
            continue
        elif after_index and part in _UNION_TAGS:
            continue  # pydantic names the union member it tried (`probes.0.http.url`)
        else:
            path += ("." if path else "") + to_camel(part)
    return path


# -- problems -----------------------------------------------------------------------------------


class CrInvalid(Exception):
    """A custom resource's spec cannot become a job; `problems` carry the CR's field paths."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.loc}: {p.msg}" for p in problems))
        self.problems = problems


def _pydantic_problems(error: ValidationError, locate: Callable[[Sequence[str | int]], str]
                       ) -> list[FieldProblem]:
    return [FieldProblem(locate(item["loc"]), camel_message(item["msg"]))
            for item in error.errors()]


# -- camelCase <-> JobSpec -------------------------------------------------------------------------


def _rename(data: Mapping[str, Any], table: Mapping[str, str], where: str,
            problems: list[FieldProblem]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in table:
            out[table[key]] = value
            continue
        if isinstance(key, str) and key in table.values() and to_camel(key) != key:
            hint = f"unknown field (fields are camelCase: {to_camel(key)})"
        else:
            hint = "unknown field; known: " + ", ".join(table)
        problems.append(FieldProblem(f"{where}.{key}", hint))
    return out


def _snake_params(params: Mapping[str, Any], where: str,
                  problems: list[FieldProblem]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = to_snake(key) if isinstance(key, str) else key
        if name in out:
            problems.append(FieldProblem(f"{where}.params.{key}", f"given twice (as {key} and "
                                         f"{to_camel(name)} or {name})"))
            continue
        out[name] = value
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation can hold (through Optional, unions,
    Annotated and lists): what its camelCase value is renamed by."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType, list, tuple):
        return [model for arg in get_args(annotation) for model in _models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _type_tag(model: type[BaseModel]) -> str | None:
    """A union member's `type` value (`http`, `k8s`, `serial`), from its Literal default."""
    tag = model.model_fields.get("type")
    return tag.default if tag is not None and isinstance(tag.default, str) else None


def _pick_model(value: Mapping[str, Any], models: list[type[BaseModel]]
                ) -> type[BaseModel] | None:
    """The union member a camelCase object is: by its `type` (the first member when it
    names none, as the models default: a probe without `type` is an http probe)."""
    if len(models) == 1:
        return models[0]
    tag = value.get("type")
    for model in models:
        if tag is None or _type_tag(model) == tag:
            return model
    return None  # an unknown type: left as it is, the model says what is wrong


def _from_camel(value: Any, models: list[type[BaseModel]], where: str,
                problems: list[FieldProblem]) -> Any:
    if isinstance(value, list):
        return [_from_camel(item, models, f"{where}[{index}]", problems)
                for index, item in enumerate(value)]
    if not isinstance(value, Mapping) or not models:
        return value
    model = _pick_model(value, models)
    if model is None:
        return dict(value)
    return _model_from_camel(value, model, where, problems)


def _model_from_camel(data: Mapping[str, Any], model: type[BaseModel], where: str,
                      problems: list[FieldProblem]) -> dict[str, Any]:
    """A camelCase object as the snake_case data `model` reads, recursively: nested
    models (a probe's `run`, a step's `job`, an experiment's steps of steps) by their own
    fields, an action's `params` with snake_case keys, anything else as it is."""
    out = _rename(data, _field_table(model), where, problems)
    for name, value in list(out.items()):
        path = f"{where}.{to_camel(name)}"
        if model is JobSpec and name == "params" and isinstance(value, Mapping):
            out[name] = _snake_params(value, where, problems)
            continue
        if name in UNMAPPED_FIELDS:
            continue
        out[name] = _from_camel(value, _models_in(model.model_fields[name].annotation), path,
                                problems)
    return out


#: Fields whose keys are the user's own, not the model's (kept as written).
UNMAPPED_FIELDS = frozenset({"source_document"})


def _job_data(spec: Any, where: str, problems: list[FieldProblem]) -> Any:
    """A camelCase job as the snake_case data the job model reads (problems appended)."""
    if not isinstance(spec, Mapping):
        return spec
    data = _model_from_camel(spec, JobSpec, where, problems)
    if "experiment" in data:
        problems.append(FieldProblem(f"{where}.experiment", "set by Pystol's experiment "
                                     "engine, never by a custom resource"))
        del data["experiment"]
    return data


def job_spec_from_cr(spec: Any, where: str = "spec") -> JobSpec:
    """The JobSpec a camelCase custom-resource spec describes; CrInvalid names its fields."""
    if not isinstance(spec, Mapping):
        raise CrInvalid([FieldProblem(where, "must be an object")])
    problems: list[FieldProblem] = []
    data = _job_data(spec, where, problems)
    try:
        job = JobSpec.model_validate(data)
    except ValidationError as error:
        problems += _pydantic_problems(error, lambda loc: camel_path(loc, where))
    except ArithmeticError as error:  # an integer too large for a float, in a duration
        problems.append(FieldProblem(where, f"a number is out of range ({error})"))
    if problems:
        raise CrInvalid(problems)
    return job


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def job_spec_to_cr(spec: JobSpec) -> dict[str, Any]:
    """The camelCase custom-resource form of a JobSpec (defaults left out)."""
    return _job_data_to_cr(spec.model_dump(mode="json", exclude_defaults=True))


def _job_data_to_cr(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name == "target":
            value = {to_camel(key): _whole(item) for key, item in value.items()}
        elif name == "params":
            value = {to_camel(key) if isinstance(key, str) else key: item
                     for key, item in value.items()}
        else:
            value = camel_data(value)
        out[to_camel(name)] = value
    return out


def camel_data(value: Any) -> Any:
    """Plain model data with every key in camelCase, recursively (a job's `params` keys
    too; `source_document`, the user's own document, as it is)."""
    if isinstance(value, list):
        return [camel_data(item) for item in value]
    if not isinstance(value, Mapping):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = to_camel(key) if isinstance(key, str) else key
        out[name] = item if key in UNMAPPED_FIELDS else camel_data(item)
    return out


# -- the original Pystol's PystolAction ----------------------------------------------------------

LEGACY_ROLES = {"killpods": "pod-kill", "drainnodes": "node-drain", "pingtest": "http-probe"}
LEGACY_COLLECTIONS = frozenset({"actions", "pystol.actions"})
LEGACY_FIELDS = frozenset({"namespace", "collection", "role", "source", "extra_vars",
                           "action_state", "workflow_state", "action_stdout", "action_stderr",
                           "executed"})
# Variables the original operator added itself, not the user's.
ANSIBLE_VARIABLES = frozenset({"ansible_python_interpreter", "pystol_action_id"})
# The original killpods spread `amount` kills over a 10-bin histogram, sleeping 10 s per bin.
KILLPODS_DEFAULT_DURATION = 100
# drainnodes' `duration` default in the original Ansible module's documentation.
DRAINNODES_DEFAULT_DURATION = 60
# pingtest ran `ping -c 2` against the first node's InternalIP.
PINGTEST_DEFAULT_COUNT = 2
KUBE_PROXY_HEALTHZ_PORT = 10256


def is_legacy(spec: Any) -> bool:
    return isinstance(spec, Mapping) and "action" not in spec and bool(
        {"role", "collection", "extra_vars"} & set(spec))


@dataclass
class MappedSpec:
    """A custom resource's job, and where each part of it came from in the object."""

    spec: JobSpec
    legacy_role: str | None = None
    origins: dict[str, str] = field(default_factory=dict)  # job path prefix -> CR path
    where: str = "spec"

    def cr_path(self, loc: str | Sequence[str | int]) -> str:
        """The CR's field path for a location in the job model."""
        if not self.origins:
            return camel_path(loc, self.where)
        return origin_path(self.origins, loc, f"{self.where}.extra_vars")

    def invalid(self, error: JobInvalid) -> CrInvalid:
        """validate_job's problems with this object's field paths."""
        return CrInvalid([FieldProblem(self.cr_path(p.loc), camel_message(p.msg))
                          for p in error.problems])


def origin_path(origins: Mapping[str, str], loc: str | Sequence[str | int], default: str) -> str:
    """The CR path recorded for the longest job-model path prefix of `loc`."""
    text = loc if isinstance(loc, str) else ".".join(str(part) for part in loc)
    best = ""
    for prefix in origins:
        if prefix and (text == prefix or text.startswith((prefix + ".", prefix + "["))) \
                and len(prefix) > len(best):
            best = prefix
    return origins.get(best, default)


class _Variables:
    """A legacy role's extra_vars: `pystol_<role>_<name>` (the original) or `<name>`."""

    def __init__(self, role: str, raw: Mapping[str, Any], where: str,
                 problems: list[FieldProblem]) -> None:
        self.role = role
        self.raw = dict(raw)
        self.where = where
        self.problems = problems
        self.used: set[str] = set()

    def get(self, name: str) -> tuple[Any, str | None]:
        long = f"pystol_{self.role}_{name}"
        present = [key for key in (long, name) if key in self.raw]
        self.used.update(present)
        if not present:
            return None, None
        if len(present) == 2:
            self.problems.append(FieldProblem(f"{self.where}.{name}", f"given twice, as {long} "
                                              f"and {name}; keep one"))
        key = present[0]
        return self.raw[key], f"{self.where}.{key}"

    def path(self, name: str) -> str:
        return f"{self.where}.pystol_{self.role}_{name}"

    def integer(self, name: str, minimum: int = 1) -> tuple[int | None, str | None]:
        value, where = self.get(name)
        if value is None or where is None:
            return None, None
        # Ansible passed every extra var through Jinja: "3" and 3 both meant three.
        if isinstance(value, str) and re.fullmatch(r"\s*\d{1,9}\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problems.append(FieldProblem(where, f"expected a whole number of at least "
                                              f"{minimum}, got {value!r}"))
            return None, where
        return value, where

    def leftovers(self) -> None:
        for key in self.raw:
            if key in self.used or key in ANSIBLE_VARIABLES or key.startswith("pystol_patch_"):
                continue
            self.problems.append(FieldProblem(f"{self.where}.{key}", f"unknown variable for role "
                                              f"{self.role}"))


def _extra_vars(spec: Mapping[str, Any], where: str,
                problems: list[FieldProblem]) -> Mapping[str, Any]:
    raw = spec.get("extra_vars")
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as error:  # RecursionError: "[[[[..." nests too deep
            problems.append(FieldProblem(f"{where}.extra_vars", f"not valid JSON ({error}); the "
                                         "original Pystol wrote a JSON object here, e.g. "
                                         "'{\"pystol_killpods_amount\": 1}'"))
            return {}
    if not isinstance(raw, Mapping):
        problems.append(FieldProblem(f"{where}.extra_vars", "expected a JSON object of "
                                     "variables"))
        return {}
    return raw


def _killpods(variables: _Variables) -> tuple[dict[str, Any], dict[str, str]]:
    namespace, ns_path = variables.get("namespace")
    amount, amount_path = variables.integer("amount")
    distribution, dist_path = variables.get("distribution")
    duration, duration_path = variables.get("duration")
    if namespace is None:
        variables.problems.append(FieldProblem(variables.path("namespace"), "required: the "
                                               "namespace whose pods are killed"))
    if amount is None and amount_path is None:
        variables.problems.append(FieldProblem(variables.path("amount"), "required: how many "
                                               "pods to kill"))
    if distribution is None:
        distribution = "poisson"
    elif distribution not in ("poisson", "uniform"):
        variables.problems.append(FieldProblem(dist_path or variables.path("distribution"),
                                               f"unsupported distribution {distribution!r}; "
                                               "use poisson or uniform"))
    job = {"action": "pod-kill",
           # The original chose among the Running pods of the namespace, at random.
           "target": {"namespaces": [namespace], "field_selector": "status.phase=Running",
                      "mode": "fixed", "value": amount},
           "params": {"distribution": distribution},
           "duration": KILLPODS_DEFAULT_DURATION if duration is None else duration}
    origins = {"target.namespaces": ns_path or variables.path("namespace"),
               "target.value": amount_path or variables.path("amount"),
               "target.mode": amount_path or variables.path("amount"),
               "params.distribution": dist_path or variables.path("distribution"),
               "duration": duration_path or variables.path("duration")}
    return job, origins


def _node_names(variables: _Variables) -> tuple[list[str], str | None]:
    names, where = variables.get("names")
    if names is None or where is None:
        return [], None
    if isinstance(names, str):  # the original module took `names` as a JSON list
        try:
            names = json.loads(names) if names.strip() else []
        except (ValueError, RecursionError):
            names = [part.strip() for part in names.split(",") if part.strip()]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        variables.problems.append(FieldProblem(where, "expected a list of node names"))
        return [], where
    return names, where


def _drainnodes(variables: _Variables) -> tuple[dict[str, Any], dict[str, str]]:
    names, names_path = _node_names(variables)
    amount, amount_path = variables.integer("amount")
    duration, duration_path = variables.get("duration")
    target: dict[str, Any]
    if names:  # "pystol_drainnodes_names has precedence over pystol_drainnodes_amount"
        target = {"names": names}
    elif amount is not None:
        target = {"amount": amount}
    else:
        target = {}
        if amount_path is None:
            variables.problems.append(FieldProblem(variables.path("amount"), "required unless "
                                                   "pystol_drainnodes_names lists the nodes: "
                                                   "how many nodes to drain, chosen at random"))
    job = {"action": "node-drain", "target": target,
           "duration": DRAINNODES_DEFAULT_DURATION if duration is None else duration}
    origins = {"target.names": names_path or variables.path("names"),
               "target.amount": amount_path or variables.path("amount"),
               "target.mode": amount_path or variables.path("amount"),
               "target.value": amount_path or variables.path("amount"),
               "duration": duration_path or variables.path("duration")}
    return job, origins


def kube_proxy_healthz(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{KUBE_PROXY_HEALTHZ_PORT}/healthz"


def _pingtest(variables: _Variables, node_address: Callable[[], str | None] | None
              ) -> tuple[dict[str, Any], dict[str, str]]:
    url, url_path = variables.get("url")
    count, count_path = variables.integer("count")
    if url is None:
        address = node_address() if node_address is not None else None
        if address:
            url = kube_proxy_healthz(address)
        else:
            variables.problems.append(FieldProblem(
                variables.path("url"), "the original pingtest pinged the first node's "
                "InternalIP; Pystol probes over HTTP and found no node address: set "
                "pystol_pingtest_url to the URL to call"))
    job = {"action": "http-probe", "target": {},
           "params": {"url": url, "count": PINGTEST_DEFAULT_COUNT if count is None else count}}
    origins = {"params.url": url_path or variables.path("url"),
               "params.count": count_path or variables.path("count")}
    return job, origins


def legacy_job_spec(spec: Mapping[str, Any], where: str = "spec",
                    node_address: Callable[[], str | None] | None = None) -> MappedSpec:
    """The job an original-Pystol PystolAction (collection/role/extra_vars) asks for.

    `node_address` gives the first node's InternalIP for a pingtest without a URL (the
    original pinged that address); it is only called when needed.
    """
    problems: list[FieldProblem] = []
    for key in spec:
        if key not in LEGACY_FIELDS:
            problems.append(FieldProblem(f"{where}.{key}", "unknown field in the original "
                                         "Pystol's shape (collection, role, extra_vars); do "
                                         "not mix it with the job fields"))
    collection = spec.get("collection")
    if collection not in (None, "", *LEGACY_COLLECTIONS):
        problems.append(FieldProblem(f"{where}.collection", f"collection {collection!r} is not "
                                     "built in; only the original pystol.actions collection "
                                     "('actions') is"))
    role = spec.get("role")
    if not isinstance(role, str) or role not in LEGACY_ROLES:  # a list or object: unhashable
        problems.append(FieldProblem(f"{where}.role", f"unknown role {role!r}; the original "
                                     "roles " + ", ".join(LEGACY_ROLES) + " are built in, for "
                                     "anything else give spec.action (see `pystol actions`)"))
        raise CrInvalid(problems)
    raw = _extra_vars(spec, where, problems)
    variables = _Variables(role, raw, f"{where}.extra_vars", problems)
    if role == "killpods":
        job, origins = _killpods(variables)
    elif role == "drainnodes":
        job, origins = _drainnodes(variables)
    else:
        job, origins = _pingtest(variables, node_address)
    variables.leftovers()
    origins[""] = f"{where}.extra_vars"
    origins["action"] = f"{where}.role"
    if problems:
        raise CrInvalid(problems)
    try:
        job_spec = JobSpec.model_validate(job)
    except ValidationError as error:
        raise CrInvalid(_pydantic_problems(
            error, lambda loc: origin_path(origins, loc, f"{where}.extra_vars"))) from None
    return MappedSpec(spec=job_spec, legacy_role=role, origins=origins, where=where)


def action_job_spec(spec: Any, where: str = "spec",
                    node_address: Callable[[], str | None] | None = None) -> MappedSpec:
    """The job a PystolAction's spec asks for, in either shape; CrInvalid otherwise."""
    if isinstance(spec, Mapping) and "action" in spec and {"role", "extra_vars"} & set(spec):
        raise CrInvalid([FieldProblem(where, "give either the job (action, target, ...) or the "
                                      "original Pystol's role and extra_vars, not both")])
    if is_legacy(spec):
        return legacy_job_spec(spec, where, node_address)
    return MappedSpec(spec=job_spec_from_cr(spec, where), where=where)


# -- status ---------------------------------------------------------------------------------------


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[:-3] + "Z"


def _describe_change(change: Any) -> str:
    target = change.target
    where = f"{target.namespace}/{target.name}" if target.namespace else target.name
    text = f"{change.action} {target.kind} {where}"
    if change.reverted_at is not None:
        text += ", reverted"
    if change.error:  # not its text: an exception's words are not Pystol's to publish
        text += ", revert failed"
    return text


def compact_result(record: JobRecord) -> dict[str, Any]:
    """The part of a job's result that fits in a status: counts, times, what changed.

    Only Pystol's own words and numbers: never a change's or a probe's `error` text, the
    job's `error` or anything an action read (exec output, response bodies). Whoever may
    read the object may read its status; the job record behind it keeps the details."""
    metrics = record.metrics
    result: dict[str, Any] = {"targetsSelected": metrics.targets_selected,
                              "targetsAffected": metrics.targets_affected}
    if metrics.recovery_seconds is not None:
        result["recoverySeconds"] = round(metrics.recovery_seconds, 3)
    if metrics.injected_at is not None:
        result["injectedAt"] = rfc3339(metrics.injected_at)
    if metrics.reverted_at is not None:
        result["revertedAt"] = rfc3339(metrics.reverted_at)
    changes = record.result.changes
    if changes:
        result["changes"] = [_describe_change(c) for c in changes[:MAX_CHANGES_SHOWN]]
        result["changesTotal"] = len(changes)
    if record.result.probes:
        result["probes"] = [f"{p.phase} {p.name or p.probe.describe}: "
                            + ("ok" if p.ok else "failed")
                            + (f" ({p.status})" if p.status is not None else "")
                            for p in record.result.probes]
    return result


def job_message(record: JobRecord) -> str:
    """The status message: the job's phase and Pystol's own `reason`, nothing else."""
    if record.status == JobStatus.QUEUED:
        return f"job {record.id} queued"
    if record.status == JobStatus.RUNNING:
        if record.cancel_requested:
            return f"job {record.id}: abort requested; reverting what it changed"
        return f"job {record.id} running on {record.worker or 'a worker'}"
    text = f"job {record.id} {record.status.value}"
    if record.reason:
        text += f": {record.reason}"
    return text


def _condition(kind: str, status: str, reason: str, message: str, generation: int | None,
               now: str) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": kind, "status": status, "reason": reason,
                                 "message": message[:32768], "lastTransitionTime": now}
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def merge_conditions(previous: Iterable[Mapping[str, Any]] | None,
                     current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a condition's lastTransitionTime while its status does not change."""
    before = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    for condition in current:
        old = before.get(condition["type"])
        if old is not None and old.get("status") == condition["status"] \
                and old.get("lastTransitionTime"):
            condition["lastTransitionTime"] = old["lastTransitionTime"]
    return current


def action_status(record: JobRecord, generation: int | None,
                  previous_conditions: Iterable[Mapping[str, Any]] | None = None,
                  now: datetime | None = None) -> dict[str, Any]:
    """A PystolAction's status for its job record."""
    stamp = rfc3339(now or datetime.now(UTC)) or ""
    phase = PHASES[record.status]
    message = job_message(record)
    status: dict[str, Any] = {"phase": phase, "action": record.spec.action,
                              "jobId": record.id, "message": message}
    if generation is not None:
        status["observedGeneration"] = generation
    if record.started_at is not None:
        status["startedAt"] = rfc3339(record.started_at)
    if record.finished_at is not None:
        status["finishedAt"] = rfc3339(record.finished_at)
    if record.status != JobStatus.QUEUED:
        status["result"] = compact_result(record)
    succeeded = record.status == JobStatus.SUCCEEDED
    ended = record.status.terminal
    conditions = [
        _condition("Accepted", "True", "JobQueued", f"job {record.id} queued",
                   generation, stamp),
        _condition("Ready", "True" if succeeded else "False", phase, message, generation,
                   stamp),
        _condition("Succeeded", "True" if succeeded else ("False" if ended else "Unknown"),
                   phase, message, generation, stamp),
    ]
    status["conditions"] = merge_conditions(previous_conditions, conditions)
    return status


def refused_status(reason: str, message: str, generation: int | None, action: str | None,
                   previous_conditions: Iterable[Mapping[str, Any]] | None = None,
                   now: datetime | None = None) -> dict[str, Any]:
    """Status of a PystolAction no job was queued for (invalid spec, chaos halted)."""
    stamp = rfc3339(now or datetime.now(UTC)) or ""
    status: dict[str, Any] = {"phase": "Failed", "message": message, "jobId": None,
                              "startedAt": None, "finishedAt": stamp}
    if action:
        status["action"] = action
    if generation is not None:
        status["observedGeneration"] = generation
    conditions = [_condition(kind, "False", reason, message, generation, stamp)
                  for kind in ("Accepted", "Ready", "Succeeded")]
    status["conditions"] = merge_conditions(previous_conditions, conditions)
    return status


# A problem's path and message echo the spec (an unknown key, a value's repr): each is cut
# to these lengths, so that a status message stays readable and small whatever the spec.
MAX_PATH_SHOWN = 120
MAX_PROBLEM_SHOWN = 240


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def problems_message(error: CrInvalid, limit: int = 20, prefix: str = "invalid spec") -> str:
    """At most `limit` problems, each `path: message` cut short (at most ~8 KiB in all: a
    status message is stored with the object and shown by `kubectl describe`)."""
    lines = [f"{_clip(p.loc, MAX_PATH_SHOWN)}: {_clip(p.msg, MAX_PROBLEM_SHOWN)}"
             for p in error.problems[:limit]]
    if len(error.problems) > limit:
        lines.append(f"... and {len(error.problems) - limit} more")
    return f"{prefix}: " + "; ".join(lines)


def denied_message(error: AccessDenied, cr_path: Callable[[str], str],
                   hint: str | None = None) -> str:
    """`forbidden: spec.target.namespaces[0]: team-a/x may not run chaos in namespace
    'payments'`: the scope check's refusal at the object's own field."""
    where = f"{cr_path(error.loc)}: " if error.loc else ""
    return f"forbidden: {where}{error.detail}" + (f"; {hint}" if hint else "")


def policy_message(error: PolicyRefused, cr_path: Callable[[str], str]) -> str:
    """The admin policy's refusals at the object's own fields (`policy.*` as they are)."""
    return problems_message(CrInvalid([
        FieldProblem(p.loc if p.loc.startswith("policy.") else cr_path(p.loc), p.msg)
        for p in error.problems]), prefix="refused by the admin policy")


FOREIGN_JOB_CONDITION = "JobIdTrusted"


def foreign_job_condition(job_id: str, where: str, generation: int | None,
                          now: datetime | None = None) -> dict[str, Any]:
    """The condition saying that `status.jobId` named a job this object did not create."""
    stamp = rfc3339(now or datetime.now(UTC)) or ""
    return _condition(FOREIGN_JOB_CONDITION, "False", "ForeignJobId",
                      f"status.jobId named job {job_id}, which {where} did not create (the "
                      "status was written by someone else): the watcher ignores it, neither "
                      "following, copying nor aborting that job", generation, stamp)


# -- PystolSchedule ------------------------------------------------------------------------------

# CR field -> ScheduleSpec field; Kubernetes CronJob's names where it has one.
SCHEDULE_FIELDS = {"schedule": "cron", "interval": "interval", "mtbf": "mtbf",
                   "timeZone": "time_zone", "suspend": "paused",
                   "concurrencyPolicy": "concurrency_policy",
                   "startingDeadlineSeconds": "starting_deadline_seconds",
                   "historyLimit": "history_limit", "windows": "windows",
                   "excludedDates": "excluded_dates", "template": "template",
                   "experimentRef": "experiment"}
SCHEDULE_CR_NAMES = {snake: camel for camel, snake in SCHEDULE_FIELDS.items()}
SCHEDULE_PHASES = ("Active", "Suspended", "Failed")
MAX_RUNS_SHOWN = 10


def schedule_cr_path(loc: str | Sequence[str | int], where: str = "spec") -> str:
    """A ScheduleSpec location (`template.target.namespaces[0]`, `cron`, ('paused',)) as
    the PystolSchedule's field path (`spec.template.target.namespaces[0]`, ...)."""
    text = loc if isinstance(loc, str) else ".".join(str(part) for part in loc)
    head, dot, rest = text.partition(".")
    name, bracket, index = head.partition("[")
    top = SCHEDULE_CR_NAMES.get(name, to_camel(name)) if name else ""
    prefix = f"{where}.{top}" if top else where
    if bracket:
        prefix += "[" + index
    if not dot:
        return prefix
    return camel_path(rest, prefix)


def schedule_message(message: str) -> str:
    return camel_message(message).replace("one of cron, interval or mtbf",
                                          "one of schedule, interval or mtbf")


def schedule_spec_from_cr(spec: Any, where: str = "spec") -> Any:
    """The ScheduleSpec a PystolSchedule's spec describes; CrInvalid names its fields."""
    if not isinstance(spec, Mapping):
        raise CrInvalid([FieldProblem(where, "must be an object")])
    problems: list[FieldProblem] = []
    data = _rename(spec, SCHEDULE_FIELDS, where, problems)
    if "template" in data:
        data["template"] = _job_data(data["template"], f"{where}.template", problems)
    try:
        schedule = ScheduleSpec.model_validate(data)
    except ValidationError as error:
        problems += [FieldProblem(schedule_cr_path(item["loc"], where),
                                  schedule_message(item["msg"])) for item in error.errors()]
    except ArithmeticError as error:
        problems.append(FieldProblem(where, f"a number is out of range ({error})"))
    if problems:
        raise CrInvalid(problems)
    return schedule


def schedule_spec_to_cr(spec: Any) -> dict[str, Any]:
    """The PystolSchedule spec of a ScheduleSpec (defaults left out)."""
    data = spec.model_dump(mode="json", exclude_defaults=True)
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name == "template":
            value = _job_data_to_cr(value)
        elif name == "starting_deadline_seconds":
            value = _whole(value)
        out[SCHEDULE_CR_NAMES[name]] = value
    return out


def schedule_invalid(error: JobInvalid, where: str = "spec") -> CrInvalid:
    """validate_schedule's problems with the PystolSchedule's field paths."""
    return CrInvalid([FieldProblem(schedule_cr_path(p.loc, where), schedule_message(p.msg))
                      for p in error.problems])


def _run_entry(run: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"slotAt": rfc3339(run.slot_at), "outcome": run.outcome.value}
    if run.job_id:
        entry["jobId"] = run.job_id
    if run.job_status is not None:
        entry["jobPhase"] = PHASES[run.job_status]
    if run.skipped is not None:
        entry["skipped"] = run.skipped.value
    if run.reason:
        entry["reason"] = run.reason[:300]
    if run.count > 1:
        entry["count"] = run.count
    return entry


def schedule_status(record: Any, generation: int | None,
                    previous_conditions: Iterable[Mapping[str, Any]] | None = None,
                    now: datetime | None = None) -> dict[str, Any]:
    """A PystolSchedule's status for its schedule record: next run, recent runs."""
    stamp = rfc3339(now or datetime.now(UTC)) or ""
    paused = record.spec.paused
    phase = "Suspended" if paused else "Active"
    message = record.spec.describe() + ("; suspended" if paused else "")
    started = [run for run in record.last_runs if run.job_id]
    status: dict[str, Any] = {
        "phase": phase, "scheduleId": record.id, "message": message,
        "nextRunAt": rfc3339(record.next_run_at),
        "lastRunAt": rfc3339(started[0].fired_at or started[0].slot_at) if started else None,
        "lastJobId": started[0].job_id if started else None,
        "recentRuns": [_run_entry(run) for run in record.last_runs[:MAX_RUNS_SHOWN]]}
    if generation is not None:
        status["observedGeneration"] = generation
    status["conditions"] = merge_conditions(previous_conditions, [
        _condition("Ready", "True", "Suspended" if paused else "Scheduled", message,
                   generation, stamp)])
    return status


def schedule_refused_status(message: str, generation: int | None,
                            previous_conditions: Iterable[Mapping[str, Any]] | None = None,
                            now: datetime | None = None, reason: str = "InvalidSpec"
                            ) -> dict[str, Any]:
    stamp = rfc3339(now or datetime.now(UTC)) or ""
    status: dict[str, Any] = {"phase": "Failed", "message": message, "scheduleId": None,
                              "nextRunAt": None}
    if generation is not None:
        status["observedGeneration"] = generation
    status["conditions"] = merge_conditions(previous_conditions, [
        _condition("Ready", "False", reason, message, generation, stamp)])
    return status
