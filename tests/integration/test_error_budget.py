"""The error-budget guard against a real Prometheus (Debian's `/usr/bin/prometheus`), with
real processes: redis-server, pystol-sim over HTTPS, a Celery worker and the API.

Prometheus scrapes a tiny exporter in the test whose `slo_burn_rate` the test sets. The
admin policy names that Prometheus as endpoint `main`. A pod-kill guarded by
`slo_burn_rate <= 1`: at 2.5 it is skipped with the value in its reason and the sim is
unchanged; at 0.2 it runs; with Prometheus stopped it is skipped (on_error: skip).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, running_stack
from tests.integration.test_pipeline import make_workload, pod_kill, pods
from tests.support.prometheus import RealPrometheus, _ExporterServer, exporter, real_prometheus
from tests.support.redis_server import RedisServer

ENDS = ("succeeded", "failed", "aborted", "cancelled", "skipped")
GUARD = {"endpoint": "main", "query": "slo_burn_rate", "max": 1.0}


@dataclass
class Budget:
    stack: Stack
    prometheus: RealPrometheus
    gauges: _ExporterServer

    def burn(self, rate: float) -> None:
        """Set the burn rate and wait until Prometheus has scraped it."""
        self.gauges.gauges["slo_burn_rate"] = rate
        self.prometheus.wait_for("slo_burn_rate", lambda result: len(result) == 1 and float(
            result[0]["value"][1]) == rate)


@pytest.fixture(scope="module")
def budget(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
           ) -> Iterator[Budget]:
    workdir: Path = tmp_path_factory.mktemp("error-budget")
    with exporter(slo_burn_rate=2.5) as gauges:
        target = f"127.0.0.1:{gauges.server_address[1]}"
        with real_prometheus(workdir, [{"job_name": "slo",
                                        "static_configs": [{"targets": [target]}]}]
                             ) as prometheus:
            # open to the tests' own namespaces (make_workload: `lab-…`); an endpoint is
            # closed to everyone by default, and `*` would be cluster scope
            policy = {"prometheus": {"endpoints": [{"name": "main", "url": prometheus.url,
                                                    "namespaces": ["lab-*"],
                                                    "max_seconds": "5s"}]}}
            with running_stack(workdir, redis_server, policy=policy) as stack:
                yield Budget(stack, prometheus, gauges)


def run(stack: Stack, spec: dict[str, Any]) -> dict[str, Any]:
    return stack.wait_for_job(stack.submit(spec)["id"], timeout=60, until=ENDS)


def uids(stack: Stack, namespace: str, selector: str) -> set[str]:
    return {pod.metadata.uid for pod in pods(stack, namespace, selector)}


def test_a_burning_budget_skips_the_job_and_changes_nothing(budget: Budget) -> None:
    namespace, selector = make_workload(budget.stack)
    before = uids(budget.stack, namespace, selector)
    budget.burn(2.5)
    record = run(budget.stack, pod_kill(namespace, selector, guard=GUARD))

    assert record["status"] == "skipped" and record["verdict"] == "skipped"
    assert record["reason"] == "error budget guard: slo_burn_rate on main = 2.5 > max 1"
    guard = record["result"]["output"]["guard"]
    assert (guard["value"], guard["max"], guard["endpoint"]) == (2.5, 1.0, "main")
    assert record["result"]["changes"] == [] and record["targets"] == []
    assert uids(budget.stack, namespace, selector) == before


def test_a_budget_under_its_max_lets_the_job_run(budget: Budget) -> None:
    namespace, selector = make_workload(budget.stack)
    before = uids(budget.stack, namespace, selector)
    budget.burn(0.2)
    record = run(budget.stack, pod_kill(namespace, selector, guard=GUARD))

    assert record["status"] == "succeeded", record["reason"]
    assert record["verdict"] == "passed"
    assert record["result"]["output"]["guard"]["value"] == 0.2
    assert len(before - uids(budget.stack, namespace, selector)) == 1  # one pod killed


def test_a_prometheus_that_is_down_skips_the_job(budget: Budget) -> None:
    namespace, selector = make_workload(budget.stack)
    before = uids(budget.stack, namespace, selector)
    budget.prometheus.stop()
    record = run(budget.stack, pod_kill(namespace, selector, guard=GUARD))

    assert record["status"] == "skipped", record["reason"]
    assert record["reason"].startswith("error budget guard: slo_burn_rate on main could "
                                       "not be read: ")
    assert record["reason"].endswith("(on_error: skip)")
    assert record["result"]["output"]["guard"]["value"] is None
    assert uids(budget.stack, namespace, selector) == before
