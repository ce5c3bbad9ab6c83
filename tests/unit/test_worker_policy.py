"""The admin policy, enforced again by the worker, and the switches that are policy only.

A job is checked against the policy when it is submitted, and sealed. The policy can
change while the job waits in the queue (the admin tightens the file and the workers
restart), so the worker checks the job again against the policy *it* runs under, before it
reads anything of the cluster. Each test here submits a job through the real submission
service under the default policy, where it is allowed, then runs that sealed record with
a runner under a stricter policy: the signal rule, the longest fault and the target cap
must each stop it, naming the field, with the cluster untouched (not even read).

`force` (node-drain) and `include_control_plane` (node actions) were once per-job
switches; they are the admin's now (`drain_force`, `include_control_plane` in the
policy). A job that still carries one is refused at submission, over HTTP, with a 422
naming the field, whatever the policy says, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from pystol_api.http.app import create_app
from pystol_worker.actions import default_registry
from pystol_worker.core.model import JobRecord, JobSpec, JobStatus, Source
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.kube.fake_cluster import FakeCluster
from pystol_worker.store.halt import HaltSwitch
from tests.support.fake_jobs import FakeJobs, app_deployment, pods_of
from tests.support.grants import ADMIN
from tests.support.recording_queue import RecordingQueue

ADMIN_TOKEN = "worker-policy-admin-token"


def submitted_then_run_under(stricter: Policy, document: dict[str, Any]
                             ) -> tuple[FakeJobs, JobRecord]:
    """Submit `document` as the admin under the default policy (it must be accepted and
    queued), then run the stored, sealed record with a worker under `stricter`."""
    jobs = FakeJobs(policy=stricter)
    app_deployment(jobs.fake, namespace="shop", replicas=3)  # on node n1
    jobs.fake.requests.clear()
    queue = RecordingQueue()
    lax = SubmissionService(jobs.store, queue, jobs.runner.registry, jobs.settings,
                            HaltSwitch(jobs.redis), policy=Policy())
    record, created = lax.submit(JobSpec.model_validate(document), Source.API, ADMIN)
    assert created and queue.sent == [record.id], "the default policy should allow it"
    return jobs, jobs.run_stored(record.id)


def assert_refused_before_the_cluster(jobs: FakeJobs, record: JobRecord, loc: str) -> None:
    assert record.status == JobStatus.FAILED, (record.status, record.reason)
    assert (record.reason or "").startswith(f"refused by the admin policy: {loc}: "), \
        record.reason
    assert jobs.fake.requests == [], "the worker read or changed the cluster"
    assert record.result.changes == [] and jobs.journal_entries() == []


def test_a_signal_the_policy_no_longer_allows_stops_the_sealed_job() -> None:
    jobs, record = submitted_then_run_under(
        Policy(signals=["SIGTERM"]),
        {"action": "container-kill", "params": {"signal": "SIGKILL"},
         "target": {"namespaces": ["shop"], "label_selector": "app=web"}})
    assert_refused_before_the_cluster(jobs, record, "params.signal")
    assert "SIGKILL is not allowed" in (record.reason or ""), record.reason


def test_a_fault_longer_than_the_policy_now_allows_stops_the_sealed_job() -> None:
    jobs, record = submitted_then_run_under(
        Policy(max_fault_duration=60),
        {"action": "node-cordon", "duration": "5m", "target": {"names": ["n1"]}})
    assert_refused_before_the_cluster(jobs, record, "duration")


def test_more_targets_than_the_policy_now_allows_stops_the_sealed_job() -> None:
    jobs, record = submitted_then_run_under(
        Policy(max_targets_per_job=2),
        {"action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                          "mode": "fixed", "value": 3}})
    assert_refused_before_the_cluster(jobs, record, "target.value")
    assert len(pods_of(jobs.fake, "shop")) == 3  # nobody was killed


# -- per-job switches that are policy now ------------------------------------------------------


@pytest.fixture(params=["", "drain_force: true\ninclude_control_plane: true\n"],
                ids=["default-policy", "permissive-policy"])
def api(request: pytest.FixtureRequest, tmp_path: Path
        ) -> Iterator[tuple[FlaskClient, RecordingQueue]]:
    """The API under the default policy, or one that allows forced drains and the control
    plane: either way the switch belongs to the policy file, never to a job."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(request.param)
    cluster = FakeCluster()
    cluster.add_node("node-1")
    queue = RecordingQueue()
    settings = Settings(api_tokens=[ADMIN_TOKEN], kubernetes_auth=False,
                        policy_file=str(policy_file))
    app = create_app(settings, redis_client=fakeredis.FakeRedis(), queue=queue,
                     registry=default_registry(),
                     cluster_factory=lambda: cluster)  # type: ignore[arg-type,return-value]
    with app.test_client() as client:
        yield client, queue


@pytest.mark.parametrize(("action", "param"), [("node-drain", "force"),
                                               ("node-drain", "include_control_plane"),
                                               ("node-cordon", "include_control_plane")])
def test_a_per_job_switch_that_is_policy_is_refused_naming_it(
        api: tuple[FlaskClient, RecordingQueue], action: str, param: str) -> None:
    client, queue = api
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    spec = {"action": action, "duration": "10s", "target": {"names": ["node-1"]},
            "params": {param: True}}
    response = client.post("/api/v1/jobs", json=spec, headers=headers)
    assert response.status_code == 422, (response.status_code, response.json)
    problem: dict[str, Any] = response.get_json()
    assert response.mimetype == "application/problem+json"
    said = {error["loc"]: error["msg"] for error in problem["errors"]}
    assert f"params.{param}" in said, problem
    # It says where the switch went, not only that the field is unknown.
    assert "admin policy" in said[f"params.{param}"], said
    assert queue.sent == []
    listed: dict[str, Any] = client.get("/api/v1/jobs", headers=headers).get_json()
    assert listed["items"] == [], "a refused job was stored"
    # Without the switch, or with it off (what the policy's default says anyway), the
    # same job is accepted: the refusal is the switch's alone.
    spec["params"] = {param: False}
    assert client.post("/api/v1/jobs", json=spec, headers=headers).status_code == 202
    del spec["params"]
    assert client.post("/api/v1/jobs", json=spec, headers=headers).status_code == 202

