"""schemathesis against the live API, from the OpenAPI document the API serves itself.

The API runs as users run it (`pystol api`: gunicorn, a real redis-server, the simulated
cluster for previews and `GET /cluster`); no Celery worker is started, so a job the fuzzer
manages to submit stays queued and touches nothing. Every operation of the document is sent
schema-conforming (positive) and schema-violating (negative) requests, and each answer must:

- never be a 5xx (`not_a_server_error`);
- use a documented status code and content type, with a body matching the documented schema
  (`status_code_conformance`, `content_type_conformance`, `response_schema_conformance`);
- if it is a 4xx, be an RFC 9457 `application/problem+json` document whose `status` is the
  HTTP status (`assert_problem_document`).

Requests generated from the document alone rarely get past validation: an `action` is any
string there, and the ids in paths are random. So the positive pass also sends requests that
reach the code behind validation: job and schedule bodies built from the action catalogue
(`GET /actions`) with hypothesis-chosen targets, modes and durations, and paths naming a job,
a schedule and a token that exist (`Seeds`).

Three identities are fuzzed: the settings token (an admin, where most code runs), a named
viewer token scoped to one namespace (the refusal paths), and no token at all (every protected
operation must answer a 401 problem). The budget is bounded and derandomized, so CI sends the
same requests every time; failures are collected rather than shrunk, so a broken build still
ends within the budget and reports every operation that failed, each with a curl command.
PYSTOL_FUZZ_EXAMPLES raises the budget for a longer local run.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pystol_api.http.problems import PROBLEM_JSON, PROBLEM_TYPE_BASE
from tests.support.pystol_processes import api
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

TOKEN = "fuzz-admin-token"
API = "/api/v1"
OPENAPI_PATH = API + "/openapi.json"
HALT_PATH = API + "/halt"
URI_TOO_LONG = 414
VIEWER = {"name": "fuzz-viewer", "role": "viewer", "namespaces": ["shop"]}
#: Examples per operation and generation mode; PYSTOL_FUZZ_EXAMPLES overrides it locally.
ADMIN_EXAMPLES = int(os.environ.get("PYSTOL_FUZZ_EXAMPLES", "25"))
#: The refusal paths are short: a smaller pass finds what there is to find there.
SCOPED_EXAMPLES = max(5, ADMIN_EXAMPLES // 3)
#: Distinct failures kept per operation: enough to see the pattern, not a wall of repeats.
FAILURES_PER_OPERATION = 4
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]

# What a valid job needs beyond the catalogue's defaults; other actions take `{}`.
REQUIRED_PARAMS: dict[str, dict[str, Any]] = {
    "http-probe": {"url": "http://web.shop.svc.cluster.local/healthz", "count": 1},
    "deployment-scale": {"replicas": 0},
}
NAMESPACES = ["shop", "payments", "monitoring", "kube-system"]  # kube-system: protected
SELECTORS = ["app=web", "app in (web,cart)", "tier!=backend", "", "app"]
NODE_SELECTORS = ["topology.kubernetes.io/zone=zone-a", "kubernetes.io/os=linux"]
DURATIONS = [None, "0s", "10s", "1m30s", "1h", 45]
SCHEDULE_TIMES = [{"interval": "1h"}, {"cron": "0 3 * * *"}, {"mtbf": "6h"},
                  {"cron": "*/5 9-17 * * mon-fri", "time_zone": "Europe/Berlin"}]
SEED_JOB = {"action": "pod-kill", "dry_run": True,
            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}
SEED_SCHEDULE = {"interval": "1h", "paused": True, "template": SEED_JOB}
SEED_TOKEN = {"name": "fuzz-seed", "role": "operator", "namespaces": ["shop"]}


@dataclass
class FuzzApi:
    url: str
    token: str
    process_tail: Callable[[], str]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request as the admin, retried while the halt switch's own rate limit says so."""
        for _ in range(50):
            response = requests.request(method, self.url + path, timeout=30,
                                        headers={"Authorization": f"Bearer {self.token}"},
                                        **kwargs)
            if response.status_code != 429:
                return response
            time.sleep(0.1)
        return response


@pytest.fixture(scope="module")
def fuzz_api(redis_server: RedisServer, sim: SimProcess) -> Iterator[FuzzApi]:
    """The API alone (no worker) on the session's redis-server and simulated cluster."""
    redis_server.client().flushdb()
    env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
           # The fuzzer sends hundreds of requests a second from one address and one token;
           # the rate limiter (tested on its own) would answer most of them with 429.
           "PYSTOL_API_RATE_LIMIT": "", "PYSTOL_API_ADDRESS_RATE_LIMIT": "",
           "PYSTOL_HALT_RATE_LIMIT": "100000/second",
           "PYSTOL_API_WORKERS": "1"}
    port = free_port()
    try:
        with api(env, port, TOKEN) as process:
            yield FuzzApi(f"http://127.0.0.1:{port}", TOKEN, process.tail)
    finally:
        # The jobs the fuzzer queued (some not dry runs) must not wait in the session's
        # Redis for the worker of a later test module.
        redis_server.client().flushdb()


@pytest.fixture(scope="module")
def schema(fuzz_api: FuzzApi) -> Any:
    """The document the running API serves, loaded the way any client would load it."""
    return schemathesis.openapi.from_url(fuzz_api.url + OPENAPI_PATH)


@pytest.fixture(scope="module")
def seeds(fuzz_api: FuzzApi) -> Seeds:
    return Seeds(fuzz_api)


@pytest.fixture(scope="module")
def catalogue(fuzz_api: FuzzApi) -> list[dict[str, Any]]:
    response = fuzz_api.call("GET", API + "/actions")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# -- requests that get past validation --------------------------------------------------------


def targets_for(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """A target of `kind`, valid or nearly so: modes with and without fitting values."""
    modes = st.one_of(
        st.sampled_from([{"mode": "one"}, {"mode": "all"}, {"mode": "fixed", "value": 2},
                         {"mode": "fixed-percent", "value": 50}, {"amount": 1},
                         {"mode": "random-max-percent", "value": 100}]),
        st.fixed_dictionaries({"mode": st.sampled_from(["fixed", "fixed-percent", "one"]),
                               "value": st.one_of(st.none(), st.integers(-1, 10**6),
                                                  st.floats(-1, 200))}))
    extras = st.fixed_dictionaries({}, optional={
        "max_targets": st.integers(1, 5), "min_available": st.sampled_from([1, "50%", 0])})
    if kind in ("pods", "workloads"):
        where = st.fixed_dictionaries({
            "namespaces": st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=2,
                                   unique=True),
            "label_selector": st.sampled_from(SELECTORS)})
    elif kind == "nodes":
        where = st.one_of(st.fixed_dictionaries({"label_selector":
                                                 st.sampled_from(NODE_SELECTORS)}),
                          st.just({"names": ["worker-a"]}))
    else:  # url: the params say where
        return st.just({})
    return st.tuples(where, modes, extras).map(lambda parts: {**parts[0], **parts[1],
                                                               **parts[2]})


def jobs_from(catalogue: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Job specs for the catalogue's actions, most of them valid."""
    def job(entry: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({
            "action": st.just(entry["name"]),
            "target": targets_for(entry["targets"]),
            "params": st.just(REQUIRED_PARAMS.get(entry["name"], {})),
            "dry_run": st.booleans(),
        }, optional={"duration": st.sampled_from(DURATIONS),
                     "on_conflict": st.sampled_from(["wait", "reject"]),
                     "idempotency_key": st.sampled_from(["fuzz-1", "fuzz-2"])})
    return st.sampled_from(catalogue).flatmap(job)


def schedules_from(catalogue: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(st.sampled_from(SCHEDULE_TIMES), jobs_from(catalogue),
                     st.booleans()).map(
        lambda parts: {**parts[0], "template": parts[1], "paused": parts[2]})


@dataclass
class Seeds:
    """Things that exist, for the operations whose path names one; made afresh for each
    operation, since `DELETE` and `cancel` use them up."""

    fuzz_api: FuzzApi
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def path_parameters(self, path: str) -> dict[str, str] | None:
        if path.startswith(API + "/jobs/{id}"):
            response = self.fuzz_api.call("POST", API + "/jobs", json=SEED_JOB)
            assert response.status_code == 202, response.text
            return {"id": response.json()["id"]}
        if path.startswith(API + "/schedules/{id}"):
            response = self.fuzz_api.call("POST", API + "/schedules", json=SEED_SCHEDULE)
            assert response.status_code == 201, response.text
            return {"id": response.json()["id"]}
        if path.startswith(API + "/tokens/{name}"):
            name = f"{SEED_TOKEN['name']}-{next(self.numbers)}"
            response = self.fuzz_api.call("POST", API + "/tokens",
                                          json=dict(SEED_TOKEN, name=name))
            assert response.status_code == 201, response.text
            return {"name": name}
        return None


def seeded_cases(operation: Any, seeds: Seeds, catalogue: list[dict[str, Any]]
                 ) -> st.SearchStrategy[Any] | None:
    """Positive cases that reach past validation, for the operations that need help."""
    route = (operation.method.upper(), operation.path)
    bodies = {("POST", API + "/jobs"): jobs_from(catalogue),
              ("POST", API + "/preview"): jobs_from(catalogue),
              ("POST", API + "/schedules"): schedules_from(catalogue)}.get(route)
    if bodies is not None:
        return bodies.map(lambda body: operation.Case(body=body, media_type="application/json"))
    parameters = seeds.path_parameters(operation.path)
    if parameters is not None:
        return operation.as_strategy(GenerationMode.POSITIVE, path_parameters=parameters)
    return None


# -- running and judging ----------------------------------------------------------------------


@dataclass
class Findings:
    """Distinct failures by operation (a status and the checks it failed), each with an
    explanation and a curl command to reproduce it, and the statuses seen."""

    by_operation: dict[str, dict[str, str]] = field(default_factory=dict)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    too_long: int = 0  # refused by gunicorn: request line too long

    def add(self, label: str, signature: str, text: str) -> None:
        found = self.by_operation.setdefault(label, {})
        if len(found) < FAILURES_PER_OPERATION:
            found.setdefault(signature, text)

    def report(self) -> str:
        return "\n\n".join(f"=== {label}\n" + "\n---\n".join(texts.values())
                           for label, texts in sorted(self.by_operation.items()))

    def reached(self, label: str, status: int) -> bool:
        return self.statuses[(label, status)] > 0


def assert_problem_document(response: schemathesis.Response) -> None:
    """A 4xx is a problem document: the shape the CLI and the dashboard read errors in."""
    if not 400 <= response.status_code < 500:
        return
    # schemathesis' Response: lower-case header names, a list of values each
    media_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    assert media_type == PROBLEM_JSON, \
        f"{response.status_code} answered as {media_type!r}, not {PROBLEM_JSON}"
    document = response.json()
    assert isinstance(document, dict), f"problem document is not an object: {document!r}"
    for key, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        assert isinstance(document.get(key), kind), f"problem document lacks {key}: {document}"
    assert document["type"].startswith(PROBLEM_TYPE_BASE), document
    assert document["status"] == response.status_code, document


def judge(fuzz_api: FuzzApi, operation: Any, case: Any, mode: GenerationMode,
          headers: dict[str, str], findings: Findings) -> None:
    """Send one case and record what is wrong with the answer, if anything."""
    try:
        response = case.call(base_url=fuzz_api.url, headers=headers, timeout=30)
    except requests.RequestException as error:
        findings.add(operation.label, "no answer", f"{mode.value}: no answer: {error}\n"
                     f"{case.as_curl_command(headers=headers)}")
        return
    findings.statuses[(operation.label, response.status_code)] += 1
    if operation.method.upper() == "POST" and operation.path == HALT_PATH \
            and response.status_code == 200:
        # A halt refuses every later submission with 409: lift it at once so the rest of
        # the run still reaches the submission code.
        assert fuzz_api.call("DELETE", HALT_PATH).status_code == 200
    if response.status_code == URI_TOO_LONG:
        # gunicorn refuses a request line over 8190 bytes (its hard maximum) before the
        # application sees it, so the answer cannot be a problem document. Only
        # schema-violating query strings get there (`GET /whoami` now allows at most 100
        # namespaces, which fit).
        findings.too_long += 1
        return
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
        assert_problem_document(response)
    except schemathesis.errors.FailureGroup as failures:
        titles = sorted({failure.title for failure in failures.exceptions})
        findings.add(operation.label, f"{response.status_code} {titles}",
                     f"{mode.value}: {failures}")
    except AssertionError as failure:
        findings.add(operation.label, f"{response.status_code} problem",
                     f"{mode.value}: {failure}\n{case.as_curl_command(headers=headers)}")


def sender(fuzz_api: FuzzApi, operation: Any, mode: GenerationMode, headers: dict[str, str],
           findings: Findings) -> Callable[[Any], None]:
    """The function hypothesis calls with each case (a closure: `given` takes no partial)."""
    def send(case: Any) -> None:
        judge(fuzz_api, operation, case, mode, headers, findings)
    return send


def fuzz_operation(fuzz_api: FuzzApi, operation: Any, token: str | None, examples: int,
                   findings: Findings, seeded: st.SearchStrategy[Any] | None) -> None:
    """Positive (and seeded), then negative examples of one operation, sent with `token`
    (None: no Authorization header)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    positive = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    if seeded is not None:
        positive = st.one_of(positive, seeded)
    negative = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    for mode, cases in ((GenerationMode.POSITIVE, positive),
                        (GenerationMode.NEGATIVE, negative)):
        run = hypothesis.settings(
            max_examples=examples, derandomize=True, deadline=None, database=None,
            phases=[Phase.explicit, Phase.generate], print_blob=False,
            suppress_health_check=list(HealthCheck),
        )(given(case=cases)(sender(fuzz_api, operation, mode, headers, findings)))
        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            # No input to violate (`GET /healthz` takes none): nothing negative to send.
            if mode is GenerationMode.POSITIVE:
                raise


def fuzz_schema(fuzz_api: FuzzApi, schema: Any, catalogue: list[dict[str, Any]],
                seeds: Seeds, token: str | None, examples: int) -> Findings:
    findings = Findings()
    for result in schema.get_all_operations():
        operation = result.ok()
        fuzz_operation(fuzz_api, operation, token, examples, findings,
                       seeded_cases(operation, seeds, catalogue))
    return findings


def assert_no_findings(findings: Findings, fuzz_api: FuzzApi) -> None:
    assert findings.statuses, "the fuzzer sent nothing"
    if findings.by_operation:
        log = "\n".join(line[:300] for line in fuzz_api.process_tail().splitlines()[-15:])
        pytest.fail(f"{len(findings.by_operation)} operations failed after "
                    f"{findings.statuses.total()} requests ({findings.too_long} refused by "
                    f"gunicorn as too long):\n\n{findings.report()}\n\n"
                    f"API log (last lines):\n{log}", pytrace=False)


def test_fuzz_as_admin(fuzz_api: FuzzApi, schema: Any, catalogue: list[dict[str, Any]],
                       seeds: Seeds) -> None:
    findings = fuzz_schema(fuzz_api, schema, catalogue, seeds, fuzz_api.token,
                           ADMIN_EXAMPLES)
    assert_no_findings(findings, fuzz_api)
    # The fuzzer got past validation into the code behind it: a run that only ever hears
    # 422 would pass while proving little.
    for label, status in (("POST /api/v1/jobs", 202), ("POST /api/v1/preview", 200),
                          ("POST /api/v1/schedules", 201), ("GET /api/v1/jobs/{id}", 200),
                          ("PATCH /api/v1/schedules/{id}", 200),
                          ("DELETE /api/v1/tokens/{name}", 204)):
        assert findings.reached(label, status), (label, status, sorted(findings.statuses))


def test_fuzz_as_a_namespace_viewer(fuzz_api: FuzzApi, schema: Any,
                                    catalogue: list[dict[str, Any]], seeds: Seeds) -> None:
    response = fuzz_api.call("POST", API + "/tokens", json=VIEWER)
    assert response.status_code == 201, response.text
    viewer = response.json()["token"]
    findings = fuzz_schema(fuzz_api, schema, catalogue, seeds, viewer, SCOPED_EXAMPLES)
    assert_no_findings(findings, fuzz_api)
    # Past validation, into the scope check: a valid job outside the viewer's namespaces
    # (the few examples drawn may all be invalid ones, so one is sent for certain).
    refused = requests.post(fuzz_api.url + API + "/jobs", timeout=30,
                            headers={"Authorization": f"Bearer {viewer}"},
                            json={"action": "pod-kill", "dry_run": True,
                                  "target": {"namespaces": ["payments"]}})
    assert refused.status_code == 403, refused.text
    assert refused.headers["Content-Type"].startswith("application/problem+json")


def test_fuzz_without_a_token(fuzz_api: FuzzApi, schema: Any, catalogue: list[dict[str, Any]],
                              seeds: Seeds) -> None:
    findings = fuzz_schema(fuzz_api, schema, catalogue, seeds, None, SCOPED_EXAMPLES)
    assert_no_findings(findings, fuzz_api)
    protected = {label for label, _ in findings.statuses if label.split()[1].startswith(API)}
    assert protected and all(findings.reached(label, 401) for label in protected)
