"""http-probe: the original Pystol's pingtest — call a URL N times and report what it did.

It simulates nothing and changes nothing: it is the measuring stick to run
before, during (in a parallel job) and after an experiment. It calls
`params.url` `params.count` times, `params.interval` apart, each call with
`params.timeout`, and reports in the job's output the status codes it got and
the latency percentiles (p50, p90, p99, max, nearest rank) of the calls that
answered. The job fails, with the numbers in its reason, when an expectation is
not met: fewer than `min_success_percent` of the calls answered
`expect_status`, or the slowest answer took longer than `max_latency`.

Nothing is injected, so there is no revert journal entry, no lock and nothing
to revert. A cancel or a halt ends the probe at once, even in the middle of a call.

Two forms of target, exactly one per job:

- `params.url`: any URL, called directly by the worker (below);
- `params.service: {namespace, name, port, path}`: a Service of the cluster, called
  through the Kubernetes API server's service proxy
  (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH`) with the worker's own
  Kubernetes client. It reaches what the cluster runs without a route from the worker to
  the pod network, and shows what chaos does to the Service: 503 `no endpoints available`
  while none of its pods is Ready, 503 `error trying to reach service` when a
  NetworkPolicy cuts them off. The service's namespace is a namespace the job touches:
  it must be the job's `target.namespaces` (exactly `[namespace]`), so it passes every
  scope check a pod target does (protected namespaces refused; a token or a policy rule
  for `shop` cannot probe `payments`), at submission and again in the worker. The SSRF
  rules of the `probes` section do not apply (the destination is the configured
  cluster's API server); its caps on time and body size do. The worker needs RBAC `get`
  on `services/proxy` in that namespace (the Helm chart grants it).

The calls go through `pystol_worker.safety.outbound_http`: the URL is checked against
the admin policy's `probes` section (no loopback, link-local, cloud metadata or
Pystol's own Redis and API unless allowed) at submission and again before every call,
the worker connects to the address it checked, redirects are followed only when both
the job and the policy say so (each hop checked), and one call is capped in time
(`probes.max_seconds`) and in the body it reads (`probes.max_body_bytes`).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pystol_worker.actions.base import Action, ActionError, Selection
from pystol_worker.core.model import (
    Duration,
    EventKind,
    JobSpec,
    TargetKind,
    TargetRef,
)
from pystol_worker.core.policy import Policy
from pystol_worker.core.probe_model import ServiceTarget
from pystol_worker.probes.http import ServiceProxy, call_service
from pystol_worker.safety.job_context import JobAborted, RunContext, SelectContext
from pystol_worker.safety.outbound_http import (
    DestinationGuard,
    DestinationRefused,
    ProbeAnswer,
    ProbeClient,
    ProbeStopped,
)

PERCENTILES = (50, 90, 99)


def service_text(service: ServiceTarget) -> str:
    return f"service {service.ident}{service.path}"


def service_name_port(service: ServiceTarget) -> str:
    """`name[:port]`, as the proxy's path names a Service."""
    return service.name if service.port is None else f"{service.name}:{service.port}"


class HttpProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, pattern=r"^https?://[^\s]+$", max_length=2048,
                            examples=["http://web.shop.svc.cluster.local/healthz"],
                            description="The URL to call (GET). Exactly one of url and "
                                        "service.")
    service: ServiceTarget | None = Field(
        None, description="A Service to call through the Kubernetes API server's proxy "
                          "instead of a URL (its namespace must be the job's "
                          "target.namespaces). Exactly one of url and service.")
    count: int = Field(10, ge=1, le=10_000, description="How many calls to make.")
    interval: Duration = Field(1.0, ge=0.01, le=3600, description="Pause between two calls "
                               "(at least 10 ms: a probe must not become a flood).")
    timeout: Duration = Field(5.0, ge=0.1, le=300, description="Timeout of one call: "
                              "connecting, redirects and reading the answer included. At "
                              "most the admin policy's probes.max_seconds (default 30s).")
    expect_status: int = Field(200, ge=100, le=599,
                               description="The status code a call must answer to count as "
                                           "a success.")
    max_latency: Duration | None = Field(
        None, gt=0, description="Fail when the slowest answer took longer than this.")
    min_success_percent: float = Field(
        100.0, ge=0, le=100, allow_inf_nan=False,
        description="Fail when fewer than this percent of the calls answered "
                    "`expect_status`.")
    follow_redirects: bool = Field(False, description="Follow redirects (the status is then "
                                                      "the final one); only where the admin "
                                                      "policy allows it (probes."
                                                      "follow_redirects), each hop checked "
                                                      "like the URL.")

    @model_validator(mode="after")
    def _one_target(self) -> HttpProbeParams:
        if (self.url is None) == (self.service is None):
            raise ValueError("give exactly one of params.url (called directly) and "
                             "params.service (called through the Kubernetes API server)")
        if self.service is not None and self.follow_redirects:
            raise ValueError("params.follow_redirects applies to params.url only: the API "
                             "server's proxy passes a Service's redirects through")
        return self

    @property
    def target_text(self) -> str:
        if self.service is not None:
            return service_text(self.service)
        return self.url or ""


def percentile(sorted_values: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list (never interpolated: a real sample)."""
    rank = max(1, math.ceil(round(percent / 100 * len(sorted_values), 9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies: list[float]) -> dict[str, float] | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    summary = {f"p{p}": round(percentile(ordered, p), 6) for p in PERCENTILES}
    summary["max"] = round(ordered[-1], 6)
    summary["min"] = round(ordered[0], 6)
    summary["mean"] = round(sum(ordered) / len(ordered), 6)
    return summary


def call_record(answer: ProbeAnswer) -> dict[str, Any]:
    """One call as the job's output lists it."""
    if answer.status is None:
        return {"status": None, "error": answer.error}
    return {"status": answer.status, "seconds": answer.seconds,
            "body_bytes": answer.body_bytes, "body_cut": answer.body_cut}


class HttpProbeAction(Action[HttpProbeParams]):
    name = "http-probe"
    description = ("Call a URL a number of times (the original Pystol's pingtest) and report "
                   "status codes and latency percentiles; fail when the expected status or "
                   "latency is not met. Changes nothing.")
    target_kind = TargetKind.URL
    Params = HttpProbeParams

    def uses_namespaces(self, spec: JobSpec, params: HttpProbeParams | None) -> bool:
        """A URL lives in no namespace; a Service does, and the job acts there."""
        return params is not None and params.service is not None

    def check(self, spec: JobSpec, params: HttpProbeParams | None) -> list[tuple[str, str]]:
        problems = []
        if spec.duration:
            problems.append(("duration", "http-probe holds nothing: its length is "
                             "params.count calls params.interval apart"))
        if spec.target.label_selector or spec.target.field_selector or spec.target.names:
            problems.append(("target", "http-probe targets params.url or params.service; "
                             "selectors and names select nothing here"))
        service = params.service if params is not None else None
        if service is not None and list(spec.target.namespaces) != [service.namespace]:
            problems.append(("target.namespaces", f"a probe of {service_text(service)} acts in "
                             f"namespace {service.namespace!r}: set target.namespaces to "
                             f"[{service.namespace!r}] (it is checked like any target's "
                             "namespace)"))
        return problems

    def policy_problems(self, spec: JobSpec, params: HttpProbeParams, policy: Policy
                        ) -> list[tuple[str, str]]:
        """What the policy's `probes` section says about the params (the URL itself is
        checked, for every URL a job fetches, by `jobs.authorization.policy_problems`)."""
        problems = super().policy_problems(spec, params, policy)
        if params.follow_redirects and not policy.probes.follow_redirects:
            problems.append(("params.follow_redirects", "the admin policy does not let "
                             "probes follow redirects (probes.follow_redirects)"))
        if params.timeout > policy.probes.max_seconds:
            problems.append(("params.timeout", f"{params.timeout:g}s; the admin policy caps "
                             f"one call at {policy.probes.max_seconds:g}s "
                             "(probes.max_seconds)"))
        return problems

    def select(self, ctx: SelectContext, spec: JobSpec, params: HttpProbeParams
               ) -> Selection:
        if params.service is not None:
            return Selection(matched=1, chosen=[TargetRef(
                kind="Service", namespace=params.service.namespace, name=params.service.name)])
        return Selection(matched=1, chosen=[TargetRef(kind="URL", name=params.url)])

    def execute(self, ctx: RunContext, spec: JobSpec, params: HttpProbeParams,
                selection: Selection) -> None:
        timeout = min(params.timeout, ctx.policy.probes.max_seconds)
        longest = params.count * timeout + (params.count - 1) * params.interval
        if longest > ctx.settings.max_job_seconds:
            raise ActionError(f"{params.count} calls with timeout {timeout:g}s, "
                                 f"{params.interval:g}s apart, may take {longest:g}s: longer "
                                 "than a job may run (PYSTOL_MAX_JOB_SECONDS="
                                 f"{ctx.settings.max_job_seconds})")
        target = params.target_text
        ctx.event(EventKind.PROBING, f"calling {target} {params.count} time(s), "
                  f"{params.interval:g}s apart"
                  + (" through the Kubernetes API server" if params.service else ""),
                  url=target)
        # One guard for the job: Pystol's own addresses are resolved once; the URL's host
        # is resolved (and judged) again before every call.
        client = ProbeClient(DestinationGuard.for_settings(ctx.policy.probes, ctx.settings),
                             should_stop=ctx.cancelled)
        proxy = ctx.cluster if isinstance(ctx.cluster, ServiceProxy) else None
        if params.service is not None and proxy is None:
            raise ActionError("this worker's cluster client cannot call the Kubernetes API "
                              "server's service proxy")
        calls: list[dict[str, Any]] = []
        for index in range(params.count):
            if index:
                ctx.sleep(params.interval)
            ctx.check()
            try:
                if params.service is not None:
                    assert proxy is not None
                    answer = self._call_service(ctx, proxy, params.service, timeout)
                else:
                    assert params.url is not None
                    answer = client.get(params.url, timeout=params.timeout,
                                        follow_redirects=params.follow_redirects)
            except ProbeStopped:
                ctx.check()  # raises JobAborted with the cancel's or the halt's reason
                raise JobAborted("aborted while calling") from None
            except DestinationRefused as refused:
                self._report(ctx, params, calls)
                raise ActionError(f"refused by the admin policy: params.url: {refused}"
                                  ) from None
            calls.append(call_record(answer))
            self._report(ctx, params, calls)
        problems = self._report(ctx, params, calls)
        output = ctx.result.output
        ctx.event(EventKind.PROBED, f"{output['succeeded']}/{output['count']} answered "
                  f"{params.expect_status}; latency {output['latency_seconds']}",
                  statuses=output["statuses"], latency_seconds=output["latency_seconds"])
        if problems:
            raise ActionError(f"http-probe of {target}: " + "; ".join(problems))

    @staticmethod
    def _call_service(ctx: RunContext, proxy: ServiceProxy, service: ServiceTarget,
                      timeout: float) -> ProbeAnswer:
        """One GET through the API server's service proxy (`probes.http.call_service`, the
        implementation steady-state probes share): ProbeStopped on a cancel or a halt,
        an answer with an error at the deadline, ActionError when the API server refuses
        the worker itself."""
        return call_service(proxy, service.namespace, service_name_port(service),
                            service.path, timeout, ctx.policy.probes.max_body_bytes,
                            ctx.cancelled)

    @staticmethod
    def _report(ctx: RunContext, params: HttpProbeParams, calls: list[dict[str, Any]]
                ) -> list[str]:
        """Write the output so far (a cancelled probe keeps what it measured); the problems."""
        statuses: dict[str, int] = {}
        for call in calls:
            key = str(call["status"]) if call["status"] is not None else "error"
            statuses[key] = statuses.get(key, 0) + 1
        latencies = [call["seconds"] for call in calls if call["status"] is not None]
        succeeded = sum(1 for call in calls if call["status"] == params.expect_status)
        summary = latency_summary(latencies)
        errors = [call["error"] for call in calls if call.get("error")]
        ctx.result.output.update({
            "url": params.target_text, "count": len(calls), "planned": params.count,
            "expect_status": params.expect_status, "succeeded": succeeded,
            "success_percent": round(100 * succeeded / len(calls), 3) if calls else None,
            "statuses": statuses, "latency_seconds": summary,
            "errors": sorted(set(errors))[:10], "calls": calls})
        problems = []
        if calls and 100 * succeeded < params.min_success_percent * len(calls):
            problems.append(f"{succeeded}/{len(calls)} calls answered {params.expect_status} "
                            f"(expected at least {params.min_success_percent:g}%; got "
                            f"{', '.join(f'{n}x {s}' for s, n in sorted(statuses.items()))})")
        if params.max_latency is not None and summary is not None \
                and summary["max"] > params.max_latency:
            problems.append(f"slowest answer took {summary['max']:.3f}s, more than max_latency "
                            f"{params.max_latency:g}s (p50 {summary['p50']:.3f}s, p90 "
                            f"{summary['p90']:.3f}s, p99 {summary['p99']:.3f}s)")
        return problems
