"""The sim's metrics.k8s.io usage rules (pystol_sim/metrics_api.py)."""

from __future__ import annotations

import pytest

from pystol_sim import metrics_api


@pytest.mark.parametrize(("text", "value"), [("250m", 0.25), ("2", 2.0), ("1.5", 1.5),
                                             ("64Mi", 64 * 2**20), ("1Gi", 2**30),
                                             ("1e9", 1e9), ("500M", 5e8), (3, 3.0)])
def test_quantities_are_read_as_kubernetes_writes_them(text: object, value: float) -> None:
    assert metrics_api.quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "lots", "1Xi", None])
def test_an_unreadable_quantity_is_none(text: object) -> None:
    assert metrics_api.quantity(text) is None


def pod(image: str, resources: dict[str, dict[str, str]]) -> dict[str, object]:
    return {"metadata": {"name": "p", "namespace": "n", "uid": "u-1"},
            "spec": {"nodeName": "w", "containers": [
                {"name": "c", "image": image, "resources": resources}]},
            "status": {"phase": "Running"}}


def test_a_container_uses_about_its_requests_the_same_within_a_window() -> None:
    p = pod("shop/web:1", {"requests": {"cpu": "100m", "memory": "128Mi"}})
    container = p["spec"]["containers"][0]  # type: ignore[index]
    cpu, memory = metrics_api.container_usage(p, container, now=1000.0)
    assert 0.085 <= cpu <= 0.115 and 0.85 * 128 * 2**20 <= memory <= 1.15 * 128 * 2**20
    assert metrics_api.container_usage(p, container, now=1001.0) == (cpu, memory)


def test_a_stress_pod_uses_its_limits_and_its_node_shows_them() -> None:
    burner = pod("ghcr.io/colinianking/stress-ng:latest",
                 {"limits": {"cpu": "2", "memory": "1Gi"}})
    node = {"metadata": {"name": "w"}, "status": {"capacity": {"cpu": "4",
                                                               "memory": "8Gi"}}}
    idle = metrics_api.node_metrics(node, [], now=0.0)["usage"]
    busy = metrics_api.node_metrics(node, [burner], now=0.0)["usage"]
    assert metrics_api.quantity(busy["cpu"]) - metrics_api.quantity(idle["cpu"]) == \
        pytest.approx(2.0, rel=1e-6)  # type: ignore[operator]
    assert metrics_api.quantity(busy["memory"]) - metrics_api.quantity(idle["memory"]) == \
        pytest.approx(2**30, rel=1e-3)  # type: ignore[operator]


def test_a_node_never_uses_more_than_its_capacity() -> None:
    burners = [pod("stress", {"limits": {"cpu": "8", "memory": "64Gi"}})]
    node = {"metadata": {"name": "w"}, "status": {"capacity": {"cpu": "4", "memory": "8Gi"}}}
    usage = metrics_api.node_metrics(node, burners, now=0.0)["usage"]
    assert metrics_api.quantity(usage["cpu"]) == pytest.approx(4.0)
    assert metrics_api.quantity(usage["memory"]) == pytest.approx(8 * 2**30, rel=1e-6)
