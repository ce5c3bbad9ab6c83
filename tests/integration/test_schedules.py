"""Scheduled chaos end to end: redis-server, pystol-sim, a worker, the API and `pystol beat`.

Schedules are created over HTTP; beat (celery-redbeat) fires them from Redis; the worker's
`pystol.fire_schedule` task decides each slot and queues a normal job. What the tests read
back is what a user sees: job records (`source: schedule`, `schedule_id`), the
schedule's `last_runs` and the audit trail. Each job's idempotency key is
`schedule:{id}:{slot ms}`, which says which nominal slot it ran for.
"""

from __future__ import annotations

import itertools
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config

from pystol_api.http.auth import submitter_name
from tests.support.pystol_processes import Process, api, beat, start_beat, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

TOKEN = "schedules-token"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class Stack:
    sim: SimProcess
    redis: RedisServer
    worker: Process
    beat: Process
    url: str
    env: dict[str, str]

    def call(self, method: str, path: str, token: str = TOKEN, **kwargs: Any
             ) -> requests.Response:
        return requests.request(method, self.url + path, timeout=30,
                                headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def named_token(self, name: str, role: str, namespace: str) -> str:
        """A named token made by the admin, as `pystol tokens create` makes one; its secret."""
        made = self.call("POST", "/api/v1/tokens", json={"name": name, "role": role,
                                                          "namespaces": [namespace]})
        assert made.status_code == 201, made.text
        secret: str = made.json()["token"]
        return secret

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.call("POST", "/api/v1/schedules", json=body)
        assert answer.status_code == 201, answer.text
        return answer.json()

    def schedule(self, schedule_id: str) -> dict[str, Any]:
        answer = self.call("GET", f"/api/v1/schedules/{schedule_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def delete(self, schedule_id: str) -> None:
        assert self.call("DELETE", f"/api/v1/schedules/{schedule_id}").status_code == 204

    def jobs(self, schedule_id: str) -> list[dict[str, Any]]:
        """The schedule's jobs, oldest first."""
        items = self.call("GET", "/api/v1/jobs", params={"limit": 200}).json()["items"]
        mine = [job for job in items if job["schedule_id"] == schedule_id]
        return sorted(mine, key=lambda job: job["created_at"])

    def wait_ended(self, jobs: list[dict[str, Any]], timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        ended = []
        for job in jobs:
            while True:
                record = self.call("GET", f"/api/v1/jobs/{job['id']}").json()
                if record["status"] not in ("queued", "running"):
                    ended.append(record)
                    break
                assert time.monotonic() < deadline, f"{job['id']} never ended: {record}"
                time.sleep(0.1)
        return ended

    def restart_beat(self, down_seconds: float) -> tuple[float, float]:
        """SIGTERM beat, leave it down, start it again; (stopped at, ready again at)."""
        self.beat.process.send_signal(signal.SIGTERM)
        self.beat.process.wait(15)
        stopped = time.time()
        time.sleep(down_seconds)
        self.beat = start_beat(self.env)
        return stopped, time.time()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
          ) -> Iterator[Stack]:
    redis_server.client().flushdb()
    workdir: Path = tmp_path_factory.mktemp("schedules")
    # Schedules firing every second or two are what these tests watch: the admin policy
    # (default: at most once a minute) allows them here, in every process.
    policy = workdir / "policy.yaml"
    policy.write_text("min_schedule_period: 1s\n")
    with SimProcess.start(workdir, speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               "PYSTOL_POLICY_FILE": str(policy)}
        port = free_port()
        with worker(env, concurrency=2) as worker_process, api(env, port, TOKEN), \
                beat(env) as beat_handle:
            running = Stack(sim, redis_server, worker_process, beat_handle,
                            f"http://127.0.0.1:{port}", env)
            yield running
            running.beat.stop()


def dry_run_template() -> dict[str, Any]:
    return {"action": "pod-kill", "dry_run": True,
            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}


def slot_of(job: dict[str, Any]) -> int:
    return int(job["spec"]["idempotency_key"].rsplit(":", 1)[1])


def seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def make_workload(stack: Stack, replicas: int = 3) -> tuple[str, str]:
    api_client = config.new_client_from_config(config_file=str(stack.sim.kubeconfig))
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    namespace = f"sched-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "victim"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "victim"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": {
                     "sim.pystol.org/start-seconds": "1", "sim.pystol.org/ready-seconds": "1"}},
                     "spec": {"containers": [{"name": "app", "image": "pause"}]}}}})
    deadline = time.monotonic() + 30
    while (apps.read_namespaced_deployment(namespace=namespace, name="victim").status
           .ready_replicas or 0) < replicas:
        assert time.monotonic() < deadline, "deployment never became ready"
        time.sleep(0.1)
    return namespace, "app=victim"


def test_interval_schedule_runs_on_its_slots(stack: Stack) -> None:
    record = stack.create({"id": "every-2s", "interval": "2s", "template": dry_run_template()})
    created = seconds(record["created_at"])
    assert abs(seconds(record["next_run_at"]) - (created + 2)) < 0.01
    # Slots at +2, +4, +6, +8: wait for the fourth job (a fixed sleep lost it when a fire
    # on a loaded machine came after the delete), then stop the schedule.
    deadline = time.monotonic() + 20
    while len(stack.jobs("every-2s")) < 4:
        assert time.monotonic() < deadline, stack.jobs("every-2s")
        time.sleep(0.1)
    stack.delete("every-2s")
    jobs = stack.wait_ended(stack.jobs("every-2s"))
    assert len(jobs) in (4, 5), [job["created_at"] for job in jobs]  # +10 if due by then
    slots = [slot_of(job) for job in jobs]
    assert all(later - earlier == 2000 for earlier, later in itertools.pairwise(slots)), slots
    assert slots[0] == round(created * 1000) + 2000
    created_at = [seconds(job["created_at"]) for job in jobs]
    gaps = [later - earlier for earlier, later in itertools.pairwise(created_at)]
    assert all(abs(gap - 2.0) < 1.0 for gap in gaps), gaps
    for job in jobs:
        assert job["source"] == "schedule" and job["schedule_id"] == "every-2s"
        assert job["status"] == "succeeded", job
        late = seconds(job["created_at"]) - slot_of(job) / 1000
        assert 0 <= late < 1.0, late  # created soon after its nominal time (typically 10 ms)


def test_paused_schedule_runs_nothing_until_resumed(stack: Stack) -> None:
    stack.create({"id": "paused", "interval": "1s", "paused": True,
                  "template": dry_run_template()})
    time.sleep(3.5)
    assert stack.jobs("paused") == []
    assert stack.schedule("paused")["next_run_at"] is None
    resumed = stack.call("PATCH", "/api/v1/schedules/paused", json={"paused": False})
    assert resumed.status_code == 200 and resumed.json()["next_run_at"] is not None
    time.sleep(3.5)
    stack.delete("paused")
    jobs = stack.jobs("paused")
    assert 2 <= len(jobs) <= 4, jobs
    assert all(slot_of(job) / 1000 > seconds(resumed.json()["updated_at"]) for job in jobs)


def test_window_that_excludes_now_runs_nothing_and_says_why(stack: Stack) -> None:
    two_days_ahead = WEEKDAYS[(datetime.now(UTC).weekday() + 2) % 7]
    stack.create({"id": "closed", "interval": "1s", "windows": [f"{two_days_ahead} 00:00-24:00"],
                  "template": dry_run_template()})
    time.sleep(3.0)
    schedule = stack.schedule("closed")
    stack.delete("closed")
    assert stack.jobs("closed") == []
    [run] = schedule["last_runs"]  # one fire: beat is aimed straight at the opening
    assert (run["outcome"], run["skipped"]) == ("skipped", "outside-window")
    assert "is outside the windows" in run["reason"] and run["count"] > 80_000
    opening = seconds(schedule["next_run_at"])
    assert datetime.fromtimestamp(opening, UTC).strftime("%a").lower() == two_days_ahead
    assert opening - time.time() > 24 * 3600


def test_forbid_skips_while_the_previous_run_holds_its_fault(stack: Stack) -> None:
    namespace, selector = make_workload(stack)
    stack.create({"id": "forbid", "interval": "2s", "concurrency_policy": "Forbid",
                  "template": {"action": "pod-kill", "duration": "10s",
                               "params": {"distribution": "uniform"},
                               "target": {"namespaces": [namespace], "label_selector": selector,
                                          "mode": "fixed", "value": 2}}})
    time.sleep(13.0)
    schedule = stack.schedule("forbid")
    stack.delete("forbid")
    jobs = stack.wait_ended(stack.jobs("forbid"))
    assert 2 <= len(jobs) <= 3, jobs
    for job in jobs:
        assert job["status"] == "succeeded", job
        assert seconds(job["finished_at"]) - seconds(job["started_at"]) > 4.5  # kills at 0 and 5 s
    spans = [(seconds(job["started_at"]), seconds(job["finished_at"])) for job in jobs]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans  # never two at once
    forbidden = [run for run in schedule["last_runs"] if run.get("skipped") == "forbid"]
    assert sum(run["count"] for run in forbidden) >= 2, schedule["last_runs"]
    assert all("concurrency policy Forbid: previous run j-" in run["reason"]
               for run in forbidden)
    started = [run for run in schedule["last_runs"] if run["outcome"] == "started"]
    assert {run["job_id"] for run in started} == {job["id"] for job in jobs}


def test_beat_restart_neither_loses_nor_doubles_a_run(stack: Stack) -> None:
    """While beat is down no fire arrives. At restart redbeat finds the entry overdue and
    fires it once: the latest missed slot is caught up once (starting_deadline_seconds is
    longer than the downtime), the older missed slots are recorded as `not-fired` and never
    run, and no slot makes two jobs."""
    stack.create({"id": "restart", "interval": "2s", "starting_deadline_seconds": 30,
                  "template": dry_run_template()})
    time.sleep(5.0)
    stopped, restarted = stack.restart_beat(down_seconds=4.5)
    time.sleep(5.0)
    schedule = stack.schedule("restart")
    stack.delete("restart")
    jobs = stack.jobs("restart")
    slots = [slot_of(job) for job in jobs]
    assert len(slots) == len(set(slots)), slots  # no slot ran twice
    missed = [run for run in schedule["last_runs"] if run.get("skipped") == "not-fired"]
    assert len(missed) == 1, schedule["last_runs"]
    first_missed = round(seconds(missed[0]["slot_at"]) * 1000)
    last_missed = round(seconds(missed[0]["last_slot_at"]) * 1000)
    not_fired = list(range(first_missed, last_missed + 1, 2000))
    assert len(not_fired) == missed[0]["count"] >= 1
    # Every slot from the first to the last is accounted for exactly once.
    accounted = sorted(slots + not_fired)
    assert accounted == list(range(accounted[0], accounted[-1] + 1, 2000)), accounted
    assert all(stopped * 1000 < slot < restarted * 1000 for slot in not_fired)
    # The slot after the not-fired ones is the caught-up one: it ran once, at restart. It is
    # the latest slot due when the restarted beat fired, so when beat came back just before
    # a slot boundary it is that boundary's slot (due by the time beat fired), not an older
    # one: what matters is that it is no earlier than the downtime and not run before due.
    caught_up = next(job for job in jobs if slot_of(job) == last_missed + 2000)
    assert stopped * 1000 < slot_of(caught_up) <= seconds(caught_up["created_at"]) * 1000
    assert seconds(caught_up["created_at"]) >= restarted - 0.5
    # Before and after the downtime the slots ran on time.
    on_time = [job for job in jobs if job is not caught_up]
    assert on_time and all(seconds(job["created_at"]) - slot_of(job) / 1000 < 1.0
                           for job in on_time)
    assert any(slot_of(job) > restarted * 1000 for job in jobs)
    assert any(slot_of(job) < stopped * 1000 for job in jobs)
    assert stack.beat.process.poll() is None


def test_history_and_next_run_are_shown(stack: Stack) -> None:
    stack.create({"id": "shown", "interval": "1s", "history_limit": 2,
                  "template": dry_run_template()})
    time.sleep(3.6)
    schedule = stack.schedule("shown")
    stack.delete("shown")
    runs = schedule["last_runs"]
    assert len(runs) == 2 and runs[0]["slot_at"] > runs[1]["slot_at"]
    assert all(run["outcome"] == "started" and run["job_id"] for run in runs)
    assert runs[1]["job_status"] in ("succeeded", "running", "queued")
    assert seconds(schedule["next_run_at"]) > seconds(runs[0]["slot_at"])
    assert seconds(schedule["next_run_at"]) - time.time() < 1.5
    assert timedelta(seconds=0) <= datetime.fromisoformat(
        runs[0]["fired_at"].replace("Z", "+00:00")) - datetime.fromisoformat(
        runs[0]["slot_at"].replace("Z", "+00:00")) < timedelta(seconds=1)


def test_a_fired_job_is_audited_as_the_schedule_on_behalf_of_its_last_editor(
        stack: Stack) -> None:
    """Token A creates the schedule, token B changes it: the trail must name the schedule
    and B (who decided what it now runs), not its first creator, once per fired job."""
    creator = stack.named_token("sched-creator", "operator", "shop")
    editor = stack.named_token("sched-editor", "operator", "shop")
    made = stack.call("POST", "/api/v1/schedules", token=creator, json={
        "id": "edited", "interval": "1s", "paused": True, "template": dry_run_template()})
    assert made.status_code == 201, made.text
    # One change that is not a bare pause/resume: an update, then firing.
    changed = stack.call("PATCH", "/api/v1/schedules/edited", token=editor,
                         json={"paused": False, "history_limit": 5})
    assert changed.status_code == 200, changed.text
    deadline = time.monotonic() + 30
    while not stack.jobs("edited"):
        assert time.monotonic() < deadline, "the schedule never fired"
        time.sleep(0.1)
    stack.delete("edited")
    fired = {job["id"] for job in stack.wait_ended(stack.jobs("edited"))}

    trail = stack.call("GET", "/api/v1/audit", params={"operation": "job.submit",
                                                       "limit": 500})
    assert trail.status_code == 200, trail.text
    records = [item for item in trail.json()["items"] if item["schedule_id"] == "edited"]
    assert sorted(item["job_id"] for item in records) == sorted(fired)  # each job once
    for item in records:
        assert item["outcome"] == "ok", item
        actor = item["actor"]
        assert (actor["kind"], actor["name"], actor["on_behalf_of"]) == (
            "schedule", "edited", "token:sched-editor"), actor
    changes = stack.call("GET", "/api/v1/audit", params={"operation": "schedule",
                                                         "limit": 500}).json()["items"]
    assert [(item["operation"], item["actor"]["name"]) for item in reversed(changes)
            if item["schedule_id"] == "edited"] == [
        ("schedule.create", "sched-creator"), ("schedule.update", "sched-editor"),
        ("schedule.delete", submitter_name(TOKEN))]
