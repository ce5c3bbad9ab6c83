"""The admin policy: what chaos is allowed at all, whoever asks.

Roles and scopes (`core.access`) say who may act where; the policy says what may be done
there. It is one YAML document the admin owns (`PYSTOL_POLICY_FILE`; a ConfigMap in the
chart), read once at process start by the API, the watcher, beat and every worker, and
enforced twice: by the submission service before a job is stored, and by the worker
before the job touches the cluster (so a job queued under an older policy, or a record
edited in Redis, still meets the policy the worker runs under).

Without a file the defaults hold, and they are the safe ones: only the built-in images
for pod-failure and the stress actions, control-plane nodes never targeted, a drain never
forced, at most 1,000 targets per job, schedules no more often than once a minute, and
probes (http-probe, steady-state probes) kept away from loopback, link-local, cloud
metadata and Pystol's own Redis and API (`probes`; `pystol_worker.safety.outbound_http`
enforces it).
"""

from __future__ import annotations

import fnmatch
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pystol_worker.core.destinations import AllowEntry, parse_allow_entry
from pystol_worker.core.model import Duration
from pystol_worker.core.schedule_model import (
    TimeWindow,
    ZoneName,
    next_opening,
    window_problem,
)

#: The images Pystol's own actions use by default; the default policy allows only these.
DEFAULT_IMAGES = ("registry.k8s.io/pause:3.9", "ghcr.io/colinianking/stress-ng:*")

#: Signals container-kill may send (by name). The default policy allows them all.
Signal = Literal["SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2",
                 "SIGSTOP", "SIGCONT"]


class OutsideWindows(StrEnum):
    REFUSE = "refuse"  # 403 at submission, and the worker fails a job it starts outside
    WAIT = "wait"      # stored, and queued when the next window opens


class ActionRule(BaseModel):
    """These actions are allowed in these namespaces (`*` matches any; globs allowed)."""

    model_config = ConfigDict(extra="forbid")

    namespaces: list[str] = Field(min_length=1, max_length=1000, examples=[["shop", "cart"]])
    actions: list[str] = Field(min_length=1, max_length=100, examples=[["pod-kill"]])

    def allows(self, action: str, namespace: str | None) -> bool:
        """namespace None: a node-level or cluster-wide job, allowed by a rule whose
        namespaces include `*`."""
        if not any(fnmatch.fnmatchcase(action, pattern) for pattern in self.actions):
            return False
        if namespace is None:
            return "*" in self.namespaces
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)


def _allow_entry(text: str) -> str:
    parse_allow_entry(text)  # ValueError says what is wrong with the entry
    return text


#: One `probes.allow` entry, checked when the policy loads (the error names its index).
AllowText = Annotated[str, AfterValidator(_allow_entry)]


class ProbePolicy(BaseModel):
    """Where probes may connect, and how much of a worker one call may take.

    A probe (http-probe's `params.url`, a job's steady-state `probes`) is a request
    Pystol's worker makes from inside the cluster on a job's behalf. By default it may
    reach the cluster's services and the outside world (private and public addresses),
    but not loopback, link-local, multicast or reserved addresses, cloud metadata, or
    Pystol's own Redis and API: reading those is what a job that wants to abuse the
    worker would do. `allow` lists the admin's exceptions."""

    model_config = ConfigDict(extra="forbid")

    allow: list[AllowText] = Field(
        default_factory=list, max_length=500,
        examples=[["127.0.0.1/32", "10.0.0.0/8", "web.shop.svc.cluster.local",
                   "*.internal.example:8443", "[fd00::1]:8080"]],
        description="Destinations probes may reach although they are refused by default: "
                    "networks (`127.0.0.0/8`), addresses (`10.1.2.3`), host names as the "
                    "URL writes them (globs allowed: `*.shop.svc.cluster.local`), each with "
                    "an optional `:PORT` (`[IPV6]:PORT` for IPv6). Cloud metadata and "
                    "Pystol's own Redis and API are opened only by an entry that names "
                    "exactly one address or name and its port (`127.0.0.1:6379`), never "
                    "by a network. Default: none.")
    url_body_checks: bool = Field(False, description="Whether a steady-state http probe "
                                  "given by `url` may test its answer's body "
                                  "(`body_contains`). A URL can reach any in-cluster "
                                  "Service of any tenant, and a substring test leaks its "
                                  "content one guess at a time. Default: no; `service` "
                                  "probes (their namespace is checked) always may.")
    follow_redirects: bool = Field(False, description="Whether a probe may follow "
                                   "redirects at all (http-probe still asks with "
                                   "`params.follow_redirects`). Each hop is checked like "
                                   "the first URL. Default: no, a redirect is the answer.")
    max_redirects: int = Field(5, ge=1, le=20, description="The most redirects one call "
                               "follows when redirects are allowed.")
    max_body_bytes: int = Field(1024 * 1024, ge=0, le=64 * 1024 * 1024,
                                description="A probe reads at most this much of an "
                                            "answer's body, then hangs up (the call counts "
                                            "with its status, and says the body was cut).")
    max_seconds: Duration = Field(30.0, gt=0, le=300, description="The longest one call "
                                  "may take, connecting, redirects and reading the body "
                                  "included; a job's `timeout` may not exceed it, and a "
                                  "server that answers one byte at a time is cut off at "
                                  "it.")

    def allow_entries(self) -> list[AllowEntry]:
        return [parse_allow_entry(text) for text in self.allow]


# Namespaces that no tenant-sized glob matches all of (first letters, a digit, lengths 1
# to 63, dashes): used to tell a glob that opens an endpoint to everyone.
_ANY_NAMESPACES = ("a", "z", "0", "9", "q-7", "kube-system", "m" * 63, "1x")


class PrometheusEndpoint(BaseModel):
    """A Prometheus the admin names for prometheus probes and error-budget guards. Jobs
    name it; they never give a URL. Its `namespaces` say whose jobs may query it (a query
    reads whatever series it names: put a label-enforcing proxy, such as
    prom-label-proxy, in front of a shared Prometheus for tenant isolation)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048,
                     examples=["http://prometheus.monitoring:9090"])
    namespaces: list[str] = Field(default_factory=list, max_length=1000,
                                  description="Namespaces whose jobs may query it (globs). "
                                  "Default: none, until the admin opens it. `*` (or any "
                                  "glob that matches every namespace) is cluster scope: "
                                  "only for submitters with cluster.chaos, because a query "
                                  "reads whatever series it names.")
    token_file: str | None = Field(None, max_length=4096, description="A bearer token file "
                                   "sent to it (a mounted Secret).")
    max_seconds: Duration = Field(10.0, gt=0, le=60, description="The longest one query "
                                  "may take.")

    def allows(self, namespace: str | None) -> bool:
        if namespace is None:
            return self.cluster_wide
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)

    @property
    def cluster_wide(self) -> bool:
        """Whether one of its globs opens it to every namespace (`*`, `?*`, `[a-z0-9]*`…):
        then a query from any tenant reads any tenant's series, so only cluster scope
        (cluster.chaos) may use it. Judged by matching namespaces that share no letter,
        digit or length: globs that match them all match (nearly) everything."""
        return all(self.allows(sample) for sample in _ANY_NAMESPACES)


class PrometheusPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoints: list[PrometheusEndpoint] = Field(default_factory=list, max_length=50)
    max_body_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024,
                                description="The most of one answer a query reads.")

    def endpoint(self, name: str) -> PrometheusEndpoint | None:
        return next((item for item in self.endpoints if item.name == name), None)


class Policy(BaseModel):
    """The admin policy; every field has a safe default."""

    model_config = ConfigDict(extra="forbid")

    actions: list[ActionRule] = Field(
        default_factory=lambda: [ActionRule(namespaces=["*"], actions=["*"])],
        description="Which actions are allowed in which namespaces; a job is allowed when "
                    "one rule allows its action in each of its namespaces. Default: every "
                    "action everywhere (roles and protected namespaces still apply).")
    max_targets_per_job: int = Field(1000, ge=1, le=100_000, description="No job hits more "
                                     "targets than this, whatever its mode asks.")
    images: list[str] = Field(default_factory=lambda: list(DEFAULT_IMAGES), max_length=200,
                              description="Images pod-failure and the stress actions may run "
                                          "(globs, e.g. `registry.example/chaos/*`).")
    signals: list[Signal] = Field(default_factory=lambda: list(get_args(Signal)),
                               description="Signals container-kill may send.")
    include_control_plane: bool = Field(False, description="Node actions may choose "
                                        "control-plane nodes.")
    drain_force: bool = Field(False, description="node-drain evicts pods no controller "
                                                 "owns (they are gone for good).")
    min_schedule_period: Duration = Field(60.0, description="The shortest interval (or mean "
                                          "time between failures) a schedule may have.")
    max_fault_duration: Duration | None = Field(None, description="The longest a fault may "
                                                "be held; none: PYSTOL_MAX_JOB_SECONDS bounds "
                                                "it.")
    windows: list[TimeWindow] = Field(default_factory=list, max_length=50,
                                      description="When chaos is allowed; none: always.")
    time_zone: ZoneName = Field("UTC", description="IANA time zone of the windows and "
                                                   "dates.")
    excluded_dates: list[date] = Field(default_factory=list, max_length=1000)
    outside_windows: OutsideWindows = Field(OutsideWindows.REFUSE, description="What "
                                            "happens to a job submitted outside the windows.")
    probes: ProbePolicy = Field(default_factory=ProbePolicy, description="Where probes "
                                "(http-probe, steady-state probes) may connect, and the "
                                "caps on one call.")
    prometheus: PrometheusPolicy = Field(default_factory=PrometheusPolicy, description="The "
                                         "Prometheus servers prometheus probes and "
                                         "error-budget guards may query, by name. Default: "
                                         "none.")


    # -- questions the checks ask ----------------------------------------------------------

    def action_allowed(self, action: str, namespace: str | None) -> bool:
        return any(rule.allows(action, namespace) for rule in self.actions)

    def image_allowed(self, image: str) -> bool:
        return any(fnmatch.fnmatchcase(image, pattern) for pattern in self.images)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def window_problem(self, when: datetime) -> str | None:
        """Why chaos is not allowed at `when`, or None."""
        if not self.windows and not self.excluded_dates:
            return None
        return window_problem(self, when)

    def next_opening(self, when: datetime) -> datetime | None:
        if not self.windows and not self.excluded_dates:
            return when
        return next_opening(self, when)


class PolicyError(Exception):
    """The policy file cannot be used; the message names the file and each problem."""


def load_policy(path: str) -> Policy:
    """The policy in `path`, or the defaults for an empty path. Raises PolicyError."""
    if not path:
        return Policy()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read the policy file {path}: {error}") from None
    try:
        document: Any = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as error:
        raise PolicyError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise PolicyError(f"{path}: expected a mapping of policy fields")
    try:
        return Policy.model_validate(document)
    except ValidationError as error:
        lines = [f"{'.'.join(str(part) for part in item['loc']) or '(top)'}: {item['msg']}"
                 for item in error.errors()]
        raise PolicyError(f"{path}: invalid policy:\n  " + "\n  ".join(lines)) from None
