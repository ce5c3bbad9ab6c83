"""Resources that run out (issue 13), against real processes: redis-server, pystol-sim, a
Celery worker and the API.

- A job past the limits a job may carry is a 422 naming the field, over HTTP.
- A job whose action hangs is stopped at its own time limit (derived from its duration,
  recovery timeout and a margin), its fault reverted, and the worker slot freed.
- Ended jobs leave Redis after the retention: the worker's records expire, and its reaper
  pass takes them out of every index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kubernetes import client, config

from pystol_worker.core.model import JobSpec, JobStatus, Source
from pystol_worker.store.job_store import JobNotFound, JobStore
from tests.integration.conftest import TOKEN, Stack
from tests.support.pystol_processes import api, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

RETENTION = 60  # PYSTOL_JOB_RETENTION_SECONDS' lowest value
ENV = {"PYSTOL_JOB_RETENTION_SECONDS": str(RETENTION), "PYSTOL_REAPER_INTERVAL_SECONDS": "0.5",
       "PYSTOL_HEARTBEAT_SECONDS": "2"}
DRY_RUN = {"action": "pod-kill", "dry_run": True,
           "target": {"namespaces": ["shop"], "label_selector": "app=web"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
          ) -> Iterator[Stack]:
    redis_server.client().flushdb()
    with SimProcess.start(tmp_path_factory.mktemp("resources"), speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               **ENV}
        port = free_port()
        with worker(env, concurrency=1) as worker_process, \
                api(env, port, TOKEN) as api_process:
            yield Stack(sim, redis_server, worker_process, api_process,
                        f"http://127.0.0.1:{port}", TOKEN)


def wait_until(check: Any, timeout: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}\nworker:\n{stack.worker.tail()}"
        time.sleep(0.1)


# -- limits over HTTP ------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "field"), [
    ({"action": "node-cordon", "target": {"names": [f"n-{i}" for i in range(1001)]}},
     "target.names"),
    # Each name within its limit, the whole spec too big: the API names the body.
    ({"action": "node-cordon", "target": {"names": ["n" * 250 + f"{i:03}" for i in range(130)]}},
     "body"),
    ({**DRY_RUN, "duration": "200h"}, "duration"),
    ({**DRY_RUN, "params": {"seed": 1, "blob": [[[[[[[[[1]]]]]]]]]}}, "params"),
])
def test_a_job_past_a_limit_is_a_422_naming_the_field(stack: Stack, spec: dict[str, Any],
                                                      field: str) -> None:
    stored = stack.redis.client().zcard("pystol:jobs")
    answer = stack.call("POST", "/api/v1/jobs", json=spec)
    assert answer.status_code == 422, answer.text
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert [error["loc"] for error in answer.json()["errors"]] == [field], answer.text
    assert stack.redis.client().zcard("pystol:jobs") == stored  # nothing was stored


def test_a_schedule_more_often_than_once_a_second_is_refused(stack: Stack) -> None:
    answer = stack.call("POST", "/api/v1/schedules",
                        json={"id": "flood", "interval": "0.1s", "template": DRY_RUN})
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["loc"] == "interval" and "between 1s and 366 days" in error["msg"]


# -- time limits -----------------------------------------------------------------------------------

def cordoned(core: client.CoreV1Api, name: str) -> bool:
    return bool(core.read_node(name).spec.unschedulable)


def test_a_job_that_hangs_is_stopped_at_its_time_limit_and_reverted(stack: Stack) -> None:
    """node-drain cordons worker-b, then lists the node's pods to evict them: the sim makes
    that list hang for two minutes. The job's limit is its duration (1s) + recovery timeout
    (1s) + eviction timeout (0s) + the margin (30s + 4 requests for its one node at 20 qps):
    32.2s. Past it the job is aborted, the cordon reverted, and the worker takes the next
    job."""
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(stack.sim.kubeconfig)))
    assert not cordoned(core, "worker-b")
    status, _ = stack.sim.request("POST", "/_sim/faults", {
        "verb": "list", "resource": "pods", "code": 0, "delay_seconds": 120,
        "duration_seconds": 90})
    assert status == 201
    try:
        started = time.monotonic()
        job = stack.submit({"action": "node-drain", "target": {"names": ["worker-b"]},
                            "duration": "1s", "recovery_timeout": "1s",
                            "params": {"eviction_timeout": "0s"}})
        wait_until(lambda: cordoned(core, "worker-b"), 20, "worker-b never cordoned", stack)
        record = stack.wait_for_job(job["id"], timeout=60)
        took = time.monotonic() - started
    finally:
        stack.sim.request("DELETE", "/_sim/faults")

    assert record["status"] == "aborted", record
    assert record["reason"] == ("aborted: the job ran past its time limit of 32.2s (its "
                                "duration, recovery timeout and probes plus a margin, at most "
                                "PYSTOL_MAX_JOB_SECONDS=3600)"), record
    assert 32.2 <= took < 45, took  # stopped at the limit, not at the sim's two minutes
    assert not cordoned(core, "worker-b")
    [change] = record["result"]["changes"]
    assert change["reverted_at"] and change["target"]["name"] == "worker-b"
    kinds = [event["kind"] for event in record["timeline"]]
    assert kinds.index("injected") < kinds.index("reverted") < kinds.index("aborted")
    assert stack.redis.client().scard(f"pystol:journal:job:{job['id']}") == 0
    # The worker (concurrency 1) is free again: the next job runs at once.
    following = stack.wait_for_job(stack.submit(DRY_RUN)["id"], timeout=30)
    assert following["status"] == "succeeded", following
    assert stack.worker.process.poll() is None


# -- retention -------------------------------------------------------------------------------------

def keys_of(stack: Stack, job_id: str) -> list[bytes]:
    return [key for key in stack.redis.client().keys("pystol:*") if job_id.encode() in key]


def test_an_ended_job_leaves_redis_after_the_retention(stack: Stack) -> None:
    job = stack.submit(DRY_RUN)
    assert stack.wait_for_job(job["id"])["status"] == "succeeded"
    redis_client = stack.redis.client()
    key = f"pystol:job:{job['id']}"
    # The worker that ended it set PYSTOL_JOB_RETENTION_SECONDS on its record and timeline.
    for part in (key, key + ":timeline"):
        assert RETENTION - 15 < redis_client.ttl(part) <= RETENTION, part
    listed = stack.call("GET", "/api/v1/jobs", params={"namespace": "shop"}).json()["items"]
    assert job["id"] in [item["id"] for item in listed]

    # As if it had ended two minutes ago: the worker's next reaper pass forgets it.
    [member] = [raw for raw in redis_client.zrange("pystol:jobs:ended", 0, -1)
                if json.loads(raw)["id"] == job["id"]]
    redis_client.zadd("pystol:jobs:ended", {member: time.time() - 2 * RETENTION})
    wait_until(lambda: stack.call("GET", f"/api/v1/jobs/{job['id']}").status_code == 404, 10,
               "the reaper pass did not forget the job", stack)
    listed = stack.call("GET", "/api/v1/jobs", params={"namespace": "shop"}).json()["items"]
    assert job["id"] not in [item["id"] for item in listed]
    for index in ("pystol:jobs", "pystol:jobs:status:succeeded", "pystol:jobs:action:pod-kill",
                  "pystol:jobs:ns:shop"):
        assert redis_client.zscore(index, job["id"]) is None, index
    assert keys_of(stack, job["id"]) == []


def test_a_real_redis_expires_ended_jobs_and_pruning_empties_their_indexes(
        redis_server: RedisServer) -> None:
    """The same store on a real redis-server (database 1, apart from the stack's), with a
    2-second retention: Redis itself drops the record, and pruning the indexes, down to
    the key of a namespace no job names any more."""
    real = redis.Redis(host="127.0.0.1", port=redis_server.port, db=1)
    real.flushdb()
    store = JobStore(real, retention_seconds=2)
    spec = JobSpec.model_validate({"action": "pod-kill", "target": {"namespaces": ["no-such"]}})
    ended, _ = store.create(spec, Source.API, "alice")
    store.claim(ended.id, "w1")
    store.finish(ended.id, JobStatus.FAILED, "no targets: namespace no-such not found")
    running, _ = store.create(spec, Source.API, "alice")
    store.claim(running.id, "w1")

    time.sleep(3.0)
    with pytest.raises(JobNotFound):  # expired by Redis itself
        store.get(ended.id)
    assert not real.exists(f"pystol:job:{ended.id}:timeline")
    assert real.zscore("pystol:jobs:ns:no-such", ended.id) is not None  # until pruned

    assert store.prune_expired() == 1
    assert real.zrange("pystol:jobs:ns:no-such", 0, -1) == [running.id.encode()]
    assert [record.id for record in store.list().items] == [running.id]
    assert store.get(running.id).status == JobStatus.RUNNING  # never expires while it runs
    store.finish(running.id, JobStatus.SUCCEEDED, "done")
    time.sleep(3.0)
    assert store.prune_expired() == 1
    assert not real.exists("pystol:jobs:ns:no-such")  # the namespace's index key is gone
    assert [key for key in real.keys("pystol:*") if b"job:" in key] == []
    real.flushdb()
