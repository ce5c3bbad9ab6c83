"""The error-budget guard: do not start chaos while the service burns its error budget.

`evaluate_guard` asks Prometheus once (`probes.prometheus.instant_query`) and says whether
the job may start. Fail safe: a value above `max`, or no single finite value, or an
unreachable Prometheus with `on_error: skip` (the default) all mean "do not start"; the
reason carries the value, so the record says what stopped it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pystol_worker.core.model import ErrorBudgetGuard
from pystol_worker.probes.evaluation import ProbeEnv
from pystol_worker.probes.prometheus import QueryFailed, instant_query


@dataclass
class GuardDecision:
    """`start`: whether the job may start; `reason` when it may not (or why it runs
    although Prometheus could not answer); `output`: what goes in `result.output.guard`."""

    start: bool
    reason: str | None
    output: dict[str, Any] = field(default_factory=dict)


def evaluate_guard(guard: ErrorBudgetGuard, env: ProbeEnv) -> GuardDecision:
    now = datetime.now(UTC).isoformat()
    output: dict[str, Any] = {"value": None, "max": guard.max, "endpoint": guard.endpoint,
                              "query": guard.query, "evaluated_at": now}
    head = f"error budget guard: {guard.query} on {guard.endpoint}"
    endpoint = env.policy.prometheus.endpoint(guard.endpoint)
    try:
        if endpoint is None:
            raise QueryFailed(f"endpoint {guard.endpoint!r} is not in the admin policy's "
                              "prometheus.endpoints")
        answer = instant_query(endpoint, guard.query, env.policy, env.settings,
                               env.should_stop)
    except QueryFailed as failed:
        output["error"] = str(failed)
        if guard.on_error == "run":
            return GuardDecision(True, f"{head} could not be read ({failed}); running "
                                 "anyway (on_error: run)", output)
        return GuardDecision(False, f"{head} could not be read: {failed} (on_error: skip)",
                             output)
    output["value"] = answer.value
    if answer.value > guard.max:
        return GuardDecision(False, f"{head} = {answer.value:g} > max {guard.max:g}", output)
    return GuardDecision(True, None, output)
