"""Chaos Toolkit experiments as Pystol experiments: validate, substitute, map, or refuse.

People already have Chaos Toolkit experiment files. This turns one (a JSON/YAML document
already parsed into a dict) into an `ExperimentSpec` that runs the same faults through
Pystol's submission path, so halt, policy, scopes, the revert journal and the reaper apply,
and whose verdict matches the one `chaos run` gives (`ctk_journal.ctk_verdict`).

Order, as chaoslib's own (ANCHORS, Chaos Toolkit §1 and §6):

1. Bound the raw document (size, depth) before walking it.
2. Validate it like `ensure_experiment_is_valid`: `title`, `description` and `method`
   required; hypothesis probes need a `tolerance`; activities need `type`, `name` and a
   provider; `{"ref": name}` names an earlier activity.
3. Substitute `${key}` from `configuration`: a whole-string `${key}` keeps the value's
   type, an embedded one becomes text. Unlike chaoslib, an unknown key is refused instead
   of left literal (a literal `${x}` as a label selector matches nothing and would pass a
   hypothesis for the wrong reason). Env-backed entries are resolved only when an
   `environ` is passed (the CLI passes the variables the file names; the API passes none
   and refuses them: the server's environment is not the user's), and never `PYSTOL_*`
   (Pystol's own token lives there). A `secrets` key is refused wherever it would be
   substituted: what Pystol substitutes is stored in the experiment, readable by every
   reader of its namespaces; only an Authorization header may name one, and that header
   is dropped. Substitution is bounded (`MAX_SUBSTITUTED_TEXT` per value,
   `MAX_SUBSTITUTED_BYTES` per document) and each activity's arguments are substituted
   once however many `ref`s replay it, so a small file cannot become a huge one.
4. Map each activity through the table of design §5 (`_PROBES`, `_ACTIONS`); arguments are
   bound to the chaosk8s function's signature as chaoslib binds them (unknown or missing
   arguments are refused).

Everything that cannot be mapped faithfully is refused with the CTK path and why: Pystol
runs no arbitrary Python and no commands, has no controls, and reverts its own faults, so a
rollback that would make a new change is refused too. All problems are collected, not only
the first, and raised together as `ChaosToolkitRefused`.

Pure: no I/O, no clock, no environment read here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from pystol_worker.core.experiment_model import ExperimentInvalid, ExperimentSpec
from pystol_worker.core.model import JobSpec, json_depth
from pystol_worker.core.probe_model import Probe, ProbeMode

#: The chaoslib version whose semantics this mapping follows (journals say so too).
CHAOSLIB_VERSION = "1.44.0"
CHAOSK8S_VERSION = "0.39.0"
MAX_CTK_BYTES = 64 * 1024  # the document as JSON; kept whole in `source_document`
MAX_CTK_DEPTH = 16
#: Activities (hypothesis probes, method and rollback entries, `ref`s included) before
#: mapping: the experiment model's MAX_STEPS, so a file of refs costs at most that.
MAX_CTK_ACTIVITIES = 100
#: The longest text one `${…}` substitution may produce (beyond the text's own length).
MAX_SUBSTITUTED_TEXT = 4096
#: What all substitutions of one document may insert in total.
MAX_SUBSTITUTED_BYTES = 256 * 1024
#: Environment variables never read, whatever a file names: Pystol's own (its token).
FORBIDDEN_ENV_PREFIX = "PYSTOL_"
#: How long a fault that Chaos Toolkit leaves in place until a rollback (scale, cordon,
#: drain) may be held by Pystol at most. The rollbacks release it earlier; without a
#: rollback the end of the run does (Pystol never leaves a change behind).
DEFAULT_HOLD_SECONDS = 1800.0
REDACTED = "***"
WHOLE_KEY = re.compile(r"^\$\{([A-Za-z0-9_.\-]{1,200})\}$")
ANY_KEY = re.compile(r"\$\{([^}]{0,200})\}")
TOP_LEVEL_KEYS = {"title", "description", "version", "tags", "contributions", "configuration",
                  "secrets", "extensions", "steady-state-hypothesis", "method", "rollbacks",
                  "runtime", "controls", "$schema", "dry"}
ACTIVITY_KEYS = {"type", "name", "provider", "tolerance", "pauses", "background", "timeout",
                 "controls", "ref", "configuration", "secrets", "extensions", "title"}

Problem = tuple[str, str]


class ChaosToolkitRefused(ValueError):
    """The document is not a valid Chaos Toolkit experiment, or uses something Pystol does
    not map. `problems` lists (CTK path, reason), e.g. ("method[2].provider.type",
    "Pystol runs no commands")."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" if path else message
                                   for path, message in problems))


def is_chaostoolkit(document: Any) -> bool:
    """Whether a parsed document looks like a Chaos Toolkit experiment rather than a
    Pystol one: CTK's hyphenated hypothesis key, or a method whose activities have a
    `provider` (Pystol steps have `type: action` with a `job`)."""
    if not isinstance(document, Mapping):
        return False
    if "steady-state-hypothesis" in document:
        return True
    method = document.get("method")
    if "title" not in document or not isinstance(method, list):
        return False
    return any(isinstance(step, Mapping) and ("provider" in step or "ref" in step)
               for step in method)


# -- substitution ----------------------------------------------------------------------------

class _Unresolved:
    """A value that is not substituted: env-backed configuration with no `environ`, or an
    env-backed secret. Refused only where a mapped field uses it (an Authorization header
    that names it is dropped, not substituted)."""

    def __init__(self, why: str) -> None:
        self.why = why


_ENV_TYPES: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float}


@dataclass
class _Values:
    """The `${key}` values: configuration first, then each secrets scope (chaoslib's
    order)."""

    values: dict[str, Any] = field(default_factory=dict)
    secret_keys: set[str] = field(default_factory=set)
    #: Bytes inserted so far (`MAX_SUBSTITUTED_BYTES`), and each value's size, counted once.
    inserted: int = 0
    sizes: dict[str, int] = field(default_factory=dict)

    def substitute(self, value: Any, path: str, problems: list[Problem]) -> Any:
        if isinstance(value, str):
            return self._text(value, path, problems)
        if isinstance(value, list):
            return [self.substitute(item, f"{path}[{index}]", problems)
                    for index, item in enumerate(value)]
        if isinstance(value, dict):
            return {key: self.substitute(item, f"{path}.{key}", problems)
                    for key, item in value.items()}
        return value

    def _text(self, text: str, path: str, problems: list[Problem]) -> Any:
        if "${" not in text:
            return text
        whole = WHOLE_KEY.match(text)
        if whole:
            found = self._lookup(whole[1], path, problems, text)
            if found is not None and not self._spend(self._size(whole[1], found), path,
                                                     problems):
                return None
            return found
        # Resolve every key and add up the result's length before building it: a short
        # text naming a long value many times must not allocate the product.
        parts: list[str] = []
        length = 0
        seen = len(problems)
        for match in ANY_KEY.finditer(text):
            found = self._lookup(match[1], path, problems, match[0])
            if len(problems) != seen:
                return None
            parts.append(match[0] if found is None else str(found))
            length += len(match[0]) if found is None else self._size(match[1], found, True)
        if length > MAX_SUBSTITUTED_TEXT:
            problems.append((path, f"substitutes {length:,} characters into one value; at "
                                   f"most {MAX_SUBSTITUTED_TEXT:,}"))
            return None
        if not self._spend(length, path, problems):
            return None
        values = iter(parts)
        return ANY_KEY.sub(lambda _: next(values), text)

    def _size(self, key: str, value: Any, embedded: bool = False) -> int:
        """The value's length as inserted (its text inside other text, else as JSON),
        computed once per key."""
        memo = f"{key}\0{embedded}"
        if memo not in self.sizes:
            self.sizes[memo] = len(value) if isinstance(value, str) else \
                len(str(value)) if embedded else len(json.dumps(value, default=str))
        return self.sizes[memo]

    def _spend(self, size: int, path: str, problems: list[Problem]) -> bool:
        self.inserted += size
        if self.inserted <= MAX_SUBSTITUTED_BYTES:
            return True
        problems.append((path, f"substitutions insert more than {MAX_SUBSTITUTED_BYTES:,} "
                               "bytes in all"))
        return False

    def _lookup(self, key: str, path: str, problems: list[Problem], literal: str) -> Any:
        if key not in self.values:
            problems.append((path, f"{literal} names no configuration or secret key (chaos "
                                   "run would keep it literally; Pystol refuses it)"))
            return None
        if key in self.secret_keys:
            problems.append((path, f"{literal} is a secret, and a secret would be stored in "
                                   "the experiment: a secret may only be used in an "
                                   "Authorization header (which Pystol drops); Pystol "
                                   "stores what it substitutes"))
            return None
        value = self.values[key]
        if isinstance(value, _Unresolved):
            problems.append((path, f"{literal} {value.why}"))
            return None
        return value


def _env_value(entry: Mapping[str, Any], where: str, environ: Mapping[str, str] | None,
               problems: list[Problem]) -> Any:
    key = entry.get("key")
    if not isinstance(key, str) or not key:
        problems.append((f"{where}.key", "an env entry needs the variable's name in key"))
        return None
    if key.startswith(FORBIDDEN_ENV_PREFIX):
        problems.append((f"{where}.key", f"{key}: Pystol's own variables "
                                         f"({FORBIDDEN_ENV_PREFIX}*) are never read (they "
                                         "hold its token)"))
        return None
    kind = entry.get("env_var_type", "str")
    if not isinstance(kind, str) or kind not in _ENV_TYPES:
        problems.append((f"{where}.env_var_type", f"{kind!r} is not mapped; use str, int "
                                                  "or float"))
        return None
    if environ is None:
        if "default" in entry:
            return entry["default"]
        return _Unresolved(f"is env-backed ({where}, variable {key}): resolve env "
                           "configuration with `pystol run -f` or give values")
    if key in environ:
        try:
            return _ENV_TYPES[kind](environ[key])
        except ValueError:
            problems.append((where, f"variable {key} is not a {kind}"))
            return None
    if "default" in entry:
        return entry["default"]
    problems.append((where, f"variable {key} is not set and the entry has no default "
                            "(chaos run refuses this too)"))
    return None


def _collect_values(document: Mapping[str, Any], environ: Mapping[str, str] | None,
                    problems: list[Problem]) -> _Values:
    values = _Values()
    configuration = document.get("configuration") or {}
    if not isinstance(configuration, Mapping):
        problems.append(("configuration", "a mapping of keys to values"))
        configuration = {}
    for key, entry in configuration.items():
        where = f"configuration.{key}"
        if isinstance(entry, Mapping) and "type" in entry:
            if entry["type"] == "env":
                values.values[key] = _env_value(entry, where, environ, problems)
            else:
                problems.append((f"{where}.type", f"configuration of type {entry['type']!r} "
                                 "is dynamic configuration; Pystol maps inline values and "
                                 "env variables only"))
        else:
            values.values[key] = entry
    secrets = document.get("secrets") or {}
    if not isinstance(secrets, Mapping):
        problems.append(("secrets", "a mapping of scopes to secrets"))
        secrets = {}
    for scope, entries in secrets.items():
        if not isinstance(entries, Mapping):
            problems.append((f"secrets.{scope}", "a mapping of keys to secrets"))
            continue
        for key, entry in entries.items():
            where = f"secrets.{scope}.{key}"
            if isinstance(entry, Mapping):
                if entry.get("type") == "env":
                    # Never read: what is substituted is stored in the experiment, and a
                    # secret must not be; the worker acts with its own credentials.
                    value = _Unresolved(f"is an env-backed secret ({where}); Pystol "
                                        "substitutes inline secrets only (what it "
                                        "substitutes is stored with the experiment)")
                else:
                    problems.append((where, f"secrets of type {entry.get('type')!r} (vault "
                                     "and others) are not mapped; inline secrets only"))
                    continue
            else:
                value = entry
            if key not in values.values:  # configuration wins, as in chaoslib
                values.values[key] = value
                values.secret_keys.add(key)
    return values


def env_variables(document: Mapping[str, Any]) -> list[str]:
    """The environment variables the document's configuration names (`type: env`), which
    are the only ones `pystol run -f` reads (and says it read); `PYSTOL_*` are left out
    (the import refuses them)."""
    configuration = document.get("configuration")
    if not isinstance(configuration, Mapping):
        return []
    names = {entry["key"] for entry in configuration.values()
             if isinstance(entry, Mapping) and entry.get("type") == "env"
             and isinstance(entry.get("key"), str)
             and not entry["key"].startswith(FORBIDDEN_ENV_PREFIX)}
    return sorted(names)


def redacted(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as stored beside the experiment (and shown in its journal): inline
    secret values replaced by `***`, so that reading a run never reads a secret."""
    copy = json.loads(json.dumps(document, default=str))
    secrets = copy.get("secrets")
    if isinstance(secrets, dict):
        for scope, entries in secrets.items():
            if isinstance(entries, dict):
                secrets[scope] = {key: entry if isinstance(entry, dict) else REDACTED
                                  for key, entry in entries.items()}
            else:
                secrets[scope] = REDACTED
    for activity in _all_activities(copy):
        provider = activity.get("provider")
        headers = provider.get("headers") if isinstance(provider, dict) else None
        if isinstance(provider, dict) and isinstance(headers, dict):
            provider["headers"] = {key: REDACTED if str(key).lower() == "authorization"
                                   and "${" not in str(value) else value
                                   for key, value in headers.items()}
    return copy


def _all_activities(document: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[Any] = []
    hypothesis = document.get("steady-state-hypothesis")
    if isinstance(hypothesis, dict) and isinstance(hypothesis.get("probes"), list):
        found.extend(hypothesis["probes"])
    for key in ("method", "rollbacks"):
        if isinstance(document.get(key), list):
            found.extend(document[key])
    return [item for item in found if isinstance(item, dict)]


# -- argument binding -----------------------------------------------------------------------

_REQUIRED = object()


@dataclass(frozen=True)
class _Function:
    """One chaosk8s function: its signature (name → default, `_REQUIRED` when none), what
    it is (probe/action) and how it maps."""

    module: str
    func: str
    kind: str  # "probe" | "action"
    signature: dict[str, Any]
    returns: str = "bool"  # probes: "bool" (True or raises) or "int"

    def bind(self, arguments: Any, path: str, problems: list[Problem]) -> dict[str, Any] | None:
        """The arguments with defaults filled in, as chaoslib's `validate_python_activity`
        binds them to the signature; None after recording a problem."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            problems.append((path, "arguments are a mapping of names to values"))
            return None
        bound: dict[str, Any] = {}
        ok = True
        for name in arguments:
            if name not in self.signature:
                problems.append((f"{path}.{name}", f"{self.module}.{self.func} takes no "
                                 f"argument {name!r} (it takes "
                                 f"{', '.join(self.signature)})"))
                ok = False
        for name, default in self.signature.items():
            if name in arguments:
                bound[name] = arguments[name]
            elif default is _REQUIRED:
                problems.append((path, f"{self.module}.{self.func} needs argument {name!r}"))
                ok = False
            else:
                bound[name] = default
        return bound if ok else None


def _fn(module: str, func: str, kind: str, returns: str = "bool", **signature: Any
        ) -> _Function:
    return _Function(module, func, kind, dict(signature), returns)


_FUNCTIONS = {(f.module, f.func): f for f in [
    _fn("chaosk8s.pod.actions", "terminate_pods", "action", label_selector=None,
        name_pattern=None, all=False, rand=False, mode="fixed", qty=1, grace_period=-1,
        ns="default", order="alphabetic"),
    _fn("chaosk8s.deployment.actions", "scale_deployment", "action", name=_REQUIRED,
        replicas=_REQUIRED, ns="default"),
    _fn("chaosk8s.node.actions", "drain_nodes", "action", name=None, label_selector=None,
        delete_pods_with_local_storage=False, timeout=120, count=None,
        pod_label_selector=None, pod_namespace=None),
    _fn("chaosk8s.node.actions", "cordon_node", "action", name=None, label_selector=None),
    _fn("chaosk8s.node.actions", "uncordon_node", "action", name=None, label_selector=None),
    _fn("chaosk8s.pod.probes", "count_pods", "probe", "int", label_selector=_REQUIRED,
        phase=None, ns="default"),
    _fn("chaosk8s.pod.probes", "pods_in_phase", "probe", label_selector=_REQUIRED,
        phase="Running", ns="default", raise_on_invalid_phase=True),
    _fn("chaosk8s.pod.probes", "pods_in_conditions", "probe", label_selector=_REQUIRED,
        conditions=_REQUIRED, ns="default", raise_on_invalid_conditions=True),
    _fn("chaosk8s.pod.probes", "all_pods_healthy", "probe", ns="default",
        raise_on_any_unhealthy=True),
    _fn("chaosk8s.deployment.probes", "deployment_available_and_healthy", "probe",
        name=_REQUIRED, ns="default", label_selector=None, raise_on_unavailable=True),
    _fn("chaosk8s.deployment.probes", "deployment_fully_available", "probe",
        name=_REQUIRED, ns="default", label_selector=None, timeout=30,
        raise_on_not_fully_available=True),
    _fn("chaosk8s.service.probes", "service_is_initialized", "probe", name=None,
        ns="default", label_selector=None, raise_if_service_not_initialized=True),
]}
_MICROSERVICE = ("returns None even when healthy, so tolerance true never holds under chaos "
                 "run; use chaosk8s.deployment.probes.deployment_available_and_healthy")
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
SERVICE_PROXY = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/services/"
    r"(?:https?:)?(?P<name>[a-z]([-a-z0-9]*[a-z0-9])?)(?::(?P<port>[a-z0-9-]{1,15}))?"
    r"/proxy(?P<path>/[^#]*)?$")
PATH_OF_URL = re.compile(r"^https?://[^/?#]+(?P<rest>[^#]*)$")


# -- the mapping -----------------------------------------------------------------------------


@dataclass
class _Held:
    """A method step whose fault Chaos Toolkit leaves until a rollback undoes it."""

    step: str
    function: str
    arguments: dict[str, Any]


@dataclass
class _Import:
    document: Mapping[str, Any]
    values: _Values
    max_hold_seconds: float
    problems: list[Problem] = field(default_factory=list)
    activities: dict[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    held: list[_Held] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    #: Each activity's mapped function and arguments, by the activity object: a `ref`
    #: replays the activity without substituting and binding its arguments again.
    mapped: dict[tuple[int, str], tuple[_Function, dict[str, Any]] | None] = \
        field(default_factory=dict)

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    # activities ------------------------------------------------------------------------

    def resolve(self, activity: Any, path: str) -> tuple[str, Mapping[str, Any]] | None:
        """The activity itself (a `{"ref": name}` replaced by the named one), checked like
        `ensure_activity_is_valid`, with its path for messages."""
        if not isinstance(activity, Mapping):
            self.problem(path, "an activity is a mapping")
            return None
        if "ref" in activity:
            ref = activity["ref"]
            found = self.activities.get(ref) if isinstance(ref, str) else None
            if found is None:
                self.problem(f"{path}.ref", f"{ref!r} names no activity declared before it")
            return found
        ok = True
        for key in activity:
            if key not in ACTIVITY_KEYS:
                self.problem(f"{path}.{key}", "not an activity key Pystol knows")
                ok = False
        if activity.get("type") not in ("probe", "action"):
            self.problem(f"{path}.type", "probe or action")
            ok = False
        name = activity.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem(f"{path}.name", "an activity needs a name")
            ok = False
        provider = activity.get("provider")
        if not isinstance(provider, Mapping):
            self.problem(f"{path}.provider", "an activity needs a provider")
            ok = False
        elif provider.get("type") not in ("python", "process", "http"):
            self.problem(f"{path}.provider.type", "python, process or http")
            ok = False
        if activity.get("background"):
            self.problem(f"{path}.background", "background activities are not mapped: each "
                         "Pystol step runs in order (use a Pystol parallel group)")
            ok = False
        if activity.get("controls"):
            self.problem(f"{path}.controls", "controls run arbitrary Python around an "
                         "activity; Pystol has none")
            ok = False
        if not ok:
            return None
        assert isinstance(name, str)
        if name not in self.activities:
            self.activities[name] = (path, activity)
        return path, activity

    def provider_function(self, activity: Mapping[str, Any], path: str, kind: str
                          ) -> tuple[_Function, dict[str, Any]] | None:
        """The mapped chaosk8s function of a python provider and its bound, substituted
        arguments (mapped once per activity; a `ref` gets a copy)."""
        key = (id(activity), kind)
        if key in self.mapped:
            found = self.mapped[key]
            return None if found is None else (found[0], copy.deepcopy(found[1]))
        result = self._provider_function(activity, path, kind)
        self.mapped[key] = result
        return None if result is None else (result[0], copy.deepcopy(result[1]))

    def _provider_function(self, activity: Mapping[str, Any], path: str, kind: str
                           ) -> tuple[_Function, dict[str, Any]] | None:
        provider = activity["provider"]
        ptype = provider.get("type")
        if ptype == "process":
            self.problem(f"{path}.provider.type", "process providers run a command; Pystol "
                         "runs no commands")
            return None
        if ptype != "python":
            return None
        module, func = provider.get("module"), provider.get("func")
        if not isinstance(module, str) or not isinstance(func, str):
            self.problem(f"{path}.provider", "a python provider needs module and func")
            return None
        if module == "chaosk8s.probes" and func.startswith("microservice_"):
            self.problem(f"{path}.provider.func", f"{module}.{func} {_MICROSERVICE}")
            return None
        function = _FUNCTIONS.get((module, func))
        if function is None:
            self.problem(f"{path}.provider.module", f"{module}.{func} is not one of "
                         "chaosk8s's mapped functions; Pystol runs no arbitrary Python")
            return None
        if function.kind != kind:
            self.problem(f"{path}.type", f"{module}.{func} is a chaosk8s {function.kind}, "
                         f"not a {kind}")
            return None
        seen = len(self.problems)
        arguments = self.values.substitute(provider.get("arguments"),
                                           f"{path}.provider.arguments", self.problems)
        bound = function.bind(arguments, f"{path}.provider.arguments", self.problems)
        if bound is None or len(self.problems) != seen:
            return None
        return function, bound

    # probes ----------------------------------------------------------------------------

    def probes(self, activity: Mapping[str, Any], path: str, mode: ProbeMode,
               name: str, with_tolerance: bool) -> list[dict[str, Any]]:
        """Pystol probe documents (one or two) for one CTK probe; [] after a problem."""
        seen = len(self.problems)
        mapped = self._probes(activity, path, mode, name, with_tolerance)
        return mapped if len(self.problems) == seen else []

    def _probes(self, activity: Mapping[str, Any], path: str, mode: ProbeMode,
                name: str, with_tolerance: bool) -> list[dict[str, Any]]:
        provider = activity["provider"]
        tolerance = activity.get("tolerance") if with_tolerance else None
        if with_tolerance:
            tolerance = self.values.substitute(tolerance, f"{path}.tolerance", self.problems)
        if provider.get("type") == "http":
            probe = self.http_probe(provider, f"{path}.provider", tolerance, path,
                                    with_tolerance)
            return [] if probe is None else [{**probe, "name": name, "mode": mode.value}]
        found = self.provider_function(activity, path, "probe")
        if found is None:
            return []
        function, args = found
        bodies = self.k8s_probe(function, args, tolerance, path, with_tolerance)
        return [{**body, "type": "k8s", "mode": mode.value,
                 "name": name if index == 0 else self.step_name(f"{name}-{index + 1}")}
                for index, body in enumerate(bodies)]

    def http_probe(self, provider: Mapping[str, Any], ppath: str, tolerance: Any, path: str,
                   with_tolerance: bool) -> dict[str, Any] | None:
        ok = True
        seen = len(self.problems)
        url = self.values.substitute(provider.get("url"), f"{ppath}.url", self.problems)
        if len(self.problems) != seen:
            return None
        if not isinstance(url, str) or not url:
            self.problem(f"{ppath}.url", "an http provider needs a url")
            return None
        method = str(provider.get("method", "GET")).upper()
        if method != "GET":
            self.problem(f"{ppath}.method", f"{method}: Pystol's probes only read (GET)")
            ok = False
        headers = provider.get("headers") or {}
        if not isinstance(headers, Mapping):
            self.problem(f"{ppath}.headers", "a mapping of header names to values")
            ok = False
        else:
            for header in headers:
                if str(header).lower() != "authorization":
                    self.problem(f"{ppath}.headers.{header}", "only Authorization is mapped "
                                 "(and dropped: the worker uses its own credentials)")
                    ok = False
        if provider.get("arguments"):
            self.problem(f"{ppath}.arguments", "Pystol's probes send no query or body "
                         "arguments; put the query in the url")
            ok = False
        if provider.get("verify_tls") is False:
            self.problem(f"{ppath}.verify_tls", "false is refused: Pystol always verifies "
                         "TLS (the worker trusts the cluster's CA for Service proxies)")
            ok = False
        for key in provider:
            if key not in ("type", "url", "method", "headers", "arguments", "timeout",
                           "verify_tls", "secrets", "expected_status"):
                self.problem(f"{ppath}.{key}", "not an http provider key Pystol maps")
                ok = False
        probe: dict[str, Any] = {"type": "http"}
        timeout = self.values.substitute(provider.get("timeout"), f"{ppath}.timeout",
                                         self.problems)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                    or not 0 < timeout <= 60:
                self.problem(f"{ppath}.timeout", "a number of seconds in (0, 60]")
                ok = False
            else:
                probe["run"] = {"timeout": timeout}
        rest = PATH_OF_URL.match(url)
        proxied = SERVICE_PROXY.match(rest["rest"]) if rest else None
        if proxied:
            service: dict[str, Any] = {"namespace": proxied["ns"], "name": proxied["name"],
                                       "path": proxied["path"] or "/"}
            port = proxied["port"]
            if port:
                service["port"] = int(port) if port.isdigit() else port
            probe["service"] = service
        else:
            probe["url"] = url
        if with_tolerance:
            status = self.status_tolerance(tolerance, f"{path}.tolerance")
            if status is None:
                return None
            probe.update(status)
        else:
            probe["status_range"] = [100, 599]  # a method probe: recorded, never judged
        return probe if ok else None

    def status_tolerance(self, tolerance: Any, path: str) -> dict[str, Any] | None:
        """An http probe's output is `{status, headers, body}`: an int tolerance compares
        the status, a list is membership of the status (for a dict with `status`, chaoslib
        does not read a 2-item list as a range), `range` is inclusive."""
        if isinstance(tolerance, bool):
            self.problem(path, "a boolean never equals an http probe's output; give a status")
            return None
        if isinstance(tolerance, int):
            return {"expect_status": tolerance}
        if isinstance(tolerance, list):
            if not tolerance or not all(isinstance(t, int) and not isinstance(t, bool)
                                        for t in tolerance):
                self.problem(path, "a list of statuses (integers)")
                return None
            return {"expect_status": list(tolerance)}
        if isinstance(tolerance, Mapping):
            return self.range_tolerance(tolerance, path, "status_range", target="status")
        self.problem(path, f"{type(tolerance).__name__} tolerance is not mapped for http "
                     "probes (an int, a list, or a range)")
        return None

    def range_tolerance(self, tolerance: Mapping[str, Any], path: str, key: str,
                        target: str | None) -> dict[str, Any] | None:
        kind = tolerance.get("type")
        if kind in ("jsonpath", "regex", "probe"):
            self.problem(f"{path}.type", f"{kind} tolerances are not mapped (Pystol compares "
                         "typed values only)")
            return None
        if kind != "range":
            self.problem(f"{path}.type", f"unknown tolerance type {kind!r}")
            return None
        bounds = tolerance.get("range")
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(
                isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
            self.problem(f"{path}.range", "[low, high], two integers")
            return None
        if tolerance.get("target", target) != target:
            self.problem(f"{path}.target", f"only {target or 'the value'} is compared")
            return None
        if key == "status_range":
            return {key: list(bounds)}
        return {"op": "between", "value": list(bounds)}

    def k8s_probe(self, function: _Function, args: dict[str, Any], tolerance: Any,
                  path: str, with_tolerance: bool) -> list[dict[str, Any]]:
        """chaosk8s probes as k8s probes, with chaosk8s 0.39.0's semantics (`pod/probes.py`,
        `deployment/probes.py`, `service/probes.py`)."""
        apath = f"{path}.provider.arguments"
        ns = args["ns"]
        if function.returns == "bool" and with_tolerance and tolerance is not True:
            if isinstance(tolerance, int) and not isinstance(tolerance, bool):
                self.problem(f"{path}.tolerance", f"{tolerance} compared with the probe's "
                             "True passes only by Python's True == 1; write true")
            else:
                self.problem(f"{path}.tolerance", f"{function.func} returns true or fails: "
                             "the only tolerance that can hold is true")
            return []
        func = function.func
        if func == "count_pods":
            pods: dict[str, Any] = {"label_selector": args["label_selector"] or None}
            if args["phase"] is not None:
                if args["phase"] not in PHASES:
                    self.problem(f"{apath}.phase", f"one of {', '.join(PHASES)}")
                    return []
                pods["phase"] = args["phase"]
            if not with_tolerance:
                return [{"namespace": ns, "pods": {**pods, "op": "ge", "value": 0}}]
            compare = self.count_tolerance(tolerance, f"{path}.tolerance")
            return [] if compare is None else [{"namespace": ns, "pods": {**pods, **compare}}]
        if func == "pods_in_phase":
            # True when some pod matches and every matching pod is in the phase.
            if args["phase"] not in PHASES:
                self.problem(f"{apath}.phase", f"one of {', '.join(PHASES)}")
                return []
            selector = args["label_selector"] or None
            return [{"namespace": ns, "pods": {"label_selector": selector, "op": "ge",
                                                "value": 1}},
                    {"namespace": ns, "pods": {"label_selector": selector,
                                                "phase": args["phase"], "op": "ge",
                                                "value": "100%"}}]
        if func == "pods_in_conditions":
            conditions = args["conditions"]
            types: list[str] = []
            if not isinstance(conditions, list) or not conditions:
                self.problem(f"{apath}.conditions", "a list of {type, status} conditions")
                return []
            for index, condition in enumerate(conditions):
                if not (isinstance(condition, Mapping) and set(condition) == {"type", "status"}
                        and condition["status"] == "True"
                        and isinstance(condition["type"], str)):
                    self.problem(f"{apath}.conditions[{index}]", "only {type: T, status: "
                                 "\"True\"} conditions are mapped")
                    return []
                types.append(condition["type"])
            selector = args["label_selector"] or None
            return [{"namespace": ns, "pods": {"label_selector": selector, "op": "ge",
                                                "value": 1}},
                    {"namespace": ns, "pods": {"label_selector": selector,
                                                "conditions": types, "op": "ge",
                                                "value": "100%"}}]
        if func == "all_pods_healthy":
            # True when no pod of the namespace is Failed or in a phase other than Running
            # or Succeeded (an empty namespace is healthy).
            return [{"namespace": ns, "pods": {"phase": phase, "op": "eq", "value": 0}}
                    for phase in ("Pending", "Failed", "Unknown")]
        if func in ("deployment_available_and_healthy", "deployment_fully_available"):
            if args["label_selector"]:
                self.problem(f"{apath}.label_selector", "not mapped: the Deployment is "
                             "found by name")
                return []
            # chaosk8s: available_and_healthy is `status.available_replicas ==
            # spec.replicas` now (an unset count is None: a Deployment scaled to 0 is not
            # healthy for it); fully_available waits up to `timeout` for
            # `status.ready_replicas == spec.replicas`.
            counted = ("status.availableReplicas" if func ==
                       "deployment_available_and_healthy" else "status.readyReplicas")
            body: dict[str, Any] = {"namespace": ns, "object": {
                "kind": "Deployment", "name": args["name"], "check": "field",
                "field": {"path": counted, "op": "eq", "value_from": "spec.replicas"}}}
            if func == "deployment_fully_available":
                timeout = args["timeout"]
                if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                        or not 0 < timeout <= 600:
                    self.problem(f"{apath}.timeout", "seconds in (0, 600]")
                    return []
                attempts = max(1, min(10, int(timeout // 5) or 1))
                body["run"] = {"attempts": attempts, "retry_interval": 5}
            return [body]
        if func == "service_is_initialized":
            if args["label_selector"] or not args["name"]:
                self.problem(apath, "service_is_initialized is mapped with a name only")
                return []
            return [{"namespace": ns, "object": {"kind": "Service", "name": args["name"],
                                                 "check": "present"}}]
        self.problem(f"{path}.provider.func", f"{func} is not mapped as a probe")
        return []

    def count_tolerance(self, tolerance: Any, path: str) -> dict[str, Any] | None:
        """count_pods returns an int: an int tolerance is equality, a 2-item list an
        inclusive range, another list membership, `range` inclusive."""
        if isinstance(tolerance, bool):
            self.problem(path, "a boolean compared with a count passes only by Python's "
                         "True == 1; give a count")
            return None
        if isinstance(tolerance, int):
            return {"op": "eq", "value": tolerance}
        if isinstance(tolerance, list):
            if not tolerance or not all(isinstance(t, int) and not isinstance(t, bool)
                                        for t in tolerance):
                self.problem(path, "a list of counts (integers)")
                return None
            if len(tolerance) == 2:
                return {"op": "between", "value": list(tolerance)}
            return {"op": "in", "value": list(tolerance)}
        if isinstance(tolerance, Mapping):
            return self.range_tolerance(tolerance, path, "pods", target=None)
        self.problem(path, f"{type(tolerance).__name__} tolerance is not mapped for a count")
        return None

    # actions ---------------------------------------------------------------------------

    def action_job(self, function: _Function, args: dict[str, Any], path: str
                   ) -> tuple[dict[str, Any], bool] | None:
        """(job document, held until rollback) for a chaosk8s action."""
        apath = f"{path}.provider.arguments"
        func = function.func
        if func == "terminate_pods":
            if args["name_pattern"] is not None:
                self.problem(f"{apath}.name_pattern", "not mapped: Pystol selects pods by "
                             "label selector, never by a regular expression on names")
                return None
            target: dict[str, Any] = {"namespaces": [args["ns"]],
                                      "label_selector": args["label_selector"] or None}
            qty = args["qty"]
            if args["all"] is True:
                target["mode"] = "all"
            elif isinstance(qty, bool) or not isinstance(qty, int) or qty < 1:
                self.problem(f"{apath}.qty", "a whole number of at least 1 (0 kills nothing)")
                return None
            elif args["mode"] == "fixed":
                target.update(mode="fixed", value=qty)
            elif args["mode"] == "percentage":
                if qty > 100:
                    self.problem(f"{apath}.qty", "a percent from 1 to 100")
                    return None
                target.update(mode="fixed-percent", value=qty)
            else:
                self.problem(f"{apath}.mode", "fixed or percentage")
                return None
            if args["order"] not in ("alphabetic", "oldest"):
                self.problem(f"{apath}.order", "alphabetic or oldest")
                return None
            params: dict[str, Any] = {}
            grace = args["grace_period"]
            if isinstance(grace, bool) or not isinstance(grace, int):
                self.problem(f"{apath}.grace_period", "a whole number of seconds")
                return None
            if grace >= 0:
                params["grace_period_seconds"] = grace
            return {"action": "pod-kill", "target": target, "params": params}, False
        if func == "scale_deployment":
            replicas = args["replicas"]
            if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
                self.problem(f"{apath}.replicas", "a whole number of replicas, 0 or more")
                return None
            return {"action": "deployment-scale",
                    "target": {"namespaces": [args["ns"]], "mode": "all",
                               "field_selector": f"metadata.name={args['name']}"},
                    "params": {"replicas": replicas, "kinds": ["Deployment"]},
                    "duration": self.max_hold_seconds}, True
        if func in ("drain_nodes", "cordon_node"):
            node_target = self.node_target(args, apath)
            if node_target is None:
                return None
            if func == "cordon_node":
                return {"action": "node-cordon", "target": node_target,
                        "duration": self.max_hold_seconds}, True
            for key in ("pod_label_selector", "pod_namespace"):
                if args[key] is not None:
                    self.problem(f"{apath}.{key}", "not mapped: Pystol drains a node of all "
                                 "its pods")
                    return None
            if args["delete_pods_with_local_storage"] is not False:
                self.problem(f"{apath}.delete_pods_with_local_storage", "true is refused: "
                             "Pystol never deletes pods' local data")
                return None
            count = args["count"]
            if count is not None:
                if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                    self.problem(f"{apath}.count", "a whole number of nodes, at least 1")
                    return None
                if "names" not in node_target:
                    node_target.update(mode="fixed", value=count)
            timeout = args["timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                    or not 0 < timeout <= 3600:
                self.problem(f"{apath}.timeout", "seconds in (0, 3600]")
                return None
            return {"action": "node-drain", "target": node_target,
                    "params": {"eviction_timeout": timeout, "fail_on_blocked_eviction": True},
                    "duration": self.max_hold_seconds}, True
        if func == "uncordon_node":
            self.problem(f"{path}.provider.func", "uncordon_node undoes a cordon or drain: it "
                         "is mapped as a rollback of one, not as a method action")
            return None
        self.problem(f"{path}.provider.func", f"{func} is not mapped as an action")
        return None

    def node_target(self, args: dict[str, Any], apath: str) -> dict[str, Any] | None:
        name, selector = args["name"], args["label_selector"]
        if name is None and not selector:
            self.problem(apath, "give name or label_selector: without either, chaosk8s acts "
                         "on every node of the cluster, which Pystol refuses")
            return None
        if name is not None:
            if not isinstance(name, str) or not name:
                self.problem(f"{apath}.name", "a node name")
                return None
            return {"names": [name], "mode": "all"}
        return {"label_selector": selector, "mode": "all"}

    # names -----------------------------------------------------------------------------

    def step_name(self, text: str) -> str:
        base = _trim(_slug(text) or "step")
        name, index = base, 2
        while name in self.names:
            suffix = f"-{index}"
            name = _trim(base[:63 - len(suffix)] + suffix)
            index += 1
        self.names.add(name)
        return name


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _trim(name: str) -> str:
    return name[:63].rstrip("-") or "x"


def _pause(value: Any, path: str, state: _Import) -> float | None:
    value = state.values.substitute(value, path, state.problems)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        state.problem(path, "a number of seconds, 0 or more")
        return None
    return float(value)


def _job_problems(job: dict[str, Any], path: str, state: _Import) -> bool:
    try:
        JobSpec.model_validate(job)
    except ValidationError as error:
        for item in error.errors():
            loc = ".".join(str(part) for part in item["loc"])
            state.problem(path, f"maps to a Pystol job whose {loc} is invalid: {item['msg']}")
        return False
    return True


_PROBE_LIST: TypeAdapter[Any] = TypeAdapter(list[Probe])


def _probe_problems(probes: list[dict[str, Any]], path: str, state: _Import) -> bool:
    try:
        _PROBE_LIST.validate_python(probes)
    except ValidationError as error:
        for item in error.errors():
            loc = ".".join(str(part) for part in item["loc"][2:])
            state.problem(path, f"maps to a Pystol probe whose {loc} is invalid: "
                                f"{item['msg']}")
        return False
    return True


def _check_document(document: Mapping[str, Any], problems: list[Problem]) -> None:
    """`ensure_experiment_is_valid`'s top-level rules, and what Pystol refuses there."""
    for key in ("title", "description"):
        if not isinstance(document.get(key), str) or not document[key].strip():
            problems.append((key, f"an experiment needs a {key} (text)"))
    if not isinstance(document.get("method"), list):
        problems.append(("method", "an experiment needs a method (a list; [] is allowed)"))
    tags = document.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        problems.append(("tags", "a list of non-empty strings"))
    if document.get("controls"):
        problems.append(("controls", "controls run arbitrary Python around the experiment; "
                                     "Pystol has none"))
    runtime = document.get("runtime")
    if runtime is not None:
        hypothesis = (runtime.get("hypothesis") or {}) if isinstance(runtime, Mapping) else {}
        strategy = hypothesis.get("strategy", "default") if isinstance(hypothesis,
                                                                       Mapping) else None
        if strategy != "default":
            problems.append(("runtime.hypothesis.strategy", f"{strategy!r} is not mapped: "
                             "Pystol checks the hypothesis before and after the method (use "
                             "continuous probes for checks during it)"))
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            problems.append((str(key), "not a Chaos Toolkit experiment key Pystol knows"))


def import_experiment(document: Mapping[str, Any], *,
                      environ: Mapping[str, str] | None = None,
                      name: str | None = None,
                      max_hold_seconds: float = DEFAULT_HOLD_SECONDS) -> ExperimentSpec:
    """The Pystol experiment for a Chaos Toolkit experiment document.

    `environ`: where env-backed configuration and secrets are read from — the CLI passes
    `os.environ` (the user's shell, as `chaos run` reads it); the API passes None and so
    refuses them. `name`: the experiment's name (default: from its title).
    `max_hold_seconds`: the cap on faults held until a rollback (scale, cordon, drain).

    Raises `ChaosToolkitRefused` with every (CTK path, reason) found.
    """
    if not isinstance(document, Mapping):
        raise ChaosToolkitRefused([("", "a Chaos Toolkit experiment is a JSON object")])
    if json_depth(document, MAX_CTK_DEPTH) > MAX_CTK_DEPTH:
        raise ChaosToolkitRefused([("", f"nested more than {MAX_CTK_DEPTH} levels deep")])
    size = 0
    try:  # streamed, stopping at the cap: shared subtrees must not become one huge string
        for chunk in json.JSONEncoder(separators=(",", ":"), default=str).iterencode(
                document):
            size += len(chunk.encode())
            if size > MAX_CTK_BYTES:
                raise ChaosToolkitRefused([("", f"the experiment is over {size:,} bytes as "
                                                f"JSON; at most {MAX_CTK_BYTES:,}")])
    except (TypeError, ValueError, RecursionError) as error:
        if isinstance(error, ChaosToolkitRefused):
            raise
        raise ChaosToolkitRefused([("", "not a JSON document")]) from None
    entries = _entry_count(document)
    if entries > MAX_CTK_ACTIVITIES:
        raise ChaosToolkitRefused([("", f"{entries:,} activities (hypothesis probes, method "
                                        "and rollbacks, refs included); at most "
                                        f"{MAX_CTK_ACTIVITIES}")])
    try:
        return _import(document, environ, name, max_hold_seconds)
    except ChaosToolkitRefused:
        raise
    except Exception as error:  # a shape no check foresaw: a 422, never a 500
        raise ChaosToolkitRefused([("", f"cannot be mapped ({type(error).__name__}: "
                                        f"{str(error)[:200]})")]) from None


def _entry_count(document: Mapping[str, Any]) -> int:
    hypothesis = document.get("steady-state-hypothesis")
    probes = hypothesis.get("probes") if isinstance(hypothesis, Mapping) else None
    return sum(len(entries) for entries in (probes, document.get("method"),
                                            document.get("rollbacks"))
               if isinstance(entries, list))


def _import(document: Mapping[str, Any], environ: Mapping[str, str] | None,
            name: str | None, max_hold_seconds: float) -> ExperimentSpec:
    problems: list[Problem] = []
    _check_document(document, problems)
    values = _collect_values(document, environ, problems)
    state = _Import(document, values, max_hold_seconds, problems)
    if problems and any(path in ("title", "description", "method") for path, _ in problems):
        raise ChaosToolkitRefused(problems)

    hypothesis: dict[str, Any] | None = None
    raw_hypothesis = document.get("steady-state-hypothesis")
    if raw_hypothesis is not None:
        hypothesis = _hypothesis(raw_hypothesis, state)

    method = _method(document["method"], state)
    rollbacks = _rollbacks(document.get("rollbacks") or [], state)
    if state.problems:
        raise ChaosToolkitRefused(state.problems)

    title = values.substitute(document["title"], "title", state.problems)
    spec: dict[str, Any] = {
        "name": name or _trim(_slug(str(title))) or "chaostoolkit-experiment",
        "title": str(title)[:200],
        "description": str(values.substitute(document["description"], "description",
                                             state.problems))[:4000],
        "tags": [_trim(_slug(tag)) for tag in document.get("tags", [])][:20],
        "method": method,
        "rollbacks": rollbacks,
        "source_format": "chaostoolkit",
        "source_document": redacted(document),
    }
    if hypothesis is not None:
        spec["hypothesis"] = hypothesis
    if state.problems:
        raise ChaosToolkitRefused(state.problems)
    try:
        return ExperimentSpec.model_validate(spec)
    except ExperimentInvalid as error:
        raise ChaosToolkitRefused([(".".join(map(str, error.loc)), error.message)]) from None
    except ValidationError as error:
        raise ChaosToolkitRefused([
            (".".join(str(part) for part in item["loc"]),
             f"the mapped Pystol experiment is invalid: {item['msg']}")
            for item in error.errors()]) from None


def _hypothesis(raw: Any, state: _Import) -> dict[str, Any] | None:
    path = "steady-state-hypothesis"
    if not isinstance(raw, Mapping):
        state.problem(path, "a mapping with title and probes")
        return None
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        state.problem(f"{path}.title", "the hypothesis needs a title")
        return None
    probes: list[dict[str, Any]] = []
    raw_probes = raw.get("probes") or []
    if not isinstance(raw_probes, list):
        state.problem(f"{path}.probes", "a list of probes")
        return None
    for index, item in enumerate(raw_probes):
        ppath = f"{path}.probes[{index}]"
        found = state.resolve(item, ppath)
        if found is None:
            continue
        _, activity = found
        if activity.get("type") != "probe":
            state.problem(f"{ppath}.type", "the hypothesis holds probes only")
            continue
        if "tolerance" not in activity:
            state.problem(f"{ppath}.tolerance", "a hypothesis probe needs a tolerance")
            continue
        mapped = state.probes(activity, ppath, ProbeMode.EDGE,
                              state.step_name(activity["name"]), with_tolerance=True)
        if mapped and _probe_problems(mapped, ppath, state):
            probes.extend(mapped)
    return {"title": str(state.values.substitute(title, f"{path}.title",
                                                 state.problems))[:200], "probes": probes}


def _method(raw: list[Any], state: _Import) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        path = f"method[{index}]"
        found = state.resolve(item, path)
        if found is None:
            continue
        _, activity = found
        name = state.step_name(activity["name"])
        pauses = activity.get("pauses") or {}
        if not isinstance(pauses, Mapping) or set(pauses) - {"before", "after"}:
            state.problem(f"{path}.pauses", "before and/or after, in seconds")
            pauses = {}
        before = _pause(pauses.get("before"), f"{path}.pauses.before", state) \
            if "before" in pauses else None
        if before:
            steps.append({"type": "wait", "name": state.step_name(f"{name}-pause-before"),
                          "duration": before})
        if activity["type"] == "probe":
            mapped = state.probes(activity, path, ProbeMode.SOT, "probe",
                                  with_tolerance=False)
            if mapped and _probe_problems(mapped, path, state):
                steps.append({"type": "probe", "name": name, "probes": mapped})
        else:
            step = _action_step(activity, path, name, state)
            if step is not None:
                steps.append(step)
        after = _pause(pauses.get("after"), f"{path}.pauses.after", state) \
            if "after" in pauses else None
        if after:
            steps.append({"type": "wait", "name": state.step_name(f"{name}-pause-after"),
                          "duration": after})
    return steps


def _action_step(activity: Mapping[str, Any], path: str, name: str, state: _Import
                 ) -> dict[str, Any] | None:
    if activity["provider"].get("type") == "http":
        state.problem(f"{path}.provider.type", "an http action sends a request that changes "
                      "something; Pystol's http calls only read (use a probe)")
        return None
    found = state.provider_function(activity, path, "action")
    if found is None:
        return None
    function, args = found
    mapped = state.action_job(function, args, path)
    if mapped is None:
        return None
    job, held = mapped
    if not _job_problems(job, path, state):
        return None
    if held:
        state.held.append(_Held(name, function.func, args))
    # Chaos Toolkit records a failed activity and runs on (and terminate_pods matching
    # nothing is a success), so a step that fails or finds no target does not abort.
    return {"type": "action", "name": name, "job": job, "on_failure": "continue",
            "hold": "until-rollback" if held else "duration"}


_RELEASES = {"scale_deployment": ("scale_deployment",),
             "uncordon_node": ("cordon_node", "drain_nodes")}


def _rollbacks(raw: Any, state: _Import) -> list[dict[str, Any]]:
    """Rollbacks that undo a fault a method step holds become that step's `release`: the
    journal puts back what the step changed (the count or flag it found, not the value
    the rollback names). Anything else would make a new change and is refused."""
    if not isinstance(raw, list):
        state.problem("rollbacks", "a list of actions")
        return []
    released: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        path = f"rollbacks[{index}]"
        found = state.resolve(item, path)
        if found is None:
            continue
        _, activity = found
        provider = activity["provider"]
        if activity["type"] != "action" or provider.get("type") != "python":
            if provider.get("type") == "process":
                state.problem(f"{path}.provider.type", "process providers run a command; "
                              "Pystol runs no commands")
            else:
                state.problem(path, "a rollback that makes a new change is not mapped: "
                              "Pystol reverts its own faults")
            continue
        module, func = provider.get("module"), provider.get("func")
        function = _FUNCTIONS.get((module, func)) if isinstance(module, str) and \
            isinstance(func, str) else None
        if function is None or func not in _RELEASES:
            if function is None:
                state.provider_function(activity, path, "action")  # says why
            else:
                state.problem(path, "a rollback that makes a new change is not mapped: "
                              "Pystol reverts its own faults")
            continue
        arguments = state.values.substitute(provider.get("arguments"),
                                            f"{path}.provider.arguments", state.problems)
        args = function.bind(arguments, f"{path}.provider.arguments", state.problems)
        if args is None:
            continue
        held = _held_step(state.held, _RELEASES[func], func, args)
        if held is None:
            state.problem(path, f"{func} undoes nothing the method holds (no earlier "
                          f"{' or '.join(_RELEASES[func])} on the same target); a rollback "
                          "that makes a new change is not mapped: Pystol reverts its own "
                          "faults")
            continue
        if func == "scale_deployment" and args["replicas"] == held.arguments["replicas"]:
            state.problem(f"{path}.provider.arguments.replicas", f"scales {args['name']} to "
                          f"{args['replicas']} again, as the method did: that is not an undo "
                          "(Pystol's release puts back the count the method step found)")
            continue
        released.append({"type": "release", "name": state.step_name(activity["name"]),
                         "step": held.step})
    return released


def _held_step(held: list[_Held], functions: tuple[str, ...], func: str,
               args: Mapping[str, Any]) -> _Held | None:
    for step in held:
        if step.function not in functions:
            continue
        if func == "scale_deployment":
            if (step.arguments["name"], step.arguments["ns"]) == (args["name"], args["ns"]):
                return step
        elif (step.arguments["name"], step.arguments["label_selector"]) == (
                args["name"], args["label_selector"]):
            return step
    return None


__all__ = ["CHAOSK8S_VERSION", "CHAOSLIB_VERSION", "ChaosToolkitRefused", "env_variables",
           "import_experiment", "is_chaostoolkit", "redacted"]
