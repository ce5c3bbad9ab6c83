"""batch/v1 CronJobs: create a Job at each scheduled time, as cronjob-controller-v2 does.

Scheduled times are wall-clock times (in `timeZone`, UTC by default): `--speed`
does not make a `*/5 * * * *` CronJob run more often, because every timestamp
the sim reports (`lastScheduleTime`, the Job's scheduled-timestamp annotation)
is real time and a faster clock would put them in the future. To run a
schedule without waiting for the minute, `POST /_sim/cronjobs/fire` with
`{"namespace": ..., "name": ...}` makes now a scheduled time of that CronJob;
everything else (suspend, concurrencyPolicy, history limits) applies as usual.
The Jobs' own pods then run for simulated seconds, shortened by `--speed`.

At a scheduled time: `suspend` skips it; with `concurrencyPolicy: Forbid` and a
Job still running it is skipped (event `JobAlreadyActive`); with `Replace` the
running Jobs are deleted first. A time missed by more than
`startingDeadlineSeconds` is not run. Finished Jobs beyond
`successfulJobsHistoryLimit` (3) and `failedJobsHistoryLimit` (1) are deleted,
oldest first.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pystol_sim.controllers.job import finished_condition, rfc3339_unix
from pystol_sim.controllers.manager import Controller, ControllerManager
from pystol_sim.controllers.objects import count_of, owner_ref
from pystol_sim.cron_schedule import CronSchedule, ScheduleError, parse_schedule
from pystol_sim.errors import ApiError
from pystol_sim.store import json_copy

COMPONENT = "cronjob-controller"
SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MAX_MISSED = 100  # as the real controller: beyond this many missed times it gives up


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CronJobController(Controller):
    resource = "batch/cronjobs"

    def __init__(self, manager: ControllerManager) -> None:
        super().__init__(manager)
        self._timers: dict[tuple[str, str], datetime] = {}  # (ns, name) -> next time awaited

    def reconcile(self, cronjob: dict[str, Any]) -> None:
        meta = cronjob["metadata"]
        if meta.get("deletionTimestamp"):
            return
        spec = cronjob.get("spec") or {}
        status = dict(cronjob.get("status") or {})
        jobs = self._jobs(cronjob)
        self._prune(jobs, spec)
        schedule = self._schedule(cronjob)
        if schedule is not None and not spec.get("suspend"):
            now = datetime.now(UTC)
            due = self._most_recent_due(cronjob, schedule, now)
            if due is not None:
                self._run(cronjob, due, status)
                jobs = self._jobs(cronjob)
            self._wake_at(cronjob, schedule.next_after(now), now)
        self._write_status(cronjob, status, jobs)

    def fire(self, namespace: str, name: str) -> dict[str, Any]:
        """Make now a scheduled time of this CronJob (the `/_sim/cronjobs/fire` endpoint)."""
        cronjobs = self.manager.type("batch", "v1", "cronjobs")
        cronjob = self.store.get(cronjobs, namespace, name)
        if (cronjob.get("spec") or {}).get("suspend"):
            return {"job": None, "reason": "suspended"}
        status = dict(cronjob.get("status") or {})
        moment = datetime.now(UTC).replace(second=0, microsecond=0)
        last = rfc3339_unix(status.get("lastScheduleTime"))
        if last is not None and moment.timestamp() <= last:
            # Job names carry the scheduled minute: a second fire within one minute is
            # recorded as the next minute, or its Job would collide with the first.
            moment = datetime.fromtimestamp(last, UTC) + timedelta(minutes=1)
        job = self._run(cronjob, moment, status)
        self._write_status(cronjob, status, self._jobs(cronjob))
        return {"job": job, "reason": None if job else "JobAlreadyActive"}

    def _schedule(self, cronjob: dict[str, Any]) -> CronSchedule | None:
        spec = cronjob.get("spec") or {}
        try:
            return parse_schedule(spec.get("schedule", ""), spec.get("timeZone"))
        except ScheduleError as error:
            self.manager.record_event(cronjob, "UnparseableSchedule", str(error),
                                      type_="Warning", component=COMPONENT)
            return None

    def _most_recent_due(self, cronjob: dict[str, Any], schedule: CronSchedule,
                         now: datetime) -> datetime | None:
        """The latest scheduled time in (last run, now], or None; honours the deadline."""
        meta, spec = cronjob["metadata"], cronjob.get("spec") or {}
        since = rfc3339_unix((cronjob.get("status") or {}).get("lastScheduleTime")) \
            or rfc3339_unix(meta.get("creationTimestamp")) or time.time()
        moment = schedule.next_after(datetime.fromtimestamp(since, UTC))
        due: datetime | None = None
        for _ in range(MAX_MISSED):
            if moment > now:
                break
            due = moment
            moment = schedule.next_after(moment)
        if due is None:
            return None
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and (now - due).total_seconds() > float(deadline):
            self.manager.record_event(cronjob, "MissSchedule",
                                      f"Missed scheduled time to start a job: {_stamp(due)}",
                                      type_="Warning", component=COMPONENT)
            return None
        return due

    def on_start(self) -> None:
        """Timers cannot be set while a scenario loads: look at every CronJob once running."""
        cronjobs = self.manager.type("batch", "v1", "cronjobs")
        for key, _ in self.store.select(cronjobs):
            self.manager.mark(cronjobs, *key)

    def _wake_at(self, cronjob: dict[str, Any], moment: datetime, now: datetime) -> None:
        if self.manager.settling:
            return
        key = (cronjob["metadata"]["namespace"], cronjob["metadata"]["name"])
        if self._timers.get(key) == moment:
            return
        self._timers[key] = moment
        seconds = (moment - now).total_seconds() + 0.05
        # `later` counts simulated seconds; a schedule is wall-clock time.
        self.manager.later(seconds * self.manager.speed,
                           self.manager.type("batch", "v1", "cronjobs"), *key)

    def _jobs(self, cronjob: dict[str, Any]) -> list[dict[str, Any]]:
        return self.manager.owned(self.manager.type("batch", "v1", "jobs"), cronjob)

    def _run(self, cronjob: dict[str, Any], moment: datetime, status: dict[str, Any]
             ) -> str | None:
        """Start the Job for scheduled time `moment`, as concurrencyPolicy allows."""
        jobs_t = self.manager.type("batch", "v1", "jobs")
        meta, spec = cronjob["metadata"], cronjob.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        running = [j for j in self._jobs(cronjob) if finished_condition(j) is None
                   and not j["metadata"].get("deletionTimestamp")]
        policy = spec.get("concurrencyPolicy", "Allow")
        if running and policy == "Forbid":
            self.manager.record_event(cronjob, "JobAlreadyActive",
                                      "Not starting job because prior execution is running "
                                      "and concurrency policy is Forbid", component=COMPONENT)
            return None
        if running and policy == "Replace":
            for job in running:
                self.store.delete(jobs_t, ns, job["metadata"]["name"])
                self.manager.record_event(cronjob, "SuccessfulDelete",
                                          f"Deleted job {job['metadata']['name']}",
                                          component=COMPONENT)
        template = json_copy(spec.get("jobTemplate") or {})
        job_meta = template.get("metadata") or {}
        job_name = f"{name}-{int(moment.timestamp() // 60)}"
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": job_name, "namespace": ns,
                            "labels": dict(job_meta.get("labels") or {}),
                            "annotations": {**(job_meta.get("annotations") or {}),
                                            SCHEDULED_AT: _stamp(moment)},
                            "ownerReferences": [owner_ref(cronjob)]},
               "spec": template.get("spec") or {}}
        try:
            self.store.create(jobs_t, job, ns)
        except ApiError as error:
            if error.code != 409:  # 409: this scheduled time's Job exists already
                self.manager.record_event(cronjob, "FailedCreate", f"Error creating job: "
                                          f"{error.message}", type_="Warning",
                                          component=COMPONENT)
                return None
        self.manager.record_event(cronjob, "SuccessfulCreate", f"Created job {job_name}",
                                  component=COMPONENT)
        status["lastScheduleTime"] = _stamp(moment)
        return job_name

    def _prune(self, jobs: list[dict[str, Any]], spec: dict[str, Any]) -> None:
        jobs_t = self.manager.type("batch", "v1", "jobs")
        for outcome, key, default in (("Complete", "successfulJobsHistoryLimit", 3),
                                      ("Failed", "failedJobsHistoryLimit", 1)):
            done = [j for j in jobs if finished_condition(j) == outcome
                    and not j["metadata"].get("deletionTimestamp")]
            # Oldest scheduled time first: Jobs fired within one second share their
            # creationTimestamp, and the order they come in is no order at all.
            done.sort(key=lambda j: ((j["metadata"].get("annotations") or {}).get(
                SCHEDULED_AT, ""), j["metadata"].get("creationTimestamp", ""),
                j["metadata"]["name"]))
            limit = count_of(spec.get(key), default)
            for job in done[: max(0, len(done) - limit)]:
                try:
                    self.store.delete(jobs_t, job["metadata"]["namespace"],
                                      job["metadata"]["name"])
                except ApiError:
                    continue

    def _write_status(self, cronjob: dict[str, Any], status: dict[str, Any],
                      jobs: list[dict[str, Any]]) -> None:
        active = [j for j in jobs if finished_condition(j) is None
                  and not j["metadata"].get("deletionTimestamp")]
        if active:
            status["active"] = [{"apiVersion": "batch/v1", "kind": "Job",
                                 "name": j["metadata"]["name"],
                                 "namespace": j["metadata"]["namespace"],
                                 "uid": j["metadata"]["uid"],
                                 "resourceVersion": j["metadata"].get("resourceVersion")}
                                for j in sorted(active, key=lambda j: j["metadata"]["name"])]
        else:
            status.pop("active", None)
        successes = [j["status"]["completionTime"] for j in jobs
                     if finished_condition(j) == "Complete"
                     and (j.get("status") or {}).get("completionTime")]
        if successes:
            latest = max(successes)
            if latest > status.get("lastSuccessfulTime", ""):
                status["lastSuccessfulTime"] = latest
        cronjobs = self.manager.type("batch", "v1", "cronjobs")
        fresh = self.store.find(cronjobs, cronjob["metadata"]["namespace"],
                                cronjob["metadata"]["name"])
        if fresh is not None and (fresh.get("status") or {}) != status:
            fresh["status"] = status
            self.store.put(cronjobs, fresh)
