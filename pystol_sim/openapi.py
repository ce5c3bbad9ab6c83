"""The OpenAPI v3 documents kubectl and helm download before they send anything.

`kubectl apply` (and `create`, `replace`, helm's installs) validate by default and
refuse to send a single object unless the server serves OpenAPI ("failed to download
openapi ... turn validation off with --validate=false"). They read
`GET /openapi/v3`, an index of one document per group-version, then the document of
the object's group-version. What they look for there (kubectl's
`QueryParamVerifierV3` and the apply patcher, k8s.io/kubectl and cli-runtime):

- a path whose `patch` operation carries `x-kubernetes-group-version-kind` (one
  `{group, version, kind}` map) naming the object's kind, and lists the query
  parameter `fieldValidation`. Then kubectl leaves validation to the server and sends
  `POST ...?fieldManager=kubectl-client-side-apply&fieldValidation=Strict`; without it,
  it would validate client side against the schemas below.
- `components.schemas` entries whose `x-kubernetes-group-version-kind` (a *list* of
  such maps) names the kind; `kubectl explain` reads these, and so does apply when it
  computes a strategic merge patch from OpenAPI.

Schemas are named as on the real server (`io.k8s.api.core.v1.Pod`,
`io.k8s.api.apps.v1.Deployment`, a CRD's `<reversed group>.<version>.<Kind>` such as
`org.pystol.v1alpha1.PystolAction`). Built-in kinds get permissive object schemas (the
simulator does not carry the Kubernetes type system); a CRD's kind gets its own
`openAPIV3Schema`, plus `apiVersion`, `kind` and `metadata`, as the real server does.

Why built-in patch operations do not advertise `application/strategic-merge-patch+json`
by default: when that content type is listed, kubectl's apply computes the patch from
the *OpenAPI schema* (`buildStrategicMergePatchFromOpenAPIV3`), and a permissive
schema has no `properties` to walk, so every apply that changes an existing built-in
object prints `warning: error calculating patch from openapi v3 spec: unable to find
api field "metadata"` before kubectl falls back to its compiled-in Go types. Without
it, kubectl goes straight to those compiled-in types, which hold the exact
strategic-merge metadata (merge keys such as a container's `name`), and sends the same
strategic merge patch silently. `openapi_v3_document(..., strategic_merge=True)` lists
it anyway, as a real server does. CRDs never list it (nor does a real server), so
kubectl sends them JSON merge patches.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pystol_sim.resources import BUILTIN_TYPES, Catalogue, ResourceType

__all__ = [
    "KUBERNETES_VERSION",
    "catalogue_hash",
    "group_version_path",
    "openapi_v3_document",
    "openapi_v3_index",
    "schema_name",
]

KUBERNETES_VERSION = "v1.35.0"

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_BUILTIN_KEYS = frozenset((t.group, t.version, t.plural) for t in BUILTIN_TYPES)
# Groups served by kube-apiserver itself: a kind in one of them without a CRD schema
# is treated as built-in even when it is not in resources.BUILTIN_TYPES.
_BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "autoscaling", "policy", "admissionregistration.k8s.io",
    "apiextensions.k8s.io", "apiregistration.k8s.io", "authentication.k8s.io",
    "authorization.k8s.io", "certificates.k8s.io", "coordination.k8s.io",
    "discovery.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io",
    "networking.k8s.io", "node.k8s.io", "rbac.authorization.k8s.io", "resource.k8s.io",
    "scheduling.k8s.io", "storage.k8s.io", "storagemigration.k8s.io",
})
# Schema-name packages that do not follow `io.k8s.api.<first label of the group>`.
_PACKAGES = {
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
    "apiregistration.k8s.io": "io.k8s.kube-aggregator.pkg.apis.apiregistration",
}
# Top-level fields of built-in kinds that have no spec/status, so that `kubectl
# explain` lists something sensible. Everything else is spec + status.
_TOP_FIELDS: dict[str, tuple[str, ...]] = {
    "ConfigMap": ("data", "binaryData", "immutable"),
    "Secret": ("data", "stringData", "type", "immutable"),
    "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
    "Endpoints": ("subsets",),
    "Event": ("involvedObject", "reason", "message", "source", "firstTimestamp",
              "lastTimestamp", "count", "type", "eventTime", "series", "action", "related",
              "reportingComponent", "reportingInstance"),
    "Role": ("rules",),
    "ClusterRole": ("rules", "aggregationRule"),
    "RoleBinding": ("subjects", "roleRef"),
    "ClusterRoleBinding": ("subjects", "roleRef"),
}


# ------------------------------------------------------------------------ naming


def is_builtin(rtype: ResourceType) -> bool:
    """Served by kube-apiserver itself rather than defined by a CRD."""
    if (rtype.group, rtype.version, rtype.plural) in _BUILTIN_KEYS:
        return True
    return rtype.schema is None and rtype.group in _BUILTIN_GROUPS


def _package(group: str, version: str, builtin: bool) -> str:
    if not builtin:
        # apiextensions' builder: util.ToRESTFriendlyName("<group>/<version>/<Kind>").
        return ".".join([*reversed(group.split(".")), version]) if group else version
    if group in _PACKAGES:
        return f"{_PACKAGES[group]}.{version}"
    short = group.split(".")[0] if group else "core"
    return f"io.k8s.api.{short}.{version}"


def schema_name(rtype: ResourceType, kind: str | None = None) -> str:
    """The components.schemas name of `kind` (default: the type's kind), as served."""
    return f"{_package(rtype.group, rtype.version, is_builtin(rtype))}.{kind or rtype.kind}"


def group_version_path(group: str, version: str) -> str:
    """The key of a group-version in `/openapi/v3`: `api/v1` or `apis/<group>/<version>`."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _operation_prefix(group: str, version: str) -> str:
    """`CoreV1`, `AppsV1`, `RbacAuthorizationV1`, `PystolOrgV1alpha1`, as in operationIds."""
    if not group:
        return f"Core{version.capitalize()}"
    name = group.removesuffix(".k8s.io") if group.endswith(".k8s.io") else group
    words = "".join(part.capitalize() for part in name.replace("-", ".").split("."))
    return f"{words}{version.capitalize()}"


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# ------------------------------------------------------------------------- index


def _served_group_versions(catalogue: Catalogue) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for rtype in catalogue.all():
        gv = (rtype.group, rtype.version)
        if gv not in seen:
            seen.append(gv)
    return sorted(seen, key=lambda gv: (gv[0] != "", gv[0], gv[1]))


def openapi_v3_index(catalogue: Catalogue, version_hash: str) -> dict[str, Any]:
    """`GET /openapi/v3`: one entry per served group-version, pointing at its document.

    kubectl caches documents by their `serverRelativeURL`, so `version_hash` must change
    whenever a document's content does (see `catalogue_hash`).
    """
    paths = {}
    for group, version in _served_group_versions(catalogue):
        key = group_version_path(group, version)
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={version_hash}"}
    return {"paths": paths}


def catalogue_hash(catalogue: Catalogue) -> str:
    """A digest of everything the documents are built from (uppercase hex, like the server).

    Pass it as `version_hash`: it changes when a CRD is added, removed or changed, so
    kubectl's disk cache never serves a stale document.
    """
    description = sorted(
        json.dumps([t.group, t.version, t.plural, t.kind, t.namespaced, list(t.subresources),
                    list(t.verbs), t.schema], sort_keys=True, default=str)
        for t in catalogue.all()
    )
    return hashlib.sha512("\n".join(description).encode()).hexdigest().upper()


# -------------------------------------------------------------------- parameters


def _query(name: str, description: str, type_: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description,
            "schema": {"type": type_, "uniqueItems": True}}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "description": description, "required": True,
            "schema": {"type": "string", "uniqueItems": True}}


_PRETTY = _query("pretty", "If 'true', then the output is pretty printed. Defaults to 'false' "
                 "unless the user-agent indicates a browser or command-line HTTP tool (curl "
                 "and wget).")
_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be "
                  "persisted. Valid values are: - All: all dry run stages will be processed")
_FIELD_MANAGER = _query("fieldManager", "fieldManager is a name associated with the actor or "
                        "entity that is making these changes.")
_FIELD_VALIDATION = _query("fieldValidation", "fieldValidation instructs the server on how to "
                           "handle objects in the request containing unknown or duplicate "
                           "fields. Valid values are: Ignore, Warn (the default), Strict.")
_FORCE = _query("force", "Force is going to \"force\" Apply requests. It means user will "
                "re-acquire conflicting fields owned by other people.", "boolean")
_LIST_PARAMS = [
    _query("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type "
           "\"BOOKMARK\".", "boolean"),
    _query("continue", "The continue option should be set when retrieving more results from "
           "the server."),
    _query("fieldSelector", "A selector to restrict the list of returned objects by their "
           "fields. Defaults to everything."),
    _query("labelSelector", "A selector to restrict the list of returned objects by their "
           "labels. Defaults to everything."),
    _query("limit", "limit is a maximum number of responses to return for a list call.",
           "integer"),
    _query("resourceVersion", "resourceVersion sets a constraint on what resource versions a "
           "request may be served from."),
    _query("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is "
           "applied to list calls."),
    _query("sendInitialEvents", "`sendInitialEvents=true` may be set together with "
           "`watch=true`: the watch stream begins with synthetic events for every object "
           "that exists, then a bookmark.", "boolean"),
    _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _query("watch", "Watch for changes to the described resources and return them as a "
           "stream of add, update, and remove notifications.", "boolean"),
]
_DELETE_PARAMS = [
    _DRY_RUN,
    _query("gracePeriodSeconds", "The duration in seconds before the object should be "
           "deleted.", "integer"),
    _query("ignoreStoreReadErrorWithClusterBreakingPotential", "if set to true, it will trigger "
           "an unsafe deletion of the resource in case the normal deletion flow fails with a "
           "corrupt object error.", "boolean"),
    _query("orphanDependents", "Deprecated: please use the PropagationPolicy.", "boolean"),
    _query("propagationPolicy", "Whether and how garbage collection will be performed: "
           "'Orphan', 'Background' or 'Foreground'."),
]
_WRITE_PARAMS = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]


# -------------------------------------------------------------------- operations


def _content(schema: dict[str, Any], types: tuple[str, ...]) -> dict[str, Any]:
    return {t: {"schema": schema} for t in types}


_READ_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
_LIST_TYPES = (*_READ_TYPES, "application/json;stream=watch",
               "application/vnd.kubernetes.protobuf;stream=watch")


def _responses(schema: dict[str, Any], codes: tuple[str, ...],
               types: tuple[str, ...] = _READ_TYPES) -> dict[str, Any]:
    responses: dict[str, Any] = {
        code: {"description": {"200": "OK", "201": "Created", "202": "Accepted"}[code],
               "content": _content(schema, types)}
        for code in codes
    }
    responses["401"] = {"description": "Unauthorized"}
    return responses


def _operation(action: str, op_id: str, description: str, gvk: dict[str, str],
               tag: str, parameters: list[dict[str, Any]], responses: dict[str, Any],
               request_body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [tag],
        "description": description,
        "operationId": op_id,
        "parameters": [dict(p) for p in parameters],
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": dict(gvk),
    }
    if request_body is not None:
        op["requestBody"] = request_body
    return op


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"*/*": {"schema": schema}}, "required": True}


def _patch_body(strategic: bool) -> dict[str, Any]:
    types = [JSON_PATCH, MERGE_PATCH]
    if strategic:
        types.append(STRATEGIC_MERGE_PATCH)
    types.append(APPLY_PATCH)
    return {"content": _content(_ref(f"{META}.Patch"), tuple(types)), "required": True}


def _object_paths(rtype: ResourceType, base: str, namespaced: bool, strategic: bool,
                  tag: str) -> dict[str, Any]:
    """Collection, item and subresource paths of one resource, under `base`."""
    kind = rtype.kind
    gvk = _gvk(rtype.group, rtype.version, kind)
    prefix = _operation_prefix(rtype.group, rtype.version)
    scope = "Namespaced" if namespaced else ""
    obj = _ref(schema_name(rtype))
    obj_list = _ref(schema_name(rtype, rtype.list_kind))
    status = _ref(f"{META}.Status")
    verbs = set(rtype.verbs)
    ns_param = [_path_param("namespace", "object name and auth scope, such as for teams and "
                            "projects")] if namespaced else []
    name_param = _path_param("name", f"name of the {kind}")
    paths: dict[str, Any] = {}

    collection: dict[str, Any] = {}
    if "list" in verbs:
        collection["get"] = _operation(
            "list", f"list{prefix}{scope}{kind}", f"list or watch objects of kind {kind}", gvk,
            tag, _LIST_PARAMS, _responses(obj_list, ("200",), _LIST_TYPES))
    if "create" in verbs:
        collection["post"] = _operation(
            "post", f"create{prefix}{scope}{kind}", f"create a {kind}", gvk, tag,
            _WRITE_PARAMS, _responses(obj, ("200", "201", "202")), _body(obj))
    if "deletecollection" in verbs:
        collection["delete"] = _operation(
            "deletecollection", f"delete{prefix}Collection{scope}{kind}",
            f"delete collection of {kind}", gvk, tag,
            [*_DELETE_PARAMS, *_LIST_PARAMS[1:9]],
            _responses(status, ("200",)), _body(_ref(f"{META}.DeleteOptions")))
    if collection:
        collection["parameters"] = [*ns_param, _PRETTY]
        paths[base] = collection

    item: dict[str, Any] = {}
    if "get" in verbs:
        item["get"] = _operation("get", f"read{prefix}{scope}{kind}",
                                 f"read the specified {kind}", gvk, tag, [],
                                 _responses(obj, ("200",)))
    if "update" in verbs:
        item["put"] = _operation("put", f"replace{prefix}{scope}{kind}",
                                 f"replace the specified {kind}", gvk, tag, _WRITE_PARAMS,
                                 _responses(obj, ("200", "201")), _body(obj))
    if "patch" in verbs:
        item["patch"] = _operation("patch", f"patch{prefix}{scope}{kind}",
                                   f"partially update the specified {kind}", gvk, tag,
                                   [*_WRITE_PARAMS, _FORCE], _responses(obj, ("200", "201")),
                                   _patch_body(strategic))
    if "delete" in verbs:
        item["delete"] = _operation("delete", f"delete{prefix}{scope}{kind}",
                                    f"delete a {kind}", gvk, tag, _DELETE_PARAMS,
                                    _responses(obj, ("200", "202")),
                                    {"content": {"*/*": {"schema": _ref(f"{META}.DeleteOptions")}}})
    if item:
        item["parameters"] = [name_param, *ns_param, _PRETTY]
        paths[f"{base}/{{name}}"] = item

    for sub in rtype.subresources:
        sub_path = f"{base}/{{name}}/{sub}"
        params = [name_param, *ns_param, _PRETTY]
        if sub in ("status", "scale"):
            if sub == "status":
                sub_gvk, sub_ref, suffix = gvk, obj, "Status"
            else:
                sub_gvk = _gvk("autoscaling", "v1", "Scale")
                sub_ref, suffix = _ref("io.k8s.api.autoscaling.v1.Scale"), "Scale"
            paths[sub_path] = {
                "get": _operation("get", f"read{prefix}{scope}{kind}{suffix}",
                                  f"read {sub} of the specified {kind}", sub_gvk, tag, [],
                                  _responses(sub_ref, ("200",))),
                "put": _operation("put", f"replace{prefix}{scope}{kind}{suffix}",
                                  f"replace {sub} of the specified {kind}", sub_gvk, tag,
                                  _WRITE_PARAMS, _responses(sub_ref, ("200", "201")),
                                  _body(sub_ref)),
                "patch": _operation("patch", f"patch{prefix}{scope}{kind}{suffix}",
                                    f"partially update {sub} of the specified {kind}", sub_gvk,
                                    tag, [*_WRITE_PARAMS, _FORCE],
                                    _responses(sub_ref, ("200", "201")), _patch_body(strategic)),
                "parameters": params,
            }
        elif sub == "eviction":
            eviction = _ref("io.k8s.api.policy.v1.Eviction")
            paths[sub_path] = {
                "post": _operation("post", f"create{prefix}{scope}{kind}Eviction",
                                   f"create eviction of a {kind}",
                                   _gvk("policy", "v1", "Eviction"), tag, _WRITE_PARAMS,
                                   _responses(eviction, ("200", "201", "202")), _body(eviction)),
                "parameters": params,
            }
        elif sub == "log":
            paths[sub_path] = {
                "get": _operation("get", f"read{prefix}{scope}{kind}Log",
                                  f"read log of the specified {kind}", gvk, tag, [],
                                  {"200": {"description": "OK", "content": _content(
                                      {"type": "string"}, ("text/plain", "application/json",
                                                           "application/yaml"))},
                                   "401": {"description": "Unauthorized"}}),
                "parameters": params,
            }
        elif sub == "exec":
            exec_gvk = _gvk(rtype.group, rtype.version, f"{kind}ExecOptions")
            responses = {"200": {"description": "OK", "content": _content(
                {"type": "string"}, ("*/*",))}, "401": {"description": "Unauthorized"}}
            paths[sub_path] = {
                verb: _operation("connect", f"connect{verb.capitalize()}{prefix}{scope}{kind}Exec",
                                 f"connect {verb.upper()} requests to exec of {kind}", exec_gvk,
                                 tag, [], responses)
                for verb in ("get", "post")
            }
            paths[sub_path]["parameters"] = params
    return paths


# ----------------------------------------------------------------------- schemas


def _meta_schemas() -> dict[str, Any]:
    """The apimachinery schemas every group-version document refers to."""
    obj = {"type": "object"}
    string = {"type": "string"}
    return {
        f"{META}.ObjectMeta": {
            "description": "ObjectMeta is metadata that all persisted resources must have.",
            "type": "object",
            "properties": {
                "name": string, "generateName": string, "namespace": string, "uid": string,
                "resourceVersion": string, "generation": {"type": "integer", "format": "int64"},
                "creationTimestamp": {"type": "string", "format": "date-time"},
                "deletionTimestamp": {"type": "string", "format": "date-time"},
                "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
                "labels": {"type": "object", "additionalProperties": {"type": "string",
                                                                       "default": ""}},
                "annotations": {"type": "object",
                                "additionalProperties": {"type": "string", "default": ""}},
                "finalizers": {"type": "array", "items": {"type": "string", "default": ""},
                               "x-kubernetes-list-type": "set",
                               "x-kubernetes-patch-strategy": "merge"},
                "ownerReferences": {"type": "array",
                                    "items": {"type": "object",
                                              "x-kubernetes-preserve-unknown-fields": True},
                                    "x-kubernetes-patch-merge-key": "uid",
                                    "x-kubernetes-patch-strategy": "merge"},
                "managedFields": {"type": "array",
                                  "items": {"type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True}},
            },
        },
        f"{META}.ListMeta": {
            "description": "ListMeta describes metadata that synthetic resources must have.",
            "type": "object",
            "properties": {"resourceVersion": string, "continue": string,
                           "remainingItemCount": {"type": "integer", "format": "int64"},
                           "selfLink": string},
        },
        f"{META}.Status": {
            "description": "Status is a return value for calls that don't return other objects.",
            "type": "object",
            "properties": {"apiVersion": string, "kind": string, "status": string,
                           "message": string, "reason": string, "code": {"type": "integer"},
                           "details": {**obj, "x-kubernetes-preserve-unknown-fields": True},
                           "metadata": {"allOf": [_ref(f"{META}.ListMeta")], "default": {}}},
            "x-kubernetes-group-version-kind": [_gvk("", "v1", "Status")],
        },
        f"{META}.DeleteOptions": {
            "description": "DeleteOptions may be provided when deleting an API object.",
            "type": "object",
            "properties": {"apiVersion": string, "kind": string,
                           "dryRun": {"type": "array", "items": string},
                           "gracePeriodSeconds": {"type": "integer", "format": "int64"},
                           "orphanDependents": {"type": "boolean"},
                           "propagationPolicy": string,
                           "preconditions": {**obj, "x-kubernetes-preserve-unknown-fields": True}},
            "x-kubernetes-group-version-kind": [_gvk("", "v1", "DeleteOptions")],
        },
        f"{META}.Patch": {
            "description": "Patch is provided to give a concrete name and type to the "
                           "Kubernetes PATCH request body.",
            "type": "object",
        },
    }


def _base_properties() -> dict[str, Any]:
    return {
        "apiVersion": {"description": "APIVersion defines the versioned schema of this "
                       "representation of an object.", "type": "string"},
        "kind": {"description": "Kind is a string value representing the REST resource this "
                 "object represents.", "type": "string"},
        "metadata": {"description": "Standard object's metadata.", "default": {},
                     "allOf": [_ref(f"{META}.ObjectMeta")]},
    }


def _open_object(description: str) -> dict[str, Any]:
    return {"description": description, "type": "object",
            "x-kubernetes-preserve-unknown-fields": True}


def _builtin_schema(rtype: ResourceType) -> dict[str, Any]:
    properties = _base_properties()
    fields = _TOP_FIELDS.get(rtype.kind, ("spec", "status"))
    for name in fields:
        properties[name] = {"description": f"{name} of the {rtype.kind} (not modelled by the "
                            "simulator: any value is accepted here).",
                            "x-kubernetes-preserve-unknown-fields": True}
    return {
        "description": f"{rtype.kind} as served by the pystol simulated cluster.",
        "type": "object",
        "properties": properties,
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-group-version-kind": [_gvk(rtype.group, rtype.version, rtype.kind)],
    }


def _crd_schema(rtype: ResourceType) -> dict[str, Any]:
    schema = copy.deepcopy(rtype.schema) if isinstance(rtype.schema, dict) else {}
    if not schema:
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema.setdefault("type", "object")
    properties = dict(schema.get("properties") or {})
    base = _base_properties()
    for key in ("apiVersion", "kind"):
        properties.setdefault(key, base[key])
    properties["metadata"] = base["metadata"]  # a CRD schema may only say `type: object`
    schema["properties"] = properties
    schema["x-kubernetes-group-version-kind"] = [_gvk(rtype.group, rtype.version, rtype.kind)]
    return schema


def _list_schema(rtype: ResourceType) -> dict[str, Any]:
    props = _base_properties()
    props["metadata"] = {"description": "Standard list metadata.", "default": {},
                         "allOf": [_ref(f"{META}.ListMeta")]}
    props["items"] = {"description": f"List of {rtype.plural}.", "type": "array",
                      "items": {"default": {}, "allOf": [_ref(schema_name(rtype))]}}
    return {
        "description": f"{rtype.list_kind} is a list of {rtype.kind}.",
        "type": "object",
        "required": ["items"],
        "properties": props,
        "x-kubernetes-group-version-kind": [_gvk(rtype.group, rtype.version, rtype.list_kind)],
    }


def _subresource_schemas(rtypes: list[ResourceType]) -> dict[str, Any]:
    subs = {sub for t in rtypes for sub in t.subresources}
    schemas: dict[str, Any] = {}
    if "scale" in subs:
        scale = _open_object("Scale represents a scaling request for a resource.")
        scale["properties"] = {**_base_properties(),
                               "spec": _open_object("desired replicas"),
                               "status": _open_object("current replicas and selector")}
        scale["x-kubernetes-group-version-kind"] = [_gvk("autoscaling", "v1", "Scale")]
        schemas["io.k8s.api.autoscaling.v1.Scale"] = scale
    if "eviction" in subs:
        eviction = _open_object("Eviction evicts a pod from its node subject to certain "
                                "policies and safety constraints.")
        eviction["properties"] = {**_base_properties(),
                                  "deleteOptions": {"allOf": [_ref(f"{META}.DeleteOptions")]}}
        eviction["x-kubernetes-group-version-kind"] = [_gvk("policy", "v1", "Eviction")]
        schemas["io.k8s.api.policy.v1.Eviction"] = eviction
    return schemas


# ---------------------------------------------------------------------- document


def openapi_v3_document(catalogue: Catalogue, group: str, version: str, *,
                        strategic_merge: bool = False) -> dict[str, Any] | None:
    """The OpenAPI 3.0 document of one group-version, or None when it is not served.

    `strategic_merge=True` also lists `application/strategic-merge-patch+json` on
    built-in patch operations, as a real server does; see the module docstring for why
    the default leaves it out.
    """
    rtypes = sorted(catalogue.in_group_version(group, version), key=lambda t: t.plural)
    if not rtypes:
        return None
    gv_path = group_version_path(group, version)
    words = _operation_prefix(group, "")
    tag = f"{words[0].lower()}{words[1:]}_{version}"  # core_v1, apps_v1, rbacAuthorization_v1
    paths: dict[str, Any] = {}
    schemas = _meta_schemas()
    for rtype in rtypes:
        builtin = is_builtin(rtype)
        strategic = strategic_merge and builtin
        if rtype.namespaced:
            paths.update(_object_paths(rtype, f"/{gv_path}/namespaces/{{namespace}}/"
                                       f"{rtype.plural}", True, strategic, tag))
            if "list" in rtype.verbs:
                # GET /api/v1/pods: the same list across all namespaces.
                everywhere = _object_paths(
                    ResourceType(rtype.group, rtype.version, rtype.plural, rtype.kind, False,
                                 verbs=("list",), schema=rtype.schema),
                    f"/{gv_path}/{rtype.plural}", False, strategic, tag)
                for item in everywhere.values():
                    item["get"]["operationId"] += "ForAllNamespaces"
                paths.update(everywhere)
        else:
            paths.update(_object_paths(rtype, f"/{gv_path}/{rtype.plural}", False, strategic,
                                       tag))
        schemas[schema_name(rtype)] = _builtin_schema(rtype) if builtin else _crd_schema(rtype)
        schemas[schema_name(rtype, rtype.list_kind)] = _list_schema(rtype)
    schemas.update(_subresource_schemas(rtypes))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }
