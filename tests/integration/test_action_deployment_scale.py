"""deployment-scale on pystol-sim: fewer replicas while held, the old count back afterwards."""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

from tests.integration.conftest import Stack
from tests.support.kube_helpers import wait_for as poll_until
from tests.support.recovery_truth import assert_matches_truth, unix, whole_again_at

ANNOTATIONS = {"sim.pystol.org/start-seconds": "0.5", "sim.pystol.org/ready-seconds": "1",
               "sim.pystol.org/terminate-seconds": "0.5"}


def template(app: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app, "tier": "lab"}, "annotations": ANNOTATIONS},
            "spec": {"containers": [{"name": "app", "image": f"lab/{app}:1"}]}}


def make_workloads(stack: Stack) -> str:
    """A namespace of the test's own: Deployment web (3) and StatefulSet db (2), tier=lab."""
    core, apps = stack.kube_clients()
    namespace = f"ds-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "web", "labels": {"tier": "lab"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": template("web")}})
    apps.create_namespaced_stateful_set(namespace, {
        "metadata": {"name": "db", "labels": {"tier": "lab"}},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": template("db")}})
    wait_for(lambda: state(stack, namespace) == {"Deployment/web": (3, 3),
                                                 "StatefulSet/db": (2, 2)})
    return namespace


def state(stack: Stack, namespace: str) -> dict[str, tuple[int, int]]:
    """{kind/name: (spec.replicas, ready pods that are not terminating)}."""
    core, apps = stack.kube_clients()
    result = {}
    for kind, obj in (("Deployment", apps.read_namespaced_deployment("web", namespace)),
                      ("StatefulSet", apps.read_namespaced_stateful_set("db", namespace))):
        app = "web" if kind == "Deployment" else "db"
        ready = [p for p in core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
                 if not p.metadata.deletion_timestamp
                 and any(c.type == "Ready" and c.status == "True"
                         for c in p.status.conditions or ())]
        result[f"{kind}/{obj.metadata.name}"] = (obj.spec.replicas, len(ready))
    return result


def snapshot(stack: Stack, namespace: str) -> dict[str, Any]:
    """What deployment-scale may touch: the workloads (same objects) and their replicas."""
    _, apps = stack.kube_clients()
    web = apps.read_namespaced_deployment("web", namespace)
    db = apps.read_namespaced_stateful_set("db", namespace)
    return {"web": (web.metadata.uid, web.spec.replicas, web.status.ready_replicas),
            "db": (db.metadata.uid, db.spec.replicas, db.status.ready_replicas)}


# Polls as the shared helper does, with this file's longer default patience.
wait_for = partial(poll_until, timeout=20.0)


def spec(namespace: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "deployment-scale",
                            "target": {"namespaces": [namespace], "label_selector": "tier=lab",
                                       "mode": "all"},
                            "params": params, "duration": "2s"}
    body.update(extra)
    return body


def test_workloads_run_fewer_replicas_while_held_and_get_them_back(stack: Stack) -> None:
    namespace = make_workloads(stack)
    before = snapshot(stack, namespace)
    job = stack.submit(spec(namespace, {"replicas": 1}))
    wait_for(lambda: state(stack, namespace) == {"Deployment/web": (1, 1),
                                                 "StatefulSet/db": (1, 1)})
    assert stack.call("GET", f"/api/v1/jobs/{job['id']}").json()["status"] == "running"

    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", (record["reason"], record["error"])
    # Recovery was observed: by the time the job ended, both were whole again.
    assert state(stack, namespace) == {"Deployment/web": (3, 3), "StatefulSet/db": (2, 2)}
    wait_for(lambda: snapshot(stack, namespace) == before)

    changes = record["result"]["changes"]
    assert {(c["target"]["kind"], c["target"]["name"]) for c in changes} == \
        {("Deployment", "web"), ("StatefulSet", "db")}
    for change in changes:
        assert change["reverted_at"] is not None and change["error"] is None
        assert change["revert"] == "undo restore-replicas"
        assert "to 1 replica(s)" in change["action"]
    metrics = record["metrics"]
    assert metrics["targets_selected"] == 2 and metrics["targets_affected"] == 2
    recovery = {r["workload"]["name"]: r for r in record["result"]["recovery"]}
    assert recovery["web"]["recovered"] and recovery["web"]["desired_replicas"] == 3
    assert recovery["db"]["recovered"] and recovery["db"]["desired_replicas"] == 2
    # Counted from the revert (the job's own stamp: the observers start after the last
    # one) to the last pod of each workload ready again.
    truth = stack.sim.truth(namespace)
    for kind, name in (("Deployment", "web"), ("StatefulSet", "db")):
        assert_matches_truth(recovery[name]["recovery_seconds"],
                             unix(metrics["reverted_at"]),
                             whole_again_at(truth, kind, namespace, name), f"{kind}/{name}")
    assert metrics["recovery_seconds"] == max(r["recovery_seconds"] for r in recovery.values())
    output = {w["workload"]: w for w in record["result"]["output"]["workloads"]}
    assert output[f"Deployment/{namespace}/web"]["original_replicas"] == 3
    assert output[f"StatefulSet/{namespace}/db"]["original_replicas"] == 2
    assert all(w["scaled_to"] == 1 and w["lowest_ready_while_held"] == 1
               for w in output.values())
    for name in ("web", "db"):
        assert {"PystolChaos", "PystolRevert"} <= set(stack.event_reasons(namespace, name))
    kinds = [event["kind"] for event in record["timeline"]]
    assert kinds.count("injected") == 2 and kinds.count("reverted") == 2
    assert kinds.count("recovered") == 2
    assert stack.redis.client().hlen("pystol:journal") == 0


def test_percent_of_one_kind(stack: Stack) -> None:
    namespace = make_workloads(stack)
    before = snapshot(stack, namespace)
    job = stack.submit(spec(namespace, {"percent": 50, "kinds": ["Deployment"]}))
    wait_for(lambda: state(stack, namespace)["Deployment/web"] == (1, 1))
    assert state(stack, namespace)["StatefulSet/db"] == (2, 2)  # not a selected kind
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded", (record["reason"], record["error"])
    [item] = record["result"]["output"]["workloads"]
    assert (item["original_replicas"], item["scaled_to"]) == (3, 1)  # floor(3 * 50%)
    wait_for(lambda: snapshot(stack, namespace) == before)


def test_dry_run_preview_and_exclusions(stack: Stack) -> None:
    namespace = make_workloads(stack)
    before = snapshot(stack, namespace)
    response = stack.call("POST", "/api/v1/preview", json=spec(namespace, {"replicas": 0}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched"] == 2
    assert {(c["kind"], c["name"]) for c in body["chosen"]} == {("Deployment", "web"),
                                                                 ("StatefulSet", "db")}

    # Scaling web to the 3 it already has would change nothing: left out, saying so.
    body = stack.call("POST", "/api/v1/preview", json=spec(namespace, {"replicas": 3})).json()
    assert [c["name"] for c in body["chosen"]] == ["db"]
    assert any("already has 3 replica(s)" in reason for reason in body["excluded"])

    job = stack.submit(spec(namespace, {"replicas": 0}, dry_run=True))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "succeeded" and "dry run" in record["reason"]
    assert len(record["result"]["output"]["would_affect"]) == 2
    assert record["result"]["changes"] == []
    assert snapshot(stack, namespace) == before

    # min_available keeps a workload from being scaled below it.
    job = stack.submit(spec(namespace, {"replicas": 0},
                            target={"namespaces": [namespace], "label_selector": "tier=lab",
                                    "mode": "all", "min_available": 1}))
    record = stack.wait_for_job(job["id"])
    assert record["status"] == "failed" and "min_available" in record["reason"]
    assert snapshot(stack, namespace) == before


def test_cancel_mid_hold_restores_at_once(stack: Stack) -> None:
    namespace = make_workloads(stack)
    before = snapshot(stack, namespace)
    job = stack.submit(spec(namespace, {"replicas": 0}, duration="60s"))
    wait_for(lambda: state(stack, namespace) == {"Deployment/web": (0, 0),
                                                 "StatefulSet/db": (0, 0)})
    cancelled = time.monotonic()
    response = stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    record = stack.wait_for_job(job["id"], timeout=10)
    assert record["status"] == "aborted", record
    assert time.monotonic() - cancelled < 5
    assert all(change["reverted_at"] for change in record["result"]["changes"])
    _, apps = stack.kube_clients()
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 3
    assert apps.read_namespaced_stateful_set("db", namespace).spec.replicas == 2
    wait_for(lambda: snapshot(stack, namespace) == before)
    assert stack.redis.client().hlen("pystol:journal") == 0


def test_bad_input_is_refused_with_field_paths(stack: Stack) -> None:
    def locs(body: dict[str, Any]) -> list[str]:
        response = stack.call("POST", "/api/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        return [error["loc"] for error in response.json()["errors"]]

    assert "params.percent" in locs(spec("shop", {"replicas": 1, "percent": 50}))
    assert "params.replicas" in locs(spec("shop", {}))
    assert "duration" in locs(spec("shop", {"replicas": 1}, duration=None))
    assert "params.kinds.0" in locs(spec("shop", {"replicas": 1, "kinds": ["DaemonSet"]}))
