"""Probes in jobs with real processes: redis-server, a Celery worker, the API and
pystol-sim over HTTPS. A continuous service probe (through the API server's proxy) that
fails once a network partition bites ends the 60 s hold at once: the job is aborted, its
verdict `deviated`, every change reverted within one probe interval of the failing call's
end, and the sim shows the NetworkPolicy gone. Edge probes pass on a healthy service.
Probes of a tenant's 250 KB annotation leave a record of bounded size (review H1)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from kubernetes import client, config

from tests.integration.conftest import Stack
from tests.integration.test_action_http_probe_service import make_service, traffic
from tests.support.kube_helpers import wait_for

ENDS = ("succeeded", "failed", "aborted", "cancelled", "skipped")


def service_probe(namespace: str, **probe: Any) -> dict[str, Any]:
    return {"name": "svc-ok", "service": {"namespace": namespace, "name": "svc",
                                          "port": "http", "path": "/ping"}, **probe}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def network_policies(stack: Stack, namespace: str) -> list[Any]:
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    return client.NetworkingV1Api(api_client).list_namespaced_network_policy(namespace).items


def test_a_failing_continuous_probe_aborts_the_partition_and_reverts(stack: Stack) -> None:
    namespace = make_service(stack)
    job = stack.submit({
        "action": "network-partition", "duration": "60s",
        "target": {"namespaces": [namespace], "label_selector": "app=svc", "mode": "all"},
        "probes": [service_probe(namespace, mode="continuous", run={
            "interval": "1s", "timeout": "0.5s", "stop_on_failure": True})]})
    record = stack.wait_for_job(job["id"], timeout=40, until=ENDS)

    assert record["status"] == "aborted", record["reason"]
    assert record["verdict"] == "deviated"
    assert record["reason"].startswith("stopped by probe svc-ok (continuous): ")
    outcomes = record["result"]["probes"]
    failing = [o for o in outcomes if not o["ok"]]
    assert failing and any(o["ok"] for o in outcomes)  # healthy before the fault bit
    first_failure_end = at(failing[0]["ended_at"])
    changes = record["result"]["changes"]
    assert changes
    for change in changes:
        assert change["reverted_at"], change
        assert (at(change["reverted_at"]) - first_failure_end).total_seconds() < 1.0, change
    ran = (at(record["ended_at"]) - at(record["started_at"])).total_seconds()
    assert ran < 30  # nowhere near the 60 s hold
    assert network_policies(stack, namespace) == []
    wait_for(lambda: traffic(stack, namespace)["isolated_pods"] == [])
    summary = record["result"]["probe_summary"]
    assert summary[0]["name"] == "svc-ok" and summary[0]["failed"] >= 1


def test_edge_probes_through_the_service_proxy_pass_on_a_healthy_service(stack: Stack
                                                                          ) -> None:
    namespace = make_service(stack)
    job = stack.submit({
        "action": "http-probe", "target": {"namespaces": [namespace]},
        "params": {"service": {"namespace": namespace, "name": "svc", "port": "http",
                               "path": "/ping"}, "count": 1},
        "probes": [service_probe(namespace, body_contains="\"service\":\"svc\"")]})
    record = stack.wait_for_job(job["id"], timeout=40, until=ENDS)
    assert record["status"] == "succeeded", record["reason"]
    assert record["verdict"] == "passed" and record["score"] == 100.0
    phases = [(o["phase"], o["ok"], o["status"]) for o in record["result"]["probes"]]
    assert phases == [("before", True, 200), ("after", True, 200)]


def test_probes_of_a_huge_annotation_keep_the_record_small(stack: Stack) -> None:
    """A tenant annotates its own Deployment with 250 KB and probes it 20 times every
    0.5 s while a partition is held: each outcome keeps 256 characters of the value, and
    the job keeps at most 256 KiB of outcomes while its summary counts every run."""
    namespace = make_service(stack)
    _, apps = stack.kube_clients()
    apps.patch_namespaced_deployment("svc", namespace, {"metadata": {"annotations": {
        "blob": "x" * 250_000}}})
    probes = [{"name": f"blob-{index}", "type": "k8s", "namespace": namespace,
               "mode": "continuous", "run": {"interval": "0.5s", "timeout": "0.5s"},
               "object": {"kind": "Deployment", "name": "svc", "check": "field",
                          "field": {"path": "metadata.annotations.blob", "op": "ne",
                                    "value": "y"}}} for index in range(20)]
    job = stack.submit({
        "action": "network-partition", "duration": "10s",
        "target": {"namespaces": [namespace], "label_selector": "app=svc", "mode": "all"},
        "probes": probes})
    record = stack.wait_for_job(job["id"], timeout=60, until=ENDS)
    assert record["status"] == "succeeded", record["reason"]
    outcomes = record["result"]["probes"]
    assert outcomes and all(o["ok"] and o["value"] == "x" * 256 for o in outcomes)
    assert len(json.dumps(outcomes, separators=(",", ":"))) <= 256 * 1024  # as stored
    runs = sum(summary["runs"] for summary in record["result"]["probe_summary"])
    assert runs > len(outcomes)  # past the budget only the counts grew
