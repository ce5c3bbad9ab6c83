"""The chart's RBAC grants each component what pystol_worker/kube/permissions.py lists:
enough, no more.

Renders charts/pystol with the real `helm template` (no cluster needed) and compares the
rules bound to each component's ServiceAccount with the permissions the code uses.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from pystol_worker.core.policy import Policy, PolicyError, load_policy
from pystol_worker.kube.permissions import CLUSTER_SCOPED, COMPONENTS, PERMISSIONS, required
from tests.conftest import ROOT, require_tool
from tests.support.chart_render import CHART, NAMESPACE, RELEASE, render

Rules = dict[tuple[str, str], frozenset[str]]


def flatten(rules: list[dict[str, Any]]) -> Rules:
    out: dict[tuple[str, str], frozenset[str]] = defaultdict(frozenset)
    for rule in rules:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource) and "*" not in rule["verbs"], rule
                out[(group, resource)] |= frozenset(rule["verbs"])
    return dict(out)


def sa_name(component: str) -> str:
    return f"{RELEASE}-pystol-{component}"


def granted(docs: list[dict[str, Any]], component: str) -> dict[str | None, Rules]:
    """{namespace (None: cluster-wide): rules} bound to a component's ServiceAccount."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    result: dict[str | None, Rules] = {}
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa_name(component)
                   and s["namespace"] == NAMESPACE for s in subjects):
            continue
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        rules = result.setdefault(namespace, {})
        for key, verbs in flatten(role.get("rules") or []).items():
            rules[key] = rules.get(key, frozenset()) | verbs
    return result


def split(rules: Rules) -> tuple[Rules, Rules]:
    namespaced = {k: v for k, v in rules.items() if k not in CLUSTER_SCOPED}
    cluster = {k: v for k, v in rules.items() if k in CLUSTER_SCOPED}
    return namespaced, cluster


def test_permissions_list_is_well_formed() -> None:
    assert set(PERMISSIONS) == set(COMPONENTS)
    for rules in PERMISSIONS.values():
        keys = [(r.api_group, r.resource) for r in rules]
        assert len(keys) == len(set(keys)), "one entry per (apiGroup, resource)"
        assert all(r.verbs for r in rules)


@pytest.mark.parametrize("component", COMPONENTS)
def test_cluster_wide_rbac_matches_the_code(component: str) -> None:
    docs = render()
    grants = granted(docs, component)
    need = required(component)
    if not need:
        assert grants == {}, f"{component} needs no Kubernetes access but is granted {grants}"
        return
    assert set(grants) == {None}, f"{component}: expected only ClusterRoleBindings"
    assert grants[None] == need, (
        f"{component}: missing {sorted(set(need.items()) - set(grants[None].items()))}, "
        f"extra {sorted(set(grants[None].items()) - set(need.items()))}")


@pytest.mark.parametrize("component", COMPONENTS)
def test_namespaced_rbac_matches_the_code(component: str) -> None:
    docs = render("rbac.namespaced=true", "rbac.namespaces={shop,web}")
    grants = granted(docs, component)
    namespaced_need, cluster_need = split(required(component, namespaced=True))
    # node-drain lists a node's pods in every namespace: not granted when confined.
    namespaces = {NAMESPACE} if component == "watcher" else {"shop", "web"}
    expected: dict[str | None, Rules] = {}
    if namespaced_need:
        expected.update(dict.fromkeys(namespaces, namespaced_need))
    if cluster_need:
        expected[None] = cluster_need
    assert grants == expected
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            assert set(flatten(doc["rules"])) <= CLUSTER_SCOPED, doc["metadata"]["name"]


def test_namespaced_without_node_access_has_no_cluster_roles() -> None:
    docs = render("rbac.namespaced=true", "rbac.namespaces={shop}", "rbac.nodeAccess=false")
    assert [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")] == []


def test_each_deployment_runs_as_its_own_service_account() -> None:
    docs = render()
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts == {sa_name(c) for c in COMPONENTS}
    for doc in docs:
        if doc["kind"] == "Deployment":
            component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            spec = doc["spec"]["template"]["spec"]
            assert spec["serviceAccountName"] == sa_name(component)
            assert spec["automountServiceAccountToken"] is bool(PERMISSIONS[component])


def test_chart_crds_are_the_packaged_crds() -> None:
    source = ROOT / "pystol_api" / "crds"
    chart = CHART / "crds"
    names = sorted(p.name for p in source.glob("*.yaml"))
    assert names and names == sorted(p.name for p in chart.glob("*.yaml")), (
        "charts/pystol/crds must hold a copy of every pystol_api/crds/*.yaml")
    for name in names:
        assert (chart / name).read_bytes() == (source / name).read_bytes(), (
            f"charts/pystol/crds/{name} differs from pystol_api/crds/{name}: copy it again")


def test_crd_copy_is_what_helm_renders() -> None:
    # `helm template --include-crds` emits the CRDs from crds/ untouched.
    helm = require_tool("helm")
    result = subprocess.run([helm, "template", RELEASE, str(CHART), "--include-crds"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    crds = {d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)
            if d and d["kind"] == "CustomResourceDefinition"}
    expected = {d["metadata"]["name"] for p in Path(ROOT / "pystol_api" / "crds").glob("*.yaml")
                for d in yaml.safe_load_all(p.read_text()) if d}
    assert crds == expected


# -- the admin policy: the chart's `policy` value reaches every Pystol process ----------------
#
# PYSTOL_POLICY_FILE names a file every process reads at start; the chart writes the
# `policy` value into a ConfigMap and mounts it on each pod. Nothing else shows that the
# path, the mount, the ConfigMap's key and the YAML helm writes all line up: a typo in
# any of them would leave a pod on the default policy, or failing at start.

#: A full policy, every field set (the README's example, plus the probe caps). The large
#: integer checks that helm writes numbers back as numbers a policy accepts (helm holds
#: values as floats, and writes a big one in exponent form unless it is an integer).
FULL_POLICY: dict[str, Any] = {
    "actions": [{"namespaces": ["shop", "cart"],
                 "actions": ["pod-kill", "container-kill", "pod-failure"]},
                {"namespaces": ["*"], "actions": ["pod-kill", "node-cordon"]}],
    "max_targets_per_job": 20,
    "images": ["registry.k8s.io/pause:3.9", "ghcr.io/colinianking/stress-ng:*"],
    "signals": ["SIGTERM", "SIGKILL"],
    "include_control_plane": False,
    "drain_force": False,
    "min_schedule_period": "5m",
    "max_fault_duration": "30m",
    "windows": ["mon-fri 09:00-17:00"],
    "time_zone": "Europe/Berlin",
    "excluded_dates": ["2026-12-24", "2026-12-31"],
    "outside_windows": "wait",
    "probes": {"allow": ["10.0.0.0/8"], "max_body_bytes": 33554432, "max_seconds": 12},
}


def render_values(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template -f values.yaml`: the way an admin gives a structured value (a list of
    mappings does not go through `--set` intact)."""
    helm = require_tool("helm")
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = subprocess.run([helm, "template", RELEASE, str(CHART), "-n", NAMESPACE,
                             "-f", str(values_file)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def policy_file_seen_by(docs: list[dict[str, Any]], component: str) -> tuple[str, str]:
    """(PYSTOL_POLICY_FILE, that file's content) as the component's container sees them:
    the variable from its env or envFrom ConfigMaps, the file from the volume mounted over
    the variable's directory."""
    config_maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs
                   if d["kind"] == "ConfigMap"}
    [deployment] = [d for d in docs if d["kind"] == "Deployment"
                    and d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]])
    environment.update({item["name"]: item.get("value", "") for item in container.get("env", [])})
    path = environment.get("PYSTOL_POLICY_FILE", "")
    assert path.startswith("/"), f"{component}: PYSTOL_POLICY_FILE is {path!r}"
    directory, _, key = path.rpartition("/")
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
    assert len(mounts) == 1, f"{component}: nothing (or several) mounted at {directory}"
    assert mounts[0].get("readOnly") is True, f"{component}: the policy must be read-only"
    [volume] = [v for v in pod["volumes"] if v["name"] == mounts[0]["name"]]
    assert "configMap" in volume, f"{component}: {directory} is not a ConfigMap: {volume}"
    data = config_maps[volume["configMap"]["name"]]
    assert key in data, f"{component}: the ConfigMap has no {key}: {sorted(data)}"
    return path, data[key]


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_pod_reads_the_charts_policy(tmp_path: Path, component: str) -> None:
    docs = render_values(tmp_path, {"policy": FULL_POLICY})
    path, text = policy_file_seen_by(docs, component)
    copy = tmp_path / "policy.yaml"
    copy.write_text(text)
    loaded = load_policy(str(copy))
    assert loaded == Policy.model_validate(FULL_POLICY), f"{component} at {path}"
    assert loaded != Policy()  # not the defaults: the value got through


def test_without_a_policy_value_every_pod_reads_the_defaults(tmp_path: Path) -> None:
    docs = render_values(tmp_path, {})
    for component in COMPONENTS:
        _, text = policy_file_seen_by(docs, component)
        copy = tmp_path / f"{component}.yaml"
        copy.write_text(text)
        assert load_policy(str(copy)) == Policy(), component


def test_a_policy_value_with_an_unknown_field_is_refused(tmp_path: Path) -> None:
    # `max_targets` for max_targets_per_job: a typo must stop the process at start, not
    # leave the cap at its default while the admin believes it is 5. The chart's schema
    # accepts any object here, so the refusal is the loader's, naming the field.
    docs = render_values(tmp_path, {"policy": {"max_targets": 5,
                                               "probes": {"max_body_byte": 10}}})
    _, text = policy_file_seen_by(docs, "worker")
    copy = tmp_path / "policy.yaml"
    copy.write_text(text)
    with pytest.raises(PolicyError) as refused:
        load_policy(str(copy))
    message = str(refused.value)
    assert "max_targets: Extra inputs are not permitted" in message, message
    assert "probes.max_body_byte: Extra inputs are not permitted" in message, message
