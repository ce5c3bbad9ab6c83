"""The experiment and probe models refuse hostile documents fast, with the field's path.

Attacks first (design §7, attacks 1, 4 and 5): documents too big, too deep, too wide, with
too many steps or probes; tolerances of the wrong type; timing abuse. Each must be a
validation error naming the field, in well under 100 ms, and never a RecursionError.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pydantic import ValidationError

from pystol_worker.core.experiment_model import (
    MAX_PARALLEL,
    RUN_MARGIN_SECONDS,
    ActionStep,
    ExperimentInvalid,
    ExperimentSpec,
    ParallelStep,
    SerialStep,
    check_shape,
    walk,
)
from pystol_worker.core.model import JobSpec, ProbeOutcome
from pystol_worker.core.probe_model import (
    HttpProbe,
    K8sProbe,
    PodCount,
    PrometheusProbe,
    compare,
    parse_field_path,
)


def kill(name: str, namespace: str = "shop", **extra: Any) -> dict[str, Any]:
    return {"type": "action", "name": name,
            "job": {"action": "pod-kill", "target": {"namespaces": [namespace],
                                                     "label_selector": "app=web"}},
            **extra}


def document(**extra: Any) -> dict[str, Any]:
    return {"name": "checkout", "method": [kill("one")], **extra}


def refused(data: Any) -> str:
    """The validation message, measured: every refusal is fast."""
    started = time.perf_counter()
    with pytest.raises((ValidationError, ExperimentInvalid)) as caught:
        ExperimentSpec.model_validate(data)
    assert time.perf_counter() - started < 0.5
    return str(caught.value)


def test_a_plain_document_loads_with_serial_and_parallel_groups_in_document_order() -> None:
    spec = ExperimentSpec.model_validate(document(method=[
        kill("first"),
        {"type": "parallel", "name": "both", "steps": [kill("a"), kill("b", "cart")]},
        {"type": "wait", "name": "settle", "duration": "30s"},
    ]))
    assert [path for path, _ in walk(spec.method, "method")] == [
        "method[0]", "method[1]", "method[1].steps[0]", "method[1].steps[1]", "method[2]"]
    assert isinstance(spec.method[1], ParallelStep)
    assert spec.namespaces() == ["cart", "shop"]


def test_ten_thousand_steps_are_refused_before_the_tree_is_built() -> None:
    message = refused(document(method=[kill(f"s{i}") for i in range(10_000)]))
    assert "more than 100 steps" in message


def test_groups_nested_a_thousand_deep_are_refused_without_recursion() -> None:
    step: dict[str, Any] = kill("leaf")
    for depth in range(1000):
        step = {"type": "serial", "name": f"g{depth}", "steps": [step]}
    message = refused(document(method=[step]))
    assert "nested more than" in message


def test_groups_nested_seven_deep_name_the_group() -> None:
    step: dict[str, Any] = kill("leaf")
    for depth in range(7):
        step = {"type": "serial", "name": f"g{depth}", "steps": [step]}
    with pytest.raises(ExperimentInvalid) as caught:
        check_shape(document(method=[step]))
    assert "groups nested more than 6 deep" in str(caught.value)
    assert str(caught.value).startswith("method[0].steps[0]")


def test_a_parallel_group_wider_than_the_limit_is_refused_with_its_path() -> None:
    wide = {"type": "parallel", "name": "wide",
            "steps": [kill(f"k{i}") for i in range(MAX_PARALLEL + 1)]}
    with pytest.raises(ExperimentInvalid) as caught:
        check_shape(document(method=[kill("first"), wide]))
    assert str(caught.value).startswith("method[1].steps: a parallel group runs at most 10")


def test_a_document_over_128_kib_is_refused() -> None:
    message = refused(document(description="x" * 200_000))
    assert "bytes as JSON; at most 131,072" in message


def test_more_than_forty_probes_in_all_are_refused() -> None:
    probe = {"url": "http://web.shop/", "name": "p"}
    steps = [kill(f"k{i}") for i in range(5)]
    for index, step in enumerate(steps):
        step["job"]["probes"] = [{**probe, "name": f"p{index}-{n}"} for n in range(9)]
    message = refused(document(method=steps))
    assert "45 probes in all; at most 40" in message


def test_an_until_rollback_step_needs_a_cap_and_a_release_names_a_held_step() -> None:
    assert "needs job.duration" in refused(document(method=[kill("hold",
                                                                  hold="until-rollback")]))
    held = kill("hold", hold="until-rollback")
    held["job"]["duration"] = "10m"
    ExperimentSpec.model_validate(document(method=[held], rollbacks=[
        {"type": "release", "name": "undo", "step": "hold"}]))
    assert "is not an until-rollback step" in refused(document(method=[held], rollbacks=[
        {"type": "release", "name": "undo", "step": "other"}]))


def test_step_names_are_unique_per_group() -> None:
    assert "used twice" in refused(document(method=[kill("same"), kill("same")]))


def test_users_cannot_set_the_engine_fields_of_a_step_job() -> None:
    step = kill("k")
    step["job"]["experiment"] = {"run_id": "x-1", "path": "method[0]"}
    assert "set by the engine" in refused(document(method=[step]))
    step = kill("k")
    step["job"]["idempotency_key"] = "mine"
    assert "set by the engine" in refused(document(method=[step]))


@pytest.mark.parametrize(("step", "expected"), [
    ({"type": "wait", "name": "w", "duration": "200h"}, "at most"),
    ({"type": "suspend", "name": "s"}, "deadline"),
    ({"type": "suspend", "name": "s", "deadline": "0s"}, "longer than 0s"),
])
def test_timing_abuse_in_steps_is_refused(step: dict[str, Any], expected: str) -> None:
    assert expected in refused(document(method=[step]))


def test_the_bound_adds_serial_steps_and_takes_the_longest_parallel_one() -> None:
    spec = ExperimentSpec.model_validate(document(method=[
        {"type": "wait", "name": "a", "duration": "100s"},
        {"type": "parallel", "name": "p", "steps": [
            {"type": "wait", "name": "x", "duration": "50s"},
            {"type": "wait", "name": "y", "duration": "70s"}]},
    ]))
    assert spec.bound_seconds(recovery_timeout=300) == 170 + RUN_MARGIN_SECONDS


# -- probes --------------------------------------------------------------------------------


def probe_error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                                "probes": [data]})
    errors = caught.value.errors()
    return "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in errors)


@pytest.mark.parametrize("status", [True, "200", 200.5, [], [200, "x"], 99, 600])
def test_http_tolerances_of_the_wrong_type_are_refused(status: Any) -> None:
    message = probe_error({"url": "http://web/", "expect_status": status})
    assert "probes.0.http.expect_status" in message


def test_a_status_range_must_be_ordered() -> None:
    assert "status_range" in probe_error({"url": "http://web/", "status_range": [500, 200]}) \
        or "above the second" in probe_error({"url": "http://web/",
                                               "status_range": [500, 200]})


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), True, "1"])
def test_prometheus_thresholds_must_be_finite_numbers(threshold: Any) -> None:
    message = probe_error({"type": "prometheus", "endpoint": "main", "query": "up",
                           "threshold": threshold})
    assert "probes.0.prometheus.threshold" in message


def test_a_query_longer_than_2048_is_refused() -> None:
    message = probe_error({"type": "prometheus", "endpoint": "main", "query": "u" * 2049,
                           "threshold": 1})
    assert "probes.0.prometheus.query" in message


@pytest.mark.parametrize(("run", "expected"), [
    ({"interval": "10ms"}, "at least 0.5s"),
    ({"interval": "1s", "timeout": "2s"}, "shorter than timeout"),
    ({"attempts": 1_000_000}, "less than or equal to 10"),
    ({"timeout": "61s", "interval": "2m"}, "at most 1m"),
    # review M1: one tick (attempts at their timeout, and the pauses) must fit the interval
    ({"interval": "1s", "timeout": "1s", "attempts": 10, "retry_interval": "1h"},
     "probes.0.http.run: Value error, interval 1s is shorter than one run of the probe"),
    ({"interval": "5s", "timeout": "2s", "attempts": 3, "retry_interval": "1s"},
     "attempts x timeout + (attempts - 1) x retry_interval = 8s"),
])
def test_looping_probe_timing_abuse_is_refused(run: dict[str, Any], expected: str) -> None:
    message = probe_error({"url": "http://web/", "mode": "continuous", "run": run})
    assert expected in message


def test_a_hypothesis_probe_whose_run_outlasts_its_interval_is_refused() -> None:
    """The hypothesis's looping probes ride along every action step: a tick longer than
    the interval would outlive each step and stop the next one."""
    message = refused(document(hypothesis={"probes": [
        {"name": "web", "url": "http://web/", "mode": "continuous",
         "run": {"interval": "1s", "timeout": "1s", "attempts": 3, "retry_interval": "2s",
                 "stop_on_failure": True}}]}))
    assert "hypothesis.probes.0" in message and "shorter than one run" in message


def test_looping_probes_need_an_interval_and_others_refuse_one() -> None:
    assert "needs run.interval" in probe_error({"url": "http://web/", "mode": "continuous"})
    assert "run.interval is for" in probe_error({"url": "http://web/", "mode": "sot",
                                                  "run": {"interval": "10s"}})
    assert "stop_on_failure is for" in probe_error({"url": "http://web/", "mode": "eot",
                                                     "run": {"stop_on_failure": True}})


def test_k8s_field_comparisons_are_typed_when_written() -> None:
    base = {"type": "k8s", "namespace": "shop",
            "object": {"kind": "Deployment", "name": "web", "check": "field"}}
    ok = {**base, "object": {**base["object"], "field": {
        "path": "status.availableReplicas", "op": "ge", "value": 2}}}
    JobSpec.model_validate({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                            "probes": [ok]})
    text = {**base, "object": {**base["object"], "field": {
        "path": "status.phase", "op": "gt", "value": "Running"}}}
    assert "compares numbers" in probe_error(text)
    long_value = {**base, "object": {**base["object"], "field": {
        "path": "metadata.name", "op": "eq", "value": "x" * 10_000}}}
    assert "at most 256" in probe_error(long_value)


@pytest.mark.parametrize("path", ["", "a..b", "a[", "a[x]", "a[1]b", "a.b c", "a[9999999]",
                                  ".".join(["a"] * 17)])
def test_field_paths_are_read_by_a_strict_scanner(path: str) -> None:
    message = probe_error({"type": "k8s", "namespace": "shop", "object": {
        "kind": "Pod", "name": "web", "check": "field",
        "field": {"path": path, "op": "eq", "value": 1}}})
    assert "field.path" in message


def test_field_paths_parse_names_and_indexes() -> None:
    assert parse_field_path("status.conditions[0].type") == ["status", "conditions", 0, "type"]


def test_a_bool_never_equals_a_number_and_a_string_never_a_number() -> None:
    assert not compare("eq", True, 1)
    assert compare("ne", True, 1)
    assert not compare("eq", "1", 1)
    assert not compare("lt", "1", 2)
    assert compare("ge", 3, 2.5)


def test_pod_counts_compare_counts_percents_and_ranges() -> None:
    assert PodCount(op="ge", value=2).holds(2, 3)
    assert not PodCount(op="ge", value="66%").holds(1, 3)
    assert PodCount(op="ge", value="66%").holds(2, 3)
    assert PodCount(op="between", value=[1, 3]).holds(3, 5)
    assert not PodCount(op="in", value=[0, 2]).holds(1, 3)
    with pytest.raises(ValidationError):
        PodCount(op="between", value=[3, 1])
    with pytest.raises(ValidationError):
        PodCount(op="ge", value=True)  # type: ignore[arg-type]


def test_a_k8s_probe_reads_one_thing_in_its_namespace_and_nodes_have_none() -> None:
    assert "exactly one of object or pods" in probe_error({"type": "k8s", "namespace": "a"})
    assert "namespace is required" in probe_error({"type": "k8s", "pods": {}})
    assert "Node probe takes no namespace" in probe_error({
        "type": "k8s", "namespace": "a", "object": {"kind": "Node", "name": "n1"}})
    node = K8sProbe.model_validate({"object": {"kind": "Node", "name": "n1"}})
    assert node.cluster_scoped and node.namespaces() == []


def test_an_http_probe_has_exactly_one_destination() -> None:
    assert "exactly one of url or service" in probe_error({"expect_status": 200})
    assert "exactly one of url or service" in probe_error({
        "url": "http://x/", "service": {"namespace": "shop", "name": "web"}})
    assert "'..' segments" in probe_error({
        "service": {"namespace": "shop", "name": "web", "path": "/%2e%2e/%2e%2e/secrets"}})


def test_probes_stored_before_there_were_kinds_still_load() -> None:
    old = {"url": "http://web/", "expect_status": 204, "timeout": "3s"}
    spec = JobSpec.model_validate({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                                   "probes": [old]})
    probe = spec.probes[0]
    assert isinstance(probe, HttpProbe) and probe.run.timeout == 3 and probe.name == "probe-1"
    outcome = ProbeOutcome.model_validate({"probe": old, "phase": "before", "ok": True,
                                           "status": 204})
    assert isinstance(outcome.probe, HttpProbe)
    again = JobSpec.model_validate(json.loads(spec.model_dump_json()))
    assert again == spec


def test_probe_names_are_unique_in_a_job() -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                                "probes": [{"url": "http://a/", "name": "same"},
                                           {"url": "http://b/", "name": "same"}]})
    assert "used twice" in str(caught.value)


def test_the_probe_namespaces_count_as_the_experiments_namespaces() -> None:
    step = kill("k")
    step["job"]["probes"] = [{"service": {"namespace": "payments", "name": "api"}}]
    spec = ExperimentSpec.model_validate(document(method=[step], hypothesis={
        "probes": [{"type": "k8s", "namespace": "ledger",
                    "pods": {"label_selector": "app=l", "op": "ge", "value": 1}}]}))
    assert spec.namespaces() == ["ledger", "payments", "shop"]


def test_prometheus_probe_sends_a_name_not_a_url() -> None:
    assert "endpoint" in probe_error({"type": "prometheus", "endpoint": "http://evil:9090",
                                      "query": "up", "threshold": 1})
    PrometheusProbe(endpoint="main", query="up", threshold=1)


def test_serial_and_action_steps_are_typed() -> None:
    spec = ExperimentSpec.model_validate(document(method=[
        {"type": "serial", "name": "s", "steps": [kill("a")]}]))
    group = spec.method[0]
    assert isinstance(group, SerialStep) and isinstance(group.steps[0], ActionStep)
