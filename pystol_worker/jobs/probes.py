"""Steady-state probes run before the fault and after recovery (Chaos Toolkit's hypothesis).

A probe that fails before injection stops the job before anything is changed:
chaos on a system that is already unhealthy teaches nothing and hurts.

A probe's URL is the job's choice, so it is fetched like http-probe's, through
`pystol_worker.safety.outbound_http`: checked against the admin policy's `probes`
section (at submission too, by `jobs.authorization.policy_problems`), connected to the
address that was checked, capped in time and body, and ended at once by a cancel or a
halt. Redirects are followed only when the policy enables them, each hop checked.
"""

from __future__ import annotations

from pystol_worker.core.model import HttpProbe, Probe, ProbeOutcome
from pystol_worker.safety.job_context import JobAborted, RunContext
from pystol_worker.safety.outbound_http import (
    DestinationGuard,
    DestinationRefused,
    ProbeClient,
    ProbeStopped,
)


def run_probe(probe: Probe, phase: str, ctx: RunContext) -> ProbeOutcome:
    """Call the probe's URL once; the outcome (a refused URL is a failed outcome that
    says why). JobAborted when the job is cancelled or halted during the call."""
    assert isinstance(probe, HttpProbe)
    client = ProbeClient(DestinationGuard.for_settings(ctx.policy.probes, ctx.settings),
                         should_stop=ctx.cancelled)
    try:
        answer = client.get(probe.url, timeout=probe.timeout,
                            follow_redirects=ctx.policy.probes.follow_redirects)
    except ProbeStopped:
        ctx.check()  # raises JobAborted with the cancel's or the halt's reason
        raise JobAborted("aborted while probing") from None
    except DestinationRefused as refused:
        return ProbeOutcome(probe=probe, phase=phase, ok=False,  # type: ignore[arg-type]
                            error=f"refused by the admin policy: {refused}")
    if answer.status is None:
        return ProbeOutcome(probe=probe, phase=phase, ok=False,  # type: ignore[arg-type]
                            seconds=answer.seconds, error=answer.error)
    return ProbeOutcome(probe=probe, phase=phase,  # type: ignore[arg-type]
                        ok=answer.status == probe.expect_status, status=answer.status,
                        seconds=answer.seconds)
