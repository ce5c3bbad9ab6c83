"""No fault outlives its job, not even when the worker is SIGKILLed mid-hold.

For each holding action: start a job that holds a fault for 30 s, wait until the
fault is in the cluster, SIGKILL the whole worker (pool children included), start
a new worker, and see the fault reverted within the heartbeat + reaper interval,
the job ended `aborted` saying why, and the revert journal empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from kubernetes import client, config

from pystol_worker.actions import builtin
from pystol_worker.actions.pod_failure import UNDO_RESTORE_IMAGES
from pystol_worker.core.access import seal
from pystol_worker.core.model import TargetRef
from pystol_worker.safety.revert_journal import JournalEntry
from tests.integration.conftest import TOKEN, Stack
from tests.support.pystol_processes import api, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

HEARTBEAT = 2.0
REAPER_EVERY = 0.5
FAST_REAPER = {"PYSTOL_HEARTBEAT_SECONDS": str(HEARTBEAT),
               "PYSTOL_REAPER_INTERVAL_SECONDS": str(REAPER_EVERY)}


@dataclass
class Case:
    spec: dict[str, Any]
    faulty: Callable[[client.CoreV1Api, client.AppsV1Api], bool]


def node_unschedulable(core: client.CoreV1Api, name: str) -> bool:
    return bool(core.read_node(name).spec.unschedulable)


def cart_image_swapped(core: client.CoreV1Api) -> bool:
    return any(c.image.endswith("/pause:3.9")
               for pod in core.list_namespaced_pod("shop", label_selector="app=cart").items
               for c in pod.spec.containers)


def stress_pods(core: client.CoreV1Api, action: str) -> list[Any]:
    return core.list_pod_for_all_namespaces(
        label_selector=f"app.kubernetes.io/managed-by=pystol,chaos.pystol.org/action={action}"
    ).items


CASES: dict[str, Case] = {
    "cpu-stress": Case(
        {"action": "cpu-stress", "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                            "mode": "one"},
         "duration": "30s", "params": {"workers": 1, "load": 50}},
        lambda core, apps: bool(stress_pods(core, "cpu-stress"))),
    "memory-stress": Case(
        {"action": "memory-stress", "target": {"namespaces": ["shop"],
                                               "label_selector": "app=web", "mode": "one"},
         "duration": "30s", "params": {"workers": 1, "bytes": "64Mi"}},
        lambda core, apps: bool(stress_pods(core, "memory-stress"))),
    "network-partition": Case(
        {"action": "network-partition", "target": {"namespaces": ["shop"],
                                                   "label_selector": "app=cart",
                                                   "mode": "fixed", "value": 1},
         "duration": "30s"},
        lambda core, apps: bool(client.NetworkingV1Api(core.api_client)
                                .list_namespaced_network_policy("shop").items)),
    "node-drain": Case(
        {"action": "node-drain", "target": {"names": ["worker-b"]}, "duration": "30s"},
        lambda core, apps: node_unschedulable(core, "worker-b")),
    "node-cordon": Case(
        {"action": "node-cordon", "target": {"names": ["worker-a"]}, "duration": "30s"},
        lambda core, apps: node_unschedulable(core, "worker-a")),
    "pod-failure": Case(
        {"action": "pod-failure", "target": {"namespaces": ["shop"], "label_selector": "app=cart",
                                             "mode": "fixed", "value": 1}, "duration": "30s"},
        lambda core, apps: cart_image_swapped(core)),
    "deployment-scale": Case(
        {"action": "deployment-scale",
         "target": {"namespaces": ["shop"], "label_selector": "app=cart", "mode": "all"},
         "params": {"replicas": 0, "kinds": ["Deployment"]}, "duration": "30s"},
        lambda core, apps: apps.read_namespaced_deployment("cart", "shop").spec.replicas == 0),
}


# Actions that hold nothing a reaper could revert: a deleted pod or a killed container is
# healed by its controller or kubelet, a probe changes nothing. They declare no undo.
HOLD_NOTHING = {"pod-kill", "container-kill", "http-probe", "steady-state"}


def test_every_holding_action_has_a_case() -> None:
    """A built-in action that declares undo functions (it journals changes) must get a
    SIGKILL case here; one that declares none must be listed as holding nothing."""
    holding = {cls.name for cls in builtin.BUILTIN_ACTIONS if cls.undo}
    names = {cls.name for cls in builtin.BUILTIN_ACTIONS}
    assert set(CASES) == holding
    assert names - holding == HOLD_NOTHING


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
            ) -> Iterator[tuple[SimProcess, RedisServer, str, dict[str, str]]]:
    redis_server.client().flushdb()
    with SimProcess.start(tmp_path_factory.mktemp("reaper"), speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               **FAST_REAPER}
        port = free_port()
        with api(env, port, TOKEN):
            yield sim, redis_server, f"http://127.0.0.1:{port}", env


@pytest.mark.parametrize("action", sorted(CASES))
def test_sigkilled_worker_leaves_no_fault_behind(
        cluster: tuple[SimProcess, RedisServer, str, dict[str, str]], action: str) -> None:
    sim, redis_server, url, env = cluster
    case = CASES[action]
    kube = config.new_client_from_config(config_file=str(sim.kubeconfig))
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    assert not case.faulty(core, apps), "the cluster starts with the fault already present"

    first = worker(env, concurrency=1)
    doomed = first.__enter__()
    stack = Stack(sim, redis_server, doomed, doomed, url, TOKEN)
    job = stack.submit(case.spec)
    deadline = time.monotonic() + 30
    while not case.faulty(core, apps):
        assert time.monotonic() < deadline, f"fault never appeared:\n{doomed.tail()}"
        time.sleep(0.1)
    doomed.kill_group()
    # What the dead job left in the journal: exactly what the reaper must say it reverted.
    left = redis_server.client().scard(f"pystol:journal:job:{job['id']}")
    assert left >= 1
    time.sleep(HEARTBEAT / 2)
    assert case.faulty(core, apps), "the fault went away without anyone reverting it"
    assert stack.call("GET", f"/api/v1/jobs/{job['id']}").json()["status"] == "running"

    killed_at = time.monotonic()
    with worker(env, concurrency=1) as successor:
        stack.worker = successor
        while case.faulty(core, apps):
            assert time.monotonic() - killed_at < HEARTBEAT + REAPER_EVERY + 10, \
                f"fault not reverted by the next worker:\n{successor.tail()}"
            time.sleep(0.1)
        record = stack.wait_for_job(job["id"], timeout=20)
    assert record["status"] == "aborted"
    # Ended by the reaper (not by a redelivery of the task, nor by the job itself).
    assert record["reason"] == ("the worker running this job stopped (its heartbeat "
                                f"lapsed); the reaper reverted {left} change(s)")
    assert redis_server.client().hlen("pystol:journal") == 0


def test_the_reaper_refuses_journal_entries_written_by_anyone_but_pystol(
        cluster: tuple[SimProcess, RedisServer, str, dict[str, str]]) -> None:
    """The attack of issue 13, against real processes: a pod that reaches Redis writes
    journal entries for a job with no heartbeat, whose undo "restores" a pod's image to the
    attacker's: one unsigned, on a pod in `shop`, and one signed with a key it made up, on a
    pod in `payments`. The worker's reaper refuses both: the images stay, the entries leave the
    journal, the refusals are counted in /metrics and shown as Warning Events."""
    sim, redis_server, url, env = cluster
    kube = config.new_client_from_config(config_file=str(sim.kubeconfig))
    core = client.CoreV1Api(kube)
    victims = [core.list_namespaced_pod("shop", label_selector="app=cart").items[0],
               core.list_namespaced_pod("payments").items[0]]
    evil = "evil.example/backdoor:1"
    r = redis_server.client()
    for index, pod in enumerate(victims):
        entry = JournalEntry(job_id="j-forged-1", action="pod-failure",
                             undo=UNDO_RESTORE_IMAGES,
                             target=TargetRef(kind="Pod", namespace=pod.metadata.namespace,
                                              name=pod.metadata.name, uid=pod.metadata.uid),
                             data={"images": {c.name: evil for c in pod.spec.containers}})
        if index:
            entry.signature = seal(b"a-key-the-attacker-made-up", entry.payload())
        r.hset("pystol:journal", entry.id, entry.model_dump_json())
        r.sadd("pystol:journal:job:j-forged-1", entry.id)

    with worker(env, concurrency=1) as guard:
        deadline = time.monotonic() + HEARTBEAT + 15
        while r.hlen("pystol:journal:refused") < 2:
            assert time.monotonic() < deadline, f"entries not refused:\n{guard.tail()}"
            time.sleep(0.1)
        assert "refused" in guard.tail()

    for pod in victims:
        now = core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
        assert [c.image for c in now.spec.containers] == [c.image for c in pod.spec.containers]
    assert r.hlen("pystol:journal") == 0
    warned = core.list_namespaced_event(
        "shop", field_selector=f"involvedObject.name={victims[0].metadata.name}").items
    assert any(event.reason == "PystolRevertRefused" and event.type == "Warning"
               for event in warned)
    text = requests.get(f"{url}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {TOKEN}"}).text
    counted = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
               if line.startswith("pystol_revert_journal_refused_total{")}
    assert counted == {'pystol_revert_journal_refused_total{reason="unsigned"}': 1.0,
                       'pystol_revert_journal_refused_total{reason="altered"}': 1.0}
