"""Verdicts and scores on job records, the error-budget guard, before-probes that skip a
job, and probes that would read another tenant's namespace (design §2.2, §2.4, §7 attacks
2-4): on the fake cluster through the runner, through the submission rules, and through
the HTTP API's test client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from pystol_api.http.app import create_app, services_of
from pystol_worker.actions import default_registry
from pystol_worker.core.access import AccessDenied, Grant, Role
from pystol_worker.core.model import JobSpec, JobStatus, Verdict
from pystol_worker.core.policy import Policy, ProbePolicy, PrometheusEndpoint, PrometheusPolicy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import (
    GrantInvalid,
    check_grant,
    grant_for,
    owner_lapsed,
    policy_problems,
    sealed,
)
from pystol_worker.jobs.validation import validate_job
from pystol_worker.kube.fake_cluster import FakeCluster
from pystol_worker.store.token_store import TokenStore
from tests.support.fake_jobs import FakeJobs, app_deployment, pods_of
from tests.support.grants import operator, store_job
from tests.support.prometheus import FakePrometheus, fake_prometheus, scalar, vector

KILL_ONE = {"action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                             "mode": "fixed", "value": 1}}
GUARD = {"endpoint": "main", "query": "slo:burn_rate:1h", "max": 1.0}


def prometheus_policy(url: str, namespaces: list[str] | None = None) -> Policy:
    endpoint: dict[str, Any] = {"name": "main", "url": url,
                                "namespaces": ["shop"] if namespaces is None else namespaces}
    return Policy(probes=ProbePolicy(allow=["127.0.0.1/32"]),
                  prometheus=PrometheusPolicy(endpoints=[PrometheusEndpoint(**endpoint)]))


def ready_pods(fake: FakeCluster, at_least: int) -> dict[str, Any]:
    return {"type": "k8s", "name": "enough-web", "namespace": "shop",
            "pods": {"label_selector": "app=web", "ready": True, "op": "ge",
                     "value": at_least}}


# -- the guard ------------------------------------------------------------------------------


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    with fake_prometheus() as server:
        yield server


def test_a_burning_error_budget_skips_the_job_with_the_value(prometheus: FakePrometheus
                                                              ) -> None:
    prometheus.answer = vector("2.31")
    jobs = FakeJobs(policy=prometheus_policy(prometheus.url))
    app_deployment(jobs.fake, replicas=3)
    before = pods_of(jobs.fake)
    record = jobs.run({**KILL_ONE, "guard": GUARD})

    assert record.status == JobStatus.SKIPPED
    assert record.verdict == Verdict.SKIPPED and record.score is None
    assert record.reason == "error budget guard: slo:burn_rate:1h on main = 2.31 > max 1"
    guard = record.result.output["guard"]
    assert (guard["value"], guard["max"], guard["endpoint"]) == (2.31, 1.0, "main")
    assert guard["evaluated_at"]
    assert pods_of(jobs.fake).keys() == before.keys()
    assert jobs.fake.called("list", "pods") == []  # nothing was even selected
    assert "guarded" in [event.kind for event in record.timeline]


def test_a_budget_within_its_max_lets_the_job_run(prometheus: FakePrometheus) -> None:
    prometheus.answer = scalar("0.2")
    jobs = FakeJobs(policy=prometheus_policy(prometheus.url))
    app_deployment(jobs.fake, replicas=3)
    record = jobs.run({**KILL_ONE, "guard": GUARD})
    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert record.result.output["guard"]["value"] == 0.2
    assert record.verdict == Verdict.PASSED and record.score == 100.0


@pytest.mark.parametrize("answer", [scalar("NaN"), vector("0.1", "0.2", "0.3"), vector()])
def test_a_guard_that_cannot_read_one_number_skips(prometheus: FakePrometheus,
                                                    answer: Any) -> None:
    prometheus.answer = answer
    jobs = FakeJobs(policy=prometheus_policy(prometheus.url))
    app_deployment(jobs.fake, replicas=3)
    record = jobs.run({**KILL_ONE, "guard": GUARD})
    assert record.status == JobStatus.SKIPPED
    assert "could not be read" in (record.reason or "") and "on_error: skip" in (
        record.reason or "")


def test_a_prometheus_that_is_down_skips_unless_on_error_run() -> None:
    with fake_prometheus() as server:
        url = server.url  # nothing listens there once the block ends
    jobs = FakeJobs(policy=prometheus_policy(url))
    app_deployment(jobs.fake, replicas=3)
    skipped = jobs.run({**KILL_ONE, "guard": GUARD})
    assert skipped.status == JobStatus.SKIPPED and skipped.verdict == Verdict.SKIPPED
    ran = jobs.run({**KILL_ONE, "guard": {**GUARD, "on_error": "run"}})
    assert ran.status == JobStatus.SUCCEEDED, ran.reason


# -- verdicts and scores ----------------------------------------------------------------------


def test_an_unmet_before_probe_skips_the_job_and_changes_nothing() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    before = pods_of(jobs.fake)
    record = jobs.run({**KILL_ONE, "probes": [ready_pods(jobs.fake, 4)]})
    assert record.status == JobStatus.SKIPPED and record.verdict == Verdict.SKIPPED
    assert (record.reason or "").startswith("steady state not met before injection: probe "
                                            "enough-web (edge): ")
    assert pods_of(jobs.fake).keys() == before.keys()
    assert jobs.fake.called("delete", "pods") == []


def test_an_unmet_after_probe_fails_the_job_with_a_partial_score() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    # "absent" holds before the kill; the fake's controller recreates the pod, but the
    # probe asks for the killed pod's *name*, which never comes back.
    pod = jobs.fake.objects("Pod", "shop", "app=web")[0]["metadata"]["name"]
    jobs.fake.add_pod("shop", "canary", labels={"app": "canary"})
    probe = {"type": "k8s", "name": "canary-gone", "namespace": "shop",
             "object": {"kind": "Pod", "name": "canary", "check": "absent"}, "mode": "eot"}
    record = jobs.run({**KILL_ONE, "probes": [probe, ready_pods(jobs.fake, 1)]})
    assert pod
    assert record.status == JobStatus.FAILED
    assert record.verdict == Verdict.FAILED
    assert (record.reason or "").startswith("steady state not met after recovery: probe "
                                            "canary-gone (eot)")
    # evaluations: canary-gone after (failed), enough-web before and after (passed): 2/3
    assert record.score == 66.0


def test_a_linked_job_stores_its_run_and_step() -> None:
    from pystol_worker.core.model import Source
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    spec = JobSpec.model_validate({**KILL_ONE, "experiment": {"run_id": "x-9",
                                                              "path": "method[0]"}})
    job_id = store_job(jobs.store, spec, source=Source.EXPERIMENT, settings=jobs.settings,
                       registry=jobs.runner.registry).id
    seen = []
    jobs.runner.on_finished = seen.append
    record = jobs.run_stored(job_id)
    assert (record.experiment_run_id, record.step) == ("x-9", "method[0]")
    assert record.verdict == Verdict.PASSED
    assert [r.id for r in seen] == [job_id] and seen[0].verdict == Verdict.PASSED


def test_a_broken_on_finished_hook_does_not_change_the_job() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)

    def broken(record: Any) -> None:
        raise RuntimeError("engine down")
    jobs.runner.on_finished = broken
    assert jobs.run(KILL_ONE).status == JobStatus.SUCCEEDED


def test_a_job_linked_to_a_run_by_anyone_but_the_engine_is_refused_in_the_worker() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    spec = JobSpec.model_validate({**KILL_ONE, "experiment": {"run_id": "x-9", "path": "m"}})
    job_id = store_job(jobs.store, spec, settings=jobs.settings,
                       registry=jobs.runner.registry).id  # source: api
    record = jobs.run_stored(job_id)
    assert record.status == JobStatus.FAILED and "experiment" in (record.reason or "")
    assert jobs.fake.called("delete", "pods") == []


# -- scope: probes in another tenant's namespace ----------------------------------------------


SHOP = operator("shop-op", "shop")
SERVICE_IN_PAYMENTS = {"service": {"namespace": "payments", "name": "web"}}


def scope_of(spec: dict[str, Any], identity: Any = SHOP) -> Grant:
    job = JobSpec.model_validate(spec)
    action, params = validate_job(job, default_registry(), Settings())
    return grant_for(job, action, params, identity)


@pytest.mark.parametrize(("probe", "loc"), [
    (SERVICE_IN_PAYMENTS, "probes[0].service.namespace"),
    ({"type": "k8s", "namespace": "payments", "object": {"kind": "Service", "name": "db"}},
     "probes[0].namespace"),
    ({"type": "k8s", "object": {"kind": "Node", "name": "n1"}}, "probes[0].object.kind"),
])
def test_a_probe_outside_the_callers_scope_is_refused_naming_it(probe: dict[str, Any],
                                                                 loc: str) -> None:
    with pytest.raises(AccessDenied) as refused:
        scope_of({**KILL_ONE, "probes": [probe]})
    assert refused.value.loc == loc


def test_the_grant_covers_the_probes_namespaces() -> None:
    both = operator("both", "shop", "payments")
    grant = scope_of({**KILL_ONE, "probes": [SERVICE_IN_PAYMENTS]}, both)
    assert grant.namespaces == ["shop", "payments"] and not grant.cluster


def test_a_record_edited_to_probe_another_namespace_is_refused_in_the_worker() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    job_id = store_job(jobs.store, JobSpec.model_validate(KILL_ONE), identity=SHOP,
                       settings=jobs.settings, registry=jobs.runner.registry).id

    def edit(record: Any) -> None:
        record.spec = JobSpec.model_validate({**KILL_ONE, "probes": [SERVICE_IN_PAYMENTS]})
    jobs.store.update(job_id, edit)
    record = jobs.run_stored(job_id)
    assert record.status == JobStatus.FAILED
    assert "grant" in (record.reason or "") and record.verdict == Verdict.ABORTED
    assert jobs.fake.requests == []


def test_a_grant_sealed_without_the_probes_namespace_is_refused() -> None:
    """Even with a valid seal (a grant from an older version), the probe's namespace must
    be inside it."""
    jobs = FakeJobs()
    spec = JobSpec.model_validate({**KILL_ONE, "probes": [SERVICE_IN_PAYMENTS]})
    record = store_job(jobs.store, spec, settings=jobs.settings)
    narrow = Grant(submitter="someone", namespaces=["shop"])
    record.grant = sealed(narrow, record.id, spec, jobs.settings.signing_key_bytes)
    action, params = validate_job(spec, default_registry(), jobs.settings)
    with pytest.raises(GrantInvalid, match="payments are outside the grant"):
        check_grant(record, action, params, jobs.settings.signing_key_bytes)


@pytest.mark.parametrize(("scope", "problem"), [
    (["payments"], "does not open endpoint 'main' to shop"),
    (["shop"], None),
    (["shop", "shop-*"], None),
    ([], "does not open endpoint 'main' to shop"),
])
def test_a_prometheus_endpoint_must_be_open_to_the_jobs_namespaces(
        scope: list[str], problem: str | None) -> None:
    policy = prometheus_policy("http://127.0.0.1:9", scope)
    spec = JobSpec.model_validate({**KILL_ONE, "guard": GUARD, "probes": [
        {"type": "prometheus", "endpoint": "main", "query": "up", "op": "eq",
         "threshold": 1}]})
    action, params = validate_job(spec, default_registry(), Settings())
    found = {p.loc: p.msg for p in policy_problems(spec, action, params, policy,
                                                   __import__("datetime").datetime.now())}
    if problem is None:
        assert found == {}
    else:
        assert set(found) == {"probes[0].endpoint", "guard.endpoint"}
        assert problem in found["guard.endpoint"]


def test_an_endpoint_the_policy_does_not_name_is_refused() -> None:
    spec = JobSpec.model_validate({**KILL_ONE, "guard": {**GUARD, "endpoint": "elsewhere"}})
    action, params = validate_job(spec, default_registry(), Settings())
    from datetime import datetime
    [problem] = policy_problems(spec, action, params, Policy(), datetime.now())
    assert problem.loc == "guard.endpoint" and "elsewhere" in problem.msg


# -- through the HTTP API ---------------------------------------------------------------------

ADMIN_TOKEN = "admin-token-0123456789"


@pytest.fixture
def api() -> Iterator[tuple[FlaskClient, dict[str, str]]]:
    app = create_app(Settings(api_tokens=[ADMIN_TOKEN], kubernetes_auth=False),
                     redis_client=fakeredis.FakeRedis(), queue=_Queue(),
                     registry=default_registry(),
                     cluster_factory=lambda: FakeCluster())  # type: ignore[arg-type,return-value]
    _, shop_token = services_of(app).tokens.create("operator-shop", Role.OPERATOR, ["shop"],
                                                   None, created_by="test")
    with app.test_client() as client:
        yield client, {"admin": ADMIN_TOKEN, "shop": shop_token}


class _Queue:
    def send(self, job_id: str) -> None:
        pass


def post(api: tuple[FlaskClient, dict[str, str]], who: str, body: Any) -> Any:
    client, tokens = api
    return client.post("/api/v1/jobs", json=body,
                       headers={"Authorization": f"Bearer {tokens[who]}"})


def test_the_api_refuses_a_probe_in_another_tenants_namespace_with_403(
        api: tuple[FlaskClient, dict[str, str]]) -> None:
    response = post(api, "shop", {**KILL_ONE, "dry_run": True,
                                  "probes": [SERVICE_IN_PAYMENTS]})
    assert response.status_code == 403, response.json
    assert [e["loc"] for e in response.json["errors"]] == ["probes[0].service.namespace"]
    ok = post(api, "shop", {**KILL_ONE, "dry_run": True,
                            "probes": [{"service": {"namespace": "shop", "name": "web"}}]})
    assert ok.status_code == 202, ok.json


def test_the_api_refuses_a_job_linked_to_an_experiment(
        api: tuple[FlaskClient, dict[str, str]]) -> None:
    response = post(api, "admin", {**KILL_ONE, "experiment": {"run_id": "x", "path": "m"}})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json["errors"]] == ["experiment"]


@pytest.mark.parametrize(("probe", "loc"), [
    ({"url": "http://x/", "expect_status": True}, "probes[0].http.expect_status"),
    ({"url": "http://x/", "expect_status": "200"}, "probes[0].http.expect_status"),
    ({"url": "http://x/", "expect_status": 200.0}, "probes[0].http.expect_status"),
    ({"url": "http://x/", "expect_status": []}, "probes[0].http.expect_status"),
    ({"url": "http://x/", "expect_status": [200, "x"]}, "probes[0].http.expect_status"),
    ({"type": "prometheus", "endpoint": "main", "query": "up", "threshold": "NaN"},
     "probes[0].prometheus.threshold"),
    ({"type": "prometheus", "endpoint": "main", "query": "up", "threshold": True},
     "probes[0].prometheus.threshold"),
    ({"type": "prometheus", "endpoint": "main", "query": "x" * 2049, "threshold": 1},
     "probes[0].prometheus.query"),
    ({"type": "k8s", "namespace": "shop", "object": {
        "kind": "Deployment", "name": "web", "check": "field",
        "field": {"path": "spec.replicas", "op": "gt", "value": "3"}}},
     "probes[0].k8s.object.field"),
    ({"type": "k8s", "namespace": "shop", "pods": {"op": "between", "value": [3, 1]}},
     "probes[0].k8s.pods"),
    ({"url": "http://x/", "mode": "continuous", "run": {"interval": "10ms"}},
     "probes[0].http.run.interval"),
])
def test_tolerance_typing_attacks_are_422_at_the_field(
        api: tuple[FlaskClient, dict[str, str]], probe: dict[str, Any], loc: str) -> None:
    response = post(api, "admin", {**KILL_ONE, "probes": [probe]})
    assert response.status_code == 422, response.json
    locs = [e["loc"] for e in response.json["errors"]]
    assert any(found == loc or found.startswith(loc + ".") for found in locs), locs


def test_an_infinite_threshold_never_reaches_the_model(
        api: tuple[FlaskClient, dict[str, str]]) -> None:
    """1e999 parses as Infinity: the API's JSON reader refuses it before the model."""
    response = post(api, "admin", {**KILL_ONE, "probes": [
        {"type": "prometheus", "endpoint": "main", "query": "up", "threshold": 1e999}]})
    assert response.status_code == 400


def test_a_lapsed_owner_no_longer_covers_the_grant() -> None:
    """What acts later on someone's behalf (schedules, experiment runs) stops with them."""
    client = fakeredis.FakeRedis()
    key = Settings().signing_key_bytes
    tokens = TokenStore(client, key)
    token, _ = tokens.create("shop-op", Role.OPERATOR, ["shop"], None, created_by="test")
    grant = Grant(submitter="token:shop-op", namespaces=["shop"])
    assert owner_lapsed(token.actor(), grant, client, key) is None
    wider = grant.model_copy(update={"namespaces": ["shop", "payments"]})
    assert "may no longer run chaos in namespace 'payments'" in (
        owner_lapsed(token.actor(), wider, client, key) or "")
    tokens.revoke("shop-op")
    assert "revoked" in (owner_lapsed(token.actor(), grant, client, key) or "")
