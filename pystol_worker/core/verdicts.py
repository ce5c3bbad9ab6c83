"""Verdicts and the resilience score: what a job or an experiment says about the system.

`status` says how the job itself ended (succeeded, failed, aborted, ...); the verdict says
what the system did under chaos. They differ on purpose: a job stopped by its own
continuous probe is `aborted` (its fault was cut short and reverted) but its verdict is
`deviated` — a probe stop is a judgement, not an accident.

The resilience score is LitmusChaos's weighted form (ANCHORS, LitmusChaos §1): each fault
i has a weight wᵢ and a probe success percentage PSPᵢ; the score is Σ wᵢ·PSPᵢ / Σ wᵢ over
every fault, run or not, truncated (not rounded) to two decimals. Integer arithmetic, so
the same runs give the same score everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pystol_worker.core.model import JobStatus, ProbeOutcome, Verdict

DEFAULT_WEIGHT = 10  # LitmusChaos's default fault weight


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """The verdict of several parts: the worst by precedence (aborted > deviated > failed
    > passed); `skipped` only when every part was skipped; `passed` for no parts."""
    parts = list(verdicts)
    if not parts:
        return Verdict.PASSED
    if all(part == Verdict.SKIPPED for part in parts):
        return Verdict.SKIPPED
    ranked = [part for part in parts if part != Verdict.SKIPPED]
    return max(ranked, key=lambda verdict: verdict.rank)


def evaluations(outcomes: Sequence[ProbeOutcome]) -> dict[tuple[str, str], bool]:
    """One evaluation per probe per phase (LitmusChaos counts a probe once per phase): a
    looping probe fails at its first failure; an edge probe's before and after are one
    evaluation each. Keyed by (probe name, phase)."""
    result: dict[tuple[str, str], bool] = {}
    for outcome in outcomes:
        if outcome.origin == "guard":
            continue
        key = (outcome.name or outcome.probe.name, outcome.phase)
        result[key] = result.get(key, True) and outcome.ok
    return result


def probe_success_percentage(outcomes: Sequence[ProbeOutcome], verdict: Verdict) -> int:
    """PSP of one fault: 100 when it passed; passed·100 // total when probes failed or it
    deviated; 0 when it was aborted, skipped or has no evaluation to count."""
    if verdict == Verdict.PASSED:
        return 100
    if verdict in (Verdict.ABORTED, Verdict.SKIPPED):
        return 0
    counted = evaluations(outcomes)
    if not counted:
        return 0
    return sum(counted.values()) * 100 // len(counted)


@dataclass(frozen=True)
class WeightedFault:
    weight: int
    psp: int | None  # None: never ran (counts as 0)


def resilience_score(faults: Sequence[WeightedFault]) -> float | None:
    """Σ wᵢ·PSPᵢ / Σ wᵢ, truncated to two decimals; None when Σ wᵢ is 0."""
    total_weight = sum(fault.weight for fault in faults)
    if total_weight <= 0:
        return None
    centi = sum(fault.weight * (fault.psp or 0) * 100 for fault in faults) // total_weight
    return centi / 100


def job_verdict(status: JobStatus, outcomes: Sequence[ProbeOutcome],
                stopped_by_probe: bool = False) -> Verdict:
    """The verdict of one job from how it ended and what its probes saw.

    - skipped: it ended `skipped` (guard, or a before-probe failed: nothing changed);
    - deviated: a probe failed during the fault (a stop-on-failure probe ended it, or a
      looping probe failed while it held);
    - aborted: it was cancelled, halted, lost, refused, or broke;
    - failed: an after-probe failed (or the job failed for a reason of the system);
    - passed: it succeeded and every probe passed.
    """
    if status == JobStatus.SKIPPED:
        return Verdict.SKIPPED
    during_failed = any(not o.ok and o.phase == "during" for o in outcomes)
    if stopped_by_probe or during_failed:
        return Verdict.DEVIATED
    if status in (JobStatus.ABORTED, JobStatus.CANCELLED):
        return Verdict.ABORTED
    after_failed = any(not o.ok and o.phase == "after" for o in outcomes)
    if after_failed:
        return Verdict.FAILED
    if status == JobStatus.SUCCEEDED:
        return Verdict.PASSED
    return Verdict.ABORTED  # failed for a reason that is not a probe: refused, no targets


def job_score(verdict: Verdict, outcomes: Sequence[ProbeOutcome]) -> float | None:
    """A job alone is an experiment of one fault: its score is its PSP; None when it was
    skipped."""
    if verdict == Verdict.SKIPPED:
        return None
    return resilience_score([WeightedFault(DEFAULT_WEIGHT,
                                           probe_success_percentage(outcomes, verdict))])
