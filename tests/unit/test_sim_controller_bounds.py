"""The sim's controllers under hostile specs: bounded work per reconcile, back-off, and a
bad object that cannot stall the others.

Everything runs in-process on `Cluster(Store(), Catalogue(), Timings())`: the objects are
written straight into the store (as a scenario would load them, past admission) so the
controllers themselves are what is tested; the 422s admission gives are checked through
`validate_object`, the function the API server calls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pystol_sim import cron_schedule
from pystol_sim.cluster import Cluster, Timings
from pystol_sim.controllers.job import JobController
from pystol_sim.errors import ApiError
from pystol_sim.resources import Catalogue, ResourceType
from pystol_sim.store import Store, random_suffix
from pystol_sim.validation import validate_object

RUN = "sim.pystol.org/run-seconds"
EXIT = "sim.pystol.org/exit-code"
MAX_PODS_PER_SYNC = 500  # kube's MaxPodCreateDeletePerSync, as the README documents


def run(body: Callable[[Cluster], Coroutine[Any, Any, None]], speed: float = 1.0) -> None:
    async def main() -> None:
        cluster = Cluster(Store(), Catalogue(), Timings(), speed)
        cluster.store.create(rtype(cluster, "", "v1", "namespaces"),
                             {"metadata": {"name": "t"}})
        try:
            await body(cluster)
        finally:
            await cluster.stop()

    asyncio.run(main())


def rtype(cluster: Cluster, group: str, version: str, plural: str) -> ResourceType:
    found = cluster.catalogue.get(group, version, plural)
    assert found is not None
    return found


def pod_template(run_seconds: float = 600, exit_code: int = 0) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"},
                         "annotations": {RUN: str(run_seconds), EXIT: str(exit_code)}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox:1.36"}]}}


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": pod_template(), **spec}}


def pods_of(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.store.list_objects(cluster.pods, "t")


def causes(rt: ResourceType, obj: dict[str, Any]) -> str:
    with pytest.raises(ApiError) as caught:
        validate_object(rt, obj)
    assert caught.value.code == 422
    return str(caught.value.message) + repr(caught.value.details)


# ------------------------------------------------------------------- H3: bounded pod creation


def test_a_huge_job_creates_at_most_500_pods_per_reconcile() -> None:
    async def body(cluster: Cluster) -> None:
        jobs = rtype(cluster, "batch", "v1", "jobs")
        cluster.store.create(jobs, job("wide", parallelism=1200, completions=1200), "t")
        stored = cluster.store.get(jobs, "t", "wide")
        controller = cluster.manager.get(JobController)
        controller.reconcile(stored)  # fills the defaults, as on its first look
        controller.reconcile(cluster.store.get(jobs, "t", "wide"))
        assert len(pods_of(cluster)) == MAX_PODS_PER_SYNC
        # ...and the Job is requeued for the rest, which later reconciles create.
        cluster.manager.reconcile_all()
        assert len(pods_of(cluster)) == 1200

    run(body)


def test_the_controller_loop_yields_between_batches_of_pods() -> None:
    """While a Job creates 1,200 pods the event loop (the API server) gets turns."""
    async def body(cluster: Cluster) -> None:
        jobs = rtype(cluster, "batch", "v1", "jobs")
        cluster.start()
        cluster.store.create(jobs, job("wide", parallelism=1200, completions=1200), "t")
        seen: list[int] = []
        while not seen or seen[-1] < 1200:
            await asyncio.sleep(0)
            seen.append(len(cluster.store.table(cluster.pods).objects))
            assert len(seen) < 100_000
        assert any(0 < n < 1200 for n in seen)

    run(body)


@pytest.mark.parametrize(("plural", "extra"), [("replicasets", {}), ("statefulsets", {
    "podManagementPolicy": "Parallel", "serviceName": "x"})])
def test_huge_replicas_create_at_most_500_pods_per_reconcile(plural: str,
                                                             extra: dict[str, Any]) -> None:
    async def body(cluster: Cluster) -> None:
        rt = rtype(cluster, "apps", "v1", plural)
        template = pod_template()
        obj = {"metadata": {"name": "big"},
               "spec": {"replicas": 800, "selector": {"matchLabels": {"app": "x"}},
                        "template": template, **extra}}
        cluster.store.create(rt, obj, "t")
        controller = cluster.manager._by_resource[rt.key]
        controller.reconcile(cluster.store.get(rt, "t", "big"))
        assert len(pods_of(cluster)) == MAX_PODS_PER_SYNC
        cluster.manager.reconcile_all()
        assert len(pods_of(cluster)) == 800

    run(body)


@pytest.mark.parametrize(("group", "plural", "spec"), [
    ("apps", "replicasets", {"replicas": 3, "selector": {"matchLabels": {"app": "x"}}}),
    ("batch", "jobs", {"parallelism": 3, "completions": 3}),
])
def test_a_generated_pod_name_that_collides_is_drawn_again_not_given_up(
        group: str, plural: str, spec: dict[str, Any]) -> None:
    """A random `<owner>-xxxxx` name that a pod already has is a collision, not a refusal:
    the 500-pod ReplicaSet above once stopped at 427 because one draw out of 500 hit a
    name it had just used. The store draws again, as kube-apiserver's RetryGenerateName
    does, so every pod is created in the one reconcile."""
    async def body(cluster: Cluster) -> None:
        rt = rtype(cluster, group, "v1", plural)
        state = random.getstate()
        first_draw = random_suffix()
        random.setstate(state)
        cluster.store.create(cluster.pods, {  # the name the first draw will give
            "metadata": {"name": f"big-{first_draw}", "labels": {"other": "y"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}, "t")
        random.setstate(state)
        cluster.store.create(rt, {"metadata": {"name": "big"},
                                  "spec": {"template": pod_template(), **spec}}, "t")
        controller = cluster.manager._by_resource[rt.key]
        controller.reconcile(cluster.store.get(rt, "t", "big"))
        if plural == "jobs":  # the first look fills the defaults
            controller.reconcile(cluster.store.get(rt, "t", "big"))
        owned = [p for p in pods_of(cluster) if p["metadata"].get("ownerReferences")]
        assert len(owned) == 3
        assert all(p["metadata"]["generateName"] == "big-" for p in owned)

    run(body)


def test_a_failed_job_pod_is_replaced_only_after_the_failure_back_off() -> None:
    """backoffLimit huge and pods failing at once: the replacements wait 10 s, 20 s, ...
    (simulated) instead of piling up failed pods as fast as the loop turns."""
    async def body(cluster: Cluster) -> None:
        jobs = rtype(cluster, "batch", "v1", "jobs")
        spec = job("flaky", backoffLimit=1000)
        spec["spec"]["template"] = pod_template(run_seconds=0.1, exit_code=1)
        cluster.store.create(jobs, spec, "t")
        controller = cluster.manager.get(JobController)
        controller.reconcile(cluster.store.get(jobs, "t", "flaky"))  # defaults
        controller.reconcile(cluster.store.get(jobs, "t", "flaky"))  # the first pod
        (pod,) = pods_of(cluster)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod["status"] = {"phase": "Failed", "containerStatuses": [{
            "name": "c", "state": {"terminated": {"exitCode": 1, "finishedAt": now}}}]}
        cluster.store.put(cluster.pods, pod)
        for _ in range(50):  # however often it is looked at within the back-off
            controller.reconcile(cluster.store.get(jobs, "t", "flaky"))
        assert len(pods_of(cluster)) == 1
        # Once the failure is older than the back-off, the pod is replaced.
        long_ago = (datetime.now(UTC) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod = pods_of(cluster)[0]
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = long_ago
        cluster.store.put(cluster.pods, pod)
        controller.reconcile(cluster.store.get(jobs, "t", "flaky"))
        assert len(pods_of(cluster)) == 2

    run(body)


def test_job_counts_beyond_the_documented_bound_are_refused() -> None:
    catalogue = Catalogue()
    jobs = catalogue.get("batch", "v1", "jobs")
    cronjobs = catalogue.get("batch", "v1", "cronjobs")
    assert jobs is not None and cronjobs is not None
    for field in ("parallelism", "completions", "backoffLimit"):
        text = causes(jobs, job("huge", **{field: 10_000_000}))
        assert f"spec.{field}" in text and "100000" in text
    validate_object(jobs, job("fine", parallelism=100_000, completions=100_000))
    cron = {"metadata": {"name": "c"}, "spec": {"schedule": "* * * * *", "jobTemplate": {
        "spec": {"template": pod_template(), "backoffLimit": 2147483647}}}}
    assert "spec.jobTemplate.spec.backoffLimit" in causes(cronjobs, cron)


# --------------------------------------------------- M4: bad integers, and one bad key


def deployment(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                     "template": pod_template(), **spec}}


def test_integer_fields_controllers_read_are_validated() -> None:
    catalogue = Catalogue()
    deployments = catalogue.get("apps", "v1", "deployments")
    jobs = catalogue.get("batch", "v1", "jobs")
    cronjobs = catalogue.get("batch", "v1", "cronjobs")
    assert deployments is not None and jobs is not None and cronjobs is not None
    for field in ("revisionHistoryLimit", "progressDeadlineSeconds", "minReadySeconds"):
        assert f"spec.{field}" in causes(deployments, deployment(**{field: "abc"}))
    assert "spec.revisionHistoryLimit" in causes(deployments,
                                                 deployment(revisionHistoryLimit=-1))
    validate_object(deployments, deployment(revisionHistoryLimit=None))  # null: the default
    for field in ("activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert f"spec.{field}" in causes(jobs, job("j", **{field: "soon"}))
    cron = {"metadata": {"name": "c"}, "spec": {
        "schedule": "* * * * *", "startingDeadlineSeconds": "x",
        "jobTemplate": {"spec": {"template": pod_template()}}}}
    assert "spec.startingDeadlineSeconds" in causes(cronjobs, cron)


def test_a_deployment_with_a_bad_history_limit_does_not_stall_other_objects() -> None:
    """A Deployment loaded with revisionHistoryLimit "abc" (or null) reconciles anyway, and
    even a reconcile that raises costs only its own key, not every pending one."""
    async def body(cluster: Cluster) -> None:
        deployments = rtype(cluster, "apps", "v1", "deployments")
        replicasets = rtype(cluster, "apps", "v1", "replicasets")
        for name, limit in (("abc", "abc"), ("null", None)):
            obj = deployment(revisionHistoryLimit=limit)
            obj["metadata"]["name"] = name
            cluster.store.create(deployments, obj, "t")
        cluster.manager.reconcile_all()
        assert cluster.manager.failures == 0
        assert len(cluster.store.list_objects(replicasets, "t")) == 2

        jobs = rtype(cluster, "batch", "v1", "jobs")
        controller = cluster.manager.get(JobController)
        original = controller.reconcile

        def explode(obj: dict[str, Any]) -> None:
            if obj["metadata"]["name"] == "bad":
                raise RuntimeError("boom")
            original(obj)

        controller.reconcile = explode  # type: ignore[method-assign,assignment]
        cluster.store.create(jobs, job("bad"), "t")
        cluster.store.create(jobs, job("good"), "t")
        cluster.manager.reconcile_all()
        assert cluster.manager.failures >= 1
        names = {p["metadata"]["ownerReferences"][0]["name"] for p in pods_of(cluster)
                 if p["metadata"]["ownerReferences"][0]["kind"] == "Job"}
        assert names == {"good"}

    run(body)


def test_null_counts_mean_the_defaults() -> None:
    """Admission lets `null` through (it means "the default"), so the controllers must read
    it so: a Job with null parallelism and backoffLimit, a ReplicaSet with null replicas."""
    async def body(cluster: Cluster) -> None:
        jobs = rtype(cluster, "batch", "v1", "jobs")
        replicasets = rtype(cluster, "apps", "v1", "replicasets")
        validate_object(jobs, job("nulls", parallelism=None, backoffLimit=None))
        cluster.store.create(jobs, job("nulls", parallelism=None, backoffLimit=None), "t")
        cluster.store.create(replicasets, {"metadata": {"name": "rs"}, "spec": {
            "replicas": None, "selector": {"matchLabels": {"app": "x"}},
            "template": pod_template()}}, "t")
        cluster.manager.reconcile_all()
        assert cluster.manager.failures == 0
        assert len(pods_of(cluster)) == 2

    run(body)


def test_a_job_status_counter_written_as_garbage_is_read_as_zero() -> None:
    async def body(cluster: Cluster) -> None:
        jobs = rtype(cluster, "batch", "v1", "jobs")
        cluster.store.create(jobs, job("odd"), "t")
        cluster.manager.reconcile_all()
        stored = cluster.store.get(jobs, "t", "odd")
        stored["status"] = {**(stored.get("status") or {}), "succeeded": "many",
                            "failed": None}
        cluster.store.put(jobs, stored)
        cluster.manager.reconcile_all()
        assert cluster.manager.failures == 0
        status = cluster.store.get(jobs, "t", "odd")["status"]
        assert status.get("active") == 1 and "succeeded" not in status

    run(body)


# --------------------------------------------------------------- M5: CronJob schedules


def test_a_huge_schedule_or_time_zone_is_refused_naming_the_field() -> None:
    cronjobs = Catalogue().get("batch", "v1", "cronjobs")
    assert cronjobs is not None

    def cron(**spec: Any) -> dict[str, Any]:
        return {"metadata": {"name": "c"}, "spec": {
            "schedule": "* * * * *", **spec,
            "jobTemplate": {"spec": {"template": pod_template()}}}}

    text = causes(cronjobs, cron(schedule="1," * 100_000 + "1 * * * *"))
    assert "spec.schedule" in text and "Too long" in text
    text = causes(cronjobs, cron(timeZone="Europe/" + "x" * 100))
    assert "spec.timeZone" in text and "Too long" in text
    validate_object(cronjobs, cron(schedule="0,15,30,45 9-17 * * 1-5", timeZone="Europe/Oslo"))


def test_a_schedule_is_parsed_once_not_at_every_next_run(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from celery import schedules

    built: list[str] = []
    real = schedules.crontab

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs["minute"])
        return real(*args, **kwargs)

    monkeypatch.setattr(schedules, "crontab", counting)
    clear_cache = getattr(getattr(cron_schedule, "_crontab", None), "cache_clear", lambda: None)
    clear_cache()
    schedule = cron_schedule.parse_schedule("7,8,9 * * * *")
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(100):
        moment = schedule.next_after(moment)
    cron_schedule.parse_schedule("7,8,9 * * * *")
    assert built == ["7,8,9"]
    clear_cache()


# ----------------------------------------------------------------- L5: Job deadline timers


def test_a_running_job_with_a_deadline_keeps_one_timer_however_often_reconciled() -> None:
    async def body(cluster: Cluster) -> None:
        jobs = rtype(cluster, "batch", "v1", "jobs")
        cluster.start()
        cluster.store.create(jobs, job("long", activeDeadlineSeconds=10**9), "t")
        await asyncio.sleep(0.05)
        before = len(cluster.manager._timers)
        controller = cluster.manager.get(JobController)
        for _ in range(200):
            controller.reconcile(cluster.store.get(jobs, "t", "long"))
        assert len(cluster.manager._timers) == before

    run(body)


def test_a_finished_pod_without_a_node_is_never_scheduled_back_to_pending() -> None:
    """A scenario or snapshot may load a Succeeded pod with no node; binding it would make
    it Pending again, counted by quotas without ever passing admission."""
    async def body(cluster: Cluster) -> None:
        pods = rtype(cluster, "", "v1", "pods")
        cluster.load([{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                       "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "10"}}},
                      {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "done", "namespace": "t"},
                       "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
                       "status": {"phase": "Succeeded"}}])
        pod = cluster.store.get(pods, "t", "done")
        assert pod["status"]["phase"] == "Succeeded"
        assert not pod["spec"].get("nodeName")

    run(body)


def test_history_pruning_keeps_the_newest_scheduled_jobs_whatever_order_they_come_in() -> None:
    """Jobs fired within one second share a creationTimestamp: pruning must go by the
    scheduled time, or the newest Job can be the one deleted."""
    from pystol_sim.controllers.cronjob import SCHEDULED_AT, CronJobController

    async def body(cluster: Cluster) -> None:
        jobs_t = rtype(cluster, "batch", "v1", "jobs")
        jobs = []
        for minute in (3, 1, 2):  # the order the owner index happens to give
            job = {"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": f"tidy-{minute}", "namespace": "t",
                                "annotations": {SCHEDULED_AT: f"2026-12-06T16:2{minute}:00Z"}},
                   "spec": {"template": pod_template()},
                   "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
            cluster.store.create(jobs_t, job, "t")  # created 3, 1, 2: oldest is newest
            jobs.append(cluster.store.get(jobs_t, "t", job["metadata"]["name"]))
        cluster.manager.get(CronJobController)._prune(jobs, {"successfulJobsHistoryLimit": 2})
        assert sorted(j["metadata"]["name"] for j in cluster.store.list_objects(jobs_t, "t")) \
            == ["tidy-2", "tidy-3"]

    run(body)
