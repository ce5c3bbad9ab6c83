"""Chaos Toolkit journals: the verdict a journal says, and the journals Pystol writes.

`tests/data/ctk/journals/*.json` were written by `chaos run` (chaostoolkit 1.19.0,
chaostoolkit-lib 1.44.0, chaostoolkit-kubernetes 0.39.0) for the three files of
`tests/data/ctk` against pystol-sim (host name and platform replaced); they pin what
`ctk_verdict` reads in a real journal.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystol_worker.core.experiment_model import (
    ExperimentRun,
    ExperimentSpec,
    ExperimentStatus,
    StepRun,
    StepStatus,
)
from pystol_worker.core.model import (
    JobRecord,
    JobResult,
    JobSpec,
    JobStatus,
    ProbeOutcome,
    Source,
    Verdict,
)
from pystol_worker.core.probe_model import HttpProbe
from pystol_worker.core.verdicts import job_verdict
from pystol_worker.experiments.ctk_import import import_experiment
from pystol_worker.experiments.ctk_journal import JOURNAL_KEYS, ctk_verdict, render

DATA = Path(__file__).parents[1] / "data" / "ctk"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PROBE = HttpProbe(name="web-answers", url="https://shop.example.com/")
ANCHORS_KEYS = {"chaoslib-version", "platform", "node", "experiment", "start", "end",
                "duration", "status", "deviated", "steady_states", "run", "rollbacks"}


# -- journals written by chaos run -----------------------------------------------------------

@pytest.mark.parametrize(("name", "verdict"), [
    ("passes.json", Verdict.PASSED),
    ("deviates.json", Verdict.FAILED),  # Chaos Toolkit's "deviated" is Pystol's failed
    ("before-fails.json", Verdict.SKIPPED),
])
def test_verdict_of_real_chaos_run_journals(name: str, verdict: Verdict) -> None:
    journal = json.loads((DATA / "journals" / name).read_text())
    assert set(journal) == ANCHORS_KEYS
    assert ctk_verdict(journal) == verdict


@pytest.mark.parametrize(("changes", "verdict"), [
    ({"status": "interrupted"}, Verdict.ABORTED),
    ({"status": "aborted"}, Verdict.ABORTED),
    ({"status": "failed", "deviated": True}, Verdict.FAILED),  # an after probe raised
    ({"status": "failed", "steady_states": {"before": {"steady_state_met": False,
                                                       "probes": []},
                                            "after": None, "during": []}}, Verdict.SKIPPED),
])
def test_verdict_of_other_run_statuses(changes: dict[str, Any], verdict: Verdict) -> None:
    journal = json.loads((DATA / "journals" / "passes.json").read_text())
    journal.update(changes)
    assert ctk_verdict(journal) == verdict


# -- journals Pystol writes ------------------------------------------------------------------

def outcome(phase: str, ok: bool, error: str | None = None, origin: str = "job",
            at: int = 0) -> ProbeOutcome:
    return ProbeOutcome(probe=PROBE, name=PROBE.name, phase=phase, ok=ok, error=error,  # type: ignore[arg-type]
                        origin=origin,  # type: ignore[arg-type]
                        status=None if error and not ok else (200 if ok else 503),
                        started_at=T0 + timedelta(seconds=at),
                        ended_at=T0 + timedelta(seconds=at, milliseconds=5))


def job(status: JobStatus, outcomes: list[ProbeOutcome], stopped_by_probe: bool = False,
        reason: str | None = None) -> JobRecord:
    return JobRecord(
        id="j-1", spec=JobSpec.model_validate({"action": "pod-kill", "target": {
            "namespaces": ["shop"], "label_selector": "app=web"}}),
        status=status, source=Source.API, submitter="alice", created_at=T0,
        started_at=T0, ended_at=T0 + timedelta(seconds=30), worker="worker-7", reason=reason,
        verdict=job_verdict(status, outcomes, stopped_by_probe),
        result=JobResult(probes=outcomes))


def test_job_journal_has_exactly_the_chaoslib_keys_and_its_activity() -> None:
    record = job(JobStatus.SUCCEEDED, [outcome("before", True), outcome("after", True, at=20)])
    journal = render(record)

    assert tuple(journal) == JOURNAL_KEYS and set(journal) == ANCHORS_KEYS
    assert journal["chaoslib-version"] == "1.44.0"
    assert (journal["status"], journal["deviated"], journal["node"]) == (
        "completed", False, "worker-7")
    assert journal["duration"] == 30.0
    [activity] = journal["run"]
    assert activity["status"] == "succeeded" and "exception" not in activity
    before = journal["steady_states"]["before"]
    assert before["steady_state_met"] is True
    assert before["probes"][0]["tolerance_met"] is True
    assert journal["experiment"]["extensions"][-1]["verdict"] == "passed"
    json.dumps(journal)  # plain JSON


def test_job_stopped_by_its_probe_is_deviated_with_the_failing_probe_during() -> None:
    record = job(JobStatus.ABORTED, [outcome("before", True), outcome("during", False, at=5)],
                 stopped_by_probe=True, reason="stopped by probe web-answers (continuous)")
    journal = render(record)

    assert record.verdict == Verdict.DEVIATED
    assert journal["deviated"] is True and journal["status"] == "completed"
    [during] = journal["steady_states"]["during"]
    assert during["steady_state_met"] is False
    assert during["probes"][0]["output"]["status"] == 503
    assert ctk_verdict(journal) == Verdict.DEVIATED


def test_cancelled_job_is_interrupted() -> None:
    journal = render(job(JobStatus.CANCELLED, [], reason="cancelled by alice"))
    assert journal["status"] == "interrupted"
    assert journal["run"][0]["status"] == "failed" and journal["run"][0]["exception"]
    assert ctk_verdict(journal) == Verdict.ABORTED


def test_skipped_job_ran_nothing_and_says_why() -> None:
    journal = render(job(JobStatus.SKIPPED, [outcome("before", False, origin="guard")],
                         reason="error budget guard: burn = 2.5 > max 1"))
    assert journal["run"] == []
    before = journal["steady_states"]["before"]
    assert before["steady_state_met"] is False and "2.5" in before["pystol_reason"]
    assert ctk_verdict(journal) == Verdict.SKIPPED


def experiment_run(verdict: Verdict, steps: list[StepRun], status: ExperimentStatus,
                   spec: ExperimentSpec | None = None, reason: str | None = None
                   ) -> ExperimentRun:
    spec = spec or ExperimentSpec(name="shop")
    return ExperimentRun(id="x-20261206T120000-abcdef", experiment=spec.name, spec=spec,
                         status=status, verdict=verdict, score=None, reason=reason,
                         source=Source.CLI, submitter="alice", created_at=T0,
                         started_at=T0, ended_at=T0 + timedelta(seconds=60), steps=steps)


def step(path: str, kind: str, outcomes: list[ProbeOutcome],
         status: StepStatus = StepStatus.SUCCEEDED) -> StepRun:
    return StepRun(path=path, type=kind, name=path.replace("[", "-").replace("]", ""),
                   status=status, probes=outcomes, job_id=f"j-{abs(hash(path)) % 1000}",
                   started_at=T0, ended_at=T0 + timedelta(seconds=1))


def test_imported_experiment_journal_shows_the_chaos_toolkit_document() -> None:
    document = json.loads((DATA / "deviates.json").read_text())
    document["secrets"]["inline"] = {"password": "hunter2"}
    spec = import_experiment(document, environ={"CTK_API_SERVER": "https://a",
                                                "CTK_TOKEN": "tok-123"})
    run = experiment_run(Verdict.FAILED, [
        step("before", "probe", [outcome("before", True, origin="hypothesis")]),
        step("method[0]", "action", []),
        step("method[1]", "wait", []),
        step("after", "probe", [outcome("after", False, origin="hypothesis",
                                        error="service shop/web:80/ answered 503"
                                        ).model_copy(update={"status": 503})])],
        ExperimentStatus.COMPLETED, spec=spec)
    run.rollbacks = [step("rollbacks[0]", "release", [])]

    journal = render(run)

    assert tuple(journal) == JOURNAL_KEYS
    assert journal["experiment"]["title"] == "Shop web answers with no replicas"
    assert journal["experiment"]["method"] == document["method"]
    text = json.dumps(journal)
    assert "hunter2" not in text and "tok-123" not in text
    # the file's own activity (no wait step: the pause is part of it), and Pystol's step
    [entry] = journal["run"]
    assert entry["activity"] == document["method"][0]
    assert entry["pystol"]["step"] == "method[0]" and entry["status"] == "succeeded"
    [rollback] = journal["rollbacks"]
    assert rollback["activity"]["name"] == "scale web back to three"
    assert journal["deviated"] is True
    after = journal["steady_states"]["after"]
    assert after["steady_state_met"] is False
    # it got an answer (a 503): it ran and missed its tolerance, as in chaos run's journal
    assert after["probes"][0]["status"] == "succeeded"
    assert after["probes"][0]["tolerance_met"] is False
    assert journal["status"] == "completed"
    assert ctk_verdict(journal) == Verdict.FAILED
    [extension] = journal["experiment"]["extensions"]
    assert extension["id"] == run.id and extension["verdict"] == "failed"


# -- the property: the journal says the verdict ----------------------------------------------

PHASES = st.sampled_from(["before", "during", "after"])
OUTCOMES = st.lists(st.builds(outcome, PHASES, st.booleans(),
                              st.one_of(st.none(), st.just("connection refused")),
                              st.sampled_from(["job", "hypothesis", "guard"])), max_size=6)


@settings(max_examples=200, deadline=None)
@given(status=st.sampled_from([s for s in JobStatus if s not in (JobStatus.QUEUED,
                                                                  JobStatus.RUNNING)]),
       outcomes=OUTCOMES, stopped=st.booleans(),
       reason=st.one_of(st.none(), st.just("halted by the admin"), st.text(max_size=20)))
def test_journal_of_any_job_says_its_verdict(status: JobStatus, outcomes: list[ProbeOutcome],
                                             stopped: bool, reason: str | None) -> None:
    record = job(status, outcomes, stopped, reason)
    assert ctk_verdict(render(record)) == record.verdict


def consistent_steps(verdict: Verdict, draw: Any) -> list[StepRun]:
    """Steps whose probes agree with the verdict as the engine decides it (design §2.4)."""
    ok = st.just(True)
    before_ok: Any = st.booleans() if verdict in (Verdict.SKIPPED, Verdict.ABORTED) else ok
    before = [outcome("before", draw(before_ok), draw(st.one_of(st.none(),
                                                               st.just("timed out"))),
                      origin="hypothesis") for _ in range(draw(st.integers(1, 3)))]
    if verdict == Verdict.SKIPPED and all(o.ok for o in before):
        before[0] = outcome("before", False, origin="hypothesis")
    steps = [step("before", "probe", before)]
    if verdict == Verdict.SKIPPED:
        return steps
    during_ok = st.booleans() if verdict in (Verdict.DEVIATED, Verdict.ABORTED) else ok
    for index in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["action", "probe", "wait"]))
        probes = [outcome("during", draw(during_ok), origin="hypothesis")
                  for _ in range(draw(st.integers(0, 2)))] if kind == "action" else []
        steps.append(step(f"method[{index}]", kind, probes,
                          draw(st.sampled_from(list(StepStatus)))))
    after_ok = ok if verdict == Verdict.PASSED else st.booleans()
    after = [outcome("after", draw(after_ok), origin="hypothesis")
             for _ in range(draw(st.integers(0, 3)))]
    if verdict == Verdict.FAILED and all(o.ok for o in after):
        after.append(outcome("after", False, origin="hypothesis"))
    if after or draw(st.booleans()):
        steps.append(step("after", "probe", after))
    return steps


@settings(max_examples=200, deadline=None)
@given(data=st.data(), verdict=st.sampled_from(list(Verdict)))
def test_journal_of_any_experiment_run_says_its_verdict(data: Any, verdict: Verdict) -> None:
    statuses = {Verdict.ABORTED: [ExperimentStatus.ABORTED, ExperimentStatus.CANCELLED],
                Verdict.SKIPPED: [ExperimentStatus.SKIPPED]}.get(
        verdict, [ExperimentStatus.COMPLETED])
    run = experiment_run(verdict, consistent_steps(verdict, data.draw),
                         data.draw(st.sampled_from(statuses)),
                         reason=data.draw(st.one_of(st.none(), st.text(max_size=20))))
    journal = render(run)
    assert tuple(journal) == JOURNAL_KEYS
    assert ctk_verdict(journal) == verdict


def test_steps_that_never_ran_are_not_in_the_journal() -> None:
    run = experiment_run(Verdict.SKIPPED, [
        step("before", "probe", [outcome("before", False, origin="hypothesis")]),
        step("method[0]", "action", [], StepStatus.SKIPPED),
        step("method[1]", "action", [], StepStatus.PENDING)], ExperimentStatus.SKIPPED)
    journal = render(run)
    assert journal["run"] == [] and journal["steady_states"]["after"] is None
    assert ctk_verdict(journal) == Verdict.SKIPPED
