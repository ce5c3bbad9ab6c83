"""Rehearsal: an experiment run on a private copy of a cluster predicts what the real run
then does (design §6, "Within 10 %").

The cluster is the hand-written kubectl List of `test_sim_snapshot_rehearsal.py` (pods
whose timestamps say a "quick" workload takes 4 + 2 s to come back and a "slow" one
9 + 6 s), cut down to three workloads, with a PodDisruptionBudget asking for all 3 pods
of the slow one. `pystol rehearse -o json` runs the experiment on a private sim at the
automatic speed; then the same experiment runs for real — `pystol run -f` against a
whole stack (API, Redis, a Celery worker) on `pystol-sim --snapshot` at speed 1 — and
the prediction is checked against the measurement and the sim's ground truth.

Also here: the sim's `PUT /_sim/speed`, which the rehearsal uses to speed its copy up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml

from pystol_worker.core.access import Actor, ActorKind, Grant, Identity, Role, RoleAuthority
from pystol_worker.core.experiment_model import ExperimentSpec
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster_access import (
    ClusterAccess,
    RetryPolicy,
    TokenBucket,
    load_api_client,
)
from pystol_worker.rehearsal import cluster_snapshot
from pystol_worker.rehearsal.private_stack import private_sim
from pystol_worker.rehearsal.service import RehearsalService, RehearsalStatus
from pystol_worker.rehearsal.timescale import template_delay_seconds
from tests.integration.conftest import TOKEN, Stack, running_stack
from tests.integration.test_sim_snapshot_rehearsal import QUICK, SLOW, hand_written_list
from tests.support.recovery_truth import TOLERANCE
from tests.support.redis_server import RedisServer
from tests.support.sim_process import SimProcess

SLOW_ONE = ("shop", "slow-0")        # index 0: 9 + 6 s
QUICK_ONE = ("payments", "quick-1")  # index 1: 4 + 2 s
QUICK_TWO = ("payments", "quick-5")  # index 5: 4 + 2 s
KEPT = (SLOW_ONE, QUICK_ONE, QUICK_TWO)


def small_cluster() -> dict[str, Any]:
    """Nodes, namespaces and three workloads of the hand-written List (with their
    ReplicaSets, pods, Services and Endpoints), plus a budget on the slow one."""
    names = {name for _, name in KEPT}
    items = []
    for item in hand_written_list()["items"]:
        name = item["metadata"]["name"]
        if item["kind"] in ("Node", "Namespace") or name in names or any(
                name.startswith(f"{kept}-") for kept in names):
            items.append(item)
    items.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                  "metadata": {"name": "slow-0-all", "namespace": "shop"},
                  "spec": {"minAvailable": 3,
                           "selector": {"matchLabels": {"app": "slow-0"}}}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def write_snapshot(workdir: Path) -> Path:
    path = workdir / "cluster.yaml"
    path.write_text(yaml.safe_dump(small_cluster(), sort_keys=False))
    return path


def pod_kill(workload: tuple[str, str]) -> dict[str, Any]:
    namespace, name = workload
    return {"action": "pod-kill",
            "target": {"namespaces": [namespace], "label_selector": f"app={name}",
                       "mode": "fixed", "value": 1},
            "recovery_timeout": "60s"}


def experiment() -> dict[str, Any]:
    """serial [pod-kill 1 slow pod, parallel [pod-kill 1 quick pod in two workloads]],
    with an edge probe of a Service through the API server's proxy."""
    return {
        "name": "shop-survives-pod-loss",
        "hypothesis": {"title": "quick-1 answers", "probes": [
            {"name": "quick-1-answers", "type": "http", "mode": "edge",
             "service": {"namespace": "payments", "name": "quick-1", "port": 80,
                         "path": "/"}}]},
        "method": [
            {"type": "action", "name": "slow", "job": pod_kill(SLOW_ONE)},
            {"type": "parallel", "name": "quick", "steps": [
                {"type": "action", "name": "quick-1", "job": pod_kill(QUICK_ONE)},
                {"type": "action", "name": "quick-5", "job": pod_kill(QUICK_TWO)}]},
        ],
    }


def pystol(args: list[str], env: dict[str, str], timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pystol_api.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def key(ref: dict[str, Any]) -> tuple[str, str]:
    return (ref["namespace"], ref["name"])


# -- the sim's speed ---------------------------------------------------------------------------


def test_the_sims_speed_can_be_set_by_the_admin_until_a_pod_is_deleted(tmp_path: Path
                                                                       ) -> None:
    snapshot = write_snapshot(tmp_path)
    with SimProcess.start(tmp_path, extra_args=("--snapshot", str(snapshot),
                                                "--speed", "1")) as sim:
        assert sim.request("GET", "/_sim/speed") == (200, {"speed": 1.0, "locked": False})
        # Hostile values: refused with the field, the speed unchanged.
        for bad in (0.5, 101, True, "fast", None, [5]):
            status, body = sim.request("PUT", "/_sim/speed", {"speed": bad})
            assert status == 422 and body["message"].startswith("speed:"), (bad, body)
        status, body = sim.request("PUT", "/_sim/speed", ["speed", 5])
        assert status == 400, body
        # Only the admin reaches /_sim/: a user of the cluster cannot change its clock.
        status, _ = sim.request("POST", "/_sim/users", {"name": "dev", "token": "dev-token-1",
                                                        "groups": ["system:masters"]})
        assert status == 201
        other = SimProcess(sim.process, sim.url, sim.kubeconfig, "dev-token-1", 1.0,
                           sim.ssl_context)
        assert other.request("PUT", "/_sim/speed", {"speed": 5})[0] == 403
        assert sim.request("GET", "/_sim/speed")[1]["speed"] == 1.0

        assert sim.request("PUT", "/_sim/speed", {"speed": 5}) == \
            (200, {"speed": 5.0, "locked": False})
        # The new speed is what the kubelets use: the slow workload's pod comes back in
        # (9 + 6) / 5 = 3 s, not 15.
        namespace, name = SLOW_ONE
        status, pods = sim.request("GET", f"/api/v1/namespaces/{namespace}/pods"
                                          f"?labelSelector=app%3D{name}")
        assert status == 200 and len(pods["items"]) == 3
        victim = pods["items"][0]["metadata"]
        status, _ = sim.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/"
                                          f"{victim['name']}")
        assert status == 200

        def replacement_ready() -> dict[str, Any] | None:
            truth = sim.truth(namespace)
            return next((p for p in truth if p["owner_name"] == name
                         and p["created"] >= deleted["deleted"] and p["ready"]
                         and p["uid"] != victim["uid"]), None)
        deleted = sim.wait_for(lambda: next((p for p in sim.truth(namespace)
                                             if p["uid"] == victim["uid"] and p["deleted"]),
                                            None))
        replacement = sim.wait_for(replacement_ready, timeout=30)
        expected = (SLOW[0] + SLOW[1]) / 5
        assert abs(replacement["ready"] - deleted["deleted"] - expected) < TOLERANCE, \
            (replacement, deleted)

        # A pod was deleted: the clock may no longer change (a recovery measured half at
        # one speed and half at another would be wrong).
        status, body = sim.request("PUT", "/_sim/speed", {"speed": 10})
        assert status == 409 and "deleted" in body["message"], body
        assert sim.request("GET", "/_sim/speed")[1] == {"speed": 5.0, "locked": True}


# -- the rehearsal predicts the real run ------------------------------------------------------


@pytest.fixture(scope="module")
def rehearsal_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("rehearsal-files")
    spec = workdir / "experiment.yaml"
    spec.write_text(yaml.safe_dump(experiment(), sort_keys=False))
    return write_snapshot(workdir), spec


def test_a_rehearsal_predicts_the_recovery_the_real_run_measures_within_10_percent(
        rehearsal_files: tuple[Path, Path], tmp_path: Path, redis_server: RedisServer
        ) -> None:
    snapshot, spec_file = rehearsal_files
    env = {key_: value for key_, value in os.environ.items()
           if not key_.startswith("PYSTOL_")}
    # The rehearsal needs no Pystol server, token or Redis: only the two files.
    rehearsed = pystol(["rehearse", "-f", str(spec_file), "--snapshot", str(snapshot),
                        "-o", "json"], env)
    assert rehearsed.returncode == 0, rehearsed.stderr + rehearsed.stdout
    report = json.loads(rehearsed.stdout)
    assert report["verdict"] == "passed", report
    # auto: the shortest targeted recovery (quick: 4 + 2 s) takes 2 s of wall time.
    assert report["speed"] == pytest.approx((QUICK[0] + QUICK[1]) / 2)

    predicted_chosen = {key(w["workload"]): w["chosen"] for step in report["predicted"]
                        for w in step["workloads"]}
    assert predicted_chosen == {SLOW_ONE: 1, QUICK_ONE: 1, QUICK_TWO: 1}
    predicted = {key(r["workload"]): r["simulated_seconds"] for r in report["recovery"]}
    assert set(predicted) == set(KEPT), report["recovery"]
    blast = {key(b["workload"]): b for b in report["blast_radius"]}
    assert {k: (b["desired"], b["lost"]) for k, b in blast.items()} == {
        SLOW_ONE: (3, 1), QUICK_ONE: (3, 1), QUICK_TWO: (3, 1)}
    [budget] = report["budgets"]
    assert (budget["name"], budget["min_available"], budget["min_healthy"],
            budget["violated"]) == ("slow-0-all", 3, 2, True)
    assert report["not_rehearsed"] == []

    # The real run, at speed 1, on the same snapshot.
    with running_stack(tmp_path, redis_server,
                       ("--snapshot", str(snapshot), "--speed", "1")) as stack:
        real = pystol(["run", "-f", str(spec_file), "--wait", "-o", "json"],
                      {**env, **stack.env()})
        assert real.returncode == 0, (real.stderr + real.stdout[-3000:] + "\nsim truth:\n"
                                      + json.dumps(stack.sim.truth("shop"), indent=1)
                                      + "\nworker:\n" + stack.worker.tail(80))
        run = json.loads(real.stdout)
        assert run["verdict"] == report["verdict"] == "passed"
        measured, chosen = real_measurements(stack, run)
        truth = stack.sim.truth()

    assert chosen == predicted_chosen
    for workload, seconds in measured.items():
        assert abs(predicted[workload] - seconds) <= 0.10 * seconds, \
            (workload, predicted[workload], seconds)
        # And what the real run measured is what the sim says happened.
        namespace, name = workload
        killed = [p for p in truth if p["namespace"] == namespace and p["owner_name"] == name
                  and p["deleted"]]
        live = [p for p in truth if p["namespace"] == namespace and p["owner_name"] == name
                and not p["deleted"]]
        true_seconds = max(p["ready"] for p in live) - min(p["deleted"] for p in killed)
        assert abs(seconds - true_seconds) < TOLERANCE, (workload, seconds, true_seconds)
    delays = {SLOW_ONE: SLOW, QUICK_ONE: QUICK, QUICK_TWO: QUICK}
    for workload, (start, ready) in delays.items():
        assert measured[workload] == pytest.approx(start + ready, abs=TOLERANCE)


def real_measurements(stack: Stack, run: dict[str, Any]
                      ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], int]]:
    """Per workload: the recovery the real run's jobs measured, and how many of its pods
    they chose."""
    measured: dict[tuple[str, str], float] = {}
    chosen: dict[tuple[str, str], int] = {}
    for step in run["steps"]:
        if not step.get("job_id") or step.get("type") != "action":
            continue
        record = stack.call("GET", f"/api/v1/jobs/{step['job_id']}",
                            token=TOKEN).json()
        for recovery in record["result"]["recovery"]:
            measured[key(recovery["workload"])] = recovery["recovery_seconds"]
        for change in record["result"]["changes"]:
            workload = key(change["target"]["workload"])
            chosen[workload] = chosen.get(workload, 0) + 1
    return measured, chosen


def test_rehearse_refuses_a_bad_speed_and_a_job_spec(rehearsal_files: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    snapshot, spec_file = rehearsal_files
    env = dict(os.environ)
    bad = pystol(["rehearse", "-f", str(spec_file), "--snapshot", str(snapshot),
                  "--speed", "500"], env, timeout=60)
    assert bad.returncode == 2 and "speed must be within 1..100" in bad.stderr, bad.stderr
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(pod_kill(SLOW_ONE)))
    refused = pystol(["rehearse", "-f", str(job), "--snapshot", str(snapshot)], env,
                     timeout=60)
    assert refused.returncode == 2 and "not an experiment" in refused.stderr, refused.stderr


def test_a_budget_that_blocks_a_drain_is_reported_blocked_not_violated(
        rehearsal_files: tuple[Path, Path], tmp_path: Path) -> None:
    """node-drain evicts through the Eviction API, which honours the budget: the slow
    workload's pod on the node stays (blocked), the quick one's is evicted and recovers."""
    snapshot, _ = rehearsal_files
    spec = {"name": "drain-node-0", "method": [{"type": "action", "name": "drain", "job": {
        "action": "node-drain", "target": {"names": ["node-0"]}, "duration": "10s",
        "recovery_timeout": "60s", "params": {"eviction_timeout": "6s"}}}]}
    path = tmp_path / "drain.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = pystol(["rehearse", "-f", str(path), "--snapshot", str(snapshot), "-o", "json"],
                    dict(os.environ), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    [step] = report["predicted"]
    on_node = {key(w["workload"]): w["chosen"] for w in step["workloads"]}
    # The copy's scheduler put one slow-0 pod on node-0 (if that changes, pick its node).
    assert on_node.get(SLOW_ONE) == 1, on_node
    [budget] = report["budgets"]
    assert (budget["blocked_evictions"], budget["min_healthy"], budget["violated"]) == \
        (1, 3, False), budget
    blast = {key(b["workload"]): b["lost"] for b in report["blast_radius"]}
    assert blast[SLOW_ONE] == 0
    evicted = [workload for workload in on_node if workload != SLOW_ONE]
    assert evicted and all(blast[workload] == on_node[workload] for workload in evicted)
    assert {key(r["workload"]) for r in report["recovery"] if r["recovered"]} == set(evicted)


def test_the_exit_code_is_the_verdict_on_the_copy(rehearsal_files: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    """A hypothesis the copy does not meet (4 ready pods of a 3-replica workload) skips the
    method: exit 3, as `pystol run -f --wait` exits for `skipped`, and nothing was hit."""
    snapshot, _ = rehearsal_files
    spec = experiment()
    spec["hypothesis"] = {"probes": [{
        "name": "four-ready", "type": "k8s", "namespace": "shop",
        "pods": {"label_selector": "app=slow-0", "ready": True, "op": "ge", "value": 4}}]}
    path = tmp_path / "four.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = pystol(["rehearse", "-f", str(path), "--snapshot", str(snapshot), "-o", "json"],
                    dict(os.environ), timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "skipped"
    assert all(blast["lost"] == 0 for blast in report["blast_radius"]), report
    assert report["recovery"] == []


def test_a_snapshot_the_sim_cannot_load_is_a_clear_error(rehearsal_files: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    _, spec_file = rehearsal_files
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: List\nitems:\n- kind: Pod\n  metadata: 7\n")
    result = pystol(["rehearse", "-f", str(spec_file), "--snapshot", str(broken)],
                    dict(os.environ), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the rehearsal could not run: pystol-sim exited" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_private_sim_is_gone_when_the_rehearsal_ends(rehearsal_files: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    """However it ends: here the snapshot loads, the experiment is refused on the copy
    (a protected namespace), and no pystol-sim is left behind."""
    snapshot, _ = rehearsal_files
    spec = experiment()
    spec["method"] = [{"type": "action", "name": "system",
                       "job": pod_kill(("kube-system", "coredns"))}]
    path = tmp_path / "system.yaml"
    path.write_text(yaml.safe_dump(spec))
    before = _sims()
    result = pystol(["rehearse", "-f", str(path), "--snapshot", str(snapshot)],
                    dict(os.environ), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "kube-system" in result.stderr, result.stderr
    deadline = time.monotonic() + 10
    while _sims() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _sims() - before


def _sims() -> set[int]:
    """pids of pystol-sim processes started with a --snapshot under a rehearsal dir."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"pystol-sim" in part or part == b"pystol_sim" for part in command[:3]) \
                and any(b"pystol-rehearsal-" in part for part in command):
            found.add(int(entry.name))
    return found


def test_a_snapshot_of_a_live_cluster_loads_into_a_copy_with_the_same_workloads(
        rehearsal_files: tuple[Path, Path], tmp_path: Path) -> None:
    """What a worker-run rehearsal copies: read-only lists of the experiment's namespaces
    and every node, never a Secret or a ConfigMap; the copy has the same workloads, pod
    delays and budgets."""
    snapshot_file, _ = rehearsal_files
    with SimProcess.start(tmp_path / "live", extra_args=("--snapshot", str(snapshot_file),
                                                         "--speed", "1")) as live:
        live.request("DELETE", "/_sim/requests")
        cluster = ClusterAccess(load_api_client(str(live.kubeconfig)), TokenBucket(50, 100),
                                RetryPolicy())
        copied = cluster_snapshot.snapshot(cluster, ["payments", "shop", "does-not-exist"])
        _, counts = live.request("GET", "/_sim/requests")
    verbs = {(item["verb"], item["resource"]) for item in counts["requests"]}
    assert ("list", "pods") in verbs and ("list", "poddisruptionbudgets") in verbs, verbs
    assert all(verb in ("list", "get") for verb, _ in verbs), verbs
    assert not {resource for _, resource in verbs} & {"secrets", "configmaps"}, verbs
    kinds = {(item["kind"], item["metadata"].get("namespace"), item["metadata"]["name"])
             for item in copied["items"]}
    assert ("Namespace", None, "search") not in kinds  # only what the experiment touches
    assert ("Namespace", None, "does-not-exist") not in kinds
    assert {("Node", None, f"node-{n}") for n in range(6)} <= kinds

    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(copied))
    with private_sim(path, tmp_path / "copy") as copy:
        cluster = ClusterAccess(load_api_client(str(copy.kubeconfig)), TokenBucket(50, 100),
                                RetryPolicy())
        delays = {(namespace, d["metadata"]["name"]): template_delay_seconds(d)
                  for namespace in ("shop", "payments")
                  for d in cluster.list_workloads("Deployment", namespace, None)}
        budgets = cluster.list_pdbs("shop")
    assert delays == {SLOW_ONE: sum(SLOW), QUICK_ONE: sum(QUICK), QUICK_TWO: sum(QUICK)}
    assert [(b["metadata"]["name"], b["spec"]["minAvailable"]) for b in budgets] == [
        ("slow-0-all", 3)]


def test_the_worker_rehearses_on_a_snapshot_it_takes_itself(
        rehearsal_files: tuple[Path, Path], tmp_path: Path) -> None:
    """Server-side: `RehearsalService.execute` (the task's body) copies the live cluster's
    namespaces and rehearses there; the live cluster is not touched (no pod deleted)."""
    snapshot_file, _ = rehearsal_files
    with SimProcess.start(tmp_path / "live", extra_args=("--snapshot", str(snapshot_file),
                                                         "--speed", "1")) as live:
        cluster = ClusterAccess(load_api_client(str(live.kubeconfig)), TokenBucket(50, 100),
                                RetryPolicy())
        settings = Settings(signing_key="s" * 32)
        sent: list[str] = []
        admin = Identity(Actor(kind=ActorKind.SETTINGS_TOKEN, name="admin", role=Role.ADMIN),
                         RoleAuthority(Role.ADMIN))
        rehearsals = RehearsalService(
            fakeredis.FakeRedis(), settings,
            lambda spec, identity: Grant(submitter="admin", namespaces=spec.namespaces()),
            sent.append)
        run = rehearsals.start(ExperimentSpec.model_validate(experiment()), admin)
        ended = rehearsals.execute(sent[0], cluster, Policy(), workdir=tmp_path)
        assert ended.status == RehearsalStatus.COMPLETED, ended.error
        assert ended.report is not None and ended.report.verdict == "passed"
        assert {(r.workload.namespace, r.workload.name) for r in ended.report.recovery} == \
            set(KEPT)
        assert rehearsals.get(run.id).report == ended.report
        # The live cluster lost nothing: every pod it ever had is still there.
        assert not [p for p in live.truth() if p["deleted"]]


HOLDER = """
import sys, time
from pathlib import Path
from pystol_worker.rehearsal.private_stack import private_sim
with private_sim(Path(sys.argv[1]), Path(sys.argv[2])) as sim:
    print(sim.process.pid, flush=True)
    time.sleep(600)
"""


def test_a_private_sim_dies_with_a_rehearsal_that_is_killed(
        rehearsal_files: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGKILL runs no `finally`: the kernel ends the copy with its parent (a worker
    killed mid-rehearsal leaves no simulated cluster behind)."""
    snapshot_file, _ = rehearsal_files
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(snapshot_file),
                               str(tmp_path / "held")], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None
        sim_pid = int(holder.stdout.readline())
        assert Path(f"/proc/{sim_pid}").exists()
        holder.kill()
        holder.wait(10)
        deadline = time.monotonic() + 10
        while _alive(sim_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(sim_pid)
    finally:
        if holder.poll() is None:
            holder.kill()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
