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
from kubernetes import client, config

from pystol_worker.actions import builtin
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
HOLD_NOTHING = {"pod-kill", "container-kill", "http-probe"}


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
