"""`pystol_sim.openapi`: the /openapi/v3 index and documents, checked for what kubectl
reads in them (k8s.io/kubectl apply patcher, cli-runtime QueryParamVerifierV3)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pystol_sim.openapi import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    catalogue_hash,
    openapi_v3_document,
    openapi_v3_index,
    schema_name,
)
from pystol_sim.resources import Catalogue, PrinterColumn, ResourceType

CRD_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {"type": "object", "required": ["action"],
                 "properties": {"action": {"type": "string", "description": "what to run"}}},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}
ACTION = ResourceType("pystol.org", "v1alpha1", "pystolactions", "PystolAction", True,
                      subresources=("status",), schema=CRD_SCHEMA,
                      printer_columns=(PrinterColumn("Phase", "string", ".status.phase"),))


@pytest.fixture
def catalogue() -> Catalogue:
    cat = Catalogue()
    cat.add(ACTION)
    return cat


def patch_ops(doc: dict[str, Any], gvk: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Every (path, patch operation) whose single GVK map names `gvk`, as kubectl looks."""
    return [(path, item["patch"]) for path, item in doc["paths"].items()
            if "patch" in item and item["patch"]["x-kubernetes-group-version-kind"] == gvk]


def components_for(doc: dict[str, Any], gvk: dict[str, str]) -> list[str]:
    """Schema names whose GVK list names `gvk` (kubectl explain / apply look this way)."""
    return [name for name, schema in doc["components"]["schemas"].items()
            if gvk in schema.get("x-kubernetes-group-version-kind", [])]


def query_names(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op["parameters"] if p["in"] == "query"}


# --------------------------------------------------------------------------- index


def test_index_lists_every_group_version(catalogue: Catalogue) -> None:
    index = openapi_v3_index(catalogue, "ABC123")
    paths = index["paths"]
    assert paths["api/v1"] == {"serverRelativeURL": "/openapi/v3/api/v1?hash=ABC123"}
    assert paths["apis/apps/v1"] == {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=ABC123"}
    assert paths["apis/pystol.org/v1alpha1"]["serverRelativeURL"] == (
        "/openapi/v3/apis/pystol.org/v1alpha1?hash=ABC123")
    expected = {"api/v1"} | {f"apis/{g}/{v}" for g, vs in catalogue.group_versions().items()
                             for v in vs}
    assert set(paths) == expected
    assert "apis/pystol.org/v1alpha1" not in openapi_v3_index(Catalogue(), "h")["paths"]


def test_catalogue_hash_follows_the_types() -> None:
    plain = Catalogue()
    first = catalogue_hash(plain)
    assert first == catalogue_hash(Catalogue())
    plain.add(ACTION)
    assert catalogue_hash(plain) != first
    changed = Catalogue()
    changed.add(ResourceType(ACTION.group, ACTION.version, ACTION.plural, ACTION.kind, True,
                             subresources=("status",), schema={"type": "object"}))
    assert catalogue_hash(changed) != catalogue_hash(plain)


# ----------------------------------------------------------------------- documents


def test_unknown_group_version_has_no_document(catalogue: Catalogue) -> None:
    assert openapi_v3_document(catalogue, "nope.example.com", "v1") is None
    assert openapi_v3_document(catalogue, "apps", "v2") is None


def test_core_document_has_pod_paths_with_kubectls_patch_operation(catalogue: Catalogue) -> None:
    doc = openapi_v3_document(catalogue, "", "v1")
    assert doc is not None
    assert doc["openapi"].startswith("3.0")
    json.dumps(doc)  # plain JSON all the way down

    pod_gvk = {"group": "", "version": "v1", "kind": "Pod"}
    item = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]
    assert set(item) >= {"get", "put", "patch", "delete", "parameters"}
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"] == pod_gvk
    assert patch["x-kubernetes-action"] == "patch"
    assert {"fieldValidation", "dryRun", "fieldManager", "force"} <= query_names(patch)
    content = patch["requestBody"]["content"]
    assert {JSON_PATCH, MERGE_PATCH, APPLY_PATCH} <= set(content)

    # Every patch operation for Pods (item, status) lists fieldValidation: kubectl
    # checks whichever one it meets first.
    ops = patch_ops(doc, pod_gvk)
    assert {p for p, _ in ops} == {"/api/v1/namespaces/{namespace}/pods/{name}",
                                   "/api/v1/namespaces/{namespace}/pods/{name}/status"}
    for _, op in ops:
        assert "fieldValidation" in query_names(op)

    collection = doc["paths"]["/api/v1/namespaces/{namespace}/pods"]
    assert collection["get"]["x-kubernetes-action"] == "list"
    assert collection["post"]["x-kubernetes-action"] == "post"
    assert {"fieldValidation", "dryRun", "fieldManager"} <= query_names(collection["post"])
    assert {"labelSelector", "fieldSelector", "limit", "continue", "watch",
            "sendInitialEvents"} <= query_names(collection["get"])
    assert item["get"]["x-kubernetes-action"] == "get"
    assert item["put"]["x-kubernetes-action"] == "put"
    assert item["delete"]["x-kubernetes-action"] == "delete"
    assert {"namespace", "name"} == {p["name"] for p in item["parameters"] if p["in"] == "path"}
    assert "get" in doc["paths"]["/api/v1/pods"]  # list across namespaces
    eviction = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
    assert eviction["x-kubernetes-group-version-kind"] == {
        "group": "policy", "version": "v1", "kind": "Eviction"}

    # Cluster-scoped kinds have no namespace segment.
    assert "/api/v1/nodes/{name}" in doc["paths"]
    assert not any(p.startswith("/api/v1/namespaces/{namespace}/nodes") for p in doc["paths"])

    assert components_for(doc, pod_gvk) == ["io.k8s.api.core.v1.Pod"]
    assert components_for(doc, {"group": "", "version": "v1", "kind": "PodList"}) == [
        "io.k8s.api.core.v1.PodList"]


def test_references_resolve(catalogue: Catalogue) -> None:
    for group, version in (("", "v1"), ("apps", "v1"), ("pystol.org", "v1alpha1"),
                           ("apiextensions.k8s.io", "v1")):
        doc = openapi_v3_document(catalogue, group, version)
        assert doc is not None
        text = json.dumps(doc)
        schemas = doc["components"]["schemas"]
        for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
            assert ref.startswith("#/components/schemas/")
            assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_schema_names_follow_the_real_server(catalogue: Catalogue) -> None:
    by_kind = {t.kind: t for t in catalogue.all()}
    assert schema_name(by_kind["Pod"]) == "io.k8s.api.core.v1.Pod"
    assert schema_name(by_kind["Deployment"]) == "io.k8s.api.apps.v1.Deployment"
    assert schema_name(by_kind["Role"]) == "io.k8s.api.rbac.v1.Role"
    assert schema_name(by_kind["Lease"]) == "io.k8s.api.coordination.v1.Lease"
    assert schema_name(by_kind["CustomResourceDefinition"]) == (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition")
    assert schema_name(ACTION) == "org.pystol.v1alpha1.PystolAction"
    assert schema_name(ACTION, ACTION.list_kind) == "org.pystol.v1alpha1.PystolActionList"


def test_apps_document_deployment_and_scale(catalogue: Catalogue) -> None:
    doc = openapi_v3_document(catalogue, "apps", "v1")
    assert doc is not None
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    (path, op), *_ = patch_ops(doc, gvk)
    assert path.startswith("/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    assert "fieldValidation" in query_names(op)
    scale = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"] == {
        "group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert "io.k8s.api.autoscaling.v1.Scale" in doc["components"]["schemas"]
    assert components_for(doc, gvk) == ["io.k8s.api.apps.v1.Deployment"]


def test_strategic_merge_is_listed_only_when_asked_and_never_for_crds(
        catalogue: Catalogue) -> None:
    pod_gvk = {"group": "", "version": "v1", "kind": "Pod"}
    default = openapi_v3_document(catalogue, "", "v1")
    asked = openapi_v3_document(catalogue, "", "v1", strategic_merge=True)
    assert default is not None and asked is not None
    for _, op in patch_ops(default, pod_gvk):
        assert STRATEGIC_MERGE_PATCH not in op["requestBody"]["content"]
    for _, op in patch_ops(asked, pod_gvk):
        assert list(op["requestBody"]["content"]) == [
            JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH]
    crd = openapi_v3_document(catalogue, "pystol.org", "v1alpha1", strategic_merge=True)
    assert crd is not None
    for _, op in patch_ops(crd, {"group": "pystol.org", "version": "v1alpha1",
                                 "kind": "PystolAction"}):
        assert STRATEGIC_MERGE_PATCH not in op["requestBody"]["content"]


def test_crd_document_uses_the_crd_schema(catalogue: Catalogue) -> None:
    doc = openapi_v3_document(catalogue, "pystol.org", "v1alpha1")
    assert doc is not None
    gvk = {"group": "pystol.org", "version": "v1alpha1", "kind": "PystolAction"}
    ops = patch_ops(doc, gvk)
    assert {p for p, _ in ops} == {
        "/apis/pystol.org/v1alpha1/namespaces/{namespace}/pystolactions/{name}",
        "/apis/pystol.org/v1alpha1/namespaces/{namespace}/pystolactions/{name}/status"}
    for _, op in ops:
        assert op["x-kubernetes-action"] == "patch"
        assert {"fieldValidation", "dryRun", "fieldManager"} <= query_names(op)
        assert set(op["requestBody"]["content"]) == {JSON_PATCH, MERGE_PATCH, APPLY_PATCH}
    assert "/apis/pystol.org/v1alpha1/pystolactions" in doc["paths"]
    assert doc["paths"]["/apis/pystol.org/v1alpha1/namespaces/{namespace}/pystolactions"][
        "post"]["x-kubernetes-group-version-kind"] == gvk

    schema = doc["components"]["schemas"]["org.pystol.v1alpha1.PystolAction"]
    assert schema["x-kubernetes-group-version-kind"] == [gvk]
    assert schema["properties"]["spec"] == CRD_SCHEMA["properties"]["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert "metadata" not in CRD_SCHEMA["properties"]  # the catalogue's schema is untouched
    assert components_for(doc, gvk) == ["org.pystol.v1alpha1.PystolAction"]
    # The built-in groups are not mixed in.
    assert not any(name.startswith("io.k8s.api.") for name in doc["components"]["schemas"])


def test_cluster_scoped_crd_and_verbs(catalogue: Catalogue) -> None:
    catalogue.add(ResourceType("pystol.org", "v1alpha1", "pystolclusters", "PystolCluster",
                               False, verbs=("get", "list", "watch")))
    doc = openapi_v3_document(catalogue, "pystol.org", "v1alpha1")
    assert doc is not None
    item = doc["paths"]["/apis/pystol.org/v1alpha1/pystolclusters/{name}"]
    assert set(item) == {"get", "parameters"}  # read-only: no patch, put or delete
    assert "org.pystol.v1alpha1.PystolCluster" in doc["components"]["schemas"]
