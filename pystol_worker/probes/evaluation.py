"""One probe evaluation: up to `run.attempts` attempts, `run.retry_interval` apart, the
first pass wins (LitmusChaos's runProperties), as one `ProbeOutcome`.

An attempt never raises for what it saw: a refused URL, a timeout, a Kubernetes error or
a Prometheus answer that is not one finite number are failed attempts that say why. What
does raise: `ProbeStopped` (the job is stopping: cancel, halt, a probe's stop) and
`ActionError` for an installation that cannot probe at all (the API server refuses the
worker's own proxy call) — that is not the system under test failing.

`ProbeEnv` is what a probe may use, and nothing that changes the cluster: the cluster
client for reads, the policy and settings, Redis (for a run's stop key), and how to wait
or ask whether to stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pystol_worker.core.model import (
    HttpProbe,
    K8sProbe,
    Probe,
    ProbeOutcome,
    PrometheusProbe,
)
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.safety.outbound_http import ProbeStopped

Phase = Literal["before", "during", "after"]
Origin = Literal["job", "hypothesis", "step", "guard"]
MAX_OUTPUT = 500  # characters of an outcome's sentence


@dataclass
class Attempt:
    """What one attempt saw: `ok`, the compared `value`, the HTTP `status` (http), how
    long it took, a sentence, and the error that made it fail (if any)."""

    ok: bool
    value: float | int | str | bool | None = None
    status: int | None = None
    seconds: float | None = None
    output: str | None = None
    error: str | None = None


@dataclass
class ProbeEnv:
    """What probes may use. `should_stop` is polled during calls; `stop` wakes waits;
    `clock` is what looping probes schedule by (waits themselves are real time)."""

    settings: Settings
    policy: Policy
    cluster: Any
    should_stop: Callable[[], bool] = lambda: False
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic

    def wait(self, seconds: float) -> None:
        """Wait `seconds`; ProbeStopped at once when the job is stopping."""
        deadline = time.monotonic() + seconds
        while True:
            if self.stop.is_set() or self.should_stop():
                raise ProbeStopped("the job is stopping")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.stop.wait(min(remaining, 0.2))

    @classmethod
    def of(cls, ctx: Any) -> ProbeEnv:
        """The env of a job's `RunContext` (typed Any: probes sit below the jobs layer and
        take only these five attributes from it)."""
        return cls(settings=ctx.settings, policy=ctx.policy, cluster=ctx.cluster,
                   should_stop=ctx.cancelled, stop=ctx.stop)


def attempt_once(probe: Probe, env: ProbeEnv) -> Attempt:
    """One attempt of any probe kind, bounded by `run.timeout`."""
    from pystol_worker.probes.http import check_http
    from pystol_worker.probes.k8s import check_k8s
    from pystol_worker.probes.prometheus import check_prometheus

    if isinstance(probe, HttpProbe):
        return check_http(probe, env, probe.run.timeout)
    if isinstance(probe, K8sProbe):
        return check_k8s(probe, env)
    if isinstance(probe, PrometheusProbe):
        return check_prometheus(probe, env)
    raise TypeError(f"unknown probe type {type(probe).__name__}")


def evaluate(probe: Probe, env: ProbeEnv, phase: Phase, *, origin: Origin = "job",
             iteration: int = 0, initial_delay: bool = True) -> ProbeOutcome:
    """Run `probe` once as its run properties say (initial delay, then up to `attempts`
    tries): the outcome of the last attempt, ok at the first that passed."""
    if initial_delay and probe.run.initial_delay:
        env.wait(probe.run.initial_delay)
    started = datetime.now(UTC)
    attempt = Attempt(False, error="not run")
    tries = 0
    for tries in range(1, probe.run.attempts + 1):
        if tries > 1:
            env.wait(probe.run.retry_interval)
        attempt = attempt_once(probe, env)
        if attempt.ok:
            break
    output = attempt.output or attempt.error
    if output and tries > 1:
        output += f" (attempt {tries} of {probe.run.attempts})"
    return ProbeOutcome(probe=probe, name=probe.name, mode=probe.mode, phase=phase,
                        origin=origin, iteration=iteration, ok=attempt.ok,
                        status=attempt.status, value=attempt.value, seconds=attempt.seconds,
                        output=output[:MAX_OUTPUT] if output else None,
                        error=None if attempt.ok else (attempt.error or output or
                                                       "failed")[:MAX_OUTPUT],
                        started_at=started, ended_at=datetime.now(UTC))


def describe_failure(outcome: ProbeOutcome) -> str:
    """`probe web-ok (continuous): service shop/web:80/healthz answered 503`."""
    what = outcome.output or outcome.error or "failed"
    mode = f" ({outcome.mode.value})" if outcome.mode is not None else ""
    return f"probe {outcome.name}{mode}: {what}"
