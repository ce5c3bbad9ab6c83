"""Pystol's components in pystol-sim under exactly the RBAC the Helm chart grants them.

`install_chart_rbac` takes a fresh simulated cluster and does what `helm install` would
(as the admin): the release namespace, the chart's ServiceAccounts, ClusterRoles and
ClusterRoleBindings exactly as `helm template` renders them (cluster-wide mode, the
default), and Pystol's CRDs; then it issues a ServiceAccount token per component (a
TokenRequest, as the kubelet does for a pod) and writes one kubeconfig per component:
the sim's server and CA, that component's token. A process started with
`PYSTOL_KUBECONFIG` pointing there talks to the cluster as that ServiceAccount, and the
sim authorizes every request against the chart's rules like kube-apiserver does.

`ChartRbac.without(component, group, resource, verb)` takes exactly one verb of one
resource out of the component's ClusterRole, live (the sim enforces the next request),
and puts the rendered role back afterwards.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from kubernetes import client, config

from pystol_api.crds import install_crds
from pystol_worker.kube.cluster_access import ClusterAccess, RetryPolicy, TokenBucket
from pystol_worker.kube.permissions import required
from tests.support.chart_render import NAMESPACE, RELEASE, render
from tests.support.pystol_processes import Process, spawn
from tests.support.redis_server import free_port
from tests.support.sim_process import SimProcess

RBAC_KINDS = ("ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
#: The components that talk to Kubernetes (beat has no token at all).
WITH_ACCESS = ("api", "worker", "watcher")


def sa_name(component: str) -> str:
    return f"{RELEASE}-pystol-{component}"


def forbidden_text(verb: str, resource: str, group: str) -> str:
    """What the sim (and kube-apiserver) says when RBAC refuses exactly this."""
    return f'cannot {verb} resource "{resource}" in API group "{group}"'


def rule_ids(component: str) -> list[tuple[str, str, str, str]]:
    """(component, apiGroup, resource, verb) for every verb permissions.py gives a component
    in the mode the chart renders by default (cluster-wide)."""
    return [(component, group, resource, verb)
            for (group, resource), verbs in sorted(required(component).items())
            for verb in sorted(verbs)]


def without_verb(rules: list[dict[str, Any]], group: str, resource: str, verb: str
                 ) -> list[dict[str, Any]]:
    """The same rules minus `verb` on `group/resource`, nothing else: a rule naming several
    resources is split so that the others keep every verb."""
    out: list[dict[str, Any]] = []
    found = False
    for rule in rules:
        assert len(rule["apiGroups"]) == 1, f"the chart writes one apiGroup per rule: {rule}"
        if rule["apiGroups"] == [group] and resource in rule["resources"] \
                and verb in rule["verbs"]:
            found = True
            others = [r for r in rule["resources"] if r != resource]
            if others:
                out.append({**rule, "resources": others})
            verbs = [v for v in rule["verbs"] if v != verb]
            if verbs:
                out.append({**rule, "resources": [resource], "verbs": verbs})
        else:
            out.append(rule)
    assert found, f"the chart does not grant {verb} {group}/{resource}"
    return out


def write_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster (server, CA) with a user holding `token`."""
    kubeconfig = yaml.safe_load(admin.read_text())
    for user in kubeconfig["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


@dataclass
class ChartRbac:
    sim: SimProcess
    docs: list[dict[str, Any]]
    kubeconfigs: dict[str, Path]
    admin: client.ApiClient
    _roles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def role(self, component: str) -> dict[str, Any]:
        """The component's ClusterRole as the chart renders it (a deep copy)."""
        name = sa_name(component)
        [doc] = [d for d in self.docs if d["kind"] == "ClusterRole"
                 and d["metadata"]["name"] == name]
        return copy.deepcopy(doc)

    def set_rules(self, component: str, rules: list[dict[str, Any]]) -> None:
        body = self.role(component)
        body["rules"] = rules
        client.RbacAuthorizationV1Api(self.admin).replace_cluster_role(sa_name(component),
                                                                       body)

    @contextmanager
    def without(self, component: str, group: str, resource: str, verb: str
                ) -> Iterator[None]:
        """The component's ClusterRole without that one verb, for the block."""
        rendered = self.role(component)["rules"]
        self.set_rules(component, without_verb(rendered, group, resource, verb))
        try:
            yield
        finally:
            self.set_rules(component, rendered)

    def cluster_access(self, component: str) -> ClusterAccess:
        """In process, what the component's own ClusterAccess is: its kubeconfig, no retry."""
        api_client = config.new_client_from_config(config_file=str(self.kubeconfigs[component]))
        return ClusterAccess(api_client, TokenBucket(1000.0, 1000), RetryPolicy(attempts=1))

    def kube(self, component: str) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfigs[component]))

    def service_account_token(self, namespace: str, name: str) -> str:
        """A fresh token for a ServiceAccount (created when missing), as `kubectl create
        token` gives one."""
        core = client.CoreV1Api(self.admin)
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except client.ApiException as error:
            if error.status != 409:
                raise
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
        token: str = core.create_namespaced_service_account_token(name, namespace,
                                                                  request).status.token
        return token


def install_chart_rbac(sim: SimProcess, workdir: Path, *sets: str) -> ChartRbac:
    """The chart's ServiceAccounts and RBAC (release `rel` in namespace `pystol`) and the
    CRDs in `sim`, and one kubeconfig per component that talks to Kubernetes."""
    admin = config.new_client_from_config(config_file=str(sim.kubeconfig))
    core = client.CoreV1Api(admin)
    if NAMESPACE not in {n.metadata.name for n in core.list_namespace().items}:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    docs = [d for d in render(*sets) if d["kind"] in RBAC_KINDS]
    manifest = workdir / "chart-rbac.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    sim.kubectl("apply", "-n", NAMESPACE, "-f", str(manifest))
    install_crds(str(sim.kubeconfig))
    rbac = ChartRbac(sim, docs, {}, admin)
    for component in WITH_ACCESS:
        token = rbac.service_account_token(NAMESPACE, sa_name(component))
        rbac.kubeconfigs[component] = write_kubeconfig(
            sim.kubeconfig, token, workdir / f"kubeconfig-{component}")
    return rbac


# -- the watcher process ---------------------------------------------------------------------------


def start_watcher(env: dict[str, str], *args: str, name: str = "watch",
                  timeout: float = 60.0) -> Process:
    """`pystol watch` with a liveness endpoint; returns once that answers 200."""
    port = free_port()
    liveness = f"http://127.0.0.1:{port}/healthz"
    handle = spawn(name, [sys.executable, "-m", "pystol_api.cli", "watch", "--liveness",
                          liveness, *args], env)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(liveness, timeout=2).status_code == 200:
                return handle
        except requests.RequestException:
            pass
        if handle.process.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"{name} did not start:\n{handle.tail()}")
        time.sleep(0.1)


def unescaped(line: str) -> str:
    """A log line (or an error's text) without backslashes, so that quoted names match
    however many times they were escaped (a Status body inside an exception's text inside
    a JSON log line)."""
    return line.replace("\\", "")


def wait_for_line(handle: Process, predicate: Callable[[str], bool], timeout: float,
                  start: int = 0, what: str = "a matching line") -> str:
    """The first line of the process's output (from index `start`) that satisfies
    `predicate` (on the unescaped line), waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    seen = start
    while True:
        lines = handle.output[seen:]
        for line in lines:
            text = unescaped(line)
            if predicate(text):
                return text
        seen += len(lines)
        if time.monotonic() > deadline:
            raise AssertionError(f"{handle.name} logged no {what} within {timeout}s; last "
                                 f"lines:\n{handle.tail(30)}")
        if handle.process.poll() is not None:
            raise AssertionError(f"{handle.name} exited ({handle.process.returncode}) "
                                 f"without {what}:\n{handle.tail(30)}")
        time.sleep(0.05)
