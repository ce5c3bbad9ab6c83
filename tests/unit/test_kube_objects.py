"""pystol_worker.kube.objects: the one rule for readiness, owners, selectors and times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pystol_worker.kube.objects import (
    controller_ref,
    is_ready,
    is_terminating,
    label_selector_object,
    selector_string,
    utc,
)


def pod(conditions: list[dict[str, str]] | None = None, deleting: bool = False,
        owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web-1", "namespace": "shop"}
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T10:00:00Z"
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"metadata": meta, "status": {"conditions": conditions or []}}


READY = {"type": "Ready", "status": "True"}
NOT_READY = {"type": "Ready", "status": "False"}
SCHEDULED = {"type": "PodScheduled", "status": "True"}


def test_a_pod_with_ready_true_is_ready() -> None:
    assert is_ready(pod([SCHEDULED, READY]))


@pytest.mark.parametrize("conditions", [[], [SCHEDULED], [NOT_READY],
                                        [{"type": "Ready", "status": "Unknown"}]])
def test_a_pod_without_ready_true_is_not_ready(conditions: list[dict[str, str]]) -> None:
    assert not is_ready(pod(conditions))


def test_a_terminating_pod_is_not_ready_whatever_its_condition_says() -> None:
    """The min_available guard must not count a pod that is leaving (EndpointSlices mark it
    not ready), and recovery must not count it as a replica back."""
    leaving = pod([READY], deleting=True)
    assert is_terminating(leaving)
    assert not is_ready(leaving)


def test_the_first_ready_condition_decides_as_in_kubernetes() -> None:
    assert not is_ready(pod([NOT_READY, READY]))
    assert is_ready(pod([READY, NOT_READY]))


def test_a_pod_without_status_is_not_ready() -> None:
    assert not is_ready({"metadata": {"name": "new"}})
    assert not is_terminating({"metadata": {"name": "new"}})


def test_the_controller_is_the_owner_marked_controller() -> None:
    owners = [{"kind": "ConfigMap", "name": "x"},
              {"kind": "ReplicaSet", "name": "web-7d4", "controller": True}]
    assert controller_ref(pod(owners=owners)) == owners[1]
    assert controller_ref(pod(owners=[{"kind": "ConfigMap", "name": "x"}])) is None
    assert controller_ref(pod()) is None


@pytest.mark.parametrize("text", ["app=web", "app=web,tier in (a,b)", "!canary",
                                  "app,env notin (dev)"])
def test_selector_string_and_object_round_trip(text: str) -> None:
    selector = label_selector_object(text)
    assert label_selector_object(selector_string(selector)) == selector


def test_label_selector_object_reads_every_operator() -> None:
    assert label_selector_object("app=web,tier in (a, b),env!=dev,!canary,team") == {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "team", "operator": "Exists"},
        ]}
    assert label_selector_object("") == {}
    assert label_selector_object(None) == {}


def test_utc_is_an_aware_utc_datetime() -> None:
    assert utc(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert utc(1.5).tzinfo is UTC
