"""The URLs a worker fetches (issue 13, SSRF): each attack run against real processes.

Real redis-server, pystol-sim, a Celery worker and the API, started with an admin policy
that allows probing 127.0.0.1 (where the test's own HTTP servers listen) and nothing
else that is dangerous. A "victim" server listens on 127.0.0.2: also loopback, but not
allowed, so it stands for whatever a job must not reach (a sidecar, the node's
services, cloud metadata). Every test shows what a user notices: the job is refused
(and names the field), the victim saw no request, a probe ends within the cap, or a
cancel and a halt stop a probe that is still waiting for its answer.

The policy here enables redirects, so that the check of each hop can be shown; that
they are off by default is shown in tests/unit/test_outbound_http.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pystol_worker.core.model import JobSpec
from pystol_worker.core.settings import Settings
from pystol_worker.process.celery_app import CeleryJobQueue
from pystol_worker.store.job_store import JobStore
from tests.integration.conftest import TOKEN, Stack
from tests.support.grants import store_job
from tests.support.probe_server import Server, serving
from tests.support.pystol_processes import api, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

MAX_BODY = 65536
MAX_SECONDS = 8
POLICY = f"""\
probes:
  allow: ["127.0.0.1/32"]
  follow_redirects: true
  max_redirects: 3
  max_body_bytes: {MAX_BODY}
  max_seconds: {MAX_SECONDS}s
"""


@dataclass
class Rig:
    stack: Stack
    allowed: Server  # on 127.0.0.1, which the policy allows
    victim: Server   # on 127.0.0.2, which it does not

    def queue_directly(self, spec: dict[str, Any]) -> str:
        """Store a sealed job and queue it without the submission service's checks, as a
        job queued under an older, laxer policy (or by anyone holding the signing key)
        reaches a worker; its id."""
        settings = Settings(redis_url=self.stack.redis.url)
        record = store_job(JobStore(self.stack.redis.client()), JobSpec.model_validate(spec),
                           settings=settings)
        CeleryJobQueue(settings).send(record.id)
        return record.id


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Rig]:
    redis_server.client().flushdb()
    workdir: Path = tmp_path_factory.mktemp("ssrf")
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    with SimProcess.start(workdir, speed=10.0) as sim, \
            serving("127.0.0.1") as allowed, serving("127.0.0.2") as victim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               "PYSTOL_POLICY_FILE": str(policy)}
        port = free_port()
        with worker(env, concurrency=2) as worker_process, \
                api(env, port, TOKEN) as api_process:
            stack = Stack(sim, redis_server, worker_process, api_process,
                          f"http://127.0.0.1:{port}", TOKEN, policy)
            yield Rig(stack, allowed, victim)


def probe(url: str, **params: Any) -> dict[str, Any]:
    return {"action": "http-probe", "target": {"namespaces": ["default"]},
            "params": {"url": url, "count": 1, **params}}


def refused_urls(rig: Rig) -> list[str]:
    """Loopback that is not allowed, written four ways; cloud metadata; Pystol's own Redis
    (on 127.0.0.1, which is allowed: Pystol's own services must be named exactly)."""
    port = rig.victim.port
    return [rig.victim.url("/secret"), f"http://2130706434:{port}/secret",
            f"http://0177.0.0.2:{port}/secret", f"http://[::ffff:127.0.0.2]:{port}/secret",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            f"http://127.0.0.1:{rig.stack.redis.port}/"]


# -- (1) refused on the way in, and again in the worker ---------------------------------------

def test_refused_addresses_are_refused_at_submission_naming_the_field(rig: Rig) -> None:
    for url in refused_urls(rig):
        response = rig.stack.call("POST", "/api/v1/jobs", json=probe(url))
        assert response.status_code == 403, (url, response.text)
        problem = response.json()
        assert problem["type"].endswith("policy-refused"), problem
        assert "params.url" in response.text, response.text

    steady = {"action": "pod-kill", "target": {"namespaces": ["shop"],
                                                 "label_selector": "app=web"},
              "dry_run": True, "probes": [{"url": rig.victim.url("/steady")}]}
    response = rig.stack.call("POST", "/api/v1/jobs", json=steady)
    assert response.status_code == 403, response.text
    assert "probes[0].url" in response.text, response.text
    assert rig.victim.hits == []


def test_a_job_that_bypassed_submission_is_refused_before_any_connection(rig: Rig) -> None:
    for url in (rig.victim.url("/bypass"), f"http://127.0.0.1:{rig.stack.redis.port}/"):
        job_id = rig.queue_directly(probe(url, count=3))
        record = rig.stack.wait_for_job(job_id, timeout=30)
        assert record["status"] == "failed", record
        assert "admin policy" in record["reason"] and "params.url" in record["reason"], \
            record["reason"]
    assert rig.victim.hits == []


def test_an_allowed_probe_still_works_and_sends_the_host_it_was_given(rig: Rig) -> None:
    job = rig.stack.submit(probe(rig.allowed.url("/ok"), count=2, interval="10ms"))
    record = rig.stack.wait_for_job(job["id"], timeout=30)
    assert record["status"] == "succeeded", record
    assert record["result"]["output"]["statuses"] == {"200": 2}
    assert rig.allowed.hosts[-1] == f"127.0.0.1:{rig.allowed.port}"


# -- (2) redirects ---------------------------------------------------------------------------

def test_a_redirect_to_a_refused_address_is_not_followed(rig: Rig) -> None:
    to_victim = rig.allowed.url(f"/redirect?to={rig.victim.url('/via-redirect')}")

    # Not asked to follow (the default): the redirect is the answer.
    job = rig.stack.submit(probe(to_victim, expect_status=302))
    record = rig.stack.wait_for_job(job["id"], timeout=30)
    assert record["status"] == "succeeded", record
    assert record["result"]["output"]["statuses"] == {"302": 1}

    # Asked to follow (the policy allows it): the hop to the victim is checked and refused.
    job = rig.stack.submit(probe(to_victim, follow_redirects=True))
    record = rig.stack.wait_for_job(job["id"], timeout=30)
    assert record["status"] == "failed", record
    assert "redirect" in record["reason"] and "refused" in record["reason"], record["reason"]
    assert rig.victim.hits == []

    # A redirect to an allowed address is followed; a loop stops at the policy's limit.
    to_ok = rig.allowed.url(f"/redirect?to={rig.allowed.url('/ok')}")
    job = rig.stack.submit(probe(to_ok, follow_redirects=True))
    record = rig.stack.wait_for_job(job["id"], timeout=30)
    assert record["status"] == "succeeded", record
    loops = rig.allowed.hits.count("/loop")
    job = rig.stack.submit(probe(rig.allowed.url("/loop"), follow_redirects=True))
    record = rig.stack.wait_for_job(job["id"], timeout=30)
    assert record["status"] == "failed", record
    assert "more than 3 redirects" in str(record["result"]["output"]["errors"]), record
    assert rig.allowed.hits.count("/loop") - loops == 4  # the first call and 3 hops


# -- (3), (4) caps ----------------------------------------------------------------------------

def test_a_trickling_server_cannot_hold_a_worker_past_the_timeout(rig: Rig) -> None:
    started = time.monotonic()
    job = rig.stack.submit(probe(rig.allowed.url("/trickle"), timeout="2s"))
    record = rig.stack.wait_for_job(job["id"], timeout=20)
    assert time.monotonic() - started < 10
    assert record["status"] == "failed", record
    assert any("timed out after 2s" in error for error in record["result"]["output"]["errors"])


def test_a_timeout_above_the_policy_cap_is_refused_on_the_way_in_and_in_the_worker(
        rig: Rig) -> None:
    spec = probe(rig.allowed.url("/trickle"), timeout="5m")
    response = rig.stack.call("POST", "/api/v1/jobs", json=spec)
    assert response.status_code == 403 and "params.timeout" in response.text, response.text

    calls = rig.allowed.hits.count("/trickle")
    record = rig.stack.wait_for_job(rig.queue_directly(spec), timeout=30)
    assert record["status"] == "failed", record
    assert "admin policy" in record["reason"] and "params.timeout" in record["reason"], \
        record["reason"]
    assert rig.allowed.hits.count("/trickle") == calls  # refused before calling


def test_an_endless_body_is_read_up_to_the_cap_only(rig: Rig) -> None:
    job = rig.stack.submit(probe(rig.allowed.url("/endless"), timeout="8s"))
    record = rig.stack.wait_for_job(job["id"], timeout=30)
    assert record["status"] == "succeeded", record
    [call] = record["result"]["output"]["calls"]
    assert call["status"] == 200
    assert call["body_bytes"] == MAX_BODY and call["body_cut"] is True, call


# -- (5) cancel and halt ----------------------------------------------------------------------

def wait_until_waiting(rig: Rig, before: int) -> None:
    """Until the trickle server has a new caller: the probe is inside its call."""
    deadline = time.monotonic() + 20
    while rig.allowed.hits.count("/trickle") <= before:
        assert time.monotonic() < deadline, "the probe never called"
        time.sleep(0.05)
    time.sleep(0.3)


def test_cancel_stops_a_probe_in_the_middle_of_a_call(rig: Rig) -> None:
    before = rig.allowed.hits.count("/trickle")
    job = rig.stack.submit(probe(rig.allowed.url("/trickle"), timeout=f"{MAX_SECONDS}s"))
    wait_until_waiting(rig, before)
    asked = time.monotonic()
    assert rig.stack.call("POST", f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
    record = rig.stack.wait_for_job(job["id"], timeout=MAX_SECONDS + 10)
    assert time.monotonic() - asked < 2.5, record
    assert record["status"] == "aborted", record


def test_halt_stops_a_probe_in_the_middle_of_a_call(rig: Rig) -> None:
    before = rig.allowed.hits.count("/trickle")
    job = rig.stack.submit(probe(rig.allowed.url("/trickle"), timeout=f"{MAX_SECONDS}s"))
    wait_until_waiting(rig, before)
    asked = time.monotonic()
    try:
        assert rig.stack.call("POST", "/api/v1/halt", json={"reason": "ssrf test"}
                              ).status_code == 200
        record = rig.stack.wait_for_job(job["id"], timeout=MAX_SECONDS + 10)
        assert time.monotonic() - asked < 2.5, record
        assert record["status"] == "aborted", record
    finally:
        rig.stack.call("DELETE", "/api/v1/halt")
