"""Least privilege, proved by use: the chart's RBAC is enough, and every rule of it is needed.

One simulated cluster holds exactly what `helm install` of charts/pystol would create
(the ServiceAccounts, ClusterRoles and ClusterRoleBindings of `helm template`, cluster-wide
mode, and the CRDs; tests/support/rbac_harness.py), and pystol-sim authorizes every
request of a ServiceAccount token against those rules as kube-apiserver does. The worker,
the API and the watcher run as processes, each with a kubeconfig holding its own
ServiceAccount's token; Redis is real.

- **Enough** (the `test_*_under_the_charts_rbac` tests): every built-in action runs to
  `succeeded`, every API route that reads the cluster answers (previews of a pod and of
  a node action, the cluster view, `whoami` for a Kubernetes token, which makes the API
  ask TokenReviews and SubjectAccessReviews), and the watcher runs a PystolAction and a
  PystolClusterAction to Succeeded and keeps a PystolSchedule and a PystolClusterSchedule
  Active.
- **Needed** (`test_without_the_rule_it_fails_with_its_403`, one test per
  (component, apiGroup, resource, verb) of pystol_worker/kube/permissions.py in the mode
  the chart renders): with exactly that verb taken out of the component's ClusterRole
  (live; the processes keep running), the operation that needs it fails, and the job's
  record, the API's problem or log, or the watcher's log carries the sim's refusal
  `cannot <verb> resource "<resource>" in API group "<group>"`; then the rule is put back.
  The watcher's list and watch rules are checked with a short-lived second watcher started
  while the rule is missing (kopf lists and watches once, at start). Where a component
  swallows the refusal on purpose (resolving a pod's owner is best effort; a failed exec
  reports only the error's type, never its text; the peering bootstrap logs the status),
  the test shows what the component then loses, and makes the same call in process with
  the component's own kubeconfig to show the refusal (`IN_PROCESS` lists them, and each
  test checks that its proof was made that way exactly when the list says so).
- **Every rule**: the rules are read off `PERMISSIONS` itself, in both RBAC modes of the
  chart. What only a namespaced install needs (`rbac.namespaced=true`: the watcher's
  KopfPeering, kept by `pystol watch --namespace`) is proved in a second sim holding the
  chart rendered in that mode, by taking the verb out of the watcher's Role. A rule added
  to permissions.py without a proof fails `test_every_rule_has_a_probe_and_every_probe_a_rule`.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from pystol_worker.actions.registry import default_registry
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError
from pystol_worker.kube.permissions import COMPONENTS, PERMISSIONS, required
from tests.integration.conftest import loopback_probes_policy
from tests.support.chart_render import NAMESPACE
from tests.support.pystol_processes import Process, api, worker
from tests.support.rbac_harness import (
    ChartRbac,
    forbidden_text,
    install_chart_rbac,
    sa_name,
    start_watcher,
    unescaped,
    wait_for_line,
    without_verb,
)
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

TOKEN = "least-privilege-admin"
GROUP, VERSION = "pystol.org", "v1alpha1"
TERMINAL = ("succeeded", "failed", "aborted", "cancelled", "skipped")
ANNOTATIONS = {"sim.pystol.org/start-seconds": "0.3", "sim.pystol.org/ready-seconds": "0.5",
               "sim.pystol.org/terminate-seconds": "0.3"}


def uid() -> str:
    return uuid.uuid4().hex[:6]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {value!r})")
        time.sleep(interval)


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document (a job record: reason, error, timeline, results)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


class ProbeTarget(ThreadingHTTPServer):
    """What http-probe calls: answers 200 to every GET."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/healthz"


# -- the rig: sim + chart RBAC + Redis + worker, API and watcher as their ServiceAccounts --------


@dataclass
class Rig:
    sim: SimProcess
    redis: RedisServer
    rbac: ChartRbac
    worker: Process
    api: Process
    watcher: Process
    url: str
    probe_target: ProbeTarget
    policy_file: Path  # allows probing the probe target, on loopback

    def env(self, component: str) -> dict[str, str]:
        return {"PYSTOL_REDIS_URL": self.redis.url,
                "PYSTOL_KUBECONFIG": str(self.rbac.kubeconfigs[component]),
                "PYSTOL_POLICY_FILE": str(self.policy_file)}

    # -- the cluster, as the admin -------------------------------------------------------------

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.rbac.admin)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.rbac.admin)

    @property
    def objects(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.rbac.admin)

    def lab(self, *kinds: str, replicas: int = 2, containers: tuple[str, ...] = ("app",),
            node: str | None = None) -> str:
        """A namespace of the test's own with ready workloads: Deployment `svc`,
        StatefulSet `db`, DaemonSet `ds` (pods labelled app=<name>, tier=lab), on `node`
        only when given."""
        namespace = f"lp-{uid()}"
        self.core.create_namespace({"metadata": {"name": namespace}})
        for kind in kinds or ("Deployment",):
            name = {"Deployment": "svc", "StatefulSet": "db", "DaemonSet": "ds"}[kind]
            labels = {"app": name, "tier": "lab"}
            spec: dict[str, Any] = {
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": labels, "annotations": ANNOTATIONS},
                             "spec": {"containers": [{"name": c, "image": f"lab/{c}:1"}
                                                     for c in containers]}}}
            if node:
                spec["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
            body = {"metadata": {"name": name, "labels": labels}, "spec": spec}
            if kind == "Deployment":
                spec["replicas"] = replicas
                self.apps.create_namespaced_deployment(namespace, body)
            elif kind == "StatefulSet":
                spec.update(replicas=replicas, serviceName=name)
                self.apps.create_namespaced_stateful_set(namespace, body)
            else:
                self.apps.create_namespaced_daemon_set(namespace, body)
        wait_for(lambda: self.all_ready(namespace), 30, f"workloads of {namespace} ready")
        return namespace

    def all_ready(self, namespace: str) -> bool:
        for item in self.apps.list_namespaced_deployment(namespace).items + \
                self.apps.list_namespaced_stateful_set(namespace).items:
            if (item.status.ready_replicas or 0) != item.spec.replicas:
                return False
        for ds in self.apps.list_namespaced_daemon_set(namespace).items:
            if not ds.status.desired_number_scheduled or \
                    ds.status.number_ready != ds.status.desired_number_scheduled:
                return False
        return True

    def pod_of(self, namespace: str, app: str) -> client.V1Pod:
        return next(p for p in self.core.list_namespaced_pod(
            namespace, label_selector=f"app={app}").items if not p.metadata.deletion_timestamp)

    # -- the API, as the admin token -----------------------------------------------------------

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any
             ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or TOKEN}"}
        return requests.request(method, self.url + path, headers=headers, timeout=30,
                                **kwargs)

    def run(self, spec: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Submit a job and wait for its end; the record."""
        response = self.call("POST", "/api/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        return self.wait_for_job(response.json()["id"], timeout)

    def wait_for_job(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            record: dict[str, Any] = self.call("GET", f"/api/v1/jobs/{job_id}").json()
            if record["status"] in TERMINAL:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {record['status']} after "
                                     f"{timeout}s:\n{record}\nworker:\n{self.worker.tail()}")
            time.sleep(0.05)

    def preview(self, spec: dict[str, Any]) -> requests.Response:
        return self.call("POST", "/api/v1/preview", json=spec)

    # -- custom resources, as the admin --------------------------------------------------------

    def create_cr(self, plural: str, name: str, spec: dict[str, Any],
                  namespace: str | None = None) -> None:
        kind = {"pystolactions": "PystolAction", "pystolschedules": "PystolSchedule",
                "pystolclusteractions": "PystolClusterAction",
                "pystolclusterschedules": "PystolClusterSchedule",
                "pystolexperiments": "PystolExperiment",
                "pystolclusterexperiments": "PystolClusterExperiment"}[plural]
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                "metadata": {"name": name}, "spec": spec}
        if namespace:
            self.objects.create_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                         body)
        else:
            self.objects.create_cluster_custom_object(GROUP, VERSION, plural, body)

    def get_cr(self, plural: str, name: str, namespace: str | None = None
               ) -> dict[str, Any] | None:
        try:
            if namespace:
                found: dict[str, Any] = self.objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name)
            else:
                found = self.objects.get_cluster_custom_object(GROUP, VERSION, plural, name)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def wait_for_phase(self, plural: str, name: str, phases: tuple[str, ...],
                       namespace: str | None = None, timeout: float = 45.0) -> dict[str, Any]:
        def phase() -> dict[str, Any] | None:
            obj = self.get_cr(plural, name, namespace)
            return obj if obj and (obj.get("status") or {}).get("phase") in phases else None
        try:
            return wait_for(phase, timeout, f"{plural} {namespace}/{name} in {phases}", 0.1)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.get_cr(plural, name, namespace)}\nwatcher:"
                                 f"\n{self.watcher.tail(30)}") from None

    def delete_cr(self, plural: str, name: str, namespace: str | None = None) -> None:
        """Delete it and wait until the watcher has let it go (finalizer removed)."""
        try:
            if namespace:
                self.objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                             name)
            else:
                self.objects.delete_cluster_custom_object(GROUP, VERSION, plural, name)
        except client.ApiException as error:
            if error.status != 404:
                raise
        wait_for(lambda: self.get_cr(plural, name, namespace) is None, 45,
                 f"{plural} {namespace}/{name} gone")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Rig]:
    redis_server.client().flushdb()
    workdir: Path = tmp_path_factory.mktemp("least-privilege")
    target = ProbeTarget()
    threading.Thread(target=target.serve_forever, name="probe-target", daemon=True).start()
    policy = workdir / "policy.yaml"
    policy.write_text(loopback_probes_policy())
    with SimProcess.start(workdir, speed=10.0) as sim:
        rbac = install_chart_rbac(sim, workdir)

        def env(component: str) -> dict[str, str]:
            return {"PYSTOL_REDIS_URL": redis_server.url,
                    "PYSTOL_KUBECONFIG": str(rbac.kubeconfigs[component]),
                    "PYSTOL_POLICY_FILE": str(policy)}
        port = free_port()
        with worker(env("worker"), concurrency=2) as worker_process, \
                api(env("api"), port, TOKEN) as api_process:
            watcher_process = start_watcher(env("watcher"))
            try:
                yield Rig(sim, redis_server, rbac, worker_process, api_process,
                          watcher_process, f"http://127.0.0.1:{port}", target, policy)
            finally:
                watcher_process.stop()
                target.shutdown()
                target.server_close()


# == enough: everything works with exactly the chart's rules ======================================


def _pod_kill(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    namespace = rig.lab(replicas=3)

    def check(record: dict[str, Any]) -> None:
        # The owner chain (ReplicaSet -> Deployment) was read and the recovery watched.
        [recovery] = record["result"]["recovery"]
        assert recovery["workload"] == {"kind": "Deployment", "namespace": namespace,
                                        "name": "svc"} and recovery["recovered"], recovery
    return ({"action": "pod-kill", "target": {"namespaces": [namespace],
                                              "label_selector": "app=svc", "mode": "fixed",
                                              "value": 1}}, check)


def _pod_kill_daemonset(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    namespace = rig.lab("DaemonSet")

    def check(record: dict[str, Any]) -> None:
        [recovery] = record["result"]["recovery"]
        assert recovery["workload"]["kind"] == "DaemonSet" and recovery["recovered"], recovery
    return ({"action": "pod-kill", "target": {"namespaces": [namespace],
                                              "label_selector": "app=ds", "mode": "fixed",
                                              "value": 1}}, check)


def _container_kill(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    namespace = rig.lab(containers=("app", "sidecar"))

    def check(record: dict[str, Any]) -> None:
        assert record["result"]["changes"][0]["action"].startswith("killed container app")
    return ({"action": "container-kill",
             "target": {"namespaces": [namespace], "label_selector": "app=svc",
                        "mode": "fixed", "value": 1}}, check)


def _pod_failure(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    namespace = rig.lab()

    def check(record: dict[str, Any]) -> None:
        assert all(c["reverted_at"] for c in record["result"]["changes"])
    return ({"action": "pod-failure", "duration": "1s",
             "target": {"namespaces": [namespace], "label_selector": "app=svc",
                        "mode": "fixed", "value": 1}}, check)


def _network_partition(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    namespace = rig.lab()

    def check(record: dict[str, Any]) -> None:
        kinds = sorted(c["target"]["kind"] for c in record["result"]["changes"])
        assert kinds == ["NetworkPolicy", "Pod"], kinds  # a labelled pod and the policy
        assert all(c["reverted_at"] for c in record["result"]["changes"])
    return ({"action": "network-partition", "duration": "1s",
             "target": {"namespaces": [namespace], "label_selector": "app=svc",
                        "mode": "fixed", "value": 1}}, check)


def _deployment_scale(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    namespace = rig.lab("Deployment", "StatefulSet")

    def check(record: dict[str, Any]) -> None:
        kinds = sorted(c["target"]["kind"] for c in record["result"]["changes"])
        assert kinds == ["Deployment", "StatefulSet"], kinds
        assert all(c["reverted_at"] for c in record["result"]["changes"])
    return ({"action": "deployment-scale", "duration": "1s", "params": {"replicas": 1},
             "target": {"namespaces": [namespace], "label_selector": "tier=lab",
                        "mode": "all"}}, check)


def _node_cordon(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    def check(record: dict[str, Any]) -> None:  # by label selector: the nodes were listed
        assert [c["target"]["name"] for c in record["result"]["changes"]] == ["worker-a"]
    return ({"action": "node-cordon", "duration": "1s",
             "target": {"label_selector": "topology.kubernetes.io/zone=zone-a",
                        "mode": "all"}}, check)


def _node_drain(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    rig.lab(replicas=2, node="worker-c")

    def check(record: dict[str, Any]) -> None:
        # Evicted (pods/eviction), their owners read and their workloads' recovery followed.
        evicted = [c for c in record["result"]["changes"] if c["target"]["kind"] == "Pod"]
        assert evicted and all(c["action"] == "evicted from node worker-c" for c in evicted)
        recovery = record["result"]["recovery"]
        assert recovery and all(r["recovered"] for r in recovery), recovery
    return ({"action": "node-drain", "duration": "1s", "target": {"names": ["worker-c"]}},
            check)


def _cpu_stress(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    namespace = rig.lab()

    def check(record: dict[str, Any]) -> None:
        assert all(c["reverted_at"] for c in record["result"]["changes"])
    return ({"action": "cpu-stress", "duration": "1s",
             "target": {"namespaces": [namespace], "label_selector": "app=svc",
                        "mode": "fixed", "value": 1}}, check)


def _memory_stress(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    def check(record: dict[str, Any]) -> None:  # pinned to a node: the node was read
        [change] = record["result"]["changes"]
        assert change["target"] == {**change["target"], "kind": "Node", "name": "worker-b"}
        assert change["reverted_at"]
    return ({"action": "memory-stress", "duration": "1s", "params": {"node": "worker-b"},
             "target": {}}, check)


def _http_probe(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    def check(record: dict[str, Any]) -> None:
        assert record["result"]["output"]["succeeded"] == 2, record["result"]["output"]
    return ({"action": "http-probe", "target": {"namespaces": ["default"]},
             "params": {"url": rig.probe_target.url(), "count": 2, "interval": "10ms"}},
            check)


def _http_probe_service(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    """http-probe's `params.service`: a GET through the API server's service proxy."""
    namespace = rig.lab()
    rig.core.create_namespaced_service(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"selector": {"app": "svc"}, "ports": [{"port": 80}]}})

    def check(record: dict[str, Any]) -> None:
        assert record["result"]["output"]["statuses"] == {"200": 2}, record["result"]
    return ({"action": "http-probe", "target": {"namespaces": [namespace]},
             "params": {"service": {"namespace": namespace, "name": "svc", "port": 80},
                        "count": 2, "interval": "10ms"}}, check)


def _steady_state(rig: Rig) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None]]:
    """steady-state: only probes, each kind a k8s probe reads (object get and pods list)."""
    namespace = rig.lab()
    rig.core.create_namespaced_service(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"selector": {"app": "svc"}, "ports": [{"port": 80}]}})
    client.PolicyV1Api(rig.rbac.admin).create_namespaced_pod_disruption_budget(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "svc"}}}})

    def check(record: dict[str, Any]) -> None:
        outcomes = record["result"]["probes"]
        assert len(outcomes) == 2 * len(K8S_PROBE_OBJECTS), outcomes  # edge: before, after
        assert all(o["ok"] for o in outcomes), outcomes
    return ({"action": "steady-state", "target": {"namespaces": [namespace]},
             "probes": k8s_probes(namespace)}, check)


#: (kind, name) of the objects the steady-state case reads; each kind's rule.
K8S_PROBE_OBJECTS = {"Service": "svc", "Endpoints": "svc", "PodDisruptionBudget": "svc",
                     "Deployment": "svc", "Pod": None}


def k8s_probes(namespace: str, only: str | None = None) -> list[dict[str, Any]]:
    probes: list[dict[str, Any]] = []
    for kind, name in K8S_PROBE_OBJECTS.items():
        if only is not None and kind != only:
            continue
        if name is None:  # a count of pods: a pods list
            probes.append({"type": "k8s", "name": "pods", "namespace": namespace,
                           "pods": {"label_selector": "app=svc", "op": "ge", "value": 1}})
        else:
            probes.append({"type": "k8s", "name": kind.lower(), "namespace": namespace,
                           "object": {"kind": kind, "name": name}})
    return probes


ACTION_CASES: dict[str, Callable[[Rig], tuple[dict[str, Any],
                                               Callable[[dict[str, Any]], None]]]] = {
    "pod-kill": _pod_kill,
    "pod-kill-daemonset": _pod_kill_daemonset,
    "container-kill": _container_kill,
    "pod-failure": _pod_failure,
    "network-partition": _network_partition,
    "deployment-scale": _deployment_scale,
    "node-cordon": _node_cordon,
    "node-drain": _node_drain,
    "cpu-stress": _cpu_stress,
    "memory-stress": _memory_stress,
    "http-probe": _http_probe,
    "http-probe-service": _http_probe_service,
    "steady-state": _steady_state,
}


def test_the_cases_cover_every_builtin_action() -> None:
    covered = {case.removesuffix("-daemonset").removesuffix("-service")
               for case in ACTION_CASES}
    assert covered == set(default_registry().names())


@pytest.mark.parametrize("case", list(ACTION_CASES))
def test_every_action_succeeds_under_the_charts_rbac(rig: Rig, case: str) -> None:
    spec, check = ACTION_CASES[case](rig)
    record = rig.run(spec)
    assert record["status"] == "succeeded", (
        f"{case} as the worker's ServiceAccount: {record['status']}: {record['reason']}\n"
        f"{record['error']}\nworker:\n{rig.worker.tail(20)}")
    check(record)


def test_previews_under_the_charts_rbac(rig: Rig) -> None:
    # A pod action with min_available: the API reads each pod's owners (ReplicaSet ->
    # Deployment, StatefulSet, DaemonSet) and lists the workload's pods, as a run would.
    for namespace, app, kind in (("shop", "web", "Deployment"),
                                 ("payments", "orders-db", "StatefulSet"),
                                 ("monitoring", "node-exporter", "DaemonSet")):
        response = rig.preview({"action": "pod-kill", "target": {
            "namespaces": [namespace], "label_selector": f"app={app}", "mode": "all",
            "min_available": 2}})
        assert response.status_code == 200, response.text
        notes = [n for n in response.json()["excluded"] if n.startswith("min_available=2")]
        assert notes and f"{kind}/{namespace}/{app}" in notes[0], response.json()
    # Node actions: by name (nodes get) and by label selector (nodes list).
    response = rig.preview({"action": "node-cordon", "duration": "1s",
                            "target": {"names": ["worker-a"]}})
    assert response.status_code == 200, response.text
    assert [t["name"] for t in response.json()["chosen"]] == ["worker-a"]
    response = rig.preview({"action": "node-drain", "duration": "1s", "target": {
        "label_selector": "topology.kubernetes.io/zone=zone-b", "mode": "all"}})
    assert response.status_code == 200, response.text
    assert [t["name"] for t in response.json()["chosen"]] == ["worker-b"]
    # Workloads: Deployments and StatefulSets listed.
    response = rig.preview({"action": "deployment-scale", "duration": "1s",
                            "params": {"replicas": 1},
                            "target": {"namespaces": ["payments"], "mode": "all"}})
    assert response.status_code == 200, response.text
    assert {t["kind"] for t in response.json()["chosen"]} == {"Deployment", "StatefulSet"}


def test_cluster_view_under_the_charts_rbac(rig: Rig) -> None:
    response = rig.call("GET", "/api/v1/cluster")
    assert response.status_code == 200, response.text
    view = response.json()
    assert {"control-plane", "worker-a", "worker-b", "worker-c"} <= \
        {n["name"] for n in view["nodes"]}
    kinds = {w["kind"] for w in view["workloads"]}
    assert {"Deployment", "StatefulSet", "DaemonSet"} <= kinds, kinds
    # Pods of a Deployment are shown as its own (through their ReplicaSets).
    web = [p for p in view["pods"] if p["namespace"] == "shop" and p["name"].startswith("web-")]
    assert web and all(p["workload"] == {"kind": "Deployment", "name": "web"} for p in web), \
        web[:1]


def test_whoami_with_a_kubernetes_token_under_the_charts_rbac(rig: Rig) -> None:
    rbac_api = client.RbacAuthorizationV1Api(rig.rbac.admin)
    rbac_api.create_namespaced_role("shop", {
        "metadata": {"name": "chaos-runner"},
        "rules": [{"apiGroups": [GROUP], "resources": ["pystolactions"],
                   "verbs": ["list", "create"]}]})
    rbac_api.create_namespaced_role_binding("shop", {
        "metadata": {"name": "alice-runs-chaos"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "chaos-runner"},
        "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": "shop"}]})
    token = rig.rbac.service_account_token("shop", "alice")
    response = rig.call("GET", "/api/v1/whoami?namespace=shop&namespace=payments", token=token)
    assert response.status_code == 200, f"{response.text}\napi:\n{rig.api.tail(10)}"
    body = response.json()
    assert body["actor"]["kind"] == "kubernetes"
    assert body["actor"]["name"] == "system:serviceaccount:shop:alice"
    assert body["namespace_permissions"] == {"shop": ["jobs.read", "jobs.submit"],
                                             "payments": []}
    assert not any(body["cluster"].values())


def test_the_watcher_runs_custom_resources_under_the_charts_rbac(rig: Rig) -> None:
    namespace = rig.lab(replicas=2)
    name = f"kill-{uid()}"
    rig.create_cr("pystolactions", name, {"action": "pod-kill", "target": {
        "namespaces": [namespace], "labelSelector": "app=svc", "mode": "fixed", "value": 1}},
        namespace)
    rig.create_cr("pystolclusteractions", f"cordon-{uid()}", {
        "action": "node-cordon", "duration": "1s", "target": {"names": ["worker-b"]}})
    rig.create_cr("pystolschedules", "hourly", {"interval": "1h", "template": {
        "action": "pod-kill", "dryRun": True,
        "target": {"namespaces": [namespace], "labelSelector": "app=svc"}}}, namespace)
    rig.create_cr("pystolclusterschedules", f"hourly-{uid()}", {"interval": "1h", "template": {
        "action": "node-cordon", "dryRun": True, "duration": "1s",
        "target": {"names": ["worker-a"]}}})
    # The original Pystol's pingtest, without a URL: the watcher lists the nodes for one.
    rig.create_cr("pystolactions", f"ping-{uid()}", {
        "collection": "actions", "role": "pingtest",
        "extra_vars": json.dumps({"pystol_pingtest_count": 1})}, namespace)

    created = [(p, n["metadata"]["name"], n["metadata"].get("namespace"))
               for p in ("pystolactions", "pystolclusteractions", "pystolschedules",
                         "pystolclusterschedules")
               for n in (rig.objects.list_cluster_custom_object(GROUP, VERSION, p)["items"])]
    try:
        action = rig.wait_for_phase("pystolactions", name, ("Succeeded", "Failed"), namespace)
        assert action["status"]["phase"] == "Succeeded", action["status"]
        [cordon] = [n for p, n, _ in created if p == "pystolclusteractions"]
        cluster_action = rig.wait_for_phase("pystolclusteractions", cordon,
                                            ("Succeeded", "Failed"))
        assert cluster_action["status"]["phase"] == "Succeeded", cluster_action["status"]
        for plural, schedule, where in created:
            if plural.endswith("schedules"):
                status = rig.wait_for_phase(plural, schedule, ("Active", "Failed"),
                                            where)["status"]
                assert status["phase"] == "Active", status
        [ping] = [n for p, n, _ in created if n.startswith("ping-")]
        obj = rig.wait_for_phase("pystolactions", ping, ("Pending", "Running", "Succeeded",
                                                         "Failed"), namespace)
        assert obj["status"].get("jobId"), obj["status"]  # mapped: a node address was found
        job = rig.call("GET", f"/api/v1/jobs/{obj['status']['jobId']}").json()
        assert job["spec"]["params"]["url"].startswith("http://10.0."), job["spec"]
        # The watcher's own Event was posted on the object: its job's end (a queued job
        # posts none since issue 16; refusals and endings do).
        reasons = {e.reason for e in rig.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}").items}
        assert "JobSucceeded" in reasons, reasons
    finally:
        for plural, obj_name, where in created:
            rig.delete_cr(plural, obj_name, where)


def test_nothing_was_refused_while_everything_ran(rig: Rig) -> None:
    """Runs after the proofs above: no component logged a refusal while they ran."""
    for process in (rig.worker, rig.api, rig.watcher):
        refused = [text for text in map(unescaped, process.output)
                   if 'is forbidden: User "system:serviceaccount:' in text]
        assert not refused, f"{process.name} was refused:\n" + "\n".join(refused[:5])


# == needed: without any one rule, what needs it fails with that rule's 403 ======================


@dataclass(repr=False)
class MissingRule:
    """One verb of one rule, and the 403 the sim words for a call that needs it."""

    component: str
    group: str
    resource: str
    verb: str
    #: Set when the probe made the component's call in this process (with its kubeconfig)
    #: rather than seeing the refusal come out of the running component: the test checks
    #: this against IN_PROCESS, so that list stays exactly the rules proved the weaker way.
    in_process_used: bool = False

    @property
    def expected(self) -> str:
        return forbidden_text(self.verb, self.resource, self.group)

    def says(self, text: str, where: str) -> None:
        assert self.expected in unescaped(text), (
            f"without [{self}], {where} should say the sim's 403 "
            f"'{self.expected}', but says:\n{text[:1500]}")


@dataclass(repr=False)
class Lacking(MissingRule):
    """One rule of permissions.py, taken out of the component's ClusterRole on demand."""

    rig: Rig = field(kw_only=True)

    def __str__(self) -> str:
        return f"{self.component}: {self.verb} {self.group or 'core'}/{self.resource}"

    __repr__ = __str__

    @contextmanager
    def removed(self) -> Iterator[None]:
        with self.rig.rbac.without(self.component, self.group, self.resource, self.verb):
            yield

    def job_fails(self, spec: dict[str, Any], succeeded_ok: bool = False
                  ) -> dict[str, Any]:
        """Run the job with the rule missing; the record must carry the refusal."""
        with self.removed():
            record = self.rig.run(spec)
        if not succeeded_ok:
            assert record["status"] == "failed", (
                f"without [{self}] the job should fail, but: {record['status']}: "
                f"{record['reason']}")
        self.says("\n".join(strings(record)), f"job {record['id']} ({spec['action']})")
        return record

    def own_access(self) -> ClusterAccess:
        """The component's ClusterAccess, in this process: a proof that uses it is an
        in-process proof (see IN_PROCESS)."""
        self.in_process_used = True
        return self.rig.rbac.cluster_access(self.component)

    def refused_in_process(self, call: Callable[[], Any], where: str) -> None:
        """The same call the component makes, in this process with its kubeconfig."""
        self.in_process_used = True
        with self.removed():
            try:
                call()
            except (ClusterError, client.ApiException) as error:
                text = str(error) + str(getattr(error, "body", "") or "")
                assert "403" in text, text
                self.says(text, where)
                return
        raise AssertionError(f"without [{self}], {where} was not refused")


IN_PROCESS: dict[tuple[str, str, str, str], str] = {}


def in_process(*rule: str, why: str) -> Callable[[Callable[[Lacking], None]],
                                                 Callable[[Lacking], None]]:
    def register(probe: Callable[[Lacking], None]) -> Callable[[Lacking], None]:
        IN_PROCESS[(rule[0], rule[1], rule[2], rule[3])] = why
        return probe
    return register


PROBES: dict[tuple[str, str, str, str], Callable[[Lacking], None]] = {}


def probe(*rules: tuple[str, str, str, str]) -> Callable[[Callable[[Lacking], None]],
                                                         Callable[[Lacking], None]]:
    def register(function: Callable[[Lacking], None]) -> Callable[[Lacking], None]:
        for rule in rules:
            assert rule not in PROBES, rule
            PROBES[rule] = function
        return function
    return register


def pods_in(lab: str, **target: Any) -> dict[str, Any]:
    return {"namespaces": [lab], "label_selector": "app=svc", "mode": "fixed", "value": 1,
            **target}


# -- the worker --------------------------------------------------------------------------------


@probe(("worker", "", "pods", "list"), ("worker", "", "pods", "delete"),
       ("worker", "", "pods", "watch"))
def _worker_pod_kill(lacking: Lacking) -> None:
    # list: choosing the pods; delete: the kill; watch: following the workload's recovery.
    namespace = lacking.rig.lab()
    lacking.job_fails({"action": "pod-kill", "target": pods_in(namespace)})


@probe(("worker", "", "pods", "get"), ("worker", "", "pods", "patch"))
def _worker_pod_failure(lacking: Lacking) -> None:
    # get: the fresh read before the image swap; patch: the swap.
    namespace = lacking.rig.lab()
    lacking.job_fails({"action": "pod-failure", "duration": "1s",
                       "target": pods_in(namespace)})


@probe(("worker", "", "pods", "create"))
def _worker_stress_pod(lacking: Lacking) -> None:
    namespace = lacking.rig.lab()
    lacking.job_fails({"action": "cpu-stress", "duration": "1s",
                       "target": pods_in(namespace)})


@probe(("worker", "", "pods/eviction", "create"))
def _worker_eviction(lacking: Lacking) -> None:
    # Refused evictions are reported per pod (NotEvicted in the timeline), the cordon is
    # held and reverted all the same.
    lacking.rig.lab(replicas=2, node="worker-c")
    record = lacking.job_fails({"action": "node-drain", "duration": "0.5s",
                                "target": {"names": ["worker-c"]}}, succeeded_ok=True)
    assert not [c for c in record["result"]["changes"] if c["target"]["kind"] == "Pod"], \
        f"without [{lacking}] nothing can be evicted"


@probe(("worker", "", "pods/exec", "create"), ("worker", "", "pods/exec", "get"))
@in_process("worker", "", "pods/exec", "create",
            why="container-kill reports a failed exec by the error's type only")
@in_process("worker", "", "pods/exec", "get",
            why="container-kill reports a failed exec by the error's type only")
def _worker_exec(lacking: Lacking) -> None:
    # container-kill never copies anything of an exec into a record or a log, not even the
    # error's text: the job shows that the signal could not be sent; the refusal itself is
    # what the same exec gets in process.
    rig = lacking.rig
    namespace = rig.lab()
    with lacking.removed():
        record = rig.run({"action": "container-kill", "target": pods_in(namespace)})
    assert record["status"] == "failed", (lacking, record["status"], record["reason"])
    assert "could not send SIGTERM to container app" in record["reason"], record["reason"]
    pod = rig.pod_of(namespace, "svc").metadata.name
    lacking.refused_in_process(
        lambda: rig.rbac.cluster_access("worker").exec_in_pod(namespace, pod, "app",
                                                              ["true"]),
        "ClusterAccess.exec_in_pod")


@probe(("worker", "", "nodes", "get"), ("worker", "", "nodes", "patch"))
def _worker_cordon_by_name(lacking: Lacking) -> None:
    lacking.job_fails({"action": "node-cordon", "duration": "0.5s",
                       "target": {"names": ["worker-a"]}})


@probe(("worker", "", "nodes", "list"))
def _worker_cordon_by_selector(lacking: Lacking) -> None:
    lacking.job_fails({"action": "node-cordon", "duration": "0.5s", "target": {
        "label_selector": "topology.kubernetes.io/zone=zone-a", "mode": "all"}})


@probe(("worker", "", "events", "create"))
def _worker_events(lacking: Lacking) -> None:
    # Events are a courtesy: the job succeeds, the worker logs that it could not post them.
    rig = lacking.rig
    mark = len(rig.worker.output)
    with lacking.removed():
        record = rig.run({"action": "node-cordon", "duration": "0.5s",
                          "target": {"names": ["worker-b"]}})
    assert record["status"] == "succeeded", record["reason"]
    line = wait_for_line(rig.worker, lambda text: "could not post PystolChaos event" in text,
                         timeout=5, start=mark, what="an event refused")
    lacking.says(line, "the worker's log")


@probe(("worker", "apps", "deployments", "get"), ("worker", "apps", "deployments", "list"),
       ("worker", "apps", "deployments/scale", "patch"))
def _worker_scale_deployment(lacking: Lacking) -> None:
    namespace = lacking.rig.lab()
    lacking.job_fails({"action": "deployment-scale", "duration": "0.5s",
                       "params": {"replicas": 1, "kinds": ["Deployment"]},
                       "target": {"namespaces": [namespace], "mode": "all"}})


@probe(("worker", "apps", "statefulsets", "get"), ("worker", "apps", "statefulsets", "list"),
       ("worker", "apps", "statefulsets/scale", "patch"))
def _worker_scale_statefulset(lacking: Lacking) -> None:
    namespace = lacking.rig.lab("StatefulSet")
    lacking.job_fails({"action": "deployment-scale", "duration": "0.5s",
                       "params": {"replicas": 1, "kinds": ["StatefulSet"]},
                       "target": {"namespaces": [namespace], "mode": "all"}})


@probe(("worker", "apps", "replicasets", "get"), ("worker", "apps", "daemonsets", "get"))
def _worker_owner(lacking: Lacking) -> None:
    # A pod's owner decides min_available, the no-overlap locks and recovery: an owner that
    # cannot be read fails the job (it is never taken for "no owner").
    rig = lacking.rig
    kind = "Deployment" if lacking.resource == "replicasets" else "DaemonSet"
    namespace = rig.lab(kind)
    app = "svc" if kind == "Deployment" else "ds"
    lacking.job_fails({"action": "pod-kill", "target": pods_in(
        namespace, label_selector=f"app={app}")})


@probe(("worker", "", "services/proxy", "get"))
def _worker_service_proxy(lacking: Lacking) -> None:
    # http-probe's service form: the API server refuses the proxied GET; the job fails
    # at once with the refusal (a 403 of the API server is not a probe result).
    spec, _ = _http_probe_service(lacking.rig)
    lacking.job_fails(spec)


@probe(("worker", "", "services", "get"), ("worker", "", "endpoints", "get"),
       ("worker", "policy", "poddisruptionbudgets", "get"))
def _worker_k8s_probe(lacking: Lacking) -> None:
    # A k8s probe's read refused by the API server fails the job with the refusal (it is
    # the installation's RBAC, never a probe result that would skip the job).
    namespace = lacking.rig.lab()
    kind = {"services": "Service", "endpoints": "Endpoints",
            "poddisruptionbudgets": "PodDisruptionBudget"}[lacking.resource]
    lacking.job_fails({"action": "steady-state", "target": {"namespaces": [namespace]},
                       "probes": [{"type": "k8s", "name": "read", "namespace": namespace,
                                   "object": {"kind": kind, "name": "svc",
                                              "check": "absent"}}]})


@in_process("worker", "", "services", "list", why="a rehearsal asked of the API is run by "
            "the worker's `pystol.rehearse` task; its snapshot is the same `execute` call")
@in_process("worker", "", "endpoints", "list", why="as services list")
@in_process("worker", "apps", "replicasets", "list", why="as services list")
@in_process("worker", "apps", "daemonsets", "list", why="as services list")
@in_process("worker", "policy", "poddisruptionbudgets", "list", why="as services list")
@in_process("worker", "", "namespaces", "get", why="as services list")
@probe(("worker", "", "services", "list"), ("worker", "", "endpoints", "list"),
       ("worker", "apps", "replicasets", "list"), ("worker", "apps", "daemonsets", "list"),
       ("worker", "policy", "poddisruptionbudgets", "list"), ("worker", "", "namespaces", "get"))
def _worker_rehearsal_snapshot(lacking: Lacking) -> None:
    # A server-side rehearsal copies the experiment's namespaces with read-only lists
    # (RehearsalService.execute, the body of the worker's task) before any simulator
    # starts: without one of them the rehearsal ends `failed`, its error the API's 403.
    import fakeredis

    from pystol_worker.core.access import Grant
    from pystol_worker.core.experiment_model import ExperimentSpec
    from pystol_worker.core.policy import Policy
    from pystol_worker.core.settings import Settings
    from pystol_worker.rehearsal.service import RehearsalService, RehearsalStatus
    from tests.unit.test_rehearsal_service import SHOP_OPERATOR

    namespace = lacking.rig.lab("Deployment", "DaemonSet")
    spec = ExperimentSpec.model_validate({"name": "copy-me", "method": [
        {"type": "action", "name": "kill", "job": {
            "action": "pod-kill", "target": {"namespaces": [namespace],
                                             "label_selector": "app=svc"}}}]})
    rehearsals = RehearsalService(
        fakeredis.FakeRedis(), Settings(signing_key="k" * 32),
        check=lambda spec, identity: Grant(submitter=identity.actor.submitter,
                                           namespaces=spec.namespaces()),
        send=lambda run_id: None)
    started = rehearsals.start(spec, SHOP_OPERATOR)
    with lacking.removed():
        run = rehearsals.execute(started.id, lacking.own_access(), Policy())
    assert run.status == RehearsalStatus.FAILED, (run.status, run.error)
    lacking.says(run.error or "", f"rehearsal {run.id}")


@probe(("worker", "networking.k8s.io", "networkpolicies", "create"),
       ("worker", "networking.k8s.io", "networkpolicies", "delete"))
def _worker_partition(lacking: Lacking) -> None:
    # delete: the revert fails, the job says so (and the journal keeps it for the reaper).
    rig = lacking.rig
    namespace = rig.lab()
    lacking.job_fails({"action": "network-partition", "duration": "0.3s",
                       "target": pods_in(namespace)})
    client.NetworkingV1Api(rig.rbac.admin).delete_collection_namespaced_network_policy(
        namespace)


# -- the API -----------------------------------------------------------------------------------


def _api_problem(lacking: Lacking, request: Callable[[], requests.Response], where: str
                 ) -> None:
    """With the rule missing, the route answers 502 and its problem carries the refusal
    (the cluster view's shared read lives 0.8 s: asked until it has expired)."""
    answers: list[requests.Response] = []

    def refused() -> bool:
        answers.append(request())
        return answers[-1].status_code != 200
    with lacking.removed():
        wait_for(refused, 5, f"{where} refused without [{lacking}]", interval=0.1)
    response = answers[-1]
    assert response.status_code == 502, (lacking, response.status_code, response.text)
    lacking.says(response.json()["detail"], f"the problem of {where}")
    assert request().status_code == 200, f"{where} does not work again with [{lacking}]"


@probe(("api", "", "nodes", "list"), ("api", "", "pods", "list"),
       ("api", "apps", "deployments", "list"), ("api", "apps", "statefulsets", "list"),
       ("api", "apps", "replicasets", "list"), ("api", "apps", "daemonsets", "list"))
def _api_cluster_view(lacking: Lacking) -> None:
    _api_problem(lacking, lambda: lacking.rig.call("GET", "/api/v1/cluster"),
                 "GET /api/v1/cluster")


@probe(("api", "", "nodes", "get"))
def _api_preview_node(lacking: Lacking) -> None:
    _api_problem(lacking, lambda: lacking.rig.preview({
        "action": "node-cordon", "duration": "1s", "target": {"names": ["worker-a"]}}),
        "POST /api/v1/preview (node-cordon by name)")


# resource -> (namespace, the pods' app label, the kind read): a demo workload of each kind.
API_OWNERS = {"deployments": ("shop", "web", "Deployment"),
              "replicasets": ("shop", "web", "ReplicaSet"),
              "statefulsets": ("payments", "orders-db", "StatefulSet"),
              "daemonsets": ("monitoring", "node-exporter", "DaemonSet")}


@probe(*[("api", "apps", resource, "get") for resource in API_OWNERS])
def _api_preview_owner(lacking: Lacking) -> None:
    # A preview with min_available reads each pod's owners to know what its workload can
    # spare; an owner it may not read fails the preview (502 with the cluster's answer)
    # rather than showing more than a run would hit.
    rig = lacking.rig
    namespace, app, _ = API_OWNERS[lacking.resource]
    spec = {"action": "pod-kill", "target": {"namespaces": [namespace],
                                             "label_selector": f"app={app}", "mode": "all",
                                             "min_available": 2}}
    with lacking.removed():
        response = rig.preview(spec)
    assert response.status_code == 502, response.text
    lacking.says(response.json()["detail"], "POST /api/v1/preview")


@probe(("api", "authentication.k8s.io", "tokenreviews", "create"),
       ("api", "authorization.k8s.io", "subjectaccessreviews", "create"))
def _api_kubernetes_identity(lacking: Lacking) -> None:
    # Who a token is (TokenReview) and what it may do (SubjectAccessReview): refused, the
    # API answers no (401, or every permission false) and logs the cluster's answer. A new
    # ServiceAccount each time: the API caches both answers.
    rig = lacking.rig
    token = rig.rbac.service_account_token("shop", f"probe-{uid()}")
    mark = len(rig.api.output)
    with lacking.removed():
        response = rig.call("GET", "/api/v1/whoami?namespace=shop", token=token)
    if lacking.resource == "tokenreviews":
        assert response.status_code == 401, (lacking, response.status_code, response.text)
        hint = "could not check a bearer token"
    else:
        assert response.status_code == 200, response.text
        assert response.json()["namespace_permissions"] == {"shop": []}, response.json()
        hint = "could not ask the cluster whether"
    line = wait_for_line(rig.api, lambda text: hint in text, timeout=5, start=mark,
                         what=f"'{hint}'")
    lacking.says(line, "the API's log")


# -- the watcher -------------------------------------------------------------------------------


CLUSTER_KINDS = ("pystolclusteractions", "pystolclusterschedules")
EXPERIMENT_KINDS = ("pystolexperiments", "pystolclusterexperiments")


def _cr_spec(plural: str, namespace: str | None) -> dict[str, Any]:
    if plural in EXPERIMENT_KINDS:
        return {"title": "least privilege", "method": [
            {"type": "wait", "name": "pause", "duration": "1s"}]}
    if plural == "pystolactions":
        return {"action": "pod-kill", "dryRun": True,
                "target": {"namespaces": [namespace], "labelSelector": "app=web"}}
    if plural == "pystolschedules":
        return {"interval": "1h", "template": _cr_spec("pystolactions", namespace)}
    cordon = {"action": "node-cordon", "dryRun": True, "duration": "1s",
              "target": {"names": ["worker-a"]}}
    return cordon if plural == "pystolclusteractions" else {"interval": "1h",
                                                            "template": cordon}


def _watcher_live(lacking: Lacking, plural: str, spec: dict[str, Any] | None = None,
                  settled: tuple[str, ...] | None = None) -> None:
    """The running watcher meets an object created while the rule is missing: its log
    carries the refusal; with the rule back, kopf's retry gets through."""
    rig = lacking.rig
    namespace = None if plural in (*CLUSTER_KINDS, "pystolclusterexperiments") else "shop"
    name = f"lp-{uid()}"
    mark = len(rig.watcher.output)
    try:
        with lacking.removed():
            rig.create_cr(plural, name, spec or _cr_spec(plural, namespace), namespace)
            line = wait_for_line(rig.watcher, lambda text: lacking.expected in text,
                                 timeout=15, start=mark, what=f"refusal of [{lacking}]")
        lacking.says(line, "the watcher's log")
        if settled is None:
            settled = ("Succeeded",) if plural.endswith("actions") else \
                ("Completed",) if plural in EXPERIMENT_KINDS else ("Active",)
        rig.wait_for_phase(plural, name, settled, namespace)
    finally:
        rig.delete_cr(plural, name, namespace)


@probe(*[("watcher", GROUP, f"{plural}{sub}", "patch")
         for plural in ("pystolactions", "pystolschedules", *CLUSTER_KINDS, *EXPERIMENT_KINDS)
         for sub in ("", "/status")])
def _watcher_patch(lacking: Lacking) -> None:
    # The object itself: kopf's finalizer and progress annotations; /status: the status.
    _watcher_live(lacking, lacking.resource.removesuffix("/status"))


@probe(("watcher", "", "events", "create"))
def _watcher_events(lacking: Lacking) -> None:
    _watcher_live(lacking, "pystolactions")


@probe(("watcher", "", "nodes", "list"))
def _watcher_nodes(lacking: Lacking) -> None:
    # A pingtest without a URL needs the first node's address; refused, it cannot be mapped.
    _watcher_live(lacking, "pystolactions", {"collection": "actions", "role": "pingtest"},
                  settled=("Failed",))


@contextmanager
def _probe_watcher(lacking: Lacking, *args: str) -> Iterator[Process]:
    """A second watcher started while the rule is missing (kopf lists and watches, and
    creates and patches its peering, when it starts); stopped at once afterwards."""
    rig = lacking.rig
    with lacking.removed():
        handle = start_watcher(rig.env("watcher"), *args, name=f"probe-{lacking.verb}")
        try:
            yield handle
        finally:
            handle.kill_group()


@probe(*[("watcher", GROUP, plural, verb)
         for plural in ("pystolactions", "pystolschedules", *CLUSTER_KINDS,
                        *EXPERIMENT_KINDS)
         for verb in ("list", "watch")],
       ("watcher", "apiextensions.k8s.io", "customresourcedefinitions", "list"),
       ("watcher", "apiextensions.k8s.io", "customresourcedefinitions", "watch"))
def _watcher_lists_and_watches(lacking: Lacking) -> None:
    with _probe_watcher(lacking, "--standalone") as handle:
        line = wait_for_line(handle, lambda text: lacking.expected in text, timeout=15,
                             what=f"refusal of [{lacking}]")
    lacking.says(line, "the watcher's log")


@probe(*[("watcher", "kopf.dev", "clusterkopfpeerings", verb)
         for verb in ("list", "watch", "patch", "create")])
@in_process("watcher", "kopf.dev", "clusterkopfpeerings", "create",
            why="the watcher logs only the status of a refused peering create")
def _watcher_peering(lacking: Lacking) -> None:
    rig = lacking.rig
    peering = f"probe-{uid()}"
    peerings = ("kopf.dev", "v1", "clusterkopfpeerings")
    try:
        with _probe_watcher(lacking, "--peering", peering) as handle:
            if lacking.verb == "create":
                # Without its peering object a watcher stays paused; it says why.
                wait_for_line(handle, lambda text: f"cannot create ClusterKopfPeering "
                              f"'{peering}' (403 Forbidden)" in text, timeout=15,
                              what="the refused peering create")
                lacking.refused_in_process(
                    lambda: client.CustomObjectsApi(rig.rbac.kube("watcher"))
                    .create_cluster_custom_object(*peerings, {
                        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                        "metadata": {"name": peering}}),
                    "CustomObjectsApi.create_cluster_custom_object (ensure_peering)")
                return
            line = wait_for_line(handle, lambda text: lacking.expected in text, timeout=15,
                                 what=f"refusal of [{lacking}]")
        lacking.says(line, "the watcher's log")
    finally:
        try:
            rig.objects.delete_cluster_custom_object(*peerings, peering)
        except client.ApiException as error:
            if error.status != 404:
                raise


# -- the watcher confined to a namespace (chart: rbac.namespaced=true) ------------------------
#
# Confined with `--namespace`, the watcher keeps its peering in a KopfPeering of that
# namespace instead of a ClusterKopfPeering: rules the cluster-wide chart never grants,
# so they are proved in a second sim holding the chart rendered in namespaced mode, where
# the watcher's namespaced rules are a Role in the release namespace.

# rbac.namespaces: the release namespace itself (install_chart_rbac applies the documents
# with `-n pystol`); the watcher's Role lives there whatever the targets are.
NAMESPACED_SETS = ("rbac.namespaced=true", f"rbac.namespaces={{{NAMESPACE}}}")


@dataclass
class NamespacedRig:
    """A sim with the chart's namespaced-mode RBAC; the watcher runs in `NAMESPACE`."""

    sim: SimProcess
    rbac: ChartRbac
    redis: RedisServer
    namespace: str

    def env(self) -> dict[str, str]:
        return {"PYSTOL_REDIS_URL": self.redis.url,
                "PYSTOL_KUBECONFIG": str(self.rbac.kubeconfigs["watcher"])}

    def role_rules(self) -> list[dict[str, Any]]:
        """The watcher's Role in the release namespace, as the chart renders it."""
        [doc] = [d for d in self.rbac.docs if d["kind"] == "Role"
                 and d["metadata"]["name"] == sa_name("watcher")
                 and d["metadata"]["namespace"] == self.namespace]
        return copy.deepcopy(doc["rules"])

    def set_role_rules(self, rules: list[dict[str, Any]]) -> None:
        api = client.RbacAuthorizationV1Api(self.rbac.admin)
        body = api.read_namespaced_role(sa_name("watcher"), self.namespace)
        body.rules = rules
        api.replace_namespaced_role(sa_name("watcher"), self.namespace, body)

    def live_role_rules(self) -> list[dict[str, Any]]:
        current = client.RbacAuthorizationV1Api(self.rbac.admin).read_namespaced_role(
            sa_name("watcher"), self.namespace)
        return [{"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs}
                for r in current.rules]

    def peering(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = client.CustomObjectsApi(self.rbac.admin) \
                .get_namespaced_custom_object("kopf.dev", "v1", self.namespace,
                                              "kopfpeerings", name)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found


@pytest.fixture(scope="module")
def namespaced_rig(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
                   ) -> Iterator[NamespacedRig]:
    workdir: Path = tmp_path_factory.mktemp("least-privilege-namespaced")
    with SimProcess.start(workdir, speed=10.0) as sim:
        rbac = install_chart_rbac(sim, workdir, *NAMESPACED_SETS)
        assert not [d for d in rbac.docs if d["kind"] == "ClusterRole"
                    and d["metadata"]["name"] == sa_name("watcher")], \
            "namespaced mode should give the watcher a Role, not its cluster-wide ClusterRole"
        yield NamespacedRig(sim, rbac, redis_server, NAMESPACE)


@dataclass(repr=False)
class LackingInNamespace(MissingRule):
    """One verb taken out of the namespaced watcher's Role."""

    rig: NamespacedRig = field(kw_only=True)

    def __str__(self) -> str:
        return f"{self.component} (namespaced): {self.verb} {self.group or 'core'}/" \
            f"{self.resource}"

    __repr__ = __str__

    @contextmanager
    def removed(self) -> Iterator[None]:
        rendered = self.rig.role_rules()
        self.rig.set_role_rules(without_verb(rendered, self.group, self.resource, self.verb))
        try:
            yield
        finally:
            self.rig.set_role_rules(rendered)


NAMESPACED_PROBES: dict[tuple[str, str, str, str], Callable[[LackingInNamespace], None]] = {}
NAMESPACED_IN_PROCESS: dict[tuple[str, str, str, str], str] = {}


def _namespaced_peering(lacking: LackingInNamespace) -> None:
    # kopf lists and watches the KopfPeering objects of its namespace, and patches its own
    # keep-alive into one; ensure_peering creates it first. Without create the watcher
    # only logs the status (it assumes the object exists, and stays paused): the same
    # create, made in process with the watcher's token, shows the refusal.
    rig = lacking.rig
    peering = f"probe-{uid()}"
    try:
        with lacking.removed():
            handle = start_watcher(rig.env(), "--namespace", rig.namespace, "--peering",
                                   peering, name=f"ns-probe-{lacking.verb}")
            try:
                if lacking.verb == "create":
                    wait_for_line(handle, lambda text: f"cannot create KopfPeering "
                                  f"'{peering}' (403 Forbidden)" in text, timeout=15,
                                  what="the refused peering create")
                    lacking.in_process_used = True
                    try:
                        client.CustomObjectsApi(rig.rbac.kube("watcher")) \
                            .create_namespaced_custom_object(
                                "kopf.dev", "v1", rig.namespace, "kopfpeerings",
                                {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                                 "metadata": {"name": peering}})
                    except client.ApiException as error:
                        assert error.status == 403, error
                        lacking.says(str(error.body), "create_namespaced_custom_object "
                                                      "(ensure_peering)")
                        return
                    raise AssertionError(f"without [{lacking}] the create was not refused")
                line = wait_for_line(handle, lambda text: lacking.expected in text,
                                     timeout=15, what=f"refusal of [{lacking}]")
            finally:
                handle.kill_group()
        lacking.says(line, "the namespaced watcher's log")
    finally:
        try:
            client.CustomObjectsApi(rig.rbac.admin).delete_namespaced_custom_object(
                "kopf.dev", "v1", rig.namespace, "kopfpeerings", peering)
        except client.ApiException as error:
            if error.status != 404:
                raise


for _verb in ("list", "watch", "patch", "create"):
    NAMESPACED_PROBES[("watcher", "kopf.dev", "kopfpeerings", _verb)] = _namespaced_peering
NAMESPACED_IN_PROCESS[("watcher", "kopf.dev", "kopfpeerings", "create")] = \
    "the watcher logs only the status of a refused peering create"


def test_a_namespaced_watcher_keeps_its_peering_under_the_charts_namespaced_rbac(
        namespaced_rig: NamespacedRig) -> None:
    """Enough: confined to its namespace with exactly the namespaced chart's rules, the
    watcher creates its KopfPeering and keeps its keep-alive in it, refused nothing."""
    peering = f"ok-{uid()}"
    handle = start_watcher(namespaced_rig.env(), "--namespace", namespaced_rig.namespace,
                           "--peering", peering, name="ns-watch")
    try:
        try:
            wait_for(lambda: (namespaced_rig.peering(peering) or {}).get("status"), 30,
                     f"the watcher's keep-alive in KopfPeering {peering}", interval=0.1)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{namespaced_rig.peering(peering)}\n"
                                 f"{handle.tail(30)}") from None
    finally:
        handle.kill_group()
    refused = [text for text in map(unescaped, handle.output)
               if "is forbidden: User" in text or "403" in text]
    assert not refused, "the namespaced watcher was refused:\n" + "\n".join(refused[:5])


# -- one test per rule -------------------------------------------------------------------------


def _rules_of(component: str, namespaced: bool) -> set[tuple[str, str, str, str]]:
    return {(component, group, resource, verb)
            for (group, resource), verbs in required(component, namespaced).items()
            for verb in verbs}


#: Every (component, apiGroup, resource, verb) of permissions.py, read off PERMISSIONS
#: itself: a rule added there without a proof fails the coverage test below.
EVERY_RULE = {(component, rule.api_group, rule.resource, verb)
              for component in COMPONENTS for rule in PERMISSIONS[component]
              for verb in rule.verbs}
#: What the chart's default, cluster-wide mode grants: proved in `rig`.
CLUSTER_WIDE_RULES = set().union(*(_rules_of(c, False) for c in COMPONENTS))
#: What only a namespaced install needs (the watcher's KopfPeering): proved in
#: `namespaced_rig`. The rules both modes need are proved once, cluster-wide.
NAMESPACED_ONLY_RULES = set().union(*(_rules_of(c, True) for c in COMPONENTS)) \
    - CLUSTER_WIDE_RULES
RULES = sorted(CLUSTER_WIDE_RULES)
NAMESPACED_RULES = sorted(NAMESPACED_ONLY_RULES)


def test_every_rule_has_a_probe_and_every_probe_a_rule() -> None:
    assert CLUSTER_WIDE_RULES | NAMESPACED_ONLY_RULES == EVERY_RULE, (
        f"rules of permissions.py that no mode requires, so none is proved: "
        f"{sorted(EVERY_RULE - CLUSTER_WIDE_RULES - NAMESPACED_ONLY_RULES)}")
    assert set(PROBES) == CLUSTER_WIDE_RULES, (
        f"rules without a probe: {sorted(CLUSTER_WIDE_RULES - set(PROBES))}; "
        f"probes of rules the chart does not grant: "
        f"{sorted(set(PROBES) - CLUSTER_WIDE_RULES)}")
    assert set(NAMESPACED_PROBES) == NAMESPACED_ONLY_RULES, (
        f"namespaced-mode rules without a probe: "
        f"{sorted(NAMESPACED_ONLY_RULES - set(NAMESPACED_PROBES))}; probes of rules "
        f"namespaced mode alone does not need: "
        f"{sorted(set(NAMESPACED_PROBES) - NAMESPACED_ONLY_RULES)}")
    assert set(IN_PROCESS) <= CLUSTER_WIDE_RULES
    assert set(NAMESPACED_IN_PROCESS) <= NAMESPACED_ONLY_RULES


def _rule_id(rule: tuple[str, str, str, str]) -> str:
    component, group, resource, verb = rule
    return f"{component}:{group or 'core'}/{resource}:{verb}"


@pytest.mark.parametrize("rule", RULES, ids=[_rule_id(rule) for rule in RULES])
def test_without_the_rule_it_fails_with_its_403(rig: Rig, rule: tuple[str, str, str, str]
                                                ) -> None:
    component, group, resource, verb = rule
    probe_of_rule = PROBES.get(rule)
    assert probe_of_rule is not None, f"no operation is known that needs {rule}"
    lacking = Lacking(component, group, resource, verb, rig=rig)
    probe_of_rule(lacking)
    # IN_PROCESS lists exactly the rules whose refusal was seen in this process.
    assert lacking.in_process_used == (rule in IN_PROCESS), (
        f"[{lacking}] was proved {'in process' if lacking.in_process_used else 'by use'}, "
        f"but IN_PROCESS {'does not list' if rule not in IN_PROCESS else 'lists'} it")
    # Put back as rendered.
    current = client.RbacAuthorizationV1Api(rig.rbac.admin).read_cluster_role(
        sa_name(component))
    assert [{"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs}
            for r in current.rules] == rig.rbac.role(component)["rules"]


@pytest.mark.parametrize("rule", NAMESPACED_RULES,
                         ids=[_rule_id(rule) for rule in NAMESPACED_RULES])
def test_without_the_namespaced_rule_it_fails_with_its_403(
        namespaced_rig: NamespacedRig, rule: tuple[str, str, str, str]) -> None:
    component, group, resource, verb = rule
    lacking = LackingInNamespace(component, group, resource, verb, rig=namespaced_rig)
    NAMESPACED_PROBES[rule](lacking)
    assert lacking.in_process_used == (rule in NAMESPACED_IN_PROCESS), lacking
    assert namespaced_rig.live_role_rules() == namespaced_rig.role_rules()
