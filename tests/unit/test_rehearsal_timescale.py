"""Rehearsal time scaling: the speed picked from a snapshot's delays, and an experiment's
times divided by it (probe timeouts excepted), plus what a copy cannot rehearse."""

from __future__ import annotations

from typing import Any

import pytest

from pystol_worker.core.experiment_model import ExperimentSpec
from pystol_worker.core.policy import Policy
from pystol_worker.rehearsal.adapt import for_the_copy
from pystol_worker.rehearsal.engine import rehearsal_policy
from pystol_worker.rehearsal.timescale import (
    auto_speed,
    parse_speed,
    scale_experiment,
    template_delay_seconds,
)


def deployment(start: str | None, ready: str | None) -> dict[str, Any]:
    annotations = {key: value for key, value in (("sim.pystol.org/start-seconds", start),
                                                 ("sim.pystol.org/ready-seconds", ready))
                   if value is not None}
    return {"kind": "Deployment",
            "spec": {"template": {"metadata": {"annotations": annotations}}}}


def service_probe(name: str, **run: Any) -> dict[str, Any]:
    probe: dict[str, Any] = {"name": name, "type": "http",
                             "service": {"namespace": "shop", "name": "web", "port": 80}}
    if run:
        probe["mode"] = "continuous"
        probe["run"] = run
    return probe


def pod_kill(selector: str, **extra: Any) -> dict[str, Any]:
    return {"action": "pod-kill", "target": {"namespaces": ["shop"],
                                             "label_selector": selector,
                                             "mode": "fixed", "value": 1}, **extra}


def experiment() -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "name": "shop-survives",
        "deadline": "20m",
        "hypothesis": {"probes": [service_probe("edge-ok")]},
        "method": [
            {"type": "action", "name": "slow", "job": pod_kill(
                "app=slow", duration="60s", recovery_timeout="120s",
                probes=[service_probe("during", interval="5s", timeout="0.5s",
                                      initial_delay="10s")])},
            {"type": "wait", "name": "settle", "duration": "10s"},
            {"type": "parallel", "name": "both", "steps": [
                {"type": "action", "name": "a", "job": pod_kill("app=a")},
                {"type": "serial", "name": "inner", "steps": [
                    {"type": "suspend", "name": "look", "deadline": "100s"},
                    {"type": "action", "name": "b", "job": pod_kill(
                        "app=b", probes=[service_probe("tight", interval="2s",
                                                       timeout="1s")])}]}]},
        ],
    })


def test_auto_speed_keeps_the_shortest_targeted_recovery_at_two_wall_seconds() -> None:
    assert auto_speed([15.0, 6.0]) == 3.0  # 6 simulated seconds -> 2 wall seconds
    assert auto_speed([400.0]) == 50.0     # capped
    assert auto_speed([1.0]) == 1.0        # never slower than real time
    assert auto_speed([]) == 1.0           # nothing targeted


def test_a_workloads_delay_is_its_templates_start_plus_ready_seconds() -> None:
    assert template_delay_seconds(deployment("9", "6")) == 15.0
    # The simulator's defaults (1 s each) when the snapshot inferred nothing.
    assert template_delay_seconds(deployment(None, None)) == 2.0
    assert template_delay_seconds(deployment("soon", "-3")) == 2.0
    assert template_delay_seconds({}) == 2.0


@pytest.mark.parametrize("text", ["0.5", "101", "nan", "fast", "-1", ""])
def test_a_speed_outside_1_to_100_is_refused_with_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="speed must be"):
        parse_speed(text)


def test_speed_auto_or_a_number() -> None:
    assert parse_speed("auto") is None
    assert parse_speed(" AUTO ") is None
    assert parse_speed("12.5") == 12.5


def test_every_time_in_the_experiment_is_divided_by_the_speed_but_probe_timeouts() -> None:
    spec = experiment()
    scaled, notes = scale_experiment(spec, 10.0, default_recovery_timeout=300.0)
    slow, settle, both = scaled.method
    assert slow.job.duration == 6.0
    assert slow.job.recovery_timeout == 12.0
    [during] = slow.job.probes
    assert during.run.interval == 0.5
    assert during.run.initial_delay == 1.0
    assert during.run.timeout == 0.5  # real milliseconds on the copy too
    assert settle.duration == 1.0
    a, inner = both.steps
    # No recovery_timeout in the document: the setting's default, scaled.
    assert a.job.recovery_timeout == 30.0 and a.job.duration is None
    look, b = inner.steps
    assert look.deadline == 10.0
    assert scaled.deadline == 120.0
    # 2 s / 10 = 0.2 s is shorter than the probe's own 1 s timeout: raised, and said so.
    [tight] = b.job.probes
    assert tight.run.interval == 1.0
    assert len(notes) == 1 and "tight" in notes[0] and "method[2].steps[1].steps[1]" in notes[0]
    # The document itself is untouched, and the scaled one is still a valid document.
    assert spec.method[0].job.duration == 60.0
    ExperimentSpec.model_validate(scaled.model_dump(mode="json"))


def test_action_params_that_are_simulated_time_are_scaled_too() -> None:
    spec = ExperimentSpec.model_validate({"name": "drain", "method": [
        {"type": "action", "name": "drain", "job": {
            "action": "node-drain", "target": {"names": ["node-1"]},
            "params": {"eviction_timeout": "30s", "grace_period_seconds": 30}}},
        {"type": "action", "name": "kill", "job": pod_kill(
            "app=web", params={"grace_period_seconds": 10})}]})
    scaled, _ = scale_experiment(spec, 10.0, default_recovery_timeout=300.0)
    # The simulator divides a pod's termination by its speed itself: grace periods stay.
    assert scaled.method[0].job.params == {"eviction_timeout": 3.0, "grace_period_seconds": 30}
    assert scaled.method[1].job.params == {"grace_period_seconds": 10}


def test_speed_1_changes_nothing_but_fills_in_the_recovery_timeout() -> None:
    spec = experiment()
    scaled, notes = scale_experiment(spec, 1.0, default_recovery_timeout=300.0)
    assert notes == []
    assert scaled.method[0].job.duration == 60.0
    assert scaled.method[2].steps[0].job.recovery_timeout == 300.0


def test_what_the_copy_cannot_rehearse_is_removed_and_listed() -> None:
    spec = ExperimentSpec.model_validate({
        "name": "guarded",
        "guard": {"endpoint": "main", "query": "slo:burn_rate1h", "max": 1},
        "hypothesis": {"probes": [
            service_probe("proxy-ok"),
            {"name": "prom", "type": "prometheus", "endpoint": "main",
             "query": "up", "op": "ge", "threshold": 1},
            {"name": "outside", "type": "http", "url": "https://shop.example.com/"}]},
        "method": [
            {"type": "probe", "name": "look", "probes": [
                {"name": "p2", "type": "prometheus", "endpoint": "main", "query": "up",
                 "op": "ge", "threshold": 1}]},
            {"type": "action", "name": "kill", "job": pod_kill(
                "app=web", guard={"endpoint": "main", "query": "x", "max": 1})}],
    })
    copy, not_rehearsed = for_the_copy(spec)
    assert copy.guard is None
    assert [p.name for p in copy.hypothesis.probes] == ["proxy-ok"]
    assert copy.method[0].type == "wait" and copy.method[0].name == "look"
    assert copy.method[1].job.guard is None
    text = "\n".join(not_rehearsed)
    for expected in ("guard:", "hypothesis.probes: probe prom", "probe outside",
                     "method[0].probes: probe p2", "method[1].job.guard"):
        assert expected in text, (expected, text)
    ExperimentSpec.model_validate(copy.model_dump(mode="json"))


def test_the_copy_runs_under_the_real_policy_without_prometheus_or_windows() -> None:
    policy = Policy.model_validate({
        "actions": [{"namespaces": ["shop"], "actions": ["pod-kill"]}],
        "windows": ["mon-fri 09:00-17:00"], "outside_windows": "wait",
        "prometheus": {"endpoints": [{"name": "main", "url": "http://prom:9090"}]}})
    copy, notes = rehearsal_policy(policy)
    assert copy.prometheus.endpoints == [] and copy.windows == []
    # What the admin allows is unchanged: a step the policy refuses is refused on the copy.
    assert copy.action_allowed("pod-kill", "shop")
    assert not copy.action_allowed("node-drain", "shop")
    assert not copy.action_allowed("pod-kill", "payments")
    assert len(notes) == 1 and "chaos windows" in notes[0]
    assert rehearsal_policy(Policy())[1] == []
