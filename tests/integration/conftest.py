"""The whole pipeline as a user runs it: redis-server, pystol-sim, a Celery worker, the API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config

from tests.support.pystol_processes import Process, api, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

TOKEN = "integration-token"


def loopback_probes_policy(api_port: int | None = None) -> str:
    """The admin policy of the integration stacks. The tests' own HTTP servers listen on
    127.0.0.1, which probes may not reach by default: an admin of a machine like this one
    allows it. `api_port` also opens Pystol's own API (some PystolActions in the tests
    ping it), which only an entry naming its address and port does."""
    allow = ["127.0.0.1/32"] + ([f"127.0.0.1:{api_port}"] if api_port is not None else [])
    return json.dumps({"probes": {"allow": allow}})  # JSON is YAML


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer.start(tmp_path_factory.mktemp("redis")) as server:
        yield server


@dataclass
class Stack:
    sim: SimProcess
    redis: RedisServer
    worker: Process
    api: Process
    url: str
    token: str
    policy_file: Path | None = None

    def env(self) -> dict[str, str]:
        env = {"PYSTOL_REDIS_URL": self.redis.url, "PYSTOL_KUBECONFIG": str(self.sim.kubeconfig),
               "PYSTOL_API_URL": self.url, "PYSTOL_TOKEN": self.token}
        if self.policy_file is not None:
            env["PYSTOL_POLICY_FILE"] = str(self.policy_file)
        return env

    def kube_clients(self) -> tuple[client.CoreV1Api, client.AppsV1Api]:
        """The official client, reaching the simulated cluster as any user would."""
        api_client = config.new_client_from_config(config_file=str(self.sim.kubeconfig))
        return client.CoreV1Api(api_client), client.AppsV1Api(api_client)

    def event_reasons(self, namespace: str, name: str) -> list[str]:
        """Reasons of the Kubernetes Events recorded on one object."""
        core, _ = self.kube_clients()
        events = core.list_namespaced_event(namespace,
                                            field_selector=f"involvedObject.name={name}").items
        return [event.reason for event in events]

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any
             ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        headers.setdefault("Authorization", f"Bearer {token or self.token}")
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def submit(self, spec: dict[str, Any], expect: int = 202) -> dict[str, Any]:
        response = self.call("POST", "/api/v1/jobs", json=spec)
        assert response.status_code == expect, response.text
        return response.json()

    def wait_for_job(self, job_id: str, timeout: float = 60.0,
                     until: tuple[str, ...] = ("succeeded", "failed", "aborted", "cancelled")
                     ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            record = self.call("GET", f"/api/v1/jobs/{job_id}").json()
            if record["status"] in until:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {record['status']} after {timeout}s:"
                                     f"\n{record}\nworker:\n{self.worker.tail()}")
            time.sleep(0.1)


@contextmanager
def running_stack(workdir: Path, redis_server: RedisServer,
                  sim_args: tuple[str, ...] = (), policy: dict[str, Any] | None = None,
                  concurrency: int = 2) -> Iterator[Stack]:
    """A flushed Redis, a sim (demo cluster unless `sim_args` say otherwise), a worker
    running `concurrency` jobs at once and the API, with a policy that lets probes reach
    loopback (and `policy`'s fields on top of it)."""
    redis_server.client().flushdb()
    with SimProcess.start(workdir, speed=10.0, extra_args=sim_args) as sim:
        # The API's port is picked once the sim has bound its own (any free one): picked
        # before, the kernel could hand the sim the same port, and the API fail to bind.
        port = free_port()
        document = json.loads(loopback_probes_policy(api_port=port))
        document.update(policy or {})
        policy_file = workdir / "policy.yaml"
        policy_file.write_text(json.dumps(document))
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               "PYSTOL_POLICY_FILE": str(policy_file)}
        with worker(env, concurrency=concurrency) as worker_process, \
                api(env, port, TOKEN) as api_process:
            yield Stack(sim, redis_server, worker_process, api_process,
                        f"http://127.0.0.1:{port}", TOKEN, policy_file)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
          ) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), redis_server) as running:
        yield running
