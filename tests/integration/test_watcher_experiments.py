"""PystolExperiment through `pystol watch` as a user runs it: CRDs applied with kubectl,
the watcher as a subprocess, a real redis-server, pystol-sim and a Celery worker (the
`stack` fixture, shared with test_watcher.py's helpers).

First the attack: a PystolExperiment in `team-a` whose step targets `payments` ends
Failed with a Forbidden condition naming the field, and nothing is stored or run. Then a
dry-run experiment in `shop` runs to its end and its status shows the verdict, the score
and the steps, as `kubectl get pexp` prints them.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from pystol_worker.experiments.store import ExperimentStore
from tests.integration.conftest import Stack
from tests.integration.test_watcher import apply, kube, watcher  # noqa: F401 (fixture)
from tests.support.pystol_processes import Process

GROUP, VERSION, PLURAL = "pystol.org", "v1alpha1", "pystolexperiments"
TERMINAL = ("Completed", "Aborted", "Skipped", "Failed")


def experiment(name: str, namespace: str, target_namespace: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolExperiment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"title": "web survives", "method": [
                {"type": "action", "name": "kill-one", "job": {
                    "action": "pod-kill", "dryRun": True,
                    "target": {"namespaces": [target_namespace], "labelSelector": "app=web",
                               "mode": "fixed", "value": 1}}}]}}


def get(kube_client: client.ApiClient, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = client.CustomObjectsApi(kube_client) \
            .get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return found
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def wait_for(stack: Stack, kube_client: client.ApiClient, name: str, namespace: str,
             handle: Process, phases: tuple[str, ...] = TERMINAL,
             timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj = None
    while time.monotonic() < deadline:
        obj = get(kube_client, name, namespace)
        if obj and (obj.get("status") or {}).get("phase") in phases:
            return obj
        time.sleep(0.2)
    raise AssertionError(f"{namespace}/{name} not in {phases} after {timeout}s: {obj}\n"
                         f"{handle.tail(80)}\nworker:\n{stack.worker.tail()}")


def test_experiment_crds_are_established(stack: Stack, kube: client.ApiClient) -> None:  # noqa: F811
    stack.sim.kubectl("apply", "-f", str(_crd_dir()))
    stack.sim.kubectl("wait", "--for", "condition=Established", "--timeout", "30s",
                      "crd/pystolexperiments.pystol.org",
                      "crd/pystolclusterexperiments.pystol.org")


def _crd_dir() -> Any:
    from pystol_api.crds import crd_dir

    return crd_dir()


def test_a_team_experiment_cannot_act_in_another_namespace(
        stack: Stack, kube: client.ApiClient) -> None:  # noqa: F811
    stack.sim.kubectl("apply", "-f", str(_crd_dir()))
    with watcher(stack) as handle:
        apply(stack, experiment("steal", "team-a", "payments"))
        status = wait_for(stack, kube, "steal", "team-a", handle)["status"]
        assert status["phase"] == "Failed", status
        assert {c["reason"] for c in status["conditions"]} == {"Forbidden"}
        assert "spec.method[0].job.target.namespaces[0]" in status["message"], status
        assert not status.get("runId")
        store = ExperimentStore(stack.redis.client())
        assert store.run_ids(None, None, 10) == []
        assert not any("Traceback" in line for line in handle.output), handle.tail()


def test_a_dry_run_experiment_runs_and_its_status_shows_the_verdict(
        stack: Stack, kube: client.ApiClient) -> None:  # noqa: F811
    stack.sim.kubectl("apply", "-f", str(_crd_dir()))
    with watcher(stack) as handle:
        apply(stack, experiment("web-survives", "shop", "shop"))
        obj = wait_for(stack, kube, "web-survives", "shop", handle,
                       phases=("Completed", "Aborted", "Skipped"))
        status = obj["status"]
        assert status["runId"].startswith("x-"), status
        assert status["verdict"] in ("passed", "failed", "deviated", "aborted", "skipped")
        assert [step["path"] for step in status["steps"]
                if step["path"].startswith("method")] == ["method[0]"]
        run = ExperimentStore(stack.redis.client()).get_run(status["runId"])
        assert run.actor is not None and run.actor.uid == obj["metadata"]["uid"]
        assert run.verdict is not None and run.verdict.value == status["verdict"]
        printed = subprocess.run(["kubectl", "get", "pexp", "-n", "shop", "web-survives"],
                                 env=stack.sim.env(), capture_output=True, text=True,
                                 timeout=30)
        header = printed.stdout.splitlines()[0].split()
        assert header[:5] == ["NAME", "PHASE", "VERDICT", "SCORE", "RUN"], printed.stdout
        assert status["runId"] in printed.stdout


def test_pystol_run_file_waits_for_the_verdict_and_writes_the_journal(
        stack: Stack, tmp_path: Any) -> None:
    """The command line against the real API: a YAML experiment file is stored and run,
    `--wait` exits with its verdict, and the Chaos Toolkit journal of the run is written."""
    import json
    import sys

    path = tmp_path / "experiment.yaml"
    path.write_text("name: cli-survives\n"
                    "method:\n"
                    "  - type: action\n"
                    "    name: kill-one\n"
                    "    job:\n"
                    "      action: pod-kill\n"
                    "      dry_run: true\n"
                    "      target: {namespaces: [shop], label_selector: app=web}\n")
    run = subprocess.run([sys.executable, "-m", "pystol_api.cli", "run", "-f", str(path),
                          "--wait", "-o", "json"], env={**stack.env()}, capture_output=True,
                         text=True, timeout=120)
    record = json.loads(run.stdout)
    expected = {"passed": 0, "failed": 1, "deviated": 1, "skipped": 3, "aborted": 4}
    assert run.returncode == expected[record["verdict"]], run.stderr
    assert record["experiment"] == "cli-survives" and record["status"] in (
        "completed", "aborted", "skipped")
    journal = tmp_path / "journal.json"
    shown = subprocess.run([sys.executable, "-m", "pystol_api.cli", "jobs", "show",
                            record["id"], "--journal", str(journal)], env={**stack.env()},
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(journal.read_text())
    assert document["chaoslib-version"] and "steady_states" in document


def test_deleting_a_running_experiment_cancels_its_run_before_it_goes(
        stack: Stack, kube: client.ApiClient) -> None:  # noqa: F811
    stack.sim.kubectl("apply", "-f", str(_crd_dir()))
    manifest = experiment("long-wait", "shop", "shop")
    manifest["spec"]["method"].append({"type": "wait", "name": "settle", "duration": "5m"})
    with watcher(stack) as handle:
        apply(stack, manifest)
        obj = wait_for(stack, kube, "long-wait", "shop", handle, phases=("Running",))
        run_id = obj["status"]["runId"]
        store = ExperimentStore(stack.redis.client())
        deadline = time.monotonic() + 60
        while not any(step.path == "method[1]" and step.status.value == "running"
                      for step in store.get_run(run_id).steps):
            assert time.monotonic() < deadline, store.get_run(run_id)
            time.sleep(0.2)
        client.CustomObjectsApi(kube).delete_namespaced_custom_object(
            GROUP, VERSION, "shop", PLURAL, "long-wait")
        deadline = time.monotonic() + 60
        while get(kube, "long-wait", "shop") is not None:
            assert time.monotonic() < deadline, handle.tail(60)
            time.sleep(0.2)
        # The object went only once its run had ended (cancelled, rollbacks done).
        run = store.get_run(run_id)
        assert run.status.terminal, run
        assert run.status.value in ("cancelled", "aborted"), run.status


def test_an_edit_cancels_the_earlier_run_and_a_refused_edit_too(
        stack: Stack, kube: client.ApiClient) -> None:  # noqa: F811
    """Security review M2: after an edit two runs of one object went on side by side, and
    after a refused edit `status.runId` was cleared, so the delete cancelled nothing."""
    stack.sim.kubectl("apply", "-f", str(_crd_dir()))
    manifest = experiment("edited", "shop", "shop")
    manifest["spec"]["method"].append({"type": "wait", "name": "settle", "duration": "5m"})
    store = ExperimentStore(stack.redis.client())

    def ended(run_id: str) -> bool:
        return store.get_run(run_id).status.terminal

    def wait(condition: Any, what: str, handle: Process) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, f"{what}\n{handle.tail(60)}"
            time.sleep(0.2)

    with watcher(stack) as handle:
        apply(stack, manifest)
        first = wait_for(stack, kube, "edited", "shop", handle,
                         phases=("Running",))["status"]["runId"]
        manifest["spec"]["title"] = "web survives, edited"
        apply(stack, manifest)
        wait(lambda: ((get(kube, "edited", "shop") or {}).get("status") or {})
             .get("runId") not in (None, first), "no run of generation 2", handle)
        second = (get(kube, "edited", "shop") or {})["status"]["runId"]
        wait(lambda: ended(first), "generation 1's run still going", handle)
        assert store.get_run(first).status.value in ("cancelled", "aborted")

        manifest["spec"]["method"][0]["job"]["target"]["namespaces"] = ["payments"]
        apply(stack, manifest)
        status = wait_for(stack, kube, "edited", "shop", handle, phases=("Failed",))["status"]
        assert {c["reason"] for c in status["conditions"]} == {"Forbidden"}
        wait(lambda: ended(second), "generation 2's run outlived a refused edit", handle)
