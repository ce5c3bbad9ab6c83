"""The resource types the simulated API server knows, built-in and CRD-defined.

Discovery, routing, OpenAPI and Table output all read this one catalogue, so a
resource exists everywhere at once or nowhere. CRDs add entries at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class PrinterColumn:
    """One column of `kubectl get` output (a CRD's additionalPrinterColumns entry)."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "eviction", "exec", "log", "token"
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    # A CRD's validation schema (openAPIV3Schema), None for built-ins.
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    # False for create-only kinds that are answered, never stored (TokenReview,
    # SubjectAccessReview, ...): discovery lists them, the server computes the answer.
    stored: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Stable storage key: `group/plural` (`/pods` for the core group)."""
        return f"{self.group}/{self.plural}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    def path(self, namespace: str | None, name: str | None = None) -> str:
        """The URL path of a collection or an object of this type."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            prefix += f"/namespaces/{namespace}"
        prefix += f"/{self.plural}"
        return f"{prefix}/{name}" if name else prefix


# Create-only kinds the server answers without storing: (group, plural, kind, namespaced).
REVIEW_KINDS: tuple[tuple[str, str, str, bool], ...] = (
    ("authentication.k8s.io", "tokenreviews", "TokenReview", False),
    ("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview", False),
    ("authorization.k8s.io", "subjectaccessreviews", "SubjectAccessReview", False),
    ("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False),
    ("authorization.k8s.io", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False),
    ("authorization.k8s.io", "localsubjectaccessreviews", "LocalSubjectAccessReview", True),
)


def _core(plural: str, kind: str, namespaced: bool, short: tuple[str, ...] = (),
          sub: tuple[str, ...] = (), verbs: tuple[str, ...] = ALL_VERBS) -> ResourceType:
    return ResourceType("", "v1", plural, kind, namespaced, short_names=short,
                        subresources=sub, verbs=verbs)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", False, ("ns",), ("status",),
          verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _core("nodes", "Node", False, ("no",), ("status",)),
    _core("pods", "Pod", True, ("po",), ("status", "eviction", "exec", "log", "proxy")),
    _core("services", "Service", True, ("svc",), ("status", "proxy")),
    _core("endpoints", "Endpoints", True, ("ep",)),
    _core("events", "Event", True, ("ev",)),
    _core("configmaps", "ConfigMap", True, ("cm",)),
    _core("secrets", "Secret", True),
    _core("serviceaccounts", "ServiceAccount", True, ("sa",), ("token",)),
    _core("persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    _core("resourcequotas", "ResourceQuota", True, ("quota",), ("status",)),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType("apps", "v1", "deployments", "Deployment", True, short_names=("deploy",),
                 subresources=("status", "scale"), categories=("all",)),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, short_names=("rs",),
                 subresources=("status", "scale"), categories=("all",)),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, short_names=("sts",),
                 subresources=("status", "scale"), categories=("all",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, short_names=("ds",),
                 subresources=("status",), categories=("all",)),
    ResourceType("batch", "v1", "jobs", "Job", True, subresources=("status",),
                 categories=("all",)),
    ResourceType("batch", "v1", "cronjobs", "CronJob", True, short_names=("cj",),
                 subresources=("status",), categories=("all",)),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True,
                 short_names=("pdb",), subresources=("status",)),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True,
                 short_names=("netpol",)),
    ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", True, short_names=("ing",),
                 subresources=("status",)),
    ResourceType("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False,
                 short_names=("pc",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
                 False),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "CustomResourceDefinition", False, short_names=("crd", "crds"),
                 subresources=("status",)),
    *(ResourceType(group, "v1", plural, kind, namespaced, verbs=("create",), stored=False)
      for group, plural, kind, namespaced in REVIEW_KINDS),
    # metrics-server's API (`kubectl top`), computed from the simulation: metrics_api.py.
    ResourceType("metrics.k8s.io", "v1beta1", "nodes", "NodeMetrics", False,
                 verbs=("get", "list"), stored=False),
    ResourceType("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", True,
                 verbs=("get", "list"), stored=False),
)


class Catalogue:
    """Every resource type served right now, looked up by group/version/plural."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rtype in BUILTIN_TYPES:
            self.add(rtype)

    def add(self, rtype: ResourceType) -> None:
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def remove(self, group: str, version: str, plural: str) -> None:
        self._types.pop((group, version, plural), None)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rtype in self._types.values():
            if rtype.api_version == api_version and rtype.kind == kind:
                return rtype
        return None

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def group_versions(self) -> dict[str, list[str]]:
        """Named groups (not core) and their versions, in a stable order."""
        groups: dict[str, list[str]] = {}
        for rtype in self._types.values():
            if rtype.group and rtype.version not in groups.setdefault(rtype.group, []):
                groups[rtype.group].append(rtype.version)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self._types.values() if t.group == group and t.version == version]
