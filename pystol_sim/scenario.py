"""Scenario files: the YAML that says what a simulated cluster starts with.

`pystol-sim --scenario FILE` builds its cluster from a file like
`pystol_sim/scenarios/demo.yaml`: nodes, namespaces, workloads, services and
disruption budgets, and the users the API server accepts tokens for. Without
`--scenario` the packaged demo is used, so a newcomer gets a living cluster with one
command.

Why the models are this strict: people write these files by hand, and a typo
(`replica: 3`) that is silently ignored costs an afternoon. Every model forbids
unknown fields, and every problem is reported at once as a `ScenarioError`
naming the file, the path of the bad field (`deployments[2].replicas`), its
line, what was expected and what was given. Nothing here ends in a traceback.

Why generators: benchmarks need 1,000 nodes and 100,000 pods. A node group or a
workload may give `name_prefix` + `count` instead of `name` to stand for many,
and `scenario_manifests` only expands the objects that the API server stores
up front (namespaces, nodes, workloads, services, budgets). Workload pods are
never built here: the simulated cluster's controllers create them.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import re
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

KUBELET_VERSION = "v1.35.0-pystol-sim"
ANNOTATION_PREFIX = "sim.pystol.org/"
START_ANNOTATION = f"{ANNOTATION_PREFIX}start-seconds"
READY_ANNOTATION = f"{ANNOTATION_PREFIX}ready-seconds"
TERMINATE_ANNOTATION = f"{ANNOTATION_PREFIX}terminate-seconds"
BUILTIN_NAMESPACES: tuple[str, ...] = ("default", "kube-system", "kube-public", "kube-node-lease")
DEFAULT_IMAGE = "registry.k8s.io/pause:3.9"
MAX_NODES = 256 * 254  # every node gets a unique InternalIP 10.0.x.y, y in 1..254
MAX_LISTED_PROBLEMS = 50
DEMO_FILE = "pystol_sim/scenarios/demo.yaml"


# --------------------------------------------------------------------------- errors


class Problem(NamedTuple):
    """One thing wrong with a scenario: where (`deployments[2].replicas`) and what."""

    path: str
    message: str
    line: int | None = None  # 1-based line in the file, when known


class ScenarioError(Exception):
    """A scenario file that cannot be used; `str()` is a message for humans.

    ```
    my.yaml: invalid scenario
      deployments[2].replicas: Input should be greater than or equal to 0 (got -1) [line 14]
    ```
    """

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(file, problems)  # args that pickle and copy round-trip

    def _render(self) -> str:
        lines = [f"{self.file}: invalid scenario"]
        for problem in self.problems[:MAX_LISTED_PROBLEMS]:
            where = f"{problem.path}: " if problem.path else ""
            at = f" [line {problem.line}]" if problem.line is not None else ""
            lines.append(f"  {where}{problem.message}{at}")
        hidden = len(self.problems) - MAX_LISTED_PROBLEMS
        if hidden > 0:
            lines.append(f"  ... and {hidden} more problem{'s' if hidden > 1 else ''}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()


def _fail(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("scenario", "{message}", {"message": message})


# --------------------------------------------------------------------------- field types

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_RE = re.compile(rf"^{_DNS_LABEL}$")
_DNS_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_DNS_1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_QUANTITY_RE = re.compile(
    r"^(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
_PERCENT_RE = re.compile(r"^(\d+)%$")


@dataclass(frozen=True)
class _NameRule:
    regex: re.Pattern[str]
    max_length: int
    description: str

    def problem(self, name: str) -> str | None:
        if not name:
            return "must not be empty"
        if len(name) > self.max_length:
            return f"{name!r} is longer than {self.max_length} characters"
        if not self.regex.match(name):
            return f"{name!r} is not {self.description}"
        return None


DNS_LABEL = _NameRule(
    _DNS_LABEL_RE, 63,
    "a valid DNS-1123 label (lower-case letters, digits and '-', "
    "starting and ending with a letter or digit)",
)
DNS_SUBDOMAIN = _NameRule(
    _DNS_SUBDOMAIN_RE, 253,
    "a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
    "starting and ending with a letter or digit)",
)
NODE_NAME = _NameRule(_DNS_SUBDOMAIN_RE, 63, DNS_SUBDOMAIN.description)
DNS_1035 = _NameRule(
    _DNS_1035_RE, 63,
    "a valid DNS-1035 label (lower-case letters, digits and '-', "
    "starting with a letter and ending with a letter or digit)",
)


def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return f"label key {key!r}: the prefix before '/' must be a DNS-1123 subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        return (f"label key {key!r}: the name must be 1-63 characters of letters, digits, "
                "'-', '_' and '.', starting and ending with a letter or digit")
    return None


def _label_value_problem(key: str, value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME_RE.match(value)):
        return (f"label {key!r}: value {value!r} must be at most 63 characters of letters, "
                "digits, '-', '_' and '.', starting and ending with a letter or digit")
    return None


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        problem = _label_key_problem(key) or _label_value_problem(key, value)
        if problem:
            raise _fail(problem)
    return labels


def _check_dns_label(name: str) -> str:
    problem = DNS_LABEL.problem(name)
    if problem:
        raise _fail(problem)
    return name


def _to_quantity(value: Any) -> Any:
    """YAML reads `cpu: 4` as an int; a quantity is a string, so accept numbers too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return format(value, "g") if isinstance(value, float) else str(value)
    return value


def _check_quantity(value: str) -> str:
    if not _QUANTITY_RE.match(value):
        hint = ""
        bytes_unit = re.match(r"^(\d+(?:\.\d+)?)([KMGTPE])B$", value, re.IGNORECASE)
        if bytes_unit:
            number, unit = bytes_unit.group(1), bytes_unit.group(2).upper()
            hint = f"; write {number}{unit}i (binary) or {number}{unit.replace('K', 'k')}"
        raise _fail(f"{value!r} is not a Kubernetes quantity (like 500m, 2, 1.5, 512Mi, 16Gi)"
                    f"{hint}")
    return value


def _int_or_percent(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise _fail(f"must be 0 or more (got {value})")
        return value
    if isinstance(value, str):
        match = _PERCENT_RE.match(value)
        if match and int(match.group(1)) <= 100:
            return value
    raise _fail(f"expected a whole number of pods or a percentage like '50%' (got {value!r})")


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
Quantity = Annotated[str, BeforeValidator(_to_quantity), AfterValidator(_check_quantity)]
IntOrPercent = Annotated[int | str, PlainValidator(_int_or_percent)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=1, le=65535)]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- models


class Timings(_Model):
    """How long the simulated kubelet takes for every pod, unless a workload overrides it."""

    model_config = ConfigDict(extra="forbid")

    schedule_seconds: Seconds = 0.0  # created -> bound to a node
    start_seconds: Seconds = 1.0  # Pending -> Running
    ready_seconds: Seconds = 1.0  # Running -> Ready
    terminate_seconds: Seconds = 1.0  # Terminating -> gone, capped by the grace period


class TimingsOverride(_Model):
    """A workload's or pod's own timings; unset fields fall back to the scenario's."""

    model_config = ConfigDict(extra="forbid")

    start_seconds: Seconds | None = None
    ready_seconds: Seconds | None = None
    terminate_seconds: Seconds | None = None

    def annotations(self) -> dict[str, str]:
        """The `sim.pystol.org/*-seconds` annotations the simulated kubelet reads."""
        pairs = ((START_ANNOTATION, self.start_seconds), (READY_ANNOTATION, self.ready_seconds),
                 (TERMINATE_ANNOTATION, self.terminate_seconds))
        return {key: _seconds_text(value) for key, value in pairs if value is not None}


def _seconds_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


class Capacity(_Model):
    model_config = ConfigDict(extra="forbid")

    cpu: Quantity = "4"
    memory: Quantity = "16Gi"
    pods: int = Field(default=110, ge=0)


class Taint(_Model):
    model_config = ConfigDict(extra="forbid")

    key: str
    value: str = ""
    effect: TaintEffect

    @model_validator(mode="after")
    def _valid(self) -> Taint:
        problem = _label_key_problem(self.key) or _label_value_problem(self.key, self.value)
        if problem:
            raise _fail(problem.replace("label", "taint", 1))
        return self


class Toleration(_Model):
    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: TaintEffect | None = None

    @model_validator(mode="after")
    def _valid(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise _fail("a toleration with operator 'Exists' takes no 'value'")
        if not self.key and self.operator != "Exists":
            raise _fail("a toleration without 'key' needs operator 'Exists' (tolerates all)")
        return self

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        if self.key:
            out["key"] = self.key
        if self.value is not None and self.operator == "Equal":
            out["value"] = self.value
        if self.effect:
            out["effect"] = self.effect
        return out


class _Generated(_Model):
    """Either one object (`name`) or `count` of them named `<name_prefix>-0`, `-1`, ..."""

    NAME_RULE: ClassVar[_NameRule] = DNS_LABEL

    name: str | None = None
    name_prefix: str | None = None
    count: int | None = Field(default=None, ge=1)

    @field_validator("name", "name_prefix")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None:
            problem = cls.NAME_RULE.problem(value)
            if problem:
                raise _fail(problem)
        return value

    @model_validator(mode="after")
    def _one_naming(self) -> _Generated:
        if self.name is not None and (self.name_prefix is not None or self.count is not None):
            raise _fail("give either 'name' (one object) or 'name_prefix' + 'count' "
                        "(several), not both")
        if self.name is None:
            if self.name_prefix is None and self.count is None:
                raise _fail("missing 'name' (or 'name_prefix' + 'count' to generate several)")
            if self.name_prefix is None:
                raise _fail("'count' needs 'name_prefix' (names are <name_prefix>-0, -1, ...)")
            if self.count is None:
                raise _fail("'name_prefix' needs 'count' (how many to generate)")
            longest = f"{self.name_prefix}-{self.count - 1}"
            if len(longest) > self.NAME_RULE.max_length:
                raise _fail(f"generated name {longest!r} is longer than "
                            f"{self.NAME_RULE.max_length} characters")
        return self

    @property
    def generated(self) -> bool:
        return self.name is None

    def names(self) -> list[str]:
        """The names this entry stands for, in order."""
        if self.name is not None:
            return [self.name]
        return [f"{self.name_prefix}-{i}" for i in range(self.count or 0)]

    def iter_names(self) -> Iterator[str]:
        if self.name is not None:
            yield self.name
        else:
            for i in range(self.count or 0):
                yield f"{self.name_prefix}-{i}"


class NodeGroup(_Generated):
    """One node, or `count` identical nodes named `<name_prefix>-0` .. `-<count-1>`."""

    model_config = ConfigDict(extra="forbid")
    NAME_RULE: ClassVar[_NameRule] = NODE_NAME

    count: int | None = Field(default=None, ge=1, le=MAX_NODES)
    labels: Labels = Field(default_factory=dict)
    roles: list[str] = Field(default_factory=list)
    capacity: Capacity = Field(default_factory=Capacity)
    ready: bool = True
    unschedulable: bool = False
    taints: list[Taint] = Field(default_factory=list)

    @field_validator("roles")
    @classmethod
    def _valid_roles(cls, roles: list[str]) -> list[str]:
        for role in roles:
            if _label_key_problem(f"node-role.kubernetes.io/{role}"):
                raise _fail(f"role {role!r} must be 1-63 characters of letters, digits, '-', '_' "
                            "and '.' (it becomes the label node-role.kubernetes.io/<role>)")
        return roles


class Namespace(_Model):
    """A namespace; in a scenario file a plain string is short for `{name: ...}`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_check_dns_label)]
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if not isinstance(data, dict | Namespace):
            raise _fail(f"expected a namespace name or a mapping with 'name' and 'labels' "
                        f"(got {_shown(data)})")
        return data


class ResourceList(_Model):
    model_config = ConfigDict(extra="forbid")

    cpu: Quantity | None = None
    memory: Quantity | None = None

    def manifest(self) -> dict[str, str]:
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


class Resources(_Model):
    model_config = ConfigDict(extra="forbid")

    requests: ResourceList | None = None
    limits: ResourceList | None = None

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.requests is not None:
            out["requests"] = self.requests.manifest()
        if self.limits is not None:
            out["limits"] = self.limits.manifest()
        return out


class Container(_Model):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_check_dns_label)]
    image: str = Field(min_length=1)
    ports: list[Port] = Field(default_factory=list)
    resources: Resources | None = None

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "image": self.image}
        if self.ports:
            out["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in self.ports]
        if self.resources is not None:
            out["resources"] = self.resources.manifest()
        return out


def _default_containers() -> list[Container]:
    return [Container(name="app", image=DEFAULT_IMAGE)]


def _unique_containers(containers: list[Container]) -> list[Container]:
    seen: set[str] = set()
    for container in containers:
        if container.name in seen:
            raise _fail(f"two containers are named {container.name!r}")
        seen.add(container.name)
    return containers


Containers = Annotated[list[Container], Field(min_length=1), AfterValidator(_unique_containers)]


class _PodTemplate(_Generated):
    """What workloads and standalone pods share: where and what they run."""

    namespace: str = "default"
    containers: Containers = Field(default_factory=_default_containers)
    timings: TimingsOverride | None = None
    node_selector: Labels = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)

    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"containers": [c.manifest() for c in self.containers]}
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            spec["tolerations"] = [t.manifest() for t in self.tolerations]
        return spec

    def timing_annotations(self) -> dict[str, str]:
        return self.timings.annotations() if self.timings is not None else {}


class _Workload(_PodTemplate):
    """A controller-managed set of pods. Its labels are its pods' labels and its selector."""

    KIND: ClassVar[str] = ""
    labels: Labels | None = None

    @field_validator("labels")
    @classmethod
    def _selector_not_empty(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        if labels is not None and not labels:
            raise _fail("a workload needs at least one label: its labels are its selector "
                        "(leave 'labels' out for the default {app: <name>})")
        return labels

    def labels_for(self, name: str) -> dict[str, str]:
        """The pod labels (= selector) of the member called `name`.

        Default `{app: <name>}`. A generated group with explicit labels also gets
        `app: <name>` (unless it sets `app`), so each member selects only its own pods.
        """
        if self.labels is None:
            return {"app": name}
        if self.generated and "app" not in self.labels:
            return {**self.labels, "app": name}
        return dict(self.labels)

    def manifest(self, name: str) -> dict[str, Any]:
        labels = self.labels_for(name)
        template_meta: dict[str, Any] = {"labels": dict(labels)}
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": dict(labels)}
        annotations = self.timing_annotations()
        if annotations:
            template_meta["annotations"] = dict(annotations)
            meta["annotations"] = dict(annotations)
        spec: dict[str, Any] = {}
        self._extra_spec(spec, name)
        spec["selector"] = {"matchLabels": dict(labels)}
        spec["template"] = {"metadata": template_meta, "spec": self.pod_spec()}
        return {"apiVersion": "apps/v1", "kind": self.KIND, "metadata": meta, "spec": spec}

    def _extra_spec(self, spec: dict[str, Any], name: str) -> None:
        """Kind-specific fields, placed before selector and template."""


class Deployment(_Workload):
    model_config = ConfigDict(extra="forbid")
    KIND: ClassVar[str] = "Deployment"

    replicas: int = Field(default=1, ge=0)

    def _extra_spec(self, spec: dict[str, Any], name: str) -> None:
        spec["replicas"] = self.replicas


class StatefulSet(_Workload):
    model_config = ConfigDict(extra="forbid")
    KIND: ClassVar[str] = "StatefulSet"

    replicas: int = Field(default=1, ge=0)

    def _extra_spec(self, spec: dict[str, Any], name: str) -> None:
        spec["replicas"] = self.replicas
        spec["serviceName"] = name


class DaemonSet(_Workload):
    """One pod per matching node, so no `replicas`."""

    model_config = ConfigDict(extra="forbid")
    KIND: ClassVar[str] = "DaemonSet"


class Pod(_PodTemplate):
    """A standalone pod, created as is (no controller)."""

    model_config = ConfigDict(extra="forbid")
    NAME_RULE: ClassVar[_NameRule] = DNS_SUBDOMAIN

    labels: Labels = Field(default_factory=dict)
    node_name: str | None = None

    def manifest(self, name: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace,
                                "labels": dict(self.labels)}
        annotations = self.timing_annotations()
        if annotations:
            meta["annotations"] = annotations
        spec = self.pod_spec()
        if self.node_name is not None:
            spec["nodeName"] = self.node_name
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


class ServicePort(_Model):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_check_dns_label)] | None = None
    port: Port
    target_port: Port | None = None  # default: same as port
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    node_port: int | None = Field(default=None, ge=30000, le=32767)


Milliseconds = Annotated[float, Field(ge=0, le=30_000, allow_inf_nan=False)]


class Traffic(_Model):
    """How the Service's simulated backends answer through the API server's proxy.

    Written as the Service's `sim.pystol.org/*` annotations (service_traffic.py reads
    them), so a Service created through the API can carry the same profile."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: Milliseconds | None = None  # base latency of an answer (default 5)
    jitter_ms: Milliseconds | None = None  # plus uniform random 0..jitter (default 0)
    error_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    slowdown: Literal["proportional", "none"] | None = None  # latency x desired/ready
    max_latency_ms: Milliseconds | None = None  # cap on one answer (default 5000)
    dial_timeout_ms: Milliseconds | None = None  # unreachable backend fails after (1000)

    def annotations(self) -> dict[str, str]:
        values = self.model_dump(exclude_none=True)
        return {f"{ANNOTATION_PREFIX}{key.replace('_', '-')}":
                value if isinstance(value, str) else format(value, "g")
                for key, value in values.items()}


class Service(_Model):
    model_config = ConfigDict(extra="forbid")

    name: str
    namespace: str = "default"
    selector: Labels
    ports: list[ServicePort] = Field(min_length=1)
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    headless: bool = False  # clusterIP: None, as a StatefulSet's governing service
    traffic: Traffic | None = None  # answers through services/NAME/proxy

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        problem = DNS_1035.problem(name)
        if problem:
            raise _fail(problem)
        return name

    @model_validator(mode="after")
    def _valid(self) -> Service:
        if self.headless and self.type != "ClusterIP":
            raise _fail("a headless service must have type ClusterIP")
        seen: set[tuple[int, str]] = set()
        names: set[str] = set()
        for port in self.ports:
            if (port.port, port.protocol) in seen:
                raise _fail(f"port {port.port}/{port.protocol} is listed twice")
            seen.add((port.port, port.protocol))
            if port.name is not None:
                if port.name in names:
                    raise _fail(f"two ports are named {port.name!r}")
                names.add(port.name)
            if port.node_port is not None and self.type == "ClusterIP":
                raise _fail("'node_port' needs type NodePort or LoadBalancer")
        return self

    def manifest(self) -> dict[str, Any]:
        ports: list[dict[str, Any]] = []
        for port in self.ports:
            entry: dict[str, Any] = {}
            name = port.name
            if name is None and len(self.ports) > 1:  # the API requires names then
                name = f"{port.protocol.lower()}-{port.port}"
            if name is not None:
                entry["name"] = name
            entry.update(port=port.port, targetPort=port.target_port or port.port,
                         protocol=port.protocol)
            if port.node_port is not None:
                entry["nodePort"] = port.node_port
            ports.append(entry)
        spec: dict[str, Any] = {"type": self.type, "selector": dict(self.selector),
                                "ports": ports}
        if self.headless:
            spec["clusterIP"] = "None"
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.traffic is not None and self.traffic.annotations():
            metadata["annotations"] = self.traffic.annotations()
        return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


class PodDisruptionBudget(_Model):
    model_config = ConfigDict(extra="forbid")

    name: str
    namespace: str = "default"
    selector: Labels
    min_available: IntOrPercent | None = None
    max_unavailable: IntOrPercent | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        problem = DNS_SUBDOMAIN.problem(name)
        if problem:
            raise _fail(problem)
        return name

    @model_validator(mode="after")
    def _exactly_one(self) -> PodDisruptionBudget:
        if self.min_available is not None and self.max_unavailable is not None:
            raise _fail("give exactly one of 'min_available' and 'max_unavailable', not both")
        if self.min_available is None and self.max_unavailable is None:
            raise _fail("give one of 'min_available' or 'max_unavailable'")
        return self

    def manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"selector": {"matchLabels": dict(self.selector)}}
        if self.min_available is not None:
            spec["minAvailable"] = self.min_available
        else:
            spec["maxUnavailable"] = self.max_unavailable
        return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}


_TOKEN_RE = re.compile(r"^[!-~]+$")  # printable ASCII, no spaces: it travels in a header


class User(_Model):
    """A user the API server accepts a fixed bearer token for (a static token file's line).

    Every user is also in `system:authenticated`; what it may do is up to RBAC (bind it
    with a RoleBinding or ClusterRoleBinding; the group `system:masters` may do anything).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    token: str = Field(min_length=1)
    groups: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not name.strip() or name != name.strip():
            raise _fail("a user name must be non-empty, without leading or trailing spaces")
        return name

    @field_validator("token")
    @classmethod
    def _valid_token(cls, token: str) -> str:
        if not _TOKEN_RE.match(token):
            raise _fail("a token must be printable ASCII without spaces")
        return token

    @field_validator("groups")
    @classmethod
    def _valid_groups(cls, groups: list[str]) -> list[str]:
        for group in groups:
            if not group.strip() or group != group.strip():
                raise _fail(f"group {group!r} must be non-empty, without leading or trailing "
                            "spaces")
        return groups


class Scenario(_Model):
    """A whole simulated cluster. Validating one also checks cross-references.

    Cross-field problems (duplicate names, unknown namespaces, ...) raise
    `ScenarioError` directly, with file `<scenario>`; `load_scenario` puts the
    real file name in.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "scenario"
    timings: Timings = Field(default_factory=Timings)
    nodes: list[NodeGroup] = Field(min_length=1)
    namespaces: list[Namespace] = Field(default_factory=list)
    deployments: list[Deployment] = Field(default_factory=list)
    statefulsets: list[StatefulSet] = Field(default_factory=list)
    daemonsets: list[DaemonSet] = Field(default_factory=list)
    pods: list[Pod] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    pod_disruption_budgets: list[PodDisruptionBudget] = Field(default_factory=list)
    users: list[User] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_check(self) -> Scenario:
        problems = _cross_problems(self)
        if problems:
            raise ScenarioError("<scenario>", problems)
        declared = {ns.name for ns in self.namespaces}
        missing = [Namespace(name=n) for n in BUILTIN_NAMESPACES if n not in declared]
        if missing:
            self.namespaces = missing + self.namespaces
        return self

    def node_count(self) -> int:
        return sum(1 if g.name is not None else (g.count or 0) for g in self.nodes)

    def workloads(self) -> Iterator[tuple[str, int, _Workload]]:
        """(field, index, workload) for every deployment, statefulset and daemonset entry."""
        for field in ("deployments", "statefulsets", "daemonsets"):
            for index, workload in enumerate(getattr(self, field)):
                yield field, index, workload


# --------------------------------------------------------------------------- cross checks


def _cross_problems(scenario: Scenario) -> list[Problem]:
    problems: list[Problem] = []
    namespaces: set[str] = set(BUILTIN_NAMESPACES)
    declared: dict[str, int] = {}
    for i, ns in enumerate(scenario.namespaces):
        if ns.name in declared:
            problems.append(Problem(f"namespaces[{i}]", f"namespace {ns.name!r} is declared "
                                    f"twice (also namespaces[{declared[ns.name]}])"))
        else:
            declared[ns.name] = i
        namespaces.add(ns.name)
    known = ", ".join(sorted(namespaces))

    def check_namespace(path: str, namespace: str) -> None:
        if namespace not in namespaces:
            problems.append(Problem(f"{path}.namespace", f"namespace {namespace!r} is not "
                                    f"declared; add it under 'namespaces:' or use one of: {known}"))

    # Nodes: unique names, and few enough for one InternalIP each.
    node_owner: dict[str, int] = {}
    for i, group in enumerate(scenario.nodes):
        field = "name" if group.name is not None else "name_prefix"
        for name in group.iter_names():
            first = node_owner.setdefault(name, i)
            if first != i:
                problems.append(Problem(f"nodes[{i}].{field}", f"node {name!r} is already "
                                        f"declared by nodes[{first}]"))
                break
    if scenario.node_count() > MAX_NODES:
        problems.append(Problem("nodes", f"{scenario.node_count()} nodes is more than the "
                                f"{MAX_NODES} the simulator can address"))

    # Namespaced objects: known namespace, unique (kind, namespace, name).
    def check_names(field: str, entries: list[Any], kind: str) -> None:
        owner: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(entries):
            path = f"{field}[{i}]"
            check_namespace(path, entry.namespace)
            generated = isinstance(entry, _Generated) and entry.generated
            names = entry.iter_names() if isinstance(entry, _Generated) else [entry.name]
            for name in names:
                first = owner.setdefault((entry.namespace, name), i)
                if first != i:
                    what = f"generates {name!r}, which is" if generated else f"{name!r} is"
                    problems.append(Problem(
                        f"{path}.{'name_prefix' if generated else 'name'}",
                        f"{what} already a {kind} in namespace {entry.namespace!r} "
                        f"({field}[{first}])"))
                    break

    check_names("deployments", scenario.deployments, "Deployment")
    check_names("statefulsets", scenario.statefulsets, "StatefulSet")
    check_names("daemonsets", scenario.daemonsets, "DaemonSet")
    check_names("pods", scenario.pods, "Pod")
    check_names("services", scenario.services, "Service")
    check_names("pod_disruption_budgets", scenario.pod_disruption_budgets, "PodDisruptionBudget")

    # Two workloads with one selector would fight over the same pods.
    selectors: dict[tuple[str, frozenset[tuple[str, str]]], tuple[str, str]] = {}
    for field, i, workload in scenario.workloads():
        path = f"{field}[{i}]"
        for name in workload.iter_names():
            key = (workload.namespace, frozenset(workload.labels_for(name).items()))
            first_path, first_name = selectors.setdefault(key, (path, name))
            if first_name == name and first_path.startswith(f"{field}["):
                continue  # the same name twice: already reported as a duplicate name
            if (first_path, first_name) != (path, name):
                problems.append(Problem(f"{path}.labels", f"{name!r} has the same labels (its "
                                        f"selector) as {first_name!r} ({first_path}) in namespace "
                                        f"{workload.namespace!r}; give each workload its own "
                                        "labels"))
                break

    # Users: one entry per name, and a token names one user.
    user_names: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for i, user in enumerate(scenario.users):
        first = user_names.setdefault(user.name, i)
        if first != i:
            problems.append(Problem(f"users[{i}].name", f"user {user.name!r} is declared twice "
                                    f"(also users[{first}])"))
        first = tokens.setdefault(user.token, i)
        if first != i:
            problems.append(Problem(f"users[{i}].token", f"the same token as users[{first}]; "
                                    "every user needs a token of its own"))

    # Standalone pods bound to a node need that node.
    for i, pod in enumerate(scenario.pods):
        if pod.node_name is not None and pod.node_name not in node_owner:
            problems.append(Problem(f"pods[{i}].node_name", f"node {pod.node_name!r} is not "
                                    "declared under 'nodes:'"))
    return problems


# --------------------------------------------------------------------------- loading


class _Loader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """The safe loader, refusing duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                        key_node.start_mark)
            except TypeError:  # unhashable key; the base class reports it
                break
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _line_index(root: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Map every path in the document (as pydantic locs) to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {(): root.start_mark.line + 1}
    stack: list[tuple[tuple[Any, ...], yaml.Node, int]] = [((), root, 0)]
    while stack:
        loc, node, depth = stack.pop()
        if depth > 64:  # recursive aliases
            continue
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    child = (*loc, key_node.value)
                    index.setdefault(child, key_node.start_mark.line + 1)
                    stack.append((child, value_node, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = (*loc, i)
                index.setdefault(child, item.start_mark.line + 1)
                stack.append((child, item, depth + 1))
    return index


def _parse_yaml(text: str, file: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
        return data, _line_index(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        if mark is None:
            raise ScenarioError(file, [Problem("", f"invalid YAML: {problem}")]) from None
        raise ScenarioError(file, [Problem("", f"invalid YAML at line {mark.line + 1}, column "
                                           f"{mark.column + 1}: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(file, [Problem("", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (the key)"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{str(part)!r}]"
    return out


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            options = [a for a in get_args(tp) if a is not type(None)]
            if len(options) != 1:
                return tp
            tp = options[0]
        else:
            return tp


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class found at `loc` inside a Scenario, for 'did you mean' hints."""
    tp: Any = Scenario
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif origin is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_FIELD_HINTS: dict[tuple[type[BaseModel], str], str] = {
    (DaemonSet, "replicas"): "a DaemonSet runs one pod on every matching node",
}


def _unknown_field(loc: tuple[Any, ...]) -> str:
    field = loc[-1]
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown field {field!r}"
    hint = _FIELD_HINTS.get((model, str(field)))
    if hint:
        return f"unknown field {field!r}: {hint}"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(field), allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown field {field!r}; did you mean {close[0]!r}?"
    return f"unknown field {field!r}; expected one of: {', '.join(allowed)}"


def _problems_from(exc: ValidationError, lines: dict[tuple[Any, ...], int]) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            message = _unknown_field(loc)
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "scenario":
            message = error["msg"]
        else:
            message = f"{error['msg']} (got {_shown(error['input'])})"
        problems.append(Problem(_format_loc(loc), message, _line_for(loc, lines)))
    return problems


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    key = tuple(p for p in loc if p != "[key]")
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return None


def _locate(problems: list[Problem], lines: dict[tuple[Any, ...], int]) -> list[Problem]:
    """Add line numbers to cross-check problems, whose paths are already strings."""
    by_path = {_format_loc(loc): line for loc, line in lines.items()}
    located = []
    for problem in problems:
        path = problem.path
        while path and path not in by_path:
            path = _LAST_SEGMENT.sub("", path)
        located.append(problem._replace(line=by_path.get(path) if path else None))
    return located


_LAST_SEGMENT = re.compile(r"(\.?[A-Za-z_]\w*|\[[^\]]*\])$")


def parse_scenario(text: str, file: str = "<scenario>") -> Scenario:
    """Validate scenario YAML `text`; `file` is only used in error messages."""
    data, lines = _parse_yaml(text, file)
    if data is None:
        raise ScenarioError(file, [Problem("", "the file is empty; a scenario needs at least "
                                           "'nodes:'")])
    if not isinstance(data, dict):
        raise ScenarioError(file, [Problem("", "expected a mapping with keys like 'nodes:', "
                                           f"'deployments:' (got {type(data).__name__})", 1)])
    # Top-level `x-...` keys are free for YAML anchors (`x-small: &small {cpu: "1"}`).
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(file, _problems_from(exc, lines)) from None
    except ScenarioError as exc:
        raise ScenarioError(file, _locate(exc.problems, lines)) from None


def load_scenario(path: Path | None) -> Scenario:
    """Read and validate a scenario file; `None` loads the packaged demo.

    Every way the file can be wrong ends in `ScenarioError`, never a traceback.
    """
    if path is None:
        resource = importlib.resources.files("pystol_sim.scenarios").joinpath("demo.yaml")
        return parse_scenario(resource.read_text(encoding="utf-8"), DEMO_FILE)
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(file, [Problem("", f"not UTF-8 text ({exc.reason} at byte "
                                           f"{exc.start})")]) from None
    except OSError as exc:
        raise ScenarioError(file, [Problem("", f"cannot read the file: "
                                           f"{exc.strerror or exc}")]) from None
    return parse_scenario(text, file)


# --------------------------------------------------------------------------- manifests


def _node_manifest(group: NodeGroup, name: str, index: int) -> dict[str, Any]:
    labels: dict[str, str] = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **group.labels,
    }
    for role in group.roles:
        labels[f"node-role.kubernetes.io/{role}"] = ""
    capacity = {"cpu": group.capacity.cpu, "memory": group.capacity.memory,
                "pods": str(group.capacity.pods)}
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status"} if group.ready else {
             "type": "Ready", "status": "False", "reason": "KubeletNotReady",
             "message": "the scenario starts this node not ready"}
    ip = f"10.0.{index // 254}.{index % 254 + 1}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "unschedulable": group.unschedulable,
            "taints": [{"key": t.key, "value": t.value, "effect": t.effect} if t.value else
                       {"key": t.key, "effect": t.effect} for t in group.taints],
        },
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [ready],
            "addresses": [{"type": "InternalIP", "address": ip},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "containerRuntimeVersion": "pystol-sim://1.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "pystol-sim",
                "kernelVersion": "pystol-sim",
                # Required by the official clients' typed models; stable per node name.
                "machineID": hashlib.md5(name.encode()).hexdigest(),
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            },
        },
    }


def scenario_manifests(scenario: Scenario) -> list[dict[str, Any]]:
    """Expand a scenario into the Kubernetes objects the API server stores at start-up.

    Order: Namespaces (built-ins first), Nodes, Deployments, StatefulSets,
    DaemonSets, standalone Pods, Services, PodDisruptionBudgets. Workload pods
    are not included (controllers create them); neither are uid,
    resourceVersion nor timestamps (the server adds them).
    """
    out: list[dict[str, Any]] = []
    declared = {ns.name: ns for ns in scenario.namespaces}
    ordered = [declared.get(n) or Namespace(name=n) for n in BUILTIN_NAMESPACES]
    ordered += [ns for ns in scenario.namespaces if ns.name not in BUILTIN_NAMESPACES]
    for ns in ordered:
        out.append({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns.name,
                                 "labels": {"kubernetes.io/metadata.name": ns.name, **ns.labels}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"}})
    index = 0
    for group in scenario.nodes:
        for name in group.iter_names():
            out.append(_node_manifest(group, name, index))
            index += 1
    for _, _, workload in scenario.workloads():
        out.extend(workload.manifest(name) for name in workload.iter_names())
    for pod in scenario.pods:
        out.extend(pod.manifest(name) for name in pod.iter_names())
    out.extend(service.manifest() for service in scenario.services)
    out.extend(pdb.manifest() for pdb in scenario.pod_disruption_budgets)
    return out
