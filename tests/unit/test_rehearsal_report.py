"""The rehearsal report's arithmetic: blast radius, budgets, recovery in simulated
seconds and predicted targets, from what the observer and the jobs recorded."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from pystol_worker.core.model import (
    EventKind,
    JobRecord,
    JobResult,
    JobSpec,
    JobStatus,
    Source,
    Target,
    TargetRef,
    TimelineEvent,
    WorkloadRecovery,
    WorkloadRef,
)
from pystol_worker.kube.fake_cluster import FakeCluster
from pystol_worker.rehearsal.observe import (
    BudgetState,
    ClusterObserver,
    WorkloadState,
    selector_matches,
)
from pystol_worker.rehearsal.report import (
    RehearsalReport,
    blast_radius,
    blocked_pods,
    budget_report,
    predicted_step,
    recovery_report,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
WEB = WorkloadRef(kind="Deployment", namespace="shop", name="web")
API = WorkloadRef(kind="Deployment", namespace="shop", name="api")
DB = WorkloadRef(kind="StatefulSet", namespace="shop", name="db")


def record(**fields: object) -> JobRecord:
    spec = JobSpec(action="pod-kill", target=Target(namespaces=["shop"],
                                                    label_selector="app=web"))
    return JobRecord(id="j-1", spec=spec, source=Source.API, submitter="t", created_at=NOW,
                     **fields)  # type: ignore[arg-type]


def test_lost_is_desired_minus_the_fewest_ready_and_untouched_workloads_are_left_out() -> None:
    found = blast_radius([WorkloadState(WEB, desired=3, ready=3, min_ready=1),
                          WorkloadState(API, desired=2, ready=2, min_ready=2),
                          WorkloadState(DB, desired=3, ready=3, min_ready=3)],
                         always=[DB])
    assert [(b.workload.name, b.desired, b.min_ready, b.lost) for b in found] == [
        ("web", 3, 1, 2), ("db", 3, 3, 0)]  # api lost nothing and was not targeted
    assert found[0].model_dump(mode="json")["lost"] == 2


@pytest.mark.parametrize(("min_available", "max_unavailable", "expected", "wanted"), [
    (3, None, 3, 3),
    ("50%", None, 3, 2),   # minAvailable rounds up
    (None, 1, 3, 2),
    (None, "50%", 3, 1),   # maxUnavailable rounds up: 2 may go, 1 must stay
    (None, None, 3, 3),    # neither: every pod
])
def test_a_budget_asks_for_what_the_disruption_controller_would(
        min_available: int | str | None, max_unavailable: int | str | None,
        expected: int, wanted: int) -> None:
    budget = BudgetState("shop", "pdb", {}, min_available, max_unavailable, expected=expected)
    assert budget.min_available == wanted


def test_a_pod_kill_below_min_available_violates_the_budget_and_blocked_evictions_count(
        ) -> None:
    tight = BudgetState("shop", "web-pdb", {"matchLabels": {"app": "web"}}, 3, None,
                        expected=3, healthy=3, min_healthy=2,
                        pods={"web-1", "web-2", "web-3"})
    loose = BudgetState("shop", "api-pdb", {"matchLabels": {"app": "api"}}, 1, None,
                        expected=2, healthy=2, min_healthy=1, pods={"api-1", "api-2"})
    drain = record(timeline=[
        TimelineEvent(at=NOW, kind=EventKind.EVICTION_BLOCKED, message="refused",
                      data={"namespace": "shop", "pod": "api-1"}),
        TimelineEvent(at=NOW, kind=EventKind.EVICTION_BLOCKED, message="refused",
                      data={"namespace": "other", "pod": "api-2"}),
        TimelineEvent(at=NOW, kind=EventKind.SELECTED, message="1 of 3", data={})])
    found = budget_report([tight, loose], blocked_pods([drain]))
    assert [(b.name, b.min_available, b.min_healthy, b.violated, b.blocked_evictions)
            for b in found] == [("api-pdb", 1, 1, False, 1), ("web-pdb", 3, 2, True, 0)]


def test_recovery_is_measured_wall_seconds_times_the_speed() -> None:
    job = record(result=JobResult(recovery=[
        WorkloadRecovery(workload=WEB, desired_replicas=3, first_injection_at=NOW,
                         recovered=True, recovery_seconds=0.75, ready_replicas=3),
        WorkloadRecovery(workload=API, desired_replicas=2, first_injection_at=NOW,
                         recovered=False, recovery_seconds=None)]))
    found = recovery_report([("method[0]", job)], speed=20.0)
    assert [(r.workload.name, r.step, r.measured_seconds, r.simulated_seconds, r.recovered)
            for r in found] == [("web", "method[0]", 0.75, 15.0, True),
                                ("api", "method[0]", None, None, False)]


def test_predicted_targets_are_counted_per_workload() -> None:
    def pod(name: str, workload: WorkloadRef) -> TargetRef:
        return TargetRef(kind="Pod", namespace="shop", name=name, workload=workload)
    dry = record(status=JobStatus.SUCCEEDED,
                 targets=[pod("web-a", WEB), pod("web-b", WEB), pod("api-a", API)],
                 timeline=[TimelineEvent(at=NOW, kind=EventKind.SELECTED, message="3 of 5",
                                         data={"matched": 5, "excluded": ["pod x: busy"]})])
    step = predicted_step("method[1].steps[0]", "kill", dry,
                          {("Deployment", "shop", "web"): 3})
    assert (step.matched, step.chosen, step.error) == (5, 3, None)
    assert [(w.workload.name, w.chosen, w.desired) for w in step.workloads] == [
        ("api", 1, None), ("web", 2, 3)]
    assert step.targets == ["Pod shop/web-a", "Pod shop/web-b", "Pod shop/api-a"]
    assert step.excluded == ["pod x: busy"]
    refused = predicted_step("method[0]", "kill", record(status=JobStatus.FAILED,
                                                          reason="no targets: nothing"))
    assert refused.chosen == 0 and refused.error == "no targets: nothing"


def test_selector_objects_match_labels_as_kubernetes_does() -> None:
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({}, labels)
    assert not selector_matches(None, labels)
    assert selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "api"}}, labels)
    assert selector_matches({"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["front", "back"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "app", "operator": "NotIn", "values": ["db"]}]}, labels)
    assert not selector_matches({"matchExpressions": [
        {"key": "canary", "operator": "Exists"}]}, labels)


def test_the_report_is_a_run_with_its_duration() -> None:
    report = RehearsalReport(experiment="x", snapshot="c.yaml", speed=5.0,
                             started_at=NOW, ended_at=NOW.replace(second=30))
    dumped = report.model_dump(mode="json")
    assert dumped["duration_seconds"] == 30.0
    assert RehearsalReport.model_validate(dumped).speed == 5.0


# -- the observer, on the fake cluster --------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_the_observer_keeps_the_fewest_ready_pods_per_workload_and_budget() -> None:
    cluster = FakeCluster(controllers=False, watch_seconds=0.2)
    cluster.add_node("node-1")
    cluster.add_deployment("shop", "web", replicas=3)
    cluster.add_deployment("shop", "api", replicas=2)
    cluster.add({"kind": "PodDisruptionBudget",
                 "metadata": {"name": "web-all", "namespace": "shop"},
                 "spec": {"minAvailable": "100%", "selector": {"matchLabels": {"app": "web"}}}})
    observer = ClusterObserver(cluster, ["shop"])
    observer.start()
    try:
        web = [p["metadata"]["name"] for p in cluster.objects("Pod", "shop", "app=web")]
        cluster.set_pod_ready("shop", web[0], False)
        cluster.set_pod_ready("shop", web[1], False)
        cluster.set_pod_ready("shop", web[0], True)
        cluster.set_pod_ready("shop", web[1], True)

        def seen() -> bool:
            states = {s.ref.name: s for s in observer.workload_states()}
            return states["web"].min_ready == 1 and states["web"].ready == 3
        wait_until(seen)
    finally:
        observer.stop()
    states = {s.ref.name: s for s in observer.workload_states()}
    assert (states["web"].desired, states["web"].min_ready) == (3, 1)
    assert (states["api"].desired, states["api"].min_ready) == (2, 2)  # untouched
    [budget] = observer.budget_states()
    assert (budget.expected, budget.min_available, budget.min_healthy) == (3, 3, 1)
    [report] = budget_report([budget])
    assert report.violated
