"""Each probe kind passes, fails and errs as its tolerance says (design §2.1): http (a URL,
a Service through the API server's proxy), k8s (object present/absent/field/condition,
pod counts) and prometheus (one finite number, compared) — and attempts retry."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
from pydantic import TypeAdapter

from pystol_worker.core.errors import ActionError
from pystol_worker.core.model import Probe
from pystol_worker.core.policy import Policy, ProbePolicy, PrometheusEndpoint, PrometheusPolicy
from pystol_worker.core.probe_model import with_probe_type
from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.kube.fake_cluster import PASS, FakeCluster, Request
from pystol_worker.probes.evaluation import ProbeEnv, evaluate
from pystol_worker.safety.outbound_http import ProbeStopped
from tests.support.fake_jobs import app_deployment, http_server
from tests.support.prometheus import FakePrometheus, fake_prometheus, scalar, vector

PROBE = TypeAdapter(Probe)


def probe(data: dict[str, Any]) -> Any:
    return PROBE.validate_python(with_probe_type({"name": "p", **data}))


def env(cluster: Any = None, policy: Policy | None = None) -> ProbeEnv:
    return ProbeEnv(settings=Settings(), cluster=cluster or FakeCluster(),
                    policy=policy or Policy(probes=ProbePolicy(allow=["127.0.0.1/32"])))


# -- http ---------------------------------------------------------------------------------


def test_an_http_probe_judges_status_and_body() -> None:
    bodies = Policy(probes=ProbePolicy(allow=["127.0.0.1/32"], url_body_checks=True))
    with http_server() as base:
        ok = evaluate(probe({"url": f"{base}/200", "body_contains": "ok"}), env(
            policy=bodies), "before")
        assert (ok.ok, ok.status, ok.value, ok.phase, ok.name) == (True, 200, 200, "before",
                                                                   "p")
        wrong = evaluate(probe({"url": f"{base}/503"}), env(), "after")
        assert not wrong.ok and wrong.status == 503 and "answered 503" in (wrong.error or "")
        ranged = evaluate(probe({"url": f"{base}/503", "status_range": [500, 599]}), env(),
                          "after")
        assert ranged.ok
        listed = evaluate(probe({"url": f"{base}/204", "expect_status": [200, 204]}), env(),
                          "after")
        assert listed.ok
        body = evaluate(probe({"url": f"{base}/200", "body_contains": "healthy"}), env(
            policy=bodies), "after")
        assert not body.ok and "does not contain 'healthy'" in (body.error or "")


def test_an_http_probe_that_cannot_connect_or_is_refused_fails_saying_why() -> None:
    with http_server() as base:
        pass  # the server is gone: nothing listens there any more
    gone = evaluate(probe({"url": f"{base}/200"}), env(), "before")
    assert not gone.ok and gone.status is None and gone.error
    refused = evaluate(probe({"url": "http://169.254.169.254/"}), env(), "before")
    assert not refused.ok and "refused by the admin policy" in (refused.error or "")


class Proxy:
    """A service proxy answering `status` with `body`; records what it was asked."""

    def __init__(self, status: int, body: bytes = b"ok") -> None:
        self.status, self.body = status, body
        self.calls: list[tuple[str, str, str]] = []

    def service_proxy_get(self, namespace: str, service: str, path: str, timeout: float,
                          max_body: int, on_response: Any = None, head_bytes: int = 4096
                          ) -> tuple[int, int, bool, bytes]:
        self.calls.append((namespace, service, path))
        return self.status, len(self.body), False, self.body[:head_bytes]


def test_a_service_probe_goes_through_the_api_servers_proxy() -> None:
    proxy = Proxy(200, b"x" * 5000 + b"READY")
    spec = {"service": {"namespace": "shop", "name": "web", "port": 80, "path": "/healthz"},
            "body_contains": "READY"}
    outcome = evaluate(probe(spec), env(proxy), "before")
    assert outcome.ok, outcome.error  # found past the first 4 KiB: the body is kept
    assert proxy.calls == [("shop", "web:80", "/healthz")]
    down = evaluate(probe({**spec, "body_contains": None}), env(Proxy(503)), "during")
    assert not down.ok and down.status == 503


def test_the_api_server_refusing_the_worker_is_an_error_not_a_probe_result() -> None:
    refusal = (b'{"kind":"Status","message":"services \\"web\\" is forbidden: cannot get '
               b'resource \\"services/proxy\\""}')
    with pytest.raises(ActionError, match="refused the worker's call"):
        evaluate(probe({"service": {"namespace": "shop", "name": "web"}}),
                 env(Proxy(403, refusal)), "before")


# -- k8s ----------------------------------------------------------------------------------


def test_object_checks_present_absent_field_and_condition() -> None:
    fake = FakeCluster()
    app_deployment(fake, replicas=3)
    deployment = {"kind": "Deployment", "name": "web"}
    on = env(fake)
    assert evaluate(probe({"type": "k8s", "namespace": "shop", "object": deployment}), on,
                    "before").ok
    gone = evaluate(probe({"type": "k8s", "namespace": "shop",
                           "object": {**deployment, "check": "absent"}}), on, "before")
    assert not gone.ok and "is present" in (gone.error or "")
    field = {**deployment, "check": "field",
             "field": {"path": "spec.replicas", "op": "ge", "value": 3}}
    outcome = evaluate(probe({"type": "k8s", "namespace": "shop", "object": field}), on,
                       "before")
    assert outcome.ok and outcome.value == 3
    too_many = {**field, "field": {"path": "spec.replicas", "op": "gt", "value": 3}}
    assert not evaluate(probe({"type": "k8s", "namespace": "shop", "object": too_many}), on,
                        "before").ok
    missing = {**field, "field": {"path": "status.nothing[2].here", "op": "eq", "value": 1}}
    unset = evaluate(probe({"type": "k8s", "namespace": "shop", "object": missing}), on,
                     "before")
    assert not unset.ok and "is not set" in (unset.error or "")
    node = evaluate(probe({"type": "k8s", "object": {"kind": "Node", "name": "n1",
                                                     "check": "field", "field": {
                                                         "path": "spec.unschedulable",
                                                         "op": "eq", "value": True}}}),
                    on, "before")
    assert not node.ok  # not cordoned: the field is unset


def test_a_field_compared_with_another_field_treats_unset_as_unequal() -> None:
    """chaosk8s's deployment_available_and_healthy: availableReplicas == spec.replicas,
    and a Deployment whose status says nothing is not healthy, even at 0 replicas."""
    fake = FakeCluster()
    app_deployment(fake, replicas=3)
    check = {"kind": "Deployment", "name": "web", "check": "field",
             "field": {"path": "status.availableReplicas", "op": "eq",
                       "value_from": "spec.replicas"}}
    on = env(fake)
    fake.patch("Deployment", "shop", "web", {"status": {"availableReplicas": 3}})
    assert evaluate(probe({"type": "k8s", "namespace": "shop", "object": check}), on,
                    "before").ok
    fake.patch("Deployment", "shop", "web", {"status": {"availableReplicas": 2}})
    short = evaluate(probe({"type": "k8s", "namespace": "shop", "object": check}), on,
                     "before")
    assert not short.ok and "status.availableReplicas = 2, spec.replicas = 3" in (
        short.error or "")
    fake.patch("Deployment", "shop", "web", {"spec": {"replicas": 0},
                                             "status": {"availableReplicas": None}})
    assert not evaluate(probe({"type": "k8s", "namespace": "shop", "object": check}), on,
                        "before").ok


def test_a_bool_field_never_equals_one() -> None:
    fake = FakeCluster()
    fake.add_node("n1")
    fake.patch("Node", None, "n1", {"spec": {"unschedulable": True}})
    check = {"kind": "Node", "name": "n1", "check": "field",
             "field": {"path": "spec.unschedulable", "op": "eq", "value": 1}}
    assert not evaluate(probe({"type": "k8s", "object": check}), env(fake), "before").ok
    check["field"]["value"] = True  # type: ignore[index]
    assert evaluate(probe({"type": "k8s", "object": check}), env(fake), "before").ok


def test_a_condition_check_reads_status_conditions() -> None:
    fake = FakeCluster()
    fake.add_pod("shop", "web-1", labels={"app": "web"})
    ready = {"kind": "Pod", "name": "web-1", "check": "condition",
             "condition": {"type": "Ready", "status": "True"}}
    assert evaluate(probe({"type": "k8s", "namespace": "shop", "object": ready}), env(fake),
                    "before").ok
    fake.set_pod_ready("shop", "web-1", False)
    outcome = evaluate(probe({"type": "k8s", "namespace": "shop", "object": ready}),
                       env(fake), "before")
    assert not outcome.ok and outcome.value == "False"


def test_pod_counts_compare_with_a_count_a_percent_and_a_range() -> None:
    fake = FakeCluster()
    app_deployment(fake, replicas=3)
    pods = fake.objects("Pod", "shop", "app=web")
    fake.set_pod_ready("shop", pods[0]["metadata"]["name"], False)
    on = env(fake)

    def count(**pods: Any) -> Any:
        return evaluate(probe({"type": "k8s", "namespace": "shop",
                               "pods": {"label_selector": "app=web", "ready": True, **pods}}),
                        on, "before")
    two = count(op="ge", value=2)
    assert two.ok and two.value == 2
    assert not count(op="ge", value=3).ok
    assert count(op="ge", value="66%").ok      # 66% of 3 rounds up to 2
    assert not count(op="ge", value="67%").ok  # 67% of 3 rounds up to 3
    assert count(op="between", value=[1, 2]).ok
    assert not count(op="in", value=[0, 3]).ok


def test_a_kubernetes_error_fails_the_probe_with_the_apis_answer() -> None:
    fake = FakeCluster()

    def broken(request: Request) -> Any:
        raise ClusterError("Kubernetes API answered 500: etcd is gone", 500)
    fake.prepend_reactor("list", "pods", broken)
    outcome = evaluate(probe({"type": "k8s", "namespace": "shop", "pods": {}}), env(fake),
                       "before")
    assert not outcome.ok and "etcd is gone" in (outcome.error or "")


def test_attempts_retry_until_the_first_pass() -> None:
    fake = FakeCluster()
    app_deployment(fake, replicas=1)
    calls = []

    def flaky(request: Request) -> Any:
        calls.append(request)
        if len(calls) < 3:
            raise ClusterError("Kubernetes API answered 503: busy", 503)
        return PASS
    fake.prepend_reactor("list", "pods", flaky)
    spec = {"type": "k8s", "namespace": "shop", "pods": {"label_selector": "app=web"},
            "run": {"attempts": 3, "retry_interval": "0s"}}
    outcome = evaluate(probe(spec), env(fake), "before")
    assert outcome.ok and len(calls) == 3
    assert "attempt 3 of 3" in (outcome.output or "")
    calls.clear()
    spec["run"] = {"attempts": 2, "retry_interval": "0s"}
    assert not evaluate(probe(spec), env(fake), "before").ok and len(calls) == 2


# -- prometheus ---------------------------------------------------------------------------


def prom_env(server: FakePrometheus, **endpoint: Any) -> ProbeEnv:
    policy = Policy(probes=ProbePolicy(allow=["127.0.0.1/32"]),
                    prometheus=PrometheusPolicy(endpoints=[PrometheusEndpoint(
                        name="main", url=server.url, **endpoint)]))
    return env(policy=policy)


PROM = {"type": "prometheus", "endpoint": "main", "query": "slo:burn_rate",
        "op": "lt", "threshold": 1.0}


def test_promql_reaches_prometheus_verbatim_as_one_form_value() -> None:
    nasty = 'sum(rate(x{a="1&b=2"}[5m])) # comment\nor vector(0) & query=up'
    with fake_prometheus() as server:
        server.answer = scalar("0.5")
        outcome = evaluate(probe({**PROM, "query": nasty}), prom_env(server), "before")
    assert outcome.ok and outcome.value == 0.5, outcome.error
    [(path, headers, body)] = server.requests
    assert path == "/api/v1/query"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True) == {
        "query": [nasty]}


def test_a_bearer_token_file_is_sent(tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with fake_prometheus() as server:
        evaluate(probe(PROM), prom_env(server, token_file=str(token)), "before")
    assert server.requests[0][1]["Authorization"] == "Bearer s3cret"


@pytest.mark.parametrize(("answer", "says"), [
    (vector(), "0 series"),
    (vector("0.1", "0.2", "0.3"), "3 series"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "a matrix"),
    ({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}},
     "a string"),
    (scalar("NaN"), "not a finite number"),
    (scalar("+Inf"), "not a finite number"),
    (vector("-Inf"), "not a finite number"),
    ({"status": "error", "error": "parse error"}, "parse error"),
    (b"<html>not json</html>", "no JSON"),
])
def test_anything_but_one_finite_number_is_a_probe_error(answer: Any, says: str) -> None:
    with fake_prometheus() as server:
        server.answer = answer
        # `gt -1e300` would pass for any number: only the error can fail it
        outcome = evaluate(probe({**PROM, "op": "gt", "threshold": -1e300}),
                           prom_env(server), "before")
    assert not outcome.ok and says in (outcome.error or ""), outcome.error
    assert outcome.value is None


def test_a_single_sample_vector_is_compared_with_the_threshold() -> None:
    with fake_prometheus() as server:
        server.answer = vector("2.5")
        outcome = evaluate(probe(PROM), prom_env(server), "before")
    assert not outcome.ok and outcome.value == 2.5
    assert "expected lt 1" in (outcome.error or "")


def test_a_body_past_the_cap_is_an_error() -> None:
    with fake_prometheus() as server:
        server.answer = {**scalar("0.1"), "padding": "x" * 4096}
        on = prom_env(server)
        on.policy = on.policy.model_copy(update={"prometheus": on.policy.prometheus.model_copy(
            update={"max_body_bytes": 1024})})
        outcome = evaluate(probe(PROM), on, "before")
    assert not outcome.ok and "max_body_bytes" in (outcome.error or "")


def test_an_endpoint_the_policy_does_not_name_is_an_error() -> None:
    outcome = evaluate(probe({**PROM, "endpoint": "other"}), env(), "before")
    assert not outcome.ok and "not in the admin policy" in (outcome.error or "")


def test_a_stopping_job_ends_a_probe_wait() -> None:
    stop = threading.Event()
    on = env()
    on.stop = stop
    stop.set()
    with pytest.raises(ProbeStopped):
        evaluate(probe({"url": "http://127.0.0.1:9/", "run": {"initial_delay": "1h"}}), on,
                 "before")


def test_a_slow_prometheus_is_cut_off_at_the_endpoints_max_seconds() -> None:
    with fake_prometheus() as server:
        server.delay = 3.0
        started = time.monotonic()
        outcome = evaluate(probe(PROM), prom_env(server, max_seconds="0.3s"), "before")
        took = time.monotonic() - started
    assert not outcome.ok and "timed out after 0.3s" in (outcome.error or "")
    assert took < 2.0


def test_an_unreadable_token_file_is_an_error(tmp_path: Any) -> None:
    with fake_prometheus() as server:
        outcome = evaluate(probe(PROM), prom_env(server, token_file=str(tmp_path / "no")),
                           "before")
    assert not outcome.ok and "cannot read the token file" in (outcome.error or "")
    assert server.requests == []  # nothing was sent without its token


def test_max_latency_fails_a_slow_answer() -> None:
    with fake_prometheus() as server:  # any slow HTTP server will do
        server.delay = 0.3
        slow = evaluate(probe({"url": server.url + "/", "max_latency": "100ms"}), env(),
                        "before")
    assert not slow.ok and "more than max_latency 0.1s" in (slow.error or "")
