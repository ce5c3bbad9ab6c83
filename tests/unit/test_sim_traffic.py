"""The sim's NetworkPolicy evaluation and traffic profiles, without a server.

What a user notices through the API server's proxy depends on two pure decisions: does a
pod accept the API server's connection under the NetworkPolicies of its namespace, and
how long (and how well) does a backend answer. Both are checked here case by case.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pystol_sim.network_policy import APISERVER, Source, ingress_verdict
from pystol_sim.scenario import ScenarioError, parse_scenario
from pystol_sim.service_traffic import (
    TrafficProfile,
    profile_from_annotations,
    proxy_tail,
    split_scheme_name_port,
)

WEB = {"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "app", "ports": [{"name": "http",
                                                          "containerPort": 8080}]}]},
       "status": {"podIP": "10.244.0.5"}}
FRONT = Source("10.244.0.9", "shop", {"app": "front"}, {"kubernetes.io/metadata.name": "shop"})
DNS = Source("10.244.1.2", "kube-system", {"k8s-app": "dns"},
             {"kubernetes.io/metadata.name": "kube-system"})


def policy(spec: dict[str, Any], namespace: str = "shop", name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def allowed(source: Source, *policies: dict[str, Any], port: int | None = 8080) -> bool:
    return ingress_verdict(WEB, source, port, policies).allowed


def test_a_pod_no_policy_selects_accepts_everything() -> None:
    assert allowed(APISERVER)
    other = policy({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]})
    assert allowed(APISERVER, other)
    elsewhere = policy({"podSelector": {}, "policyTypes": ["Ingress"]}, namespace="payments")
    assert allowed(APISERVER, elsewhere)


def test_no_ingress_rule_denies_all_and_egress_only_denies_nothing() -> None:
    deny = policy({"podSelector": {}, "policyTypes": ["Ingress"]})
    assert not allowed(APISERVER, deny) and not allowed(FRONT, deny)
    egress = policy({"podSelector": {}, "policyTypes": ["Egress"]})
    assert allowed(APISERVER, egress)
    implicit = policy({"podSelector": {"matchLabels": {"app": "web"}}})  # no policyTypes
    assert not allowed(APISERVER, implicit)


def test_network_partition_policy_cuts_the_api_server_off_but_not_the_allowed_peers() -> None:
    # The shape pystol_worker/actions/network_partition.py creates (with an allowed peer).
    partition = policy({
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "front"}}}]}],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "front"}}}]}]})
    verdict = ingress_verdict(WEB, APISERVER, 8080, [partition])
    assert not verdict.allowed and verdict.isolating == ("p",)
    assert allowed(FRONT, partition)
    assert not allowed(DNS, partition)  # a pod of another namespace: podSelector is local


def test_empty_from_allows_every_source_and_ports_restrict_it() -> None:
    everyone = policy({"podSelector": {}, "ingress": [{}]})
    assert allowed(APISERVER, everyone)
    on_http = policy({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})
    assert allowed(APISERVER, on_http, port=8080)
    assert not allowed(APISERVER, on_http, port=9090)
    ranged = policy({"podSelector": {}, "ingress": [{"ports": [{"port": 8000,
                                                                 "endPort": 8100}]}]})
    assert allowed(APISERVER, ranged, port=8080) and not allowed(APISERVER, ranged, port=80)


def test_namespace_selectors_and_ip_blocks() -> None:
    from_system = policy({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]}]})
    assert allowed(DNS, from_system) and not allowed(FRONT, from_system)
    assert not allowed(APISERVER, from_system)  # the API server is in no namespace
    both = policy({"podSelector": {}, "ingress": [{"from": [{
        "namespaceSelector": {}, "podSelector": {"matchExpressions": [
            {"key": "k8s-app", "operator": "In", "values": ["dns"]}]}}]}]})
    assert allowed(DNS, both) and not allowed(FRONT, both)
    block = policy({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}]}]})
    assert allowed(APISERVER, block) and not allowed(FRONT, block)


def test_any_allowing_policy_wins_over_a_denying_one() -> None:
    deny = policy({"podSelector": {}, "policyTypes": ["Ingress"]}, name="deny")
    allow = policy({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]},
                   name="allow")
    assert allowed(APISERVER, deny, allow)


def test_profile_latency_grows_as_fewer_endpoints_remain_and_is_capped() -> None:
    rng = random.Random(1)
    profile = TrafficProfile(latency_ms=40)
    assert profile.latency_seconds(4, 4, rng) == 0.04
    assert profile.latency_seconds(4, 2, rng) == 0.08
    assert profile.latency_seconds(4, 1, rng) == 0.16
    assert TrafficProfile(latency_ms=40, slowdown="none").latency_seconds(4, 1, rng) == 0.04
    assert TrafficProfile(latency_ms=400, max_latency_ms=500).latency_seconds(4, 1, rng) == 0.5
    jittery = TrafficProfile(latency_ms=10, jitter_ms=5)
    assert all(0.01 <= jittery.latency_seconds(1, 1, rng) <= 0.015 for _ in range(50))


def test_profile_annotations_and_their_problems() -> None:
    profile, problems = profile_from_annotations({
        "sim.pystol.org/latency-ms": "25", "sim.pystol.org/error-rate": "0.5",
        "sim.pystol.org/slowdown": "none", "sim.pystol.org/dial-timeout-ms": "200"})
    assert profile == TrafficProfile(latency_ms=25, error_rate=0.5, slowdown="none",
                                     dial_timeout_ms=200)
    assert problems == []
    profile, problems = profile_from_annotations({
        "sim.pystol.org/latency-ms": "fast", "sim.pystol.org/error-rate": "2",
        "sim.pystol.org/max-latency-ms": "99999999"})
    assert profile == TrafficProfile()
    assert problems == [
        "sim.pystol.org/latency-ms: 'fast' must be a number; the default is used",
        "sim.pystol.org/error-rate: '2' must be within 0..1; the default is used",
        "sim.pystol.org/max-latency-ms: '99999999' must be within 0..30000 (milliseconds); "
        "the default is used"]


@pytest.mark.parametrize(("ident", "split"), [
    ("web", ("", "web", "")), ("web:80", ("", "web", "80")), ("web:http", ("", "web", "http")),
    ("https:web:443", ("https", "web", "443")), ("ftp:web:80", None), (":80", None),
    ("a:b:c:d", None)])
def test_ids_split_like_kube_apiserver(ident: str, split: tuple[str, str, str] | None
                                       ) -> None:
    assert split_scheme_name_port(ident) == split


def test_proxy_tail() -> None:
    path = "/api/v1/namespaces/shop/services/web:80/proxy/a/b/"
    assert proxy_tail(path, "services", "web:80") == "/a/b/"
    assert proxy_tail("/api/v1/namespaces/shop/pods/p/proxy", "pods", "p") == "/"


def test_scenario_traffic_becomes_annotations_and_is_validated() -> None:
    text = """
nodes: [{name: node-a}]
namespaces: [shop]
services:
  - {name: web, namespace: shop, selector: {app: web}, ports: [{port: 80}],
     traffic: {latency_ms: 20, jitter_ms: 5, error_rate: 0.1, slowdown: none}}
"""
    scenario = parse_scenario(text, "t.yaml")
    annotations = scenario.services[0].manifest()["metadata"]["annotations"]
    assert profile_from_annotations(annotations) == (
        TrafficProfile(latency_ms=20, jitter_ms=5, error_rate=0.1, slowdown="none"), [])
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text.replace("error_rate: 0.1", "error_rate: 3")
                           .replace("slowdown: none", "slowdown: sometimes"), "t.yaml")
    message = str(caught.value)
    assert "services[0].traffic.error_rate" in message
    assert "services[0].traffic.slowdown" in message


# ------------------------------------------------------------------ hostile objects and requests
# (security review F2: proxy cost, broken NetworkPolicies, cross-namespace targetRefs, bodies)

import asyncio  # noqa: E402

from aiohttp import web  # noqa: E402
from aiohttp.streams import StreamReader  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402

from pystol_sim import service_traffic  # noqa: E402
from pystol_sim.errors import ApiError  # noqa: E402
from pystol_sim.resources import Catalogue, ResourceType  # noqa: E402
from pystol_sim.service_traffic import ServiceTraffic  # noqa: E402
from pystol_sim.store import Store  # noqa: E402
from pystol_sim.validation import validate_object  # noqa: E402

CATALOGUE = Catalogue()


def rtype(group: str, plural: str) -> ResourceType:
    found = CATALOGUE.get(group, "v1", plural)
    assert found is not None
    return found


class CountingStore(Store):
    """A Store that counts the work a request makes it do."""

    def __init__(self) -> None:
        super().__init__()
        self.policy_lists = 0
        self.pod_finds = 0

    def list_objects(self, rtype: ResourceType, namespace: str | None = None,
                     *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        if rtype.plural == "networkpolicies":
            self.policy_lists += 1
        return super().list_objects(rtype, namespace, *args, **kwargs)

    def find(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        if rtype.plural == "pods":
            self.pod_finds += 1
        return super().find(rtype, namespace, name)


def ready_pod(name: str, namespace: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "x",
                                     "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def sim_with(addresses: list[dict[str, Any]], policies: int = 0,
             extra_pods: tuple[dict[str, Any], ...] = ()) -> tuple[CountingStore, ServiceTraffic]:
    store = CountingStore()
    store.create(rtype("", "pods"), ready_pod("p", "shop", "10.244.0.5"), "shop")
    for pod in extra_pods:
        store.create(rtype("", "pods"), pod, pod["metadata"]["namespace"])
    store.create(rtype("", "services"), {"metadata": {"name": "web"},
                                         "spec": {"ports": [{"port": 80}]}}, "shop")
    store.create(rtype("", "endpoints"), {"metadata": {"name": "web"}, "subsets": [
        {"addresses": addresses, "ports": [{"port": 8080}]}]}, "shop")
    for index in range(policies):  # trivial policies: none selects the pod
        store.create(rtype("networking.k8s.io", "networkpolicies"), {
            "metadata": {"name": f"np-{index}"},
            "spec": {"podSelector": {"matchLabels": {"app": f"other-{index}"}},
                     "policyTypes": ["Ingress"]}}, "shop")
    return store, ServiceTraffic(store, CATALOGUE, seed=1)


def proxy(traffic: ServiceTraffic, ident: str, plural: str = "services", method: str = "GET",
          payload: StreamReader | None = None, headers: dict[str, str] | None = None
          ) -> tuple[int, Any]:
    """One proxied request through ServiceTraffic.serve: (status, body or ApiError message)."""
    async def run() -> tuple[int, Any]:
        path = f"/api/v1/namespaces/shop/{plural}/{ident}/proxy/hello"
        kwargs: dict[str, Any] = {} if payload is None else {"payload": payload}
        request = make_mocked_request(method, path, headers=headers, **kwargs)
        try:
            response = await traffic.serve(request, rtype("", plural), "shop", ident)
        except ApiError as error:
            return error.code, error.message
        assert isinstance(response, web.Response) and response.body is not None
        return response.status, orjson_loads(response.body)
    return asyncio.run(run())


def orjson_loads(body: Any) -> Any:
    import orjson
    return orjson.loads(bytes(body))


def test_a_huge_endpoints_list_costs_one_policy_list_per_request() -> None:
    # 2,000 addresses all naming pod p, 20 NetworkPolicies: the proxy lists (and parses)
    # the namespace's policies once and looks the pod up once, not once per address.
    address = {"ip": "10.244.0.5", "targetRef": {"kind": "Pod", "name": "p"}}
    store, traffic = sim_with([address] * 2000, policies=20)
    status, body = proxy(traffic, "web")
    assert status == 200 and body["pod"] == "p"
    assert store.policy_lists == 1 and store.pod_finds <= 1
    store.policy_lists = store.pod_finds = 0
    report = traffic.report("shop")
    assert report["services"][0]["reachable_endpoints"] == 1
    assert store.policy_lists <= 1 and store.pod_finds <= 1


def test_the_proxy_considers_at_most_the_address_cap() -> None:
    addresses = [{"ip": f"10.9.{i // 250}.{i % 250}"} for i in range(3000)]  # no targetRef
    store, traffic = sim_with(addresses, policies=3)
    for _ in range(3):
        status, body = proxy(traffic, "web")
        assert status == 200
        index = addresses.index({"ip": body["pod"]})
        assert index < service_traffic.MAX_PROXY_ADDRESSES
    assert store.policy_lists <= 3


def test_a_target_ref_into_another_namespace_is_not_followed() -> None:
    # A user of namespace shop writes Endpoints naming pod x of namespace bank: the
    # proxy must not tell whether bank/x exists or is Ready, nor name namespace bank.
    secret = ready_pod("x", "bank", "10.244.7.7")
    address = {"ip": "10.244.7.7", "targetRef": {"kind": "Pod", "name": "x",
                                                 "namespace": "bank"}}
    _, traffic = sim_with([address], extra_pods=(secret,))
    status, body = proxy(traffic, "web")
    assert status == 503 and "bank" not in str(body)
    assert body == 'no endpoints available for service "web"'


def test_an_address_whose_ip_is_not_the_pods_is_skipped() -> None:
    address = {"ip": "10.244.99.99", "targetRef": {"kind": "Pod", "name": "p"}}
    _, traffic = sim_with([address])
    status, body = proxy(traffic, "web")
    assert status == 503 and body == 'no endpoints available for service "web"'


@pytest.mark.parametrize("ident,plural", [("web:²", "services"), ("p:²", "pods"),
                                          ("web:٣", "services"), ("p:٣", "pods")])
def test_a_non_ascii_digit_port_is_a_kubernetes_answer_not_a_crash(ident: str,
                                                                   plural: str) -> None:
    address = {"ip": "10.244.0.5", "targetRef": {"kind": "Pod", "name": "p"}}
    _, traffic = sim_with([address])
    status, _ = proxy(traffic, ident, plural)
    assert 400 <= status < 600 and status != 500


def test_a_chunked_body_over_the_cap_is_refused() -> None:
    async def run() -> tuple[int, Any]:
        address = {"ip": "10.244.0.5", "targetRef": {"kind": "Pod", "name": "p"}}
        _, traffic = sim_with([address])
        protocol = type("P", (), {"_reading_paused": False, "connected": True,
                                  "pause_reading": lambda self, **_: None,
                                  "resume_reading": lambda self, **_: None})()
        reader = StreamReader(protocol, 2 ** 16,  # type: ignore[arg-type]
                              loop=asyncio.get_running_loop())
        reader.feed_data(b"x" * (700 * 1024))  # no Content-Length (chunked): 3 x 700 KiB,

        async def later() -> None:  # the rest arrives after the first read returned
            for _ in range(2):
                await asyncio.sleep(0.01)
                reader.feed_data(b"x" * (700 * 1024))
            reader.feed_eof()
        feeding = asyncio.create_task(later())
        request = make_mocked_request("POST", "/api/v1/namespaces/shop/services/web/proxy/u",
                                      headers={"Transfer-Encoding": "chunked"},
                                      payload=reader)
        try:
            response = await traffic.serve(request, rtype("", "services"), "shop", "web")
        except ApiError as error:
            return error.code, error.message
        finally:
            await feeding
        return response.status, None
    status, message = asyncio.run(run())
    assert status == 413 and "too large" in message


def test_proxy_counters_do_not_outlive_their_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_traffic, "MAX_TRACKED", 5)
    store, traffic = sim_with([])
    pods = rtype("", "pods")
    for index in range(20):  # pods come, answer once, and are deleted
        store.create(pods, ready_pod(f"q{index}", "shop", f"10.244.1.{index}"), "shop")
        assert proxy(traffic, f"q{index}", "pods")[0] == 200
        store.delete(pods, "shop", f"q{index}")
    assert len(traffic.pods) <= 5
    assert proxy(traffic, "p", "pods")[0] == 200
    assert ("shop", "p") in traffic.pods


# -- NetworkPolicies that break the rules match nothing and never raise ---------------------


@pytest.mark.parametrize("ports", [
    [{"port": "²"}], [{"port": 8080, "endPort": "x"}], [{"port": {}}], [{"port": "٣"}],
    [{"port": [8080]}], [{"port": 8080, "endPort": {}}], "8080", 5, [{"port": True}],
])
def test_a_broken_port_rule_matches_nothing(ports: Any) -> None:
    isolate = policy({"podSelector": {}, "policyTypes": ["Ingress"],
                      "ingress": [{"ports": ports}]})
    assert not allowed(APISERVER, isolate)


@pytest.mark.parametrize("block", [
    {"cidr": "0.0.0.0/0", "except": 5}, {"cidr": 5}, {"cidr": "0.0.0.0/0", "except": [{}]},
    {"cidr": "0.0.0.0/0", "except": "10.0.0.0/8"}, "x", {"cidr": ["0.0.0.0/0"]},
])
def test_a_broken_ip_block_matches_nothing(block: Any) -> None:
    isolate = policy({"podSelector": {}, "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"ipBlock": block}]}]})
    assert not allowed(APISERVER, isolate)


@pytest.mark.parametrize("spec", [
    {"podSelector": {}, "ingress": 5}, {"podSelector": {}, "ingress": [{"from": 5}]},
    {"podSelector": {}, "ingress": "x"}, {"podSelector": {}, "policyTypes": "Ingress"},
])
def test_broken_rule_lists_never_raise(spec: dict[str, Any]) -> None:
    allowed(APISERVER, policy(spec))  # a verdict, whatever it is; no exception


NETPOL = rtype("networking.k8s.io", "networkpolicies")


@pytest.mark.parametrize("rules,field", [
    ({"ingress": [{"ports": [{"port": "²"}]}]}, "spec.ingress[0].ports[0].port"),
    ({"ingress": [{"ports": [{"port": {}}]}]}, "spec.ingress[0].ports[0].port"),
    ({"ingress": [{"ports": [{"port": 70000}]}]}, "spec.ingress[0].ports[0].port"),
    ({"ingress": [{"ports": [{"port": 80, "endPort": "x"}]}]},
     "spec.ingress[0].ports[0].endPort"),
    ({"ingress": [{"ports": [{"port": 80, "endPort": 70}]}]},
     "spec.ingress[0].ports[0].endPort"),
    ({"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]},
     "spec.ingress[0].ports[0].protocol"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}]}]},
     "spec.ingress[0].from[0].ipBlock.cidr"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": 5}}]}]},
     "spec.ingress[0].from[0].ipBlock.except"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["x"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ({"egress": [{"to": [{"ipBlock": {"cidr": 5}}]}]}, "spec.egress[0].to[0].ipBlock.cidr"),
    ({"egress": [{"ports": [{"port": "²"}]}]}, "spec.egress[0].ports[0].port"),
    ({"ingress": 5}, "spec.ingress"),
])
def test_a_network_policy_with_broken_fields_is_refused_naming_the_field(
        rules: dict[str, Any], field: str) -> None:
    obj = {"metadata": {"name": "bad", "namespace": "shop"},
           "spec": {"podSelector": {}, **rules}}
    with pytest.raises(ApiError) as caught:
        validate_object(NETPOL, obj)
    assert caught.value.code == 422
    details = caught.value.details or {}
    assert field in [cause["field"] for cause in details["causes"]]


def test_a_sound_network_policy_is_accepted() -> None:
    validate_object(NETPOL, {"metadata": {"name": "ok", "namespace": "shop"}, "spec": {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                              {"podSelector": {}}],
                     "ports": [{"port": 80, "endPort": 90, "protocol": "TCP"},
                               {"port": "http"}, {"protocol": "UDP"}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": "8080"}]}]}})


def test_a_pod_with_broken_container_ports_is_judged_without_raising() -> None:
    pod = {"metadata": {"name": "w", "namespace": "shop", "labels": {}},
           "spec": {"containers": [{"name": "a", "ports": 5}, "x",
                                   {"name": "b", "ports": [{"name": "http",
                                                            "containerPort": "²"}]}]}}
    named = policy({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})
    assert not ingress_verdict(pod, APISERVER, 8080, [named]).allowed
