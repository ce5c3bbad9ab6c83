"""Chaos seen through the API server's service proxy, with a real worker on pystol-sim.

The sim serves `services/NAME/proxy` and `pods/NAME/proxy` from its simulated endpoints
(pystol_sim/service_traffic.py): a Service answers while it has Ready pods, a pod that a
NetworkPolicy isolates stops answering. So network-partition and pod-kill have an effect
a user can see, and http-probe's `params.service` form measures it, through the worker's
own Kubernetes client, with the sim's `/_sim/traffic` as the ground truth.
"""

from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.integration.conftest import Stack
from tests.support.kube_helpers import wait_for as poll_until

LABEL = "chaos.pystol.org/partition"


def apis(stack: Stack) -> tuple[client.CoreV1Api, client.AppsV1Api]:
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client)


# Polls as the shared helper does, with this file's longer default patience.
wait_for = partial(poll_until, timeout=30.0)


def ready(pod: Any) -> bool:
    return not pod.metadata.deletion_timestamp and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())


def make_service(stack: Stack, replicas: int = 3, ready_seconds: str = "1") -> str:
    """A namespace of the test's own: deployment and Service `svc` (app=svc, port 80)."""
    core, apps = apis(stack)
    namespace = f"hp-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "svc"}},
                 "template": {"metadata": {"labels": {"app": "svc"}, "annotations": {
                     "sim.pystol.org/start-seconds": "1",
                     "sim.pystol.org/ready-seconds": ready_seconds}},
                     "spec": {"containers": [{"name": "app", "image": "shop/svc:1",
                                              "ports": [{"containerPort": 8080}]}]}}}})
    core.create_namespaced_service(namespace, {
        "metadata": {"name": "svc"},
        "spec": {"selector": {"app": "svc"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    wait_for(lambda: len([p for p in pods(stack, namespace) if ready(p)]) == replicas)
    wait_for(lambda: traffic(stack, namespace)["ready_endpoints"] == replicas)
    return namespace


def pods(stack: Stack, namespace: str) -> list[Any]:
    core, _ = apis(stack)
    return core.list_namespaced_pod(namespace, label_selector="app=svc").items


def traffic(stack: Stack, namespace: str) -> dict[str, Any]:
    status, body = stack.sim.request("GET", f"/_sim/traffic?namespace={namespace}")
    assert status == 200, body
    return next(entry for entry in body["services"] if entry["name"] == "svc")


def via_pod(stack: Stack, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
    core, _ = apis(stack)
    try:
        response = core.connect_get_namespaced_pod_proxy_with_path(
            name, namespace, "ping", _preload_content=False, _request_timeout=20)
        return response.status, json.loads(response.data)
    except ApiException as error:
        return error.status, json.loads(error.body)


def via_service(stack: Stack, namespace: str) -> tuple[int, dict[str, Any]]:
    core, _ = apis(stack)
    try:
        response = core.connect_get_namespaced_service_proxy_with_path(
            "svc:http", namespace, "ping", _preload_content=False, _request_timeout=20)
        return response.status, json.loads(response.data)
    except ApiException as error:
        return error.status, json.loads(error.body)


def service_probe(namespace: str, **params: Any) -> dict[str, Any]:
    params.setdefault("interval", "50ms")
    return {"action": "http-probe", "target": {"namespaces": [namespace]},
            "params": {"service": {"namespace": namespace, "name": "svc", "port": "http",
                                   "path": "/ping"}, **params}}


def test_network_partition_makes_the_isolated_pods_stop_answering(stack: Stack) -> None:
    namespace = make_service(stack)
    names = sorted(p.metadata.name for p in pods(stack, namespace))
    assert all(via_pod(stack, namespace, name)[0] == 200 for name in names)
    job = stack.submit({"action": "network-partition", "duration": "3s",
                        "target": {"namespaces": [namespace], "label_selector": "app=svc",
                                   "mode": "fixed", "value": 1}})

    def isolated() -> list[str]:
        hit = [p.metadata.name for p in pods(stack, namespace)
               if (p.metadata.labels or {}).get(LABEL) == job["id"]]
        truth = traffic(stack, namespace)
        return hit if hit and truth["isolated_pods"] == hit else []

    cut = wait_for(isolated)
    status, body = via_pod(stack, namespace, cut[0])
    assert status == 503 and body["reason"] == "ServiceUnavailable"
    assert body["message"].startswith("error trying to reach service: dial tcp ")
    assert body["message"].endswith(":8080: i/o timeout")
    others = [name for name in names if name not in cut]
    assert all(via_pod(stack, namespace, name)[0] == 200 for name in others)
    # The Service keeps answering, from the pods still reachable only.
    answers = [via_service(stack, namespace) for _ in range(4)]
    assert {status for status, _ in answers} == {200}
    assert {body["pod"] for _, body in answers} == set(others)
    assert traffic(stack, namespace)["reachable_endpoints"] == 2

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert via_pod(stack, namespace, cut[0])[0] == 200  # the partition is over
    assert traffic(stack, namespace)["isolated_pods"] == []


def test_http_probe_through_the_service_sees_a_pod_kill_and_reports_it(stack: Stack
                                                                        ) -> None:
    namespace = make_service(stack, ready_seconds="10")  # replacements Ready after ~1.1 s
    probe = stack.submit(service_probe(namespace, count=80, timeout="2s"))
    wait_for(lambda: traffic(stack, namespace)["by_status"].get("200", 0) >= 3)
    kill = stack.submit({"action": "pod-kill", "target": {
        "namespaces": [namespace], "label_selector": "app=svc", "mode": "all"}})
    assert stack.wait_for_job(kill["id"])["status"] == "succeeded"

    record = stack.wait_for_job(probe["id"], timeout=60)
    assert record["status"] == "failed", record  # min_success_percent 100 not met
    output = record["result"]["output"]
    assert output["url"] == f"service {namespace}/svc:http/ping"
    statuses = output["statuses"]
    assert set(statuses) == {"200", "503"} and statuses["503"] >= 1, statuses
    assert f"{statuses['503']}x 503" in record["reason"]
    calls = output["calls"]
    assert calls[0]["status"] == 200 and calls[-1]["status"] == 200  # before and after
    # The probe saw exactly what the sim served: the ground truth, status by status.
    truth = traffic(stack, namespace)
    assert truth["by_status"] == statuses
    assert truth["unavailable"] == statuses["503"]
    assert record["targets"][0]["kind"] == "Service"
    assert record["targets"][0]["namespace"] == namespace


def test_a_probe_of_a_healthy_service_succeeds(stack: Stack) -> None:
    namespace = make_service(stack, replicas=2)
    job = stack.submit(service_probe(namespace, count=4))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", record
    assert record["result"]["output"]["statuses"] == {"200": 4}
    assert traffic(stack, namespace)["by_status"] == {"200": 4}


def test_the_service_namespace_is_scope_checked(stack: Stack) -> None:
    made = stack.call("POST", "/api/v1/tokens", json={
        "name": f"shop-op-{uuid.uuid4().hex[:6]}", "role": "operator",
        "namespaces": ["shop"]})
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    refused = stack.call("POST", "/api/v1/jobs", token=secret,
                         json=service_probe("payments", count=1))
    assert refused.status_code == 403, refused.text
    assert "payments" in refused.text
    assert refused.json()["errors"][0]["loc"] == "target.namespaces[0]"
    allowed = stack.call("POST", "/api/v1/jobs", token=secret, json={
        "action": "http-probe", "target": {"namespaces": ["shop"]}, "dry_run": True,
        "params": {"service": {"namespace": "shop", "name": "web", "port": 80}, "count": 1}})
    assert allowed.status_code in (200, 201, 202), allowed.text
    # The service's namespace must be the job's: no probing `payments` under `shop`.
    mismatch = stack.call("POST", "/api/v1/jobs", token=secret, json={
        "action": "http-probe", "target": {"namespaces": ["shop"]},
        "params": {"service": {"namespace": "payments", "name": "checkout"}, "count": 1}})
    assert mismatch.status_code == 422, mismatch.text
    assert any(e["loc"] == "target.namespaces" and "payments" in e["msg"]
               for e in mismatch.json()["errors"])
    protected = stack.call("POST", "/api/v1/jobs", json=service_probe("kube-system"))
    assert protected.status_code == 422 and "protected" in protected.text, protected.text
    both = stack.call("POST", "/api/v1/jobs", json={
        "action": "http-probe", "target": {"namespaces": ["shop"]},
        "params": {"url": "http://example.com/", "service": {"namespace": "shop",
                                                             "name": "web"}}})
    assert both.status_code == 422 and "exactly one of params.url" in both.text, both.text
