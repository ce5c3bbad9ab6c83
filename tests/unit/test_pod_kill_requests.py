"""pod-kill's Kubernetes requests before its DELETE, and recovery still timed right.

Before the first DELETE a pod-kill reads the selection's list and nothing else once the
pod's ReplicaSet is known to this process (`kube.objects.OwnerCache`); the workload
(desired replicas, selector) is read after the DELETE, and the recovery observer starts
from the selection's own list (its watch replays the kill) instead of listing again.
"""

from __future__ import annotations

import threading
from typing import Any

from pystol_worker.core.model import JobStatus
from pystol_worker.faults.pod_selection import select_pods, slim_pod
from pystol_worker.kube.fake_cluster import PASS, FakeCluster, Request
from pystol_worker.kube.objects import OwnerCache, workload_ref
from tests.support.fake_jobs import FakeJobs, app_deployment

KILL = {"action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                         "mode": "one"}}


def before_first_delete(fake: FakeCluster) -> list[tuple[str, str]]:
    calls = [(r.verb, r.resource) for r in fake.requests]
    return calls[:calls.index(("delete", "pods"))]


def test_a_warm_pod_kill_reads_only_the_selection_list_before_its_delete() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    first = jobs.run(KILL)
    assert first.status == JobStatus.SUCCEEDED, first.error
    # The first job of this ReplicaSet reads it once, for the Deployment the lock is on.
    assert before_first_delete(jobs.fake) == [("list", "pods"), ("get", "replicasets")]
    jobs.fake.requests.clear()

    record = jobs.run(KILL)
    assert record.status == JobStatus.SUCCEEDED, record.error
    assert before_first_delete(jobs.fake) == [("list", "pods")]
    # After the DELETE: the Deployment (desired, selector) and the watch; no second list.
    assert [(r.verb, r.resource) for r in jobs.fake.requests] == [
        ("list", "pods"), ("delete", "pods"), ("get", "deployments"), ("watch", "pods")]
    assert [r.options["resource_version"] for r in jobs.fake.called("watch", "pods")] != [""]
    [recovery] = record.result.recovery
    assert recovery.recovered and recovery.desired_replicas == 3
    assert str(record.result.changes[0].target.workload) == "Deployment/shop/web"


def test_the_observer_lists_itself_when_the_selection_was_not_its_workloads_pods() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    spec = {**KILL, "target": {**KILL["target"], "label_selector": "app in (web,other)"}}
    record = jobs.run(spec)
    assert record.status == JobStatus.SUCCEEDED, record.error
    lists = jobs.fake.called("list", "pods")
    assert [r.options["label_selector"] for r in lists] == ["app in (web,other)", "app=web"]
    assert before_first_delete(jobs.fake).count(("list", "pods")) == 1  # its own: after
    assert record.result.recovery[0].recovered


def test_a_watch_from_a_compacted_version_lists_again_and_still_sees_the_recovery() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    gone = threading.Event()

    def expired(request: Request) -> Any:
        if gone.is_set():
            return PASS
        gone.set()
        return iter([("ERROR", {"code": 410, "message": "too old resource version"})])
    jobs.fake.prepend_reactor("watch", "pods", expired)
    record = jobs.run(KILL)
    assert record.status == JobStatus.SUCCEEDED, record.error
    assert gone.is_set()
    # the selection's list, then the observer's own list after the 410
    assert len(jobs.fake.called("list", "pods")) == 2
    [recovery] = record.result.recovery
    assert recovery.recovered and recovery.ready_replicas == 3


def test_owner_cache_reads_a_replica_set_once_and_stays_bounded() -> None:
    fake = FakeCluster()
    app_deployment(fake, replicas=2)
    owners = OwnerCache(size=1)
    pods = fake.objects("Pod", "shop")
    refs = {str(workload_ref(fake, slim_pod(pod), owners)) for pod in pods}
    assert refs == {"Deployment/shop/web"}
    assert len(fake.called("get", "replicasets")) == 1
    owners.put("another-uid", ("Deployment", "x"))
    assert len(owners) == 1  # the oldest entry made room
    workload_ref(fake, pods[0], owners)
    assert len(fake.called("get", "replicasets")) == 2


def test_owner_answers_age_out_so_an_adoption_is_seen() -> None:
    fake = FakeCluster()
    app_deployment(fake, replicas=1)
    now = [0.0]
    owners = OwnerCache(max_age=60, clock=lambda: now[0])
    [pod] = fake.objects("Pod", "shop")
    workload_ref(fake, pod, owners)
    workload_ref(fake, pod, owners)
    assert len(fake.called("get", "replicasets")) == 1
    now[0] = 61
    workload_ref(fake, pod, owners)
    assert len(fake.called("get", "replicasets")) == 2


def test_an_owner_reference_into_another_namespace_gets_no_cached_owner() -> None:
    """A pod's ownerReference is written by whoever created the pod: naming the uid of a
    ReplicaSet in another namespace must not borrow that ReplicaSet's owner."""
    fake = FakeCluster()
    app_deployment(fake, replicas=1)
    owners = OwnerCache()
    [pod] = fake.objects("Pod", "shop")
    assert str(workload_ref(fake, pod, owners)) == "Deployment/shop/web"
    forged = {"metadata": {"namespace": "team-a", "name": "mine",
                           "ownerReferences": pod["metadata"]["ownerReferences"]}}
    assert workload_ref(fake, forged, owners) is None  # read: no such ReplicaSet in team-a
    assert len(fake.called("get", "replicasets")) == 2


def test_selection_keeps_slim_pods_and_the_list_it_came_from() -> None:
    from pystol_worker.core.model import Target
    from pystol_worker.core.settings import Settings

    fake = FakeCluster()
    app_deployment(fake, replicas=3)
    selection = select_pods(fake, Target(namespaces=["shop"], label_selector="app=web",
                                         mode="all"), Settings(), project=slim_pod)
    pod = selection.objects[0]
    assert set(pod) <= {"metadata", "spec", "status"}
    assert set(pod["metadata"]) <= {"name", "namespace", "uid", "deletionTimestamp",
                                    "ownerReferences"}
    assert pod["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    listing = selection.listings["shop"]
    assert len(listing.pods) == 3 and listing.resource_version
    assert listing.covers("shop", "app = web") and not listing.covers("shop", "app=web,x=y")


def test_plugins_get_whole_pods_unless_they_ask_for_slim_ones() -> None:
    """An action plug-in may read anything of the pods it chose (the example plug-in keeps
    a value in an annotation): the default selection keeps whole pods."""
    from pystol_worker.core.model import Target
    from pystol_worker.core.settings import Settings

    fake = FakeCluster()
    app_deployment(fake, replicas=1)
    [pod] = fake.objects("Pod", "shop")
    fake.patch("Pod", "shop", pod["metadata"]["name"],
               {"metadata": {"annotations": {"team": "blue"}}})
    selection = select_pods(fake, Target(namespaces=["shop"], label_selector="app=web",
                                         mode="all"), Settings())
    assert selection.objects[0]["metadata"]["annotations"] == {"team": "blue"}
