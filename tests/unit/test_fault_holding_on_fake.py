"""Fault holding (inject -> hold -> revert, journal first) through jobs on the fake cluster.

node-cordon is the holding action with the least else going on, so these tests use it to
exercise what every holding action shares: a failed injection is undone, a failed revert
stays journaled for the reaper and fails the job, a cancel ends the hold at once and
reverts, and a target held by one job is refused to another that asked not to wait.
"""

from __future__ import annotations

import time
from typing import Any

from pystol_worker.core.model import JobStatus
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.kube.fake_cluster import PASS, Request
from tests.support.fake_jobs import FakeJobs, app_deployment, pods_of

CORDONED_BY = "chaos.pystol.org/cordoned-by"


def cordon(*names: str, duration: str = "0.2s", **extra: Any) -> dict[str, Any]:
    return {"action": "node-cordon", "target": {"names": list(names)}, "duration": duration,
            **extra}


def cordoned(jobs: FakeJobs, name: str) -> bool:
    node = jobs.fake.get("Node", None, name) or {}
    return bool(node["spec"].get("unschedulable")) or \
        CORDONED_BY in (node["metadata"].get("annotations") or {})


def test_a_failed_injection_is_undone_with_the_faults_already_injected() -> None:
    jobs = FakeJobs()
    jobs.fake.add_node("n1")
    jobs.fake.add_node("n2")

    def n2_refuses(request: Request) -> Any:
        if request.name == "n2" and request.body["spec"].get("unschedulable"):
            raise ClusterError("Kubernetes API answered 500: apiserver restarting", 500)
        return PASS
    jobs.fake.prepend_reactor("patch", "nodes", n2_refuses)
    record = jobs.run(cordon("n1", "n2"))

    assert record.status == JobStatus.FAILED
    assert "apiserver restarting" in (record.reason or "")
    assert not cordoned(jobs, "n1") and not cordoned(jobs, "n2")
    [change] = record.result.changes  # n1 was cordoned, and reverted
    assert change.target.name == "n1" and change.reverted_at is not None
    assert jobs.journal_entries() == []


def test_a_failed_revert_stays_journaled_fails_the_job_and_the_reaper_finishes_it() -> None:
    jobs = FakeJobs()
    jobs.fake.add_node("n1")
    refusing = [True]

    def uncordon_refused(request: Request) -> Any:
        if refusing[0] and not request.body["spec"].get("unschedulable"):
            raise ClusterError("Kubernetes API answered 403: forbidden", 403)
        return PASS
    jobs.fake.prepend_reactor("patch", "nodes", uncordon_refused)
    record = jobs.run(cordon("n1"))

    assert record.status == JobStatus.FAILED
    assert (record.reason or "").startswith("revert failed (the journal keeps it for the "
                                            "reaper)")
    [change] = record.result.changes
    assert change.reverted_at is None and "forbidden" in (change.error or "")
    assert cordoned(jobs, "n1")
    [entry] = jobs.journal_entries()
    assert entry.job_id == record.id and entry.target.name == "n1"

    refusing[0] = False  # the API lets the reaper through
    report = jobs.reap()
    assert report.reverted == [entry.describe()] and report.failed == []
    assert not cordoned(jobs, "n1")
    assert jobs.journal_entries() == []


def test_a_cancel_ends_the_hold_at_once_and_reverts() -> None:
    jobs = FakeJobs()
    jobs.fake.add_node("n1")
    injected = jobs.when_injected()
    with jobs.running(cordon("n1", duration="60s")) as job_id:
        assert injected.wait(5)
        assert cordoned(jobs, "n1")
        asked = time.monotonic()
        jobs.store.request_cancel(job_id, "tester")
    took = time.monotonic() - asked

    record = jobs.store.get(job_id)
    assert record.status == JobStatus.ABORTED and record.reason == "aborted: cancelled by tester"
    assert took < 3
    assert not cordoned(jobs, "n1")
    [change] = record.result.changes
    assert change.reverted_at is not None
    assert jobs.journal_entries() == []


def test_a_workload_held_by_one_job_is_refused_to_another_that_will_not_wait() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    injected = jobs.when_injected()
    partition = {"action": "network-partition",
                 "target": {"namespaces": ["shop"], "label_selector": "app=web", "mode": "all"},
                 "duration": "60s"}
    with jobs.running(partition) as first:
        assert injected.wait(5)
        second = jobs.run({"action": "pod-kill", "on_conflict": "reject",
                           "target": {"namespaces": ["shop"], "label_selector": "app=web"}},
                          within=5)
        jobs.store.request_cancel(first, "tester")

    assert second.status == JobStatus.FAILED
    assert f"refused: another running job holds a fault on Deployment/shop/web (job {first})" \
        in (second.reason or "")
    assert len(pods_of(jobs.fake)) == 3 and jobs.fake.called("delete", "pods") == []
    assert jobs.store.get(first).status == JobStatus.ABORTED
    assert jobs.fake.objects("NetworkPolicy") == [] and jobs.journal_entries() == []
