"""PromQL instant queries for prometheus probes and the error-budget guard.

The job names an endpoint; the admin policy (`prometheus.endpoints`) says where it is,
who may use it, its bearer token file and how long a query may take. The query goes,
verbatim, as the one urlencoded form value `query=` of a POST to `<url>/api/v1/query`
(never spliced into a URL: `&`, `#`, newlines and `query=` inside it stay inside it),
through `safety.outbound_http` like any URL a worker fetches (so the endpoint's address
must be one the `probes` section allows), with the body capped by
`prometheus.max_body_bytes` and the time by the probe's `run.timeout` and the endpoint's
`max_seconds`, whichever is shorter.

Only one finite number is an answer: a scalar, or a vector of exactly one sample.
Anything else — an empty vector, several series, a matrix, a string, NaN, ±Inf, an error
status — is a probe error, never a pass: a guard that cannot read the burn rate must not
read "fine".
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pystol_worker.core.model import PrometheusProbe
from pystol_worker.core.policy import Policy, PrometheusEndpoint
from pystol_worker.core.probe_model import compare
from pystol_worker.core.settings import Settings
from pystol_worker.probes.evaluation import Attempt, ProbeEnv
from pystol_worker.safety.outbound_http import (
    DestinationGuard,
    DestinationRefused,
    ProbeClient,
)

MAX_TOKEN_BYTES = 16 * 1024


class QueryFailed(Exception):
    """The query gave no single finite number; the message says what it gave."""


@dataclass(frozen=True)
class QueryAnswer:
    value: float
    seconds: float


def endpoint_url(endpoint: PrometheusEndpoint) -> str:
    return endpoint.url.rstrip("/") + "/api/v1/query"


def _token(endpoint: PrometheusEndpoint) -> str | None:
    if endpoint.token_file is None:
        return None
    try:
        with Path(endpoint.token_file).open("rb") as handle:
            raw = handle.read(MAX_TOKEN_BYTES + 1)
    except OSError as error:
        raise QueryFailed(f"cannot read the token file of endpoint {endpoint.name}: "
                          f"{error.strerror}") from None
    token = raw.decode("ascii", "replace").strip()
    if len(raw) > MAX_TOKEN_BYTES or not token or any(c in token for c in "\r\n"):
        raise QueryFailed(f"the token file of endpoint {endpoint.name} does not hold one "
                          "bearer token")
    return token


def single_value(document: Any) -> float:
    """The one finite number of an instant query's answer; QueryFailed otherwise."""
    if not isinstance(document, dict) or document.get("status") != "success":
        error = document.get("error") if isinstance(document, dict) else None
        raise QueryFailed(f"Prometheus answered an error: {str(error)[:300]}" if error
                          else "Prometheus did not answer success")
    data = document.get("data")
    if not isinstance(data, dict):
        raise QueryFailed("the answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        sample = result
    elif kind == "vector":
        if not isinstance(result, list) or len(result) != 1:
            count = len(result) if isinstance(result, list) else "no"
            raise QueryFailed(f"the query returned {count} series; it must return exactly "
                              "one")
        sample = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        raise QueryFailed(f"the query returned a {kind}; only a scalar or a vector of one "
                          "sample can be compared")
    if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str)):
        raise QueryFailed("the sample is not [time, \"value\"]")
    try:
        value = float(sample[1])
    except ValueError:
        raise QueryFailed(f"the sample value {sample[1][:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise QueryFailed(f"the query returned {sample[1]}, not a finite number")
    return value


def instant_query(endpoint: PrometheusEndpoint, query: str, policy: Policy,
                  settings: Settings, should_stop: Any = lambda: False,
                  timeout: float | None = None) -> QueryAnswer:
    """POST `query` to the endpoint; its single finite value, or QueryFailed saying why
    (ProbeStopped when the job stops meanwhile). The call is bounded by the endpoint's
    `max_seconds`, and by `timeout` (a probe's `run.timeout`) when that is shorter."""
    seconds = endpoint.max_seconds if timeout is None else min(timeout, endpoint.max_seconds)
    limits = policy.probes.model_copy(update={
        "max_body_bytes": policy.prometheus.max_body_bytes,
        "max_seconds": seconds})
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Accept": "application/json"}
    token = _token(endpoint)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    client = ProbeClient(DestinationGuard.for_settings(limits, settings),
                         should_stop=should_stop)
    started = time.monotonic()
    try:
        answer = client.request("POST", endpoint_url(endpoint), timeout=seconds,
                                headers=headers, body=urlencode({"query": query}).encode(),
                                keep_body=True)
    except DestinationRefused as refused:
        raise QueryFailed(f"endpoint {endpoint.name} is refused by the admin policy: "
                          f"{refused.reason}") from None
    if answer.status is None:
        raise QueryFailed(f"endpoint {endpoint.name}: {answer.error}")
    if answer.body_cut:
        raise QueryFailed(f"the answer is longer than prometheus.max_body_bytes "
                          f"({policy.prometheus.max_body_bytes})")
    try:
        document = json.loads(answer.body)
    except ValueError:
        raise QueryFailed(f"endpoint {endpoint.name} answered {answer.status} with no JSON"
                          ) from None
    return QueryAnswer(single_value(document), round(time.monotonic() - started, 6))


def check_prometheus(probe: PrometheusProbe, env: ProbeEnv) -> Attempt:
    endpoint = env.policy.prometheus.endpoint(probe.endpoint)
    if endpoint is None:
        return Attempt(False, error=f"endpoint {probe.endpoint!r} is not in the admin "
                                    "policy's prometheus.endpoints")
    try:
        answer = instant_query(endpoint, probe.query, env.policy, env.settings,
                               env.should_stop, timeout=probe.run.timeout)
    except QueryFailed as failed:
        return Attempt(False, error=f"{probe.describe}: {failed}")
    ok = compare(probe.op, answer.value, probe.threshold)
    return Attempt(ok, value=answer.value, seconds=answer.seconds,
                   output=f"{probe.describe} = {answer.value:g}"
                   + ("" if ok else f", expected {probe.op} {probe.threshold:g}"))
