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
