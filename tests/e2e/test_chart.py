"""The Pystol Helm chart: lint, Kubernetes 1.35 schemas, and a real helm v4 install into
pystol-sim, upgrade and uninstall."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.support.sim_process import SimProcess

pytestmark = pytest.mark.e2e
CHART = ROOT / "charts" / "pystol"
# The newest Kubernetes schema kubernetes-validate ships that is not newer than 1.35.
K8S_VERSION = "1.35.0"

NON_DEFAULT = {
    "namespaced RBAC": ["rbac.namespaced=true", "rbac.namespaces={shop,web}"],
    "external Redis": ["redis.enabled=false", "externalRedis.host=redis.example.org",
                       "externalRedis.tls=true", "externalRedis.existingSecret=redis-auth",
                       "externalRedis.tlsCaSecret=redis-ca",
                       "networkPolicy.externalRedisTo[0].ipBlock.cidr=10.1.0.0/16"],
    "external Redis through Sentinel": [
        "redis.enabled=false", "externalRedis.sentinel.master=mymaster",
        "externalRedis.sentinel.hosts={sentinel-0.redis:26379,sentinel-1.redis:26379}",
        "externalRedis.existingSecret=redis-auth"],
    "NetworkPolicies off, own Redis password": [
        "networkPolicy.enabled=false", "redis.existingSecret=my-redis"],
    "NetworkPolicies naming the API server and probe targets": [
        "networkPolicy.kubeApiServer.cidrs={10.0.0.10/32}",
        "networkPolicy.probeEgress[0].to[0].namespaceSelector.matchLabels.team=shop",
        "networkPolicy.probeEgress[0].ports[0].port=8080"],
    "Ingress with TLS": [
        "ingress.enabled=true", "ingress.className=nginx", "ingress.hosts={pystol.example.com}",
        "ingress.tls[0].secretName=pystol-tls", "ingress.tls[0].hosts={pystol.example.com}",
        "ingress.annotations.cert-manager\\.io/cluster-issuer=letsencrypt"],
    "everything optional on": [
        "networkPolicy.enabled=true", "serviceMonitor.enabled=true",
        "worker.autoscaling.enabled=true", "worker.autoscaling.queueDepthPerWorker=10",
        "apiTokens.tokens={token-one-abcdef,token-two-ab}",
        "rbac.namespaced=true", "rbac.namespaces={shop}", "redis.enabled=false",
        "externalRedis.host=redis.example.org", "grafanaDashboard.enabled=true"],
}
CASES = {"defaults": [], **NON_DEFAULT}


def helm(*args: str, env: dict[str, str] | None = None, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([require_tool("helm"), *args], env=env, capture_output=True,
                            text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def set_args(sets: list[str]) -> list[str]:
    return [arg for item in sets for arg in ("--set", item)]


def render(sets: list[str]) -> list[dict[str, Any]]:
    out = helm("template", "rel", str(CHART), "-n", "pystol", "--include-crds",
               *set_args(sets)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("case", list(CASES))
def test_helm_lint(case: str) -> None:
    out = helm("lint", "--strict", str(CHART), *set_args(CASES[case])).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_kubernetes_validate_has_the_target_version() -> None:
    from kubernetes_validate.utils import all_versions

    assert K8S_VERSION in set(all_versions())


@pytest.mark.parametrize("case", list(CASES))
def test_rendered_objects_match_kubernetes_schemas(case: str) -> None:
    docs = render(CASES[case])
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ServiceAccount", "CustomResourceDefinition"} <= kinds
    problems = []
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's CRD, not part of Kubernetes' schemas
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} "
                            f"at {'/'.join(map(str, error.path))}")
    assert problems == []
    if case == "everything optional on":
        assert {"NetworkPolicy", "ServiceMonitor", "HorizontalPodAutoscaler", "Role"} <= kinds
        assert "StatefulSet" not in kinds


def test_the_ingress_serves_the_api_over_tls() -> None:
    [ingress] = [doc for doc in render(NON_DEFAULT["Ingress with TLS"])
                 if doc["kind"] == "Ingress"]
    assert ingress["spec"]["tls"] == [{"secretName": "pystol-tls",
                                       "hosts": ["pystol.example.com"]}]
    [rule] = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert rule["host"] == "pystol.example.com" and backend == {
        "name": "rel-pystol-api", "port": {"name": "http"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_workers_can_scale_on_queue_depth_as_well_as_cpu() -> None:
    # A worker waiting on its Kubernetes QPS budget is busy at low CPU (README "Scaling past
    # one machine"), so the HPA can also follow the jobs waiting per worker pod.
    def hpa(sets: list[str]) -> dict[str, Any]:
        [doc] = [d for d in render(["worker.autoscaling.enabled=true", *sets])
                 if d["kind"] == "HorizontalPodAutoscaler"]
        return doc
    assert [m["type"] for m in hpa([])["spec"]["metrics"]] == ["Resource"]
    metrics = hpa(["worker.autoscaling.queueDepthPerWorker=5", "config.queue=chaos"]
                  )["spec"]["metrics"]
    assert metrics[1] == {"type": "External", "external": {
        "metric": {"name": "pystol_queue_depth",
                   "selector": {"matchLabels": {"queue": "chaos"}}},
        "target": {"type": "AverageValue", "averageValue": "5"}}}


def test_defaults_leave_optional_objects_off() -> None:
    kinds = {doc["kind"] for doc in render([])}
    assert not kinds & {"HorizontalPodAutoscaler", "ServiceMonitor", "Role", "Ingress"}
    # NetworkPolicies are not optional any more: Redis is a trust boundary (issue 13).
    assert {"StatefulSet", "PodDisruptionBudget", "ClusterRole", "Secret",
            "NetworkPolicy"} <= kinds


def test_pods_are_hardened_and_probed() -> None:
    docs = render([])
    workloads = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs
                 if d["kind"] in ("Deployment", "StatefulSet")}
    assert set(workloads) == {"api", "worker", "beat", "watcher", "redis"}
    assert workloads["beat"]["spec"]["replicas"] == 1
    assert workloads["watcher"]["spec"]["replicas"] == 2
    for component, doc in workloads.items():
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert any("emptyDir" in v and v["name"] == "tmp" for v in pod["volumes"])
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, component
            assert sc["allowPrivilegeEscalation"] is False, component
            assert sc["capabilities"]["drop"] == ["ALL"], component
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    api = workloads["api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    watcher = workloads["watcher"]["spec"]["template"]["spec"]["containers"][0]
    assert watcher["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert watcher["ports"][0]["containerPort"] == 8081
    assert watcher["args"][:3] == ["watch", "--peering", "pystol"]
    assert "http://0.0.0.0:8081/healthz" in watcher["args"]


def test_config_values_become_pystol_environment() -> None:
    docs = render(["config.kubeQps=7.5", "config.kubeBurst=9",
                   "config.protectedNamespaces={kube-system,prod}"])
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["PYSTOL_KUBE_QPS"] == "7.5"
    assert config["PYSTOL_KUBE_BURST"] == "9"
    assert config["PYSTOL_PROTECTED_NAMESPACES"] == "kube-system,prod"
    assert config["PYSTOL_NAMESPACE"] == "pystol"
    assert config["PYSTOL_API_BIND"] == "0.0.0.0:8080"


@pytest.mark.parametrize(("sets", "message"), [
    (["api.replicas=two"], "/api/replicas"),
    (["config.kubeQps=0"], "/config/kubeQps"),
    (["worker.autoscaling.enabled=yes"], "/worker/autoscaling/enabled"),
    (["worker.autoscaling.queueDepthPerWorker=0"], "/worker/autoscaling/queueDepthPerWorker"),
    (["rbac.namespaced=true"], "/rbac/namespaces"),
    (["redis.enabled=false"], "/externalRedis/host"),
    (["redis.maxmemory=lots"], "/redis/maxmemory"),
    (["redis.enabled=false", "externalRedis.sentinel.master=mymaster"],
     "/externalRedis/sentinel/hosts"),
    (["redis.enabled=false", "externalRedis.sentinel.master=m", "externalRedis.tls=true",
      "externalRedis.sentinel.hosts={s:26379}"], "/externalRedis/tls"),
    (["networkPolicy.kubeApiServer.ports={}"], "/networkPolicy/kubeApiServer/ports"),
    (["no.such.value=1"], "additional properties 'no' not allowed"),
    # Bearer tokens never cross the network in clear by accident.
    (["ingress.enabled=true", "ingress.hosts={pystol.example.com}"],
     "would send bearer tokens over plain HTTP"),
    (["ingress.enabled=true", "ingress.tls[0].secretName=t"], "ingress.enabled needs "
                                                               "ingress.hosts"),
])
def test_wrong_values_fail_before_install(sets: list[str], message: str) -> None:
    result = helm("template", "rel", str(CHART), *set_args(sets), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def get(sim: SimProcess, kind: str, namespace: str | None = None) -> set[str]:
    args = ["get", kind, "-o", "json"] + (["-n", namespace] if namespace else [])
    items = json.loads(sim.kubectl(*args).stdout)["items"]
    return {item["metadata"]["name"] for item in items}


def test_helm_install_upgrade_uninstall(fresh_sim: SimProcess) -> None:
    env = fresh_sim.env()
    fresh_sim.kubectl("create", "namespace", "pystol")
    out = helm("install", "rel", str(CHART), "-n", "pystol", "--wait", "--timeout", "90s",
               env=env).stdout
    assert "STATUS: deployed" in out

    components = {"api", "worker", "beat", "watcher"}
    assert get(fresh_sim, "deployments", "pystol") == {f"rel-pystol-{c}" for c in components}
    assert get(fresh_sim, "services", "pystol") == {"rel-pystol-api", "rel-pystol-redis"}
    assert {f"rel-pystol-{c}" for c in components} <= get(fresh_sim, "serviceaccounts",
                                                          "pystol")
    assert {"rel-pystol-api", "rel-pystol-worker", "rel-pystol-watcher"} <= get(
        fresh_sim, "clusterroles")
    crds = {"pystolactions.pystol.org", "pystolschedules.pystol.org",
            "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}
    assert crds <= get(fresh_sim, "crds")
    assert "rel-pystol-redis" in get(fresh_sim, "statefulsets", "pystol")
    assert "rel-pystol-api" in get(fresh_sim, "poddisruptionbudgets", "pystol")
    for deployment, replicas in (("api", 2), ("worker", 2), ("beat", 1), ("watcher", 2)):
        status = json.loads(fresh_sim.kubectl("get", "deployment", f"rel-pystol-{deployment}",
                                              "-n", "pystol", "-o", "json").stdout)["status"]
        assert status.get("readyReplicas") == replicas, (deployment, status)

    assert {f"rel-pystol-{c}" for c in (*components, "redis")} == get(
        fresh_sim, "networkpolicies", "pystol")

    def secret(name: str, key: str) -> str:
        return fresh_sim.kubectl("get", "secret", name, "-n", "pystol",
                                 "-o", f"jsonpath={{.data.{key}}}").stdout
    generated = secret("rel-pystol-api-tokens", "tokens")
    assert len(generated) > 40
    redis_password = secret("rel-pystol-redis", "redis-password")
    assert len(redis_password) > 40  # 32 characters, base64-encoded
    out = helm("upgrade", "rel", str(CHART), "-n", "pystol", "--set", "worker.replicas=3",
               "--wait", "--timeout", "90s", env=env).stdout
    assert "REVISION: 2" in out
    assert secret("rel-pystol-api-tokens", "tokens") == generated, \
        "the generated API token must survive an upgrade"
    assert secret("rel-pystol-redis", "redis-password") == redis_password, \
        "the generated Redis password must survive an upgrade"

    assert 'release "rel" uninstalled' in helm("uninstall", "rel", "-n", "pystol",
                                               env=env).stdout
    for kind in ("deployments", "services", "serviceaccounts", "statefulsets", "configmaps",
                 "secrets"):
        left = {n for n in get(fresh_sim, kind, "pystol") if n.startswith("rel-")}
        assert left == set(), (kind, left)
    assert not {n for n in get(fresh_sim, "clusterroles") if n.startswith("rel-pystol")}
    # Helm never deletes the CRDs of a chart's crds/ directory (nor the custom resources).
    assert crds <= get(fresh_sim, "crds")


def test_generated_secrets_are_kept_when_they_exist(fresh_sim: SimProcess,
                                                    tmp_path: Path) -> None:
    """The `lookup` in secret.yaml, against a cluster (pystol-sim) with `helm template
    --dry-run=server`: an upgrade renders the Redis password and the signing key already in
    the cluster (a new one would lock Pystol out of its own Redis, and make every sealed
    grant invalid); a first install generates them."""
    env = fresh_sim.env()
    fresh_sim.kubectl("create", "namespace", "pystol")

    def rendered() -> dict[str, dict[str, str]]:
        out = helm("template", "rel", str(CHART), "-n", "pystol", "--dry-run=server",
                   "--show-only", "templates/secret.yaml", env=env).stdout
        return {doc["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                          for k, v in doc["data"].items()}
                for doc in yaml.safe_load_all(out) if doc}

    fresh = rendered()
    assert len(fresh["rel-pystol-redis"]["redis-password"]) == 32
    assert rendered()["rel-pystol-redis"] != fresh["rel-pystol-redis"]  # not yet stored

    # What the first install left in the cluster (owned by the release, as helm leaves it).
    installed = [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": name, "namespace": "pystol",
                               "labels": {"app.kubernetes.io/managed-by": "Helm"},
                               "annotations": {"meta.helm.sh/release-name": "rel",
                                               "meta.helm.sh/release-namespace": "pystol"}},
                  "data": {key: base64.b64encode(value.encode()).decode()
                           for key, value in data.items()}}
                 for name, data in (("rel-pystol-redis",
                                     {"redis-password": "kept-from-the-first-install"}),
                                    ("rel-pystol-signing-key",
                                     {"key": "signing-key-of-the-first-install"}))]
    manifest = tmp_path / "installed.yaml"
    manifest.write_text(yaml.safe_dump_all(installed))
    fresh_sim.kubectl("apply", "-f", str(manifest))
    upgraded = rendered()
    assert upgraded["rel-pystol-redis"] == {"redis-password": "kept-from-the-first-install"}
    assert upgraded["rel-pystol-signing-key"] == {"key": "signing-key-of-the-first-install"}


def test_the_api_server_rule_names_the_clusters_api_server(fresh_sim: SimProcess,
                                                          tmp_path: Path) -> None:
    """Without networkPolicy.kubeApiServer.cidrs, an install reads the `kubernetes`
    Service's endpoints (`lookup`): Pystol's pods may then reach those addresses on the
    API server's ports, not any address on 443 and 6443 (which probes could use)."""
    env = fresh_sim.env()
    fresh_sim.kubectl("create", "namespace", "pystol")
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "10.0.0.10"}, {"ip": "fd00::10"}],
                     "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}))
    fresh_sim.kubectl("apply", "-f", str(endpoints))

    def api_server_rule(*sets: str, server: bool = True) -> dict[str, Any]:
        out = helm("template", "rel", str(CHART), "-n", "pystol",
                   *(["--dry-run=server"] if server else []), *set_args(list(sets)),
                   "--show-only", "templates/networkpolicy.yaml", env=env).stdout
        [worker] = [doc for doc in yaml.safe_load_all(out)
                    if doc and doc["metadata"]["name"] == "rel-pystol-worker"]
        [rule] = [rule for rule in worker["spec"]["egress"]
                  if {"port": 6443, "protocol": "TCP"} in rule.get("ports", [])]
        return rule

    assert api_server_rule()["to"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}},
                                       {"ipBlock": {"cidr": "fd00::10/128"}}]
    assert api_server_rule("networkPolicy.kubeApiServer.cidrs={192.0.2.1/32}")["to"] == [
        {"ipBlock": {"cidr": "192.0.2.1/32"}}]
    assert "to" not in api_server_rule(server=False)  # no cluster to ask: any address


def test_every_setting_is_mirrored_in_values() -> None:
    from pystol_worker.core.settings import Settings

    values = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    set_by_chart = {"redis_url", "redis_sentinel_master", "kubeconfig", "api_bind",
                    "api_tokens", "namespace", "health_dir", "signing_key", "policy_file",
                    "metrics_token"}
    cli_only = {"api_url", "token"}
    camel = {name: name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
             for name in Settings.model_fields}
    missing = [f"config.{camel[name]}" for name in Settings.model_fields
               if name not in set_by_chart | cli_only and camel[name] not in values]
    assert missing == [], "settings without a chart value"
    config = next(d for d in render([]) if d["kind"] == "ConfigMap")["data"]
    for name in Settings.model_fields:
        if name not in cli_only | {"redis_url", "api_tokens", "signing_key", "metrics_token"}:
            assert f"PYSTOL_{name.upper()}" in config, name
