"""Consistent paging, list resourceVersions and ResourceQuota, over HTTPS with the official
client, as a controller or a `kubectl get --chunk-size` would meet them.

A paged list must read like one snapshot however the objects change between pages (that is
what client-go's pager and informers' initial lists count on), and when the snapshot is
gone the answer must be the 410 a real apiserver gives, with its token for the rest. A
namespace's ResourceQuota must refuse the pod that would exceed it, whoever creates it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.support.kube_helpers import wait_for
from tests.support.sim_process import SimProcess

INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You "
    "can start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list.")


def meta(name: str, **kwargs: Any) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=name, **kwargs)


def body_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


@pytest.fixture(scope="module")
def api(sim: SimProcess) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(sim.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def ns(core: client.CoreV1Api, apps: client.AppsV1Api) -> Iterator[str]:
    name = f"it-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=meta(name)))
    yield name
    apps.delete_collection_namespaced_deployment(name)
    apps.delete_collection_namespaced_replica_set(name)
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core.delete_namespace(name)


def make_configmaps(core: client.CoreV1Api, ns: str, count: int) -> None:
    for i in range(count):
        core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=meta(f"cm-{i:02d}", labels={"set": "paged"}), data={"v": "original"}))


# ------------------------------------------------------------------------------ paging


@pytest.mark.parametrize("label_selector", [None, "set=paged"])
def test_a_paged_list_is_one_snapshot_while_objects_change(
        core: client.CoreV1Api, ns: str, label_selector: str | None) -> None:
    make_configmaps(core, ns, 30)
    first = core.list_namespaced_config_map(ns, limit=10, label_selector=label_selector)
    pinned = first.metadata.resource_version
    # Between the pages: delete an object of a later page, add one that sorts into a
    # later page, change another one's data and move one out of the selector.
    core.delete_namespaced_config_map("cm-25", ns)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=meta("cm-15b", labels={"set": "paged"}), data={"v": "new"}))
    core.patch_namespaced_config_map("cm-20", ns, {"data": {"v": "changed"}})
    core.patch_namespaced_config_map("cm-12", ns, {"metadata": {"labels": {"set": "moved"}}})
    pages = [first]
    while pages[-1].metadata._continue:
        pages.append(core.list_namespaced_config_map(
            ns, limit=10, label_selector=label_selector, _continue=pages[-1].metadata._continue))
        core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=meta(f"cm-zz-{len(pages)}", labels={"set": "paged"})))
    items = [item for page in pages for item in page.items]
    assert [c.metadata.name for c in items] == [f"cm-{i:02d}" for i in range(30)]
    assert {c.data["v"] for c in items} == {"original"}
    assert {page.metadata.resource_version for page in pages} == {pinned}
    if label_selector is None:  # as on a real apiserver: only known without selectors
        assert [page.metadata.remaining_item_count for page in pages] == [20, 10, None]
    # A new list sees the changes.
    now = [c.metadata.name for c in core.list_namespaced_config_map(
        ns, label_selector=label_selector).items]
    assert "cm-25" not in now and "cm-15b" in now
    assert ("cm-12" in now) == (label_selector is None)


def test_a_continue_after_compaction_is_410_with_a_token_for_the_rest(
        sim: SimProcess, core: client.CoreV1Api, ns: str) -> None:
    make_configmaps(core, ns, 6)
    first = core.list_namespaced_config_map(ns, limit=3)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("cm-99")))
    status, body = sim.request("POST", "/_sim/compact")
    assert status == 200, body
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map(ns, limit=3, _continue=first.metadata._continue)
    assert caught.value.status == 410
    answer = body_of(caught.value)
    assert answer["reason"] == "Expired"
    assert answer["message"] == INCONSISTENT_CONTINUE
    # The offered token continues where the first page stopped, at the latest state.
    rest = core.list_namespaced_config_map(ns, limit=10, _continue=answer["metadata"]["continue"])
    assert [c.metadata.name for c in rest.items] == ["cm-03", "cm-04", "cm-05", "cm-99"]
    assert int(rest.metadata.resource_version) > int(first.metadata.resource_version)


@pytest.mark.parametrize("token", ["garbage!", "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MH0",
                                   "W10", "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MSwic3RhcnQiOjF9"])
def test_a_forged_continue_token_is_a_bad_request(core: client.CoreV1Api, ns: str,
                                                  token: str) -> None:
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map(ns, limit=3, _continue=token)
    assert caught.value.status == 400
    assert body_of(caught.value)["message"].startswith("invalid continue token")


def test_a_list_at_an_exact_resource_version(core: client.CoreV1Api, ns: str) -> None:
    make_configmaps(core, ns, 2)
    before = core.list_namespaced_config_map(ns).metadata.resource_version
    core.delete_namespaced_config_map("cm-00", ns)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("cm-later")))
    exact = core.list_namespaced_config_map(ns, resource_version=before,
                                            resource_version_match="Exact")
    assert [c.metadata.name for c in exact.items] == ["cm-00", "cm-01"]
    assert exact.metadata.resource_version == before
    newest = core.list_namespaced_config_map(ns, resource_version=before,
                                             resource_version_match="NotOlderThan")
    assert [c.metadata.name for c in newest.items] == ["cm-01", "cm-later"]
    with pytest.raises(ApiException) as future:
        core.list_namespaced_config_map(ns, resource_version=str(10**12),
                                        resource_version_match="NotOlderThan")
    assert future.value.status == 504
    assert body_of(future.value)["message"].startswith("Too large resource version")
    with pytest.raises(ApiException) as no_version:
        core.list_namespaced_config_map(ns, resource_version_match="Exact")
    assert no_version.value.status == 422
    assert "resourceVersionMatch is forbidden unless resourceVersion is provided" in \
        body_of(no_version.value)["message"]


# --------------------------------------------------------------------------- quota


def bare_pod(name: str) -> client.V1Pod:
    return client.V1Pod(metadata=meta(name), spec=client.V1PodSpec(containers=[
        client.V1Container(name="app", image="registry.k8s.io/pause:3.9",
                           resources=client.V1ResourceRequirements(
                               requests={"cpu": "100m", "memory": "32Mi"}))]))


def quota_used(core: client.CoreV1Api, ns: str) -> dict[str, str]:
    status = core.read_namespaced_resource_quota("q", ns).status
    return dict(status.used or {}) if status else {}


def test_a_pod_beyond_the_quota_is_refused_like_kube_apiserver_does(
        core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=meta("q"), spec=client.V1ResourceQuotaSpec(hard={"pods": "2",
                                                                  "requests.cpu": "1"})))
    core.create_namespaced_pod(ns, bare_pod("one"))
    core.create_namespaced_pod(ns, bare_pod("two"))
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(ns, bare_pod("three"))
    assert caught.value.status == 403
    answer = body_of(caught.value)
    assert answer["reason"] == "Forbidden"
    assert answer["message"] == ('pods "three" is forbidden: exceeded quota: q, requested: '
                                 "pods=1, used: pods=2, limited: pods=2")
    assert quota_used(core, ns) == {"pods": "2", "requests.cpu": "200m"}
    assert core.read_namespaced_resource_quota("q", ns).status.hard == {"pods": "2",
                                                                         "requests.cpu": "1"}
    core.delete_namespaced_pod("one", ns, grace_period_seconds=0)
    wait_for(lambda: quota_used(core, ns).get("pods") == "1")
    core.create_namespaced_pod(ns, bare_pod("three"))


def test_a_controller_is_held_to_the_quota_too(core: client.CoreV1Api, apps: client.AppsV1Api,
                                               ns: str) -> None:
    core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=meta("q"), spec=client.V1ResourceQuotaSpec(hard={"pods": "2"})))
    labels = {"app": "web"}
    apps.create_namespaced_deployment(ns, client.V1Deployment(
        metadata=meta("web"), spec=client.V1DeploymentSpec(
            replicas=3, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="app", image="registry.k8s.io/pause:3.9")])))))

    def refusals() -> list[str]:
        return [e.message for e in core.list_namespaced_event(ns).items
                if e.reason == "FailedCreate" and "exceeded quota: q" in (e.message or "")]

    wait_for(refusals, timeout=20)
    assert len(core.list_namespaced_pod(ns, label_selector="app=web").items) == 2
    assert quota_used(core, ns) == {"pods": "2"}
    # Raising the quota lets the ReplicaSet's retry create the third pod.
    core.patch_namespaced_resource_quota("q", ns, {"spec": {"hard": {"pods": "3"}}})
    wait_for(lambda: len(core.list_namespaced_pod(ns, label_selector="app=web").items) == 3,
             timeout=20)


def test_a_pod_created_as_already_finished_still_counts_against_the_quota(
        core: client.CoreV1Api, ns: str) -> None:
    """A client cannot dodge the quota by posting pods that claim to be finished: the
    apiserver throws a created pod's status away (the pod starts Pending)."""
    core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=meta("q"), spec=client.V1ResourceQuotaSpec(hard={"pods": "1"})))
    sneaky = [client.V1Pod(metadata=meta(f"done-{i}"), spec=bare_pod("x").spec,
                           status=client.V1PodStatus(phase="Succeeded",
                                                     conditions=[client.V1PodCondition(
                                                         type="Ready", status="True")]))
              for i in range(5)]
    created = core.create_namespaced_pod(ns, sneaky[0])
    assert created.status.phase == "Pending"
    assert not any(c.type == "Ready" and c.status == "True"
                   for c in created.status.conditions or ())
    for pod in sneaky[1:]:
        with pytest.raises(ApiException) as caught:
            core.create_namespaced_pod(ns, pod)
        assert caught.value.status == 403
    assert len(core.list_namespaced_pod(ns).items) == 1
    assert quota_used(core, ns) == {"pods": "1"}


def test_a_finished_pod_cannot_be_brought_back_to_life_by_a_status_write(
        core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_pod(ns, bare_pod("one"))
    pod = core.read_namespaced_pod_status("one", ns)
    pod.status.phase = "Succeeded"
    core.replace_namespaced_pod_status("one", ns, pod)
    pod = core.read_namespaced_pod_status("one", ns)
    pod.status.phase = "Running"
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_pod_status("one", ns, pod)
    assert caught.value.status == 422
    assert "status.phase" in body_of(caught.value)["message"]
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_pod_status("one", ns, {"status": {"phase": "Pending"}})
    assert caught.value.status == 422
    assert core.read_namespaced_pod("one", ns).status.phase == "Succeeded"
