"""Every built-in action, run as a job by the runner on the in-process fake cluster.

Each test stores a job in a fakeredis job store, runs it with `JobRunner(...).run()`, and
checks the fault in the cluster while it was held (seen when each `PystolChaos` Event is
posted), the cluster after the job (reverted, workloads whole), the record (status,
changes, metrics, output) and the revert journal (empty). The integration tests run the
same actions on pystol_sim; these take milliseconds and bend the cluster with reactors.
"""

from __future__ import annotations

from typing import Any

import pytest

from pystol_worker.core.model import JobStatus
from pystol_worker.core.policy import Policy
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.kube.fake_cluster import PASS, FakeCluster, Request
from tests.support.fake_jobs import (
    LOOPBACK_PROBES,
    FakeJobs,
    app_deployment,
    http_server,
    later,
    pods_of,
    ready,
)

PAUSE = "registry.k8s.io/pause:3.9"
CORDONED_BY = "chaos.pystol.org/cordoned-by"
PARTITION_LABEL = "chaos.pystol.org/partition"
WEB = "Deployment/shop/web"


def pods_target(**extra: Any) -> dict[str, Any]:
    return {"namespaces": ["shop"], "label_selector": "app=web", **extra}


def assert_succeeded(record: Any) -> None:
    assert record.status == JobStatus.SUCCEEDED, (record.reason, record.error)


def assert_all_reverted(jobs: FakeJobs, record: Any) -> None:
    assert record.result.changes
    assert all(change.reverted_at is not None and change.error is None
               for change in record.result.changes)
    assert jobs.journal_entries() == []


# -- pod-kill ------------------------------------------------------------------------------------

def test_pod_kill_deletes_pods_and_times_their_workloads_recovery() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    before = pods_of(jobs.fake)
    record = jobs.run({"action": "pod-kill", "target": pods_target(mode="fixed", value=2)})

    assert_succeeded(record)
    killed = {change.target.uid for change in record.result.changes}
    assert len(killed) == 2 and killed <= set(before)
    assert {change.action for change in record.result.changes} == {"deleted"}
    # Deleted with their uid as precondition, and replaced by the ReplicaSet.
    assert {r.options["uid"] for r in jobs.fake.called("delete", "pods")} == killed
    after = pods_of(jobs.fake)
    assert len(after) == 3 and not killed & set(after)
    assert all(ready(pod) for pod in after.values())
    [recovery] = record.result.recovery
    assert str(recovery.workload) == WEB and recovery.recovered
    assert recovery.desired_replicas == 3 and recovery.ready_replicas == 3
    assert record.metrics.targets_selected == 2 and record.metrics.targets_affected == 2
    assert record.metrics.recovery_seconds == recovery.recovery_seconds is not None
    assert jobs.journal_entries() == []  # a kill has nothing to revert


def test_pod_kill_fails_when_the_workload_does_not_come_back() -> None:
    jobs = FakeJobs(fake=FakeCluster(controllers=False))  # nothing recreates pods
    app_deployment(jobs.fake, replicas=3)
    record = jobs.run({"action": "pod-kill", "target": pods_target(), "recovery_timeout": "0.5s"})

    assert record.status == JobStatus.FAILED
    assert f"{WEB} did not recover within 0.5s (2/3 ready)" in (record.reason or "")
    assert len(pods_of(jobs.fake)) == 2


# -- pod-failure ---------------------------------------------------------------------------------

def test_pod_failure_swaps_images_for_the_hold_then_restores_them() -> None:
    jobs = FakeJobs()
    containers = [{"name": "app", "image": "lab/web:1"}, {"name": "sidecar",
                                                          "image": "lab/proxy:1"}]
    app_deployment(jobs.fake, replicas=2, containers=containers)
    before = pods_of(jobs.fake)

    def kubelet(request: Request) -> Any:
        """A pod running the pause image is not ready a moment later, and ready again
        a moment after its real images are back."""
        pod = jobs.fake.apply(request)
        broken = any(c["image"] == PAUSE for c in pod["spec"]["containers"])
        later(0.05, lambda: jobs.fake.set_pod_ready("shop", request.name or "", not broken))
        return pod
    jobs.fake.prepend_reactor("patch", "pods", kubelet)
    held = jobs.during_hold(lambda: {uid: [c["image"] for c in pod["spec"]["containers"]]
                                     for uid, pod in pods_of(jobs.fake).items()})
    record = jobs.run({"action": "pod-failure", "target": pods_target(mode="all"),
                       "duration": "0.4s"})

    assert_succeeded(record)
    assert held[-1] == {uid: [PAUSE, PAUSE] for uid in before}
    after = pods_of(jobs.fake)
    assert set(after) == set(before)  # the same pods, not replacements
    assert all([c["image"] for c in pod["spec"]["containers"]] == ["lab/web:1", "lab/proxy:1"]
               and ready(pod) for pod in after.values())
    assert_all_reverted(jobs, record)
    output = record.result.output
    assert all(item["not_ready_while_held"] for item in output["pods"])
    assert output["lowest_ready_while_held"] == {WEB: 0}
    [recovery] = record.result.recovery
    assert recovery.recovered and 0 < recovery.recovery_seconds < 2
    assert len(jobs.fake.events("PystolChaos")) == len(jobs.fake.events("PystolRevert")) == 2


# -- container-kill ------------------------------------------------------------------------------

def test_container_kill_restarts_containers_in_place() -> None:
    jobs = FakeJobs()
    containers = [{"name": "app", "image": "lab/web:1"}, {"name": "sidecar",
                                                          "image": "lab/proxy:1"}]
    app_deployment(jobs.fake, replicas=3, containers=containers)
    before = {uid: pod["spec"]["nodeName"] for uid, pod in pods_of(jobs.fake).items()}

    def kill(request: Request) -> Any:  # the kubelet restarts what the signal ended
        jobs.fake.restart_container(request.namespace or "", request.name or "",
                                    request.options["container"])
        return 0, "", ""
    jobs.fake.prepend_reactor("create", "pods/exec", kill)
    record = jobs.run({"action": "container-kill", "target": pods_target(mode="fixed",
                                                                         value=2)})

    assert_succeeded(record)
    after = pods_of(jobs.fake)
    assert {uid: pod["spec"]["nodeName"] for uid, pod in after.items()} == before
    killed = {change.target.uid for change in record.result.changes}
    assert len(killed) == 2
    for uid, pod in after.items():
        counts = {s["name"]: s["restartCount"] for s in pod["status"]["containerStatuses"]}
        assert counts == {"app": 1 if uid in killed else 0, "sidecar": 0}
    execs = jobs.fake.called("create", "pods/exec")
    # The default signal, SIGTERM, to PID 1 of each pod's first container.
    assert [(r.body, r.options["container"]) for r in execs] == [
        (["kill", "-s", "TERM", "1"], "app")] * 2
    for entry in record.result.output["pods"]:
        assert entry["exit_code"] == 0 and entry["error"] is None
        assert entry["signal"] == "SIGTERM"
        assert (entry["restart_count_before"], entry["restart_count_after"]) == (0, 1)
        assert entry["ready_again_seconds"] is not None
    [recovery] = record.result.recovery
    assert recovery.recovered and recovery.desired_replicas == 3
    assert record.metrics.targets_affected == 2
    assert all(change.reverted_at is None for change in record.result.changes)
    assert jobs.journal_entries() == []


def test_container_kill_fails_when_the_kill_fails_and_never_copies_what_it_printed() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=2)
    secret = "eyJhbGciOi-a-service-account-token"
    jobs.fake.prepend_reactor("create", "pods/exec", lambda request: (
        1, secret, f"kill: operation not permitted {secret}"))
    record = jobs.run({"action": "container-kill", "target": pods_target(),
                       "params": {"signal": "SIGKILL"}})

    assert record.status == JobStatus.FAILED
    assert [r.body for r in jobs.fake.called("create", "pods/exec")] == [
        ["kill", "-s", "KILL", "1"]]
    assert "sending SIGKILL to container app" in (record.reason or "")
    assert "`kill` exited with code 1" in (record.reason or "")
    # Only the exit code counts: what the exec printed reaches no record a reader sees.
    assert secret not in record.model_dump_json()
    assert all(s["restartCount"] == 0 for pod in pods_of(jobs.fake).values()
               for s in pod["status"]["containerStatuses"])


def test_container_kill_takes_a_signal_never_a_command() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=2)
    record = jobs.run({"action": "container-kill", "target": pods_target(),
                       "params": {"command": ["sh", "-c", "cat /var/run/secrets/*/token"]}})

    assert record.status == JobStatus.FAILED
    assert "invalid job: params" in (record.reason or "")
    assert "takes a `signal`" in (record.reason or "")
    assert jobs.fake.called("create", "pods/exec") == []


# -- node-cordon ---------------------------------------------------------------------------------

def test_node_cordon_cordons_for_the_hold_and_uncordons_exactly_its_nodes() -> None:
    jobs = FakeJobs()
    for name in ("n1", "n2"):
        jobs.fake.add_node(name)
    jobs.fake.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    jobs.fake.add_node("n3", unschedulable=True)  # cordoned by someone else: left alone

    def nodes() -> dict[str, Any]:
        return {node["metadata"]["name"]: (node["spec"].get("unschedulable"),
                                           (node["metadata"].get("annotations") or {})
                                           .get(CORDONED_BY))
                for node in jobs.fake.objects("Node")}
    held = jobs.during_hold(nodes)
    record = jobs.run({"action": "node-cordon", "target": {"mode": "all"}, "duration": "0.2s"})

    assert_succeeded(record)
    assert held[-1] == {"n1": (True, record.id), "n2": (True, record.id), "cp": (None, None),
                        "n3": (True, None)}
    assert nodes() == {"n1": (None, None), "n2": (None, None), "cp": (None, None),
                       "n3": (True, None)}
    n1 = jobs.fake.get("Node", None, "n1") or {}
    assert "annotations" not in n1["metadata"]  # none before, none after
    assert_all_reverted(jobs, record)
    assert record.metrics.targets_affected == 2
    assert {e["involvedObject"]["name"] for e in jobs.fake.events("PystolRevert")} == {"n1",
                                                                                       "n2"}


def test_node_cordon_takes_control_plane_nodes_only_when_the_policy_says_so() -> None:
    """Not a param of the job any more: whoever may submit a cordon cannot reach the
    control plane unless the admin's policy allows it."""
    jobs = FakeJobs(policy=Policy(include_control_plane=True))
    jobs.fake.add_node("n1")
    jobs.fake.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    held = jobs.during_hold(lambda: {node["metadata"]["name"]: node["spec"].get("unschedulable")
                                     for node in jobs.fake.objects("Node")})
    record = jobs.run({"action": "node-cordon", "target": {"mode": "all"}, "duration": "0.1s"})

    assert_succeeded(record)
    assert held[-1] == {"n1": True, "cp": True}
    assert_all_reverted(jobs, record)
    refused = FakeJobs().run({"action": "node-cordon", "target": {"mode": "all"},
                              "params": {"include_control_plane": True}})
    assert refused.status == JobStatus.FAILED
    assert "invalid job: params" in (refused.reason or "")


# -- node-drain ----------------------------------------------------------------------------------

def test_node_drain_evicts_pods_to_other_nodes_and_uncordons() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3, nodes=("n1", "n2", "n3"))
    jobs.fake.add_pod("shop", "debug", node="n1")  # no controller: never evicted by default
    on_n1 = [uid for uid, pod in pods_of(jobs.fake).items() if pod["spec"]["nodeName"] == "n1"]

    def n1() -> tuple[Any, list[str]]:
        node = jobs.fake.get("Node", None, "n1") or {}
        return (node["spec"].get("unschedulable"),
                sorted(p["metadata"]["name"] for p in jobs.fake.list_all_pods(
                    "spec.nodeName=n1")))
    held = jobs.during_hold(n1)
    record = jobs.run({"action": "node-drain", "target": {"names": ["n1"]}, "duration": "0.2s",
                       "recovery_timeout": "3s"})

    assert_succeeded(record)
    assert held[-1] == (True, ["debug"])  # cordoned, and the web pod evicted
    assert n1() == (None, ["debug"])  # uncordoned; the pod came back elsewhere
    [evicted] = jobs.fake.called("create", "pods/eviction")
    assert jobs.fake.get("Pod", "shop", evicted.name or "") is None
    after = pods_of(jobs.fake)
    assert len(after) == 3 and on_n1[0] not in after and all(ready(p) for p in after.values())
    output = record.result.output
    assert [item["pod"] for item in output["evicted"]] == [evicted.name]
    assert [item["pod"] for item in output["skipped"]] == ["debug"]
    assert output["not_evicted"] == []
    [recovery] = record.result.recovery
    assert str(recovery.workload) == WEB and recovery.recovered
    assert jobs.journal_entries() == []
    cordon = next(c for c in record.result.changes if c.target.kind == "Node")
    assert cordon.reverted_at is not None


def test_node_drain_evicts_pods_no_controller_owns_only_when_the_policy_forces() -> None:
    jobs = FakeJobs(policy=Policy(drain_force=True))
    app_deployment(jobs.fake, replicas=3, nodes=("n1", "n2", "n3"))
    jobs.fake.add_pod("shop", "debug", node="n1")
    record = jobs.run({"action": "node-drain", "target": {"names": ["n1"]}, "duration": "0.1s",
                       "recovery_timeout": "3s"})

    assert_succeeded(record)
    evicted = sorted(r.name or "" for r in jobs.fake.called("create", "pods/eviction"))
    assert "debug" in evicted and len(evicted) == 2
    assert jobs.fake.get("Pod", "shop", "debug") is None  # gone for good: nothing owns it
    assert record.result.output["skipped"] == []


def test_node_drain_reports_pods_a_disruption_budget_keeps() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3, nodes=("n1", "n2", "n3"))
    before = pods_of(jobs.fake)

    def budget(request: Request) -> Any:
        raise ClusterError("Kubernetes API answered 429: Cannot evict pod as it would "
                           "violate the pod's disruption budget.", 429, "TooManyRequests")
    jobs.fake.prepend_reactor("create", "pods/eviction", budget)
    record = jobs.run({"action": "node-drain", "target": {"names": ["n1"]}, "duration": "0.1s",
                       "params": {"eviction_timeout": "0.3s",
                                  "fail_on_blocked_eviction": True}})

    assert record.status == JobStatus.FAILED
    assert "1 pod(s) could not be evicted" in (record.reason or "")
    assert len(jobs.fake.called("create", "pods/eviction")) >= 2  # retried until the timeout
    assert [item["node"] for item in record.result.output["not_evicted"]] == ["n1"]
    assert pods_of(jobs.fake).keys() == before.keys()
    assert (jobs.fake.get("Node", None, "n1") or {})["spec"].get("unschedulable") is None
    assert jobs.journal_entries() == []


def test_node_drain_retries_an_unreachable_api_server_until_the_eviction_goes_through() -> None:
    """The cluster layer sends an eviction once; an API server that cannot be reached (no
    status) is retried by node-drain itself, which checks halt and cancel between tries."""
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3, nodes=("n1", "n2", "n3"))
    failures = iter(range(2))

    def unreachable(request: Request) -> Any:
        if next(failures, None) is not None:
            raise ClusterError("cannot reach the Kubernetes API: connection refused")
        return PASS
    jobs.fake.prepend_reactor("create", "pods/eviction", unreachable)
    record = jobs.run({"action": "node-drain", "target": {"names": ["n1"]}, "duration": "0.1s",
                       "params": {"eviction_timeout": "5s"}})

    assert_succeeded(record)
    assert len(jobs.fake.called("create", "pods/eviction")) == 3  # two refused, one evicted
    assert record.result.output.get("not_evicted", []) == []
    assert jobs.journal_entries() == []


# -- deployment-scale ----------------------------------------------------------------------------

def test_deployment_scale_scales_down_for_the_hold_and_restores_the_count() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=4)

    def web() -> tuple[int, int]:
        deployment = jobs.fake.get("Deployment", "shop", "web") or {}
        return deployment["spec"]["replicas"], len(pods_of(jobs.fake))
    held = jobs.during_hold(web)
    record = jobs.run({"action": "deployment-scale", "target": pods_target(mode="all"),
                       "params": {"replicas": 1}, "duration": "0.3s"})

    assert_succeeded(record)
    assert held[-1] == (1, 1)
    assert web() == (4, 4) and all(ready(p) for p in pods_of(jobs.fake).values())
    assert_all_reverted(jobs, record)
    [item] = record.result.output["workloads"]
    assert (item["workload"], item["original_replicas"], item["scaled_to"]) == (WEB, 4, 1)
    assert item["lowest_ready_while_held"] == 1
    [recovery] = record.result.recovery
    assert recovery.recovered and recovery.desired_replicas == 4
    assert [r.body for r in jobs.fake.called("patch", "deployments/scale")] == [
        {"spec": {"replicas": 1}}, {"spec": {"replicas": 4}}]


# -- network-partition ---------------------------------------------------------------------------

def test_network_partition_by_the_jobs_selector_creates_and_deletes_one_policy() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    held = jobs.during_hold(lambda: jobs.fake.objects("NetworkPolicy", "shop"))
    record = jobs.run({"action": "network-partition", "target": pods_target(mode="all"),
                       "duration": "0.2s"})

    assert_succeeded(record)
    [policy] = held[-1]
    assert policy["metadata"]["name"].startswith("pystol-partition-")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "web"}}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert jobs.fake.objects("NetworkPolicy") == []
    assert not any(PARTITION_LABEL in pod["metadata"]["labels"]
                   for pod in pods_of(jobs.fake).values())
    assert_all_reverted(jobs, record)


def test_network_partition_of_some_pods_labels_them_and_unlabels_them() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)

    def state() -> tuple[list[Any], list[str]]:
        labelled = [pod["metadata"]["labels"][PARTITION_LABEL]
                    for pod in pods_of(jobs.fake).values()
                    if PARTITION_LABEL in pod["metadata"]["labels"]]
        return jobs.fake.objects("NetworkPolicy", "shop"), labelled
    held = jobs.during_hold(state)
    record = jobs.run({"action": "network-partition", "target": pods_target(mode="one"),
                       "params": {"direction": "ingress",
                                  "allow": [{"label_selector": "app=dns"}]},
                       "duration": "0.2s"})

    assert_succeeded(record)
    [policy], labelled = held[-1]
    assert labelled == [record.id]
    assert policy["spec"]["podSelector"] == {"matchLabels": {PARTITION_LABEL: record.id}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {
        "matchLabels": {"app": "dns"}}}]}]
    assert state() == ([], [])
    assert_all_reverted(jobs, record)


# -- cpu-stress and memory-stress ----------------------------------------------------------------

def stress_pods(jobs: FakeJobs) -> list[dict[str, Any]]:
    return jobs.fake.objects("Pod", label_selector="app.kubernetes.io/managed-by=pystol")


def test_cpu_stress_runs_a_stress_pod_next_to_each_target_for_the_hold() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=2, nodes=("n1", "n2"))
    held = jobs.during_hold(lambda: stress_pods(jobs))
    record = jobs.run({"action": "cpu-stress", "target": pods_target(mode="all"),
                       "params": {"workers": 2, "load": 50}, "duration": "0.2s"})

    assert_succeeded(record)
    pods = held[-1]
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["n1", "n2"]
    for pod in pods:
        assert pod["metadata"]["namespace"] == "shop"
        assert pod["metadata"]["labels"]["chaos.pystol.org/job"] == record.id
        [container] = pod["spec"]["containers"]
        assert container["args"][:4] == ["--cpu", "2", "--cpu-load", "50"]
        assert container["resources"]["limits"]["cpu"] == "1000m"
    assert stress_pods(jobs) == []
    assert len(pods_of(jobs.fake)) == 2  # the targets themselves are untouched
    assert len(record.result.output["stress_pods"]) == 2
    assert_all_reverted(jobs, record)


def test_memory_stress_pinned_to_a_node_runs_one_stress_pod_there() -> None:
    jobs = FakeJobs()
    jobs.fake.add_node("n1", taints=[{"key": "dedicated", "effect": "NoSchedule"}])
    held = jobs.during_hold(lambda: stress_pods(jobs))
    record = jobs.run({"action": "memory-stress", "target": {},
                       "params": {"node": "n1", "bytes": "64Mi"}, "duration": "0.2s"})

    assert_succeeded(record)
    [pod] = held[-1]
    assert (pod["metadata"]["namespace"], pod["spec"]["nodeName"]) == ("default", "n1")
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists",
                                           "effect": "NoSchedule"}]
    [container] = pod["spec"]["containers"]
    assert container["args"][:4] == ["--vm", "1", "--vm-bytes", "64m"]
    assert container["resources"]["limits"]["memory"] == "128Mi"
    assert stress_pods(jobs) == []
    assert_all_reverted(jobs, record)


CONTROL_PLANE = {"node-role.kubernetes.io/control-plane": ""}


def selection_excluded(record: Any) -> list[str]:
    [selected] = [event for event in record.timeline if event.kind == "selected"]
    excluded: list[str] = selected.data["excluded"]
    return excluded


def test_stress_pinned_to_a_control_plane_node_leaves_it_alone_by_default() -> None:
    jobs = FakeJobs()
    jobs.fake.add_node("cp", labels=CONTROL_PLANE)
    jobs.fake.add_node("n1")
    held = jobs.during_hold(lambda: stress_pods(jobs))
    record = jobs.run({"action": "cpu-stress", "target": {"names": ["cp", "n1"]},
                       "duration": "0.2s"})

    assert_succeeded(record)
    assert [pod["spec"]["nodeName"] for pod in held[-1]] == ["n1"]
    assert [change.target.name for change in record.result.changes] == ["n1"]
    assert selection_excluded(record) == [
        "node cp is a control-plane node (the admin policy's include_control_plane "
        "allows it)"]
    assert_all_reverted(jobs, record)
    # Only the control plane named: nothing to stress, and no stress pod was created.
    alone = FakeJobs()
    alone.fake.add_node("cp", labels=CONTROL_PLANE)
    refused = alone.run({"action": "memory-stress", "target": {"names": ["cp"]},
                         "duration": "0.2s"})
    assert refused.status == JobStatus.FAILED
    assert "node cp is a control-plane node" in (refused.reason or "")
    assert alone.fake.called("create", "pods") == []


def test_co_located_stress_skips_target_pods_on_control_plane_nodes_by_default() -> None:
    """A tenant's pod scheduled on a control-plane node must not bring a stress pod
    there: co-located stress is an operator's to run, the control plane is not."""
    jobs = FakeJobs()
    jobs.fake.add_node("cp", labels=CONTROL_PLANE)
    app_deployment(jobs.fake, replicas=2, nodes=("n1", "cp"))
    on_cp = [pod["metadata"]["name"] for pod in pods_of(jobs.fake).values()
             if pod["spec"]["nodeName"] == "cp"]
    assert len(on_cp) == 1
    held = jobs.during_hold(lambda: stress_pods(jobs))
    record = jobs.run({"action": "cpu-stress", "target": pods_target(mode="all"),
                       "duration": "0.2s"})

    assert_succeeded(record)
    assert [pod["spec"]["nodeName"] for pod in held[-1]] == ["n1"]
    assert [change.target.node for change in record.result.changes] == ["n1"]
    assert selection_excluded(record) == [
        "pods on control-plane nodes (cp) are left out (the admin policy's "
        "include_control_plane allows them)"]
    assert_all_reverted(jobs, record)


@pytest.mark.parametrize("seed", range(6))
def test_co_located_stress_of_one_pod_never_picks_the_one_on_the_control_plane(seed: int
                                                                                ) -> None:
    """The control plane is left out before choosing: `mode: one` finds the ordinary
    pod whatever the seed, rather than choosing the control-plane one and then failing."""
    jobs = FakeJobs()
    jobs.fake.add_node("cp", labels=CONTROL_PLANE)
    app_deployment(jobs.fake, replicas=2, nodes=("n1", "cp"))
    record = jobs.run({"action": "cpu-stress", "target": pods_target(mode="one"),
                       "params": {"seed": seed}, "duration": "0.2s"})
    assert_succeeded(record)
    assert [change.target.node for change in record.result.changes] == ["n1"]


def test_stress_reaches_control_plane_nodes_when_the_policy_includes_them() -> None:
    policy = Policy(include_control_plane=True)
    pinned = FakeJobs(policy=policy)
    pinned.fake.add_node("cp", labels=CONTROL_PLANE)
    pinned.fake.add_node("n1")
    held = pinned.during_hold(lambda: stress_pods(pinned))
    record = pinned.run({"action": "cpu-stress", "target": {"names": ["cp", "n1"]},
                         "duration": "0.2s"})
    assert_succeeded(record)
    assert sorted(pod["spec"]["nodeName"] for pod in held[-1]) == ["cp", "n1"]
    assert_all_reverted(pinned, record)

    colocated = FakeJobs(policy=policy)
    colocated.fake.add_node("cp", labels=CONTROL_PLANE)
    app_deployment(colocated.fake, replicas=2, nodes=("n1", "cp"))
    held = colocated.during_hold(lambda: stress_pods(colocated))
    record = colocated.run({"action": "cpu-stress", "target": pods_target(mode="all"),
                            "duration": "0.2s"})
    assert_succeeded(record)
    assert sorted(pod["spec"]["nodeName"] for pod in held[-1]) == ["cp", "n1"]
    assert_all_reverted(colocated, record)


# -- http-probe ----------------------------------------------------------------------------------

def test_http_probe_reports_statuses_and_latency_and_touches_no_cluster() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    with http_server() as base:
        record = jobs.run({"action": "http-probe", "target": {},
                           "params": {"url": f"{base}/200", "count": 3, "interval": "10ms"}})

    assert_succeeded(record)
    output = record.result.output
    assert (output["count"], output["succeeded"], output["statuses"]) == (3, 3, {"200": 3})
    assert output["latency_seconds"]["max"] >= output["latency_seconds"]["p50"] > 0
    assert jobs.fake.requests == []
    assert record.result.changes == [] and jobs.journal_entries() == []


def test_http_probe_fails_when_the_url_does_not_answer_as_expected() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    with http_server() as base:
        record = jobs.run({"action": "http-probe", "target": {},
                           "params": {"url": f"{base}/503", "count": 2, "interval": "10ms"}})

    assert record.status == JobStatus.FAILED
    assert "0/2 calls answered 200" in (record.reason or "")
    assert record.result.output["statuses"] == {"503": 2}
