"""The job's steady-state checks at its edges: before the fault (sot, edge) and after
recovery (eot, edge). The probes themselves are `pystol_worker.probes`; the looping ones
run in `probes.loop.ProbeLoop` while the fault is held.

A probe that fails before injection stops the job before anything is changed (it ends
`skipped`): chaos on a system that is already unhealthy teaches nothing and hurts.
"""

from __future__ import annotations

from collections.abc import Sequence

from pystol_worker.core.model import EventKind, Probe, ProbeOutcome
from pystol_worker.probes.evaluation import Phase, ProbeEnv, describe_failure, evaluate
from pystol_worker.safety.job_context import JobAborted, RunContext
from pystol_worker.safety.outbound_http import ProbeStopped


def edge_probes(probes: Sequence[Probe], phase: Phase) -> list[Probe]:
    """The probes that run at `phase` ("before": sot and edge; "after": eot and edge)."""
    return [probe for probe in probes
            if (probe.mode.before if phase == "before" else probe.mode.after)]


def run_edge_probes(probes: Sequence[Probe], phase: Phase, ctx: RunContext
                    ) -> list[ProbeOutcome]:
    """Evaluate the probes of `phase` in order, each once (with its attempts); every
    outcome, recorded in the job's result. JobAborted when the job is stopped meanwhile.
    """
    outcomes: list[ProbeOutcome] = []
    env = ProbeEnv.of(ctx)
    due = edge_probes(probes, phase)
    if not due:
        return outcomes
    when = "before the fault" if phase == "before" else "after recovery"
    ctx.event(EventKind.PROBING, f"checking {len(due)} probe(s) {when}", phase=phase)
    for probe in due:
        try:
            outcome = evaluate(probe, env, phase)
        except ProbeStopped:
            ctx.check()  # raises JobAborted with the cancel's or the halt's reason
            raise JobAborted("aborted while probing") from None
        ctx.result.probes.append(outcome)
        outcomes.append(outcome)
    failed = failures(outcomes)
    ctx.event(EventKind.PROBED, f"{len(outcomes) - len(failed)}/{len(outcomes)} probe(s) "
              f"passed {when}" + (": " + "; ".join(failed) if failed else ""), phase=phase,
              failed=len(failed))
    return outcomes


def failures(outcomes: Sequence[ProbeOutcome]) -> list[str]:
    return [describe_failure(outcome) for outcome in outcomes if not outcome.ok]


def probe_seconds(probes: Sequence[Probe], guard_seconds: float = 0.0) -> float:
    """The longest the job's edge probes (and its guard's query) may take: each sot or eot
    probe once, an edge probe twice, every attempt at its timeout plus the pauses. Looping
    probes run while the fault is held and add nothing to the job's length."""
    total = guard_seconds
    for probe in probes:
        if probe.mode.looping:
            continue
        run = probe.run
        once = run.initial_delay + run.attempts * run.timeout + \
            (run.attempts - 1) * run.retry_interval
        total += once * (2 if probe.mode.before and probe.mode.after else 1)
    return total
