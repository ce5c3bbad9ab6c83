"""`pystol watch` as a user runs it: CRDs applied with kubectl, PystolActions become jobs.

Real redis-server, pystol-sim, a Celery worker and the API (the `stack` fixture), and the
watcher as a subprocess (`python -m pystol_api.cli watch`), stopped with SIGTERM.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from pystol_api.crds import crd_dir
from pystol_worker.store.job_store import JobStore
from tests.integration.conftest import Stack, running_stack
from tests.support.pystol_processes import Process, spawn, start_beat
from tests.support.recovery_truth import assert_matches_truth, whole_again_at
from tests.support.redis_server import RedisServer, free_port

GROUP, VERSION, PLURAL = "pystol.org", "v1alpha1", "pystolactions"
CLUSTER_PLURAL = "pystolclusteractions"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
          ) -> Iterator[Stack]:
    """The integration stack, under an admin policy that lets a schedule fire every few
    seconds (the default allows once a minute, and the worker checks it again at each
    fire, so the watcher alone cannot be given a laxer one)."""
    with running_stack(tmp_path_factory.mktemp("stack"), redis_server,
                       policy={"min_schedule_period": "1s"}) as running:
        yield running


@pytest.fixture(scope="module")
def kube(stack: Stack) -> client.ApiClient:
    stack.sim.kubectl("apply", "-f", str(crd_dir()))
    stack.sim.kubectl("wait", "--for", "condition=Established", "--timeout", "30s",
                      "crd/pystolactions.pystol.org", "crd/pystolclusteractions.pystol.org",
                      "crd/clusterkopfpeerings.kopf.dev")
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    for namespace in ("team-a",):
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": namespace}})
    return api_client


@contextmanager
def watcher(stack: Stack, *args: str, name: str = "watch",
            env: dict[str, str] | None = None) -> Iterator[Process]:
    handle = start_watcher(stack, *args, name=name, env=env)
    try:
        yield handle
    finally:
        handle.stop()


def start_watcher(stack: Stack, *args: str, name: str = "watch",
                  env: dict[str, str] | None = None) -> Process:
    port = free_port()
    handle = spawn(name, [sys.executable, "-m", "pystol_api.cli", "watch", "--liveness",
                          f"http://127.0.0.1:{port}/healthz", *args],
                   {**stack.env(), **(env or {})})
    handle.liveness = f"http://127.0.0.1:{port}/healthz"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(handle.liveness, timeout=2).status_code == 200:  # type: ignore
                return handle
        except requests.RequestException:
            pass
        if handle.process.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"watcher did not start:\n{handle.tail()}")
        time.sleep(0.1)


def objects(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def action(name: str, spec: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolAction",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def cluster_action(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolClusterAction",
            "metadata": {"name": name}, "spec": spec}


def apply(stack: Stack, *manifests: dict[str, Any]) -> None:
    text = yaml.safe_dump_all(list(manifests))
    result = subprocess.run(["kubectl", "apply", "-f", "-"], input=text, env=stack.sim.env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def get(kube: client.ApiClient, name: str, namespace: str | None = "shop"
        ) -> dict[str, Any] | None:
    """A PystolAction, or with namespace None the PystolClusterAction of that name."""
    try:
        if namespace is None:
            return objects(kube).get_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL,
                                                           name)
        return objects(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                          name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def wait_for_phase(stack: Stack, kube: client.ApiClient, name: str,
                   phases: tuple[str, ...] = ("Succeeded", "Failed", "Aborted", "Cancelled"),
                   namespace: str | None = "shop", timeout: float = 60.0,
                   watchers: tuple[Process, ...] = ()) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj = None
    while time.monotonic() < deadline:
        obj = get(kube, name, namespace)
        if obj and (obj.get("status") or {}).get("phase") in phases:
            return obj
        time.sleep(0.1)
    logs = "\n".join(w.tail(60) for w in watchers)
    raise AssertionError(f"{namespace}/{name} not in {phases} after {timeout}s: {obj}\n{logs}"
                         f"\nworker:\n{stack.worker.tail()}")


def jobs_from(stack: Stack, prefix: str) -> list[Any]:
    """Every job record submitted by a custom resource whose namespace/name starts so."""
    store = JobStore(stack.redis.client())
    found, cursor = [], None
    while True:
        page = store.list(cursor=cursor, limit=200)
        found += [r for r in page.items if r.source.value == "cr"
                  and r.submitter.startswith(prefix)]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def queued_lines(handle: Process) -> list[str]:
    return [line for line in handle.output if "pystol.watcher" in line and "queued job" in line]


def test_action_runs_and_status_shows_the_result(stack: Stack,
                                                 kube: client.ApiClient) -> None:
    with watcher(stack) as handle:
        apply(stack, action("kill-one-web", {
            "action": "pod-kill",
            "target": {"namespaces": ["shop"], "labelSelector": "app=web", "mode": "fixed",
                       "value": 1},
            "params": {"gracePeriodSeconds": 0}}))
        obj = wait_for_phase(stack, kube, "kill-one-web", watchers=(handle,))
        status = obj["status"]
        assert status["phase"] == "Succeeded", status
        assert status["action"] == "pod-kill" and status["jobId"].startswith("j-")
        assert status["startedAt"] <= status["finishedAt"]
        result = status["result"]
        assert result["targetsSelected"] == result["targetsAffected"] == 1
        assert result["changes"][0].startswith("deleted Pod shop/web-")
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "Accepted": "True", "Ready": "True", "Succeeded": "True"}
        assert "pystol.org/abort-job" in obj["metadata"]["finalizers"]

        # The same job record as one submitted over HTTP, from source cr.
        record = stack.call("GET", f"/api/v1/jobs/{status['jobId']}").json()
        assert record["source"] == "cr" and record["submitter"] == "shop/kill-one-web"
        assert record["status"] == "succeeded"
        assert record["spec"]["target"]["label_selector"] == "app=web"
        # The status carries the job's recovery, and it matches the sim's truth: from the
        # kill to the replacement (the last web pod) ready.
        assert result["recoverySeconds"] == record["metrics"]["recovery_seconds"]
        [victim] = [c["target"] for c in record["result"]["changes"]]
        truth = stack.sim.truth("shop")
        killed_at = next(p["deleted"] for p in truth if p["uid"] == victim["uid"])
        assert_matches_truth(result["recoverySeconds"], killed_at,
                             whole_again_at(truth, "Deployment", "shop", "web"), "CR pod-kill")
        assert record["spec"]["idempotency_key"] == \
            f"pystolaction:{obj['metadata']['uid']}:1"

        table = stack.sim.kubectl("get", "pystolactions", "-n", "shop").stdout.splitlines()
        assert table[0].split() == ["NAME", "ACTION", "PHASE", "JOB", "AGE"]
        row = next(line.split() for line in table if line.startswith("kill-one-web"))
        assert row[1:4] == ["pod-kill", "Succeeded", status["jobId"]]
        wide = stack.sim.kubectl("get", "pa", "kill-one-web", "-n", "shop", "-o", "wide").stdout
        assert wide.splitlines()[0].split()[:7] == ["NAME", "ACTION", "PHASE", "JOB",
                                                    "AFFECTED", "RECOVERY", "MESSAGE"]

        events = stack.sim.kubectl("get", "events", "-n", "shop", "--field-selector",
                                   "involvedObject.name=kill-one-web", "-o", "json").stdout
        reasons = {e["reason"] for e in json.loads(events)["items"]}
        # The end is an Event; being queued is not (status.jobId and Accepted say it).
        assert "JobSucceeded" in reasons and "JobQueued" not in reasons, reasons

        liveness = requests.get(handle.liveness, timeout=5)  # type: ignore[attr-defined]
        assert liveness.status_code == 200 and "jobsQueued" in liveness.json()


def test_invalid_cr_fails_with_the_reason_and_a_fixed_spec_runs(stack: Stack,
                                                               kube: client.ApiClient
                                                               ) -> None:
    bad = action("bad-kill", {
        "action": "pod-kill", "target": {"namespaces": ["kube-system"], "mode": "one"},
        "params": {"gracePeriodSeconds": -5}})
    with watcher(stack) as handle:
        apply(stack, bad)
        obj = wait_for_phase(stack, kube, "bad-kill", watchers=(handle,))
        status = obj["status"]
        assert status["phase"] == "Failed" and not status.get("jobId")
        assert "spec.target.namespaces[0]" in status["message"]
        assert "protected" in status["message"]
        assert "spec.params.gracePeriodSeconds" in status["message"]
        assert {c["reason"] for c in status["conditions"]} == {"InvalidSpec"}
        assert jobs_from(stack, "shop/bad-kill") == []
        time.sleep(1.0)  # no crash loop: it stays failed, the watcher keeps running
        assert handle.process.poll() is None
        assert not any("Traceback" in line for line in handle.output), handle.tail()
        assert get(kube, "bad-kill")["status"]["phase"] == "Failed"  # type: ignore[index]

        # Fixing the spec (a new generation) runs it.
        bad["spec"] = {"action": "pod-kill", "dryRun": True,
                       "target": {"namespaces": ["shop"], "labelSelector": "app=web"}}
        apply(stack, bad)
        obj = wait_for_phase(stack, kube, "bad-kill", phases=("Succeeded",),
                             watchers=(handle,))
        assert obj["status"]["observedGeneration"] == 2
        assert len(jobs_from(stack, "shop/bad-kill")) == 1


def test_cr_is_refused_while_chaos_is_halted(stack: Stack, kube: client.ApiClient) -> None:
    with watcher(stack) as handle:
        assert stack.call("POST", "/api/v1/halt", json={"reason": "game day over"}).ok
        try:
            apply(stack, action("while-halted", {
                "action": "pod-kill", "dryRun": True, "target": {"namespaces": ["shop"]}}))
            obj = wait_for_phase(stack, kube, "while-halted", watchers=(handle,))
        finally:
            stack.call("DELETE", "/api/v1/halt")
        assert obj["status"]["phase"] == "Failed"
        assert "chaos is halted" in obj["status"]["message"]
        assert "game day over" in obj["status"]["message"]
        assert jobs_from(stack, "shop/while-halted") == []


def test_original_pystol_shape_runs(stack: Stack, kube: client.ApiClient) -> None:
    killpods = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolAction",
        "metadata": {"name": "pystol-action-pystol-actions-killpods-x1y2z",
                     "namespace": "shop"},
        "spec": {"namespace": "pystol", "collection": "actions", "role": "killpods",
                 "source": "", "action_state": "PystolActionCreating",
                 "workflow_state": "PystolOperatorWaitingAction", "action_stderr": "{}",
                 "action_stdout": "{}",
                 "extra_vars": json.dumps({"pystol_killpods_namespace": "shop",
                                           "pystol_killpods_distribution": "poisson",
                                           "pystol_killpods_amount": 2,
                                           "pystol_killpods_duration": "2s"})}}
    pingtest = action("pystol-action-pystol-actions-pingtest-q7w8e", {
        "collection": "actions", "role": "pingtest", "extra_vars": json.dumps({
            "pystol_pingtest_url": f"{stack.url}/healthz", "pystol_pingtest_count": 2})})
    with watcher(stack) as handle:
        apply(stack, killpods, pingtest)
        obj = wait_for_phase(stack, kube, "pystol-action-pystol-actions-killpods-x1y2z",
                             watchers=(handle,))
        status = obj["status"]
        assert status["phase"] == "Succeeded", status
        assert status["action"] == "pod-kill"
        assert status["result"]["targetsAffected"] == 2
        record = stack.call("GET", f"/api/v1/jobs/{status['jobId']}").json()
        assert record["spec"]["params"] == {"distribution": "poisson"}
        assert record["spec"]["target"]["field_selector"] == "status.phase=Running"

        probe = wait_for_phase(stack, kube, "pystol-action-pystol-actions-pingtest-q7w8e",
                               watchers=(handle,))["status"]
        assert probe["phase"] == "Succeeded" and probe["action"] == "http-probe", probe


def node(stack: Stack, name: str) -> dict[str, Any]:
    return json.loads(stack.sim.kubectl("get", "node", name, "-o", "json").stdout)


# -- a custom resource acts only in its own namespace (issue 12) -----------------------------


def pods_of(stack: Stack, namespace: str) -> dict[str, Any]:
    """Each pod of a namespace by uid, with what chaos would change: untouched means equal."""
    core, _ = stack.kube_clients()
    return {pod.metadata.uid: (pod.metadata.name, pod.metadata.deletion_timestamp,
                               pod.metadata.labels, pod.spec.node_name,
                               [(c.name, c.image) for c in pod.spec.containers],
                               [c.restart_count for c in pod.status.container_statuses or ()])
            for pod in core.list_namespaced_pod(namespace).items}


def test_a_team_cr_cannot_make_pystol_act_in_another_namespace(stack: Stack,
                                                               kube: client.ApiClient
                                                               ) -> None:
    before = pods_of(stack, "payments")
    assert before
    with watcher(stack) as handle:
        apply(stack,
              action("steal", {"action": "pod-kill", "params": {"gracePeriodSeconds": 0},
                               "target": {"namespaces": ["payments"], "mode": "all"}},
                     "team-a"),
              action("steal-original", {"collection": "actions", "role": "killpods",
                                        "extra_vars": json.dumps({
                                            "pystol_killpods_namespace": "payments",
                                            "pystol_killpods_amount": 1})}, "team-a"),
              action("drain", {"action": "node-drain", "dryRun": True,
                               "target": {"names": ["worker-b"]}}, "team-a"))
        for name, path in (("steal", "spec.target.namespaces[0]"),
                           ("steal-original", "spec.extra_vars.pystol_killpods_namespace")):
            status = wait_for_phase(stack, kube, name, namespace="team-a",
                                    watchers=(handle,))["status"]
            assert status["phase"] == "Failed" and not status.get("jobId"), status
            assert f"{path}: team-a/{name} may not run chaos in namespace 'payments'" \
                in status["message"], status["message"]
            assert {c["reason"] for c in status["conditions"]} == {"Forbidden"}
            assert "Forbidden" in stack.event_reasons("team-a", name)
        drain = wait_for_phase(stack, kube, "drain", namespace="team-a",
                               watchers=(handle,))["status"]
        assert drain["phase"] == "Failed", drain
        assert {c["reason"] for c in drain["conditions"]} == {"Forbidden"}
        assert "spec.action: " in drain["message"]
        assert "PystolClusterAction" in drain["message"]
        # Nothing was stored, queued or run: no job, the victims' pods as they were.
        assert jobs_from(stack, "team-a/") == []
        time.sleep(1.0)
        assert pods_of(stack, "payments") == before
        assert not node(stack, "worker-b")["spec"].get("unschedulable")
        assert not any("Traceback" in line for line in handle.output), handle.tail()


def test_node_level_chaos_runs_as_a_cluster_action(stack: Stack, kube: client.ApiClient
                                                   ) -> None:
    with watcher(stack) as handle:
        apply(stack, cluster_action("drain-b", {"action": "node-drain", "dryRun": True,
                                                "target": {"names": ["worker-b"]}}))
        obj = wait_for_phase(stack, kube, "drain-b", namespace=None, watchers=(handle,))
        status = obj["status"]
        assert status["phase"] == "Succeeded", status
        assert status["action"] == "node-drain" and status["jobId"].startswith("j-")
        record = JobStore(stack.redis.client()).get(status["jobId"], with_timeline=False)
        assert record.source.value == "cr" and record.submitter == "drain-b"
        assert record.actor is not None and record.actor.kind.value == "custom-resource"
        assert record.actor.resource_kind == "PystolClusterAction"
        assert record.actor.uid == obj["metadata"]["uid"]
        assert record.grant is not None and record.grant.cluster
        assert record.spec.idempotency_key == \
            f"pystolclusteraction:{obj['metadata']['uid']}:1"
        assert not node(stack, "worker-b")["spec"].get("unschedulable")  # a dry run
        table = stack.sim.kubectl("get", "pca").stdout.splitlines()
        assert table[0].split() == ["NAME", "ACTION", "PHASE", "JOB", "AGE"]
        row = next(line.split() for line in table if line.startswith("drain-b"))
        assert row[1:4] == ["node-drain", "Succeeded", status["jobId"]]


def test_a_job_id_the_user_writes_into_status_is_ignored_and_reported(
        stack: Stack, kube: client.ApiClient) -> None:
    url = f"{stack.url}/healthz"
    # Two jobs of another namespace: one ended (its reason and result are not the
    # attacker's to read), one running (not the attacker's to cancel).
    ended = stack.submit({"action": "http-probe", "target": {"namespaces": ["payments"]},
                          "params": {"url": f"{stack.url}/payments-only", "count": 2,
                                     "interval": "0.1s"}})
    ended = stack.wait_for_job(ended["id"])
    assert ended["status"] == "failed" and ended["reason"], ended
    running = stack.submit({"action": "http-probe", "target": {"namespaces": ["payments"]},
                            "params": {"url": url, "count": 400, "interval": "0.25s"}})
    api = objects(kube)

    def forge(status: dict[str, Any]) -> None:
        # Whoever may edit their PystolAction's status subresource can write this.
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, "team-a", PLURAL, "mine", {"status": status},
            _content_type="application/merge-patch+json")

    def status_of() -> dict[str, Any]:
        return (get(kube, "mine", "team-a") or {}).get("status") or {}

    try:
        with watcher(stack, name="watch-own") as handle:
            apply(stack, action("mine", {"action": "http-probe", "target": {},
                                         "params": {"url": url, "count": 1}}, "team-a"))
            own = wait_for_phase(stack, kube, "mine", namespace="team-a",
                                 phases=("Succeeded",), watchers=(handle,))["status"]
        own_record = JobStore(stack.redis.client()).get(own["jobId"], with_timeline=False)
        assert own_record.spec.target.namespaces == ["team-a"]  # a URL action: its own

        # Pointed at the ended job while the watcher is away: on resume the watcher
        # neither follows it nor copies its status; it says so.
        forge({"jobId": ended["id"], "phase": "Running"})
        with watcher(stack, name="watch-resumed") as handle:
            stack.sim.wait_for(lambda: "ForeignJobId" in stack.event_reasons("team-a", "mine"),
                               timeout=30)
            status = stack.sim.wait_for(
                lambda: status_of().get("jobId") == own["jobId"] and "JobIdTrusted" in {
                    c["type"] for c in status_of().get("conditions") or ()} and status_of(),
                timeout=30)
            assert status["phase"] == "Succeeded" and status["message"] == own["message"]
            assert status.get("result") == own.get("result")
            assert (status["startedAt"], status["finishedAt"]) == (own["startedAt"],
                                                                   own["finishedAt"])
            assert ended["reason"] not in json.dumps(status)
            trusted = {c["type"]: c for c in status["conditions"]}["JobIdTrusted"]
            assert trusted["status"] == "False" and trusted["reason"] == "ForeignJobId"
            assert ended["id"] in trusted["message"]

            # Pointed at the running job, then deleted: that job is not aborted.
            forge({"jobId": running["id"], "phase": "Succeeded"})
            stack.sim.kubectl("delete", "pystolaction", "mine", "-n", "team-a",
                              "--timeout=30s")
            assert get(kube, "mine", "team-a") is None
            warnings = [line for line in handle.output
                        if "ForeignJobId" in line or "did not create" in line]
            assert any(running["id"] in line for line in warnings), handle.tail()
        victim = stack.call("GET", f"/api/v1/jobs/{running['id']}").json()
        assert victim["status"] in ("queued", "running"), victim
        assert not victim.get("cancel_requested"), victim
    finally:
        stack.call("POST", f"/api/v1/jobs/{running['id']}/cancel")


def test_deleting_a_running_cr_aborts_and_reverts_before_it_goes(stack: Stack,
                                                                 kube: client.ApiClient
                                                                 ) -> None:
    # Node-level chaos by custom resource is a cluster-scoped PystolClusterAction.
    with watcher(stack) as handle:
        apply(stack, cluster_action("cordon-a", {"action": "node-cordon", "duration": "30s",
                                                 "target": {"names": ["worker-a"]}}))
        obj = wait_for_phase(stack, kube, "cordon-a", phases=("Running",), namespace=None,
                             watchers=(handle,))
        job_id = obj["status"]["jobId"]
        stack.sim.wait_for(lambda: node(stack, "worker-a")["spec"].get("unschedulable"),
                           timeout=20)

        started = time.monotonic()
        stack.sim.kubectl("delete", "pystolclusteraction", "cordon-a", "--wait=false")
        seen_terminating = False
        while (obj := get(kube, "cordon-a", None)) is not None:
            seen_terminating |= bool(obj["metadata"].get("deletionTimestamp"))
            assert time.monotonic() - started < 25, f"not gone: {obj}\n{handle.tail()}"
            time.sleep(0.02)
        gone_after = time.monotonic() - started
        # The moment the object is gone, the fault is already reverted and the job ended.
        assert not node(stack, "worker-a")["spec"].get("unschedulable")
        record = stack.call("GET", f"/api/v1/jobs/{job_id}").json()
        assert record["status"] == "aborted", record
        assert "deletion of PystolClusterAction cordon-a" in record["reason"]
        assert all(change["reverted_at"] for change in record["result"]["changes"])
        assert seen_terminating or gone_after < 0.1
        assert any("releasing the finalizer" in line for line in handle.output)


def test_restart_in_the_middle_of_a_burst_queues_each_cr_exactly_once(
        stack: Stack, kube: client.ApiClient) -> None:
    total, restart_at = 200, 70
    created: list[str] = []
    api = objects(config.new_client_from_config(config_file=str(stack.sim.kubeconfig)))
    handle = start_watcher(stack, name="watch-1")
    try:
        def create(index: int) -> None:
            name = f"burst-{index:03d}"
            # A PystolAction acts in its own namespace: the burst's are in shop, by name.
            api.create_namespaced_custom_object(GROUP, VERSION, "shop", PLURAL, action(name, {
                "action": "pod-kill", "dryRun": True,
                "target": {"namespaces": ["shop"], "labelSelector": "app=web"}}))
            created.append(name)

        for index in range(restart_at):
            create(index)
        # Restart while the watcher is busy with the burst; creation goes on meanwhile.
        handle.process.terminate()
        rest = threading.Thread(target=lambda: [create(i) for i in range(restart_at, total)])
        rest.start()
        handle.process.wait(30)
        first_output = list(handle.output)
        handle = start_watcher(stack, name="watch-2")
        rest.join(120)
        assert len(created) == total

        deadline = time.monotonic() + 120
        while True:
            items = [o for o in api.list_namespaced_custom_object(GROUP, VERSION, "shop",
                                                                  PLURAL)["items"]
                     if o["metadata"]["name"].startswith("burst-")]
            done = [o for o in items if (o.get("status") or {}).get("phase") == "Succeeded"]
            if len(done) == total:
                break
            assert time.monotonic() < deadline, (f"{len(done)}/{total} succeeded\n"
                                                 f"{handle.tail()}")
            time.sleep(0.5)
    finally:
        handle.stop()
    jobs = jobs_from(stack, "shop/burst-")
    assert len(jobs) == total
    assert len({record.submitter for record in jobs}) == total
    assert {o["status"]["jobId"] for o in items} == {record.id for record in jobs}
    assert all(record.status.value == "succeeded" for record in jobs)
    # Both watchers queued part of the burst.
    assert queued_lines(Process("old", handle.process, first_output))
    assert queued_lines(handle)


def resumed(handle: Process) -> int:
    return sum("Resuming operations" in line for line in handle.output)


def test_two_watchers_with_peering_only_one_acts(stack: Stack, kube: client.ApiClient
                                                 ) -> None:
    def cr(index: int) -> dict[str, Any]:
        return action(f"peer-{index:02d}", {
            "action": "pod-kill", "dryRun": True,
            "target": {"namespaces": ["shop"], "labelSelector": "app=web"}})

    with watcher(stack, "--priority", "10", name="watch-low") as low:
        high = start_watcher(stack, "--priority", "20", name="watch-high")
        try:
            stack.sim.wait_for(lambda: any("Pausing operations in favour of" in line
                                           for line in low.output), timeout=30)
            apply(stack, *(cr(i) for i in range(20)))
            for i in range(20):
                wait_for_phase(stack, kube, f"peer-{i:02d}", phases=("Succeeded",),
                               watchers=(low, high))
            assert len(queued_lines(high)) == 20
            assert queued_lines(low) == []
            resumed_before = resumed(low)
        finally:
            high.stop()
        # The active watcher went away cleanly: the other one takes over.
        stack.sim.wait_for(lambda: resumed(low) > resumed_before, timeout=30)
        apply(stack, *(cr(i) for i in range(20, 25)))
        for i in range(20, 25):
            wait_for_phase(stack, kube, f"peer-{i:02d}", phases=("Succeeded",),
                           watchers=(low,))
        assert len(queued_lines(low)) == 5
    jobs = jobs_from(stack, "shop/peer-")
    assert len(jobs) == 25 and len({record.submitter for record in jobs}) == 25



def test_schedule_runs_on_beat_and_follows_its_object(stack: Stack, kube: client.ApiClient
                                                      ) -> None:
    from pystol_worker.core.settings import Settings
    from pystol_worker.schedules import ScheduleStore

    store = ScheduleStore(stack.redis.client(), Settings(redis_url=stack.redis.url))
    api = objects(kube)

    def schedule() -> dict[str, Any]:
        return api.get_namespaced_custom_object(GROUP, VERSION, "shop", "pystolschedules",
                                                "every-2s")

    def status_where(predicate: Any, timeout: float = 45.0) -> dict[str, Any]:
        return stack.sim.wait_for(lambda: predicate(schedule().get("status") or {})
                                  and schedule()["status"], timeout=timeout, interval=0.2)

    beat = start_beat(stack.env())
    try:
        with watcher(stack) as handle:  # the module's policy allows a 2s interval
            apply(stack, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolSchedule",
                "metadata": {"name": "every-2s", "namespace": "shop"},
                "spec": {"interval": "2s", "concurrencyPolicy": "Forbid", "historyLimit": 5,
                         "template": {"action": "pod-kill", "dryRun": True, "target": {
                             "namespaces": ["shop"], "labelSelector": "app=web"}}}},
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolSchedule",
                 "metadata": {"name": "bad-cron", "namespace": "shop"},
                 "spec": {"schedule": "61 * * * *", "template": {
                     "action": "pod-kill", "target": {"namespaces": ["kube-system"]}}}})
            status = status_where(lambda s: s.get("phase") == "Active")
            assert status["scheduleId"] == "cr.shop.every-2s"
            assert status["nextRunAt"] and status["message"] == "every 2s"
            record = store.get("cr.shop.every-2s")
            assert record.source.value == "cr" and record.submitter == "shop/every-2s"
            assert record.spec.concurrency_policy.value == "Forbid"

            # The two objects are handled independently: wait for the second one's status.
            bad = stack.sim.wait_for(
                lambda: (api.get_namespaced_custom_object(
                    GROUP, VERSION, "shop", "pystolschedules", "bad-cron").get("status") or {}),
                timeout=45.0, interval=0.2)
            assert bad["phase"] == "Failed"
            assert "spec.schedule: invalid cron expression" in bad["message"]
            assert not store.exists("cr.shop.bad-cron")

            # Beat fires it; the timer puts the runs in the status.
            status = status_where(lambda s: s.get("lastJobId") and s.get("recentRuns"))
            assert status["recentRuns"][0]["outcome"] in ("started", "skipped")
            job = stack.wait_for_job(status["lastJobId"])
            assert job["source"] == "schedule" and job["status"] == "succeeded", job
            table = stack.sim.kubectl("get", "pystolschedules", "-n", "shop").stdout
            assert table.splitlines()[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND",
                                                     "PHASE", "LAST", "RUN", "NEXT", "RUN",
                                                     "AGE"]

            # Suspending the object pauses the schedule.
            stack.sim.kubectl("patch", "pystolschedule", "every-2s", "-n", "shop", "--type",
                              "merge", "-p", '{"spec": {"suspend": true}}')
            status_where(lambda s: s.get("phase") == "Suspended", timeout=20)
            assert store.get("cr.shop.every-2s").spec.paused

            # Deleted through the API behind the watcher's back: the timer puts it back.
            store.delete("cr.shop.every-2s")
            stack.sim.wait_for(lambda: store.exists("cr.shop.every-2s"), timeout=30)
            assert store.get("cr.shop.every-2s").spec.paused

            # Deleting the object removes the schedule.
            stack.sim.kubectl("delete", "pystolschedule", "every-2s", "-n", "shop")
            assert not store.exists("cr.shop.every-2s")
            assert handle.process.poll() is None
    finally:
        beat.stop()


# -- the confused deputy by custom resource: no command, no image, no exec output (issue 12) --

#: What a stolen service-account token looks like: it must show up nowhere Pystol writes.
STOLEN = "eyJhbGciOiJSUzI1NiJ9.team-a-must-never-read-this"
#: The sim prints this annotation's text on stdout and stderr of every exec in the pod, as a
#: container's own shell profile or `kill` wrapper could.
EXEC_OUTPUT = "sim.pystol.org/exec-output"
READ_TOKEN = ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token >&2; exit 7"]


@pytest.fixture(scope="module")
def team_app(stack: Stack, kube: client.ApiClient) -> str:
    """Deployment `app` in team-a (2 pods, app=team-app) whose exec'd processes print
    STOLEN; its label selector."""
    core, apps = stack.kube_clients()
    labels = {"app": "team-app"}
    apps.create_namespaced_deployment("team-a", {
        "metadata": {"name": "app"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels, "annotations": {
                "sim.pystol.org/start-seconds": "0.5", "sim.pystol.org/ready-seconds": "1",
                EXEC_OUTPUT: STOLEN}},
            "spec": {"containers": [{"name": "app", "image": "team-a/app:1"}]}}}})
    stack.sim.wait_for(lambda: [p for p in core.list_namespaced_pod(
        "team-a", label_selector="app=team-app").items if p.status.container_statuses
        and all(c.ready for c in p.status.container_statuses)][1:], timeout=30)
    return "app=team-app"


def test_a_team_cr_can_neither_run_a_command_nor_choose_an_image(
        stack: Stack, kube: client.ApiClient, team_app: str) -> None:
    before = pods_of(stack, "team-a")
    target = {"namespaces": ["team-a"], "labelSelector": team_app, "mode": "all"}
    with watcher(stack) as handle:
        apply(stack,
              action("shell", {"action": "container-kill", "target": target,
                               "params": {"command": READ_TOKEN}}, "team-a"),
              action("own-image", {"action": "pod-failure", "duration": "30s",
                                   "target": target,
                                   "params": {"image": "attacker/shell:1"}}, "team-a"))
        shell = wait_for_phase(stack, kube, "shell", namespace="team-a",
                               watchers=(handle,))["status"]
        image = wait_for_phase(stack, kube, "own-image", namespace="team-a",
                               watchers=(handle,))["status"]
    assert shell["phase"] == "Failed" and not shell.get("jobId"), shell
    assert {c["reason"] for c in shell["conditions"]} == {"InvalidSpec"}
    assert "spec.params.command: container-kill takes a `signal`" in shell["message"]
    assert image["phase"] == "Failed" and not image.get("jobId"), image
    assert {c["reason"] for c in image["conditions"]} == {"PolicyRefused"}
    assert "spec.params.image: " in image["message"]
    assert "attacker/shell:1" in image["message"]
    # Nothing stored, so nothing queued or run: same containers, restart counts, images.
    assert jobs_from(stack, "team-a/shell") == jobs_from(stack, "team-a/own-image") == []
    assert pods_of(stack, "team-a") == before


def test_what_an_exec_prints_is_copied_nowhere(stack: Stack, kube: client.ApiClient,
                                               team_app: str) -> None:
    core, _ = stack.kube_clients()
    with watcher(stack) as handle:
        apply(stack, action("kill-own", {"action": "container-kill", "params": {
            "signal": "SIGKILL"}, "target": {"namespaces": ["team-a"],
                                             "labelSelector": team_app, "mode": "all"}},
            "team-a"))
        obj = wait_for_phase(stack, kube, "kill-own", namespace="team-a", watchers=(handle,))
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["targetsAffected"] == 2  # the kills happened, the execs printed
    record = stack.call("GET", f"/api/v1/jobs/{status['jobId']}").json()
    assert [pod["restart_count_after"] - pod["restart_count_before"]
            for pod in record["result"]["output"]["pods"]] == [1, 1]
    events = [(e.reason, e.message) for e in core.list_namespaced_event("team-a").items]
    assert "PystolChaos" in {reason for reason, _ in events}
    for where, text in (("the CR", json.dumps(obj)), ("the Events", json.dumps(events)),
                        ("the job record", json.dumps(record)),
                        ("the worker's log", "\n".join(stack.worker.output)),
                        ("the watcher's log", "\n".join(handle.output))):
        assert STOLEN not in text, where


# -- every operation a custom resource causes is audited once, as that object (issue 12) --


def audit_of(stack: Stack, actor: str, operation: str) -> list[dict[str, Any]]:
    """The audit records of one actor and operation family, oldest first, read as an admin."""
    response = stack.call("GET", "/api/v1/audit", params={"actor": actor,
                                                          "operation": operation})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["items"]))


def test_a_crs_job_is_audited_once_as_the_object_and_so_is_its_cancel(
        stack: Stack, kube: client.ApiClient) -> None:
    name, when = "audited", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = action(name, {"action": "http-probe", "target": {}, "params": {
        "url": f"{stack.url}/healthz", "count": 400, "interval": "0.25s"}}, "team-a")
    # What a real API server keeps for `--field-manager alice-ci` (the sim keeps it as sent).
    body["metadata"]["managedFields"] = [{
        "manager": "alice-ci", "operation": "Update", "apiVersion": f"{GROUP}/{VERSION}",
        "time": when, "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
    with watcher(stack) as handle:
        created = objects(kube).create_namespaced_custom_object(
            GROUP, VERSION, "team-a", PLURAL, body, field_manager="alice-ci")
        job_id = wait_for_phase(stack, kube, name, phases=("Running",), namespace="team-a",
                                watchers=(handle,))["status"]["jobId"]
        stack.sim.kubectl("delete", "pystolaction", name, "-n", "team-a", "--timeout=30s")
    submits = audit_of(stack, f"team-a/{name}", "job.submit")
    cancels = audit_of(stack, f"team-a/{name}", "job.cancel")
    assert [(r["outcome"], r["job_id"]) for r in submits] == [("ok", job_id)], \
        (stack.call("GET", "/api/v1/audit").json(), handle.tail())
    assert [(r["outcome"], r["job_id"]) for r in cancels] == [("ok", job_id)], cancels
    for record in submits + cancels:
        assert record["actor"] == {
            **record["actor"], "kind": "custom-resource", "name": f"team-a/{name}",
            "uid": created["metadata"]["uid"], "resource_kind": "PystolAction",
            "manager": "alice-ci"}
        assert record["namespaces"] == ["team-a"]
    assert f"deletion of PystolAction team-a/{name}" in cancels[0]["detail"]


def test_a_pystolschedule_is_audited_at_create_update_and_delete(
        stack: Stack, kube: client.ApiClient) -> None:
    api, name = objects(kube), "audited-nightly"
    with watcher(stack) as handle:
        created = api.create_namespaced_custom_object(
            GROUP, VERSION, "team-a", "pystolschedules", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolSchedule",
                "metadata": {"name": name, "namespace": "team-a"},
                "spec": {"interval": "1h", "template": {"action": "pod-kill", "dryRun": True,
                                                        "target": {"namespaces": ["team-a"]}}}})

        def status_at(generation: int) -> dict[str, Any] | None:
            status = api.get_namespaced_custom_object(
                GROUP, VERSION, "team-a", "pystolschedules", name).get("status") or {}
            return status if status.get("observedGeneration") == generation else None

        stack.sim.wait_for(lambda: status_at(1), timeout=30)
        stack.sim.kubectl("patch", "pystolschedule", name, "-n", "team-a", "--type", "merge",
                          "-p", '{"spec": {"interval": "2h"}}')
        assert stack.sim.wait_for(lambda: status_at(2), timeout=30)["phase"] == "Active"
        stack.sim.kubectl("delete", "pystolschedule", name, "-n", "team-a", "--timeout=30s")
        assert handle.process.poll() is None
    records = audit_of(stack, f"team-a/{name}", "schedule")
    assert [(r["operation"], r["outcome"]) for r in records] == [
        ("schedule.create", "ok"), ("schedule.update", "ok"), ("schedule.delete", "ok")], records
    schedule_id = f"cr.team-a.{name}"
    assert {r["schedule_id"] for r in records} == {schedule_id}
    assert {(r["actor"]["kind"], r["actor"]["uid"]) for r in records} == {
        ("custom-resource", created["metadata"]["uid"])}
