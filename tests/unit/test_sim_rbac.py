"""The sim's authenticator and RBAC evaluator, without a server: pure functions and indexes.

Each test states the attack or the rule it pins down; the integration twin
(tests/integration/test_sim_auth.py) drives the same behaviour over HTTPS.
"""

from __future__ import annotations

from typing import Any

import pytest

from pystol_sim import rbac
from pystol_sim.authn import (
    ADMIN,
    API_AUDIENCE,
    Authenticator,
    AuthError,
    service_account_groups,
)
from pystol_sim.errors import ApiError
from pystol_sim.protobuf_codec import decode_object
from pystol_sim.rbac import Attributes, RbacIndex, request_attributes
from pystol_sim.scenario import ScenarioError, parse_scenario

RBAC_V1 = "rbac.authorization.k8s.io/v1"
SA = "system:serviceaccount:shop:robot"
SA_GROUPS = service_account_groups("shop")

# ------------------------------------------------------------------------------- builders


def rule(verbs: list[str], resources: list[str], groups: list[str] | None = None,
         names: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"apiGroups": groups if groups is not None else [""],
                           "resources": resources, "verbs": verbs}
    if names:
        out["resourceNames"] = names
    return out


def role(name: str, namespace: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": RBAC_V1, "kind": "Role",
            "metadata": {"name": name, "namespace": namespace}, "rules": list(rules)}


def cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": RBAC_V1, "kind": "ClusterRole", "metadata": {"name": name},
            "rules": list(rules)}


def binding(name: str, namespace: str | None, role_kind: str, role_name: str,
            *subjects: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, str] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": RBAC_V1, "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": rbac.GROUP, "kind": role_kind, "name": role_name},
            "subjects": list(subjects)}


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "apiGroup": rbac.GROUP}


def group(name: str) -> dict[str, str]:
    return {"kind": "Group", "name": name, "apiGroup": rbac.GROUP}


def service_account(name: str, namespace: str | None = None) -> dict[str, str]:
    subject = {"kind": "ServiceAccount", "name": name}
    if namespace:
        subject["namespace"] = namespace
    return subject


def index(*objects: dict[str, Any], bootstrap: bool = False) -> RbacIndex:
    built = RbacIndex()
    built.load([*(rbac.bootstrap_policy() if bootstrap else []), *objects])
    return built


def can(idx: RbacIndex, verb: str, resource: str, namespace: str = "", name: str = "",
        who: str = "alice", groups: tuple[str, ...] = (), api_group: str = "",
        subresource: str = "") -> bool:
    return idx.authorize(Attributes(who, groups, verb, True, namespace, api_group, "v1",
                                    resource, subresource, name)).allowed


def can_path(idx: RbacIndex, path: str, who: str = "alice", groups: tuple[str, ...] = (),
             verb: str = "get") -> bool:
    return idx.authorize(Attributes(who, groups, verb, False, path=path)).allowed


# ------------------------------------------------------------------------------- evaluator


def test_nothing_is_allowed_without_a_binding() -> None:
    idx = index(role("everything", "shop", rule(["*"], ["*"], ["*"])))
    assert not can(idx, "get", "pods", "shop", "web-1")
    assert not can(idx, "list", "pods", "shop")
    assert not can_path(idx, "/version")
    decision = idx.authorize(Attributes("alice", (), "get", True, "shop", "", "v1", "pods"))
    assert decision == rbac.Decision(False, "")


def test_a_role_binding_grants_its_role_in_its_namespace_only() -> None:
    idx = index(role("reader", "shop", rule(["get", "list"], ["pods"])),
                binding("alice-reads", "shop", "Role", "reader", user("alice")))
    assert can(idx, "list", "pods", "shop")
    assert can(idx, "get", "pods", "shop", "web-1")
    assert not can(idx, "delete", "pods", "shop", "web-1")  # verb not granted
    assert not can(idx, "list", "pods", "payments")  # other namespace
    assert not can(idx, "list", "pods")  # all namespaces = cluster scope
    assert not can(idx, "list", "configmaps", "shop")  # other resource
    assert not can(idx, "list", "pods", "shop", who="bob")  # other user
    decision = idx.authorize(Attributes("alice", (), "list", True, "shop", "", "v1", "pods"))
    assert decision.reason == ('RBAC: allowed by RoleBinding "alice-reads/shop" of Role '
                               '"reader" to User "alice"')


def test_a_role_of_another_namespace_grants_nothing() -> None:
    # roleRef kind Role resolves in the binding's namespace: a Role named "reader" in
    # payments does not leak into a binding in shop.
    idx = index(role("reader", "payments", rule(["*"], ["*"])),
                binding("alice-reads", "shop", "Role", "reader", user("alice")))
    assert not can(idx, "list", "pods", "shop")
    assert not can(idx, "list", "pods", "payments")
    decision = idx.authorize(Attributes("alice", (), "list", True, "shop", "", "v1", "pods"))
    assert decision.reason == 'RBAC: role.rbac.authorization.k8s.io "reader" not found'


def test_a_cluster_role_through_a_role_binding_is_limited_to_that_namespace() -> None:
    idx = index(cluster_role("pod-admin", rule(["*"], ["pods"])),
                binding("b", "shop", "ClusterRole", "pod-admin", user("alice")))
    assert can(idx, "delete", "pods", "shop", "web-1")
    assert not can(idx, "delete", "pods", "payments", "web-1")
    assert not can(idx, "list", "pods")


def test_a_cluster_role_binding_grants_everywhere() -> None:
    idx = index(cluster_role("pod-reader", rule(["get", "list", "watch"], ["pods"]),
                             rule(["get"], ["nodes"])),
                binding("b", None, "ClusterRole", "pod-reader", group("readers")))
    assert can(idx, "list", "pods", "shop", groups=("readers",))
    assert can(idx, "watch", "pods", "payments", groups=("readers",))
    assert can(idx, "list", "pods", "", groups=("readers",))
    assert can(idx, "get", "nodes", "", "n1", groups=("readers",))
    assert not can(idx, "list", "pods", "shop", groups=("writers",))
    decision = idx.authorize(Attributes("x", ("readers",), "get", True, "", "", "v1", "nodes",
                                        name="n1"))
    assert decision.reason == ('RBAC: allowed by ClusterRoleBinding "b" of ClusterRole '
                               '"pod-reader" to Group "readers"')


def test_a_cluster_role_binding_to_a_role_grants_nothing() -> None:
    idx = index(role("r", "shop", rule(["*"], ["*"])),
                binding("b", None, "Role", "r", user("alice")))
    assert not can(idx, "get", "pods", "shop", "p")


def test_service_account_subjects_default_to_the_binding_namespace() -> None:
    idx = index(role("r", "shop", rule(["list"], ["pods"])),
                role("r", "payments", rule(["list"], ["pods"])),
                binding("b", "shop", "Role", "r", service_account("robot")),
                binding("b", "payments", "Role", "r", service_account("robot", "shop")))
    assert can(idx, "list", "pods", "shop", who=SA, groups=SA_GROUPS)
    assert can(idx, "list", "pods", "payments", who=SA, groups=SA_GROUPS)
    # payments/robot is another account: the shop binding names shop's robot only.
    other = "system:serviceaccount:payments:robot"
    assert not can(idx, "list", "pods", "shop", who=other,
                   groups=service_account_groups("payments"))
    decision = idx.authorize(Attributes(SA, SA_GROUPS, "list", True, "shop", "", "v1", "pods"))
    assert decision.reason.endswith('to ServiceAccount "robot/shop"')


def test_service_account_groups_can_be_bound() -> None:
    idx = index(cluster_role("lister", rule(["list"], ["pods"])),
                binding("b", "shop", "ClusterRole", "lister",
                        group("system:serviceaccounts:shop")))
    assert can(idx, "list", "pods", "shop", who=SA, groups=SA_GROUPS)
    assert not can(idx, "list", "pods", "shop", who="system:serviceaccount:x:y",
                   groups=service_account_groups("x"))


def test_wildcards_in_verbs_groups_and_resources() -> None:
    idx = index(cluster_role("apps-all", rule(["*"], ["*"], ["apps"])),
                binding("b", None, "ClusterRole", "apps-all", user("alice")))
    assert can(idx, "delete", "deployments", "shop", "web", api_group="apps")
    assert can(idx, "patch", "deployments", "shop", "web", api_group="apps",
               subresource="scale")  # "*" covers subresources too
    assert not can(idx, "delete", "pods", "shop", "web")  # core group is not apps


def test_subresources_need_their_own_rules() -> None:
    idx = index(role("r", "shop", rule(["*"], ["pods"]),
                     rule(["get", "create"], ["pods/log", "pods/eviction"])),
                binding("b", "shop", "Role", "r", user("alice")))
    assert can(idx, "delete", "pods", "shop", "p")
    assert not can(idx, "create", "pods", "shop", "p", subresource="exec")
    assert not can(idx, "get", "pods", "shop", "p", subresource="status")
    assert can(idx, "get", "pods", "shop", "p", subresource="log")
    assert can(idx, "create", "pods", "shop", "p", subresource="eviction")


def test_star_slash_subresource_matches_that_subresource_of_any_resource() -> None:
    idx = index(role("r", "shop", rule(["get", "update"], ["*/scale"], ["apps"])),
                binding("b", "shop", "Role", "r", user("alice")))
    assert can(idx, "update", "deployments", "shop", "web", api_group="apps",
               subresource="scale")
    assert can(idx, "get", "statefulsets", "shop", "db", api_group="apps", subresource="scale")
    assert not can(idx, "get", "deployments", "shop", "web", api_group="apps")
    assert not can(idx, "get", "deployments", "shop", "web", api_group="apps",
                   subresource="status")


def test_resource_names_limit_a_rule_to_named_objects() -> None:
    idx = index(role("r", "shop", rule(["get", "update", "list"], ["configmaps"],
                                       names=["settings"])),
                binding("b", "shop", "Role", "r", user("alice")))
    assert can(idx, "get", "configmaps", "shop", "settings")
    assert can(idx, "update", "configmaps", "shop", "settings")
    assert not can(idx, "get", "configmaps", "shop", "other")
    assert not can(idx, "list", "configmaps", "shop")  # a list names no object
    assert can(idx, "list", "configmaps", "shop", "settings")  # fieldSelector metadata.name


def test_non_resource_urls_exact_prefix_and_star() -> None:
    idx = index(cluster_role("urls", {"nonResourceURLs": ["/healthz", "/logs/*"],
                                      "verbs": ["get"]}),
                cluster_role("all-urls", {"nonResourceURLs": ["*"], "verbs": ["*"]}),
                binding("b", None, "ClusterRole", "urls", user("alice")),
                binding("c", None, "ClusterRole", "all-urls", user("root")))
    assert can_path(idx, "/healthz")
    assert can_path(idx, "/logs/kubelet.log")
    assert not can_path(idx, "/logs")
    assert not can_path(idx, "/healthz", verb="post")
    assert not can_path(idx, "/metrics")
    assert can_path(idx, "/metrics", who="root", verb="post")
    # Non-resource rules never grant resources, and resource rules never grant paths.
    assert not can(idx, "get", "pods", "shop", "p", who="root")


def test_resource_rules_do_not_grant_paths() -> None:
    idx = index(cluster_role("all", rule(["*"], ["*"], ["*"])),
                binding("b", None, "ClusterRole", "all", user("alice")))
    assert can(idx, "delete", "nodes", "", "n1")
    assert not can_path(idx, "/version")


def test_system_masters_may_do_anything_even_without_bindings() -> None:
    idx = index()
    assert can(idx, "delete", "nodes", "", "n1", who="x", groups=("system:masters",))
    assert can_path(idx, "/anything", who="x", groups=("system:masters",), verb="post")


def test_the_index_follows_updates_and_deletes() -> None:
    idx = index(role("r", "shop", rule(["list"], ["pods"])),
                binding("b", "shop", "Role", "r", user("alice")))
    assert can(idx, "list", "pods", "shop")
    # The binding now names bob: alice loses the grant (no stale index entry).
    idx.observe("RoleBinding", "MODIFIED", binding("b", "shop", "Role", "r", user("bob")))
    assert not can(idx, "list", "pods", "shop")
    assert can(idx, "list", "pods", "shop", who="bob")
    # The role's rules change: the binding sees the new rules.
    idx.observe("Role", "MODIFIED", role("r", "shop", rule(["get"], ["pods"])))
    assert not can(idx, "list", "pods", "shop", who="bob")
    assert can(idx, "get", "pods", "shop", "p", who="bob")
    # The role goes: nothing is granted, and the reason says why.
    idx.observe("Role", "DELETED", role("r", "shop"))
    assert not can(idx, "get", "pods", "shop", "p", who="bob")
    idx.observe("RoleBinding", "DELETED", binding("b", "shop", "Role", "r"))
    assert idx.authorize(Attributes("bob", (), "get", True, "shop", "", "v1", "pods",
                                    name="p")).reason == ""


def test_a_missing_cluster_role_is_named_in_the_reason() -> None:
    idx = index(binding("b", None, "ClusterRole", "gone", user("alice")),
                binding("c", None, "ClusterRole", "also-gone", group("dev")))
    decision = idx.authorize(Attributes("alice", ("dev",), "get", True, "", "", "v1", "nodes"))
    assert decision == rbac.Decision(False, (
        'RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not found, '
        'clusterrole.rbac.authorization.k8s.io "also-gone" not found]'))


def test_only_bindings_naming_the_user_are_consulted() -> None:
    # 2,000 bindings for other users: a decision looks at the user's own bindings only.
    objects = [binding(f"b{i}", "shop", "ClusterRole", "missing", user(f"user-{i}"))
               for i in range(2000)]
    idx = index(*objects)
    calls = 0
    original = idx._rules_for_binding

    def counting(b: rbac.Binding) -> tuple[tuple[rbac.Rule, ...], str]:
        nonlocal calls
        calls += 1
        return original(b)

    idx._rules_for_binding = counting  # type: ignore[method-assign]
    assert not can(idx, "list", "pods", "shop", who="user-7")
    assert calls == 1


# ------------------------------------------------------------------------- bootstrap roles


def test_every_authenticated_user_may_discover_and_review_itself() -> None:
    idx = index(bootstrap=True)
    groups = ("system:authenticated",)
    for path in ("/api", "/api/v1", "/apis", "/apis/apps/v1", "/version", "/openapi/v3",
                 "/openapi/v3/api/v1", "/healthz", "/readyz", "/livez"):
        assert can_path(idx, path, groups=groups), path
    assert not can_path(idx, "/api", groups=())  # the binding is to system:authenticated
    assert not can_path(idx, "/metrics", groups=groups)
    for resource in ("selfsubjectaccessreviews", "selfsubjectrulesreviews"):
        assert can(idx, "create", resource, groups=groups, api_group="authorization.k8s.io")
    assert can(idx, "create", "selfsubjectreviews", groups=groups,
               api_group="authentication.k8s.io")
    assert not can(idx, "create", "subjectaccessreviews", groups=groups,
                   api_group="authorization.k8s.io")
    assert not can(idx, "create", "tokenreviews", groups=groups,
                   api_group="authentication.k8s.io")
    assert not can(idx, "list", "pods", "shop", groups=groups)


@pytest.mark.parametrize(("role_name", "allowed", "refused"), [
    ("view", [("list", "pods", "", ""), ("get", "deployments", "apps", "scale")],
     [("get", "secrets", "", ""), ("delete", "pods", "", ""), ("list", "roles", rbac.GROUP, "")]),
    ("edit", [("delete", "pods", "", ""), ("get", "secrets", "", ""),
              ("create", "pods", "", "exec"), ("get", "pods", "", "exec"),
              ("patch", "deployments", "apps", "scale"), ("create", "pods", "", "eviction"),
              ("create", "serviceaccounts", "", "token")],
     [("create", "roles", rbac.GROUP, ""), ("list", "nodes", "", "")]),
    ("admin", [("create", "rolebindings", rbac.GROUP, ""), ("delete", "pods", "", ""),
               ("create", "localsubjectaccessreviews", "authorization.k8s.io", "")],
     [("create", "clusterroles", rbac.GROUP, ""), ("delete", "namespaces", "", "")]),
    ("cluster-admin", [("delete", "namespaces", "", ""), ("create", "clusterroles",
                                                          rbac.GROUP, "")], []),
])
def test_default_cluster_roles_bound_in_a_namespace(
        role_name: str, allowed: list[tuple[str, str, str, str]],
        refused: list[tuple[str, str, str, str]]) -> None:
    idx = index(binding("b", "shop", "ClusterRole", role_name, user("alice")), bootstrap=True)
    for verb, resource, api_group, sub in allowed:
        assert can(idx, verb, resource, "shop", "x", api_group=api_group, subresource=sub), \
            (role_name, verb, resource, sub)
        assert not can(idx, verb, resource, "payments", "x", api_group=api_group,
                       subresource=sub), (role_name, verb, resource, sub)
    for verb, resource, api_group, sub in refused:
        assert not can(idx, verb, resource, "shop", "x", api_group=api_group,
                       subresource=sub), (role_name, verb, resource, sub)


def test_bootstrap_policy_names_the_real_defaults() -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in rbac.bootstrap_policy()}
    for name in ("cluster-admin", "admin", "edit", "view", "system:discovery",
                 "system:basic-user", "system:public-info-viewer"):
        assert ("ClusterRole", name) in names
    master = next(o for o in rbac.bootstrap_policy() if o["kind"] == "ClusterRoleBinding"
                  and o["metadata"]["name"] == "cluster-admin")
    assert master["subjects"] == [{"apiGroup": rbac.GROUP, "kind": "Group",
                                   "name": "system:masters"}]


def test_rules_review_lists_what_applies_in_the_namespace() -> None:
    idx = index(role("r", "shop", rule(["get"], ["pods"])),
                binding("b", "shop", "Role", "r", user("alice")), bootstrap=True)
    rules, error = idx.rules_for("alice", ("system:authenticated",), "shop")
    assert error == ""
    status = rbac.rules_review_status(rules, error)
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]} in status[
        "resourceRules"]
    assert any("/version" in r["nonResourceURLs"] for r in status["nonResourceRules"])
    other, _ = idx.rules_for("alice", ("system:authenticated",), "payments")
    assert rbac.Rule(("get",), ("",), ("pods",)) not in other


# ------------------------------------------------------------------------- request mapping


def attrs(method: str, path: str, **query: str) -> Attributes:
    return request_attributes("u", (), method, path, query)


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/namespaces/shop/pods", {}, ("list", "shop", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/shop/pods", {"watch": "1"},
     ("watch", "shop", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/shop/pods", {"watch": "true"},
     ("watch", "shop", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/shop/pods", {"watch": "false"},
     ("list", "shop", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/shop/pods/web-1", {}, ("get", "shop", "", "pods", "", "web-1")),
    ("GET", "/api/v1/namespaces/shop/pods/web-1", {"watch": "1"},
     ("get", "shop", "", "pods", "", "web-1")),
    ("GET", "/api/v1/pods", {}, ("list", "", "", "pods", "", "")),
    ("POST", "/api/v1/namespaces/shop/pods", {}, ("create", "shop", "", "pods", "", "")),
    ("PUT", "/api/v1/namespaces/shop/pods/p", {}, ("update", "shop", "", "pods", "", "p")),
    ("PATCH", "/api/v1/namespaces/shop/pods/p", {}, ("patch", "shop", "", "pods", "", "p")),
    ("DELETE", "/api/v1/namespaces/shop/pods/p", {}, ("delete", "shop", "", "pods", "", "p")),
    ("DELETE", "/api/v1/namespaces/shop/pods", {},
     ("deletecollection", "shop", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/shop/pods/p/exec", {"command": "ls"},
     ("get", "shop", "", "pods", "exec", "p")),
    ("POST", "/api/v1/namespaces/shop/pods/p/exec", {},
     ("create", "shop", "", "pods", "exec", "p")),
    ("POST", "/api/v1/namespaces/shop/pods/p/eviction", {},
     ("create", "shop", "", "pods", "eviction", "p")),
    ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale", {},
     ("patch", "shop", "apps", "deployments", "scale", "web")),
    ("POST", "/api/v1/namespaces/shop/serviceaccounts/robot/token", {},
     ("create", "shop", "", "serviceaccounts", "token", "robot")),
    # A namespace is addressed in itself: a RoleBinding there may grant reading it.
    ("GET", "/api/v1/namespaces/shop", {}, ("get", "shop", "", "namespaces", "", "shop")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "", "namespaces", "", "")),
    ("PUT", "/api/v1/namespaces/shop/status", {},
     ("update", "shop", "", "namespaces", "status", "shop")),
    ("GET", "/api/v1/nodes/n1", {}, ("get", "", "", "nodes", "", "n1")),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {},
     ("list", "", rbac.GROUP, "clusterroles", "", "")),
    # kubectl get pod NAME -w lists with a field selector on the name.
    ("GET", "/api/v1/namespaces/shop/pods", {"watch": "1", "fieldSelector": "metadata.name=p"},
     ("watch", "shop", "", "pods", "", "p")),
    ("GET", "/api/v1/namespaces/shop/pods", {"fieldSelector": "metadata.name!=p"},
     ("list", "shop", "", "pods", "", "")),
    ("GET", "/api/v1/watch/namespaces/shop/pods", {}, ("watch", "shop", "", "pods", "", "")),
    # Paths are split as the server routes them.
    ("GET", "/api/v1//namespaces/shop/pods/", {}, ("list", "shop", "", "pods", "", "")),
])
def test_request_attributes_like_kube_apiserver(method: str, path: str, query: dict[str, str],
                                                expected: tuple[str, ...]) -> None:
    got = attrs(method, path, **query)
    assert got.resource_request
    assert (got.verb, got.namespace, got.api_group, got.resource, got.subresource,
            got.name) == expected


@pytest.mark.parametrize(("method", "path", "verb"), [
    ("GET", "/api", "get"), ("GET", "/api/v1", "get"), ("GET", "/apis", "get"),
    ("GET", "/apis/apps", "get"), ("GET", "/apis/apps/v1", "get"), ("GET", "/version", "get"),
    ("GET", "/openapi/v3/apis/apps/v1", "get"), ("POST", "/_sim/faults", "post"),
    ("DELETE", "/metrics", "delete"),
])
def test_non_resource_requests(method: str, path: str, verb: str) -> None:
    got = attrs(method, path)
    assert not got.resource_request
    assert (got.verb, got.path) == (verb, path)


def test_websocket_exec_also_needs_create() -> None:
    assert rbac.needs_connect_create(attrs("GET", "/api/v1/namespaces/s/pods/p/exec"))
    assert rbac.needs_connect_create(attrs("GET", "/api/v1/namespaces/s/pods/p/attach"))
    assert rbac.needs_connect_create(attrs("GET", "/api/v1/namespaces/s/pods/p/portforward"))
    assert not rbac.needs_connect_create(attrs("POST", "/api/v1/namespaces/s/pods/p/exec"))
    assert not rbac.needs_connect_create(attrs("GET", "/api/v1/namespaces/s/pods/p/log"))


# ------------------------------------------------------------------------- 403 wording


def forbidden(method: str, path: str, who: str = SA, **query: str) -> ApiError:
    return rbac.forbidden(request_attributes(who, (), method, path, query))


def test_forbidden_wording_of_an_object() -> None:
    error = forbidden("DELETE", "/api/v1/namespaces/shop/pods/web-1",
                      who="system:serviceaccount:pystol:worker")
    assert error.status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "web-1" is forbidden: User "system:serviceaccount:pystol:worker" '
                   'cannot delete resource "pods" in API group "" in the namespace "shop"',
        "reason": "Forbidden", "details": {"name": "web-1", "kind": "pods"}, "code": 403}


def test_forbidden_wording_of_collections_cluster_scope_groups_and_subresources() -> None:
    assert forbidden("GET", "/api/v1/namespaces/shop/pods").message == (
        f'pods is forbidden: User "{SA}" cannot list resource "pods" in API group "" in the '
        'namespace "shop"')
    assert forbidden("GET", "/api/v1/nodes").message == (
        f'nodes is forbidden: User "{SA}" cannot list resource "nodes" in API group "" at the '
        "cluster scope")
    error = forbidden("POST", "/api/v1/namespaces/shop/pods/web-1/eviction")
    assert error.message == (
        f'pods "web-1" is forbidden: User "{SA}" cannot create resource "pods/eviction" in '
        'API group "" in the namespace "shop"')
    error = forbidden("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale")
    assert error.message == (
        f'deployments.apps "web" is forbidden: User "{SA}" cannot patch resource '
        '"deployments/scale" in API group "apps" in the namespace "shop"')
    assert error.details == {"name": "web", "group": "apps", "kind": "deployments"}
    assert forbidden("POST", "/_sim/faults").message == (
        f'forbidden: User "{SA}" cannot post path "/_sim/faults"')
    reasoned = rbac.forbidden(attrs("GET", "/api/v1/namespaces/shop/pods"),
                              'RBAC: role.rbac.authorization.k8s.io "r" not found')
    assert reasoned.message.endswith(
        'in the namespace "shop": RBAC: role.rbac.authorization.k8s.io "r" not found')


# ------------------------------------------------------------------------- reviews


def test_review_attributes_validation() -> None:
    spec = {"resourceAttributes": {"namespace": "shop", "verb": "get", "resource": "pods",
                                   "subresource": "log", "name": "p", "group": ""}}
    got = rbac.review_attributes("alice", (), spec, "SubjectAccessReview")
    assert (got.verb, got.namespace, got.combined_resource, got.name) == (
        "get", "shop", "pods/log", "p")
    path = rbac.review_attributes("alice", (), {"nonResourceAttributes": {
        "path": "/version", "verb": "get"}}, "SubjectAccessReview")
    assert (path.resource_request, path.path) == (False, "/version")
    with pytest.raises(ApiError) as both:
        rbac.review_attributes("a", (), {**spec, "nonResourceAttributes": {}}, "X")
    assert both.value.code == 422
    with pytest.raises(ApiError) as neither:
        rbac.review_attributes("a", (), {}, "X")
    assert neither.value.code == 422
    local = rbac.review_attributes("a", (), {"resourceAttributes": {"verb": "get"}},
                                   "LocalSubjectAccessReview", "shop")
    assert local.namespace == "shop"
    with pytest.raises(ApiError) as elsewhere:
        rbac.review_attributes("a", (), spec, "LocalSubjectAccessReview", "payments")
    assert elsewhere.value.code == 400


# ------------------------------------------------------------------------- authentication


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def sa_object(name: str = "robot", namespace: str = "shop", uid: str = "uid-1"
              ) -> dict[str, Any]:
    return {"kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace,
                                                   "uid": uid}}


def test_admin_and_static_users() -> None:
    authn = Authenticator("admin-token")
    assert authn.authenticate("admin-token").user == ADMIN
    alice = authn.add_user("alice", "alice-token", ["dev"])
    assert alice.groups == ("dev", "system:authenticated")
    assert authn.authenticate("alice-token").user == alice
    assert authn.authenticate("nope").user is None
    assert authn.authenticate("nope").error == "invalid bearer token"
    assert authn.user_for_header("Bearer alice-token") == alice
    assert authn.user_for_header("bearer alice-token") == alice
    assert authn.user_for_header("Basic alice-token") is None
    assert authn.user_for_header("") is None
    with pytest.raises(AuthError):
        authn.add_user("mallory", "admin-token")  # cannot take over the admin's token
    for bad in ({"name": "", "token": "t"}, {"name": "x", "token": ""},
                {"name": "x", "token": "has space"}, {"name": "x", "token": "t", "groups": "g"},
                {"name": "x", "token": "t", "groups": [""]}):
        with pytest.raises(AuthError):
            authn.add_user(**bad)
    assert authn.remove_user("alice") == 1
    assert authn.authenticate("alice-token").user is None


def test_service_account_tokens_expire() -> None:
    clock = Clock()
    authn = Authenticator("admin", clock)
    authn.observe_service_account("ADDED", sa_object())
    token, _ = authn.issue_service_account_token("shop", "robot", "uid-1", 600)
    assert token != "admin" and len(token) >= 40
    user = authn.authenticate(token).user
    assert user is not None
    assert user.username == SA
    assert user.uid == "uid-1"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:shop",
                           "system:authenticated")
    clock.now += 599
    assert authn.authenticate(token).user is not None
    clock.now += 1
    result = authn.authenticate(token)
    assert result.user is None
    assert "expired" in result.error


def test_service_account_tokens_die_with_their_account() -> None:
    authn = Authenticator("admin")
    authn.observe_service_account("ADDED", sa_object())
    token, _ = authn.issue_service_account_token("shop", "robot", "uid-1", 3600)
    authn.observe_service_account("DELETED", sa_object())
    assert authn.authenticate(token).user is None
    assert authn.authenticate(token).error == \
        '[invalid bearer token, serviceaccounts "robot" not found]'
    # A new account of the same name is another account: the old token stays dead.
    authn.observe_service_account("ADDED", sa_object(uid="uid-2"))
    assert authn.authenticate(token).user is None
    assert "does not match" in authn.authenticate(token).error
    # An account being deleted (deletionTimestamp set) no longer authenticates either.
    fresh, _ = authn.issue_service_account_token("shop", "robot", "uid-2", 3600)
    assert authn.authenticate(fresh).user is not None
    terminating = sa_object(uid="uid-2")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    authn.observe_service_account("MODIFIED", terminating)
    assert authn.authenticate(fresh).user is None


def test_service_account_token_audiences() -> None:
    authn = Authenticator("admin")
    authn.observe_service_account("ADDED", sa_object())
    api_token, _ = authn.issue_service_account_token("shop", "robot", "uid-1", 3600)
    vault_token, _ = authn.issue_service_account_token("shop", "robot", "uid-1", 3600,
                                                       ["vault"])
    assert authn.authenticate(api_token).audiences == (API_AUDIENCE,)
    assert authn.user_for_header(f"Bearer {vault_token}") is None  # not for the API server
    assert authn.authenticate(vault_token, ["vault"]).user is not None
    assert authn.authenticate(api_token, ["vault"]).user is None


def test_expired_tokens_are_pruned() -> None:
    clock = Clock()
    authn = Authenticator("admin", clock)
    authn.observe_service_account("ADDED", sa_object())
    for _ in range(200):
        authn.issue_service_account_token("shop", "robot", "uid-1", 600)
    clock.now += 601
    for _ in range(200):
        authn.issue_service_account_token("shop", "robot", "uid-1", 600)
    assert len(authn._sa_tokens) < 400


# ------------------------------------------------------------------------- scenario users


BASE = "nodes: [{name: n1}]\n"


def test_scenario_users() -> None:
    scenario = parse_scenario(BASE + "users:\n  - {name: alice, token: a-token, groups: [dev]}\n"
                              "  - {name: bob, token: b-token}\n")
    assert [(u.name, u.token, u.groups) for u in scenario.users] == [
        ("alice", "a-token", ["dev"]), ("bob", "b-token", [])]
    assert parse_scenario(BASE).users == []


@pytest.mark.parametrize(("users", "path", "message"), [
    ("[{name: alice}]", "users[0].token", "required field is missing"),
    ("[{name: alice, token: 'a b'}]", "users[0].token", "printable ASCII"),
    ("[{name: alice, token: t, group: [dev]}]", "users[0].group", "did you mean 'groups'"),
    ("[{name: ' ', token: t}]", "users[0].name", "non-empty"),
    ("[{name: a, token: t}, {name: b, token: t}]", "users[1].token", "same token as users[0]"),
    ("[{name: a, token: t}, {name: a, token: u}]", "users[1].name", "declared twice"),
])
def test_scenario_users_are_validated(users: str, path: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(BASE + f"users: {users}\n", "s.yaml")
    problems = caught.value.problems
    assert any(p.path == path and message in p.message for p in problems), problems
    assert "a b'" not in str(caught.value)  # a rejected token is not echoed


# ------------------------------------------------------------------------- protobuf bodies
# kubectl's typed commands (create sa|role|rolebinding|token, auth can-i|whoami) send
# protobuf; the encoder below writes what Go's marshallers write.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _len(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return b"k8s\x00" + _len(1, _len(1, api_version) + _len(2, kind)) + _len(2, raw)


def test_protobuf_token_request_role_binding_and_access_review() -> None:
    token_request = decode_object(_envelope(
        "authentication.k8s.io/v1", "TokenRequest",
        _len(1, _len(1, "robot")) + _len(2, _len(1, "api") + _varint(4 << 3) + _varint(900))))
    assert token_request["spec"] == {"audiences": ["api"], "expirationSeconds": 900}
    role_binding = decode_object(_envelope(
        RBAC_V1, "RoleBinding",
        _len(1, _len(1, "b") + _len(3, "shop"))
        + _len(2, _len(1, "ServiceAccount") + _len(2, "") + _len(3, "robot") + _len(4, "shop"))
        + _len(3, _len(1, rbac.GROUP) + _len(2, "Role") + _len(3, "r"))))
    assert role_binding["subjects"] == [{"kind": "ServiceAccount", "name": "robot",
                                         "namespace": "shop"}]
    assert role_binding["roleRef"] == {"apiGroup": rbac.GROUP, "kind": "Role", "name": "r"}
    role_obj = decode_object(_envelope(
        RBAC_V1, "Role", _len(1, _len(1, "r")) + _len(2, _len(1, "get") + _len(2, "")
                                                     + _len(3, "pods"))))
    assert role_obj["rules"] == [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]
    review = decode_object(_envelope(
        "authorization.k8s.io/v1", "SelfSubjectAccessReview",
        _len(1, b"") + _len(2, _len(1, _len(1, "shop") + _len(2, "list") + _len(5, "pods")))))
    assert review["spec"] == {"resourceAttributes": {"namespace": "shop", "verb": "list",
                                                     "resource": "pods"}}
