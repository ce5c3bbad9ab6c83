"""The REST contract of pystol-sim, driven with the official `kubernetes` Python client.

Every test talks to the session's simulated cluster (`sim`, the demo scenario at 10x speed)
over HTTPS exactly as a user's tooling would. Tests that create objects do so in a namespace
of their own, so they neither see nor disturb each other's objects.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from pystol_sim.server import STREAMED_LIST_BATCH, STREAMED_LIST_ITEMS
from tests.support.kube_helpers import gone, pod_ready, wait_for
from tests.support.sim_process import SimProcess

# --------------------------------------------------------------------------------- helpers


def meta(name: str, **kwargs: Any) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=name, **kwargs)


def body_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)








def quick_annotations(start: float = 0, ready: float = 0) -> dict[str, str]:
    """Pod-template annotations that set the simulated kubelet's timings for the pod."""
    return {"sim.pystol.org/start-seconds": str(start), "sim.pystol.org/ready-seconds": str(ready)}


def container(name: str = "app", image: str = "registry.k8s.io/pause:3.9") -> client.V1Container:
    return client.V1Container(name=name, image=image)


def pod_template(labels: dict[str, str]) -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels, annotations=quick_annotations()),
        spec=client.V1PodSpec(containers=[container()]))


def make_deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(metadata=meta(name), spec=client.V1DeploymentSpec(
        replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
        template=pod_template(labels)))


# -------------------------------------------------------------------------------- fixtures


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


@pytest.fixture(scope="module")
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture(scope="module")
def extensions(api: client.ApiClient) -> client.ApiextensionsV1Api:
    return client.ApiextensionsV1Api(api)


@pytest.fixture
def ns(core: client.CoreV1Api, apps: client.AppsV1Api) -> Iterator[str]:
    """A namespace of the test's own; its workloads are removed before the namespace."""
    name = f"it-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=meta(name)))
    yield name
    # Delete the workloads explicitly: see test_deleting_a_namespace_deletes_its_contents.
    for delete in (apps.delete_collection_namespaced_deployment,
                   apps.delete_collection_namespaced_stateful_set,
                   apps.delete_collection_namespaced_daemon_set,
                   apps.delete_collection_namespaced_replica_set):
        delete(name)
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core.delete_namespace(name)


# ------------------------------------------------------------------------------------ CRUD


@dataclass(frozen=True)
class Kind:
    """One namespaced resource type: its API class, method suffix and a sample object."""

    id: str
    api: Callable[[client.ApiClient], Any]
    suffix: str
    sample: Callable[[str], Any]
    check: Callable[[Any], None]


def _check_configmap(obj: client.V1ConfigMap) -> None:
    assert obj.data == {"greeting": "hello"}


def _check_secret(obj: client.V1Secret) -> None:
    assert base64.b64decode(obj.data["password"]) == b"s3cret"
    assert obj.type == "Opaque"


def _check_service(obj: client.V1Service) -> None:
    assert obj.spec.ports[0].port == 80
    assert obj.spec.selector == {"app": "crud"}


def _check_pod(obj: client.V1Pod) -> None:
    assert [c.name for c in obj.spec.containers] == ["app"]


def _check_workload(obj: Any) -> None:
    assert obj.spec.selector.match_labels == {"app": "crud"}
    assert obj.spec.template.spec.containers[0].image == "registry.k8s.io/pause:3.9"


def _check_pdb(obj: client.V1PodDisruptionBudget) -> None:
    assert obj.spec.min_available == 1


def _check_netpol(obj: client.V1NetworkPolicy) -> None:
    assert obj.spec.pod_selector.match_labels == {"app": "crud"}
    assert obj.spec.policy_types == ["Ingress"]


def _check_lease(obj: client.V1Lease) -> None:
    assert obj.spec.holder_identity == "holder-1"
    assert obj.spec.lease_duration_seconds == 15


def _check_event(obj: client.CoreV1Event) -> None:
    assert obj.reason == "Testing"
    assert obj.involved_object.name == "somebody"


CRUD_LABELS = {"app": "crud"}
SELECTOR = client.V1LabelSelector(match_labels=CRUD_LABELS)

KINDS = [
    Kind("configmap", client.CoreV1Api, "config_map",
         lambda n: client.V1ConfigMap(metadata=meta(n), data={"greeting": "hello"}),
         _check_configmap),
    Kind("secret", client.CoreV1Api, "secret",
         lambda n: client.V1Secret(metadata=meta(n), type="Opaque", data={
             "password": base64.b64encode(b"s3cret").decode()}), _check_secret),
    Kind("service", client.CoreV1Api, "service",
         lambda n: client.V1Service(metadata=meta(n), spec=client.V1ServiceSpec(
             selector=CRUD_LABELS, ports=[client.V1ServicePort(port=80, target_port=8080)])),
         _check_service),
    Kind("pod", client.CoreV1Api, "pod",
         lambda n: client.V1Pod(metadata=meta(n, labels=CRUD_LABELS),
                                spec=client.V1PodSpec(containers=[container()])), _check_pod),
    Kind("deployment", client.AppsV1Api, "deployment",
         lambda n: client.V1Deployment(metadata=meta(n), spec=client.V1DeploymentSpec(
             replicas=1, selector=SELECTOR, template=pod_template(CRUD_LABELS))),
         _check_workload),
    Kind("statefulset", client.AppsV1Api, "stateful_set",
         lambda n: client.V1StatefulSet(metadata=meta(n), spec=client.V1StatefulSetSpec(
             replicas=1, service_name=n, selector=SELECTOR, template=pod_template(CRUD_LABELS))),
         _check_workload),
    Kind("daemonset", client.AppsV1Api, "daemon_set",
         lambda n: client.V1DaemonSet(metadata=meta(n), spec=client.V1DaemonSetSpec(
             selector=SELECTOR, template=pod_template(CRUD_LABELS))), _check_workload),
    Kind("poddisruptionbudget", client.PolicyV1Api, "pod_disruption_budget",
         lambda n: client.V1PodDisruptionBudget(
             metadata=meta(n), spec=client.V1PodDisruptionBudgetSpec(min_available=1,
                                                                     selector=SELECTOR)),
         _check_pdb),
    Kind("networkpolicy", client.NetworkingV1Api, "network_policy",
         lambda n: client.V1NetworkPolicy(metadata=meta(n), spec=client.V1NetworkPolicySpec(
             pod_selector=SELECTOR, policy_types=["Ingress"])), _check_netpol),
    Kind("lease", client.CoordinationV1Api, "lease",
         lambda n: client.V1Lease(metadata=meta(n), spec=client.V1LeaseSpec(
             holder_identity="holder-1", lease_duration_seconds=15)), _check_lease),
    Kind("event", client.CoreV1Api, "event",
         lambda n: client.CoreV1Event(
             metadata=meta(n), reason="Testing", message="a test event", type="Normal",
             involved_object=client.V1ObjectReference(kind="Pod", name="somebody")),
         _check_event),
]


def _replace_with_retry(kind_api: Any, suffix: str, name: str, ns: str,
                        change: Callable[[Any], None]) -> Any:
    """Read-modify-replace, retrying on 409 as a client must when controllers write too."""
    for _ in range(20):
        current = getattr(kind_api, f"read_namespaced_{suffix}")(name, ns)
        change(current)
        try:
            return getattr(kind_api, f"replace_namespaced_{suffix}")(name, ns, current)
        except ApiException as error:
            if error.status != 409:
                raise
    raise AssertionError(f"replace of {suffix} {name} kept conflicting")


@pytest.mark.parametrize("kind", KINDS, ids=[k.id for k in KINDS])
def test_crud(kind: Kind, api: client.ApiClient, ns: str) -> None:
    kind_api = kind.api(api)
    name = f"crud-{kind.id}"

    def call(verb: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(kind_api, f"{verb}_namespaced_{kind.suffix}")(*args, **kwargs)

    created = call("create", ns, kind.sample(name))
    assert created.metadata.name == name
    assert created.metadata.namespace == ns
    assert created.metadata.uid
    assert created.metadata.resource_version.isdigit()
    assert created.metadata.creation_timestamp is not None
    kind.check(created)

    read = call("read", name, ns)
    assert read.metadata.uid == created.metadata.uid
    kind.check(read)

    listed = call("list", ns)
    assert [item.metadata.name for item in listed.items] == [name]
    assert listed.metadata.resource_version.isdigit()

    def relabel(obj: Any) -> None:
        obj.metadata.labels = {**(obj.metadata.labels or {}), "step": "replaced"}

    replaced = _replace_with_retry(kind_api, kind.suffix, name, ns, relabel)
    assert replaced.metadata.labels["step"] == "replaced"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    kind.check(replaced)

    patched = call("patch", name, ns, {"metadata": {"labels": {"step": "patched"}}})
    assert patched.metadata.labels["step"] == "patched"
    kind.check(patched)
    assert call("read", name, ns).metadata.labels["step"] == "patched"

    call("delete", name, ns)
    wait_for(lambda: gone(lambda: call("read", name, ns)))
    with pytest.raises(ApiException) as caught:
        call("read", name, ns)
    assert caught.value.status == 404
    assert body_of(caught.value)["reason"] == "NotFound"
    assert call("list", ns).items == []


def test_service_gets_a_cluster_ip_and_endpoints(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_pod(ns, client.V1Pod(
        metadata=meta("backend", labels={"app": "backend"}, annotations=quick_annotations()),
        spec=client.V1PodSpec(containers=[container()])))
    core.create_namespaced_service(ns, client.V1Service(metadata=meta("backend"),
                                                        spec=client.V1ServiceSpec(
        selector={"app": "backend"}, ports=[client.V1ServicePort(port=80, target_port=8080)])))
    service = wait_for(lambda: (s := core.read_namespaced_service("backend", ns)).spec.cluster_ip
                       and s)
    assert service.spec.type == "ClusterIP"

    def ready_addresses() -> list[str]:
        try:
            endpoints = core.read_namespaced_endpoints("backend", ns)
        except ApiException:
            return []
        return [a.target_ref.name for subset in endpoints.subsets or ()
                for a in subset.addresses or ()]

    assert wait_for(ready_addresses) == ["backend"]


def test_namespace_crud(core: client.CoreV1Api) -> None:
    name = f"it-ns-{uuid.uuid4().hex[:8]}"
    created = core.create_namespace(client.V1Namespace(metadata=meta(name,
                                                                     labels={"team": "a"})))
    assert created.metadata.name == name
    assert wait_for(lambda: core.read_namespace(name).status.phase) == "Active"
    assert name in [n.metadata.name for n in core.list_namespace().items]
    assert [n.metadata.name for n in core.list_namespace(label_selector="team=a").items] == [
        name]
    patched = core.patch_namespace(name, {"metadata": {"labels": {"team": "b"}}})
    assert patched.metadata.labels["team"] == "b"
    current = core.read_namespace(name)
    current.metadata.labels["owner"] = "me"
    replaced = core.replace_namespace(name, current)
    assert replaced.metadata.labels == {**current.metadata.labels}
    core.delete_namespace(name)
    wait_for(lambda: gone(lambda: core.read_namespace(name)))


def test_created_namespace_carries_its_name_label(core: client.CoreV1Api) -> None:
    name = f"it-ns-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=meta(name)))
    try:
        assert core.read_namespace("shop").metadata.labels[
            "kubernetes.io/metadata.name"] == "shop"
        selected = core.list_namespace(label_selector=f"kubernetes.io/metadata.name={name}")
        assert [n.metadata.name for n in selected.items] == [name]
    finally:
        core.delete_namespace(name)


def test_deleting_a_namespace_deletes_its_contents(core: client.CoreV1Api) -> None:
    name = f"it-ns-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=meta(name)))
    core.create_namespaced_config_map(name, client.V1ConfigMap(metadata=meta("left"),
                                                               data={"a": "1"}))
    core.delete_namespace(name)
    wait_for(lambda: gone(lambda: core.read_namespace(name)))
    assert core.list_namespaced_config_map(name).items == []


# ------------------------------------------------------------------ custom resources (CRDs)


def crd_body(group: str, plural: str, kind: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group, "scope": scope,
            "names": {"plural": plural, "singular": plural[:-1], "kind": kind,
                      "shortNames": [plural[:3]]},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "required": ["size"], "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "color": {"type": "string", "enum": ["red", "blue"]}}},
                        "status": {"type": "object", "properties": {
                            "phase": {"type": "string"}}}}}},
            }],
        },
    }


@pytest.fixture
def crd(extensions: client.ApiextensionsV1Api) -> Iterator[tuple[str, str]]:
    """A namespaced CRD `widgets.<unique group>` with a status subresource: (group, plural)."""
    group = f"g{uuid.uuid4().hex[:8]}.test.pystol.org"
    extensions.create_custom_resource_definition(crd_body(group, "widgets", "Widget",
                                                          "Namespaced"))
    yield group, "widgets"
    try:
        extensions.delete_custom_resource_definition(f"widgets.{group}")
    except ApiException as error:  # the test may have deleted it already
        if error.status != 404:
            raise


def groups(api: client.ApiClient) -> list[str]:
    return [g.name for g in client.ApisApi(api).get_api_versions().groups]


def test_crd_is_established_and_its_group_is_discoverable(
        api: client.ApiClient, extensions: client.ApiextensionsV1Api,
        crd: tuple[str, str]) -> None:
    group, plural = crd

    def established() -> bool:
        status = extensions.read_custom_resource_definition(f"{plural}.{group}").status
        return bool(status and any(c.type == "Established" and c.status == "True"
                                   for c in status.conditions or ()))

    wait_for(established)
    assert group in groups(api)
    resources = client.CustomObjectsApi(api).get_api_resources(group, "v1")
    by_name = {r.name: r for r in resources.resources}
    assert by_name["widgets"].kind == "Widget"
    assert by_name["widgets"].namespaced is True
    assert by_name["widgets"].short_names == ["wid"]
    assert "widgets/status" in by_name

    extensions.delete_custom_resource_definition(f"{plural}.{group}")
    wait_for(lambda: group not in groups(api))
    with pytest.raises(ApiException) as caught:
        client.CustomObjectsApi(api).list_cluster_custom_object(group, "v1", plural)
    assert caught.value.status == 404


def test_namespaced_custom_resource_crud_and_status_subresource(
        custom: client.CustomObjectsApi, ns: str, crd: tuple[str, str]) -> None:
    group, plural = crd
    body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"},
            "spec": {"size": 2, "color": "red"}}
    created = custom.create_namespaced_custom_object(group, "v1", ns, plural, body)
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["namespace"] == ns
    assert custom.get_namespaced_custom_object(group, "v1", ns, plural, "w1")["spec"] == {
        "size": 2, "color": "red"}
    listed = custom.list_namespaced_custom_object(group, "v1", ns, plural)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]

    # The status subresource changes the status only, and never bumps the generation.
    after_status = custom.patch_namespaced_custom_object_status(
        group, "v1", ns, plural, "w1", {"status": {"phase": "Ready"}, "spec": {"size": 99}})
    assert after_status["status"] == {"phase": "Ready"}
    assert after_status["spec"]["size"] == 2
    assert after_status["metadata"]["generation"] == 1

    # The main resource ignores status changes; a spec change bumps the generation.
    after_spec = custom.patch_namespaced_custom_object(
        group, "v1", ns, plural, "w1", {"spec": {"size": 3}, "status": {"phase": "Lost"}})
    assert after_spec["spec"] == {"size": 3, "color": "red"}
    assert after_spec["status"] == {"phase": "Ready"}
    assert after_spec["metadata"]["generation"] == 2

    # A metadata-only change leaves the generation alone.
    relabelled = custom.patch_namespaced_custom_object(
        group, "v1", ns, plural, "w1", {"metadata": {"labels": {"x": "y"}}})
    assert relabelled["metadata"]["generation"] == 2

    current = custom.get_namespaced_custom_object(group, "v1", ns, plural, "w1")
    current["spec"]["color"] = "blue"
    replaced = custom.replace_namespaced_custom_object(group, "v1", ns, plural, "w1", current)
    assert replaced["spec"]["color"] == "blue"
    assert replaced["metadata"]["generation"] == 3

    custom.delete_namespaced_custom_object(group, "v1", ns, plural, "w1")
    with pytest.raises(ApiException) as caught:
        custom.get_namespaced_custom_object(group, "v1", ns, plural, "w1")
    assert caught.value.status == 404


def test_cluster_scoped_custom_resource(api: client.ApiClient,
                                        extensions: client.ApiextensionsV1Api,
                                        custom: client.CustomObjectsApi) -> None:
    group = f"c{uuid.uuid4().hex[:8]}.test.pystol.org"
    extensions.create_custom_resource_definition(crd_body(group, "gadgets", "Gadget",
                                                          "Cluster"))
    try:
        resources = custom.get_api_resources(group, "v1").resources
        assert next(r for r in resources if r.name == "gadgets").namespaced is False
        created = custom.create_cluster_custom_object(group, "v1", "gadgets", {
            "apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g1"},
            "spec": {"size": 1}})
        assert "namespace" not in created["metadata"]
        assert custom.get_cluster_custom_object(group, "v1", "gadgets", "g1")["spec"] == {
            "size": 1}
        status = custom.patch_cluster_custom_object_status(
            group, "v1", "gadgets", "g1", {"status": {"phase": "On"}})
        assert status["status"] == {"phase": "On"}
        assert status["metadata"]["generation"] == 1
        patched = custom.patch_cluster_custom_object(group, "v1", "gadgets", "g1",
                                                     {"spec": {"size": 5}})
        assert patched["metadata"]["generation"] == 2
        listed = custom.list_cluster_custom_object(group, "v1", "gadgets")
        assert [i["metadata"]["name"] for i in listed["items"]] == ["g1"]
        custom.delete_cluster_custom_object(group, "v1", "gadgets", "g1")
        assert custom.list_cluster_custom_object(group, "v1", "gadgets")["items"] == []
    finally:
        extensions.delete_custom_resource_definition(f"gadgets.{group}")


# ------------------------------------------------------------------------------ discovery


def test_core_discovery(core: client.CoreV1Api) -> None:
    listing = core.get_api_resources()
    assert listing.group_version == "v1"
    by_name = {r.name: r for r in listing.resources}
    pods = by_name["pods"]
    assert pods.kind == "Pod"
    assert pods.namespaced is True
    assert pods.short_names == ["po"]
    assert set(pods.verbs) >= {"create", "delete", "deletecollection", "get", "list", "patch",
                               "update", "watch"}
    eviction = by_name["pods/eviction"]
    assert (eviction.group, eviction.version, eviction.kind) == ("policy", "v1", "Eviction")
    assert eviction.verbs == ["create"]
    for sub in ("pods/status", "pods/exec", "pods/log"):
        assert sub in by_name
    assert by_name["namespaces"].namespaced is False
    assert by_name["namespaces"].short_names == ["ns"]
    assert by_name["configmaps"].short_names == ["cm"]
    assert by_name["services"].short_names == ["svc"]
    assert by_name["nodes"].namespaced is False
    assert "secrets" in by_name
    assert "events" in by_name


def test_apps_discovery(apps: client.AppsV1Api, api: client.ApiClient) -> None:
    listing = apps.get_api_resources()
    assert listing.group_version == "apps/v1"
    by_name = {r.name: r for r in listing.resources}
    assert by_name["deployments"].short_names == ["deploy"]
    assert by_name["deployments"].kind == "Deployment"
    assert "watch" in by_name["deployments"].verbs
    assert by_name["statefulsets"].short_names == ["sts"]
    assert by_name["daemonsets"].short_names == ["ds"]
    scale = by_name["deployments/scale"]
    assert (scale.group, scale.version, scale.kind) == ("autoscaling", "v1", "Scale")
    assert "deployments/status" in by_name
    names = groups(api)
    for group in ("apps", "policy", "coordination.k8s.io", "networking.k8s.io",
                  "apiextensions.k8s.io"):
        assert group in names


# -------------------------------------------------------------------------------- selectors


def test_label_selectors(core: client.CoreV1Api, ns: str) -> None:
    for name, labels in (("a", {"app": "web", "tier": "front"}),
                         ("b", {"app": "db", "tier": "back"}),
                         ("c", {"app": "cache"}),
                         ("d", {})):
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta(name,
                                                                                labels=labels)))

    def names(selector: str) -> list[str]:
        return sorted(c.metadata.name for c in core.list_namespaced_config_map(
            ns, label_selector=selector).items)

    assert names("app=web") == ["a"]
    assert names("app==web") == ["a"]
    assert names("app!=web") == ["b", "c", "d"]
    assert names("app=web,tier=front") == ["a"]
    assert names("app=web,tier=back") == []
    assert names("app in (web,db)") == ["a", "b"]
    assert names("app notin (web,db)") == ["c", "d"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c", "d"]
    assert names("app in (web, cache),!tier") == ["c"]

    core.delete_collection_namespaced_config_map(ns, label_selector="tier")
    assert names("") == ["c", "d"]


def test_field_selectors(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("one")))
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("two")))
    assert [c.metadata.name for c in core.list_namespaced_config_map(
        ns, field_selector="metadata.name=two").items] == ["two"]
    assert [c.metadata.name for c in core.list_namespaced_config_map(
        ns, field_selector="metadata.name!=two").items] == ["one"]

    # spec.nodeName: a pod bound to worker-b directly, and one that cannot be scheduled.
    core.create_namespaced_pod(ns, client.V1Pod(metadata=meta("bound"), spec=client.V1PodSpec(
        node_name="worker-b", containers=[container()])))
    core.create_namespaced_pod(ns, client.V1Pod(metadata=meta("stuck"), spec=client.V1PodSpec(
        node_selector={"no-such-label": "anywhere"}, containers=[container()])))
    assert [p.metadata.name for p in core.list_namespaced_pod(
        ns, field_selector="spec.nodeName=worker-b").items] == ["bound"]
    assert [p.metadata.name for p in core.list_namespaced_pod(
        ns, field_selector="spec.nodeName=").items] == ["stuck"]
    assert all(p.spec.node_name == "worker-b" for p in core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=worker-b").items)

    wait_for(lambda: core.read_namespaced_pod("bound", ns).status.phase == "Running")
    assert [p.metadata.name for p in core.list_namespaced_pod(
        ns, field_selector="status.phase=Running").items] == ["bound"]
    assert [p.metadata.name for p in core.list_namespaced_pod(
        ns, field_selector="status.phase=Pending").items] == ["stuck"]
    assert [p.metadata.name for p in core.list_namespaced_pod(
        ns, field_selector="status.phase!=Running,metadata.name=stuck").items] == ["stuck"]

    for index, target in enumerate(("alpha", "beta", "alpha")):
        core.create_namespaced_event(ns, client.CoreV1Event(
            metadata=meta(f"ev-{index}"), reason="Testing", message="m",
            involved_object=client.V1ObjectReference(kind="ConfigMap", name=target,
                                                     namespace=ns)))
    alpha = core.list_namespaced_event(ns, field_selector="involvedObject.name=alpha").items
    assert sorted(e.metadata.name for e in alpha) == ["ev-0", "ev-2"]
    assert all(e.involved_object.name == "alpha" for e in alpha)


def test_paging_returns_every_item_once(core: client.CoreV1Api, ns: str) -> None:
    expected = {f"page-{i:02d}" for i in range(25)}
    for name in expected:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta(name)))
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=7, _continue=token)
        pages += 1
        assert page.metadata.resource_version.isdigit()
        assert len(page.items) <= 7
        seen += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if pages == 1:
            assert page.metadata.remaining_item_count == 18
        if not token:
            break
        assert pages < 10
    assert pages == 4
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == expected
    # Paging works across namespaces, too.
    everything = core.list_config_map_for_all_namespaces(limit=3)
    assert len(everything.items) == 3
    assert everything.metadata._continue


def test_a_list_too_large_to_join_is_written_in_batches_and_complete(
        core: client.CoreV1Api, ns: str) -> None:
    """Past STREAMED_LIST_ITEMS the sim writes a list batch by batch (so a full list of
    100,000 pods does not hold three copies of itself); the answer must still be the
    same list: every item once, valid JSON, a resourceVersion."""
    count = STREAMED_LIST_ITEMS + STREAMED_LIST_BATCH + 7  # several batches, a ragged end
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=meta(f"big-{i:05d}"), data={"i": str(i)})),
            range(count)))
    answer = core.list_namespaced_config_map(ns, _preload_content=False, _request_timeout=30)
    document = json.loads(answer.data)
    names = [item["metadata"]["name"] for item in document["items"]
             if item["metadata"]["name"].startswith("big-")]
    assert sorted(names) == [f"big-{i:05d}" for i in range(count)]
    assert document["metadata"]["resourceVersion"].isdigit()
    assert int(answer.headers["Content-Length"]) == len(answer.data)


# ----------------------------------------------------------------------------------- watch


class Watcher(threading.Thread):
    """Runs a watch in the background and collects its events until `enough` says stop."""

    def __init__(self, func: Callable[..., Any], *args: Any,
                 enough: Callable[[list[dict[str, Any]]], bool], **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.func, self.args, self.kwargs = func, args, kwargs
        self.enough = enough
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for event in watch.Watch().stream(self.func, *self.args, **self.kwargs):
                self.events.append(event)
                if self.enough(self.events):
                    break
        except BaseException as error:  # reported by result()
            self.error = error
        finally:
            self.done.set()

    def result(self, timeout: float) -> list[dict[str, Any]]:
        assert self.done.wait(timeout), f"watch still running; got {len(self.events)} events"
        if self.error is not None:
            raise self.error
        return self.events


def test_watch_from_list_resource_version(core: client.CoreV1Api, ns: str) -> None:
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    watcher = Watcher(core.list_namespaced_config_map, ns, resource_version=rv,
                      timeout_seconds=10,
                      enough=lambda events: events[-1]["type"] == "DELETED")
    watcher.start()
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("w"),
                                                             data={"v": "1"}))
    core.patch_namespaced_config_map("w", ns, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("w", ns)
    events = watcher.result(10)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert [e["object"].data["v"] for e in events] == ["1", "2", "2"]
    assert all(isinstance(e["object"], client.V1ConfigMap) for e in events)
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions)
    assert versions[0] > int(rv)

    # The same history replays to a watch started later from the same resourceVersion.
    replay = [e["type"] for e in watch.Watch().stream(
        core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=1)]
    assert replay == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_without_resource_version_starts_with_current_objects(
        core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("there")))
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_config_map, ns, timeout_seconds=1)]
    assert events == [("ADDED", "there")]


def test_watch_timeout_ends_the_stream(core: client.CoreV1Api, ns: str) -> None:
    started = time.monotonic()
    events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1))
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.8 <= elapsed < 4


def test_watch_after_compaction_gets_410(sim: SimProcess, core: client.CoreV1Api,
                                         ns: str) -> None:
    old_rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("before")))
    status, body = sim.request("POST", "/_sim/compact")
    assert status == 200, body
    with pytest.raises(ApiException) as caught:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, ns,
                                      resource_version=old_rv, timeout_seconds=2):
            pass
    assert caught.value.status == 410
    assert "Expired" in str(caught.value.reason)
    # A client recovers by listing again and watching from the new resourceVersion.
    fresh = core.list_namespaced_config_map(ns)
    assert [c.metadata.name for c in fresh.items] == ["before"]
    assert list(watch.Watch().stream(core.list_namespaced_config_map, ns,
                                     resource_version=fresh.metadata.resource_version,
                                     timeout_seconds=1)) == []


def test_watch_sees_a_burst_completely_and_in_order(core: client.CoreV1Api, ns: str) -> None:
    count = 500
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    watcher = Watcher(core.list_namespaced_config_map, ns, resource_version=rv,
                      timeout_seconds=30, enough=lambda events: len(events) >= count)
    watcher.start()
    for index in range(count):
        core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=meta(f"burst-{index:03d}")))
    events = watcher.result(30)
    assert {e["type"] for e in events} == {"ADDED"}
    names = [e["object"].metadata.name for e in events]
    assert names == [f"burst-{index:03d}" for index in range(count)]
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions)
    assert len(set(versions)) == count


def test_watch_with_label_selector_sees_objects_leave_and_enter(core: client.CoreV1Api,
                                                               ns: str) -> None:
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta(
        "mover", labels={"team": "a"})))
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta(
        "other", labels={"team": "b"})))
    core.patch_namespaced_config_map("mover", ns, {"metadata": {"labels": {"team": "b"}}})
    core.patch_namespaced_config_map("mover", ns, {"metadata": {"labels": {"team": "a"}}})
    core.patch_namespaced_config_map("mover", ns, {"data": {"x": "1"}})
    core.delete_namespaced_config_map("mover", ns)
    events = [(e["type"], e["object"].metadata.name, e["object"].metadata.labels["team"])
              for e in watch.Watch().stream(core.list_namespaced_config_map, ns,
                                            label_selector="team=a", resource_version=rv,
                                            timeout_seconds=1)]
    assert events == [("ADDED", "mover", "a"), ("DELETED", "mover", "b"),
                      ("ADDED", "mover", "a"), ("MODIFIED", "mover", "a"),
                      ("DELETED", "mover", "a")]


def test_watch_with_field_selector_on_pod_phase(core: client.CoreV1Api, ns: str) -> None:
    rv = core.list_namespaced_pod(ns).metadata.resource_version
    core.create_namespaced_pod(ns, client.V1Pod(
        metadata=meta("phased", annotations=quick_annotations(0, 0)),
        spec=client.V1PodSpec(containers=[container()])))
    events = []
    for event in watch.Watch().stream(core.list_namespaced_pod, ns,
                                      field_selector="status.phase=Running",
                                      resource_version=rv, timeout_seconds=5):
        events.append(event)
        if pod_ready(event["object"]):
            break
    # The pod only enters this watch once it is Running: first seen as ADDED, then MODIFIED.
    assert events[0]["type"] == "ADDED"
    assert {e["object"].status.phase for e in events} == {"Running"}
    assert {e["type"] for e in events[1:]} <= {"MODIFIED"}


def test_watch_bookmark_ends_initial_events(core: client.CoreV1Api, ns: str) -> None:
    for name in ("x", "y"):
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta(name)))
    events = list(watch.Watch().stream(
        core.list_namespaced_config_map, ns, allow_watch_bookmarks=True,
        send_initial_events=True, resource_version_match="NotOlderThan", timeout_seconds=1))
    assert [e["type"] for e in events[:3]] == ["ADDED", "ADDED", "BOOKMARK"]
    assert sorted(e["object"].metadata.name for e in events[:2]) == ["x", "y"]
    bookmark = events[2]["raw_object"]
    assert bookmark["kind"] == "ConfigMap"
    assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["metadata"]["resourceVersion"]) >= max(
        int(e["object"].metadata.resource_version) for e in events[:2])
    # Anything after that on a quiet collection can only be a (progress) bookmark.
    assert {e["type"] for e in events[3:]} <= {"BOOKMARK"}


def test_watch_bookmark_reports_progress(core: client.CoreV1Api, ns: str) -> None:
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    # Another namespace's write moves the global resourceVersion past the list's.
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(generate_name="progress-")))
    tracker = watch.Watch()
    events = list(tracker.stream(core.list_namespaced_config_map, ns, resource_version=rv,
                                 allow_watch_bookmarks=True, timeout_seconds=1))
    assert events, "no bookmark before the watch timed out"
    assert {e["type"] for e in events} == {"BOOKMARK"}
    latest = int(events[-1]["raw_object"]["metadata"]["resourceVersion"])
    assert latest > int(rv)
    # The client resumes from the bookmark's resourceVersion.
    assert tracker.resource_version == str(latest)


# ------------------------------------------------------------- concurrency, finalizers, dry run


def test_optimistic_concurrency(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("occ"),
                                                             data={"v": "0"}))
    first = core.read_namespaced_config_map("occ", ns)
    second = core.read_namespaced_config_map("occ", ns)
    first.data = {"v": "1"}
    core.replace_namespaced_config_map("occ", ns, first)
    second.data = {"v": "2"}
    with pytest.raises(ApiException) as caught:
        core.replace_namespaced_config_map("occ", ns, second)
    assert caught.value.status == 409
    body = body_of(caught.value)
    assert body["kind"] == "Status"
    assert body["reason"] == "Conflict"
    assert core.read_namespaced_config_map("occ", ns).data == {"v": "1"}

    # A patch that names a stale resourceVersion is refused the same way.
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_config_map("occ", ns, {"metadata": {
            "resourceVersion": second.metadata.resource_version}, "data": {"v": "3"}})
    assert caught.value.status == 409
    assert body_of(caught.value)["reason"] == "Conflict"

    # So is a delete whose precondition names a stale resourceVersion.
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_config_map("occ", ns, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(
                resource_version=second.metadata.resource_version)))
    assert caught.value.status == 409
    assert core.read_namespaced_config_map("occ", ns).data == {"v": "1"}

    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("occ")))
    assert caught.value.status == 409
    body = body_of(caught.value)
    assert body["reason"] == "AlreadyExists"
    assert body["details"]["name"] == "occ"


def test_finalizer_holds_deletion(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=meta("held", finalizers=["example.com/hold"])))
    core.delete_namespaced_config_map("held", ns)
    held = core.read_namespaced_config_map("held", ns)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["example.com/hold"]
    # Deleting again is harmless while the finalizer stays.
    core.delete_namespaced_config_map("held", ns)
    assert core.read_namespaced_config_map("held", ns).metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", ns, [
        {"op": "remove", "path": "/metadata/finalizers"}])
    wait_for(lambda: gone(lambda: core.read_namespaced_config_map("held", ns)))


def test_dry_run_create_stores_nothing(core: client.CoreV1Api, apps: client.AppsV1Api,
                                       ns: str) -> None:
    result = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=meta("dry"), data={"a": "b"}), dry_run="All")
    assert result.metadata.name == "dry"
    assert result.data == {"a": "b"}
    assert gone(lambda: core.read_namespaced_config_map("dry", ns))
    apps.create_namespaced_deployment(ns, make_deployment("dry", 2), dry_run="All")
    time.sleep(0.3)
    assert apps.list_namespaced_deployment(ns).items == []
    assert apps.list_namespaced_replica_set(ns).items == []
    assert core.list_namespaced_pod(ns).items == []


# ---------------------------------------------------------------------------------- patches


def test_merge_and_json_patch(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta("p"), data={
        "keep": "1", "drop": "2", "change": "3"}))
    merged = core.patch_namespaced_config_map(
        "p", ns, {"data": {"drop": None, "change": "three", "new": "4"}},
        _content_type="application/merge-patch+json")
    assert merged.data == {"keep": "1", "change": "three", "new": "4"}
    patched = core.patch_namespaced_config_map("p", ns, [
        {"op": "test", "path": "/data/keep", "value": "1"},
        {"op": "replace", "path": "/data/keep", "value": "one"},
        {"op": "add", "path": "/data/added", "value": "5"},
        {"op": "remove", "path": "/data/new"}])
    assert patched.data == {"keep": "one", "change": "three", "added": "5"}
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_config_map("p", ns, [
            {"op": "test", "path": "/data/keep", "value": "wrong"},
            {"op": "replace", "path": "/data/keep", "value": "never"}])
    assert caught.value.status == 422
    assert core.read_namespaced_config_map("p", ns).data["keep"] == "one"


def test_strategic_merge_patch_keeps_other_containers(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_pod(ns, client.V1Pod(metadata=meta("two"), spec=client.V1PodSpec(
        containers=[container("main", "nginx:1.27"), container("sidecar", "envoy:1.30")])))
    patched = core.patch_namespaced_pod("two", ns, {"spec": {"containers": [
        {"name": "sidecar", "image": "envoy:1.31"}]}})
    images = {c.name: c.image for c in patched.spec.containers}
    assert images == {"main": "nginx:1.27", "sidecar": "envoy:1.31"}
    assert {c.name: c.image for c in core.read_namespaced_pod(
        "two", ns).spec.containers} == images


# ------------------------------------------------------------------------------------ scale


def active_pods(core: client.CoreV1Api, ns: str, app: str) -> list[client.V1Pod]:
    return [p for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
            if p.metadata.deletion_timestamp is None]


def test_scale_subresource(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, make_deployment("scaled", 2))
    wait_for(lambda: len(active_pods(core, ns, "scaled")) == 2)
    scale = apps.read_namespaced_deployment_scale("scaled", ns)
    assert scale.kind == "Scale"
    assert scale.spec.replicas == 2
    assert "app=scaled" in wait_for(
        lambda: apps.read_namespaced_deployment_scale("scaled", ns).status.selector)

    result = apps.patch_namespaced_deployment_scale("scaled", ns, {"spec": {"replicas": 4}})
    assert result.spec.replicas == 4
    assert apps.read_namespaced_deployment("scaled", ns).spec.replicas == 4
    wait_for(lambda: len(active_pods(core, ns, "scaled")) == 4)
    wait_for(lambda: apps.read_namespaced_deployment("scaled", ns).status.ready_replicas == 4)
    assert apps.read_namespaced_deployment_scale("scaled", ns).status.replicas == 4

    apps.patch_namespaced_deployment_scale("scaled", ns, {"spec": {"replicas": 1}})
    wait_for(lambda: len(active_pods(core, ns, "scaled")) == 1)
    wait_for(lambda: apps.read_namespaced_deployment("scaled", ns).status.replicas == 1)


# ------------------------------------------------------------------------------------- exec


@pytest.fixture
def running_pod(core: client.CoreV1Api, ns: str) -> str:
    core.create_namespaced_pod(ns, client.V1Pod(
        metadata=meta("target", annotations=quick_annotations(0, 5)),
        spec=client.V1PodSpec(containers=[container("main")])))
    wait_for(lambda: pod_ready(core.read_namespaced_pod("target", ns)))
    return "target"


def test_exec_output_and_exit_code(core: client.CoreV1Api, ns: str, running_pod: str) -> None:
    output = stream(core.connect_get_namespaced_pod_exec, running_pod, ns,
                    command=["echo", "hi"], stderr=True, stdin=False, stdout=True, tty=False)
    assert output == "hi\n"
    response = stream(core.connect_get_namespaced_pod_exec, running_pod, ns,
                      command=["sh", "-c", "exit 3"], stderr=True, stdin=False, stdout=True,
                      tty=False, _preload_content=False)
    response.run_forever(timeout=5)
    assert response.returncode == 3
    response = stream(core.connect_get_namespaced_pod_exec, running_pod, ns,
                      command=["no-such-tool"], stderr=True, stdin=False, stdout=True,
                      tty=False, _preload_content=False)
    response.run_forever(timeout=5)
    assert response.returncode == 127
    assert "not found" in response.read_stderr()
    log = core.read_namespaced_pod_log(running_pod, ns)
    assert "main" in log


def test_exec_kill_restarts_the_container(core: client.CoreV1Api, ns: str, sim: SimProcess,
                                          running_pod: str) -> None:
    before = core.read_namespaced_pod(running_pod, ns)
    # The watch gets a client of its own: `stream()` swaps the request method of the client
    # it is given for a WebSocket one while it runs, so a watch on the same client that
    # starts at that moment would be sent as a WebSocket handshake (and fail).
    watch_client = config.new_client_from_config(config_file=str(sim.kubeconfig))
    assert before.status.container_statuses[0].restart_count == 0

    def ready_flips(events: list[dict[str, Any]]) -> list[bool]:
        flips: list[bool] = []
        for event in events:
            ready = pod_ready(event["object"])
            if not flips or flips[-1] != ready:
                flips.append(ready)
        return flips

    watcher = Watcher(client.CoreV1Api(watch_client).list_namespaced_pod, ns,
                      field_selector=f"metadata.name={running_pod}",
                      resource_version=before.metadata.resource_version, timeout_seconds=10,
                      enough=lambda events: ready_flips(events)[-2:] == [False, True])
    watcher.start()
    response = stream(core.connect_get_namespaced_pod_exec, running_pod, ns,
                      command=["kill", "1"], stderr=True, stdin=False, stdout=True, tty=False,
                      _preload_content=False)
    response.run_forever(timeout=5)
    events = watcher.result(10)
    watch_client.close()
    assert ready_flips(events) == [False, True]
    after = core.read_namespaced_pod(running_pod, ns)
    status = after.status.container_statuses[0]
    assert status.restart_count == 1
    assert status.last_state.terminated is not None
    assert status.last_state.terminated.exit_code == 143
    assert status.state.running is not None
    assert pod_ready(after)
    assert after.metadata.uid == before.metadata.uid


# ------------------------------------------------------------------------------------- auth


def test_wrong_token_is_unauthorized(sim: SimProcess, tmp_path: Path) -> None:
    kubeconfig = yaml.safe_load(sim.kubeconfig.read_text())
    kubeconfig["users"][0]["user"]["token"] = "not-the-token"
    wrong = tmp_path / "kubeconfig"
    wrong.write_text(yaml.safe_dump(kubeconfig))
    with config.new_client_from_config(config_file=str(wrong)) as bad_client, \
            pytest.raises(ApiException) as caught:
        client.CoreV1Api(bad_client).list_namespace()
    assert caught.value.status == 401
    body = body_of(caught.value)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401)
