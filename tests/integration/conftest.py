"""The whole pipeline as a user runs it: redis-server, pystol-sim, a Celery worker, the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
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

    def env(self) -> dict[str, str]:
        return {"PYSTOL_REDIS_URL": self.redis.url, "PYSTOL_KUBECONFIG": str(self.sim.kubeconfig),
                "PYSTOL_API_URL": self.url, "PYSTOL_TOKEN": self.token}

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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
          ) -> Iterator[Stack]:
    redis_server.client().flushdb()
    workdir: Path = tmp_path_factory.mktemp("stack")
    with SimProcess.start(workdir, speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig)}
        port = free_port()
        with worker(env, concurrency=2) as worker_process, \
                api(env, port, TOKEN) as api_process:
            yield Stack(sim, redis_server, worker_process, api_process,
                        f"http://127.0.0.1:{port}", TOKEN)
