"""The simulation behind pystol-sim's API: controllers, scheduler, kubelets, GC, evictions.

Driven with the official `kubernetes` client like any operator would, plus the sim's own
`/_sim/` endpoints for ground truth (`/_sim/truth`) and node failures (`/_sim/nodes`). The
session sim runs at speed 10, so a simulated second lasts 0.1 s. Tests that change
cluster-wide state (nodes) use a sim of their own (`fresh_sim`); the others work in a
namespace of their own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from tests.support.kube_helpers import gone, pod_ready, wait_for
from tests.support.sim_process import SimProcess

START = "sim.pystol.org/start-seconds"
READY = "sim.pystol.org/ready-seconds"
WORKERS = ("worker-a", "worker-b", "worker-c")
ALL_NODES = ("control-plane", *WORKERS)

# ------------------------------------------------------------------------------- helpers


def truth(sim: SimProcess, namespace: str) -> dict[str, dict[str, Any]]:
    """Ground truth of every pod the namespace (or, for "", the cluster) ever had, by uid."""
    return {record["uid"]: record for record in sim.truth(namespace or None)}








def active(pods: list[client.V1Pod]) -> list[client.V1Pod]:
    return [p for p in pods if p.metadata.deletion_timestamp is None
            and p.status.phase not in ("Succeeded", "Failed")]


def labelled(core: client.CoreV1Api, ns: str, app: str) -> list[client.V1Pod]:
    return active(core.list_namespaced_pod(ns, label_selector=f"app={app}").items)


def all_ready(core: client.CoreV1Api, ns: str, app: str, count: int) -> list[client.V1Pod]:
    pods = labelled(core, ns, app)
    return pods if len(pods) == count and all(pod_ready(p) for p in pods) else []


def template(app: str, start: float = 0, ready: float = 0, image: str = "nginx:1.27",
             tolerations: list[client.V1Toleration] | None = None) -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": app},
                                     annotations={START: str(start), READY: str(ready)}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=image)],
                              tolerations=tolerations))


def deployment(name: str, replicas: int, start: float = 0, ready: float = 0,
               image: str = "nginx:1.27") -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name), spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels={"app": name}),
            template=template(name, start, ready, image)))


def evict(core: client.CoreV1Api, ns: str, pod: str) -> None:
    core.create_namespaced_pod_eviction(pod, ns, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod, namespace=ns)))


class Clients:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)


def new_namespace(core: client.CoreV1Api) -> str:
    name = f"ctl-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def clean_namespace(kube: Clients, name: str) -> None:
    """Delete the workloads, then the namespace (the sim does not empty deleted namespaces)."""
    for delete in (kube.apps.delete_collection_namespaced_deployment,
                   kube.apps.delete_collection_namespaced_stateful_set,
                   kube.apps.delete_collection_namespaced_daemon_set,
                   kube.apps.delete_collection_namespaced_replica_set):
        delete(name)
    kube.core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    kube.core.delete_namespace(name)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def kube(sim: SimProcess) -> Iterator[Clients]:
    api = config.new_client_from_config(config_file=str(sim.kubeconfig))
    yield Clients(api)
    api.close()


@pytest.fixture
def ns(kube: Clients) -> Iterator[str]:
    name = new_namespace(kube.core)
    yield name
    clean_namespace(kube, name)


@pytest.fixture
def fresh_kube(fresh_sim: SimProcess) -> Iterator[Clients]:
    api = config.new_client_from_config(config_file=str(fresh_sim.kubeconfig))
    yield Clients(api)
    api.close()


# ---------------------------------------------------------------------- self-healing, timing


def test_deployment_replaces_a_deleted_pod_on_simulated_time(sim: SimProcess, kube: Clients,
                                                              ns: str) -> None:
    core, apps = kube.core, kube.apps
    # start 5 s + ready 5 s of simulated time: 1 s at speed 10, long enough that a test
    # process slowed by a loaded machine still sees the replacement before it is ready
    apps.create_namespaced_deployment(ns, deployment("heal", 3, start=5, ready=5))
    wait_for(lambda: (apps.read_namespaced_deployment("heal", ns).status.ready_replicas or 0)
             == 3)
    before = {p.metadata.name: p for p in labelled(core, ns, "heal")}
    victim = sorted(before)[0]

    deleted_at = time.monotonic()
    core.delete_namespaced_pod(victim, ns)

    def replacement() -> client.V1Pod | None:
        fresh = [p for p in labelled(core, ns, "heal") if p.metadata.name not in before]
        return fresh[0] if fresh else None

    new_pod = wait_for(replacement, timeout=2)
    assert time.monotonic() - deleted_at < 1.5, "the replacement was not created at once"
    assert new_pod.metadata.owner_references[0].kind == "ReplicaSet"
    assert not pod_ready(new_pod)

    wait_for(lambda: (apps.read_namespaced_deployment("heal", ns).status.ready_replicas or 0)
             == 3 and pod_ready(core.read_namespaced_pod(new_pod.metadata.name, ns)))
    assert wait_for(lambda: gone(lambda: core.read_namespaced_pod(victim, ns)))
    status = apps.read_namespaced_deployment("heal", ns).status
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (3, 3, 3)
    assert status.unavailable_replicas in (None, 0)

    records = truth(sim, ns)
    new = records[new_pod.metadata.uid]
    assert (new["name"], new["owner_kind"], new["owner_name"]) == (
        new_pod.metadata.name, "Deployment", "heal")
    # start 5 s + ready 5 s of simulated time at speed 10.
    assert 0.95 <= new["ready"] - new["created"] <= 2.0
    assert new["created"] <= new["scheduled"] <= new["started"] <= new["ready"]
    assert 0.45 <= new["started"] - new["scheduled"] <= 1.3
    assert new["deleted"] is None and new["removed"] is None

    old = records[before[victim].metadata.uid]
    assert old["deleted"] is not None and old["removed"] is not None
    # The default terminate time (1 s) at speed 10.
    assert 0.05 <= old["removed"] - old["deleted"] <= 1.0
    assert new["created"] >= old["deleted"] - 0.01


def test_rolling_update_moves_every_pod_to_the_new_template(kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    apps.create_namespaced_deployment(ns, deployment("roll", 2, ready=1, image="app:1"))
    wait_for(lambda: all_ready(core, ns, "roll", 2))
    apps.patch_namespaced_deployment("roll", ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": "app:2"}]}}}})

    def rolled() -> bool:
        pods = all_ready(core, ns, "roll", 2)
        return bool(pods) and all(p.spec.containers[0].image == "app:2" for p in pods)

    wait_for(rolled)
    # The old replicaset is kept (for rollbacks) but scaled to zero.
    wait_for(lambda: sorted((rs.spec.template.spec.containers[0].image, rs.spec.replicas)
                            for rs in apps.list_namespaced_replica_set(ns).items)
             == [("app:1", 0), ("app:2", 2)])
    status = wait_for(lambda: (s := apps.read_namespaced_deployment("roll", ns)).status
                      .observed_generation == s.metadata.generation and s.status)
    assert (status.updated_replicas, status.ready_replicas) == (2, 2)


# ------------------------------------------------------------------------ garbage collection


def test_deleting_a_deployment_collects_replicasets_and_pods(kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    apps.create_namespaced_deployment(ns, deployment("gc", 2))
    wait_for(lambda: all_ready(core, ns, "gc", 2))
    assert len(apps.list_namespaced_replica_set(ns, label_selector="app=gc").items) == 1
    apps.delete_namespaced_deployment("gc", ns)
    wait_for(lambda: gone(lambda: apps.read_namespaced_deployment("gc", ns)))
    wait_for(lambda: not apps.list_namespaced_replica_set(ns, label_selector="app=gc").items)
    wait_for(lambda: not core.list_namespaced_pod(ns, label_selector="app=gc").items)


def test_orphan_deletion_leaves_the_replicaset_without_owner(kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    apps.create_namespaced_deployment(ns, deployment("orphan", 2))
    pods = wait_for(lambda: all_ready(core, ns, "orphan", 2))
    rs_name = apps.list_namespaced_replica_set(ns).items[0].metadata.name
    apps.delete_namespaced_deployment("orphan", ns, propagation_policy="Orphan")
    wait_for(lambda: gone(lambda: apps.read_namespaced_deployment("orphan", ns)))
    rs = wait_for(lambda: (r := apps.read_namespaced_replica_set(rs_name, ns))
                  .metadata.owner_references in (None, []) and r)
    assert rs.metadata.deletion_timestamp is None
    assert rs.spec.replicas == 2
    time.sleep(0.3)  # a garbage collector that was going to act would have by now
    assert apps.read_namespaced_replica_set(rs_name, ns).metadata.deletion_timestamp is None
    survivors = labelled(core, ns, "orphan")
    assert sorted(p.metadata.name for p in survivors) == sorted(p.metadata.name for p in pods)
    assert all(p.metadata.owner_references[0].name == rs_name for p in survivors)


def test_foreground_deletion_removes_dependents_first(kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    apps.create_namespaced_deployment(ns, deployment("fg", 2))
    wait_for(lambda: all_ready(core, ns, "fg", 2))
    apps.delete_namespaced_deployment("fg", ns, propagation_policy="Foreground")
    try:
        waiting = apps.read_namespaced_deployment("fg", ns)
    except ApiException as error:  # the dependents went fast enough
        assert error.status == 404
    else:
        assert waiting.metadata.deletion_timestamp is not None
        assert "foregroundDeletion" in waiting.metadata.finalizers
    wait_for(lambda: gone(lambda: apps.read_namespaced_deployment("fg", ns)))
    assert not apps.list_namespaced_replica_set(ns).items
    wait_for(lambda: not core.list_namespaced_pod(ns).items)


# --------------------------------------------------------------------- eviction and budgets


def test_demo_web_budget_status(kube: Clients) -> None:
    pdb = kube.policy.read_namespaced_pod_disruption_budget("web", "shop")
    assert pdb.spec.min_available == 2
    status = wait_for(lambda: (s := kube.policy.read_namespaced_pod_disruption_budget(
        "web", "shop").status).current_healthy == 3 and s)
    assert (status.desired_healthy, status.disruptions_allowed, status.expected_pods) == (2, 1, 3)


def test_eviction_respects_the_disruption_budget(kube: Clients, ns: str) -> None:
    core, apps, policy = kube.core, kube.apps, kube.policy
    # Replacements take 0.5 s to become Ready: long enough to find the budget exhausted.
    apps.create_namespaced_deployment(ns, deployment("guarded", 3, ready=5))
    policy.create_namespaced_pod_disruption_budget(ns, client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name="guarded"), spec=client.V1PodDisruptionBudgetSpec(
            min_available=2, selector=client.V1LabelSelector(match_labels={"app": "guarded"}))))
    pods = sorted(p.metadata.name for p in wait_for(lambda: all_ready(core, ns, "guarded", 3)))
    wait_for(lambda: policy.read_namespaced_pod_disruption_budget(
        "guarded", ns).status.disruptions_allowed == 1)

    evict(core, ns, pods[0])
    assert core.read_namespaced_pod(pods[0], ns).metadata.deletion_timestamp is not None \
        or gone(lambda: core.read_namespaced_pod(pods[0], ns))

    with pytest.raises(ApiException) as caught:
        evict(core, ns, pods[1])
    assert caught.value.status == 429
    body = json.loads(caught.value.body)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "TooManyRequests", 429)
    assert "disruption budget" in body["message"]
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert caught.value.headers.get("Retry-After")
    # The refused pod is untouched.
    assert core.read_namespaced_pod(pods[1], ns).metadata.deletion_timestamp is None
    assert policy.read_namespaced_pod_disruption_budget(
        "guarded", ns).status.disruptions_allowed == 0

    # Once the replacement is Ready the budget allows one disruption again.
    wait_for(lambda: all_ready(core, ns, "guarded", 3))
    wait_for(lambda: policy.read_namespaced_pod_disruption_budget(
        "guarded", ns).status.disruptions_allowed == 1)
    evict(core, ns, pods[1])
    assert core.read_namespaced_pod(pods[1], ns).metadata.deletion_timestamp is not None \
        or gone(lambda: core.read_namespaced_pod(pods[1], ns))
    with pytest.raises(ApiException) as caught:
        evict(core, ns, pods[2])
    assert caught.value.status == 429


def test_eviction_without_a_budget_deletes_the_pod(kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    apps.create_namespaced_deployment(ns, deployment("free", 2))
    pods = sorted(p.metadata.name for p in wait_for(lambda: all_ready(core, ns, "free", 2)))
    for pod in pods:
        evict(core, ns, pod)
    for pod in pods:
        wait_for(lambda pod=pod: gone(lambda: core.read_namespaced_pod(pod, ns)))
    replacements = wait_for(lambda: all_ready(core, ns, "free", 2))
    assert not {p.metadata.name for p in replacements} & set(pods)


# ----------------------------------------------------------------------------- scheduler


def test_cordoned_nodes_get_no_new_pods(fresh_kube: Clients) -> None:
    core, apps = fresh_kube.core, fresh_kube.apps
    on_a_before = sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=worker-a").items)
    for node in ("worker-a", "worker-b"):
        core.patch_node(node, {"spec": {"unschedulable": True}})
        assert core.read_node(node).spec.unschedulable is True
    assert [n.metadata.name for n in core.list_node(
        field_selector="spec.unschedulable=true").items] == ["worker-a", "worker-b"]

    ns = new_namespace(core)
    apps.create_namespaced_deployment(ns, deployment("spread", 6))
    pods = wait_for(lambda: all_ready(core, ns, "spread", 6))
    assert {p.spec.node_name for p in pods} == {"worker-c"}
    # Cordoning does not evict what already runs there.
    assert sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=worker-a").items) == on_a_before

    core.patch_node("worker-a", {"spec": {"unschedulable": False}})
    apps.patch_namespaced_deployment_scale("spread", ns, {"spec": {"replicas": 9}})
    pods = wait_for(lambda: all_ready(core, ns, "spread", 9))
    nodes = [p.spec.node_name for p in pods]
    assert "worker-b" not in nodes
    assert "control-plane" not in nodes
    assert "worker-a" in nodes


def test_not_ready_node_loses_its_pods(fresh_sim: SimProcess, fresh_kube: Clients) -> None:
    core, apps = fresh_kube.core, fresh_kube.apps
    on_a = {p.metadata.uid: p for p in core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=worker-a").items}
    assert on_a, "the demo scenario has pods on worker-a"
    status, body = fresh_sim.request("POST", "/_sim/nodes", {"name": "worker-a", "ready": False})
    assert status == 200, body
    ready = next(c for c in core.read_node("worker-a").status.conditions if c.type == "Ready")
    assert ready.status != "True"

    def old_pods_left() -> list[str]:
        return [p.metadata.name for p in core.list_pod_for_all_namespaces().items
                if p.metadata.uid in on_a]

    wait_for(lambda: not old_pods_left(), timeout=10)
    assert not core.list_pod_for_all_namespaces(field_selector="spec.nodeName=worker-a").items

    # Every workload is whole again, on the other nodes.
    for namespace, name, kind in (("shop", "web", "deploy"), ("shop", "cart", "deploy"),
                                  ("payments", "checkout", "deploy"),
                                  ("payments", "orders-db", "sts")):
        read = apps.read_namespaced_deployment if kind == "deploy" else \
            apps.read_namespaced_stateful_set
        wait_for(lambda read=read, namespace=namespace, name=name:
                 (s := read(name, namespace)).status.ready_replicas == s.spec.replicas)
    sts_pods = [p for p in on_a.values() if p.metadata.name.startswith("orders-db-")]
    for old in sts_pods:
        new = core.read_namespaced_pod(old.metadata.name, "payments")
        assert new.metadata.uid != old.metadata.uid
        assert new.spec.node_name not in (None, "worker-a")
    exporters = active(core.list_namespaced_pod("monitoring").items)
    assert sorted(p.spec.node_name for p in exporters) == ["control-plane", "worker-b",
                                                          "worker-c"]
    records = truth(fresh_sim, "")
    for uid in on_a:
        assert records[uid]["removed"] is not None

    # The node comes back: the daemonset runs on it again.
    status, body = fresh_sim.request("POST", "/_sim/nodes", {"name": "worker-a", "ready": True})
    assert status == 200, body
    wait_for(lambda: sorted(p.spec.node_name for p in active(
        core.list_namespaced_pod("monitoring").items)) == sorted(ALL_NODES))


def test_pods_on_a_not_ready_node_turn_not_ready_first(fresh_sim: SimProcess,
                                                        fresh_kube: Clients) -> None:
    core = fresh_kube.core
    listing = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=worker-b")
    on_b = {p.metadata.uid for p in listing.items}
    assert on_b
    status, body = fresh_sim.request("POST", "/_sim/nodes", {"name": "worker-b", "ready": False})
    assert status == 200, body
    seen_not_ready: set[str] = set()
    removed_while_ready: set[str] = set()
    removed: set[str] = set()
    for event in watch.Watch().stream(core.list_pod_for_all_namespaces,
                                      resource_version=listing.metadata.resource_version,
                                      timeout_seconds=5):
        uid = event["object"].metadata.uid
        if uid not in on_b:
            continue
        if event["type"] == "DELETED":
            removed.add(uid)
            if uid not in seen_not_ready:
                removed_while_ready.add(uid)
        elif not pod_ready(event["object"]):
            seen_not_ready.add(uid)
        if removed == on_b:
            break
    assert removed == on_b
    assert not removed_while_ready, f"{len(removed_while_ready)} pods were Ready until removed"


# ------------------------------------------------------------------ statefulsets, daemonsets


def test_statefulset_pods_have_stable_names(sim: SimProcess, kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    apps.create_namespaced_stateful_set(ns, client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="db"), spec=client.V1StatefulSetSpec(
            replicas=3, service_name="db",
            selector=client.V1LabelSelector(match_labels={"app": "db"}),
            template=template("db", ready=1))))
    pods = wait_for(lambda: all_ready(core, ns, "db", 3))
    assert sorted(p.metadata.name for p in pods) == ["db-0", "db-1", "db-2"]
    by_name = {p.metadata.name: p for p in pods}
    assert by_name["db-1"].metadata.labels["statefulset.kubernetes.io/pod-name"] == "db-1"
    # OrderedReady: each pod is created only once the one before it is Ready.
    records = truth(sim, ns)
    times = [records[by_name[f"db-{i}"].metadata.uid] for i in range(3)]
    assert times[0]["ready"] <= times[1]["created"]
    assert times[1]["ready"] <= times[2]["created"]

    old_uid = by_name["db-1"].metadata.uid
    core.delete_namespaced_pod("db-1", ns)
    back = wait_for(lambda: [p for p in all_ready(core, ns, "db", 3)
                             if p.metadata.name == "db-1" and p.metadata.uid != old_uid])
    assert back[0].metadata.owner_references[0].kind == "StatefulSet"

    apps.patch_namespaced_stateful_set_scale("db", ns, {"spec": {"replicas": 1}})
    wait_for(lambda: [p.metadata.name for p in labelled(core, ns, "db")] == ["db-0"])
    wait_for(lambda: apps.read_namespaced_stateful_set("db", ns).status.replicas == 1)


CONTROL_PLANE_TOLERATION = client.V1Toleration(
    key="node-role.kubernetes.io/control-plane", operator="Exists", effect="NoSchedule")


def daemonset(name: str, tolerations: list[client.V1Toleration] | None) -> client.V1DaemonSet:
    return client.V1DaemonSet(metadata=client.V1ObjectMeta(name=name), spec=client.V1DaemonSetSpec(
        selector=client.V1LabelSelector(match_labels={"app": name}),
        template=template(name, tolerations=tolerations)))


def test_daemonset_runs_one_pod_per_node(kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    apps.create_namespaced_daemon_set(ns, daemonset("agent", [CONTROL_PLANE_TOLERATION]))
    pods = wait_for(lambda: all_ready(core, ns, "agent", len(ALL_NODES)))
    assert sorted(p.spec.node_name for p in pods) == sorted(ALL_NODES)
    status = wait_for(lambda: (s := apps.read_namespaced_daemon_set("agent", ns).status)
                      .number_ready == len(ALL_NODES) and s)
    assert status.desired_number_scheduled == status.current_number_scheduled == len(ALL_NODES)

    victim = next(p for p in pods if p.spec.node_name == "worker-b")
    core.delete_namespaced_pod(victim.metadata.name, ns)

    def replaced() -> list[client.V1Pod]:
        everything = core.list_namespaced_pod(ns, label_selector="app=agent").items
        if any(p.metadata.uid == victim.metadata.uid for p in everything):
            return []
        return all_ready(core, ns, "agent", len(ALL_NODES))

    pods = wait_for(replaced)
    assert sorted(p.spec.node_name for p in pods) == sorted(ALL_NODES)


def test_daemonset_respects_node_taints(kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    apps.create_namespaced_daemon_set(ns, daemonset("plain", None))
    wait_for(lambda: apps.read_namespaced_daemon_set("plain", ns).status
             and apps.read_namespaced_daemon_set("plain", ns).status.number_ready)
    time.sleep(0.3)
    pods = labelled(core, ns, "plain")
    assert sorted(p.spec.node_name for p in pods) == list(WORKERS)
    assert apps.read_namespaced_daemon_set("plain", ns).status.desired_number_scheduled == 3


# ----------------------------------------------------------------------------------- events


def test_events_for_scheduling_and_kills(kube: Clients, ns: str) -> None:
    core = kube.core
    core.create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(name="watched", annotations={START: "0", READY: "1"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="nginx")])))
    wait_for(lambda: pod_ready(core.read_namespaced_pod("watched", ns)))
    node = core.read_namespaced_pod("watched", ns).spec.node_name

    def events() -> list[client.CoreV1Event]:
        return core.list_namespaced_event(
            ns, field_selector="involvedObject.name=watched").items

    reasons = {e.reason: e for e in wait_for(lambda: len(events()) >= 2 and events())}
    scheduled = reasons["Scheduled"]
    assert node in scheduled.message
    assert scheduled.source.component == "default-scheduler"
    assert scheduled.involved_object.kind == "Pod"
    assert scheduled.involved_object.namespace == ns
    assert "Started" in reasons

    response = stream(core.connect_get_namespaced_pod_exec, "watched", ns,
                      command=["kill", "-9", "1"], stderr=True, stdin=False, stdout=True,
                      tty=False, _preload_content=False)
    response.run_forever(timeout=5)
    killing = wait_for(lambda: [e for e in events() if e.reason == "Killing"])
    assert killing[0].type == "Warning"
    restarted = core.read_namespaced_pod("watched", ns).status.container_statuses[0]
    assert restarted.restart_count == 1
    assert restarted.last_state.terminated.exit_code == 137

    wait_for(lambda: pod_ready(core.read_namespaced_pod("watched", ns)))
    kills_before = len([e for e in events() if e.reason == "Killing"])
    evict(core, ns, "watched")
    wait_for(lambda: len([e for e in events() if e.reason == "Killing"]) > kills_before)
    assert all(e.involved_object.name == "watched" for e in events())
    other = core.list_namespaced_event(ns, field_selector="involvedObject.name=nobody").items
    assert other == []


# ------------------------------------------------------------- service accounts, revisions

REVISION = "deployment.kubernetes.io/revision"


def test_every_namespace_gets_a_default_service_account(kube: Clients, ns: str) -> None:
    core = kube.core
    account = wait_for(lambda: core.list_namespaced_service_account(ns).items)
    assert [a.metadata.name for a in account] == ["default"]
    token = core.create_namespaced_service_account_token(
        "default", ns, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[])))
    assert token.status.token

    # Deleted, it comes back, as kube-controller-manager's serviceaccounts controller does it.
    uid = account[0].metadata.uid
    core.delete_namespaced_service_account("default", ns)
    again = wait_for(lambda: [a for a in core.list_namespaced_service_account(ns).items
                              if a.metadata.uid != uid])
    assert [a.metadata.name for a in again] == ["default"]


def replica_sets(apps: client.AppsV1Api, ns: str) -> dict[str, tuple[str, int]]:
    """image -> (revision, desired replicas) for every ReplicaSet in the namespace."""
    return {rs.spec.template.spec.containers[0].image:
            (rs.metadata.annotations.get(REVISION), rs.spec.replicas)
            for rs in apps.list_namespaced_replica_set(ns).items}


def set_image(apps: client.AppsV1Api, ns: str, name: str, image: str, cause: str | None = None
              ) -> None:
    patch: dict[str, Any] = {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": image}]}}}}
    if cause:
        patch["metadata"] = {"annotations": {"kubernetes.io/change-cause": cause}}
    apps.patch_namespaced_deployment(name, ns, patch)


def test_deployment_revisions_follow_template_changes_and_rollbacks(kube: Clients, ns: str
                                                                    ) -> None:
    apps = kube.apps
    apps.create_namespaced_deployment(ns, deployment("rev", 1, image="app:1"))
    wait_for(lambda: replica_sets(apps, ns) == {"app:1": ("1", 1)})

    set_image(apps, ns, "rev", "app:2", cause="ship app 2")
    wait_for(lambda: replica_sets(apps, ns) == {"app:1": ("1", 0), "app:2": ("2", 1)})
    (new,) = [rs for rs in apps.list_namespaced_replica_set(ns).items
              if rs.spec.template.spec.containers[0].image == "app:2"]
    assert new.metadata.annotations["kubernetes.io/change-cause"] == "ship app 2"
    assert apps.read_namespaced_deployment("rev", ns).metadata.annotations[REVISION] == "2"

    # Back to the first template (what `kubectl rollout undo` does): its ReplicaSet is
    # reused and becomes the newest revision; no third ReplicaSet appears.
    set_image(apps, ns, "rev", "app:1")
    wait_for(lambda: replica_sets(apps, ns) == {"app:1": ("3", 1), "app:2": ("2", 0)})
    (old,) = [rs for rs in apps.list_namespaced_replica_set(ns).items
              if rs.spec.template.spec.containers[0].image == "app:1"]
    assert old.metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"
    wait_for(lambda: apps.read_namespaced_deployment("rev", ns).metadata.annotations[REVISION]
             == "3")


def test_revision_history_limit_prunes_the_oldest_replicasets(kube: Clients, ns: str) -> None:
    apps = kube.apps
    body = deployment("short", 1, image="app:1")
    body.spec.revision_history_limit = 1
    apps.create_namespaced_deployment(ns, body)
    for image in ("app:2", "app:3"):
        wait_for(lambda: all_ready(kube.core, ns, "short", 1))
        set_image(apps, ns, "short", image)
        wait_for(lambda image=image: replica_sets(apps, ns).get(image, ("", 0))[1] == 1)
    # One old ReplicaSet is kept for rollbacks (revision 2), revision 1 is deleted.
    wait_for(lambda: replica_sets(apps, ns) == {"app:2": ("2", 0), "app:3": ("3", 1)})


def test_a_quota_refusal_is_reported_and_retried(kube: Clients, ns: str) -> None:
    core, apps = kube.core, kube.apps
    core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="two"), spec=client.V1ResourceQuotaSpec(
            hard={"pods": "2"})))
    apps.create_namespaced_deployment(ns, deployment("capped", 3))

    def failed_creates() -> list[client.CoreV1Event]:
        return [e for e in core.list_namespaced_event(ns).items
                if e.reason == "FailedCreate" and e.involved_object.kind == "ReplicaSet"]

    refused = wait_for(failed_creates)
    assert refused[0].type == "Warning"
    assert "exceeded quota" in refused[0].message
    assert len(labelled(core, ns, "capped")) == 2

    # Room in the quota: the ReplicaSet controller's retry creates the third pod.
    core.patch_namespaced_resource_quota("two", ns, {"spec": {"hard": {"pods": "3"}}})
    wait_for(lambda: all_ready(core, ns, "capped", 3))


def test_a_bad_revision_history_limit_is_refused_and_null_means_the_default(
        sim: SimProcess, kube: Clients, ns: str) -> None:
    """revisionHistoryLimit "abc" once passed admission and failed every reconcile (and
    with it every other pending reconcile); now it is a 422 naming the field. (Sent raw:
    the official client refuses to send a string there.)"""
    body = kube.api.sanitize_for_serialization(deployment("odd", 1))
    body["spec"]["revisionHistoryLimit"] = "abc"
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    status, answer = sim.request("POST", path, body)
    assert status == 422, answer
    assert "spec.revisionHistoryLimit" in json.dumps(answer)
    assert gone(lambda: kube.apps.read_namespaced_deployment("odd", ns))
    body["spec"]["revisionHistoryLimit"] = None
    status, answer = sim.request("POST", path, body)
    assert status == 201, answer
    wait_for(lambda: all_ready(kube.core, ns, "odd", 1))
