"""The one record shape (`Run`) that jobs, probe outcomes, changes and schedule runs share,
and the older field names it keeps for existing clients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pystol_worker.core.model import (
    Change,
    ChangeStatus,
    HttpProbe,
    JobRecord,
    JobSpec,
    JobStatus,
    ProbeOutcome,
    Run,
    Source,
    Target,
    TargetRef,
)
from pystol_worker.core.schedule_model import RunOutcome, ScheduleRun

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POD = TargetRef(kind="Pod", namespace="shop", name="web-1")
RUN_FIELDS = {"started_at", "ended_at", "duration_seconds", "error"}


def job(**fields: object) -> JobRecord:
    return JobRecord.model_validate({
        "id": "j-1", "spec": JobSpec(action="pod-kill", target=Target(namespaces=["shop"])),
        "source": Source.API, "submitter": "alice", "created_at": T0, **fields})


def test_every_run_record_is_a_run() -> None:
    for model in (JobRecord, ProbeOutcome, Change, ScheduleRun):
        assert issubclass(model, Run)
        schema = model.model_json_schema(mode="serialization")
        assert set(schema["properties"]) >= RUN_FIELDS, model.__name__


def test_duration_is_computed_once_both_times_are_known() -> None:
    record = job(started_at=T0)
    assert record.duration_seconds is None
    assert record.model_dump(mode="json")["duration_seconds"] is None
    record.ended_at = T0 + timedelta(seconds=9.5)
    assert record.duration_seconds == 9.5
    assert record.model_dump(mode="json")["duration_seconds"] == 9.5


def test_a_job_keeps_finished_at() -> None:
    record = job(status=JobStatus.SUCCEEDED, started_at=T0,
                 finished_at=T0 + timedelta(seconds=3))  # the old name, as input
    assert record.ended_at == record.finished_at == T0 + timedelta(seconds=3)
    data = record.model_dump(mode="json")
    assert data["finished_at"] == data["ended_at"] == "2026-01-02T03:04:08Z"
    assert data["status"] == "succeeded"
    record.finished_at = T0 + timedelta(seconds=4)  # the old name, as an attribute
    assert record.ended_at == T0 + timedelta(seconds=4)
    copied = record.model_copy(update={"finished_at": T0 + timedelta(seconds=5)})
    assert copied.ended_at == copied.finished_at == T0 + timedelta(seconds=5)
    assert copied.duration_seconds == 5
    # a record stored before the shared shape existed (no ended_at) reads the same
    stored = record.model_dump(mode="json")
    del stored["ended_at"], stored["duration_seconds"]
    assert JobRecord.model_validate(stored) == record


def test_a_round_trip_through_json_keeps_the_record() -> None:
    record = job(status=JobStatus.FAILED, started_at=T0, finished_at=T0 + timedelta(1),
                 error="boom")
    assert JobRecord.model_validate_json(record.model_dump_json()) == record


def test_a_change_runs_from_made_to_reverted() -> None:
    change = Change(target=POD, action="deleted", at=T0)  # the old names, as input
    assert change.started_at == change.at == T0
    assert change.status == ChangeStatus.APPLIED and change.duration_seconds is None
    change.reverted_at = T0 + timedelta(seconds=30)  # the old name, as an attribute
    assert change.ended_at == T0 + timedelta(seconds=30)
    assert change.status == ChangeStatus.REVERTED and change.duration_seconds == 30
    data = change.model_dump(mode="json")
    assert data["at"] == data["started_at"] and data["reverted_at"] == data["ended_at"]
    assert data["status"] == "reverted"
    failed = Change(target=POD, action="cordoned", started_at=T0,
                    error="revert failed: 503")
    assert failed.status == ChangeStatus.FAILED


def test_a_change_needs_the_time_it_was_made() -> None:
    with pytest.raises(ValueError, match="started_at"):
        Change(target=POD, action="deleted")


def test_a_probe_outcome_keeps_its_http_status() -> None:
    outcome = ProbeOutcome(probe=HttpProbe(url="http://web"), phase="before", ok=True,
                           status=200, seconds=0.12, started_at=T0,
                           ended_at=T0 + timedelta(seconds=0.125))
    data = outcome.model_dump(mode="json")
    assert data["status"] == 200 and data["ok"] is True
    assert data["duration_seconds"] == 0.125 and data["error"] is None


def test_a_schedule_run_runs_from_fired_to_decided() -> None:
    run = ScheduleRun(slot_at=T0, fired_at=T0 + timedelta(seconds=1),
                      decided_at=T0 + timedelta(seconds=1.5), outcome=RunOutcome.STARTED,
                      job_id="j-1")
    assert run.started_at == run.fired_at == T0 + timedelta(seconds=1)
    assert run.ended_at == run.decided_at == T0 + timedelta(seconds=1.5)
    assert run.duration_seconds == 0.5 and run.status == RunOutcome.STARTED
    assert run.error is None
    data = run.model_dump(mode="json")
    assert {"fired_at", "decided_at", "outcome", "status"} <= set(data)
    assert ScheduleRun.model_validate_json(run.model_dump_json()) == run


def test_a_failed_schedule_run_has_its_reason_as_error() -> None:
    run = ScheduleRun(slot_at=T0, decided_at=T0, outcome=RunOutcome.FAILED,
                      reason="the job was refused: no such action")
    assert run.error == "the job was refused: no such action"
    skipped = ScheduleRun(slot_at=T0, decided_at=T0, outcome=RunOutcome.SKIPPED,
                          reason="outside the windows")
    assert skipped.error is None
