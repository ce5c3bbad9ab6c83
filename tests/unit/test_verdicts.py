"""Verdicts and the resilience score follow LitmusChaos's rules (ANCHORS, LitmusChaos §1)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pystol_worker.core.model import JobStatus, ProbeOutcome, Verdict
from pystol_worker.core.probe_model import HttpProbe
from pystol_worker.core.verdicts import (
    WeightedFault,
    combine,
    job_score,
    job_verdict,
    probe_success_percentage,
    resilience_score,
)

AT = datetime(2026, 12, 6, tzinfo=UTC)


def outcome(name: str, phase: str, ok: bool, origin: str = "job") -> ProbeOutcome:
    return ProbeOutcome.model_validate({
        "probe": HttpProbe(url="http://web/", name=name), "name": name, "phase": phase,
        "ok": ok, "origin": origin, "started_at": AT, "ended_at": AT})


def test_the_score_is_weighted_and_counts_faults_that_never_ran() -> None:
    # (10·100 + 10·50 + 5·0) / 25 = 60
    assert resilience_score([WeightedFault(10, 100), WeightedFault(10, 50),
                             WeightedFault(5, None)]) == 60.0


def test_the_score_is_cut_not_rounded_to_two_decimals() -> None:
    # 200/3 = 66.666…: LitmusChaos cuts to 66.66, rounding would say 66.67
    assert resilience_score([WeightedFault(1, 100), WeightedFault(1, 100),
                             WeightedFault(1, 0)]) == 66.66
    assert resilience_score([WeightedFault(3, 100), WeightedFault(0, 0)]) == 100.0


def test_no_weight_means_no_score() -> None:
    assert resilience_score([]) is None
    assert resilience_score([WeightedFault(0, 100)]) is None


def test_psp_is_100_on_pass_floor_of_the_share_on_fail_and_0_on_abort() -> None:
    outcomes = [outcome("a", "before", True), outcome("b", "before", True),
                outcome("c", "after", False)]
    assert probe_success_percentage(outcomes, Verdict.PASSED) == 100
    assert probe_success_percentage(outcomes, Verdict.FAILED) == 66  # floor(2·100/3)
    assert probe_success_percentage(outcomes, Verdict.ABORTED) == 0
    assert probe_success_percentage([], Verdict.FAILED) == 0  # "Fail with no probes"


def test_a_looping_probe_is_one_evaluation_failing_at_its_first_failure() -> None:
    loop = [outcome("live", "during", True) for _ in range(9)] + [
        outcome("live", "during", False)]
    edge = [outcome("edge", "before", True), outcome("edge", "after", True)]
    # during: 1 evaluation (failed); edge: before and after, both passed → 2 of 3
    assert probe_success_percentage(loop + edge, Verdict.DEVIATED) == 66


def test_guard_outcomes_are_not_probe_evaluations() -> None:
    outcomes = [outcome("budget", "before", False, origin="guard"),
                outcome("a", "after", False)]
    assert probe_success_percentage(outcomes, Verdict.FAILED) == 0
    assert probe_success_percentage([outcome("budget", "before", False, origin="guard"),
                                     outcome("a", "after", True),
                                     outcome("b", "after", False)], Verdict.FAILED) == 50


@pytest.mark.parametrize(("parts", "expected"), [
    ([], Verdict.PASSED),
    ([Verdict.PASSED, Verdict.FAILED], Verdict.FAILED),
    ([Verdict.FAILED, Verdict.DEVIATED], Verdict.DEVIATED),
    ([Verdict.DEVIATED, Verdict.ABORTED, Verdict.PASSED], Verdict.ABORTED),
    ([Verdict.SKIPPED, Verdict.SKIPPED], Verdict.SKIPPED),
    ([Verdict.SKIPPED, Verdict.PASSED], Verdict.PASSED),
])
def test_verdicts_combine_by_precedence(parts: list[Verdict], expected: Verdict) -> None:
    assert combine(parts) == expected


@pytest.mark.parametrize(("status", "outcomes", "stopped", "expected"), [
    (JobStatus.SUCCEEDED, [("a", "before", True), ("a", "after", True)], False,
     Verdict.PASSED),
    (JobStatus.SKIPPED, [("a", "before", False)], False, Verdict.SKIPPED),
    (JobStatus.FAILED, [("a", "before", True), ("a", "after", False)], False,
     Verdict.FAILED),
    (JobStatus.ABORTED, [("live", "during", False)], True, Verdict.DEVIATED),
    (JobStatus.ABORTED, [], True, Verdict.DEVIATED),
    (JobStatus.SUCCEEDED, [("live", "during", False)], False, Verdict.DEVIATED),
    (JobStatus.CANCELLED, [], False, Verdict.ABORTED),
    (JobStatus.ABORTED, [("a", "before", True)], False, Verdict.ABORTED),
    (JobStatus.FAILED, [], False, Verdict.ABORTED),  # no targets, refused: no judgement
])
def test_a_jobs_verdict_comes_from_how_it_ended_and_what_its_probes_saw(
        status: JobStatus, outcomes: list[tuple[str, str, bool]], stopped: bool,
        expected: Verdict) -> None:
    records = [outcome(*item) for item in outcomes]
    assert job_verdict(status, records, stopped_by_probe=stopped) == expected


def test_a_job_alone_scores_its_psp_and_a_skipped_job_has_no_score() -> None:
    records = [outcome("a", "before", True), outcome("b", "after", False)]
    assert job_score(Verdict.FAILED, records) == 50.0
    assert job_score(Verdict.PASSED, records) == 100.0
    assert job_score(Verdict.SKIPPED, records) is None
