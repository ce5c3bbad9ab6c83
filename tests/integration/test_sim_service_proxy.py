"""Services that answer: the sim's `services/NAME/proxy` and `pods/NAME/proxy`, over HTTPS.

What a user sees through the API server's proxy when chaos hits an application: a
Service answers 200 while it has ready endpoints and 503 "no endpoints available" when
none is left, slower as fewer remain; a pod cut off by a NetworkPolicy stops answering.
Every check compares what the official client saw with the sim's ground truth
(`/_sim/traffic`). One sim for the module; each test uses its own workload or cleans up.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.support.sim_process import SimProcess

VIEWER_TOKEN = "viewer-token-0123456789"
# The scenario's pods start Running and Ready. After a kill, `web`'s replacements take 2 s
# (real) to be Ready, long enough to see the 503s; `gone`'s never start; `slow` has a
# latency profile; `lonely` is a standalone pod.
SCENARIO = f"""
nodes: [{{name: node-a}}, {{name: node-b}}]
namespaces: [shop]
timings: {{start_seconds: 0, ready_seconds: 0}}
deployments:
  - name: web
    namespace: shop
    replicas: 3
    labels: {{app: web}}
    timings: {{start_seconds: 10, ready_seconds: 10}}
    containers: [{{name: app, image: shop/web:1, ports: [8080]}}]
  - {{name: slow, namespace: shop, replicas: 4, labels: {{app: slow}}}}
  - name: gone
    namespace: shop
    replicas: 2
    labels: {{app: gone}}
    timings: {{start_seconds: 100000}}
pods:
  - name: lonely
    namespace: shop
    containers: [{{name: app, image: shop/lonely:1, ports: [9000]}}]
services:
  - name: web
    namespace: shop
    selector: {{app: web}}
    ports: [{{name: http, port: 80, target_port: 8080}}]
  - name: slow
    namespace: shop
    selector: {{app: slow}}
    ports: [{{port: 80}}]
    traffic: {{latency_ms: 40, slowdown: proportional}}
  - {{name: gone, namespace: shop, selector: {{app: gone}}, ports: [{{port: 80}}]}}
users:
  - {{name: viewer, token: {VIEWER_TOKEN}, groups: [viewers]}}
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess.start(tmp_path_factory.mktemp("sim-proxy"), scenario_text=SCENARIO) as process:
        yield process


@pytest.fixture(scope="module")
def core(sim: SimProcess) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config(config_file=str(sim.kubeconfig))
    yield client.CoreV1Api(api_client)
    api_client.close()


def as_token(sim: SimProcess, token: str) -> client.CoreV1Api:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(sim.kubeconfig), client_configuration=configuration)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    configuration.refresh_api_key_hook = None
    return client.CoreV1Api(client.ApiClient(configuration))


def via_service(core: client.CoreV1Api, name: str, path: str = "hello") -> tuple[int, Any]:
    """GET through services/NAME/proxy with the official client: (status, decoded body)."""
    return proxied(core.connect_get_namespaced_service_proxy_with_path, name, path)


def via_pod(core: client.CoreV1Api, name: str, path: str = "hello") -> tuple[int, Any]:
    return proxied(core.connect_get_namespaced_pod_proxy_with_path, name, path)


def proxied(connect: Any, name: str, path: str) -> tuple[int, Any]:
    try:
        response = connect(name, "shop", path, _preload_content=False, _request_timeout=20)
        return response.status, json.loads(response.data)
    except ApiException as error:
        return error.status, json.loads(error.body)


def raw_request(sim: SimProcess, method: str, path: str, data: bytes | None = None
                ) -> tuple[int, Any]:
    """Exactly these bytes over HTTPS with the admin token: (status, decoded JSON body)."""
    request = urllib.request.Request(sim.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {sim.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20, context=sim.ssl_context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def traffic(sim: SimProcess, service: str) -> dict[str, Any]:
    status, body = sim.request("GET", "/_sim/traffic?namespace=shop")
    assert status == 200, body
    return next(entry for entry in body["services"] if entry["name"] == service)


def pod_is_ready(pod: client.V1Pod) -> bool:
    return not pod.metadata.deletion_timestamp and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())


def ready_pods(core: client.CoreV1Api, selector: str) -> list[str]:
    return sorted(pod.metadata.name for pod in core.list_namespaced_pod(
        "shop", label_selector=selector).items if pod_is_ready(pod))


def test_killing_every_pod_turns_the_service_from_200_to_503_and_back(
        sim: SimProcess, core: client.CoreV1Api) -> None:
    sim.wait_for(lambda: len(ready_pods(core, "app=web")) == 3)
    sim.wait_for(lambda: traffic(sim, "web")["ready_endpoints"] == 3)
    before = set(ready_pods(core, "app=web"))
    seen: Counter[int] = Counter()
    status, body = via_service(core, "web:http")
    seen[status] += 1
    assert status == 200 and body["pod"] in before and body["service"] == "web"
    assert body["address"].endswith(":8080")  # the Endpoints' targetPort

    core.delete_collection_namespaced_pod("shop", label_selector="app=web",
                                          grace_period_seconds=0)
    outage: list[dict[str, Any]] = []

    def unavailable() -> bool:
        code, answer = via_service(core, "web:http")
        seen[code] += 1
        if code == 503:
            outage.append(answer)
        return code == 503

    sim.wait_for(unavailable)
    assert outage[0]["kind"] == "Status" and outage[0]["reason"] == "ServiceUnavailable"
    assert outage[0]["message"] == 'no endpoints available for service "web"'

    recovered: list[dict[str, Any]] = []

    def answering() -> bool:
        code, answer = via_service(core, "web:http")
        seen[code] += 1
        if code == 200:
            recovered.append(answer)
        return code == 200

    sim.wait_for(answering, timeout=30)
    assert recovered[0]["pod"] not in before  # a replacement answered
    truth = traffic(sim, "web")
    assert truth["by_status"] == {str(code): n for code, n in sorted(seen.items())}
    assert truth["unavailable"] == seen[503] and truth["served"] == seen[200]
    assert truth["requests"] == sum(seen.values())


def test_the_service_gets_slower_as_fewer_endpoints_remain(
        sim: SimProcess, core: client.CoreV1Api) -> None:
    sim.wait_for(lambda: len(ready_pods(core, "app=slow")) == 4)
    sim.wait_for(lambda: traffic(sim, "slow")["ready_endpoints"] == 4)
    status, body = via_service(core, "slow")
    assert status == 200 and body["latency_ms"] == 40.0
    # Cut two of the four off with a NetworkPolicy: the Service skips them, and the two
    # left carry the load: twice the latency.
    cut = ready_pods(core, "app=slow")[:2]
    for name in cut:
        core.patch_namespaced_pod(name, "shop", {"metadata": {"labels": {"cut": "yes"}}})
    policy = f"cut-{uuid.uuid4().hex[:6]}"
    client.NetworkingV1Api(core.api_client).create_namespaced_network_policy("shop", {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": policy},
        "spec": {"podSelector": {"matchLabels": {"cut": "yes"}}, "policyTypes": ["Ingress"]}})
    try:
        answers = [via_service(core, "slow") for _ in range(6)]
        assert {status for status, _ in answers} == {200}
        assert {body["pod"] for _, body in answers} == set(ready_pods(core, "app=slow")) - set(cut)
        assert {body["latency_ms"] for _, body in answers} == {80.0}
        truth = traffic(sim, "slow")
        assert truth["ready_endpoints"] == 4 and truth["reachable_endpoints"] == 2, (
            truth, core.read_namespaced_endpoints("slow", "shop"))
        assert truth["isolated_pods"] == cut and truth["desired_endpoints"] == 4
        assert truth["profile"]["latency_ms"] == 40.0
    finally:
        client.NetworkingV1Api(core.api_client).delete_namespaced_network_policy(policy, "shop")
    status, body = via_service(core, "slow")
    assert status == 200 and body["latency_ms"] == 40.0


def test_a_service_whose_pods_never_come_back_stays_unavailable(
        sim: SimProcess, core: client.CoreV1Api) -> None:
    sim.wait_for(lambda: len(ready_pods(core, "app=gone")) == 2)
    assert via_service(core, "gone")[0] == 200
    core.delete_collection_namespaced_pod("shop", label_selector="app=gone",
                                          grace_period_seconds=0)
    sim.wait_for(lambda: via_service(core, "gone")[0] == 503)
    status, body = via_service(core, "gone")
    assert status == 503 and body["message"] == 'no endpoints available for service "gone"'
    truth = traffic(sim, "gone")
    assert truth["ready_endpoints"] == 0 and truth["reachable_endpoints"] == 0
    assert truth["desired_endpoints"] == 2 and truth["served"] == 1


def test_pod_proxy_answers_for_a_ready_pod_only(sim: SimProcess,
                                                core: client.CoreV1Api) -> None:
    sim.wait_for(lambda: pod_is_ready(core.read_namespaced_pod("lonely", "shop")))
    status, body = via_pod(core, "lonely", "anything")
    assert status == 200 and body["pod"] == "lonely" and body["address"].endswith(":9000")
    assert body["path"] == "/anything"
    status, body = via_pod(core, "lonely:9000", "status/418")
    assert status == 418 and body["status"] == 418
    core.create_namespaced_pod("shop", {  # never starts: Pending, no IP
        "metadata": {"name": "stuck", "annotations": {"sim.pystol.org/start-seconds": "1e6"}},
        "spec": {"containers": [{"name": "app", "image": "shop/stuck:1"}]}})
    status, body = via_pod(core, "stuck")
    assert (status, body["message"]) == (400, "address not allowed")
    name = f"iso-{uuid.uuid4().hex[:6]}"
    networking = client.NetworkingV1Api(core.api_client)
    networking.create_namespaced_network_policy("shop", {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator":
                                                       "DoesNotExist"}]},
                 "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {}}]}]}})  # pods only: not the API
    try:
        status, body = via_pod(core, "lonely")
        assert status == 503 and body["reason"] == "ServiceUnavailable"
        assert body["message"].startswith("error trying to reach service: dial tcp ")
        assert body["message"].endswith(":9000: i/o timeout")
    finally:
        networking.delete_namespaced_network_policy(name, "shop")
    status, _ = via_pod(core, "lonely")
    assert status == 200
    status, body = sim.request("GET", "/_sim/traffic?namespace=shop")
    lonely = next(pod for pod in body["pods"] if pod["name"] == "lonely")
    assert lonely["unreachable"] == 1 and lonely["by_status"]["200"] >= 2


def test_rbac_checks_the_proxy_subresource_with_the_request_verb(
        sim: SimProcess, core: client.CoreV1Api) -> None:
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    binding = f"viewers-{uuid.uuid4().hex[:6]}"
    rbac.create_namespaced_role_binding("shop", {
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "view"},
        "subjects": [{"kind": "Group", "name": "viewers"}]})
    viewer = as_token(sim, VIEWER_TOKEN)
    status, body = via_service(viewer, "web:http")
    assert status == 403
    assert body["message"] == (
        'services "web:http" is forbidden: User "viewer" cannot get resource '
        '"services/proxy" in API group "" in the namespace "shop"')
    rbac.create_namespaced_role("shop", {
        "metadata": {"name": binding},
        "rules": [{"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get"]}]})
    rbac.create_namespaced_role_binding("shop", {
        "metadata": {"name": binding + "-proxy"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": binding},
        "subjects": [{"kind": "Group", "name": "viewers"}]})
    sim.wait_for(lambda: via_service(viewer, "web:http")[0] == 200)
    with pytest.raises(ApiException) as caught:  # POST is `create`, not granted
        viewer.connect_post_namespaced_service_proxy_with_path("web:http", "shop", "x")
    assert caught.value.status == 403
    assert 'cannot create resource "services/proxy"' in json.loads(caught.value.body)["message"]
    status, _ = via_pod(viewer, "lonely")
    assert status == 403  # services/proxy is not pods/proxy


def test_bad_proxy_requests_get_kubernetes_status_answers(sim: SimProcess) -> None:
    base = "/api/v1/namespaces/shop"
    status, body = raw_request(sim, "GET", f"{base}/services/a:web:80:x/proxy/")
    assert (status, body["message"]) == (400, 'invalid service request "a:web:80:x"')
    status, body = raw_request(sim, "GET", f"{base}/services/ftp:web:80/proxy/")
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body = raw_request(sim, "GET", f"{base}/services/nope/proxy/")
    assert (status, body["message"]) == (404, 'services "nope" not found')
    # An unknown port number is what kube-apiserver answers 503 for, in these words.
    status, body = raw_request(sim, "GET", f"{base}/services/web:81/proxy/")
    assert (status, body["message"]) == (503, 'no service port 81 found for service "web"')
    status, body = raw_request(sim, "POST", f"{base}/services/web:http/proxy/upload",
                               data=b"x" * (1024 * 1024 + 1))
    assert (status, body["reason"]) == (413, "RequestEntityTooLarge")
    status, body = raw_request(sim, "GET", f"{base}/services/web:http/proxy/" + "p" * 5000)
    assert status == 400 and body["message"].startswith("proxy path: 5001 characters")
    status, body = raw_request(sim, "POST", f"{base}/services/web:http/proxy/orders",
                               data=b'{"id": 1}')
    assert status == 200 and body["method"] == "POST" and body["request_body_bytes"] == 9
    status, body = raw_request(sim, "GET", "/api/v1/namespaces/shop/configmaps/x/proxy/")
    assert status == 404


def test_discovery_lists_the_proxy_subresources(core: client.CoreV1Api) -> None:
    by_name = {r.name: r for r in core.get_api_resources().resources}
    assert by_name["services/proxy"].kind == "ServiceProxyOptions"
    assert by_name["pods/proxy"].kind == "PodProxyOptions"
    assert sorted(by_name["services/proxy"].verbs) == ["create", "delete", "get", "patch",
                                                       "update"]


# -- hostile objects and requests (security review F2) --------------------------------------


def test_a_network_policy_with_broken_ports_or_blocks_is_refused_naming_the_field(
        sim: SimProcess) -> None:
    base = "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies"
    for rule, field in (
            ({"ports": [{"port": "²"}]}, "spec.ingress[0].ports[0].port"),
            ({"ports": [{"port": 80, "endPort": "x"}]}, "spec.ingress[0].ports[0].endPort"),
            ({"ports": [{"port": {}}]}, "spec.ingress[0].ports[0].port"),
            ({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": 5}}]},
             "spec.ingress[0].from[0].ipBlock.except")):
        manifest = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"bad-{uuid.uuid4().hex[:6]}"},
                    "spec": {"podSelector": {}, "ingress": [rule]}}
        status, body = raw_request(sim, "POST", base, json.dumps(manifest).encode())
        assert status == 422, body
        assert field in [cause["field"] for cause in body["details"]["causes"]]
    status, body = raw_request(sim, "GET", base)
    assert status == 200 and not [p for p in body["items"]
                                  if p["metadata"]["name"].startswith("bad-")]


def test_a_non_ascii_digit_port_in_a_proxy_url_is_not_a_server_error(sim: SimProcess) -> None:
    base = "/api/v1/namespaces/shop"
    for path in ("services/web:%C2%B2/proxy/", "pods/lonely:%C2%B2/proxy/"):
        status, body = raw_request(sim, "GET", f"{base}/{path}")
        assert status in (400, 404, 503), (path, status, body)
        assert body["kind"] == "Status"


def test_endpoints_naming_a_pod_of_another_namespace_reveal_nothing(
        sim: SimProcess, core: client.CoreV1Api) -> None:
    namespace = f"bank-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_pod(namespace, {"metadata": {"name": "vault"}, "spec": {
        "containers": [{"name": "app", "image": "bank/vault:1", "ports": [{
            "containerPort": 8443}]}]}})
    sim.wait_for(lambda: pod_is_ready(core.read_namespaced_pod("vault", namespace)))
    ip = core.read_namespaced_pod("vault", namespace).status.pod_ip
    name = f"leak-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_service("shop", {"metadata": {"name": name},
                                            "spec": {"ports": [{"port": 80}]}})
    core.create_namespaced_endpoints("shop", {"metadata": {"name": name}, "subsets": [{
        "addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": "vault",
                                               "namespace": namespace}}],
        "ports": [{"port": 8443}]}]})
    try:
        status, body = via_service(core, name)
        assert status == 503 and namespace not in json.dumps(body)
        assert body["message"] == f'no endpoints available for service "{name}"'
    finally:
        core.delete_namespaced_service(name, "shop")
        core.delete_namespace(namespace)


def test_a_huge_endpoints_object_under_many_policies_still_gets_an_answer(
        sim: SimProcess, core: client.CoreV1Api) -> None:
    # The review's attack, scaled: a selectorless Service whose user-written Endpoints
    # repeat one pod thousands of times, with many NetworkPolicies in the namespace. The
    # proxy looks at the pod once and the sim keeps answering everything else.
    sim.wait_for(lambda: pod_is_ready(core.read_namespaced_pod("lonely", "shop")))
    ip = core.read_namespaced_pod("lonely", "shop").status.pod_ip
    name = f"many-{uuid.uuid4().hex[:6]}"
    networking = client.NetworkingV1Api(core.api_client)
    policies = [f"{name}-{index}" for index in range(20)]
    for policy in policies:
        networking.create_namespaced_network_policy("shop", {
            "metadata": {"name": policy},
            "spec": {"podSelector": {"matchLabels": {"nothing": policy}},
                     "policyTypes": ["Ingress"]}})
    core.create_namespaced_service("shop", {"metadata": {"name": name},
                                            "spec": {"ports": [{"port": 80}]}})
    core.create_namespaced_endpoints("shop", {"metadata": {"name": name}, "subsets": [{
        "addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": "lonely"}}] * 5000,
        "ports": [{"port": 9000}]}]})
    try:
        for _ in range(3):
            status, body = via_service(core, name)
            assert status == 200 and body["pod"] == "lonely"
        truth = traffic(sim, name)
        assert truth["reachable_endpoints"] == 1 and truth["served"] == 3
        assert via_pod(core, "lonely")[0] == 200
    finally:
        core.delete_namespaced_service(name, "shop")
        for policy in policies:
            networking.delete_namespaced_network_policy(policy, "shop")
