"""Snapshots: a copy of a real cluster, read from `kubectl get ... -o yaml`.

`pystol-sim --snapshot FILE` starts the simulated cluster from what a user's own
cluster holds, so that a chaos experiment can be rehearsed against the same nodes,
workloads, services and disruption budgets before it runs for real. The file is
what this one command prints (YAML or JSON, a `List`, or several documents):

    kubectl get nodes,namespaces,deployments,statefulsets,daemonsets,replicasets,pods,\
services,endpoints,poddisruptionbudgets -A -o yaml > cluster.yaml

Why keep so little: the simulated controllers rebuild everything derived. What a
rehearsal needs is what a user declared (nodes' labels, taints and capacity;
workload specs; services; budgets) and how fast their pods really come up. ReplicaSets,
controller-owned pods, Endpoints and every object's status are dropped (the sim makes
its own); Secrets and ConfigMaps are dropped and reported, because a snapshot is a
file people pass around and must not carry credentials.

Why infer delays: a pod-kill rehearsal is only as good as its recovery times. Each
workload's pods say, in their status timestamps, how long they took from scheduled to
running (`start`: image pull and init containers included) and from running to Ready
(`ready`: readiness probes). The median over a workload's pods becomes the
`sim.pystol.org/start-seconds` / `ready-seconds` annotations of its pod template,
exactly as a scenario file's `timings:` does. Kubernetes stamps whole seconds, so an
inferred delay is good to about a second.

Why pydantic, and paths: the file may be hand-edited or come from a broken pipe. Only
the fields used are modelled (everything else is allowed and carried along), and every
problem is reported with the path of the bad part, e.g.
`items[17] (Deployment shop/web): spec.replicas: Input should be a valid integer`,
never as a traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from pystol_sim.errors import ApiError
from pystol_sim.resources import Catalogue
from pystol_sim.scenario import (
    ANNOTATION_PREFIX,
    BUILTIN_NAMESPACES,
    KUBELET_VERSION,
    READY_ANNOTATION,
    START_ANNOTATION,
    TimingsOverride,
)
from pystol_sim.selectors import LabelSelector, SelectorError, label_selector_from_spec
from pystol_sim.validation import validate_object

MAX_BYTES = 200 * 1024 * 1024  # 10,000 pods of kubectl YAML is about 60 MB
MAX_DEPTH = 100  # kubectl's deepest objects (pod specs with probes) nest about 15 levels
MAX_VALUES = 5_000_000  # values after YAML aliases are expanded (each costs ~100 bytes
# or more once copied); 10,000 kubectl pods hold about 2 million
MAX_DELAY_SECONDS = 600.0  # longer start/ready delays are clamped to this
MAX_LISTED_PROBLEMS = 20
MAX_LISTED_WORKLOADS = 50
INFERRED_ANNOTATION = f"{ANNOTATION_PREFIX}snapshot-delays"
DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",
                       "deployment.kubernetes.io/revision")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
KEPT_KINDS: dict[tuple[str, str], str] = {  # (API group, kind) -> what it is
    ("", "Namespace"): "namespace", ("", "Node"): "node", ("", "Pod"): "pod",
    ("", "Service"): "service", ("apps", "Deployment"): "workload",
    ("apps", "StatefulSet"): "workload", ("apps", "DaemonSet"): "workload",
    ("apps", "ReplicaSet"): "replicaset", ("policy", "PodDisruptionBudget"): "pdb",
}
RECOMPUTED_KINDS = {("", "Endpoints"), ("discovery.k8s.io", "EndpointSlice"), ("", "Event"),
                    ("events.k8s.io", "Event")}
SECRET_KINDS = {("", "Secret"), ("", "ConfigMap")}


# --------------------------------------------------------------------------- errors


def printable(text: str) -> str:
    """`text` with every character that is not printable (line breaks, terminal escapes,
    Unicode line separators) written as its Python escape (`\\n`, `\\x1b`, `\\u2028`).

    Problems and the summary quote names from the file; printed raw, a name with a line
    break in it could add lines of its own to the sim's output, which `pystol up` and
    people read."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class Problem:
    """One bad part of a snapshot: where (`items[17] (Deployment shop/web): spec.replicas`)."""

    where: str
    message: str


class SnapshotError(Exception):
    """A snapshot file that cannot be used. `str()` is one line per problem:
    `FILE: items[17] (Deployment shop/web): spec.replicas: Input should be ...`."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(file, problems)

    def lines(self) -> list[str]:
        """One printable line per problem: names from the file are escaped."""
        out = [f"{self.file}: {p.where}: {p.message}" if p.where else f"{self.file}: {p.message}"
               for p in self.problems[:MAX_LISTED_PROBLEMS]]
        hidden = len(self.problems) - MAX_LISTED_PROBLEMS
        if hidden > 0:
            out.append(f"{self.file}: ... and {hidden} more problem{'s' if hidden > 1 else ''}")
        return [printable(line) for line in out]

    def __str__(self) -> str:
        return "\n".join(self.lines())


# --------------------------------------------------------------------------- models
# Only the fields this module reads. Extra fields are ignored by the models and carried
# along unchanged in the manifests, which are built from the raw objects.

_QUANTITY_RE = re.compile(
    r"^(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")


def _quantity(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = format(value, "g")
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (like 500m, 4, 16Gi)")
    return value


Quantity = Annotated[str, BeforeValidator(_quantity)]
StrictInt = Annotated[int, Field(strict=True)]
Labels = dict[str, str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class OwnerReference(_Model):
    kind: str
    name: str
    controller: bool | None = None


class ObjectMeta(_Model):
    name: str = Field(min_length=1)
    namespace: str | None = None
    labels: Labels | None = None
    annotations: dict[str, str] | None = None
    ownerReferences: list[OwnerReference] | None = None
    creationTimestamp: datetime | None = None

    def controller(self) -> OwnerReference | None:
        for ref in self.ownerReferences or ():
            if ref.controller:
                return ref
        return None


class Container(_Model):
    name: str = Field(min_length=1)
    image: str = Field(min_length=1)


class PodSpec(_Model):
    containers: list[Container] = Field(min_length=1)
    nodeName: str | None = None


class TemplateMeta(_Model):
    labels: Labels | None = None
    annotations: dict[str, str] | None = None


class PodTemplate(_Model):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: PodSpec


class Requirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class Selector(_Model):
    matchLabels: Labels | None = None
    matchExpressions: list[Requirement] | None = None


class WorkloadSpec(_Model):
    replicas: Annotated[StrictInt, Field(ge=0)] | None = None
    selector: Selector
    template: PodTemplate
    strategy: dict[str, Any] | None = None
    updateStrategy: dict[str, Any] | None = None


class Workload(_Model):
    metadata: ObjectMeta
    spec: WorkloadSpec


class ReplicaSet(_Model):
    metadata: ObjectMeta


class Running(_Model):
    startedAt: datetime | None = None


class ContainerState(_Model):
    running: Running | None = None


class ContainerStatus(_Model):
    name: str
    restartCount: StrictInt = 0
    state: ContainerState | None = None


class Condition(_Model):
    type: str
    status: str
    lastTransitionTime: datetime | None = None


class PodStatus(_Model):
    startTime: datetime | None = None
    conditions: list[Condition] | None = None
    containerStatuses: list[ContainerStatus] | None = None


class Pod(_Model):
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus | None = None


class Taint(_Model):
    key: str = Field(min_length=1)
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeSpec(_Model):
    unschedulable: bool | None = None
    taints: list[Taint] | None = None


class NodeStatus(_Model):
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    conditions: list[Condition] | None = None


class Node(_Model):
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)


class Namespace(_Model):
    metadata: ObjectMeta


class ServicePort(_Model):
    port: Annotated[StrictInt, Field(ge=1, le=65535)]
    targetPort: StrictInt | str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    name: str | None = None


class ServiceSpec(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    selector: Labels | None = None
    ports: list[ServicePort] | None = None
    clusterIP: str | None = None


class Service(_Model):
    metadata: ObjectMeta
    spec: ServiceSpec = Field(default_factory=ServiceSpec)


class PdbSpec(_Model):
    selector: Selector | None = None
    minAvailable: StrictInt | str | None = None
    maxUnavailable: StrictInt | str | None = None


class PodDisruptionBudget(_Model):
    metadata: ObjectMeta
    spec: PdbSpec


MODELS: dict[str, type[_Model]] = {
    "namespace": Namespace, "node": Node, "pod": Pod, "service": Service,
    "workload": Workload, "replicaset": ReplicaSet, "pdb": PodDisruptionBudget,
}


# --------------------------------------------------------------------------- results


@dataclass
class Delays:
    """What was inferred for one workload (or standalone pod), for the summary."""

    kind: str
    namespace: str
    name: str
    start: float | None = None  # None: no usable timestamps, the sim's default applies
    ready: float | None = None
    start_pods: int = 0
    ready_pods: int = 0
    clamped: bool = False
    own: tuple[str, ...] = ()  # the delays its template already set (a sim's own snapshot)

    def text(self) -> str:
        def one(what: str, value: float | None, pods: int) -> str:
            if what in self.own:
                return f"{what} {_seconds(value or 0)}s (its own annotation)"
            if value is None:
                return f"{what} default (no pod timestamps)"
            return f"{what} {_seconds(value)}s (median of {pods} pod{'s' if pods != 1 else ''})"
        text = (f"{one('start', self.start, self.start_pods)}, "
                f"{one('ready', self.ready, self.ready_pods)}")
        return text + (f", clamped to {_seconds(MAX_DELAY_SECONDS)}s" if self.clamped else "")


@dataclass
class Snapshot:
    """The manifests to load (scenario order) and what happened on the way."""

    file: str
    manifests: list[dict[str, Any]]
    delays: list[Delays]
    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def batches(self) -> list[list[dict[str, Any]]]:
        """The manifests, in the one `Cluster.load` call the CLI makes per batch (the
        cluster's last settling pass gives Services that come with their clusterIP their
        Endpoints, whatever the order of the file)."""
        return [list(self.manifests)]

    def summary(self) -> list[str]:
        """Lines for stderr: what was kept, dropped and inferred (names escaped)."""
        return [printable(line) for line in self._summary()]

    def _summary(self) -> list[str]:
        kept = ", ".join(f"{n} {kind}" for kind, n in self.kept.items() if n)
        out = [f"snapshot {self.file}: kept {kept or 'nothing'}"]
        if self.dropped:
            out.append("dropped " + ", ".join(f"{n} {kind}" for kind, n in
                                              sorted(self.dropped.items())))
        out += self.notes
        out.append("delays per workload (from its pods' status timestamps):")
        for delays in self.delays[:MAX_LISTED_WORKLOADS]:
            out.append(f"  {delays.kind} {delays.namespace}/{delays.name}: {delays.text()}")
        hidden = len(self.delays) - MAX_LISTED_WORKLOADS
        if hidden > 0:
            out.append(f"  ... and {hidden} more (each workload's {INFERRED_ANNOTATION} "
                       "annotation says)")
        return out


# --------------------------------------------------------------------------- reading


def read_snapshot(path: Path) -> Snapshot:
    """Read and convert a snapshot file; every way it can be wrong is a SnapshotError."""
    file = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SnapshotError(file, [Problem("", f"the file is {size / 2**20:.0f} MiB, more "
                                               f"than the {MAX_BYTES // 2**20} MiB a snapshot "
                                               "may be; leave out namespaces you do not need")])
        data = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(file, [Problem("", "cannot read the file: "
                                           f"{exc.strerror or exc}")]) from None
    if len(data) > MAX_BYTES:  # grew after stat (a pipe, a file being written)
        raise SnapshotError(file, [Problem("", f"the file is more than {MAX_BYTES // 2**20} "
                                           "MiB, the most a snapshot may be")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(file, [Problem("", f"not UTF-8 text ({exc.reason} at byte "
                                           f"{exc.start})")]) from None
    return parse_snapshot(text, file)


def parse_snapshot(text: str, file: str = "<snapshot>") -> Snapshot:
    """Convert the text of `kubectl get ... -o yaml|json` into manifests for Cluster.load."""
    documents = _parse(text, file)
    items = _items(documents, file)
    return _convert(items, file)


def _parse(text: str, file: str) -> list[Any]:
    """JSON (one document) or YAML (one or more documents), with the safe loader."""
    if len(text) > MAX_BYTES:
        raise SnapshotError(file, [Problem("", f"more than {MAX_BYTES // 2**20} MiB of text")])
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            try:
                return [json.loads(text)]
            except json.JSONDecodeError as exc:
                raise SnapshotError(file, [Problem("", f"invalid JSON at line {exc.lineno}, "
                                                   f"column {exc.colno}: {exc.msg}")]) from None
        loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
        try:
            return [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.problem:
                problem = f"{exc.problem} ({exc.context})"
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise SnapshotError(file, [Problem("", f"invalid YAML{where}: {problem}")]) from None
        except yaml.YAMLError as exc:
            raise SnapshotError(file, [Problem("", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise SnapshotError(file, [Problem("", "nested too deeply to be a Kubernetes object "
                                           f"(more than {MAX_DEPTH} levels)")]) from None


def _check_shape(value: Any, file: str, where: str) -> None:
    """Refuse absurd nesting, cycles and alias bombs before anything copies the object.

    kubectl never writes YAML anchors, but `yaml.safe_dump` of shared dicts does, so
    aliases are fine. What is not: a "billion laughs" (a few lines whose aliases expand
    to billions of values when the object is copied or serialised) and a recursive alias.
    One quick pass checks depth and notices shared nodes; only a document with shared
    nodes gets the second pass that counts its expanded size.
    """
    seen: set[int] = set()
    shared = False
    # (node, depth, trail): trail is (parent trail, key), turned into a path on error only.
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]
    while stack:
        node, depth, trail = stack.pop()
        if id(node) in seen:
            shared = True
            continue
        seen.add(id(node))
        if depth > MAX_DEPTH:
            raise SnapshotError(file, [Problem(where, f"{_trail_path(trail)}: nested more "
                                               f"than {MAX_DEPTH} levels deep")])
        if isinstance(node, dict):
            for name, child in node.items():
                if not isinstance(name, str):
                    raise SnapshotError(file, [Problem(where, f"{_trail_path(trail)}: key "
                                                       f"{name!r} is not a string")])
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, (trail, name)))
                elif type(child) not in _JSON_SCALARS:
                    _check_scalar(child, file, where, (trail, name))
        else:
            for index, child in enumerate(node):
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, (trail, index)))
                elif type(child) not in _JSON_SCALARS:
                    _check_scalar(child, file, where, (trail, index))
    if shared:
        _check_expansion(value, file, where)


_JSON_SCALARS = frozenset({str, bool, type(None)})  # numbers are checked one by one


def _check_scalar(value: Any, file: str, where: str, trail: Any) -> None:
    """A value kubectl's JSON could hold (finite numbers; no YAML sets, binary data or
    unquoted dates, which would break the sim later, far from the file's line)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if -2**63 <= value < 2**63:
            return
        what = "a number outside the 64-bit range Kubernetes uses"
    elif isinstance(value, float):
        if math.isfinite(value):
            return
        what = "not a number" if math.isnan(value) else "an infinite number"
    elif isinstance(value, str | bool):  # subclasses (YAML never makes them, JSON neither)
        return
    elif isinstance(value, date):  # datetime too
        what = "a date (YAML reads an unquoted timestamp as one: quote it)"
    elif isinstance(value, set):
        what = "a set (!!set)"
    elif isinstance(value, bytes):
        what = "binary data (!!binary)"
    else:
        what = f"a {type(value).__name__}"
    raise SnapshotError(file, [Problem(where, f"{_trail_path(trail)}: {what}, which JSON "
                                       "(and so a Kubernetes object) cannot hold")])


def _trail_path(trail: Any) -> str:
    parts: list[Any] = []
    while trail is not None:
        trail, key = trail
        parts.append(key)
    return _format_loc(tuple(reversed(parts))) or "the document"


def _check_expansion(value: Any, file: str, where: str) -> None:
    """The size of the document with every alias expanded, memoised per shared node."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, Any, bool]] = [(value, None, False)]
    while stack:
        node, trail, done = stack.pop()
        key = id(node)
        children = node.values() if isinstance(node, dict) else node
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] if isinstance(c, dict | list) else 1
                                for c in children)
            if size[key] > MAX_VALUES:
                raise SnapshotError(file, [Problem(where, f"{_trail_path(trail)}: expands to "
                                                   f"more than {MAX_VALUES:,} values (YAML "
                                                   "aliases repeating each other)")])
            continue
        if key in size:
            continue
        if key in on_path:
            raise SnapshotError(file, [Problem(where, f"{_trail_path(trail)}: a YAML alias "
                                               "that contains itself")])
        on_path.add(key)
        stack.append((node, trail, True))
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for name, child in pairs:
            if isinstance(child, dict | list):
                stack.append((child, (trail, name), False))


def _items(documents: list[Any], file: str) -> list[tuple[str, dict[str, Any]]]:
    """Every object in the documents, with its path (`items[3]`, `items[3].items[0]`)."""
    if not documents:
        raise SnapshotError(file, [Problem("", "the file is empty; make it with `kubectl get "
                                           "nodes,namespaces,... -A -o yaml`")])
    out: list[tuple[str, dict[str, Any]]] = []
    several = len(documents) > 1
    for number, document in enumerate(documents, start=1):
        prefix = f"document {number}" if several else ""
        if not isinstance(document, dict):
            raise SnapshotError(file, [Problem(prefix, "expected a kubectl List (kind: List, "
                                               "items: [...]) or a Kubernetes object, got "
                                               f"a {_type_name(document)}")])
        _check_shape(document, file, prefix)
        _collect(document, prefix, file, out, 0)
    return out


def _collect(obj: dict[str, Any], where: str, file: str,
             out: list[tuple[str, dict[str, Any]]], depth: int) -> None:
    kind = obj.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in obj:
        items = obj["items"]
        if items is None:
            return
        if not isinstance(items, list):
            raise SnapshotError(file, [Problem(where, f"items: expected a list, got a "
                                               f"{_type_name(items)}")])
        for index, item in enumerate(items):
            if not where:
                path = f"items[{index}]"
            elif where.startswith("document") and "," not in where:
                path = f"{where}, items[{index}]"
            else:
                path = f"{where}.items[{index}]"
            if not isinstance(item, dict):
                raise SnapshotError(file, [Problem(path, "expected a Kubernetes object (a "
                                                   f"mapping), got a {_type_name(item)}")])
            _collect(item, path, file, out, depth + 1)
        return
    out.append((where or "the document", obj))


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "number", float: "number",
            bool: "boolean"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- conversion


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][\w-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{str(part)!r}]"
    return out


def _label(obj: dict[str, Any], kind: str) -> str:
    """`(Deployment shop/web)`: which object a path is in, as far as it can be told."""
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    if not isinstance(name, str):
        return f" ({kind})"
    return f" ({kind} {namespace}/{name})" if isinstance(namespace, str) else f" ({kind} {name})"


@dataclass
class _Parsed:
    where: str
    what: str
    raw: dict[str, Any]
    model: Any
    group: str = ""
    kind: str = ""


def _convert(items: list[tuple[str, dict[str, Any]]], file: str) -> Snapshot:
    problems: list[Problem] = []
    parsed: list[_Parsed] = []
    dropped: Counter[str] = Counter()
    secrets = 0
    for where, obj in items:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if not isinstance(kind, str) or not kind:
            problems.append(Problem(where, "kind: required field is missing" if kind is None
                                    else f"kind: expected a string, got {kind!r}"))
            continue
        if not isinstance(api_version, str) or not api_version:
            problems.append(Problem(where + _label(obj, kind), "apiVersion: required field is "
                                    "missing" if api_version is None else "apiVersion: expected "
                                    f"a string, got {api_version!r}"))
            continue
        group = api_version.rpartition("/")[0]
        what = KEPT_KINDS.get((group, kind))
        if (group, kind) in SECRET_KINDS:
            secrets += 1
            dropped[f"{kind}s"] += 1
            continue
        if what is None:
            dropped[f"{kind} ({api_version})" if (group, kind) not in RECOMPUTED_KINDS
                    else kind] += 1
            continue
        try:
            model = MODELS[what].model_validate(obj)
        except ValidationError as exc:
            label = where + _label(obj, kind)
            for error in exc.errors(include_url=False):
                message = ("required field is missing" if error["type"] == "missing"
                           else error["msg"])
                problems.append(Problem(f"{label}: {_format_loc(tuple(error['loc']))}", message))
            continue
        parsed.append(_Parsed(where, what, obj, model, group, kind))
    if problems:
        raise SnapshotError(file, problems)
    builder = _Builder(file, parsed)
    snapshot = builder.build()
    snapshot.dropped.update(dropped)
    if secrets:
        snapshot.notes.append(f"dropped {secrets} Secret/ConfigMap object"
                              f"{'s' if secrets > 1 else ''}: a snapshot does not carry them "
                              "(their values never left the file)")
    return snapshot


class _Builder:
    """Turns validated objects into manifests, attributing pods to workloads on the way."""

    def __init__(self, file: str, parsed: list[_Parsed]) -> None:
        self.file = file
        self.parsed = parsed
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.kept: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.catalogue = Catalogue()
        self._compiled: list[tuple[tuple[str, str, str], LabelSelector]] | None = None

    def build(self) -> Snapshot:
        by_what: dict[str, list[_Parsed]] = {}
        seen: dict[tuple[str, str, str], str] = {}
        for item in self.parsed:
            meta = item.model.metadata
            namespaced = item.what not in ("node", "namespace")
            namespace = (meta.namespace or "default") if namespaced else ""
            key = (item.kind, namespace, meta.name)
            first = seen.setdefault(key, item.where)
            if first != item.where:
                self.problems.append(Problem(f"{item.where} ({item.kind} "
                                             f"{namespace + '/' if namespace else ''}{meta.name})",
                                             f"the same {item.kind} as {first}"))
                continue
            by_what.setdefault(item.what, []).append(item)
        if self.problems:
            raise SnapshotError(self.file, self.problems)
        nodes = by_what.get("node", [])
        if not nodes:
            raise SnapshotError(self.file, [Problem("", "no Node in the file: a cluster needs "
                                                    "nodes (put `nodes` in the kubectl get "
                                                    "command)")])
        node_names = {n.model.metadata.name for n in nodes}

        workloads = by_what.get("workload", [])
        workload_keys = {(w.kind, w.model.metadata.namespace or "default", w.model.metadata.name):
                         w for w in workloads}
        samples: dict[tuple[str, str, str], list[Pod]] = {key: [] for key in workload_keys}
        standalone: list[_Parsed] = []
        rs_owner = self._replicaset_owners(by_what.get("replicaset", []))
        for item in by_what.get("pod", []):
            owner = self._owner_of(item.model, rs_owner, workload_keys)
            if owner == "standalone":
                standalone.append(item)
            elif isinstance(owner, tuple):
                samples[owner].append(item.model)
                self.dropped["pods owned by a workload (recreated by the sim)"] += 1
            else:
                self.dropped[owner] += 1
        self.dropped["ReplicaSets (recreated from their Deployments)"] += len(
            by_what.get("replicaset", []))

        manifests: list[dict[str, Any]] = []
        namespaces = self._namespaces(by_what.get("namespace", []), by_what)
        manifests += namespaces
        manifests += [self._node(n) for n in nodes]
        delays: list[Delays] = []
        for key, item in workload_keys.items():
            manifest, delay = self._workload(item, samples[key])
            manifests.append(manifest)
            delays.append(delay)
        for item in standalone:
            manifest, delay = self._standalone_pod(item, node_names)
            manifests.append(manifest)
            delays.append(delay)
        manifests += self._services(by_what.get("service", []))
        manifests += [self._pdb(p) for p in by_what.get("pdb", [])]
        self.kept.update({"nodes": len(nodes), "namespaces": len(namespaces),
                          "workloads": len(workloads), "standalone pods": len(standalone),
                          "services": len(by_what.get("service", [])),
                          "disruption budgets": len(by_what.get("pdb", []))})
        if self.problems:
            raise SnapshotError(self.file, self.problems)
        dropped = Counter({k: v for k, v in self.dropped.items() if v})
        return Snapshot(self.file, manifests, delays, self.kept, dropped, self.notes)

    # -- ownership ---------------------------------------------------------------------------

    @staticmethod
    def _replicaset_owners(replicasets: list[_Parsed]) -> dict[tuple[str, str], str | None]:
        """(namespace, ReplicaSet) -> its Deployment's name (None: a bare ReplicaSet)."""
        out: dict[tuple[str, str], str | None] = {}
        for item in replicasets:
            meta = item.model.metadata
            ref = meta.controller()
            out[(meta.namespace or "default", meta.name)] = (
                ref.name if ref is not None and ref.kind == "Deployment" else None)
        return out

    def _owner_of(self, pod: Pod, rs_owner: dict[tuple[str, str], str | None],
                  workloads: dict[tuple[str, str, str], _Parsed]
                  ) -> tuple[str, str, str] | str:
        """The workload key a pod belongs to, "standalone", or why it is dropped."""
        meta = pod.metadata
        namespace = meta.namespace or "default"
        ref = meta.controller()
        if ref is None:
            # No owner: a hand-made pod, or a list whose ownerReferences were stripped. A
            # pod that a workload's selector picks is counted as that workload's, since the
            # sim's controllers will make the workload's pods anyway.
            for key, selector in self._selectors(workloads):
                if key[1] == namespace and not selector.empty and selector.matches(
                        meta.labels or {}):
                    return key
            return "standalone"
        if ref.kind == "Node":
            return "standalone"  # a static pod's mirror: kept, bound to its node
        if ref.kind == "ReplicaSet":
            deployment = rs_owner.get((namespace, ref.name), "")
            if deployment == "":  # the ReplicaSet is not in the file: its name says
                template_hash = (meta.labels or {}).get("pod-template-hash")
                if template_hash and ref.name.endswith(f"-{template_hash}"):
                    deployment = ref.name[: -len(template_hash) - 1]
            if deployment and ("Deployment", namespace, deployment) in workloads:
                return ("Deployment", namespace, deployment)
            return "pods of a ReplicaSet whose Deployment is not in the file"
        if ref.kind in ("StatefulSet", "DaemonSet") and (ref.kind, namespace,
                                                          ref.name) in workloads:
            return (ref.kind, namespace, ref.name)
        return f"pods owned by a {ref.kind} that is not in the file"

    def _selectors(self, workloads: dict[tuple[str, str, str], _Parsed]
                   ) -> list[tuple[tuple[str, str, str], LabelSelector]]:
        """Each workload's selector, compiled once."""
        if self._compiled is None:
            self._compiled = []
            for key, item in workloads.items():
                try:
                    self._compiled.append((key, label_selector_from_spec(
                        item.model.spec.selector.model_dump(exclude_none=True))))
                except SelectorError as exc:
                    self.problems.append(Problem(f"{item.where} ({key[0]} {key[1]}/{key[2]}): "
                                                 "spec.selector", str(exc)))
        return self._compiled

    # -- objects -----------------------------------------------------------------------------

    def _check(self, item: _Parsed, manifest: dict[str, Any]) -> None:
        """What the sim's API server would refuse (names, selector vs template labels)."""
        rtype = self.catalogue.by_kind(manifest["apiVersion"], manifest["kind"])
        if rtype is None:
            return
        try:
            validate_object(rtype, manifest)
        except ApiError as exc:
            causes = (exc.details or {}).get("causes") or [{"field": "", "message": exc.message}]
            meta = manifest["metadata"]
            label = f"{item.kind} {meta.get('namespace') + '/' if meta.get('namespace') else ''}"
            for cause in causes:
                self.problems.append(Problem(f"{item.where} ({label}{meta['name']}): "
                                             f"{cause['field']}", cause["message"]))

    @staticmethod
    def _metadata(meta: dict[str, Any], namespaced: bool) -> dict[str, Any]:
        """Name, namespace, labels and annotations; uid, resourceVersion, timestamps,
        managedFields and ownerReferences belong to the old cluster."""
        out: dict[str, Any] = {"name": meta["name"]}
        if namespaced:
            out["namespace"] = meta.get("namespace") or "default"
        if meta.get("labels"):
            out["labels"] = dict(meta["labels"])
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                       if k not in DROPPED_ANNOTATIONS}
        if annotations:
            out["annotations"] = annotations
        return out

    def _namespaces(self, items: list[_Parsed], by_what: dict[str, list[_Parsed]]
                    ) -> list[dict[str, Any]]:
        declared = {i.model.metadata.name: i for i in items}
        used = {i.model.metadata.namespace or "default" for what, group in by_what.items()
                if what not in ("node", "namespace") for i in group}
        missing = sorted(used - set(declared) - set(BUILTIN_NAMESPACES))
        if missing:
            self.notes.append(f"added namespace{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(missing)}: objects in the file live there")
        out = []
        for name in [*BUILTIN_NAMESPACES, *[n for n in declared if n not in BUILTIN_NAMESPACES],
                     *missing]:
            item = declared.get(name)
            meta = self._metadata(item.raw["metadata"], False) if item else {"name": name}
            manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta,
                        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
            if item is not None:
                self._check(item, manifest)
            out.append(manifest)
        return out

    def _node(self, item: _Parsed) -> dict[str, Any]:
        raw, model = item.raw, item.model
        name = model.metadata.name
        status = raw.get("status") or {}
        spec: dict[str, Any] = {"unschedulable": bool(model.spec.unschedulable),
                                "taints": [t.model_dump(exclude_none=True)
                                           for t in model.spec.taints or ()]}
        ready = next((c for c in model.status.conditions or () if c.type == "Ready"), None)
        if ready is None:
            condition = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                         "message": "the snapshot gave no Ready condition: taken as ready"}
        else:
            condition = {"type": "Ready", "status": ready.status,
                         "reason": "KubeletReady" if ready.status == "True" else
                         "KubeletNotReady", "message": "as in the snapshot"}
        capacity = dict(model.status.capacity or {})
        node_info = {
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
            "containerRuntimeVersion": "pystol-sim://1.0", "operatingSystem": "linux",
            "architecture": "amd64", "osImage": "pystol-sim", "kernelVersion": "pystol-sim",
            # Required by the official clients' typed models; stable per node name.
            "machineID": hashlib.md5(name.encode()).hexdigest(),
            "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            **{k: v for k, v in (status.get("nodeInfo") or {}).items() if isinstance(v, str)},
        }
        manifest = {
            "apiVersion": "v1", "kind": "Node", "metadata": self._metadata(raw["metadata"], False),
            "spec": spec,
            "status": {"capacity": capacity,
                       "allocatable": dict(model.status.allocatable or capacity),
                       "conditions": [condition],
                       "addresses": [a for a in status.get("addresses") or ()
                                     if isinstance(a, dict)] or
                       [{"type": "Hostname", "address": name}],
                       "nodeInfo": node_info},
        }
        self._check(item, manifest)
        return manifest

    def _workload(self, item: _Parsed, pods: list[Pod]) -> tuple[dict[str, Any], Delays]:
        raw, meta = item.raw, item.model.metadata
        spec = orjson.loads(orjson.dumps(raw["spec"]))
        template = spec["template"]
        template_meta = template.setdefault("metadata", {}) or {}
        template["metadata"] = template_meta
        for drop in ("creationTimestamp",):
            template_meta.pop(drop, None)
        delays = Delays(item.kind, meta.namespace or "default", meta.name)
        metadata = self._metadata(raw["metadata"], True)
        annotations = dict(template_meta.get("annotations") or {})
        _infer(delays, pods, annotations)
        annotations.update(_annotations(delays))
        metadata.setdefault("annotations", {})[INFERRED_ANNOTATION] = delays.text()
        if annotations:
            template_meta["annotations"] = annotations
        manifest = {"apiVersion": "apps/v1", "kind": item.kind, "metadata": metadata,
                    "spec": spec}
        self._check(item, manifest)
        return manifest, delays

    def _standalone_pod(self, item: _Parsed, nodes: set[str]) -> tuple[dict[str, Any], Delays]:
        raw, model = item.raw, item.model
        spec = orjson.loads(orjson.dumps(raw["spec"]))
        metadata = self._metadata(raw["metadata"], True)
        node = spec.get("nodeName")
        if node and node not in nodes:
            spec.pop("nodeName")
            self.notes.append(f"pod {metadata['namespace']}/{metadata['name']} was on node "
                              f"{node!r}, which is not in the file: the scheduler places it")
        delays = Delays("Pod", metadata["namespace"], metadata["name"])
        annotations = metadata.get("annotations") or {}
        _infer(delays, [model], annotations)
        annotations.update(_annotations(delays))
        annotations[INFERRED_ANNOTATION] = delays.text()
        metadata["annotations"] = annotations
        manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
        self._check(item, manifest)
        return manifest, delays

    def _services(self, items: list[_Parsed]) -> list[dict[str, Any]]:
        """Services keep their clusterIP: a rehearsal sees the addresses the real cluster
        has. Two services with one address (a hand-made file) cannot both keep it: the
        second gets one from the sim."""
        out = []
        owners: dict[str, str] = {}
        for item in items:
            raw = item.raw
            spec = orjson.loads(orjson.dumps(raw.get("spec") or {}))
            metadata = self._metadata(raw["metadata"], True)
            ip = spec.get("clusterIP")
            if ip and ip != "None":
                first = owners.setdefault(ip, f"{metadata['namespace']}/{metadata['name']}")
                if first != f"{metadata['namespace']}/{metadata['name']}":
                    self.notes.append(f"service {metadata['namespace']}/{metadata['name']} had "
                                      f"clusterIP {ip}, as {first} does: it gets a new one")
                    spec.pop("clusterIP")
                    spec.pop("clusterIPs", None)
            manifest = {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
                        "spec": spec}
            self._check(item, manifest)
            out.append(manifest)
        return out

    def _pdb(self, item: _Parsed) -> dict[str, Any]:
        raw = item.raw
        manifest = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": self._metadata(raw["metadata"], True),
                    "spec": orjson.loads(orjson.dumps(raw["spec"]))}
        self._check(item, manifest)
        return manifest


# --------------------------------------------------------------------------- inference


def pod_delays(pod: Pod) -> tuple[float | None, float | None]:
    """(start, ready) seconds one pod's status timestamps show, None where they do not.

    start: from scheduled (the PodScheduled condition, else status.startTime, else the
    pod's creation) to its last container running; only for pods whose containers never
    restarted, since a restart's startedAt is not the first start. ready: from that
    container start to the Ready condition turning True.
    """
    status = pod.status
    if status is None:
        return None, None
    conditions = {c.type: c for c in status.conditions or ()}
    started: list[datetime] = []
    restarted = False
    for cs in status.containerStatuses or ():
        running = cs.state.running if cs.state is not None else None
        if running is None or running.startedAt is None:
            return None, None  # not every container runs: neither delay is known
        started.append(running.startedAt)
        restarted = restarted or cs.restartCount > 0
    if not started:
        return None, None
    running_at = max(started)
    start: float | None = None
    scheduled = conditions.get("PodScheduled")
    since = (scheduled.lastTransitionTime if scheduled is not None
             and scheduled.status == "True" and scheduled.lastTransitionTime is not None
             else status.startTime or pod.metadata.creationTimestamp)
    if since is not None and not restarted:
        seconds = (running_at - since).total_seconds()
        start = seconds if seconds >= 0 else None
    ready: float | None = None
    condition = conditions.get("Ready")
    if condition is not None and condition.status == "True" and condition.lastTransitionTime:
        seconds = (condition.lastTransitionTime - running_at).total_seconds()
        ready = seconds if seconds >= 0 else None
    return start, ready


def _infer(delays: Delays, pods: list[Pod], annotations: dict[str, str]) -> None:
    """Median delays over `pods`, clamped; a delay the template already sets in a
    `sim.pystol.org/` annotation (a snapshot of a simulated cluster) is kept as it is,
    being exact where timestamps are whole seconds."""
    starts: list[float] = []
    readies: list[float] = []
    for pod in pods:
        start, ready = pod_delays(pod)
        if start is not None:
            starts.append(start)
        if ready is not None:
            readies.append(ready)
    if starts:
        delays.start, delays.start_pods = statistics.median(starts), len(starts)
    if readies:
        delays.ready, delays.ready_pods = statistics.median(readies), len(readies)
    for attribute in ("start", "ready"):
        value = getattr(delays, attribute)
        if value is not None and value > MAX_DELAY_SECONDS:
            setattr(delays, attribute, MAX_DELAY_SECONDS)
            delays.clamped = True
    own = []
    for attribute, annotation in (("start", START_ANNOTATION), ("ready", READY_ANNOTATION)):
        if annotation in annotations:
            own.append(attribute)
            try:
                setattr(delays, attribute, float(annotations[annotation]))
            except ValueError:
                setattr(delays, attribute, None)
    delays.own = tuple(own)


def _annotations(delays: Delays) -> dict[str, str]:
    """The same annotations a scenario's `timings:` sets (TimingsOverride builds them);
    none for a delay the template set itself."""
    return TimingsOverride(
        start_seconds=None if "start" in delays.own else delays.start,
        ready_seconds=None if "ready" in delays.own else delays.ready).annotations()


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


__all__ = ["MAX_BYTES", "Delays", "Snapshot", "SnapshotError", "parse_snapshot",
           "pod_delays", "read_snapshot"]
