"""hypothesis over custom-resource specs: whatever a PystolAction, PystolClusterAction,
PystolSchedule or PystolClusterSchedule says, its handler ends it with a status.

The handlers are called as kopf calls them (`reconcile_action`, `sync_schedule`) with their
dependencies injected (fakeredis, a recording queue, no cluster, Events recorded), so a
crash anywhere in mapping, validation, authorization or storing shows up here as the
exception kopf would have retried forever. The properties:

- an invalid spec ends `phase: Failed`, its message naming the field path (`spec.…`), and a
  bounded message (whatever the size of the input it echoes);
- a valid spec maps: the job is queued (`Pending`) or the schedule stored (`Active`,
  `Suspended`);
- nothing else: no exception leaves the handler.

Specs come in three shapes: anything JSON can hold (random keys, wrong types, nulls, huge
strings and numbers, unicode, nesting), valid specs with one field replaced by such a
value, and valid specs. Bounded (`max_examples`) and derandomized, so CI draws the same
specs every run; PYSTOL_FUZZ_EXAMPLES raises the budget for a longer local run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from typing import Any

import fakeredis
import hypothesis
import kopf
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from pystol_api.watcher import operator
from pystol_api.watcher.cr_mapping import (
    JOB_FIELDS,
    LEGACY_FIELDS,
    PROBE_FIELDS,
    SCHEDULE_FIELDS,
    TARGET_FIELDS,
    CrInvalid,
    action_job_spec,
    schedule_spec_from_cr,
)
from pystol_api.watcher.kinds import (
    PYSTOL_ACTION,
    PYSTOL_CLUSTER_ACTION,
    PYSTOL_CLUSTER_SCHEDULE,
    PYSTOL_SCHEDULE,
    CrKind,
)
from pystol_api.watcher.operator import (
    JobFollower,
    WatcherContext,
    reconcile_action,
    sync_schedule,
)
from pystol_worker.actions import default_registry
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore
from tests.support.recording_queue import RecordingQueue

EXAMPLES = int(os.environ.get("PYSTOL_FUZZ_EXAMPLES", "200"))
FUZZ = hypothesis.settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                           database=None, print_blob=False,
                           suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.data_too_large,
                                                  HealthCheck.filter_too_much])
NAMESPACE = "team-a"
#: A status message is read by people (kubectl describe) and stored in etcd with the
#: object: whatever a spec echoes into it, it stays this short.
MAX_MESSAGE = 8192
#: `spec.target.labelSelector`, `spec.extra_vars.pystol_killpods_amount`, `spec` itself, ...
FIELD_PATH = re.compile(r"\bspec(\.[^:;\s]+|\[\d+\])*:")

# -- JSON-ish values ------------------------------------------------------------------------------

KEYS = sorted({*JOB_FIELDS, *TARGET_FIELDS, *PROBE_FIELDS, *SCHEDULE_FIELDS, *LEGACY_FIELDS,
               "label_selector", "grace_period_seconds", "gracePeriodSeconds", "url",
               "pystol_killpods_amount", "pystol_killpods_namespace", "amount", "names"})
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=10**300, max_value=10**400), st.just(-(2**63)),
    st.floats(allow_nan=False, allow_infinity=False), st.just(1e308), st.just(0.5),
    st.text(max_size=30), st.sampled_from(["", "0", "1", "-1", "30s", "1e9h", "1h30m",
                                           "pod-kill", "killpods", "app=web", "Ab_C",
                                           "\u0000", "\U0001f600", "team-a", "kube-system",
                                           "* * * * *", "UTC", "[]", "{}", "null"]),
    st.builds(lambda: "x" * 20_000))  # built: a `just` would put 20 kB in every report
JSON = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), children,
                    max_size=5)), max_leaves=25)
#: JSON written into a string, as the original Pystol's `extra_vars` are.
JSON_TEXT = JSON.map(json.dumps)

# -- valid specs -----------------------------------------------------------------------------------

JOB_SPECS = st.one_of(
    st.fixed_dictionaries(
        {"action": st.just("pod-kill"),
         "target": st.fixed_dictionaries(
             {"namespaces": st.just([NAMESPACE])},
             optional={"labelSelector": st.sampled_from(["app=web", "tier in (a,b)", ""]),
                       "mode": st.just("all"), "maxTargets": st.integers(1, 10)})},
        optional={"dryRun": st.booleans(), "duration": st.sampled_from(["30s", "2m", 60]),
                  "params": st.sampled_from([{}, {"gracePeriodSeconds": 0},
                                             {"grace_period_seconds": 5}]),
                  "onConflict": st.sampled_from(["wait", "reject"])}),
    st.fixed_dictionaries(
        {"action": st.just("http-probe"), "target": st.just({}),
         "params": st.fixed_dictionaries({"url": st.just("http://web.team-a/healthz"),
                                          "count": st.integers(1, 5)})}))
ACTION_SPECS = st.one_of(
    JOB_SPECS,
    st.fixed_dictionaries(
        {"role": st.just("killpods"),
         "extra_vars": st.fixed_dictionaries(
             {"pystol_killpods_namespace": st.just(NAMESPACE),
              "pystol_killpods_amount": st.one_of(st.integers(1, 9), st.just("2"))}).map(
             json.dumps)},
        optional={"collection": st.sampled_from(["actions", "pystol.actions"])}),
)
SCHEDULE_SPECS = st.fixed_dictionaries(
    {"template": JOB_SPECS},
    optional={"timeZone": st.sampled_from(["UTC", "Europe/Berlin"]),
              "suspend": st.booleans(), "historyLimit": st.integers(1, 50),
              "concurrencyPolicy": st.sampled_from(["Forbid", "Replace"])},
).flatmap(lambda spec: st.sampled_from([{"schedule": "0 3 * * *"}, {"interval": "1h"},
                                        {"mtbf": "6h"}]).map(lambda when: {**when, **spec}))


# -- specs of the right shape with doubtful values: past the mapping, into validation, the scope
# check, the admin policy and the stores ---------------------------------------------------------

ODD = st.one_of(SCALARS, st.lists(SCALARS, max_size=2))
PLAUSIBLE_TARGETS = st.fixed_dictionaries({}, optional={
    "namespaces": st.lists(st.sampled_from([NAMESPACE, "payments", "kube-system", "Team_A", ""]),
                           max_size=3),
    "labelSelector": st.sampled_from(["app=web", "app in (web,cart)", "a in (", "!!", "",
                                      "x" * 300, "app=web,tier!=db"]),
    "fieldSelector": st.sampled_from(["status.phase=Running", "spec.nodeName==", "=", ""]),
    "names": st.lists(st.sampled_from(["worker-a", "", "n" * 300]), max_size=2),
    "amount": st.one_of(st.integers(-1, 3), st.floats(0, 3), st.just(True)),
    "mode": st.sampled_from(["one", "all", "fixed", "fixed-percent", "random-max-percent",
                             "some"]),
    "value": st.one_of(st.none(), st.integers(-1, 200), st.floats(-1, 200), st.just("5")),
    "maxTargets": st.one_of(st.integers(-1, 5), st.just(10**9)),
    "minAvailable": st.sampled_from([1, 0, -1, "50%", "150%", "x", True]),
})
PARAM_NAMES = ["gracePeriodSeconds", "grace_period_seconds", "url", "count", "replicas",
               "percent", "signal", "distribution", "seed", "container", "kinds", "workers",
               "image", "node", "bogus"]
PLAUSIBLE_JOBS = st.fixed_dictionaries(
    {"action": st.sampled_from(["pod-kill", "node-drain", "node-cordon", "http-probe",
                                "deployment-scale", "container-kill", "cpu-stress",
                                "memory-stress", "pod-failure", "network-partition", "nope"]),
     "target": PLAUSIBLE_TARGETS},
    optional={"params": st.dictionaries(st.sampled_from(PARAM_NAMES), ODD, max_size=3),
              "duration": st.one_of(ODD, st.sampled_from(["30s", "1h", "8d", "-1s", "0"])),
              "recoveryTimeout": st.sampled_from(["10s", "99999h", None]),
              "probes": st.lists(st.fixed_dictionaries(
                  {"url": st.sampled_from(["http://web.team-a/healthz", "ftp://x", ""])},
                  optional={"timeout": st.sampled_from(["1s", "0s", "2h", -1]),
                            "expectStatus": st.integers(0, 1000)}), max_size=2),
              "dryRun": st.one_of(st.booleans(), st.just("yes")),
              "onConflict": st.sampled_from(["wait", "reject", "maybe"]),
              "idempotencyKey": st.sampled_from(["k", ""])})
PLAUSIBLE_SCHEDULES = st.fixed_dictionaries({"template": PLAUSIBLE_JOBS}, optional={
    "schedule": st.sampled_from(["* * * * *", "0 0 31 2 *", "61 * * * *", "@hourly", "",
                                 "*/0 * * * *", "0 9-17 * * mon-fri"]),
    "interval": st.sampled_from(["0s", "1ms", "-1s", "1h", 1e308, "59s"]),
    "mtbf": st.sampled_from(["1s", "6h", 0]),
    "timeZone": st.sampled_from(["UTC", "Mars/Base", "../../etc/passwd", "", "Europe/Berlin"]),
    "suspend": st.one_of(st.booleans(), st.just("no")),
    "concurrencyPolicy": st.sampled_from(["Allow", "Forbid", "Replace", "forbid"]),
    "startingDeadlineSeconds": st.one_of(st.floats(-1, 1e6), st.just(10**400)),
    "historyLimit": st.integers(-1, 2000),
    "windows": st.lists(st.one_of(
        st.sampled_from(["mon-fri 09:00-17:00", "sun 25:00-26:00", "x"]),
        st.fixed_dictionaries({}, optional={"days": st.lists(st.sampled_from(["mon", "xyz"]),
                                                              max_size=2),
                                            "start": st.sampled_from(["09:00", "9", ""]),
                                            "end": st.sampled_from(["17:00", "24:00", "00:00"])
                                            })), max_size=2),
    "excludedDates": st.lists(st.sampled_from(["2030-01-01", "2030-02-30", "x", ""]),
                              max_size=2),
})


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into `value`'s objects and lists, the value itself included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = replaced(copy[head], rest, new)
    return copy


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A valid spec with one part replaced by anything, or one unknown key added."""
    spec = draw(valid)
    path = draw(st.sampled_from(list(paths(spec))))
    if draw(st.booleans()):
        return replaced(spec, path, draw(JSON))
    target = spec
    for part in path:
        target = target[part]
    if not isinstance(target, dict):
        return replaced(spec, path, draw(JSON))
    return replaced(spec, path, {**target, draw(st.text(min_size=1, max_size=12)): draw(JSON)})


# -- the handlers, as kopf calls them --------------------------------------------------------------


PATCHED: dict[str, dict[str, Any]] = {}


class Context(WatcherContext):
    """The watcher's context without a cluster: no node to look up, statuses kept in
    PATCHED."""

    def first_node_address(self) -> str | None:
        return "10.0.0.7"

    def patch_status(self, plural: str, namespace: str | None, name: str,
                     status: Mapping[str, Any]) -> bool:
        """The handler writes a queued job's first status itself (before following it), so
        that kopf's later PATCH cannot put an older phase back; kept for `handle`."""
        PATCHED.setdefault(name, {}).update(status)
        return True


def _no_cluster() -> Any:
    raise AssertionError("the handlers under test talk to no cluster")


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    """One context for the module (building the registry is the slow part); every example
    is a new object (its own uid and name), so none finds another's job or schedule."""
    client = fakeredis.FakeRedis()
    settings = Settings(protected_namespaces=["kube-system"], allow_protected=False,
                        redis_url="redis://unused")
    store, registry = JobStore(client), default_registry()
    submissions = SubmissionService(store, RecordingQueue(), registry, settings,
                                    HaltSwitch(client))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operator, "_event", lambda *args, **kwargs: None)  # no kopf, no cluster
        yield Context(settings=settings, redis=client, store=store, submissions=submissions,
                      registry=registry, follower=JobFollower("redis://unused"),
                      api_client_factory=_no_cluster)


OBJECTS = count()


def body(kind: CrKind, spec: Any) -> dict[str, Any]:
    number = next(OBJECTS)
    meta: dict[str, Any] = {"name": f"fuzz-{number}", "uid": f"uid-{number}", "generation": 1}
    if kind.namespaced:
        meta["namespace"] = NAMESPACE
    return {"apiVersion": "pystol.org/v1alpha1", "kind": kind.kind, "metadata": meta,
            "spec": spec, "status": {}}


ACTION_KINDS = [PYSTOL_ACTION, PYSTOL_CLUSTER_ACTION]
SCHEDULE_KINDS = [PYSTOL_SCHEDULE, PYSTOL_CLUSTER_SCHEDULE]
#: Anything JSON holds, a valid spec with one part replaced, a spec of the right shape with
#: doubtful values, and a valid spec.
ANY_ACTION_SPEC = st.one_of(JSON, mutated(ACTION_SPECS), PLAUSIBLE_JOBS, ACTION_SPECS)
ANY_SCHEDULE_SPEC = st.one_of(JSON, mutated(SCHEDULE_SPECS), PLAUSIBLE_SCHEDULES,
                              SCHEDULE_SPECS)


def handle(ctx: Context, kind: CrKind, spec: Any) -> dict[str, Any]:
    """The kind's handler, called as kopf calls it on a new object; the status it wrote.
    An exception leaving it is what kopf would retry forever, and fails the test."""
    patch = kopf.Patch()
    handler = reconcile_action if kind in ACTION_KINDS else sync_schedule
    obj = body(kind, spec)
    handler(ctx, obj, patch, "create", kind)
    written = PATCHED.pop(obj["metadata"]["name"], {})
    return {**written, **patch.status}


def reasons(status: dict[str, Any]) -> set[str]:
    return {str(c.get("reason")) for c in status.get("conditions") or ()
            if isinstance(c, dict)}


def assert_ended(status: dict[str, Any]) -> None:
    """A status with a phase, a bounded message, and for an invalid spec the field path."""
    assert status.get("phase"), status
    message = str(status.get("message") or "")
    assert len(message) <= MAX_MESSAGE, f"{len(message)} characters"
    if status["phase"] == "Failed" and "InvalidSpec" in reasons(status):
        assert FIELD_PATH.search(message), message


# -- the properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ACTION_KINDS, ids=lambda kind: kind.kind)
@FUZZ
@given(spec=ANY_ACTION_SPEC)
def test_any_action_spec_ends_with_a_status(ctx: Context, kind: CrKind, spec: Any) -> None:
    status = handle(ctx, kind, spec)
    hypothesis.event(f"{status['phase']} {sorted(reasons(status))}")
    assert_ended(status)


@pytest.mark.parametrize("kind", SCHEDULE_KINDS, ids=lambda kind: kind.kind)
@FUZZ
@given(spec=ANY_SCHEDULE_SPEC)
def test_any_schedule_spec_ends_with_a_status(ctx: Context, kind: CrKind, spec: Any) -> None:
    status = handle(ctx, kind, spec)
    hypothesis.event(f"{status['phase']} {sorted(reasons(status))}")
    assert_ended(status)


@pytest.mark.parametrize("kind", ACTION_KINDS, ids=lambda kind: kind.kind)
@FUZZ
@given(spec=ACTION_SPECS)
def test_a_valid_action_spec_queues_its_job(ctx: Context, kind: CrKind, spec: Any) -> None:
    status = handle(ctx, kind, spec)
    assert status["phase"] == "Pending", status
    assert status["jobId"] in ctx.submissions.queue.sent  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", SCHEDULE_KINDS, ids=lambda kind: kind.kind)
@FUZZ
@given(spec=SCHEDULE_SPECS)
def test_a_valid_schedule_spec_is_stored(ctx: Context, kind: CrKind, spec: Any) -> None:
    status = handle(ctx, kind, spec)
    assert status["phase"] == ("Suspended" if spec.get("suspend") else "Active"), status
    assert ctx.schedule_store().exists(status["scheduleId"])


@FUZZ
@given(spec=st.one_of(JSON, mutated(ACTION_SPECS)))
def test_the_mapping_refuses_with_field_paths_or_maps(spec: Any) -> None:
    """The pure mapping the handlers call: a job or CrInvalid, every problem at a CR path."""
    for mapping in (action_job_spec, schedule_spec_from_cr):
        try:
            mapping(spec)
        except CrInvalid as invalid:
            assert invalid.problems
            assert all(p.loc == "spec" or p.loc.startswith(("spec.", "spec["))
                       for p in invalid.problems), invalid.problems


# -- shapes hypothesis does not draw: deep nesting ------------------------------------------------
# kopf parses watch events with Python's json, which gives up (RecursionError) at about 990
# levels: deeper objects never reach a handler. A string can hold any depth, though: the
# original Pystol's `extra_vars` is JSON in a string, parsed by the mapping.
KOPF_DEPTH = 900


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def handled_as_kopf_does(ctx: Context, kind: CrKind, spec: Any) -> dict[str, Any]:
    """kopf runs a sync handler in a worker thread, on a stack of its own."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(handle, ctx, kind, spec).result()


DEEP_OBJECTS = [
    pytest.param({"action": "pod-kill", "target": {"namespaces": [NAMESPACE]},
                  "params": nested(KOPF_DEPTH)}, id="deep-params"),
    pytest.param({"action": "pod-kill", "target": nested(KOPF_DEPTH)}, id="deep-target"),
    pytest.param(nested(KOPF_DEPTH), id="deep-spec"),
    pytest.param({"role": "killpods", "extra_vars": nested(KOPF_DEPTH)}, id="deep-extra-vars"),
]
DEEP_TEXTS = [
    pytest.param({"role": "killpods", "extra_vars": "[" * 100_000 + "]" * 100_000},
                 id="deep-extra-vars-text"),
    pytest.param({"role": "drainnodes", "extra_vars": {"pystol_drainnodes_names":
                                                       "[" * 100_000 + "]" * 100_000}},
                 id="deep-node-names-text"),
]


def as_kind(kind: CrKind, spec: Any) -> Any:
    return {"interval": "1h", "template": spec} if kind in SCHEDULE_KINDS else spec


@pytest.mark.parametrize("kind", ACTION_KINDS + SCHEDULE_KINDS, ids=lambda kind: kind.kind)
@pytest.mark.parametrize("spec", DEEP_OBJECTS + DEEP_TEXTS)
def test_the_mapping_refuses_deep_nesting_with_a_field_path(kind: CrKind, spec: Any) -> None:
    mapping = action_job_spec if kind in ACTION_KINDS else schedule_spec_from_cr
    with ThreadPoolExecutor(max_workers=1) as executor, pytest.raises(CrInvalid) as raised:
        executor.submit(mapping, as_kind(kind, spec)).result()
    assert all(p.loc.startswith("spec.") for p in raised.value.problems), raised.value


@pytest.mark.parametrize("kind", ACTION_KINDS + SCHEDULE_KINDS, ids=lambda kind: kind.kind)
@pytest.mark.parametrize("spec", DEEP_TEXTS)
def test_deep_json_in_a_string_ends_with_a_status(ctx: Context, kind: CrKind, spec: Any
                                                  ) -> None:
    status = handled_as_kopf_does(ctx, kind, as_kind(kind, spec))
    assert status["phase"] == "Failed", status
    assert_ended(status)


class HandlerCrashed(Exception):
    """A handler raised instead of writing a status (the original traceback, a thousand
    frames deep, is left out: pytest would spend seconds formatting each)."""


@pytest.mark.parametrize("kind", ACTION_KINDS + SCHEDULE_KINDS, ids=lambda kind: kind.kind)
@pytest.mark.parametrize("spec", DEEP_OBJECTS)
def test_deep_objects_end_with_a_status(ctx: Context, kind: CrKind, spec: Any) -> None:
    try:
        status = handled_as_kopf_does(ctx, kind, as_kind(kind, spec))
    except (kopf.TemporaryError, RecursionError) as error:
        raise HandlerCrashed(f"{type(error).__name__}: {str(error)[:200]}") from None
    assert status["phase"] == "Failed", status
    assert_ended(status)


@pytest.mark.parametrize("role", [["killpods"], {"name": "killpods"}])
def test_a_role_that_is_not_a_string_fails_the_object(ctx: Context, role: Any) -> None:
    status = handle(ctx, PYSTOL_ACTION, {"role": role, "extra_vars": "{}"})
    assert status["phase"] == "Failed" and "spec.role: unknown role" in status["message"]


def test_a_huge_value_is_cut_short_in_the_status_message(ctx: Context) -> None:
    """A 20 kB role was echoed whole into `status.message` (and the Event, and the log)."""
    status = handle(ctx, PYSTOL_ACTION, {"role": "x" * 20_000, "extra_vars": "{}"})
    assert status["phase"] == "Failed"
    assert status["message"].startswith("invalid spec: spec.role: unknown role 'xxx")
    assert len(status["message"]) < 300


def test_the_mapping_refuses_a_role_that_is_not_a_string() -> None:
    """The mapping's part of it (it raised TypeError itself before the fix)."""
    with pytest.raises(CrInvalid) as raised:
        action_job_spec({"role": ["killpods"], "extra_vars": "{}"})
    assert [p.loc for p in raised.value.problems] == ["spec.role"]
