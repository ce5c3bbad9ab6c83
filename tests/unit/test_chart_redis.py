"""The chart guards Redis (issue 13): a password by default that no manifest shows, a
memory limit at which Redis refuses writes instead of evicting, TLS and Sentinel for an
external Redis, and NetworkPolicies on by default that let only Pystol's pods reach Redis
and Pystol's pods reach only what they need.

Rendered with the real `helm template` (no cluster needed). The environment a pod would
get is expanded the way the kubelet does ($(VAR) from variables defined before it) and
read with Pystol's own URL parser, so a URL that would not work in a pod fails here.
Keeping the generated password across an upgrade needs `lookup`, i.e. a cluster: that is
tests/e2e/test_chart.py (helm against pystol-sim).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from pystol_worker.kube.permissions import COMPONENTS, required
from pystol_worker.store.redis_connection import RedisEndpoint, parse_redis_url
from tests.support.chart_render import RELEASE, render

PYSTOL = ("api", "worker", "beat", "watcher")
UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 2**20, "g": 10**9,
         "gb": 2**30, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "M": 10**6, "G": 10**9}


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs
            if d["kind"] in ("Deployment", "StatefulSet")}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][0]


def secret_value(docs: list[dict[str, Any]], ref: dict[str, str]) -> str:
    secret = by_kind(docs, "Secret")[ref["name"]]
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def pod_env(docs: list[dict[str, Any]], doc: dict[str, Any],
            secrets: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment as the kubelet builds it: the ConfigMap, then each
    variable in order, $(NAME) expanded from those defined before it. Secrets not rendered
    by the chart (an existingSecret) come from `secrets`."""
    configmaps = by_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    spec = container(doc)
    for source in spec.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for variable in spec.get("env", []):
        if "valueFrom" in variable:
            ref = variable["valueFrom"]["secretKeyRef"]
            known = secrets or {}
            env[variable["name"]] = known.get(ref["name"]) or secret_value(docs, ref)
        else:
            env[variable["name"]] = re.sub(r"\$\((\w+)\)",
                                           lambda m: env.get(m[1], m[0]), variable["value"])
    return env


def endpoint_of(docs: list[dict[str, Any]], component: str,
                secrets: dict[str, str] | None = None) -> RedisEndpoint:
    env = pod_env(docs, workloads(docs)[component], secrets)
    return parse_redis_url(env["PYSTOL_REDIS_URL"], env["PYSTOL_REDIS_SENTINEL_MASTER"])


def size(text: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)([A-Za-z]*)", text).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit]


# -- the password ---------------------------------------------------------------------------


def test_a_password_is_generated_and_every_process_uses_it() -> None:
    docs = render()
    password = secret_value(docs, {"name": f"{RELEASE}-pystol-redis", "key": "redis-password"})
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)  # URL-safe, as the URL needs
    for component in PYSTOL:
        endpoint = endpoint_of(docs, component)
        assert endpoint.password == password, component
        assert (endpoint.scheme, endpoint.host, endpoint.port) == (
            "redis", f"{RELEASE}-pystol-redis", 6379)

    redis = container(workloads(docs)["redis"])
    env = pod_env(docs, workloads(docs)["redis"])
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert env["REDIS_PASSWORD"] == password
    assert env["REDISCLI_AUTH"] == password  # the probes' redis-cli authenticates
    for probe in ("livenessProbe", "readinessProbe"):
        assert "redis-cli ping" in " ".join(redis[probe]["exec"]["command"])


def test_each_install_gets_its_own_password() -> None:
    first, second = render(), render()
    ref = {"name": f"{RELEASE}-pystol-redis", "key": "redis-password"}
    assert secret_value(first, ref) != secret_value(second, ref)


def test_no_manifest_but_the_secret_holds_the_password() -> None:
    docs = render()
    password = secret_value(docs, {"name": f"{RELEASE}-pystol-redis", "key": "redis-password"})
    encoded = base64.b64encode(password.encode()).decode()
    for doc in docs:
        if doc["kind"] != "Secret":
            assert password not in str(doc) and encoded not in str(doc), doc["metadata"]["name"]


def test_an_existing_secret_replaces_the_generated_one() -> None:
    docs = render("redis.existingSecret=my-redis", "redis.existingSecretPasswordKey=pw")
    assert f"{RELEASE}-pystol-redis" not in by_kind(docs, "Secret")
    for component in (*PYSTOL, "redis"):
        refs = [v["valueFrom"]["secretKeyRef"] for v in container(workloads(docs)[component])
                ["env"] if "valueFrom" in v and "REDIS" in v["name"]]
        assert refs and all(ref == {"name": "my-redis", "key": "pw"} for ref in refs)
    assert endpoint_of(docs, "worker", {"my-redis": "from-my-secret"}).password == \
        "from-my-secret"


# -- memory ---------------------------------------------------------------------------------


def test_redis_refuses_writes_at_maxmemory_below_its_memory_limit() -> None:
    for sets, maxmemory in (((), "200mb"), (("redis.maxmemory=1gb",
                                             "redis.resources.limits.memory=2Gi"), "1gb")):
        redis = container(workloads(render(*sets))["redis"])
        args = redis["args"]
        assert args[args.index("--maxmemory") + 1] == maxmemory
        assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
        # the kernel's limit is well above Redis's own, so Redis says "full", not OOM-killed
        assert size(redis["resources"]["limits"]["memory"]) >= 1.5 * size(maxmemory)


# -- an external Redis ----------------------------------------------------------------------


def test_external_redis_over_tls_with_a_private_ca() -> None:
    docs = render("redis.enabled=false", "externalRedis.host=redis.example.org",
                  "externalRedis.port=6380", "externalRedis.tls=true",
                  "externalRedis.tlsCaSecret=redis-ca", "externalRedis.existingSecret=auth")
    assert "StatefulSet" not in {d["kind"] for d in docs}
    endpoint = endpoint_of(docs, "api", {"auth": "pw"})
    assert (endpoint.scheme, endpoint.host, endpoint.port, endpoint.password) == (
        "rediss", "redis.example.org", 6380, "pw")
    assert endpoint.tls["ssl_check_hostname"] is True
    pod = workloads(docs)["worker"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "redis-ca")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "redis-ca")
    assert volume["secret"]["secretName"] == "redis-ca"
    assert endpoint.tls["ssl_ca_certs"] == f"{mount['mountPath']}/ca.crt"


def test_external_redis_through_sentinel() -> None:
    docs = render("redis.enabled=false", "externalRedis.sentinel.master=mymaster",
                  "externalRedis.sentinel.hosts={sentinel-0.redis:26379,sentinel-1.redis:26379}",
                  "externalRedis.existingSecret=auth", "externalRedis.db=2")
    for component in PYSTOL:
        endpoint = endpoint_of(docs, component, {"auth": "pw"})
        assert endpoint.sentinels == (("sentinel-0.redis", 26379), ("sentinel-1.redis", 26379))
        assert (endpoint.master, endpoint.password, endpoint.db) == ("mymaster", "pw", 2)


# -- NetworkPolicies ------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector selects a pod with `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        if not {"In": present and value in expression.get("values", []),
                "NotIn": value not in expression.get("values", []),
                "Exists": present, "DoesNotExist": not present}[expression["operator"]]:
            return False
    return True


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {component: doc["spec"]["template"]["metadata"]["labels"]
            for component, doc in workloads(docs).items()}


def policy_for(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    """The one NetworkPolicy that selects the component's pods."""
    labels = pod_labels(docs)[component]
    [policy] = [p for p in by_kind(docs, "NetworkPolicy").values()
                if selects(p["spec"]["podSelector"], labels)]
    return policy


def egress_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    return {(port.get("protocol", "TCP"), port["port"])
            for rule in policy["spec"]["egress"] for port in rule.get("ports", [])}


def test_network_policies_are_on_by_default_and_select_every_pod() -> None:
    docs = render()
    policies = by_kind(docs, "NetworkPolicy")
    assert len(policies) == 5
    for component in (*PYSTOL, "redis"):
        policy = policy_for(docs, component)
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, component
    assert "NetworkPolicy" not in {d["kind"] for d in render("networkPolicy.enabled=false")}


def test_only_pystols_pods_reach_redis_and_redis_reaches_nothing() -> None:
    docs = render()
    labels = pod_labels(docs)
    policy = policy_for(docs, "redis")["spec"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]

    def admitted(pod: dict[str, str]) -> bool:
        return any("podSelector" in peer and "namespaceSelector" not in peer
                   and selects(peer["podSelector"], pod) for peer in rule["from"])

    for component in PYSTOL:
        assert admitted(labels[component]), component
    another_release = dict(labels["worker"], **{"app.kubernetes.io/instance": "other"})
    for stranger in ({"app": "shop"}, labels["redis"], another_release,
                     {k: v for k, v in labels["api"].items()
                      if k != "app.kubernetes.io/component"}):
        assert not admitted(stranger), stranger
    assert policy["egress"] == []


def test_pystols_pods_reach_only_the_api_server_redis_and_dns() -> None:
    docs = render()
    redis_pod = pod_labels(docs)["redis"]
    for component in COMPONENTS:
        policy = policy_for(docs, component)
        expected = {("UDP", 53), ("TCP", 53), ("TCP", 6379)}
        if required(component):  # the components that call the Kubernetes API
            expected |= {("TCP", 443), ("TCP", 6443)}
        assert egress_ports(policy) == expected, component
        redis_rules = [r for r in policy["spec"]["egress"]
                       if {"port": 6379, "protocol": "TCP"} in r["ports"]]
        assert [selects(peer["podSelector"], redis_pod)
                for rule in redis_rules for peer in rule["to"]] == [True]
        ingress = policy["spec"]["ingress"]
        assert ingress == ([{"ports": [{"port": 8080, "protocol": "TCP"}]}]
                           if component == "api" else []), component


def test_the_api_server_and_probe_targets_are_the_admins_to_name() -> None:
    docs = render("networkPolicy.kubeApiServer.cidrs={10.0.0.10/32}",
                  "networkPolicy.kubeApiServer.ports={6443}",
                  "networkPolicy.probeEgress[0].to[0].ipBlock.cidr=10.96.0.0/12",
                  "networkPolicy.probeEgress[0].ports[0].port=8080")
    for component in ("api", "worker", "watcher"):
        rules = policy_for(docs, component)["spec"]["egress"]
        assert {"ports": [{"port": 6443, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}]} in rules
    probe = {"to": [{"ipBlock": {"cidr": "10.96.0.0/12"}}], "ports": [{"port": 8080}]}
    assert probe in policy_for(docs, "worker")["spec"]["egress"]
    for component in ("api", "beat", "watcher"):
        assert probe not in policy_for(docs, component)["spec"]["egress"]


def test_egress_to_an_external_redis_and_its_sentinels() -> None:
    docs = render("redis.enabled=false", "externalRedis.sentinel.master=mymaster",
                  "externalRedis.sentinel.hosts={s0:26379,s1:26380}",
                  "networkPolicy.externalRedisTo[0].ipBlock.cidr=10.1.2.0/24")
    assert "redis" not in {p["metadata"]["labels"]["app.kubernetes.io/component"]
                           for p in by_kind(docs, "NetworkPolicy").values()}
    for component in PYSTOL:
        rules = policy_for(docs, component)["spec"]["egress"]
        assert {"ports": [{"port": 6379, "protocol": "TCP"}, {"port": 26379, "protocol": "TCP"},
                          {"port": 26380, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]} in rules, component


def test_the_sentinel_master_is_empty_without_sentinel() -> None:
    docs = render()
    for component in PYSTOL:
        assert pod_env(docs, workloads(docs)[component])["PYSTOL_REDIS_SENTINEL_MASTER"] == ""
