"""The Kubernetes permissions each Pystol component's code uses: one list, read off the code.

The Helm chart's Roles and ClusterRoles (charts/pystol/templates/rbac.yaml) grant exactly
these; tests/unit/test_chart_rbac.py renders the chart and compares. When code starts to
call a new Kubernetes API, add it here and to the chart, or the cluster refuses the call.

Where each entry comes from (tests/integration/test_least_privilege.py runs every component
with exactly these rules in pystol-sim, and shows for each verb that taking it away makes
what needs it fail with that verb's 403):

- worker (pystol_worker/kube/cluster_access.py, as called by the actions, recovery and reaper):
  pods list/watch (pod_selection, blast_radius, recovery.watch_pods), get (container_kill,
  network_partition, pod_failure, stress), delete (pod-kill via recovery.delete_pod; stress
  pods on revert), patch (pod-failure images, network-partition labels), create (stress pods);
  pods/eviction create (node-drain); pods/exec create+get (container-kill: the WebSocket
  exec is a GET that clusters authorise as `get` before 1.30 and `create` since);
  nodes get/list/patch (node-cordon, node-drain, stress); the pods of a node in every
  namespace (node-drain, list_all_pods: a cluster-scope pods list);
  deployments/statefulsets get/list (deployment-scale, recovery), their scale subresource
  patch (deployment-scale writes the replica count; it reads the workload itself, never the
  scale), replicasets and daemonsets get (recovery follows owners);
  networkpolicies create/delete (network-partition); events create (post_event);
  services/proxy get (http-probe's `params.service`: a GET through the API server's proxy);
  services, endpoints and poddisruptionbudgets get (k8s probes' `object` checks, with pods,
  nodes and the workloads above);
  the snapshot of a server-side rehearsal (pystol_worker/rehearsal/cluster_snapshot.py,
  read-only): nodes, pods, services, endpoints, deployments, statefulsets, daemonsets,
  replicasets and poddisruptionbudgets list, and namespaces get (a Role in a namespace
  lets it read that namespace's own object). Never secrets nor configmaps.
- watcher (pystol_api/watcher/operator.py, kopf): the Pystol CRs list/watch/patch (kopf handlers,
  finalizers, progress annotations); their status subresource patch (patch_status, kopf's
  status patches); the cluster-scoped PystolClusterActions and PystolClusterSchedules
  likewise, but only cluster-wide (a watcher confined with --namespace does not serve them);
  events create (kopf.event); the peering object list/watch/patch and create
  (ensure_peering: ClusterKopfPeering cluster-wide, KopfPeering with --namespace). No `get`:
  kopf lists and watches, and patches what it handles, but never reads one object;
  customresourcedefinitions list/watch (kopf's resource scanning; cluster-wide only: a
  watcher confined with --namespace turns scanning off and finds its kinds once through
  API discovery, which needs no rule); nodes list (first_node_address).
- api (pystol_api/http/kube_identity.py: who a Kubernetes bearer token is and what RBAC lets
  it do): tokenreviews and subjectaccessreviews create, as Kubernetes' own
  `system:auth-delegator` grants them;
  (pystol_api/http/routes/preview.py runs the actions' `select`, read-only): pods list (pod
  targets, and a workload's pods for min_available), nodes get/list (node targets by name or
  selector), deployments and statefulsets list (deployment-scale), and for min_available the
  pods' owners: replicasets, deployments, statefulsets and daemonsets get;
  (pystol_api/http/routes/cluster.py, the cluster view): nodes, pods, deployments,
  statefulsets, daemonsets and replicasets list, in every namespace.
- beat: no Kubernetes access (its pod mounts no token).
"""

from __future__ import annotations

from typing import NamedTuple


class Rule(NamedTuple):
    api_group: str
    resource: str
    verbs: frozenset[str]


def _rule(api_group: str, resource: str, *verbs: str) -> Rule:
    return Rule(api_group, resource, frozenset(verbs))


COMPONENTS = ("api", "worker", "beat", "watcher")

#: Resources that are not namespaced: a Role cannot grant them.
CLUSTER_SCOPED = frozenset({
    ("", "nodes"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("kopf.dev", "clusterkopfpeerings"),
    ("pystol.org", "pystolclusteractions"),
    ("pystol.org", "pystolclusteractions/status"),
    ("pystol.org", "pystolclusterschedules"),
    ("pystol.org", "pystolclusterschedules/status"),
    ("pystol.org", "pystolclusterexperiments"),
    ("pystol.org", "pystolclusterexperiments/status"),
})

#: What the watcher needs only cluster-wide: the cluster-scoped kinds are not served by a
#: watcher confined to a namespace, and such a watcher runs with kopf's scanning off, so it
#: never lists or watches CustomResourceDefinitions (a namespaced install need not let it
#: read every CRD of the cluster).
CLUSTER_WIDE_ONLY = frozenset({
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("kopf.dev", "clusterkopfpeerings"),
    ("pystol.org", "pystolclusteractions"),
    ("pystol.org", "pystolclusteractions/status"),
    ("pystol.org", "pystolclusterschedules"),
    ("pystol.org", "pystolclusterschedules/status"),
    ("pystol.org", "pystolclusterexperiments"),
    ("pystol.org", "pystolclusterexperiments/status"),
})

PERMISSIONS: dict[str, list[Rule]] = {
    "api": [
        _rule("", "pods", "list"),
        _rule("", "nodes", "get", "list"),
        _rule("apps", "deployments", "get", "list"),
        _rule("apps", "statefulsets", "get", "list"),
        _rule("apps", "replicasets", "get", "list"),
        _rule("apps", "daemonsets", "get", "list"),
        _rule("authentication.k8s.io", "tokenreviews", "create"),
        _rule("authorization.k8s.io", "subjectaccessreviews", "create"),
    ],
    "worker": [
        _rule("", "pods", "get", "list", "watch", "delete", "patch", "create"),
        _rule("", "pods/eviction", "create"),
        _rule("", "pods/exec", "create", "get"),
        _rule("", "nodes", "get", "list", "patch"),
        _rule("", "events", "create"),
        _rule("apps", "deployments", "get", "list"),
        _rule("apps", "statefulsets", "get", "list"),
        _rule("apps", "deployments/scale", "patch"),
        _rule("apps", "statefulsets/scale", "patch"),
        _rule("apps", "replicasets", "get", "list"),
        _rule("apps", "daemonsets", "get", "list"),
        _rule("networking.k8s.io", "networkpolicies", "create", "delete"),
        _rule("", "services/proxy", "get"),
        _rule("", "services", "get", "list"),
        _rule("", "endpoints", "get", "list"),
        _rule("policy", "poddisruptionbudgets", "get", "list"),
        _rule("", "namespaces", "get"),
    ],
    "beat": [],
    "watcher": [
        _rule("pystol.org", "pystolactions", "list", "watch", "patch"),
        _rule("pystol.org", "pystolactions/status", "patch"),
        _rule("pystol.org", "pystolschedules", "list", "watch", "patch"),
        _rule("pystol.org", "pystolschedules/status", "patch"),
        _rule("pystol.org", "pystolclusteractions", "list", "watch", "patch"),
        _rule("pystol.org", "pystolclusteractions/status", "patch"),
        _rule("pystol.org", "pystolclusterschedules", "list", "watch", "patch"),
        _rule("pystol.org", "pystolclusterschedules/status", "patch"),
        _rule("pystol.org", "pystolexperiments", "list", "watch", "patch"),
        _rule("pystol.org", "pystolexperiments/status", "patch"),
        _rule("pystol.org", "pystolclusterexperiments", "list", "watch", "patch"),
        _rule("pystol.org", "pystolclusterexperiments/status", "patch"),
        _rule("", "events", "create"),
        _rule("kopf.dev", "clusterkopfpeerings", "list", "watch", "patch", "create"),
        _rule("kopf.dev", "kopfpeerings", "list", "watch", "patch", "create"),
        _rule("apiextensions.k8s.io", "customresourcedefinitions", "list", "watch"),
        _rule("", "nodes", "list"),
    ],
}


def required(component: str, namespaced: bool = False) -> dict[tuple[str, str], frozenset[str]]:
    """{(apiGroup, resource): verbs} a component needs in the given RBAC mode.

    Cluster-wide, the watcher keeps its peering in a ClusterKopfPeering and serves the
    cluster-scoped kinds; namespaced (`pystol watch --namespace`), it keeps its peering in
    a KopfPeering of its own namespace and serves the namespaced kinds only.
    """
    skip = {("kopf.dev", "kopfpeerings")} if not namespaced else CLUSTER_WIDE_ONLY
    rules: dict[tuple[str, str], frozenset[str]] = {}
    for rule in PERMISSIONS[component]:
        key = (rule.api_group, rule.resource)
        if key not in skip:
            rules[key] = rules.get(key, frozenset()) | rule.verbs
    return rules


#: The order verbs are written in (the README's table and error messages).
VERB_ORDER = ("get", "list", "watch", "create", "patch", "delete")


def markdown_table() -> str:
    """The README's permissions table, generated from PERMISSIONS so the two cannot drift
    (tests/unit/test_readme_permissions.py checks the README holds exactly this)."""
    rows = ["| component | API group | resource | verbs |", "| --- | --- | --- | --- |"]
    for component in COMPONENTS:
        if not PERMISSIONS[component]:
            rows.append(f"| {component} | — | nothing (no token is mounted) | — |")
        for rule in PERMISSIONS[component]:
            verbs = ", ".join(verb for verb in VERB_ORDER if verb in rule.verbs)
            only = " (cluster-wide only)" if (component == "watcher" and (
                rule.api_group, rule.resource) in CLUSTER_WIDE_ONLY) else ""
            namespaced = " (namespaced only)" if (
                rule.api_group, rule.resource) == ("kopf.dev", "kopfpeerings") else ""
            rows.append(f"| {component} | {rule.api_group or 'core'} | {rule.resource}"
                        f"{only}{namespaced} | {verbs} |")
    return "\n".join(rows) + "\n"
