"""What a user may do: the sim's RBAC authorizer, evaluated like kube-apiserver's.

Pure (no HTTP): the server hands in the RBAC objects it stores (`RbacIndex.observe`,
called for every write of a Role, ClusterRole, RoleBinding or ClusterRoleBinding) and
one `Attributes` per request (`request_attributes`, which maps method, path and query
the way kube-apiserver's RequestInfo does), and gets a `Decision`.

Semantics follow `k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac`:

- ClusterRoleBindings grant their role's rules everywhere; RoleBindings only in their
  own namespace (roleRef to a Role of that namespace, or to a ClusterRole, whose rules
  then apply in that namespace only).
- Subjects: `User` (the username), `Group` (one of the user's groups) and
  `ServiceAccount` (the user `system:serviceaccount:NS:NAME`; NS defaults to the
  binding's namespace).
- A rule matches a resource request when verb (`*`), apiGroup (`*`), resource (`*`,
  `pods`, `pods/exec`, `*/scale`) and resourceNames (empty: any) all match; a
  non-resource request (`/version`, `/apis/...`) when verb and nonResourceURLs (`*`,
  exact, or a `prefix*`) match. Nothing matches: denied.
- Members of `system:masters` are allowed everything before RBAC is consulted (the
  privileged-group authorizer kube-apiserver puts in front of it).

Bindings are indexed by subject, so a decision looks at the bindings of the user and its
groups only, never at every binding. The bootstrap policy a real cluster starts with is
in `bootstrap_policy()` (see the README for which roles are approximations).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pystol_sim.authn import AUTHENTICATED, MASTERS, service_account_username
from pystol_sim.errors import ApiError, bad_request, invalid
from pystol_sim.selectors import SelectorError, parse_field_selector

GROUP = "rbac.authorization.k8s.io"
KINDS = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})
UNAUTHENTICATED = "system:unauthenticated"
# Values of `?watch=` that make a GET on a collection a watch (the server uses the same).
WATCH_TRUE = ("true", "1")
# Pod subresources whose WebSocket upgrade (a GET) also needs `create` (Kubernetes 1.35,
# feature gate AuthorizePodWebsocketUpgradeCreatePermission, on by default).
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})

_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_VERBS_BY_METHOD = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
                    "PATCH": "patch", "DELETE": "delete"}


# ------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Rule:
    """One PolicyRule."""

    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, rule: Any) -> Rule:
        if not isinstance(rule, Mapping):
            return cls()

        def strings(key: str) -> tuple[str, ...]:
            values = rule.get(key) or ()
            return tuple(v for v in values if isinstance(v, str)) if isinstance(
                values, list) else ()

        return cls(strings("verbs"), strings("apiGroups"), strings("resources"),
                   strings("resourceNames"), strings("nonResourceURLs"))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"verbs": list(self.verbs)}
        if self.non_resource_urls:
            body["nonResourceURLs"] = list(self.non_resource_urls)
        else:
            body["apiGroups"] = list(self.api_groups)
            body["resources"] = list(self.resources)
            if self.resource_names:
                body["resourceNames"] = list(self.resource_names)
        return body


@dataclass(frozen=True)
class Subject:
    kind: str  # User, Group or ServiceAccount
    name: str
    namespace: str = ""

    def key(self, binding_namespace: str) -> tuple[str, str] | None:
        """The identity this subject names: ("User", username) or ("Group", group)."""
        if self.kind == "User":
            return ("User", self.name)
        if self.kind == "Group":
            return ("Group", self.name)
        if self.kind == "ServiceAccount":
            return ("User", service_account_username(self.namespace or binding_namespace,
                                                     self.name))
        return None

    def describe(self, binding_namespace: str) -> str:
        if self.kind == "ServiceAccount":
            return f'{self.kind} "{self.name}/{self.namespace or binding_namespace}"'
        return f'{self.kind} "{self.name}"'


@dataclass(frozen=True)
class Binding:
    """A RoleBinding (namespace set) or ClusterRoleBinding (namespace "")."""

    namespace: str
    name: str
    role_kind: str
    role_name: str
    subjects: tuple[Subject, ...]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Binding:
        meta = obj.get("metadata") or {}
        ref = obj.get("roleRef") or {}
        subjects = []
        for subject in obj.get("subjects") or ():
            if isinstance(subject, Mapping):
                subjects.append(Subject(str(subject.get("kind", "")),
                                        str(subject.get("name", "")),
                                        str(subject.get("namespace") or "")))
        return cls(str(meta.get("namespace") or ""), str(meta.get("name", "")),
                   str(ref.get("kind", "")), str(ref.get("name", "")), tuple(subjects))

    def subject_for(self, user: str, groups: Sequence[str]) -> Subject | None:
        """The first subject that names this user (or one of its groups)."""
        for subject in self.subjects:
            key = subject.key(self.namespace)
            if key == ("User", user) or (key is not None and key[0] == "Group"
                                         and key[1] in groups):
                return subject
        return None

    def describe(self, subject: Subject) -> str:
        if self.namespace:
            what = f'RoleBinding "{self.name}/{self.namespace}"'
        else:
            what = f'ClusterRoleBinding "{self.name}"'
        return f'{what} of {self.role_kind} "{self.role_name}" to ' \
               f'{subject.describe(self.namespace)}'


@dataclass(frozen=True)
class Attributes:
    """What one request (or access review) asks to do, as kube-apiserver sees it."""

    user: str
    groups: tuple[str, ...]
    verb: str
    resource_request: bool
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


# ------------------------------------------------------------------------- matching


def _resource_matches(rule: Rule, combined: str, subresource: str) -> bool:
    for resource in rule.resources:
        if resource in ("*", combined):
            return True
        if subresource and resource == f"*/{subresource}":
            return True
    return False


def _url_matches(rule: Rule, path: str) -> bool:
    for url in rule.non_resource_urls:
        if url in ("*", path):
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Rule) -> bool:
    """Does this one rule allow the request (rbac's RuleAllows)?"""
    if "*" not in rule.verbs and attrs.verb not in rule.verbs:
        return False
    if not attrs.resource_request:
        return _url_matches(rule, attrs.path)
    return (("*" in rule.api_groups or attrs.api_group in rule.api_groups)
            and _resource_matches(rule, attrs.combined_resource, attrs.subresource)
            and (not rule.resource_names or attrs.name in rule.resource_names))


# ------------------------------------------------------------------------- the index


def _rules_of(obj: Mapping[str, Any]) -> tuple[Rule, ...]:
    rules = obj.get("rules") or ()
    return tuple(Rule.from_json(rule) for rule in rules) if isinstance(rules, list) else ()


class RbacIndex:
    """The RBAC objects the cluster stores, indexed for authorization."""

    def __init__(self) -> None:
        self._roles: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self._cluster_roles: dict[str, tuple[Rule, ...]] = {}
        self._bindings: dict[tuple[str, str], Binding] = {}  # (namespace or "", name)
        # (binding namespace or "", "User"/"Group", name) -> keys of bindings naming it
        self._by_subject: dict[tuple[str, str, str], set[tuple[str, str]]] = {}

    def load(self, objects: Iterable[Mapping[str, Any]]) -> None:
        for obj in objects:
            self.observe(str(obj.get("kind", "")), "ADDED", obj)

    def observe(self, kind: str, event: str, obj: Mapping[str, Any]) -> None:
        """A Role, ClusterRole, RoleBinding or ClusterRoleBinding was written (or deleted)."""
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        namespace = str(meta.get("namespace") or "")
        gone = event == "DELETED"
        if kind == "Role":
            if gone:
                self._roles.pop((namespace, name), None)
            else:
                self._roles[(namespace, name)] = _rules_of(obj)
        elif kind == "ClusterRole":
            if gone:
                self._cluster_roles.pop(name, None)
            else:
                self._cluster_roles[name] = _rules_of(obj)
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            key = (namespace if kind == "RoleBinding" else "", name)
            self._unindex(key)
            if not gone:
                binding = Binding.from_json(obj)
                if kind == "ClusterRoleBinding":
                    binding = Binding("", binding.name, binding.role_kind, binding.role_name,
                                      binding.subjects)
                self._bindings[key] = binding
                for subject in binding.subjects:
                    ident = subject.key(binding.namespace)
                    if ident is not None:
                        self._by_subject.setdefault((key[0], *ident), set()).add(key)

    def _unindex(self, key: tuple[str, str]) -> None:
        old = self._bindings.pop(key, None)
        if old is None:
            return
        for subject in old.subjects:
            ident = subject.key(old.namespace)
            if ident is None:
                continue
            index_key = (key[0], *ident)
            keys = self._by_subject.get(index_key)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_subject[index_key]

    # -- evaluation -----------------------------------------------------------------------------

    def _applicable(self, user: str, groups: Sequence[str], namespace: str
                    ) -> Iterator[tuple[Binding, Subject]]:
        """ClusterRoleBindings, then the namespace's RoleBindings, that name the user."""
        idents = [("User", user), *(("Group", group) for group in groups)]
        for scope in ("", namespace) if namespace else ("",):
            keys: set[tuple[str, str]] = set()
            for ident in idents:
                keys.update(self._by_subject.get((scope, *ident), ()))
            for key in sorted(keys):
                binding = self._bindings[key]
                subject = binding.subject_for(user, groups)
                if subject is not None:
                    yield binding, subject

    def _rules_for_binding(self, binding: Binding) -> tuple[tuple[Rule, ...], str]:
        if binding.role_kind == "ClusterRole":
            rules = self._cluster_roles.get(binding.role_name)
            if rules is None:
                return (), f'clusterrole.{GROUP} "{binding.role_name}" not found'
            return rules, ""
        if binding.role_kind == "Role":
            rules = self._roles.get((binding.namespace, binding.role_name))
            if rules is None:
                return (), f'role.{GROUP} "{binding.role_name}" not found'
            return rules, ""
        return (), f'unsupported role reference kind: "{binding.role_kind}"'

    def authorize(self, attrs: Attributes) -> Decision:
        if MASTERS in attrs.groups:
            return Decision(True)
        errors: list[str] = []
        for binding, subject in self._applicable(attrs.user, attrs.groups, attrs.namespace):
            rules, error = self._rules_for_binding(binding)
            if error:
                errors.append(error)
            for rule in rules:
                if rule_allows(attrs, rule):
                    return Decision(True, f"RBAC: allowed by {binding.describe(subject)}")
        return Decision(False, _errors_reason(errors))

    def rules_for(self, user: str, groups: Sequence[str], namespace: str
                  ) -> tuple[list[Rule], str]:
        """Every rule that applies to the user in `namespace` (SelfSubjectRulesReview)."""
        rules: list[Rule] = []
        errors: list[str] = []
        if MASTERS in groups:
            rules += [Rule(("*",), ("*",), ("*",)), Rule(("*",), non_resource_urls=("*",))]
        for binding, _ in self._applicable(user, groups, namespace):
            found, error = self._rules_for_binding(binding)
            if error:
                errors.append(error)
            rules.extend(found)
        return rules, _errors_reason(errors)


def _errors_reason(errors: list[str]) -> str:
    if not errors:
        return ""
    return "RBAC: " + (errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")


# ------------------------------------------------------------------------- requests


def is_watch(query: Mapping[str, str]) -> bool:
    return query.get("watch") in WATCH_TRUE


def request_attributes(user: str, groups: tuple[str, ...], method: str, path: str,
                       query: Mapping[str, str]) -> Attributes:
    """A request's attributes, as kube-apiserver's RequestInfoFactory derives them.

    Paths are split like the server routes them (empty segments and a trailing slash
    dropped), so what is authorized is what is served.
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis"
                                                             and len(parts) < 4):
        return Attributes(user, groups, method.lower(), False, path=path)
    group = parts[1] if parts[0] == "apis" else ""
    rest = parts[2:] if parts[0] == "apis" else parts[1:]
    version, rest = rest[0], rest[1:]
    if rest[0] in _SPECIAL_VERBS and len(rest) >= 2:
        verb, rest = rest[0], rest[1:]
    else:
        verb = _VERBS_BY_METHOD.get(method.upper(), "")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if is_watch(query) else "list"
        name = _name_from_field_selector(query.get("fieldSelector", ""))
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(user, groups, verb, True, namespace, group, version, resource,
                      subresource, name, path)


def _name_from_field_selector(text: str) -> str:
    """`metadata.name=NAME` in a list's field selector names the object (resourceNames)."""
    if not text:
        return ""
    try:
        selector = parse_field_selector(text)
    except SelectorError:
        return ""
    for requirement in selector.requirements:
        if requirement.field == "metadata.name" and requirement.operator == "=":
            return str(requirement.value)
    return ""


def needs_connect_create(attrs: Attributes) -> bool:
    """A GET on pods/exec, attach or portforward: Kubernetes 1.35 also wants `create`."""
    return (attrs.resource_request and attrs.verb == "get" and attrs.api_group == ""
            and attrs.resource == "pods" and attrs.subresource in CONNECT_SUBRESOURCES)


def forbidden(attrs: Attributes, reason: str = "") -> ApiError:
    """The 403 a real API server answers, word for word."""
    if not attrs.resource_request:
        message = f'forbidden: User "{attrs.user}" cannot {attrs.verb} path "{attrs.path}"'
        return ApiError(403, f"{message}: {reason}" if reason else message)
    what = f'User "{attrs.user}" cannot {attrs.verb} resource "{attrs.combined_resource}" ' \
           f'in API group "{attrs.api_group}" '
    what += f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    if reason:
        what += f": {reason}"
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    details: dict[str, Any] = {}
    if attrs.name:
        details["name"] = attrs.name
        message = f'{qualified} "{attrs.name}" is forbidden: {what}'
    else:
        message = f"{qualified} is forbidden: {what}"
    if attrs.api_group:
        details["group"] = attrs.api_group
    details["kind"] = attrs.resource
    return ApiError(403, message, details=details)


# ------------------------------------------------------------------------- reviews


def review_attributes(user: str, groups: tuple[str, ...], spec: Mapping[str, Any],
                      kind: str, namespace: str | None = None) -> Attributes:
    """The attributes a (Self|Local)SubjectAccessReview spec asks about; 422 if invalid.

    `namespace` is the URL's namespace of a LocalSubjectAccessReview, which must be the
    namespace the review asks about."""
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None) or not isinstance(
            resource if resource is not None else non_resource, Mapping):
        raise invalid(kind, "", [("spec.resourceAttributes", "Invalid value: exactly one of "
                                  "nonResourceAttributes or resourceAttributes must be "
                                  "specified")], "authorization.k8s.io")
    if non_resource is not None:
        if namespace is not None:
            raise invalid(kind, "", [("spec.nonResourceAttributes", "Invalid value: "
                                      "disallowed on this kind of request")],
                          "authorization.k8s.io")
        return Attributes(user, groups, str(non_resource.get("verb") or ""), False,
                          path=str(non_resource.get("path") or ""))
    assert isinstance(resource, Mapping)
    ns = str(resource.get("namespace") or "")
    if namespace is not None:
        if ns and ns != namespace:
            raise bad_request(f"spec.resourceAttributes.namespace must match namespace: "
                              f"{namespace}")
        ns = namespace
    return Attributes(user, groups, str(resource.get("verb") or ""), True, ns,
                      str(resource.get("group") or ""), str(resource.get("version") or ""),
                      str(resource.get("resource") or ""),
                      str(resource.get("subresource") or ""), str(resource.get("name") or ""))


def review_status(decision: Decision) -> dict[str, Any]:
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    return status


def rules_review_status(rules: list[Rule], error: str) -> dict[str, Any]:
    status: dict[str, Any] = {
        "resourceRules": [rule.to_json() for rule in rules if not rule.non_resource_urls],
        "nonResourceRules": [rule.to_json() for rule in rules if rule.non_resource_urls],
        "incomplete": bool(error)}
    if error:
        status["evaluationError"] = error
    return status


# ------------------------------------------------------------------------- bootstrap

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "patch", "update")


def _rule(verbs: Sequence[str], group: str, *resources: str) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}


_VIEW = [
    _rule(READ, "", "pods", "pods/log", "pods/status", "replicationcontrollers",
          "replicationcontrollers/scale", "replicationcontrollers/status", "serviceaccounts",
          "services", "services/status", "endpoints", "persistentvolumeclaims",
          "persistentvolumeclaims/status", "configmaps", "bindings", "events", "limitranges",
          "resourcequotas", "resourcequotas/status", "namespaces", "namespaces/status"),
    _rule(READ, "apps", "controllerrevisions", "daemonsets", "daemonsets/status",
          "deployments", "deployments/scale", "deployments/status", "replicasets",
          "replicasets/scale", "replicasets/status", "statefulsets", "statefulsets/scale",
          "statefulsets/status"),
    _rule(READ, "autoscaling", "horizontalpodautoscalers", "horizontalpodautoscalers/status"),
    _rule(READ, "batch", "cronjobs", "cronjobs/status", "jobs", "jobs/status"),
    _rule(READ, "policy", "poddisruptionbudgets", "poddisruptionbudgets/status"),
    _rule(READ, "networking.k8s.io", "ingresses", "ingresses/status", "networkpolicies"),
    _rule(READ, "discovery.k8s.io", "endpointslices"),
]
_EDIT = [
    *_VIEW,
    _rule(READ, "", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets",
          "services/proxy"),
    _rule(("impersonate",), "", "serviceaccounts"),
    _rule(WRITE, "", "pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"),
    _rule(("create",), "", "pods/eviction"),
    _rule(WRITE, "", "configmaps", "events", "persistentvolumeclaims",
          "replicationcontrollers", "replicationcontrollers/scale", "secrets",
          "serviceaccounts", "services", "services/proxy"),
    _rule(("create",), "", "serviceaccounts/token"),
    _rule(WRITE, "apps", "daemonsets", "deployments", "deployments/rollback",
          "deployments/scale", "replicasets", "replicasets/scale", "statefulsets",
          "statefulsets/scale"),
    _rule(WRITE, "autoscaling", "horizontalpodautoscalers"),
    _rule(WRITE, "batch", "cronjobs", "jobs"),
    _rule(WRITE, "networking.k8s.io", "ingresses", "networkpolicies"),
    _rule(WRITE, "policy", "poddisruptionbudgets"),
]
_ADMIN = [
    *_EDIT,
    _rule(("create",), "authorization.k8s.io", "localsubjectaccessreviews"),
    _rule((*READ, *WRITE), GROUP, "roles", "rolebindings"),
]
_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                   "/openapi/*", "/readyz", "/version", "/version/"]

BOOTSTRAP_CLUSTER_ROLES: dict[str, list[dict[str, Any]]] = {
    "cluster-admin": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                      {"nonResourceURLs": ["*"], "verbs": ["*"]}],
    "admin": _ADMIN,
    "edit": _EDIT,
    "view": _VIEW,
    "system:discovery": [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}],
    "system:basic-user": [
        _rule(("create",), "authentication.k8s.io", "selfsubjectreviews"),
        _rule(("create",), "authorization.k8s.io", "selfsubjectaccessreviews",
              "selfsubjectrulesreviews")],
    "system:public-info-viewer": [{"nonResourceURLs": _PUBLIC_URLS, "verbs": ["get"]}],
    "system:auth-delegator": [
        _rule(("create",), "authentication.k8s.io", "tokenreviews"),
        _rule(("create",), "authorization.k8s.io", "subjectaccessreviews")],
}
BOOTSTRAP_CLUSTER_ROLE_BINDINGS: dict[str, list[str]] = {  # name (= role) -> groups
    "cluster-admin": [MASTERS],
    "system:discovery": [AUTHENTICATED],
    "system:basic-user": [AUTHENTICATED],
    "system:public-info-viewer": [AUTHENTICATED, UNAUTHENTICATED],
}


def bootstrap_policy() -> list[dict[str, Any]]:
    """The ClusterRoles and ClusterRoleBindings every cluster starts with (manifests).

    `cluster-admin`, the `system:` roles and all bindings are as on a real cluster;
    `admin`, `edit` and `view` approximate the real aggregated roles: the same rules for
    the resources the sim serves (and the common ones it does not), no aggregation."""
    meta = {"labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}
    out: list[dict[str, Any]] = []
    for name, rules in BOOTSTRAP_CLUSTER_ROLES.items():
        out.append({"apiVersion": f"{GROUP}/v1", "kind": "ClusterRole",
                    "metadata": {"name": name, **_copy(meta)}, "rules": _copy(rules)})
    for name, groups in BOOTSTRAP_CLUSTER_ROLE_BINDINGS.items():
        out.append({"apiVersion": f"{GROUP}/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": name, **_copy(meta)},
                    "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
                    "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": group}
                                 for group in groups]})
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


__all__ = [
    "BOOTSTRAP_CLUSTER_ROLES",
    "GROUP",
    "KINDS",
    "Attributes",
    "Binding",
    "Decision",
    "RbacIndex",
    "Rule",
    "Subject",
    "bootstrap_policy",
    "forbidden",
    "is_watch",
    "needs_connect_create",
    "request_attributes",
    "review_attributes",
    "rule_allows",
    "rules_review_status",
]
