"""The job runner on the in-process fake cluster: each way a job can end, and why."""

from __future__ import annotations

from typing import Any

from pystol_worker.core.model import JobStatus, TargetRef, Verdict
from pystol_worker.jobs.runner import LOST_WORKER_REASON
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.kube.fake_cluster import Request
from pystol_worker.safety.revert_journal import JournalEntry
from tests.support.fake_jobs import LOOPBACK_PROBES, FakeJobs, app_deployment, http_server, pods_of

KILL_TWO = {"action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                              "mode": "fixed", "value": 2}}


def test_a_dry_run_selects_and_changes_nothing() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    before = pods_of(jobs.fake)
    record = jobs.run({**KILL_TWO, "dry_run": True})

    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert record.reason == "dry run: would have affected 2 pods; nothing changed"
    would = record.result.output["would_affect"]
    assert len(would) == 2 and {item["uid"] for item in would} <= set(before)
    assert [t.uid for t in record.targets] == [item["uid"] for item in would]
    assert pods_of(jobs.fake).keys() == before.keys()
    assert {r.verb for r in jobs.fake.requests} <= {"get", "list"}
    assert [e.kind for e in record.timeline][-2:] == ["selected", "succeeded"]


def test_a_job_whose_target_matches_nothing_fails_without_touching_anything() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    record = jobs.run({**KILL_TWO, "target": {"namespaces": ["shop"],
                                              "label_selector": "app=nothing"}})

    assert record.status == JobStatus.FAILED
    assert (record.reason or "").startswith("no targets")
    assert {r.verb for r in jobs.fake.requests} == {"list"}


def test_an_invalid_job_fails_naming_the_field() -> None:
    jobs = FakeJobs()
    record = jobs.run({**KILL_TWO, "params": {"grace_period_seconds": -1}})

    assert record.status == JobStatus.FAILED
    assert "invalid job: params.grace_period_seconds" in (record.reason or "")
    assert jobs.fake.requests == []


def test_a_kubernetes_error_fails_the_job_with_the_apis_answer() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)

    def broken(request: Request) -> Any:
        raise ClusterError("Kubernetes API answered 500: etcd is gone", 500)
    jobs.fake.prepend_reactor("list", "pods", broken)
    record = jobs.run(KILL_TWO)

    assert record.status == JobStatus.FAILED
    assert record.reason == "Kubernetes API error: Kubernetes API answered 500: etcd is gone"
    assert len(pods_of(jobs.fake)) == 3


def test_an_unhealthy_steady_state_stops_the_job_before_injection() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    app_deployment(jobs.fake, replicas=3)
    before = pods_of(jobs.fake)
    with http_server() as base:
        record = jobs.run({**KILL_TWO, "probes": [{"url": f"{base}/503"}]})

    # Nothing was changed: the job is skipped (it used to end failed), and says why.
    assert record.status == JobStatus.SKIPPED
    assert record.verdict == Verdict.SKIPPED and record.score is None
    assert (record.reason or "").startswith("steady state not met before injection")
    assert "answered 503" in (record.reason or "")
    [probe] = record.result.probes
    assert (probe.phase, probe.ok, probe.status) == ("before", False, 503)
    assert pods_of(jobs.fake).keys() == before.keys()
    assert jobs.fake.called("delete", "pods") == []


def test_steady_state_probes_run_before_and_after_a_healthy_job() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    app_deployment(jobs.fake, replicas=3)
    with http_server() as base:
        record = jobs.run({**KILL_TWO, "probes": [{"url": f"{base}/200"}]})

    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert [(p.phase, p.ok) for p in record.result.probes] == [("before", True),
                                                                ("after", True)]
    assert record.verdict == Verdict.PASSED and record.score == 100.0


def test_a_redelivered_job_of_a_lost_worker_is_reverted_and_aborted() -> None:
    jobs = FakeJobs()
    jobs.fake.add_node("n1")
    job_id = jobs.submit({"action": "node-cordon", "target": {"names": ["n1"]},
                          "duration": "60s"})
    # Worker A claimed the job, journaled a cordon, cordoned n1, and died (no heartbeat).
    jobs.store.claim(job_id, "worker-a")
    jobs.journal.record(JournalEntry(
        job_id=job_id, action="node-cordon", undo="uncordon-node",
        target=TargetRef(kind="Node", name="n1", node="n1",
                         uid=(jobs.fake.get("Node", None, "n1") or {})["metadata"]["uid"]),
        data={"node": "n1", "job_id": job_id, "original_unschedulable": None,
              "had_annotations": False}))
    jobs.fake.patch("Node", None, "n1", {"metadata": {"annotations": {
        "chaos.pystol.org/cordoned-by": job_id}}, "spec": {"unschedulable": True}})

    status = jobs.runner.run(job_id, "worker-b")  # the broker delivers it again

    record = jobs.store.get(job_id)
    assert status == record.status == JobStatus.ABORTED
    assert record.reason == LOST_WORKER_REASON + "; reverted 1 change(s) it left"
    node = jobs.fake.get("Node", None, "n1") or {}
    assert node["spec"].get("unschedulable") is None and "annotations" not in node["metadata"]
    assert jobs.journal_entries() == []
