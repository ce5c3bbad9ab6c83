"""Steady-state probes and the error-budget guard: what a job or an experiment checks.

A probe says what "healthy" means in terms a person already uses: a URL or a Service
answers 200 in under 300 ms (`http`), an object has a field or a condition, or at least N
pods matching a selector are ready (`k8s`), a PromQL query stays under a threshold
(`prometheus`). There is no command probe and no `type` for one: a probe only reads.

When a probe runs is its `mode`, with LitmusChaos's names (ANCHORS, LitmusChaos §1):
`sot` before the fault, `eot` after recovery, `edge` both (passes only if both pass),
`continuous` every `run.interval` from before the fault until it is reverted, `on-chaos`
every interval while the fault is held. A continuous or on-chaos probe with
`run.stop_on_failure` ends the fault the moment it fails: the job is aborted, its changes
reverted, and the verdict is `deviated`.

Every bound is here, in the model, so the API, the custom resources, the CLI and the
worker (which validates the stored record again) refuse the same things with the same
field paths. Comparisons are typed when the probe is written: a bool never compares
with a number (Chaos Toolkit's `True == 1` trap), a string never with an int.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from pystol_worker.core.durations import Duration, at_most
from pystol_worker.core.names import DNS_LABEL, NamespaceName

MAX_PROBE_TIMEOUT_SECONDS = 60.0  # one probe call
MIN_PROBE_INTERVAL_SECONDS = 0.5  # a looping probe's period
MAX_PROBE_INTERVAL_SECONDS = 3600.0
MAX_PROBE_ATTEMPTS = 10
MAX_QUERY_LENGTH = 2048  # a PromQL query
MAX_FIELD_PATH_LENGTH = 256
MAX_FIELD_PATH_SEGMENTS = 16
MAX_COMPARED_TEXT = 256  # a compared string value, body_contains
#: Kinds a k8s probe may read (namespaced ones need the probe's namespace).
K8S_PROBE_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Service",
                   "Endpoints", "PodDisruptionBudget", "Node")


class ProbeMode(StrEnum):
    """When a probe runs (LitmusChaos's modes, lower-kebab)."""

    SOT = "sot"                # start of test: before the fault
    EOT = "eot"                # end of test: after recovery
    EDGE = "edge"              # both; passes only if both pass
    CONTINUOUS = "continuous"  # every interval, from before the fault until it is reverted
    ON_CHAOS = "on-chaos"      # every interval while the fault is held

    @property
    def looping(self) -> bool:
        return self in (ProbeMode.CONTINUOUS, ProbeMode.ON_CHAOS)

    @property
    def before(self) -> bool:
        return self in (ProbeMode.SOT, ProbeMode.EDGE)

    @property
    def after(self) -> bool:
        return self in (ProbeMode.EOT, ProbeMode.EDGE)


class RunProperties(BaseModel):
    """How one probe is run (LitmusChaos's runProperties): each attempt bounded by
    `timeout`, up to `attempts` tries `retry_interval` apart, stopping at the first pass;
    a looping probe repeats that every `interval`."""

    model_config = ConfigDict(extra="forbid")

    timeout: Duration = Field(5.0, description="How long one attempt may take; at most 60s.")
    attempts: int = Field(1, ge=1, le=MAX_PROBE_ATTEMPTS,
                          description="Tries before the probe fails; the first pass wins.")
    retry_interval: Duration = Field(1.0, description="Pause between attempts.")
    initial_delay: Duration = Field(0.0, description="Wait before the first run (on-chaos: "
                                                     "after the fault is injected).")
    interval: Duration | None = Field(None, description="Period of a continuous or on-chaos "
                                                        "probe (at least 0.5s, and at least "
                                                        "its timeout).")
    stop_on_failure: bool = Field(False, description="Continuous and on-chaos probes: the "
                                  "first failure ends the fault at once and reverts it.")

    @field_validator("timeout")
    @classmethod
    def _bounded_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        at_most(value, MAX_PROBE_TIMEOUT_SECONDS)
        return value

    @field_validator("retry_interval", "initial_delay")
    @classmethod
    def _bounded_pause(cls, value: float) -> float:
        at_most(value, MAX_PROBE_INTERVAL_SECONDS)
        return value

    @field_validator("interval")
    @classmethod
    def _bounded_interval(cls, value: float | None) -> float | None:
        if value is not None and value < MIN_PROBE_INTERVAL_SECONDS:
            raise ValueError(f"at least {MIN_PROBE_INTERVAL_SECONDS}s")
        return at_most(value, MAX_PROBE_INTERVAL_SECONDS)

    @model_validator(mode="after")
    def _interval_covers_timeout(self) -> RunProperties:
        if self.interval is not None and self.interval < self.timeout:
            raise ValueError(f"interval {self.interval:g}s is shorter than timeout "
                             f"{self.timeout:g}s: a call would still run when the next "
                             "is due")
        tick = self.attempts * self.timeout + (self.attempts - 1) * self.retry_interval
        if self.interval is not None and tick > self.interval:
            # one tick (every attempt at its timeout, and the pauses between them) must
            # end before the next is due: a longer tick starves the loop's other probes,
            # breaks "abort within one interval", and outlives the job's end
            raise ValueError(f"interval {self.interval:g}s is shorter than one run of the "
                             f"probe: attempts x timeout + (attempts - 1) x retry_interval "
                             f"= {tick:g}s; give a longer interval, or fewer attempts")
        return self


class ProbeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("probe", max_length=63, pattern=DNS_LABEL.pattern,
                      description="Unique among the probes of one job or experiment.")
    mode: ProbeMode = Field(ProbeMode.EDGE, description="When it runs: sot, eot, edge "
                            "(before and after), continuous, on-chaos.")
    run: RunProperties = Field(default_factory=RunProperties)
    weight: int = Field(1, ge=0, le=100, description="Informational; the score weights "
                                                     "steps, not probes.")

    @model_validator(mode="after")
    def _interval_fits_mode(self) -> ProbeBase:
        if self.mode.looping and self.run.interval is None:
            raise ValueError(f"a {self.mode.value} probe needs run.interval")
        if not self.mode.looping:
            if self.run.interval is not None:
                raise ValueError(f"run.interval is for continuous and on-chaos probes, not "
                                 f"{self.mode.value}")
            if self.run.stop_on_failure:
                raise ValueError("run.stop_on_failure is for continuous and on-chaos probes")
        return self

    def namespaces(self) -> list[str]:
        """The namespaces the probe reads (its grant must cover them)."""
        return []

    @property
    def describe(self) -> str:
        return self.name


class ServiceTarget(BaseModel):
    """A Service reached through the Kubernetes API server's proxy."""

    model_config = ConfigDict(extra="forbid")

    namespace: NamespaceName = Field(description="The Service's namespace; it must be the "
                                                 "job's target.namespaces.")
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63,
                      examples=["web"], description="The Service's name.")
    port: int | str | None = Field(
        None, examples=[80, "http"],
        description="The Service port, by number or name; none for a Service with a single "
                    "unnamed port.")
    path: str = Field("/", pattern=r"^/[^\s#]*$", max_length=2048, examples=["/healthz"],
                      description="The path (and query) to GET on the Service.")

    @model_validator(mode="after")
    def _valid_port(self) -> ServiceTarget:
        port = self.port
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise ValueError(f"port {port}: must be within 1..65535")
        if isinstance(port, str) and not (port and len(port) <= 15 and port.replace(
                "-", "").isalnum() and port == port.lower() and port.isascii()):
            raise ValueError(f"port {port!r}: a port name is 1-15 lower-case letters, "
                             "digits and '-'")
        return self

    @model_validator(mode="after")
    def _path_stays_under_the_service(self) -> ServiceTarget:
        """The path is appended to `…/services/NAME:PORT/proxy`: a `..` segment (plain or
        percent-encoded, or behind a backslash) would climb out of the proxy to another
        API path — `/../../../secrets` — with the worker's credentials, so none passes."""
        path = self.path.split("?", 1)[0]
        decoded = path
        for _ in range(3):  # %252e%252e decodes twice before it is a dot
            decoded = unquote(decoded)
        segments = decoded.replace("\\", "/").split("/")
        if any(segment in (".", "..") for segment in segments):
            raise ValueError(f"path {self.path!r}: '.' and '..' segments are not allowed "
                             "(the path stays under the Service's proxy)")
        return self

    @property
    def ident(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.namespace}/{self.name}{port}"


def _status_code(value: int) -> int:
    if not 100 <= value <= 599:
        raise ValueError(f"{value} is not an HTTP status (100-599)")
    return value


StatusCode = Annotated[int, Field(strict=True), AfterValidator(_status_code)]


class HttpProbe(ProbeBase):
    """A URL, or a Service through the API server's proxy, answers as expected."""

    type: Literal["http"] = "http"
    url: str | None = Field(None, pattern=r"^https?://", max_length=2048)
    service: ServiceTarget | None = None
    expect_status: StatusCode | list[StatusCode] = Field(
        200, description="The status, or a list of acceptable statuses.")
    status_range: tuple[StatusCode, StatusCode] | None = Field(
        None, description="Inclusive range of acceptable statuses; replaces expect_status.")
    max_latency: Duration | None = Field(None, description="Slower answers fail.")
    body_contains: str | None = Field(None, min_length=1, max_length=MAX_COMPARED_TEXT,
                                      description="A substring the body must contain "
                                                  "(never a regular expression).")
    @model_validator(mode="before")
    @classmethod
    def _legacy_timeout(cls, data: Any) -> Any:
        """Records stored before `run` existed carry `timeout` at the top level."""
        if isinstance(data, dict) and data.get("timeout") is not None:
            data = dict(data)
            timeout = data.pop("timeout")
            run = dict(data.get("run") or {})
            run.setdefault("timeout", timeout)
            data["run"] = run
        return data

    @field_validator("expect_status")
    @classmethod
    def _non_empty(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, list) and not 1 <= len(value) <= 50:
            raise ValueError("a list of 1 to 50 statuses")
        return value

    @model_validator(mode="after")
    def _one_destination(self) -> HttpProbe:
        if (self.url is None) == (self.service is None):
            raise ValueError("give exactly one of url or service")
        if self.status_range is not None and self.status_range[0] > self.status_range[1]:
            raise ValueError("status_range: the first status is above the second")
        return self

    def namespaces(self) -> list[str]:
        return [self.service.namespace] if self.service is not None else []

    def status_ok(self, status: int) -> bool:
        if self.status_range is not None:
            return self.status_range[0] <= status <= self.status_range[1]
        if isinstance(self.expect_status, list):
            return status in self.expect_status
        return status == self.expect_status

    @property
    def describe(self) -> str:
        if self.service is not None:
            return f"service {self.service.ident}{self.service.path}"
        return str(self.url)


Comparable = bool | int | float | str
CompareOp = Literal["eq", "ne", "lt", "le", "gt", "ge"]


def _field_path(text: str) -> str:
    """A dotted path with `[n]` indexes, read by a linear scanner (no regex backtracking
    on user input): `status.conditions[0].type`."""
    if not text or len(text) > MAX_FIELD_PATH_LENGTH:
        raise ValueError(f"a path of 1 to {MAX_FIELD_PATH_LENGTH} characters")
    segments = parse_field_path(text)
    if len(segments) > MAX_FIELD_PATH_SEGMENTS:
        raise ValueError(f"at most {MAX_FIELD_PATH_SEGMENTS} segments")
    return text


def parse_field_path(text: str) -> list[str | int]:
    """`a.b[2].c` → ["a", "b", 2, "c"]; ValueError on anything else."""
    parts: list[str | int] = []
    for chunk in text.split("."):
        name, bracket, rest = chunk.partition("[")
        if bracket and not rest:
            raise ValueError(f"path {text!r}: bad index in {chunk!r}")
        if not name or not (name.replace("-", "").replace("_", "").isalnum()
                            and name.isascii()):
            raise ValueError(f"path {text!r}: segment {chunk!r} is not a field name")
        parts.append(name)
        while rest:
            index, close, rest = rest.partition("]")
            if not close or not index.isdigit() or len(index) > 6 or (
                    rest and not rest.startswith("[")):
                raise ValueError(f"path {text!r}: bad index in {chunk!r}")
            parts.append(int(index))
            rest = rest[1:]
    return parts


FieldPath = Annotated[str, AfterValidator(_field_path)]


class FieldCheck(BaseModel):
    """A field of the object compared with a constant (`value`) or with another field of
    the same object (`value_from`: "status.availableReplicas eq spec.replicas"). A missing
    field is null, which equals only null and is never ordered."""

    model_config = ConfigDict(extra="forbid")

    path: FieldPath = Field(examples=["status.availableReplicas"])
    op: CompareOp = "eq"
    value: Comparable | None = None
    value_from: FieldPath | None = Field(None, examples=["spec.replicas"])

    @field_validator("value")
    @classmethod
    def _bounded(cls, value: Comparable | None) -> Comparable | None:
        if isinstance(value, str) and len(value) > MAX_COMPARED_TEXT:
            raise ValueError(f"at most {MAX_COMPARED_TEXT} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _one_right_side(self) -> FieldCheck:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("give exactly one of value or value_from")
        if self.op in ("lt", "le", "gt", "ge") and isinstance(self.value, bool | str):
            raise ValueError(f"op {self.op} compares numbers; value is a "
                             f"{type(self.value).__name__}")
        return self


class ConditionCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z][A-Za-z0-9-]*$",
                      examples=["Available"])
    status: Literal["True", "False", "Unknown"] = "True"


class ObjectCheck(BaseModel):
    """One object: present, absent, a field compared, or a condition."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Service",
                  "Endpoints", "PodDisruptionBudget", "Node"]
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    check: Literal["present", "absent", "field", "condition"] = "present"
    field: FieldCheck | None = None
    condition: ConditionCheck | None = None

    @model_validator(mode="after")
    def _check_has_its_argument(self) -> ObjectCheck:
        if (self.check == "field") != (self.field is not None):
            raise ValueError("check field needs field{path, op, value} (and only it)")
        if (self.check == "condition") != (self.condition is not None):
            raise ValueError("check condition needs condition{type, status} (and only it)")
        return self


class PodCount(BaseModel):
    """How many pods matching a selector (optionally in a phase, ready, with conditions)
    there are, compared with a count, a percent of the matching pods, or a range."""

    model_config = ConfigDict(extra="forbid")

    label_selector: str | None = Field(None, max_length=1024, examples=["app=web"])
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] | None = None
    ready: bool | None = Field(None, description="Count only ready (true) or not-ready "
                                                 "(false) pods.")
    conditions: list[str] = Field(default_factory=list, max_length=10,
                                  description="Count only pods with these conditions True.")
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "between", "in"] = "ge"
    value: int | str | list[int] = Field(1, description="A count, a percent of the matching "
                                         "pods (\"66%\"), [low, high] for between, a list "
                                         "for in.")

    @field_validator("value", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, list)
                                       and any(isinstance(v, bool) for v in value)):
            raise ValueError("expected a count, a percent or a list of counts, not a boolean")
        return value

    @model_validator(mode="after")
    def _value_fits_op(self) -> PodCount:
        value = self.value
        if isinstance(value, str) and not re.fullmatch(r"(100|[1-9]?[0-9])%", value):
            raise ValueError("value: a percent from 0% to 100%, e.g. \"66%\"")
        if isinstance(value, int) and not 0 <= value <= 1_000_000:
            raise ValueError("value: a count from 0 to 1,000,000")
        if self.op == "between":
            if not (isinstance(value, list) and len(value) == 2 and value[0] <= value[1]):
                raise ValueError("op between needs value [low, high] with low <= high")
        elif self.op == "in":
            if not (isinstance(value, list) and 1 <= len(value) <= 50):
                raise ValueError("op in needs a list of 1 to 50 counts")
        elif isinstance(value, list):
            raise ValueError(f"op {self.op} takes one count or percent, not a list")
        for item in value if isinstance(value, list) else []:
            if not 0 <= item <= 1_000_000:
                raise ValueError("value: counts from 0 to 1,000,000")
        return self

    def holds(self, count: int, total: int) -> bool:
        """Whether `count` of `total` matching pods meets the comparison."""
        value = self.value
        if self.op == "between":
            assert isinstance(value, list)
            return value[0] <= count <= value[1]
        if self.op == "in":
            assert isinstance(value, list)
            return count in value
        wanted = (total * int(value[:-1]) + 99) // 100 if isinstance(value, str) else value
        assert isinstance(wanted, int)
        return compare(self.op, count, wanted)


def compare(op: str, left: Comparable | None, right: Comparable | None) -> bool:
    """`left op right`, with types that the model already made comparable; a bool is only
    equal to a bool (never to 1), a string only to a string, None only to None."""
    if left is None or right is None:
        return (left is right) == (op == "eq") if op in ("eq", "ne") else False
    if isinstance(left, bool) != isinstance(right, bool) or \
            isinstance(left, str) != isinstance(right, str):
        return op == "ne"
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if isinstance(left, bool | str) or isinstance(right, bool | str):
        return False
    return {"lt": left < right, "le": left <= right, "gt": left > right,
            "ge": left >= right}[op]


class K8sProbe(ProbeBase):
    """An object's presence, field or condition; or a count of matching pods."""

    type: Literal["k8s"] = "k8s"
    namespace: NamespaceName | None = Field(None, description="Needed for every kind but "
                                            "Node (which needs cluster-wide chaos rights).")
    object: ObjectCheck | None = None
    pods: PodCount | None = None

    @model_validator(mode="after")
    def _one_question(self) -> K8sProbe:
        if (self.object is None) == (self.pods is None):
            raise ValueError("give exactly one of object or pods")
        node = self.object is not None and self.object.kind == "Node"
        if node and self.namespace is not None:
            raise ValueError("a Node probe takes no namespace")
        if not node and self.namespace is None:
            raise ValueError("namespace is required (for every kind but Node)")
        return self

    def namespaces(self) -> list[str]:
        return [self.namespace] if self.namespace is not None else []

    @property
    def cluster_scoped(self) -> bool:
        return self.namespace is None

    @property
    def describe(self) -> str:
        if self.object is not None:
            where = f"{self.namespace}/" if self.namespace else ""
            return f"{self.object.kind} {where}{self.object.name}"
        assert self.pods is not None
        return f"pods {self.namespace}/{self.pods.label_selector or '*'}"


class PrometheusProbe(ProbeBase):
    """A PromQL instant query on an endpoint the admin policy names, compared with a
    threshold. The query is sent as one form value; the endpoint is a name, never a URL."""

    type: Literal["prometheus"] = "prometheus"
    endpoint: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL.pattern,
                          description="A name from the policy's prometheus.endpoints.")
    query: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH)
    op: CompareOp = "lt"
    threshold: float = Field(allow_inf_nan=False, strict=True)

    @field_validator("threshold", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        return value

    @property
    def describe(self) -> str:
        return f"{self.query} on {self.endpoint}"


def with_probe_type(data: Any) -> Any:
    """Probes stored or sent before there was more than one kind carry no `type`: http."""
    if isinstance(data, dict) and "type" not in data:
        return {**data, "type": "http"}
    return data


def typed_probes(value: Any) -> Any:
    """Field validator (mode before) body for a list of probes."""
    if isinstance(value, list):
        return [with_probe_type(item) for item in value]
    return value


Probe = Annotated[HttpProbe | K8sProbe | PrometheusProbe, Field(discriminator="type")]


class ErrorBudgetGuard(BaseModel):
    """Do not start while the service is burning its error budget: a PromQL query (say, an
    SLO burn rate) above `max` skips the job or experiment, recording the value."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL.pattern,
                          description="A name from the policy's prometheus.endpoints.")
    query: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH,
                       examples=["slo:burn_rate:1h{service=\"checkout\"}"])
    max: float = Field(allow_inf_nan=False, strict=True,
                       description="Above this, nothing starts.")
    on_error: Literal["skip", "run"] = Field("skip", description="When Prometheus cannot "
                                             "answer: skip (the safe default) or run.")

    @field_validator("max", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        return value


def unique_probe_names(probes: list[Any]) -> list[Any]:
    """Field validator body: probe names are unique in one list (outcomes are keyed by
    name); unnamed probes get `probe-N`."""
    seen: set[str] = set()
    for index, probe in enumerate(probes):
        if "name" not in probe.model_fields_set:
            probe.name = f"probe-{index + 1}"
        if probe.name in seen:
            raise ValueError(f"probe name {probe.name!r} is used twice")
        seen.add(probe.name)
    return probes


__all__ = ["DNS_LABEL", "ConditionCheck", "ErrorBudgetGuard", "FieldCheck", "HttpProbe",
           "K8sProbe", "ObjectCheck", "PodCount", "Probe", "ProbeMode", "PrometheusProbe",
           "RunProperties", "ServiceTarget", "compare", "parse_field_path",
           "typed_probes", "unique_probe_names", "with_probe_type"]
