"""batch/v1 Jobs and CronJobs in pystol-sim, driven with the official client.

A Job's pods run for `sim.pystol.org/run-seconds` of simulated time (the session sim
runs at speed 10) and exit with `sim.pystol.org/exit-code`. CronJob schedules are
wall-clock times; `POST /_sim/cronjobs/fire` makes "now" one of a CronJob's scheduled
times, so the tests need not wait for the minute (one test does wait, to show that the
schedule itself fires).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.support.kube_helpers import gone, wait_for
from tests.support.sim_process import SimProcess

RUN = "sim.pystol.org/run-seconds"
EXIT = "sim.pystol.org/exit-code"


class Clients:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)


@pytest.fixture(scope="module")
def kube(sim: SimProcess) -> Iterator[Clients]:
    api = config.new_client_from_config(config_file=str(sim.kubeconfig))
    yield Clients(api)
    api.close()


@pytest.fixture
def ns(kube: Clients) -> Iterator[str]:
    name = f"batch-{uuid.uuid4().hex[:10]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    kube.batch.delete_collection_namespaced_cron_job(name)
    kube.batch.delete_collection_namespaced_job(name)
    kube.core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    kube.core.delete_namespace(name)


def job_spec(run_seconds: float = 1, exit_code: int = 0, completions: int | None = None,
             parallelism: int | None = None, backoff_limit: int | None = None,
             restart_policy: str = "Never") -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {
        "metadata": {"annotations": {RUN: str(run_seconds), EXIT: str(exit_code)}},
        "spec": {"restartPolicy": restart_policy,
                 "containers": [{"name": "work", "image": "busybox:1.36"}]}}}
    for key, value in (("completions", completions), ("parallelism", parallelism),
                       ("backoffLimit", backoff_limit)):
        if value is not None:
            spec[key] = value
    return spec


def create_job(kube: Clients, ns: str, name: str, **kwargs: Any) -> None:
    kube.batch.create_namespaced_job(ns, {"apiVersion": "batch/v1", "kind": "Job",
                                          "metadata": {"name": name},
                                          "spec": job_spec(**kwargs)})


def conditions(job: client.V1Job) -> dict[str, client.V1JobCondition]:
    return {c.type: c for c in job.status.conditions or () if c.status == "True"}


def finished(kube: Clients, ns: str, name: str) -> client.V1Job | None:
    job = kube.batch.read_namespaced_job(name, ns)
    return job if {"Complete", "Failed"} & set(conditions(job)) else None


def job_pods(kube: Clients, ns: str, name: str) -> list[client.V1Pod]:
    return kube.core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items


# ------------------------------------------------------------------------------------ Jobs


def test_job_runs_its_completions_at_most_parallelism_at_a_time(kube: Clients, ns: str
                                                                 ) -> None:
    """Five completions, two at a time: the pod watch never sees three pods running."""
    stream = watch.Watch()
    events = stream.stream(kube.core.list_namespaced_pod, ns, timeout_seconds=30)
    create_job(kube, ns, "batch5", completions=5, parallelism=2, run_seconds=2)
    phases: dict[str, str] = {}
    most_running = 0
    for event in events:
        pod = event["object"]
        if event["type"] == "DELETED":
            phases.pop(pod.metadata.name, None)
        else:
            phases[pod.metadata.name] = pod.status.phase or "Pending"
        most_running = max(most_running, sum(p in ("Pending", "Running")
                                             for p in phases.values()))
        if sum(p == "Succeeded" for p in phases.values()) == 5:
            stream.stop()
    assert most_running == 2

    job = wait_for(lambda: finished(kube, ns, "batch5"))
    assert set(conditions(job)) == {"SuccessCriteriaMet", "Complete"}
    assert conditions(job)["Complete"].reason == "CompletionsReached"
    assert job.status.succeeded == 5 and not job.status.active and not job.status.failed
    assert job.status.start_time <= job.status.completion_time
    pods = job_pods(kube, ns, "batch5")
    assert len(pods) == 5 and {p.status.phase for p in pods} == {"Succeeded"}
    assert all(p.status.container_statuses[0].state.terminated.exit_code == 0 for p in pods)


def test_job_gets_the_defaults_and_selector_of_a_real_api_server(kube: Clients, ns: str
                                                                  ) -> None:
    create_job(kube, ns, "plain")
    job = wait_for(lambda: (j := kube.batch.read_namespaced_job("plain", ns)).spec.selector
                   and j)
    uid = job.metadata.uid
    assert (job.spec.completions, job.spec.parallelism, job.spec.backoff_limit) == (1, 1, 6)
    assert job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    labels = job.spec.template.metadata.labels
    assert labels["batch.kubernetes.io/job-name"] == labels["job-name"] == "plain"
    assert labels["controller-uid"] == uid
    wait_for(lambda: finished(kube, ns, "plain"))
    (pod,) = kube.core.list_namespaced_pod(
        ns, label_selector=f"batch.kubernetes.io/controller-uid={uid}").items
    assert pod.metadata.owner_references[0].kind == "Job"
    assert pod.metadata.owner_references[0].uid == uid


def test_failing_pods_fail_the_job_past_its_backoff_limit(kube: Clients, ns: str) -> None:
    create_job(kube, ns, "doomed", exit_code=3, backoff_limit=2)
    job = wait_for(lambda: finished(kube, ns, "doomed"), timeout=20)
    assert set(conditions(job)) == {"FailureTarget", "Failed"}
    assert conditions(job)["Failed"].reason == "BackoffLimitExceeded"
    # backoffLimit 2: the first pod and two retries fail, then the Job gives up.
    assert job.status.failed == 3 and not job.status.succeeded and not job.status.active
    pods = job_pods(kube, ns, "doomed")
    assert [p.status.phase for p in pods] == ["Failed"] * 3
    assert {p.status.container_statuses[0].state.terminated.exit_code for p in pods} == {3}
    reasons = {e.reason for e in kube.core.list_namespaced_event(
        ns, field_selector="involvedObject.name=doomed").items}
    assert "BackoffLimitExceeded" in reasons


def test_on_failure_restarts_count_against_the_backoff_limit(kube: Clients, ns: str) -> None:
    create_job(kube, ns, "crashy", exit_code=1, backoff_limit=2, restart_policy="OnFailure")
    job = wait_for(lambda: finished(kube, ns, "crashy"), timeout=20)
    assert conditions(job)["Failed"].reason == "BackoffLimitExceeded"
    # The one pod was restarted in place, not replaced; the Job deletes it when it fails.
    assert job.status.failed == 3
    wait_for(lambda: not [p for p in job_pods(kube, ns, "crashy")
                          if p.metadata.deletion_timestamp is None])


def test_a_job_past_its_active_deadline_fails_and_stops_its_pods(kube: Clients, ns: str
                                                                  ) -> None:
    kube.batch.create_namespaced_job(ns, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "slow"},
        "spec": {**job_spec(run_seconds=600), "activeDeadlineSeconds": 3}})
    job = wait_for(lambda: finished(kube, ns, "slow"), timeout=20)
    assert conditions(job)["Failed"].reason == "DeadlineExceeded"
    assert not job.status.succeeded and not job.status.active
    wait_for(lambda: not [p for p in job_pods(kube, ns, "slow")
                          if p.metadata.deletion_timestamp is None])


def test_a_job_whose_pods_would_restart_forever_is_refused(kube: Clients, ns: str) -> None:
    with pytest.raises(ApiException) as caught:
        create_job(kube, ns, "forever", restart_policy="Always")
    assert caught.value.status == 422
    assert "spec.template.spec.restartPolicy" in caught.value.body
    assert gone(lambda: kube.batch.read_namespaced_job("forever", ns))


# -------------------------------------------------------------------------------- CronJobs


def cronjob(name: str, schedule: str = "0 0 1 1 *", run_seconds: float = 1,
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": schedule, **spec,
                     "jobTemplate": {"metadata": {"labels": {"cron": name}},
                                     "spec": job_spec(run_seconds=run_seconds)}}}


def fire(sim: SimProcess, ns: str, name: str) -> dict[str, Any]:
    status, body = sim.request("POST", "/_sim/cronjobs/fire", {"namespace": ns, "name": name})
    assert status == 200, body
    return body


def jobs_of(kube: Clients, ns: str, name: str) -> list[client.V1Job]:
    return [j for j in kube.batch.list_namespaced_job(ns, label_selector=f"cron={name}").items
            if j.metadata.deletion_timestamp is None]


def test_a_fired_cronjob_creates_its_job_and_records_the_run(sim: SimProcess, kube: Clients,
                                                               ns: str) -> None:
    kube.batch.create_namespaced_cron_job(ns, cronjob("nightly"))
    assert fire(sim, ns, "nightly")["job"].startswith("nightly-")
    (job,) = jobs_of(kube, ns, "nightly")
    assert job.metadata.owner_references[0].kind == "CronJob"
    assert "batch.kubernetes.io/cronjob-scheduled-timestamp" in job.metadata.annotations
    running = wait_for(lambda: kube.batch.read_namespaced_cron_job("nightly", ns).status.active)
    assert [ref.name for ref in running] == [job.metadata.name]

    wait_for(lambda: finished(kube, ns, job.metadata.name))
    status = wait_for(lambda: (s := kube.batch.read_namespaced_cron_job("nightly", ns).status)
                      .last_successful_time and s)
    assert not status.active
    assert status.last_schedule_time is not None


def test_forbid_skips_a_run_while_the_last_one_runs(sim: SimProcess, kube: Clients, ns: str
                                                     ) -> None:
    kube.batch.create_namespaced_cron_job(ns, cronjob("single", concurrencyPolicy="Forbid",
                                                      run_seconds=600))
    first = fire(sim, ns, "single")["job"]
    assert fire(sim, ns, "single") == {"job": None, "reason": "JobAlreadyActive"}
    assert [j.metadata.name for j in jobs_of(kube, ns, "single")] == [first]
    reasons = {e.reason for e in kube.core.list_namespaced_event(
        ns, field_selector="involvedObject.name=single").items}
    assert "JobAlreadyActive" in reasons


def test_replace_deletes_the_running_job_for_the_new_one(sim: SimProcess, kube: Clients,
                                                          ns: str) -> None:
    kube.batch.create_namespaced_cron_job(ns, cronjob("fresh", concurrencyPolicy="Replace",
                                                      run_seconds=600))
    first = fire(sim, ns, "fresh")["job"]
    second = fire(sim, ns, "fresh")["job"]
    assert second and second != first
    wait_for(lambda: [j.metadata.name for j in jobs_of(kube, ns, "fresh")] == [second])
    wait_for(lambda: gone(lambda: kube.batch.read_namespaced_job(first, ns)))


def test_finished_jobs_beyond_the_history_limit_are_deleted(sim: SimProcess, kube: Clients,
                                                            ns: str) -> None:
    kube.batch.create_namespaced_cron_job(ns, cronjob("tidy", successfulJobsHistoryLimit=2))
    names = []
    for _ in range(4):
        names.append(fire(sim, ns, "tidy")["job"])
        wait_for(lambda: finished(kube, ns, names[-1]))
    # The two newest successful Jobs are kept, the older ones go (with their pods).
    wait_for(lambda: sorted(j.metadata.name for j in jobs_of(kube, ns, "tidy"))
             == sorted(names[2:]))
    wait_for(lambda: not job_pods(kube, ns, names[0]))


def test_a_cronjob_with_a_bad_schedule_is_refused(kube: Clients, ns: str) -> None:
    with pytest.raises(ApiException) as caught:
        kube.batch.create_namespaced_cron_job(ns, cronjob("broken", schedule="61 * * * *"))
    assert caught.value.status == 422
    assert "spec.schedule" in caught.value.body
    with pytest.raises(ApiException) as caught:
        kube.batch.create_namespaced_cron_job(ns, cronjob("lost", timeZone="Mars/Olympus"))
    assert caught.value.status == 422 and "spec.timeZone" in caught.value.body


def test_a_suspended_cronjob_does_not_run(sim: SimProcess, kube: Clients, ns: str) -> None:
    kube.batch.create_namespaced_cron_job(ns, cronjob("paused", suspend=True))
    assert fire(sim, ns, "paused") == {"job": None, "reason": "suspended"}
    assert not jobs_of(kube, ns, "paused")


def test_an_every_minute_schedule_fires_on_the_wall_clock(kube: Clients, ns: str) -> None:
    """The one test that waits for a real minute boundary: the schedule fires by itself."""
    kube.batch.create_namespaced_cron_job(ns, cronjob("minutely", schedule="* * * * *"))
    (job,) = wait_for(lambda: jobs_of(kube, ns, "minutely"), timeout=75, interval=0.5)
    scheduled = job.metadata.annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    assert scheduled.endswith(":00Z")  # a whole minute, as the schedule says
    status = kube.batch.read_namespaced_cron_job("minutely", ns).status
    assert status.last_schedule_time.strftime("%Y-%m-%dT%H:%M:%SZ") == scheduled


# ------------------------------------------------------------ hostile specs (bounds)


def test_a_job_asking_for_millions_of_pods_is_refused(kube: Clients, ns: str) -> None:
    """parallelism and completions are capped at 100,000 (Kubernetes' bound for an Indexed
    Job): ten million would only exhaust the sim's memory."""
    with pytest.raises(ApiException) as caught:
        create_job(kube, ns, "swarm", parallelism=10_000_000, completions=10_000_000)
    assert caught.value.status == 422
    assert "spec.parallelism" in caught.value.body and "spec.completions" in caught.value.body
    assert gone(lambda: kube.batch.read_namespaced_job("swarm", ns))
    assert not kube.core.list_namespaced_pod(ns).items


def test_an_endless_backoff_limit_is_refused_on_jobs_and_cronjobs(kube: Clients, ns: str
                                                                   ) -> None:
    with pytest.raises(ApiException) as caught:
        create_job(kube, ns, "retry", exit_code=1, run_seconds=0.1, backoff_limit=2147483647)
    assert caught.value.status == 422 and "spec.backoffLimit" in caught.value.body
    body = cronjob("retry")
    body["spec"]["jobTemplate"]["spec"]["backoffLimit"] = 2147483647
    with pytest.raises(ApiException) as caught:
        kube.batch.create_namespaced_cron_job(ns, body)
    assert caught.value.status == 422
    assert "spec.jobTemplate.spec.backoffLimit" in caught.value.body


def test_a_failed_pod_is_replaced_after_the_failure_back_off(kube: Clients, ns: str) -> None:
    """A pod that fails at once is not replaced at once: the replacement is created at
    least the 10 s back-off (simulated; 1 s at the tests' speed 10) after the failure."""
    create_job(kube, ns, "flaky", exit_code=1, run_seconds=0.1, backoff_limit=1)
    job = wait_for(lambda: finished(kube, ns, "flaky"), timeout=20)
    assert conditions(job)["Failed"].reason == "BackoffLimitExceeded"
    first, second = sorted(job_pods(kube, ns, "flaky"),
                           key=lambda p: p.metadata.creation_timestamp)
    failed_at = first.status.container_statuses[0].state.terminated.finished_at
    assert (second.metadata.creation_timestamp - failed_at).total_seconds() >= 1


def test_a_huge_cron_schedule_or_time_zone_is_refused(kube: Clients, ns: str) -> None:
    """Kubernetes sets no limit, the sim refuses a schedule over 1,024 characters (a
    200 KB one took minutes of parsing per reconcile) and a time zone over 64."""
    with pytest.raises(ApiException) as caught:
        kube.batch.create_namespaced_cron_job(
            ns, cronjob("long", schedule="1," * 100_000 + "1 * * * *"))
    assert caught.value.status == 422 and "spec.schedule" in caught.value.body
    with pytest.raises(ApiException) as caught:
        kube.batch.create_namespaced_cron_job(ns, cronjob("far", timeZone="Europe/" + "x" * 80))
    assert caught.value.status == 422 and "spec.timeZone" in caught.value.body
    assert not kube.batch.list_namespaced_cron_job(ns).items


def test_a_job_status_patched_with_garbage_does_not_stop_other_jobs(kube: Clients, ns: str
                                                                     ) -> None:
    create_job(kube, ns, "odd", run_seconds=600)
    wait_for(lambda: (kube.batch.read_namespaced_job("odd", ns).status.active or 0) == 1)
    # Anyone with jobs/status write access can put anything in the counters.
    kube.batch.patch_namespaced_job_status("odd", ns, {"status": {"succeeded": "many",
                                                                  "failed": None}},
                                           _preload_content=False).release_conn()
    create_job(kube, ns, "next")
    job = wait_for(lambda: finished(kube, ns, "next"), timeout=20)
    assert conditions(job)["Complete"].reason == "CompletionsReached"
    # The job controller reads the garbage as zero and writes its own counts back.
    odd = wait_for(lambda: _readable(kube, ns, "odd"))
    assert odd.status.active == 1 and not odd.status.succeeded


def _readable(kube: Clients, ns: str, name: str) -> client.V1Job | None:
    try:
        return kube.batch.read_namespaced_job(name, ns)
    except ValueError:  # the client refuses to parse "many" as an integer
        return None
