"""The in-process fake cluster itself: tracker, selectors, watch, reactors, controller."""

from __future__ import annotations

from typing import Any

import pytest

from pystol_worker.core.model import TargetRef
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError, NotFound
from pystol_worker.kube.fake_cluster import (
    PASS,
    FakeCluster,
    Request,
    fields_match,
    labels_match,
    merge_patch,
)
from tests.support.fake_jobs import app_deployment, pods_of, ready


def protocol_methods() -> list[str]:
    return sorted(name for name in vars(Cluster) if not name.startswith("_"))


def test_both_clusters_have_every_protocol_method() -> None:
    methods = protocol_methods()
    assert "evict" in methods and "exec_in_pod" in methods and "watch_pods" in methods
    assert isinstance(FakeCluster(), Cluster)
    for name in methods:
        assert callable(getattr(ClusterAccess, name, None)), name
        assert callable(getattr(FakeCluster, name, None)), name


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", True), ("app==web", True), ("app!=web", False), ("tier!=db", True),
    ("app in (web,api)", True), ("app notin (web)", False), ("app", True), ("!app", False),
    ("!canary", True), ("app=web,tier=front", True), ("app=web,tier=back", False),
    ("", True), (None, True)])
def test_label_selectors(selector: str | None, expected: bool) -> None:
    assert labels_match({"app": "web", "tier": "front"}, selector) is expected


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "a"}, "spec": {"nodeName": "n1"},
           "status": {"phase": "Running"}}
    assert fields_match(pod, "spec.nodeName=n1,status.phase=Running")
    assert not fields_match(pod, "spec.nodeName!=n1")
    assert fields_match(pod, "spec.missing!=x")


def test_patch_merges_maps_deletes_nulls_and_merges_containers_by_name() -> None:
    pod = {"metadata": {"labels": {"a": "1", "b": "2"}},
           "spec": {"containers": [{"name": "app", "image": "x:1"},
                                   {"name": "side", "image": "y:1"}]}}
    patched = merge_patch(pod, {"metadata": {"labels": {"a": None, "c": "3"}},
                                "spec": {"containers": [{"name": "side", "image": "pause"}]}})
    assert patched["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert patched["spec"]["containers"] == [{"name": "app", "image": "x:1"},
                                             {"name": "side", "image": "pause"}]
    assert pod["metadata"]["labels"] == {"a": "1", "b": "2"}  # the input is left alone


def test_writes_bump_resource_versions_and_preconditions_conflict() -> None:
    fake = FakeCluster()
    node = fake.add_node("n1")
    patched = fake.patch("Node", None, "n1", {"metadata": {
        "resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"unschedulable": True}})
    assert int(patched["metadata"]["resourceVersion"]) > int(node["metadata"]["resourceVersion"])
    with pytest.raises(ClusterError) as stale:
        fake.patch("Node", None, "n1", {"metadata": {
            "resourceVersion": node["metadata"]["resourceVersion"]}})
    assert stale.value.status == 409
    pod = fake.add_pod("shop", "p")
    with pytest.raises(ClusterError) as other_pod:
        fake.patch("Pod", "shop", "p", {"metadata": {"uid": "someone-else"}})
    assert other_pod.value.status == 409
    with pytest.raises(ClusterError) as other_delete:
        fake.delete_pod("shop", "p", "someone-else", None)
    assert other_delete.value.status == 409
    fake.delete_pod("shop", "p", pod["metadata"]["uid"], 0)
    assert fake.get("Pod", "shop", "p") is None
    with pytest.raises(NotFound):
        fake.get_pod("shop", "p")
    assert fake.delete("Pod", "shop", "p") is False


def test_a_watch_from_a_lists_version_sees_exactly_the_later_writes() -> None:
    fake = FakeCluster(controllers=False)
    fake.add_pod("shop", "before", {"app": "web"})
    pods, rv = fake.list_pods("shop", "app=web")
    assert [p["metadata"]["name"] for p in pods] == ["before"]
    fake.add_pod("shop", "after", {"app": "web"})
    fake.add_pod("shop", "other-app", {"app": "db"})
    fake.add_pod("other-ns", "elsewhere", {"app": "web"})
    fake.set_pod_ready("shop", "before", False)
    fake.delete("Pod", "shop", "after")
    seen = [(kind, pod["metadata"]["name"]) for kind, pod in fake.watch_pods("shop", "app=web",
                                                                              rv, 1)]
    assert seen == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]


def test_a_watch_from_a_compacted_version_is_told_410() -> None:
    fake = FakeCluster()
    fake.add_pod("shop", "first")
    _, rv = fake.list_pods("shop")
    fake.add_pod("shop", "second")
    fake.tracker.compact()
    [(kind, status)] = list(fake.watch_pods("shop", "", rv, 1))
    assert kind == "ERROR" and status["code"] == 410


def test_reactors_answer_raise_or_pass_through_newest_first() -> None:
    fake = FakeCluster()
    fake.add_pod("shop", "p", node="n1")
    seen: list[str] = []

    def observe(request: Request) -> Any:
        seen.append(f"{request.verb} {request.resource} {request.name}")
        return PASS

    def refuse(request: Request) -> Any:
        raise ClusterError("Cannot evict pod as it would violate the pod's disruption "
                           "budget.", 429, "TooManyRequests")
    fake.add_reactor("*", "*", observe)
    fake.prepend_reactor("create", "pods/eviction", refuse)
    with pytest.raises(ClusterError) as refused:
        fake.evict("shop", "p")
    assert refused.value.status == 429
    assert fake.get("Pod", "shop", "p") is not None
    assert seen == []  # the refusing reactor answered before the observing one ran

    fake.prepend_reactor("create", "pods/exec", lambda request: (137, "", "killed"))
    assert fake.exec_in_pod("shop", "p", "app", ["kill", "1"]) == (137, "", "killed")
    [exec_call] = fake.called("create", "pods/exec")
    assert exec_call.body == ["kill", "1"] and exec_call.options["container"] == "app"
    assert fake.get_pod("shop", "p")["spec"]["nodeName"] == "n1"
    assert seen == ["get pods p"]


def test_exec_answers_the_configured_result_for_a_real_container_only() -> None:
    fake = FakeCluster()
    fake.add_pod("shop", "p")
    fake.exec_result = (0, "bye\n", "")
    assert fake.exec_in_pod("shop", "p", "app", ["kill", "1"]) == (0, "bye\n", "")
    with pytest.raises(ClusterError) as bad:
        fake.exec_in_pod("shop", "p", "nope", ["true"])
    assert bad.value.status == 400


def test_the_replica_controller_replaces_deleted_pods_on_schedulable_nodes() -> None:
    fake = FakeCluster()
    app_deployment(fake, replicas=3, nodes=("n1", "n2", "n3"))
    pods = pods_of(fake)
    assert len(pods) == 3 and all(ready(p) for p in pods.values())
    assert sorted(p["spec"]["nodeName"] for p in pods.values()) == ["n1", "n2", "n3"]
    fake.patch("Node", None, "n1", {"spec": {"unschedulable": True}})
    on_n1 = next(p for p in pods.values() if p["spec"]["nodeName"] == "n1")
    fake.evict("shop", on_n1["metadata"]["name"])
    after = pods_of(fake)
    assert len(after) == 3 and on_n1["metadata"]["uid"] not in after
    assert "n1" not in {p["spec"]["nodeName"] for p in after.values()}
    assert all(ready(p) for p in after.values())

    fake.set_scale("Deployment", "shop", "web", 1)
    assert len(pods_of(fake)) == 1
    fake.set_scale("Deployment", "shop", "web", 2)
    assert len(pods_of(fake)) == 2
    assert fake.get_workload("Deployment", "shop", "web")["spec"]["replicas"] == 2


def test_without_controllers_a_deleted_pod_stays_gone() -> None:
    fake = FakeCluster(controllers=False)
    app_deployment(fake, replicas=2)
    victim = next(iter(pods_of(fake).values()))
    fake.delete_pod("shop", victim["metadata"]["name"], None, None)
    assert len(pods_of(fake)) == 1


def test_events_are_posted_as_objects() -> None:
    fake = FakeCluster()
    ref = TargetRef(kind="Node", name="n1", uid="u1")
    fake.post_event(ref, "v1", "PystolChaos", "cordoned node n1")
    [event] = fake.events("PystolChaos")
    assert event["involvedObject"]["name"] == "n1" and event["message"] == "cordoned node n1"
    assert event["metadata"]["namespace"] == "default"
