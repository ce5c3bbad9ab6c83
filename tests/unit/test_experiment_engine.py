"""The experiment engine: `decide` as a table, then `advance` on fakeredis.

`decide` is pure, so its table is driven by a tiny simulator (`Sim`): it applies the
commands to the run as the engine does, gives each submitted step a job record the test
then ends as it likes (succeeded, failed, aborted, skipped, deviated, holding), and runs
`decide` again until it has nothing more to say. What the tests look at is what a user
sees: which steps ran, in what order, and how the run ended (status, verdict, reason,
score).

The `advance` tests use the real `ExperimentService` and `SubmissionService` on
fakeredis with a recording queue: step jobs are really stored and "queued", and a test
ends them with `JobStore.finish` as a worker would.
"""

from __future__ import annotations

import gc
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest

from pystol_worker.actions import default_registry
from pystol_worker.core.access import AccessDenied
from pystol_worker.core.experiment_model import (
    ExperimentRun,
    ExperimentSpec,
    ExperimentStatus,
    StepStatus,
)
from pystol_worker.core.model import (
    EventKind,
    JobRecord,
    JobSpec,
    JobStatus,
    Metrics,
    ProbeOutcome,
    Source,
    Target,
    Verdict,
)
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.engine import (
    MAX_ROUNDS,
    EndStep,
    FinishRun,
    ReleaseHeld,
    SetStatus,
    StartTimer,
    StopRun,
    SubmitStep,
    apply_state,
    decide,
    initial_steps,
    score_of,
)
from pystol_worker.experiments.service import (
    ExperimentService,
    JobInvalid,
    RunEnded,
    parse_experiment,
)
from pystol_worker.experiments.store import ExperimentStore, RunConflict, run_key
from pystol_worker.jobs.submission import ChaosHalted, SubmissionService
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore
from pystol_worker.store.run_signals import RunStop, run_stop_key, run_stopped, stop_run
from tests.support.grants import ADMIN, custom_resource, operator
from tests.support.recording_queue import RecordingQueue

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SHOP = ["shop"]


def kill(name: str, namespace: str = "shop", **step: Any) -> dict[str, Any]:
    return {"type": "action", "name": name,
            "job": {"action": "pod-kill", "target": {"namespaces": [namespace],
                                                     "label_selector": f"app={name}"},
                    **step.pop("job", {})}, **step}


def document(*method: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "checkout", "method": list(method), **fields}


def new_run(raw: dict[str, Any]) -> ExperimentRun:
    spec = ExperimentSpec.model_validate(raw)
    steps, rollbacks = initial_steps(spec)
    return ExperimentRun(id="x-20261206T120000-abcdef", experiment=spec.name, spec=spec,
                         source=Source.API, submitter="alice", created_at=T0, steps=steps,
                         rollbacks=rollbacks,
                         output={"deadline_at": (T0 + timedelta(hours=1)).isoformat()})


def outcome(name: str, phase: str, ok: bool) -> ProbeOutcome:
    return ProbeOutcome.model_validate({"probe": {"type": "http", "name": name,
                                                  "url": "http://web.shop/"},
                                        "name": name, "phase": phase, "ok": ok})


class Sim:
    """Drives `decide` like the engine does, with job records the test controls."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.run = new_run(raw)
        self.jobs: dict[str, JobRecord | None] = {}
        self.now = T0
        self.stop: RunStop | None = None
        self.resumed: set[str] = set()
        self.log: list[Any] = []

    def job_of(self, path: str) -> str:
        step = self.step(path)
        assert step.job_id is not None, f"{path} has no job"
        return step.job_id

    def step(self, path: str) -> Any:
        return next(s for s in [*self.run.steps, *self.run.rollbacks] if s.path == path)

    def advance(self) -> list[Any]:
        """decide/apply until nothing more; the commands, in order."""
        done: list[Any] = []
        for _ in range(200):
            stop = self.stop
            if self.run.status == ExperimentStatus.ROLLING_BACK:
                raw = self.run.output.get("stop")
                stop = RunStop(raw["cause"], raw["reason"]) if raw else None
            commands = decide(self.run, self.jobs, self.now, stop, self.resumed)
            if not commands:
                break
            for command in commands:
                done.append(command)
                if isinstance(command, StopRun):
                    self.stop = self.stop or RunStop(command.cause, command.reason)
                    continue
                apply_state(self.run, command, self.now, self.jobs)
                if isinstance(command, SubmitStep):
                    job_id = f"j-{command.path}"
                    self.step(command.path).job_id = job_id
                    self.jobs[job_id] = record(job_id, JobStatus.RUNNING)
                if isinstance(command, ReleaseHeld):
                    # the held job reverts and ends when released
                    held = self.step(command.path)
                    self.end(command.path, JobStatus.SUCCEEDED, "released") \
                        if held.job_id else None
        self.log += done
        return done

    def end(self, path: str, status: JobStatus, reason: str = "done",
            verdict: Verdict | None = None, probes: list[ProbeOutcome] | None = None) -> None:
        job_id = self.job_of(path)
        self.jobs[job_id] = record(job_id, status, reason, verdict, probes)

    def hold(self, path: str) -> None:
        job_id = self.job_of(path)
        self.jobs[job_id] = record(job_id, JobStatus.RUNNING,
                                   metrics=Metrics(injected_at=self.now))

    def submitted(self) -> list[str]:
        return [c.path for c in self.log if isinstance(c, SubmitStep)]

    def finish(self) -> FinishRun:
        finishes = [c for c in self.log if isinstance(c, FinishRun)]
        assert len(finishes) == 1, self.log
        return finishes[0]


def record(job_id: str, status: JobStatus, reason: str = "done",
           verdict: Verdict | None = None, probes: list[ProbeOutcome] | None = None,
           metrics: Metrics | None = None) -> JobRecord:
    if verdict is None and status.terminal:
        verdict = {JobStatus.SUCCEEDED: Verdict.PASSED, JobStatus.SKIPPED: Verdict.SKIPPED
                   }.get(status, Verdict.ABORTED)
    data: dict[str, Any] = {
        "id": job_id, "spec": JobSpec(action="pod-kill",
                                      target=Target(namespaces=SHOP, label_selector="a=b")),
        "status": status, "source": Source.EXPERIMENT, "submitter": "experiment:x",
        "created_at": T0, "started_at": T0, "reason": reason if status.terminal else None,
        "ended_at": T0 if status.terminal else None, "verdict": verdict,
        "metrics": metrics or Metrics()}
    built = JobRecord.model_validate(data)
    built.result.probes = list(probes or [])
    return built


# -- decide: the table ---------------------------------------------------------------------


def test_a_queued_run_starts_and_submits_its_first_step_only() -> None:
    sim = Sim(document(kill("web"), kill("db")))
    commands = sim.advance()
    assert commands == [SetStatus(ExperimentStatus.RUNNING), SubmitStep("method[0]")]
    assert sim.advance() == []  # nothing until the job ends


def test_serial_steps_run_in_order_and_the_run_passes_with_score_100() -> None:
    sim = Sim(document(kill("web"), kill("db")))
    sim.advance()
    sim.end("method[0]", JobStatus.SUCCEEDED)
    assert sim.advance()[-1] == SubmitStep("method[1]")
    sim.end("method[1]", JobStatus.SUCCEEDED)
    sim.advance()
    assert sim.submitted() == ["method[0]", "method[1]"]
    assert sim.finish().status == ExperimentStatus.COMPLETED
    assert sim.run.verdict == Verdict.PASSED and sim.run.score == 100.0
    assert [s.psp for s in sim.run.steps] == [100, 100]


def test_a_parallel_group_submits_all_its_steps_at_once_then_goes_on() -> None:
    sim = Sim(document({"type": "parallel", "name": "both",
                        "steps": [kill("web"), kill("db")]}, kill("cache")))
    sim.advance()
    assert sim.submitted() == ["method[0].steps[0]", "method[0].steps[1]"]
    sim.end("method[0].steps[0]", JobStatus.SUCCEEDED)
    sim.advance()
    assert sim.submitted()[-1] != "method[1]"  # waits for the sibling
    sim.end("method[0].steps[1]", JobStatus.SUCCEEDED)
    sim.advance()
    assert sim.submitted()[-1] == "method[1]"
    assert sim.step("method[0]").status == StepStatus.SUCCEEDED


def test_a_wait_is_a_timer_not_a_job() -> None:
    sim = Sim(document({"type": "wait", "name": "pause", "duration": "30s"}, kill("web")))
    commands = sim.advance()
    assert StartTimer("method[0]", T0 + timedelta(seconds=30)) in commands
    assert sim.submitted() == []
    sim.now = T0 + timedelta(seconds=29)
    assert sim.advance() == []
    sim.now = T0 + timedelta(seconds=30)
    sim.advance()
    assert sim.submitted() == ["method[1]"]


@pytest.mark.parametrize(("resumed", "on_deadline", "late", "expected"), [
    (True, "abort", False, Verdict.PASSED),
    (False, "continue", True, Verdict.PASSED),
    (False, "abort", True, Verdict.ABORTED),
])
def test_a_suspend_waits_for_resume_or_its_deadline(resumed: bool, on_deadline: str,
                                                    late: bool, expected: Verdict) -> None:
    sim = Sim(document({"type": "suspend", "name": "ask", "deadline": "1m",
                        "on_deadline": on_deadline}, kill("web")))
    sim.advance()
    if resumed:
        sim.resumed.add("method[0]")
    if late:
        sim.now = T0 + timedelta(minutes=1)
    sim.advance()
    if expected == Verdict.PASSED:
        assert sim.submitted() == ["method[1]"]
        sim.end("method[1]", JobStatus.SUCCEEDED)
        sim.advance()
    else:
        assert sim.submitted() == []
        assert any(isinstance(c, StopRun) and "deadline" in c.reason for c in sim.log)
    assert sim.run.verdict == expected


@pytest.mark.parametrize(("status", "verdict"), [
    (JobStatus.ABORTED, Verdict.ABORTED),   # lost worker, refused in the worker
    (JobStatus.FAILED, Verdict.ABORTED),    # no targets, API error
    (JobStatus.CANCELLED, Verdict.ABORTED),
    (JobStatus.SKIPPED, Verdict.SKIPPED),   # its own guard said no
])
def test_a_step_that_aborts_stops_the_run_and_the_rollbacks_still_run(
        status: JobStatus, verdict: Verdict) -> None:
    sim = Sim(document(kill("web"), kill("db"), rollbacks=[kill("undo")]))
    sim.advance()
    sim.end("method[0]", status, "the worker running this job stopped", verdict)
    commands = sim.advance()
    stop = next(c for c in commands if isinstance(c, StopRun))
    assert stop.cause == "step-aborted"
    assert "method[0] (job j-method[0])" in stop.reason and "worker" in stop.reason
    assert sim.submitted() == ["method[0]", "rollbacks[0]"]  # never method[1]
    sim.end("rollbacks[0]", JobStatus.SUCCEEDED)
    sim.advance()
    finish = sim.finish()
    assert (finish.status, finish.verdict) == (ExperimentStatus.ABORTED, Verdict.ABORTED)
    assert "method[0]" in finish.reason
    assert sim.step("method[1]").status == StepStatus.SKIPPED
    assert sim.run.score == 0.0


def test_on_failure_continue_records_the_step_and_goes_on() -> None:
    sim = Sim(document(kill("web", on_failure="continue"), kill("db")))
    sim.advance()
    sim.end("method[0]", JobStatus.FAILED, "no targets", Verdict.ABORTED)
    sim.advance()
    assert sim.submitted() == ["method[0]", "method[1]"]
    sim.end("method[1]", JobStatus.SUCCEEDED)
    sim.advance()
    assert sim.run.verdict == Verdict.PASSED
    assert sim.run.score == 50.0  # the failed step counts with PSP 0


def test_a_probe_stop_waits_for_the_sibling_then_rolls_back_and_is_deviated() -> None:
    sim = Sim(document({"type": "parallel", "name": "both",
                        "steps": [kill("web"), kill("db")]}, kill("cache"),
                       rollbacks=[kill("undo")]))
    sim.advance()
    # web's continuous probe failed: its job set the stop and ended deviated
    sim.stop = RunStop("probe", "stopped by probe web-ok (continuous): 503")
    sim.end("method[0].steps[0]", JobStatus.ABORTED, "stopped by probe", Verdict.DEVIATED,
            [outcome("web-ok", "during", False)])
    assert sim.advance() == [EndStep("method[0].steps[0]", StepStatus.ABORTED,
                                     "stopped by probe", Verdict.DEVIATED)]
    assert sim.run.status == ExperimentStatus.RUNNING  # db still reverting
    sim.end("method[0].steps[1]", JobStatus.ABORTED, "run stopped", Verdict.DEVIATED)
    sim.advance()
    assert sim.submitted() == ["method[0].steps[0]", "method[0].steps[1]", "rollbacks[0]"]
    sim.end("rollbacks[0]", JobStatus.SUCCEEDED)
    sim.advance()
    finish = sim.finish()
    assert (finish.status, finish.verdict) == (ExperimentStatus.COMPLETED, Verdict.DEVIATED)
    assert "web-ok" in finish.reason
    # web: 0 of 1 evaluations passed; db: deviated with no probe (0); cache never ran
    assert sim.run.score == 0.0


@pytest.mark.parametrize(("cause", "status"), [
    ("cancel", ExperimentStatus.CANCELLED), ("halt", ExperimentStatus.ABORTED),
    ("deadline", ExperimentStatus.ABORTED)])
def test_cancel_halt_and_deadline_end_timers_and_still_roll_back(
        cause: str, status: ExperimentStatus) -> None:
    sim = Sim(document({"type": "wait", "name": "pause", "duration": "1h"}, kill("web"),
                       rollbacks=[kill("undo")]))
    sim.advance()
    sim.stop = RunStop(cause, f"{cause} by alice")
    sim.advance()
    assert sim.step("method[0]").status == StepStatus.CANCELLED
    assert sim.submitted() == ["rollbacks[0]"]
    sim.end("rollbacks[0]", JobStatus.SUCCEEDED)
    sim.advance()
    finish = sim.finish()
    assert finish.status == status and finish.verdict == Verdict.ABORTED
    assert finish.reason == f"{cause} by alice"


def test_past_its_deadline_the_run_stops_itself() -> None:
    sim = Sim(document(kill("web")))
    sim.advance()
    sim.now = T0 + timedelta(hours=1)
    commands = sim.advance()
    assert any(isinstance(c, StopRun) and c.cause == "deadline" for c in commands)


def test_before_hypothesis_not_met_skips_the_run_without_touching_anything() -> None:
    sim = Sim(document(kill("web"), rollbacks=[kill("undo")],
                       hypothesis={"probes": [{"type": "http", "name": "ok",
                                               "url": "http://web.shop/"}]}))
    sim.advance()
    assert sim.submitted() == ["before"]
    sim.end("before", JobStatus.SKIPPED, "steady state not met before injection: 503",
            probes=[outcome("ok", "before", False)])
    sim.advance()
    finish = sim.finish()
    assert (finish.status, finish.verdict) == (ExperimentStatus.SKIPPED, Verdict.SKIPPED)
    assert "503" in finish.reason
    assert sim.submitted() == ["before"]  # neither the method nor the rollbacks
    assert sim.run.score is None


def test_after_hypothesis_not_met_fails_the_run_and_scores_the_steps_down() -> None:
    sim = Sim(document(kill("web"), hypothesis={"probes": [
        {"type": "http", "name": "ok", "url": "http://web.shop/"}]}))
    sim.advance()
    sim.end("before", JobStatus.SUCCEEDED, probes=[outcome("ok", "before", True)])
    sim.advance()
    sim.end("method[0]", JobStatus.SUCCEEDED)
    sim.advance()
    assert sim.submitted() == ["before", "method[0]", "after"]
    sim.end("after", JobStatus.SUCCEEDED, "probe failed", Verdict.FAILED,
            [outcome("ok", "after", False)])
    sim.advance()
    finish = sim.finish()
    assert (finish.status, finish.verdict) == (ExperimentStatus.COMPLETED, Verdict.FAILED)
    assert finish.reason.startswith("steady state not met after the method")
    assert sim.run.score == 50.0  # ok passed before, failed after


def test_an_until_rollback_hold_lets_the_method_go_on_and_is_released_by_its_rollback(
        ) -> None:
    sim = Sim(document(kill("web", hold="until-rollback", job={"duration": "10m"}),
                       kill("db"),
                       rollbacks=[{"type": "release", "name": "free", "step": "web"}]))
    sim.advance()
    assert sim.advance() == []  # not holding yet: the method waits
    sim.hold("method[0]")
    sim.advance()
    assert sim.submitted() == ["method[0]", "method[1]"]
    sim.end("method[1]", JobStatus.SUCCEEDED)
    commands = sim.advance()
    assert ReleaseHeld("method[0]", by="rollbacks[0]") in commands
    assert sim.step("rollbacks[0]").status == StepStatus.SUCCEEDED
    assert sim.run.verdict == Verdict.PASSED


def test_holds_nobody_released_end_with_the_rollbacks() -> None:
    sim = Sim(document(kill("web", hold="until-rollback", job={"duration": "10m"})))
    sim.advance()
    sim.hold("method[0]")
    commands = sim.advance()
    assert ReleaseHeld("method[0]") in commands
    assert sim.run.status == ExperimentStatus.COMPLETED


def test_a_step_job_whose_record_is_gone_aborts_the_run() -> None:
    sim = Sim(document(kill("web")))
    sim.advance()
    sim.jobs[sim.job_of("method[0]")] = None
    sim.advance()
    assert sim.run.status == ExperimentStatus.ABORTED
    assert "is gone" in (sim.run.reason or "")


def test_an_ended_run_decides_nothing() -> None:
    sim = Sim(document(kill("web")))
    sim.run.status = ExperimentStatus.COMPLETED
    assert decide(sim.run, {}, T0) == []


def test_the_score_counts_every_action_step_run_or_not() -> None:
    sim = Sim(document(kill("web", weight=30), kill("db", weight=10)))
    sim.advance()
    sim.end("method[0]", JobStatus.SUCCEEDED, "probe failed", Verdict.FAILED,
            [outcome("a", "before", True), outcome("a", "after", False),
             outcome("b", "after", True)])
    sim.stop = RunStop("cancel", "cancelled")
    sim.advance()
    # web: 2 of 3 evaluations → 66; db never ran → 0; (30·66 + 10·0) / 40 = 49.5
    assert score_of(sim.run)[0] == 49.5


# -- advance on fakeredis ------------------------------------------------------------------


class Harness:
    def __init__(self, max_experiment_seconds: int = 4 * 3600,
                 queue: RecordingQueue | None = None) -> None:
        self.redis = fakeredis.FakeRedis()
        self.queue = queue if queue is not None else RecordingQueue()
        self.advances: list[str] = []
        self.settings = Settings(max_experiment_seconds=max_experiment_seconds)
        self.jobs = JobStore(self.redis)
        self.halt = HaltSwitch(self.redis)
        self.submission = SubmissionService(self.jobs, self.queue, default_registry(),
                                            self.settings, self.halt)
        self.service = ExperimentService(self.redis, self.settings, Policy(),
                                         self.submission, self.advances.append)

    def start(self, raw: dict[str, Any], identity: Any = ADMIN) -> ExperimentRun:
        return self.service.start(parse_experiment(raw), Source.API, identity)

    def run(self, run_id: str) -> ExperimentRun:
        return self.service.run(run_id)

    def finish_job(self, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
        self.jobs.claim(job_id, "w1")
        self.jobs.finish(job_id, status, "done")


def test_start_stores_a_queued_run_with_a_sealed_grant_and_sends_an_advance() -> None:
    h = Harness()
    run = h.start(document(kill("web")))
    assert run.status == ExperimentStatus.QUEUED and h.advances == [run.id]
    assert run.grant is not None and run.grant.signature
    assert run.grant.namespaces == ["shop"]
    assert h.queue.sent == []  # nothing runs before the first advance
    h.service.advance(run.id)
    job_id = h.run(run.id).steps[0].job_id
    assert h.queue.sent == [job_id]
    job = h.jobs.get(job_id)
    assert job.source == Source.EXPERIMENT and job.submitter == f"experiment:{run.id}"
    assert job.spec.experiment is not None and job.spec.experiment.path == "method[0]"
    assert job.spec.idempotency_key == f"xr:{run.id}:method[0]"


def test_a_whole_run_through_advance_leaves_no_lock_and_is_indexed_as_ended() -> None:
    h = Harness()
    run = h.start(document(kill("web"), rollbacks=[kill("undo")]))
    h.service.advance(run.id)
    h.finish_job(h.queue.sent[-1])
    h.service.advance(run.id)
    h.finish_job(h.queue.sent[-1])
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert ended.status == ExperimentStatus.COMPLETED and ended.verdict == Verdict.PASSED
    assert ended.score == 100.0
    assert len(h.queue.sent) == 2
    assert not h.redis.exists(run_key(run.id) + ":advance")
    assert not h.redis.sismember("pystol:xruns:running", run.id)
    assert h.redis.ttl(run_key(run.id)) > 0  # expires with the job retention
    kinds = [event.kind for event in h.service.timeline(run.id)]
    assert EventKind.STEP_STARTED in kinds and kinds[-1] == EventKind.COMPLETED


class StopReadingQueue(RecordingQueue):
    """Records, as each job is queued, whether its run's stop key is set: what a worker
    that starts the job at once would read."""

    def __init__(self) -> None:
        super().__init__()
        self.redis: Any = None
        self.stopped_at_send: dict[str, bool] = {}

    def send(self, job_id: str) -> None:
        super().send(job_id)
        run_id = JobStore(self.redis).get(job_id).spec.experiment.run_id  # type: ignore[union-attr]
        self.stopped_at_send[job_id] = run_stopped(self.redis, run_id) is not None


def test_a_rollback_job_is_queued_after_the_runs_stop_is_forgotten() -> None:
    """A probe stopped the run; the advance that enters the rollbacks queues the first
    rollback job. A worker may start it before that advance ends: if the stop were still
    set, the job would read it and skip itself, and the rollback would never run (seen
    under load in CI)."""
    queue = StopReadingQueue()
    h = Harness(queue=queue)
    queue.redis = h.redis
    run = h.start(document(kill("web"), rollbacks=[kill("undo")]))
    h.service.advance(run.id)
    method_job = h.queue.sent[-1]
    stop_run(h.redis, run.id, "probe", "stopped by probe web-ok (continuous): 503",
             by="test")
    h.jobs.claim(method_job, "w1")
    h.jobs.finish(method_job, JobStatus.ABORTED, "stopped by probe")
    h.service.advance(run.id)
    rollback_job = h.run(run.id).rollbacks[0].job_id
    assert rollback_job is not None and h.queue.sent[-1] == rollback_job
    assert queue.stopped_at_send == {method_job: False, rollback_job: False}


class LateAskStore(ExperimentStore):
    """Runs `arrive` once, at the moment the lock holder releases (or decides whether to):
    what a job ending, and its advance arriving, at that instant does."""

    def __init__(self, redis_client: Any, arrive: Any) -> None:
        super().__init__(redis_client)
        self.arrive = arrive

    def _arrive_once(self) -> None:
        arrive, self.arrive = self.arrive, None
        if arrive is not None:
            arrive()

    def release_advance(self, run_id: str, token: str, millis: int = 30_000) -> bool:
        self._arrive_once()
        return super().release_advance(run_id, token, millis)

    def unlock_advance(self, run_id: str, token: str) -> None:
        self._arrive_once()
        super().unlock_advance(run_id, token)


def test_an_advance_asked_for_as_the_holder_releases_is_not_lost() -> None:
    """The step's job ends, and its advance arrives, just as the advance holding the lock
    has found nothing more to do and releases: the newcomer finds the lock taken and asks
    the holder for one more round. The holder must take that round. Asking and releasing
    as two steps each lost it, and the run sat until the sweep found it (10 s)."""
    h = Harness()
    run = h.start(document(kill("web")))
    engine = h.service.engine

    def job_ends_and_its_advance_arrives() -> None:
        h.finish_job(h.queue.sent[-1])
        engine.advance(run.id)  # the job's advance: the lock is still held

    engine.store = LateAskStore(h.redis, job_ends_and_its_advance_arrives)
    engine.advance(run.id)  # submits the step; then the job ends as it releases
    ended = h.run(run.id)
    assert ended.status == ExperimentStatus.COMPLETED, ended.status
    assert not engine.store.advance_locked(run.id)
    assert not h.redis.exists(run_key(run.id) + ":again")


class EverAskedStore(ExperimentStore):
    """Another advance asks for one more round every time the holder is about to release."""

    releases = 0

    def release_advance(self, run_id: str, token: str, millis: int = 30_000) -> bool:
        self.releases += 1
        assert self.lock_advance(run_id) is None  # taken: it asks instead
        return super().release_advance(run_id, token, millis)


def test_an_advance_still_asked_for_after_its_rounds_hands_the_run_to_a_new_task() -> None:
    """Other advances keep asking: after MAX_ROUNDS rounds the holder releases the lock and
    sends a fresh advance task instead of holding a worker for ever."""
    h = Harness()
    run = h.start(document(kill("web")))
    engine = h.service.engine
    h.advances.clear()
    store = engine.store = EverAskedStore(h.redis)
    engine.advance(run.id)
    assert store.releases == MAX_ROUNDS
    assert h.advances == [run.id]
    assert not store.advance_locked(run.id)


def test_two_advances_at_once_submit_each_step_once() -> None:
    """Advance B runs whole while advance A is between submitting and writing (its lock
    lapsed, say): A's write loses the compare-and-set, and the idempotency keys give both
    the same jobs, so each step has exactly one job and it was queued once."""
    h = Harness()
    run = h.start(document({"type": "parallel", "name": "both",
                            "steps": [kill("web"), kill("db")]}))
    queue_send = h.queue.send
    interleaved: list[str] = []

    def send_then_let_b_in(job_id: str) -> None:
        queue_send(job_id)
        if not interleaved:
            interleaved.append(job_id)
            h.service.engine._advance_with_retries(run.id)  # B, below the lock

    h.queue.send = send_then_let_b_in  # type: ignore[method-assign]
    h.service.engine._advance_with_retries(run.id)  # A
    assert interleaved, "B never ran inside A"
    stored = h.run(run.id)
    job_ids = sorted(s.job_id for s in stored.steps if s.job_id)
    assert len(job_ids) == 2
    assert sorted(h.queue.sent) == job_ids
    assert len(h.jobs.list().items) == 2
    assert stored.version == 2  # A's stale write was refused, then A wrote on B's


def test_a_stale_write_is_refused() -> None:
    h = Harness()
    run = h.start(document(kill("web")))
    h.service.store.write_run(run, run.version)
    with pytest.raises(RunConflict):
        h.service.store.write_run(run, run.version)


def test_a_run_whose_grant_was_edited_in_redis_is_aborted_and_submits_nothing() -> None:
    h = Harness()
    run = h.start(document(kill("web")))
    forged = run.model_copy(update={"grant": run.grant.model_copy(  # type: ignore[union-attr]
        update={"namespaces": ["shop", "payments"]})})
    h.redis.set(run_key(run.id), forged.model_dump_json())
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert ended.status == ExperimentStatus.ABORTED and ended.verdict == Verdict.ABORTED
    assert "grant does not match" in (ended.reason or "")
    assert h.queue.sent == []


def test_a_run_record_edited_to_add_a_payments_step_is_refused_in_the_worker() -> None:
    h = Harness()
    alice = operator("alice", "shop")
    run = h.start(document(kill("web")), identity=alice)
    spec = parse_experiment(document(kill("ledger", "payments"), kill("web")))
    steps, rollbacks = initial_steps(spec)
    edited = run.model_copy(update={"spec": spec, "steps": steps, "rollbacks": rollbacks})
    h.redis.set(run_key(run.id), edited.model_dump_json())
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert ended.status == ExperimentStatus.ABORTED
    assert ended.reason is not None and ended.reason.startswith("refused")
    assert h.queue.sent == [] and h.jobs.list().items == []


def test_an_operator_cannot_start_an_experiment_touching_another_namespace() -> None:
    h = Harness()
    with pytest.raises(AccessDenied) as denied:
        h.start(document(kill("web"), kill("ledger", "payments")),
                identity=operator("alice", "shop"))
    assert denied.value.loc == "method[1].job.target.namespaces[0]"
    assert h.redis.zcard("pystol:xruns") == 0 and h.advances == []


def test_a_hypothesis_probe_in_another_namespace_is_refused_at_its_field() -> None:
    h = Harness()
    with pytest.raises(AccessDenied) as denied:
        h.start(document(kill("web"), hypothesis={"probes": [
            {"type": "http", "name": "ledger", "service": {
                "namespace": "payments", "name": "ledger", "port": 80}}]}),
                identity=operator("alice", "shop"))
    assert denied.value.loc is not None and denied.value.loc.startswith("hypothesis")
    assert denied.value.namespace == "payments"
    assert h.redis.zcard("pystol:xruns") == 0


def test_under_a_halt_nothing_starts_and_engaging_one_stops_running_runs() -> None:
    h = Harness()
    run = h.start(document(kill("web"), kill("db"), rollbacks=[kill("undo")]))
    h.service.advance(run.id)
    h.halt.engage(h.jobs, "ops", "incident")  # cancels the queued step job too
    stop = run_stopped(h.redis, run.id)
    assert stop is not None and stop.cause == "halt" and "incident" in stop.reason
    with pytest.raises(ChaosHalted):
        h.start(document(kill("db")))
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert ended.status == ExperimentStatus.ABORTED and "incident" in (ended.reason or "")
    assert ended.steps[1].status == StepStatus.SKIPPED  # no further step under a halt
    # the rollback was tried and refused by the halt, and says so
    assert ended.rollbacks[0].status == StepStatus.ABORTED
    assert "halted" in (ended.rollbacks[0].error or "")
    assert len(h.queue.sent) == 1


def test_cancel_stops_the_run_and_its_rollbacks_run_afterwards() -> None:
    h = Harness()
    run = h.start(document(kill("web"), kill("db"), rollbacks=[kill("undo")]))
    h.service.advance(run.id)
    h.jobs.claim(h.queue.sent[0], "w1")  # running: it reads the stop key
    h.service.cancel(run.id, ADMIN, "changed my mind")
    assert run_stopped(h.redis, run.id) is not None
    h.service.advance(run.id)
    assert h.run(run.id).status == ExperimentStatus.RUNNING  # its job still stopping
    h.jobs.finish(h.queue.sent[0], JobStatus.ABORTED, "stopped")
    h.service.advance(run.id)
    # the stop did its work: the rollback job must not read it
    assert not h.redis.exists(run_stop_key(run.id))
    assert h.run(run.id).status == ExperimentStatus.ROLLING_BACK
    h.finish_job(h.queue.sent[-1])
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert ended.status == ExperimentStatus.CANCELLED
    assert "changed my mind" in (ended.reason or "")
    assert [s.status for s in ended.steps] == [StepStatus.ABORTED, StepStatus.SKIPPED]
    assert len(h.queue.sent) == 2
    with pytest.raises(RunEnded):
        h.service.cancel(run.id, ADMIN)


def test_the_same_idempotency_key_returns_the_same_run() -> None:
    h = Harness()
    spec = parse_experiment(document(kill("web")))
    first = h.service.start(spec, Source.API, ADMIN, idempotency_key="k1")
    again = h.service.start(spec, Source.API, ADMIN, idempotency_key="k1")
    assert again.id == first.id and h.redis.zcard("pystol:xruns") == 1


def test_the_sweep_advances_a_run_whose_step_ended_without_a_message() -> None:
    h = Harness()
    run = h.start(document(kill("web"), kill("db")))
    h.service.advance(run.id)
    h.finish_job(h.queue.sent[0])
    h.advances.clear()
    assert h.service.sweep() == [run.id]
    assert h.advances == [run.id]


def test_the_sweep_stops_a_run_past_its_deadline() -> None:
    h = Harness()
    run = h.start(document(kill("web"), deadline="1m"))
    h.service.advance(run.id)
    h.service.sweep(datetime.now(UTC) + timedelta(minutes=2))
    stop = run_stopped(h.redis, run.id)
    assert stop is not None and stop.cause == "deadline"


# -- limits (§7 attack 1): refused with a field path, fast, no RecursionError ---------------


def _timed_refusal(raw: Any) -> JobInvalid:
    """The refusal, which must come at once (13 ms for 10,000 steps here; a check that
    walked them quadratically took seconds). The garbage collector is held off while it is
    timed: late in the whole unit suite one full collection of everything earlier tests
    left behind took over a second, which says nothing about the check."""
    gc.collect()
    gc.disable()
    try:
        began = time.monotonic()
        with pytest.raises(JobInvalid) as refused:
            parse_experiment(raw)
        elapsed = time.monotonic() - began
    finally:
        gc.enable()
    assert elapsed < 1.0
    return refused.value


def test_ten_thousand_steps_are_refused_with_a_path() -> None:
    refused = _timed_refusal(document(*[{"type": "wait", "name": f"w{i}", "duration": "1s"}
                                        for i in range(10_000)]))
    assert refused.problems[0].loc.startswith("method[")
    assert "steps" in refused.problems[0].msg


def test_groups_nested_a_thousand_deep_are_refused_without_recursion() -> None:
    node: dict[str, Any] = {"type": "wait", "name": "w", "duration": "1s"}
    for depth in range(1000):
        node = {"type": "serial", "name": f"g{depth}", "steps": [node]}
    refused = _timed_refusal(document(node))
    assert "nested" in refused.problems[0].msg


def test_a_parallel_group_a_thousand_wide_is_refused_at_its_steps() -> None:
    refused = _timed_refusal(document({"type": "parallel", "name": "wide", "steps": [
        {"type": "wait", "name": f"w{i}", "duration": "1s"} for i in range(1000)]}))
    assert refused.problems[0].loc == "method[0].steps"


def test_durations_adding_up_past_the_setting_are_refused_at_method() -> None:
    h = Harness(max_experiment_seconds=3600)
    with pytest.raises(JobInvalid) as refused:
        h.start(document(*[{"type": "wait", "name": f"w{i}", "duration": "20m"}
                           for i in range(4)]))
    assert [p.loc for p in refused.value.problems] == ["method"]
    assert "PYSTOL_MAX_EXPERIMENT_SECONDS" in refused.value.problems[0].msg
    with pytest.raises(JobInvalid) as late:
        h.start(document(kill("web"), deadline="2h"))
    assert [p.loc for p in late.value.problems] == ["deadline"]
    assert h.redis.zcard("pystol:xruns") == 0


def test_stop_signal_first_wins() -> None:
    client = fakeredis.FakeRedis()
    assert stop_run(client, "x-1", "probe", "web failed")
    assert not stop_run(client, "x-1", "cancel", "later")
    stop = run_stopped(client, "x-1")
    assert stop is not None and stop.cause == "probe"


# -- schedules of an experiment ------------------------------------------------------------


def schedule_env() -> tuple[Harness, Any, Any]:
    """A harness plus a schedule store and firer on its Redis (the real clock: the fires
    below are stamped at their slots)."""
    from pystol_worker.schedules.firing import ScheduleFirer
    from pystol_worker.schedules.store import ScheduleStore

    h = Harness()
    store = ScheduleStore(h.redis, h.settings, policy=Policy(min_schedule_period=0.1))
    firer = ScheduleFirer(store, h.submission, h.service)
    return h, store, firer


def test_a_schedule_names_exactly_one_of_a_template_or_an_experiment() -> None:
    from pydantic import ValidationError

    from pystol_worker.core.schedule_model import ScheduleSpec

    with pytest.raises(ValidationError, match="exactly one of template"):
        ScheduleSpec.model_validate({"interval": "1h", "experiment": "checkout",
                                     "template": document(kill("web"))["method"][0]["job"]})
    with pytest.raises(ValidationError, match="exactly one of template"):
        ScheduleSpec.model_validate({"interval": "1h"})
    assert ScheduleSpec.model_validate({"interval": "1h", "experiment": "checkout"}
                                       ).namespaces() == []


def test_a_schedule_of_an_experiment_starts_runs_of_it_once_per_slot() -> None:
    from pystol_worker.core.schedule_model import RunOutcome, ScheduleSpec

    h, store, firer = schedule_env()
    h.service.put(parse_experiment(document(kill("web"))), ADMIN)
    owner = custom_resource("shop", "nightly")  # a PystolSchedule in shop
    record = store.create(ScheduleSpec.model_validate({"interval": "1s",
                                                       "experiment": "checkout"}),
                          Source.CR, owner, schedule_id="nightly")
    assert record.namespaces == ["shop"]
    aimed = store.state("nightly").aimed / 1000
    first = firer.fire("nightly", fired_at=aimed, task_id="t1")
    again = firer.fire("nightly", fired_at=aimed, task_id="t1")  # a redelivered fire
    assert first.outcome == RunOutcome.STARTED and first.job_id.startswith("x-")
    assert again.job_id in (None, first.job_id)
    run = h.run(first.job_id)
    assert run.source == Source.SCHEDULE and run.experiment == "checkout"
    assert run.grant is not None and run.grant.namespaces == ["shop"]
    assert h.redis.zcard("pystol:xruns") == 1
    # Forbid (the default): the next slot is skipped while this run goes on
    skipped = firer.fire("nightly", fired_at=store.state("nightly").aimed / 1000,
                         task_id="t2")
    assert skipped.outcome == RunOutcome.SKIPPED and first.job_id in skipped.reason


def test_a_scheduled_experiment_changed_to_reach_further_is_refused_at_its_run() -> None:
    from pystol_worker.core.schedule_model import RunOutcome, ScheduleSpec

    h, store, firer = schedule_env()
    h.service.put(parse_experiment(document(kill("web"))), ADMIN)
    store.create(ScheduleSpec.model_validate({"interval": "1s", "experiment": "checkout"}),
                 Source.CR, custom_resource("shop", "nightly"), schedule_id="nightly")
    # an admin widens the document afterwards; the shop schedule may not follow
    h.service.put(parse_experiment(document(kill("web"), kill("ledger", "payments"))), ADMIN)
    fired = firer.fire("nightly", fired_at=store.state("nightly").aimed / 1000, task_id="t1")
    assert fired.outcome == RunOutcome.FAILED and "changed since" in fired.reason
    assert h.redis.zcard("pystol:xruns") == 0


def test_a_scheduled_experiment_edited_inside_its_namespaces_is_refused_until_resaved(
        ) -> None:
    """M6: someone who may only edit documents swaps the steps of a scheduled experiment
    for others in the same namespace: the fire refuses the document it was not granted
    for; the schedule's owner saving the schedule again grants the new document."""
    from pystol_worker.core.schedule_model import RunOutcome, ScheduleSpec

    h, store, firer = schedule_env()
    h.service.put(parse_experiment(document(kill("web"))), ADMIN)
    spec = ScheduleSpec.model_validate({"interval": "1s", "experiment": "checkout"})
    store.create(spec, Source.API, ADMIN, schedule_id="nightly")
    scale = {"type": "action", "name": "scale", "job": {
        "action": "deployment-scale", "duration": "60s",
        "target": {"namespaces": ["shop"], "label_selector": "app=web"},
        "params": {"replicas": 0}}}
    h.service.put(parse_experiment(document(scale)), operator("editor", "shop"))
    fired = firer.fire("nightly", fired_at=store.state("nightly").aimed / 1000, task_id="t1")
    assert fired.outcome == RunOutcome.FAILED
    assert "the experiment 'checkout' changed since the schedule was granted; save the " \
        "schedule again" in fired.reason
    assert h.redis.zcard("pystol:xruns") == 0
    store.update("nightly", spec, ADMIN)  # the owner looked at it and grants it again
    again = firer.fire("nightly", fired_at=store.state("nightly").aimed / 1000, task_id="t2")
    assert again.outcome == RunOutcome.STARTED, again.reason
    assert h.run(again.job_id).spec.method[0].name == "scale"


def test_a_schedule_of_a_missing_or_foreign_experiment_is_refused() -> None:
    from pystol_worker.core.schedule_model import ScheduleSpec

    h, store, _ = schedule_env()
    spec = ScheduleSpec.model_validate({"interval": "1s", "experiment": "nope"})
    with pytest.raises(JobInvalid) as missing:
        store.create(spec, Source.API, ADMIN)
    assert [p.loc for p in missing.value.problems] == ["experiment"]
    h.service.put(parse_experiment(document(kill("ledger", "payments"), name="ledger")),
                  ADMIN)
    with pytest.raises(AccessDenied):
        store.create(ScheduleSpec.model_validate({"interval": "1s", "experiment": "ledger"}),
                     Source.API, operator("alice", "shop"))


def test_resume_ends_a_waiting_suspend_and_nothing_else() -> None:
    from pystol_worker.experiments.service import NotSuspended

    h = Harness()
    run = h.start(document({"type": "suspend", "name": "ask", "deadline": "1h"},
                           kill("web")))
    h.service.advance(run.id)
    with pytest.raises(NotSuspended):
        h.service.resume(run.id, "method[1]", ADMIN)
    with pytest.raises(NotSuspended):
        h.service.resume(run.id, "method[0].steps[0]", ADMIN)
    assert h.queue.sent == []
    h.service.resume(run.id, "method[0]", ADMIN)
    h.service.advance(run.id)
    resumed = h.run(run.id)
    assert resumed.steps[0].status == StepStatus.SUCCEEDED
    assert resumed.steps[1].job_id is not None and h.queue.sent == [resumed.steps[1].job_id]
    assert EventKind.RESUMED in [event.kind for event in h.service.timeline(run.id)]


def test_a_guard_without_hypothesis_probes_rides_on_the_before_check() -> None:
    h = Harness()
    h.service.policy = Policy.model_validate({"prometheus": {"endpoints": [
        {"name": "main", "url": "http://prometheus.monitoring:9090",
         "namespaces": ["shop"]}]}})
    h.submission.policy = h.service.policy
    run = h.start(document(kill("web"), guard={"endpoint": "main",
                                               "query": "slo:burn_rate:1h", "max": 1}))
    assert [step.path for step in run.steps] == ["before", "method[0]"]
    h.service.advance(run.id)
    before = h.jobs.get(h.run(run.id).steps[0].job_id or "")
    assert before.spec.action == "steady-state" and before.spec.guard is not None
    assert before.spec.guard.query == "slo:burn_rate:1h"
    assert before.spec.target.namespaces == ["shop"]
    assert h.queue.sent == [before.id]  # the method waits for the check


# -- review fixes: bounded run records (H1), owner lapse (M2), stop and cancel (M5) --------


def _finish_with_outcomes(h: Harness, job_id: str, outcomes: list[ProbeOutcome],
                          status: JobStatus = JobStatus.FAILED) -> None:
    h.jobs.claim(job_id, "w1")

    def keep(record: JobRecord) -> None:
        record.result.probes = outcomes
        record.verdict = Verdict.FAILED

    h.jobs.finish(job_id, status, "a probe failed", change=keep)


def big_outcome(name: str, iteration: int, ok: bool) -> ProbeOutcome:
    return ProbeOutcome.model_validate({
        "probe": {"type": "http", "name": name, "url": "http://web.shop/"},
        "name": name, "phase": "during", "ok": ok, "iteration": iteration,
        "value": "x" * 20_000, "output": "y" * 5_000})


def test_a_step_keeps_a_bounded_sample_of_its_jobs_outcomes_with_the_same_psp() -> None:
    """H1: a step job with hundreds of long outcomes does not make the run record grow
    with them: one outcome per probe and phase (the first failure), values cut."""
    h = Harness()
    run = h.start(document(kill("web")))
    h.service.advance(run.id)
    job_id = h.queue.sent[0]
    outcomes = [big_outcome(f"p{index % 4}", index, ok=not (index % 4 == 0 and index > 40))
                for index in range(400)]
    _finish_with_outcomes(h, job_id, outcomes)
    h.service.advance(run.id)
    ended = h.run(run.id)
    step = ended.steps[0]
    assert ended.status.terminal
    assert len(step.probes) == 4
    p0 = next(o for o in step.probes if o.name == "p0")
    assert not p0.ok and p0.iteration == 44  # the first failure is kept
    assert all(len(str(o.value)) <= 257 and len(o.output or "") <= 257 for o in step.probes)
    assert step.psp == 75  # p0 failed, p1..p3 passed: as over every outcome
    assert step.output["probe_outcomes"] == {"total": 400, "kept": 4}
    assert len(h.redis.get(run_key(run.id)) or b"") < 100_000


def test_a_run_record_past_its_size_bound_drops_outcomes_instead_of_looping() -> None:
    """H1: a record that cannot be written as it is gets smaller; it is never retried
    as it is for ever."""
    h = Harness()
    h.service.store.max_run_bytes = 12_000
    run = h.start(document(kill("web")))
    h.service.advance(run.id)
    outcomes = [big_outcome(f"p{index}", 0, ok=index != 3) for index in range(20)]
    _finish_with_outcomes(h, h.queue.sent[0], outcomes)
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert ended.status.terminal and ended.verdict == Verdict.FAILED
    assert ended.output.get("probe_outcomes_dropped") is True
    assert len(ended.steps[0].probes) <= 1


def _token(h: Harness, name: str, *namespaces: str) -> Any:
    from pystol_worker.core.access import Identity, Role
    from pystol_worker.store.token_store import TokenStore
    tokens = TokenStore(h.redis, h.settings.signing_key_bytes)
    token, _ = tokens.create(name, Role.OPERATOR, list(namespaces), None, "test")
    return tokens, Identity(token.actor(), token.authority())


def test_a_revoked_owner_gets_no_more_injecting_steps_but_rollbacks_run() -> None:
    """M2: alice starts a run; an admin revokes her token between two steps: the next
    action step is not submitted, the run stops (cancelled) and its rollback still runs."""
    h = Harness()
    tokens, alice = _token(h, "alice", "shop")
    run = h.start(document(kill("web"), kill("db"), rollbacks=[kill("undo")]), alice)
    h.service.advance(run.id)
    first = h.queue.sent[0]
    tokens.revoke("alice")
    h.finish_job(first)
    h.service.advance(run.id)
    now = h.run(run.id)
    assert now.steps[1].job_id is None  # method[1] never submitted
    assert [h.jobs.get(j).spec.experiment.path for j in h.queue.sent[1:]  # type: ignore[union-attr]
            ] == ["rollbacks[0]"]
    h.finish_job(h.queue.sent[-1])
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert ended.status == ExperimentStatus.CANCELLED
    assert "token alice was revoked" in (ended.reason or "")


def test_an_owner_narrowed_to_another_namespace_gets_no_more_steps() -> None:
    h = Harness()
    tokens, alice = _token(h, "alice2", "shop")
    run = h.start(document(kill("web"), kill("db")), alice)
    h.service.advance(run.id)
    tokens.revoke("alice2")
    tokens.create("alice2", __import__("pystol_worker.core.access", fromlist=["Role"]).Role
                  .OPERATOR, ["payments"], None, "test")
    h.finish_job(h.queue.sent[0])
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert len(h.queue.sent) == 1 and ended.status == ExperimentStatus.CANCELLED
    assert "may no longer run chaos in namespace 'shop'" in (ended.reason or "")


def test_a_stop_cancels_a_queued_step_job_and_the_key_does_not_expire() -> None:
    """M5: a step job still queued (or deferred to the next window) when the run stops
    is cancelled at once; the stop key has no expiry while the run goes on."""
    h = Harness()
    run = h.start(document({"type": "parallel", "name": "both",
                            "steps": [kill("web"), kill("db")]}))
    h.service.advance(run.id)
    web, db = h.queue.sent
    h.jobs.claim(web, "w1")  # web runs; db is still queued
    h.service.cancel(run.id, ADMIN)
    h.service.advance(run.id)
    assert h.jobs.get(db).status == JobStatus.CANCELLED
    assert h.jobs.get(web).status == JobStatus.RUNNING  # it reads the stop key
    assert h.redis.ttl(run_stop_key(run.id)) == -1  # no expiry while the run goes on
    assert not h.run(run.id).status.terminal


def test_a_run_finished_at_its_deadline_cancels_its_jobs_and_keeps_the_stop() -> None:
    """M5: the run ends aborted during its rollbacks (deadline + grace) while a rollback
    job still runs: that job is asked to cancel and the stop key is not deleted."""
    h = Harness()
    run = h.start(document(kill("web"), rollbacks=[kill("undo")], deadline="1m"))
    h.service.advance(run.id)
    h.finish_job(h.queue.sent[0])
    h.service.advance(run.id)
    undo = h.queue.sent[-1]
    h.jobs.claim(undo, "w1")
    stop_run(h.redis, run.id, "halt", "chaos halted")
    h.service.engine.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    h.service.advance(run.id)
    ended = h.run(run.id)
    assert ended.status == ExperimentStatus.ABORTED
    assert h.jobs.get(undo).cancel_requested
    assert h.redis.exists(run_stop_key(run.id))


# -- H2: one resolve budget per experiment; cheap checks before any DNS lookup -------------


class DeadDns:
    """A name server that never answers: each lookup uses all the time it is given (on a
    fake clock) and fails."""

    def __init__(self) -> None:
        self.now = 0.0
        self.asked: list[tuple[str, float]] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, name: str, port: int, seconds: float) -> list[Any]:
        self.asked.append((name, seconds))
        self.now += seconds
        raise OSError(f"{name}: timed out")


def url_steps(count: int, **fields: Any) -> dict[str, Any]:
    return document(*[{"type": "action", "name": f"call-{index}",
                       "job": {"action": "http-probe", "target": {"namespaces": ["shop"]},
                               "params": {"url": f"http://n{index}.slow-dns.example/"}}}
                      for index in range(count)], **fields)


def test_a_hundred_url_steps_on_a_dead_name_server_share_one_resolve_budget() -> None:
    """H2: the whole document gets RESOLVE_SECONDS of lookups, not that much per step;
    the names left unresolved are for the worker, so the document is accepted."""
    from pystol_worker.experiments.service import experiment_grant
    from pystol_worker.jobs.authorization import ResolveBudget
    from pystol_worker.safety.outbound_http import RESOLVE_SECONDS
    dns = DeadDns()
    h = Harness()
    grant = experiment_grant(parse_experiment(url_steps(90, deadline="1h")), ADMIN,
                             registry=default_registry(), settings=h.settings,
                             policy=Policy(), now=T0,
                             resolve=ResolveBudget(resolver=dns, clock=dns.clock))
    assert grant.namespaces == ["shop"]
    assert dns.now <= RESOLVE_SECONDS  # one budget for all 90 names
    assert len(dns.asked) < 90


def test_a_document_over_the_bound_is_refused_before_any_name_is_resolved() -> None:
    """H2: the bound (and the shape, and the permissions) are checked before DNS."""
    from pystol_worker.experiments.service import experiment_grant
    from pystol_worker.jobs.authorization import ResolveBudget
    dns = DeadDns()
    h = Harness(max_experiment_seconds=60)
    with pytest.raises(JobInvalid) as refused:
        experiment_grant(parse_experiment(url_steps(20, deadline="2h")), ADMIN,
                         registry=default_registry(), settings=h.settings, policy=Policy(),
                         now=T0, resolve=ResolveBudget(resolver=dns, clock=dns.clock))
    assert [problem.loc for problem in refused.value.problems] == ["deadline"]
    assert dns.asked == []
    with pytest.raises(AccessDenied):
        experiment_grant(parse_experiment(url_steps(20)), operator("bob", "payments"),
                         registry=default_registry(), settings=h.settings, policy=Policy(),
                         now=T0, resolve=ResolveBudget(resolver=dns, clock=dns.clock))
    assert dns.asked == []


def test_the_service_resolves_each_host_once_through_its_resolver() -> None:
    asked: list[str] = []

    def resolver(name: str, port: int, seconds: float) -> list[Any]:
        asked.append(name)
        raise OSError("no answer")

    h = Harness()
    h.service.resolver = resolver
    raw = url_steps(3)
    raw["method"].append({**raw["method"][0], "name": "again"})
    run = h.start(raw)
    assert run.status == ExperimentStatus.QUEUED
    assert sorted(asked) == ["n0.slow-dns.example", "n1.slow-dns.example",
                             "n2.slow-dns.example"]


def test_a_forged_submitter_in_the_run_record_gives_no_access() -> None:
    """L3: a run's record names its submitter, but a submitter string grants nothing:
    reading and cancelling need the rights in the run's namespaces now."""
    import json

    from pystol_worker.experiments.service import RunNotFound
    h = Harness()
    alice, mallory = operator("alice", "shop"), operator("mallory", "elsewhere")
    run = h.start(document(kill("web")), alice)
    stored = json.loads(h.redis.get(run_key(run.id)) or b"{}")
    stored["submitter"] = "token:mallory"
    h.redis.set(run_key(run.id), json.dumps(stored))
    with pytest.raises(RunNotFound):
        h.service.run(run.id, mallory)
    with pytest.raises(RunNotFound):
        h.service.cancel(run.id, mallory)
    assert h.service.run(run.id, alice).id == run.id


def test_a_name_that_lost_a_namespace_no_longer_reaches_its_runs_there() -> None:
    """Token `alice` re-created for someone else (or narrowed) as an operator of `cart`
    only: the run the old `alice` started in `shop` is not hers to read or cancel."""
    from pystol_worker.experiments.service import RunNotFound
    h = Harness()
    run = h.start(document(kill("web")), operator("alice", "shop"))
    for call in (h.service.run, h.service.cancel):
        with pytest.raises(RunNotFound):
            call(run.id, operator("alice", "cart"))
    assert run.id not in [item.id for item in h.service.runs(operator("alice", "cart")).items]


def test_a_node_level_run_that_also_touches_shop_is_not_a_shop_operators() -> None:
    """A run whose grant acts at cluster scope (a node-cordon step) is read and cancelled
    at cluster scope, even when another step acts in `shop`."""
    from pystol_worker.experiments.service import RunNotFound
    h = Harness()
    cordon = {"type": "action", "name": "cordon",
              "job": {"action": "node-cordon", "duration": "1m",
                      "target": {"names": ["node-1"]}}}
    run = h.start(document(kill("web"), cordon))
    assert run.grant is not None and run.grant.cluster and run.grant.namespaces == ["shop"]
    shop = operator("olga", "shop")
    for call in (h.service.run, h.service.cancel):
        with pytest.raises(RunNotFound):
            call(run.id, shop)
    assert run.id not in [item.id for item in h.service.runs(shop).items]
    assert h.service.run(run.id).id == run.id


@pytest.mark.parametrize(("status", "deadline", "why"), [
    (ExperimentStatus.CANCELLED, timedelta(hours=1), "already ended cancelled"),
    (ExperimentStatus.RUNNING, -timedelta(hours=60), "passed its deadline"),
])
def test_the_worker_refuses_a_step_job_of_a_run_that_is_over(
        status: ExperimentStatus, deadline: timedelta, why: str) -> None:
    """M5: a step job released long after its run ended (deferred to Monday's window)
    or passed its deadline touches nothing."""
    from tests.support.fake_jobs import FakeJobs, app_deployment
    from tests.support.grants import store_job
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    run = new_run(document(kill("web")))
    run.status = status
    run.output["deadline_at"] = (datetime.now(UTC) + deadline).isoformat()
    jobs.redis.set(run_key(run.id), run.model_dump_json())
    spec = JobSpec.model_validate({**document(kill("web"))["method"][0]["job"],
                                   "experiment": {"run_id": run.id, "path": "method[0]"}})
    job_id = store_job(jobs.store, spec, source=Source.EXPERIMENT, settings=jobs.settings,
                       registry=jobs.runner.registry).id
    record = jobs.run_stored(job_id)
    assert record.status in (JobStatus.FAILED, JobStatus.ABORTED)
    assert why in (record.reason or "")
    assert jobs.fake.called("delete", "pods") == []


def test_a_schedules_run_stops_when_whoever_changed_the_schedule_is_revoked() -> None:
    """M2: a run a schedule started acts for whoever last changed the schedule."""
    from pystol_worker.core.schedule_model import RunOutcome, ScheduleSpec

    h, store, firer = schedule_env()
    tokens, ci = _token(h, "ci", "shop")
    h.service.put(parse_experiment(document(kill("web"), kill("db"))), ADMIN)
    store.create(ScheduleSpec.model_validate({"interval": "1s", "experiment": "checkout"}),
                 Source.API, ci, schedule_id="nightly")
    fired = firer.fire("nightly", fired_at=store.state("nightly").aimed / 1000, task_id="t1")
    assert fired.outcome == RunOutcome.STARTED, fired.reason
    h.service.advance(fired.job_id)
    assert len(h.queue.sent) == 1
    tokens.revoke("ci")
    h.finish_job(h.queue.sent[0])
    h.service.advance(fired.job_id)
    ended = h.run(fired.job_id)
    assert len(h.queue.sent) == 1
    assert ended.status == ExperimentStatus.CANCELLED and "token ci" in (ended.reason or "")
