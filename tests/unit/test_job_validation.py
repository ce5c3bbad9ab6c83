"""Tests for pystol_worker.jobs.validation: every problem of a job, with its field path."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from pystol_worker.actions import builtin
from pystol_worker.actions.base import Action, RunContext, SelectContext, Selection
from pystol_worker.actions.pod_kill import PodKillParams
from pystol_worker.actions.registry import ActionRegistry
from pystol_worker.core.model import JobSpec, TargetKind
from pystol_worker.core.settings import Settings, load_settings
from pystol_worker.jobs.validation import JobInvalid, validate_job


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drain: bool = True


class NodeReboot(Action[NodeParams]):
    """A node action, to check that node targets need no namespaces."""

    name = "node-reboot"
    description = "test double"
    target_kind = TargetKind.NODES
    Params = NodeParams

    def select(self, ctx: SelectContext, spec: JobSpec, params: NodeParams) -> Selection:
        raise NotImplementedError

    def execute(self, ctx: RunContext, spec: JobSpec, params: NodeParams,
                selection: Selection) -> None:
        raise NotImplementedError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PYSTOL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def registry() -> ActionRegistry:
    registry = ActionRegistry()
    for cls in builtin.BUILTIN_ACTIONS:
        registry.register(cls)
    registry.register(NodeReboot)
    return registry


@pytest.fixture
def settings() -> Settings:
    return load_settings()


def job(**fields: Any) -> JobSpec:
    data: dict[str, Any] = {"action": "pod-kill",
                            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}
    data.update(fields)
    return JobSpec.model_validate(data)


def problems(spec: JobSpec, registry: ActionRegistry, settings: Settings) -> dict[str, str]:
    with pytest.raises(JobInvalid) as caught:
        validate_job(spec, registry, settings)
    return {problem.loc: problem.msg for problem in caught.value.problems}


def test_a_good_job_returns_its_action_and_validated_params(registry: ActionRegistry,
                                                           settings: Settings) -> None:
    action, params = validate_job(job(params={"grace_period_seconds": 0,
                                              "distribution": "poisson", "seed": 3},
                                      duration="60s"), registry, settings)
    assert action.name == "pod-kill"
    assert isinstance(params, PodKillParams)
    assert (params.grace_period_seconds, params.distribution, params.seed) == (0, "poisson", 3)


def test_unknown_action_lists_the_known_actions(registry: ActionRegistry,
                                                settings: Settings) -> None:
    found = problems(job(action="pod-explode"), registry, settings)
    assert list(found) == ["action"]
    assert "'pod-explode'" in found["action"]
    assert "node-reboot" in found["action"] and "pod-kill" in found["action"]


def test_the_error_message_names_every_field(registry: ActionRegistry,
                                             settings: Settings) -> None:
    with pytest.raises(JobInvalid) as caught:
        validate_job(job(action="pod-explode"), registry, settings)
    assert str(caught.value).startswith("action: unknown action 'pod-explode'")


def test_unknown_params_field_is_reported_at_its_path(registry: ActionRegistry,
                                                      settings: Settings) -> None:
    found = problems(job(params={"grace": 5}), registry, settings)
    assert list(found) == ["params.grace"]


def test_bad_params_value_is_reported_at_its_path(registry: ActionRegistry,
                                                  settings: Settings) -> None:
    found = problems(job(params={"grace_period_seconds": -1, "distribution": "gaussian"}),
                     registry, settings)
    assert set(found) == {"params.grace_period_seconds", "params.distribution"}
    assert "uniform" in found["params.distribution"]


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_protected_namespace_is_refused_at_its_index(registry: ActionRegistry,
                                                     settings: Settings, namespace: str) -> None:
    spec = job(target={"namespaces": ["shop", "billing", namespace]})
    found = problems(spec, registry, settings)
    assert list(found) == ["target.namespaces[2]"]
    assert namespace in found["target.namespaces[2]"]
    assert "protected" in found["target.namespaces[2]"]


def test_every_protected_namespace_is_reported(registry: ActionRegistry,
                                               settings: Settings) -> None:
    spec = job(target={"namespaces": ["kube-system", "shop", "kube-public"]})
    assert set(problems(spec, registry, settings)) == {"target.namespaces[0]",
                                                       "target.namespaces[2]"}


def test_protected_namespaces_follow_the_settings(registry: ActionRegistry,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTOL_PROTECTED_NAMESPACES", "payments")
    settings = load_settings()
    assert list(problems(job(target={"namespaces": ["payments"]}), registry, settings)) == [
        "target.namespaces[0]"]
    validate_job(job(target={"namespaces": ["kube-system"]}), registry, settings)


def test_the_admin_switch_allows_protected_namespaces(registry: ActionRegistry) -> None:
    settings = load_settings(allow_protected=True)
    action, _ = validate_job(job(target={"namespaces": ["kube-system"]}), registry, settings)
    assert action.name == "pod-kill"


@pytest.mark.parametrize("selector", ["app in web", "=web", "app=web,", "app==we b",
                                      "app=web,,tier=front", "app notin ()x"])
def test_bad_label_selector_is_reported(registry: ActionRegistry, settings: Settings,
                                        selector: str) -> None:
    spec = job(target={"namespaces": ["shop"], "label_selector": selector})
    found = problems(spec, registry, settings)
    assert list(found) == ["target.label_selector"]


@pytest.mark.parametrize("selector", ["app=web", "app==web", "app!=web", "app",
                                      "!canary", "tier in (front, back)",
                                      "env notin (dev),app=web", "example.com/team=sre",
                                      "app="])
def test_good_label_selectors_pass(registry: ActionRegistry, settings: Settings,
                                   selector: str) -> None:
    validate_job(job(target={"namespaces": ["shop"], "label_selector": selector}),
                 registry, settings)


def test_bad_field_selector_is_reported(registry: ActionRegistry, settings: Settings) -> None:
    spec = job(target={"namespaces": ["shop"], "field_selector": "status.phase"})
    assert list(problems(spec, registry, settings)) == ["target.field_selector"]
    validate_job(job(target={"namespaces": ["shop"], "field_selector":
                             "status.phase=Running,spec.nodeName!=node-1"}),
                 registry, settings)


def test_pod_kill_needs_namespaces(registry: ActionRegistry, settings: Settings) -> None:
    found = problems(job(target={"label_selector": "app=web"}), registry, settings)
    assert list(found) == ["target.namespaces"]
    assert "pod-kill" in found["target.namespaces"]
    assert "namespace" in found["target.namespaces"]


def test_pod_kill_refuses_node_names(registry: ActionRegistry, settings: Settings) -> None:
    found = problems(job(target={"namespaces": ["shop"], "names": ["node-1"]}),
                     registry, settings)
    assert list(found) == ["target.names"]


def test_node_actions_need_no_namespaces(registry: ActionRegistry,
                                         settings: Settings) -> None:
    spec = job(action="node-reboot", target={"names": ["node-1"], "amount": 1})
    action, params = validate_job(spec, registry, settings)
    assert action.name == "node-reboot"
    assert isinstance(params, NodeParams)


def test_several_problems_are_reported_together(registry: ActionRegistry,
                                                settings: Settings) -> None:
    spec = job(params={"grace": 1, "grace_period_seconds": "soon"},
               target={"namespaces": ["shop", "kube-system"], "label_selector": "app in web",
                       "field_selector": "nonsense", "names": ["node-1"]})
    with pytest.raises(JobInvalid) as caught:
        validate_job(spec, registry, settings)
    locs = [problem.loc for problem in caught.value.problems]
    assert set(locs) == {"params.grace", "params.grace_period_seconds", "target.names",
                         "target.namespaces[1]", "target.label_selector",
                         "target.field_selector"}
    assert len(locs) == len(set(locs))
    message = str(caught.value)
    for loc in locs:
        assert f"{loc}: " in message
