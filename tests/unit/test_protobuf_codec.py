"""Tests for pystol_sim.protobuf_codec.

Two encoders make the bodies: a tiny wire-format encoder defined here, which mimics byte for
byte what Go's generated marshallers emit for k8s objects (non-pointer strings/ints are always
written, even when empty or zero; a zero metav1.Time is an empty message; map entries sorted),
and the protobuf runtime with the descriptors the decoder itself loads, for whole kinds. The
expected dicts are what kubectl sends for the same object as JSON.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from google.protobuf.message import Message

from pystol_sim.protobuf_codec import (
    MAGIC,
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    MAX_VALUES,
    PROTOBUF_CONTENT_TYPE,
    ProtobufError,
    UnstorableError,
    check_storable,
    decode_envelope,
    decode_object,
    go_duration,
    message_class,
    read_envelope,
)
from pystol_sim.resources import BUILTIN_TYPES, REVIEW_KINDS

# --------------------------------------------------------------------------- tiny encoder


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 -> two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def vfield(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def lfield(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return key(number, 2) + varint(len(data)) + data


def mfield(number: int, mapping: Mapping[str, bytes | str]) -> bytes:
    return b"".join(lfield(number, lfield(1, k) + lfield(2, mapping[k])) for k in sorted(mapping))


def time_msg(seconds: int) -> bytes:
    return vfield(1, seconds)


def object_meta(
    name: str = "",
    namespace: str = "",
    *,
    generate_name: str = "",
    uid: str = "",
    resource_version: str = "",
    generation: int = 0,
    creation: bytes = b"",
    deletion: bytes | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owners: list[bytes] | None = None,
    finalizers: list[str] | None = None,
) -> bytes:
    out = (
        lfield(1, name)
        + lfield(2, generate_name)
        + lfield(3, namespace)
        + lfield(4, "")  # selfLink
        + lfield(5, uid)
        + lfield(6, resource_version)
        + vfield(7, generation)
        + lfield(8, creation)
    )
    if deletion is not None:
        out += lfield(9, deletion)
    out += mfield(11, labels or {}) + mfield(12, annotations or {})
    out += b"".join(lfield(13, owner) for owner in owners or [])
    out += b"".join(lfield(14, item) for item in finalizers or [])
    return out


def envelope(kind: str, raw: bytes, api_version: str = "v1") -> bytes:
    type_meta = lfield(1, api_version) + lfield(2, kind)
    unknown = lfield(1, type_meta) + lfield(2, raw) + lfield(3, "") + lfield(4, "")
    return b"k8s\x00" + unknown


RELEASE = b"H4sIAAAAAAAA\x00\xff\xfe\x80 gzip-ish \xc3\x28 release payload"
HELM_LABELS = {"name": "demo", "owner": "helm", "status": "deployed", "version": "1"}


def helm_secret_raw(extra: bytes = b"") -> bytes:
    meta = object_meta("sh.helm.release.v1.demo.v1", "apps", labels=HELM_LABELS)
    return (
        lfield(1, meta) + mfield(2, {"release": RELEASE}) + lfield(3, "helm.sh/release.v1") + extra
    )


HELM_EXPECTED = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {
        "name": "sh.helm.release.v1.demo.v1",
        "namespace": "apps",
        "labels": HELM_LABELS,
    },
    "data": {"release": base64.b64encode(RELEASE).decode()},
    "type": "helm.sh/release.v1",
}

# --------------------------------------------------------------------------- tests


def test_content_type_constant() -> None:
    assert PROTOBUF_CONTENT_TYPE == "application/vnd.kubernetes.protobuf"


def test_helm_release_secret() -> None:
    assert decode_object(envelope("Secret", helm_secret_raw())) == HELM_EXPECTED


def test_non_utf8_data_roundtrips_through_base64() -> None:
    decoded = decode_object(envelope("Secret", helm_secret_raw()))
    assert base64.b64decode(decoded["data"]["release"], validate=True) == RELEASE


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    unknown = (
        vfield(99, 123456789)
        + key(100, 1)
        + b"\x01" * 8  # fixed64
        + lfield(101, b"\x00whatever\xff")
        + key(102, 5)
        + b"\x02" * 4  # fixed32
        + vfield(3000, 1)  # multi-byte key
    )
    meta = object_meta("sh.helm.release.v1.demo.v1", "apps", labels=HELM_LABELS) + unknown
    raw = (
        lfield(1, meta)
        + unknown
        + mfield(2, {"release": RELEASE})
        + lfield(3, "helm.sh/release.v1")
        + unknown
    )
    type_meta = lfield(1, "v1") + unknown + lfield(2, "Secret")
    body = b"k8s\x00" + lfield(1, type_meta) + unknown + lfield(2, raw)
    assert decode_object(body) == HELM_EXPECTED


def test_secret_all_fields() -> None:
    owner = (
        lfield(1, "ReplicaSet")
        + lfield(3, "web-1")
        + lfield(4, "uid-owner")
        + lfield(5, "apps/v1")
        + vfield(6, 1)
        + vfield(7, 0)
    )
    meta = object_meta(
        "",
        "default",
        generate_name="tok-",
        uid="uid-1",
        resource_version="42",
        generation=3,
        creation=time_msg(1767225600) + vfield(2, 500),  # nanos are dropped, like k8s
        deletion=time_msg(1767225661),
        annotations={"a": "b", "empty": ""},
        owners=[owner, lfield(1, "Pod")],
        finalizers=["x/one", "x/two"],
    )
    raw = (
        lfield(1, meta)
        + mfield(2, {"k": b"v", "empty": b""})
        + lfield(3, "")
        + mfield(4, {"plain": "text"})
        + vfield(5, 1)
    )
    assert decode_object(envelope("Secret", raw)) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "generateName": "tok-",
            "namespace": "default",
            "uid": "uid-1",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-01T00:01:01Z",
            "annotations": {"a": "b", "empty": ""},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-1",
                    "uid": "uid-owner",
                    "controller": True,
                    "blockOwnerDeletion": False,
                },
                {"apiVersion": "", "kind": "Pod", "name": "", "uid": ""},
            ],
            "finalizers": ["x/one", "x/two"],
        },
        "data": {"k": "dg==", "empty": ""},
        "stringData": {"plain": "text"},
        "immutable": True,
    }


def test_map_entry_without_value_and_last_duplicate_wins() -> None:
    raw = lfield(1, b"") + lfield(2, lfield(1, "novalue")) + lfield(3, "a") + lfield(3, "b")
    assert decode_object(envelope("Secret", raw)) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {},
        "data": {"novalue": ""},
        "type": "b",
    }


def test_configmap() -> None:
    meta = object_meta("cfg", "apps", labels={"app": "demo"}, creation=time_msg(1767225600))
    raw = (
        lfield(1, meta)
        + mfield(2, {"config.yaml": "a: 1\nb: ü\n", "empty": ""})
        + mfield(3, {"blob.bin": b"\x00\x01\xfe\xff"})
        + vfield(4, 0)
        + vfield(77, 5)
    )
    assert decode_object(envelope("ConfigMap", raw)) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "cfg",
            "namespace": "apps",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "demo"},
        },
        "data": {"config.yaml": "a: 1\nb: ü\n", "empty": ""},
        "binaryData": {"blob.bin": "AAH+/w=="},
        "immutable": False,
    }


def test_negative_int64_varint() -> None:
    meta = lfield(1, "n") + vfield(10, -1)
    decoded = decode_object(envelope("ConfigMap", lfield(1, meta)))
    assert decoded["metadata"] == {"name": "n", "deletionGracePeriodSeconds": -1}


def test_accepts_bytearray_and_memoryview() -> None:
    body = envelope("Secret", helm_secret_raw())
    assert decode_object(bytearray(body)) == HELM_EXPECTED
    assert decode_object(memoryview(body)) == HELM_EXPECTED


@pytest.mark.parametrize(
    "body",
    [b"", b'{"kind": "Secret"}', b"k8s", b"\x00k8s" + envelope("Secret", b"")[4:]],
)
def test_missing_magic(body: bytes) -> None:
    with pytest.raises(ProtobufError, match="magic"):
        decode_object(body)


@pytest.mark.parametrize("cut", [1, 5, 17, 40, 100])
def test_truncated(cut: int) -> None:
    body = envelope("Secret", helm_secret_raw())
    with pytest.raises(ProtobufError, match="truncated"):
        decode_object(body[:-cut])


def test_truncated_varint_inside_raw() -> None:
    with pytest.raises(ProtobufError, match="truncated"):
        decode_object(envelope("Secret", lfield(3, "x") + b"\x28\xff"))


@pytest.mark.parametrize("wire", [3, 4, 6, 7])
def test_bad_wire_type(wire: int) -> None:
    with pytest.raises(ProtobufError, match="wire type"):
        decode_object(envelope("Secret", helm_secret_raw(key(20, wire) + b"\x00")))


def test_known_field_with_wrong_wire_type() -> None:
    with pytest.raises(ProtobufError, match=r"wire type for field 3 \(type\) in Secret"):
        decode_object(envelope("Secret", vfield(3, 1)))


def test_overlong_varint() -> None:
    with pytest.raises(ProtobufError, match="varint"):
        decode_object(envelope("Secret", b"\x28" + b"\xff" * 11 + b"\x01"))


@pytest.mark.parametrize(
    ("kind", "api_version"),
    [("Widget", "example.com/v1"), ("PodSpec", "v1"), ("Secret", "v2"),
     ("Deployment", "apps/v1beta1"), ("ObjectMeta", "meta.k8s.io/v1")],
)
def test_unsupported_kind(kind: str, api_version: str) -> None:
    """Only top-level kinds of the served group versions, never an arbitrary message."""
    with pytest.raises(ProtobufError, match=f"kind '{kind}'"):
        decode_object(envelope(kind, b"", api_version))


def test_unsupported_content_encoding() -> None:
    type_meta = lfield(1, "v1") + lfield(2, "Secret")
    body = b"k8s\x00" + lfield(1, type_meta) + lfield(2, b"") + lfield(3, "gzip")
    with pytest.raises(ProtobufError, match="contentEncoding"):
        decode_object(body)


def test_error_is_value_error() -> None:
    assert issubclass(ProtobufError, ValueError)


# --------------------------------------------------------------------------- whole kinds

APPS = "k8s.io.api.apps.v1"
CORE = "k8s.io.api.core.v1"
META = "k8s.io.apimachinery.pkg.apis.meta.v1"


def encode(obj: Message, api_version: str, kind: str) -> bytes:
    envelope_class = message_class("k8s.io.apimachinery.pkg.runtime.Unknown")
    unknown = envelope_class(raw=obj.SerializeToString(), contentEncoding="", contentType="")
    unknown.typeMeta.apiVersion = api_version
    unknown.typeMeta.kind = kind
    return MAGIC + unknown.SerializeToString()


def go_container(name: str, image: str) -> Any:
    """A container as Go writes it: every non-pointer string is on the wire, empty or not."""
    container = message_class(f"{CORE}.Container")(name=name, image=image)
    for field in ("workingDir", "terminationMessagePath", "imagePullPolicy",
                  "terminationMessagePolicy"):
        setattr(container, field, "")
    container.stdin = container.tty = container.stdinOnce = False
    container.resources.SetInParent()
    return container


def deployment(replicas: int | None) -> Any:
    dep = message_class(f"{APPS}.Deployment")()
    dep.metadata.name = "web"
    dep.metadata.namespace = ""
    dep.metadata.generation = 0
    dep.metadata.creationTimestamp.SetInParent()  # zero Time: an empty message
    dep.metadata.labels["app"] = "web"
    if replicas is not None:
        dep.spec.replicas = replicas
    dep.spec.selector.matchLabels["app"] = "web"
    dep.spec.template.metadata.labels["app"] = "web"
    dep.spec.template.metadata.creationTimestamp.SetInParent()
    dep.spec.template.spec.containers.append(go_container("nginx", "nginx"))
    volume = dep.spec.template.spec.volumes.add(name="cache")
    volume.volumeSource.emptyDir.medium = ""
    dep.spec.minReadySeconds = 0
    dep.spec.paused = False
    dep.spec.strategy.type = ""
    dep.status.replicas = 0
    condition = dep.status.conditions.add(type="Available", status="True", reason="",
                                          message="")
    condition.lastUpdateTime.SetInParent()  # zero, non-pointer, no omitzero: JSON null
    condition.lastTransitionTime.seconds = 1796565600
    return dep


def test_deployment_like_kubectl_json() -> None:
    decoded = decode_object(encode(deployment(3), "apps/v1", "Deployment"))
    assert decoded == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "volumes": [{"name": "cache", "emptyDir": {}}],  # VolumeSource inlined
                    "containers": [{"name": "nginx", "image": "nginx", "resources": {}}],
                },
            },
            "strategy": {},
        },
        "status": {
            "conditions": [{
                "type": "Available",
                "status": "True",
                "lastUpdateTime": None,
                "lastTransitionTime": "2026-12-06T14:00:00Z",
            }],
        },
    }


def test_pointer_zero_stays_and_unset_pointer_is_omitted() -> None:
    assert decode_object(encode(deployment(0), "apps/v1", "Deployment"))["spec"]["replicas"] == 0
    assert "replicas" not in decode_object(encode(deployment(None), "apps/v1",
                                                  "Deployment"))["spec"]


def test_non_omitempty_fields_stay_even_when_empty() -> None:
    """`json:"name"` (no omitempty) prints "" and a nil `rules` list prints null."""
    role = message_class("k8s.io.api.rbac.v1.Role")()
    role.metadata.name = "empty"
    rule = role.rules.add()
    rule.apiGroups.append("")
    decoded = decode_object(encode(role, "rbac.authorization.k8s.io/v1", "Role"))
    assert decoded["rules"] == [{"verbs": None, "apiGroups": [""]}]
    container = go_container("", "")
    pod = message_class(f"{CORE}.Pod")()
    pod.spec.containers.append(container)
    assert decode_object(encode(pod, "v1", "Pod"))["spec"]["containers"] == [
        {"name": "", "resources": {}}]
    bare = message_class("k8s.io.api.rbac.v1.ClusterRole")()
    assert decode_object(encode(bare, "rbac.authorization.k8s.io/v1",
                                "ClusterRole"))["rules"] is None


def test_quantities_and_int_or_string() -> None:
    quota = message_class(f"{CORE}.ResourceQuota")()
    quota.metadata.name = "q"
    quota.spec.hard["cpu"].string = "1500m"
    quota.spec.hard["requests.storage"].string = "0"
    quota.spec.hard["memory"].SetInParent()  # zero Quantity
    decoded = decode_object(encode(quota, "v1", "ResourceQuota"))
    assert decoded["spec"] == {"hard": {"cpu": "1500m", "requests.storage": "0", "memory": "0"}}

    pdb = message_class("k8s.io.api.policy.v1.PodDisruptionBudget")()
    pdb.spec.minAvailable.type = 1
    pdb.spec.minAvailable.strVal = "50%"
    pdb.spec.maxUnavailable.type = 0
    pdb.spec.maxUnavailable.intVal = 0  # a pointer to the int 0 must stay
    decoded = decode_object(encode(pdb, "policy/v1", "PodDisruptionBudget"))
    assert decoded["spec"] == {"minAvailable": "50%", "maxUnavailable": 0}


def test_micro_time_has_six_fractional_digits() -> None:
    lease = message_class("k8s.io.api.coordination.v1.Lease")()
    lease.metadata.name = "node-a"
    lease.spec.holderIdentity = "node-a"
    lease.spec.renewTime.seconds = 1796565600
    lease.spec.renewTime.nanos = 123_456_789
    lease.spec.acquireTime.SetInParent()  # a pointer to the zero time: null
    decoded = decode_object(encode(lease, "coordination.k8s.io/v1", "Lease"))
    assert decoded["spec"] == {"holderIdentity": "node-a", "acquireTime": None,
                               "renewTime": "2026-12-06T14:00:00.123456Z"}


def test_raw_extension_is_its_json_and_bad_json_names_the_field() -> None:
    revision = message_class(f"{APPS}.ControllerRevision")(revision=2)
    revision.data.raw = b'{"spec": {"template": {"x": 1}}}'
    decoded = decode_object(encode(revision, "apps/v1", "ControllerRevision"))
    assert decoded["data"] == {"spec": {"template": {"x": 1}}}
    assert decoded["revision"] == 2
    revision.data.raw = b"\x0a\x02not json"
    with pytest.raises(ProtobufError, match=r"ControllerRevision\.data: raw is not JSON"):
        decode_object(encode(revision, "apps/v1", "ControllerRevision"))


def test_named_slice_map_values_are_lists() -> None:
    review = message_class("k8s.io.api.authorization.v1.SubjectAccessReview")()
    review.spec.user = "alice"
    review.spec.extra["scopes"].items.extend(["a", "b"])
    review.spec.resourceAttributes.verb = "get"
    review.spec.resourceAttributes.resource = "pods"
    decoded = decode_object(encode(review, "authorization.k8s.io/v1", "SubjectAccessReview"))
    assert decoded["spec"] == {"resourceAttributes": {"verb": "get", "resource": "pods"},
                               "user": "alice", "extra": {"scopes": ["a", "b"]}}


def test_json_names_differ_from_proto_names_where_go_says_so() -> None:
    """BoundObjectReference's proto field is `uID`; Go's JSON name is `uid`."""
    request = message_class("k8s.io.api.authentication.v1.TokenRequest")()
    request.spec.expirationSeconds = 7200
    request.spec.boundObjectRef.uID = "u-1"
    request.spec.boundObjectRef.kind = "Pod"
    decoded = decode_object(encode(request, "authentication.k8s.io/v1", "TokenRequest"))
    assert decoded["spec"] == {"audiences": None, "expirationSeconds": 7200,
                               "boundObjectRef": {"kind": "Pod", "uid": "u-1"}}


@pytest.mark.parametrize("api_version", ["meta.k8s.io/v1", "v1", "apps/v1", ""])
def test_delete_options_in_any_group_version(api_version: str) -> None:
    options = message_class(f"{META}.DeleteOptions")(propagationPolicy="Foreground",
                                                      gracePeriodSeconds=0)
    options.dryRun.append("All")
    decoded = decode_object(encode(options, api_version, "DeleteOptions"))
    assert decoded == {"apiVersion": api_version or "v1", "kind": "DeleteOptions",
                       "gracePeriodSeconds": 0, "propagationPolicy": "Foreground",
                       "dryRun": ["All"]}


def test_every_kind_the_sim_serves_decodes() -> None:
    """Each built-in kind a client can create in the sim has its message (metrics.k8s.io is
    read-only)."""
    kinds = [(t.api_version, t.kind) for t in BUILTIN_TYPES if "create" in t.verbs]
    kinds += [(f"{group}/v1", kind) for group, _, kind, _ in REVIEW_KINDS]
    for api_version, kind in kinds:
        raw = lfield(1, lfield(1, "x"))  # metadata.name
        decoded = decode_object(envelope(kind, raw, api_version))
        assert decoded["apiVersion"] == api_version, kind
        assert decoded["metadata"] == {"name": "x"}, kind


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [(0, "0s"), (1, "1ns"), (1_500, "1.5µs"), (300_000_000, "300ms"), (1_500_000_000, "1.5s"),
     (3_600_000_000_000, "1h0m0s"), (5_415_000_000_000, "1h30m15s"), (-90_000_000_000, "-1m30s")],
)
def test_go_duration_strings(nanoseconds: int, text: str) -> None:
    assert go_duration(nanoseconds) == text


def test_garbage_inside_a_nested_message_names_its_path() -> None:
    """Deployment.spec (3) -> template (3) -> spec (2) holding a field that claims 127 bytes
    and has 5: the runtime only says "error parsing", the Status names the field."""
    dep = deployment(1)
    dep.ClearField("spec")
    spec = lfield(3, lfield(2, b"\x0a\x7fshort"))
    body = envelope("Deployment", dep.SerializeToString() + lfield(2, spec), "apps/v1")
    with pytest.raises(ProtobufError, match=r"truncated data: field 1 \(volumes\) of "
                                            r"Deployment\.spec\.template\.spec needs 127 bytes"):
        decode_object(body)


def test_invalid_utf8_strings_become_replacement_characters() -> None:
    decoded = decode_object(envelope("ConfigMap", lfield(1, lfield(1, b"bad\xc3\x28"))))
    assert decoded["metadata"]["name"] == "bad\ufffd("


def test_deeply_nested_groups_are_refused_not_recursed() -> None:
    nested = key(50, 3) * 200_000 + key(50, 4) * 200_000
    with pytest.raises(ProtobufError, match="field 50"):
        decode_object(envelope("ConfigMap", nested))


def test_oversized_body_is_refused() -> None:
    big = envelope("ConfigMap", lfield(2, b"x" * (MAX_BODY_BYTES + 1)))
    with pytest.raises(ProtobufError, match="exceeds"):
        decode_object(big)


CRD = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1"


def crd(levels: int = 0) -> Any:
    obj = message_class(f"{CRD}.CustomResourceDefinition")()
    obj.metadata.name = "widgets.example.com"
    obj.spec.group = "example.com"
    obj.spec.scope = "Namespaced"
    obj.spec.names.plural = "widgets"
    obj.spec.names.kind = "Widget"
    version = obj.spec.versions.add(name="v1", served=True, storage=True)
    schema = version.schema.openAPIV3Schema
    schema.type = "object"
    for _ in range(levels):
        schema = schema.properties["child"]
        schema.type = "object"
    return obj


def test_crd_schema_unions_print_as_go_does() -> None:
    obj = crd()
    schema = obj.spec.versions[0].schema.openAPIV3Schema
    size = schema.properties["size"]
    size.type = "integer"
    size.minimum = 1
    size.default.raw = b"3"
    tags = schema.properties["tags"]
    tags.type = "array"
    tags.items.schema.type = "string"
    labels = schema.properties["labels"]
    labels.type = "object"
    labels.additionalProperties.allows = True
    labels.additionalProperties.schema.type = "string"
    schema.additionalProperties.allows = False
    schema.xKubernetesPreserveUnknownFields = False  # pointer to false: stays
    schema.required.append("size")
    decoded = decode_object(encode(obj, "apiextensions.k8s.io/v1", "CustomResourceDefinition"))
    assert decoded["spec"]["versions"][0]["schema"]["openAPIV3Schema"] == {
        "type": "object",
        "required": ["size"],
        "properties": {
            "size": {"type": "integer", "minimum": 1.0, "default": 3},
            "tags": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
        "x-kubernetes-preserve-unknown-fields": False,
    }


def test_crd_schema_nested_too_deep_is_refused_with_its_path() -> None:
    body = encode(crd(levels=48), "apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert decode_object(body)["kind"] == "CustomResourceDefinition"
    body = encode(crd(levels=300), "apiextensions.k8s.io/v1", "CustomResourceDefinition")
    with pytest.raises(ProtobufError, match=r"CustomResourceDefinition\.spec\.versions.* "
                                            r"nested deeper than 100 messages") as raised:
        decode_object(body)
    assert len(str(raised.value)) < 300


# --------------------------------------------------------------------------- hostile bodies


def deployment_with_containers(raw_containers: bytes) -> bytes:
    """A Deployment whose spec.template.spec.containers (3 -> 3 -> 2 -> 2) are these bytes."""
    return lfield(2, lfield(3, lfield(2, raw_containers)))


def test_a_list_kind_is_not_a_request_body() -> None:
    """A DeploymentList of empty items ("\x12\x00" each) would become one dict tree per two
    bytes; no request takes a list, so it is refused with the envelope, before its items are
    parsed."""
    body = envelope("DeploymentList", b"\x12\x00" * 1000, "apps/v1")
    with pytest.raises(ProtobufError, match="a list is not accepted as a request body"):
        read_envelope(body)
    with pytest.raises(ProtobufError, match="a list is not accepted as a request body"):
        decode_object(body)


def test_the_envelope_is_read_without_the_object() -> None:
    """The server compares the envelope's kind with the resource's before decoding; a missing
    kind is left for it to fill in."""
    body = envelope("Deployment", deployment_with_containers(b"\x12\x00" * 60_000), "apps/v1")
    head = read_envelope(body)
    assert (head.api_version, head.kind, len(head.raw)) == ("apps/v1", "Deployment", 120_012)
    bare = read_envelope(envelope("", lfield(1, lfield(1, "x")), ""))
    assert (bare.api_version, bare.kind) == ("", "")
    filled = decode_envelope(dataclasses.replace(bare, api_version="v1", kind="ConfigMap"))
    assert filled == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}


def test_many_empty_items_exceed_the_value_budget() -> None:
    """60,000 empty containers: 120 KB on the wire, each a dict with an always-printed
    "resources": {} -- refused naming the limit instead of building 120,000 dicts."""
    body = envelope("Deployment", deployment_with_containers(b"\x12\x00" * 60_000), "apps/v1")
    with pytest.raises(ProtobufError, match=rf"Deployment\.spec\.template\.spec\.containers.*"
                                            rf"expands into more than {MAX_VALUES} values"):
        decode_object(body)


def test_small_body_gets_a_budget_proportional_to_its_size() -> None:
    """A 40 KB body cannot make 100,000 values: the budget is 10,000 plus one per byte."""
    body = envelope("Deployment", deployment_with_containers(b"\x12\x00" * 20_000), "apps/v1")
    with pytest.raises(ProtobufError, match=r"expands into more than 5\d{4} values"):
        decode_object(body)


def test_many_unknown_fields_count_against_the_budget() -> None:
    raw = lfield(1, lfield(1, "x")) + vfield(50, 0) * 200_000
    with pytest.raises(ProtobufError, match="expands into more than"):
        decode_object(envelope("ConfigMap", raw))


def test_a_big_real_object_stays_within_the_budget() -> None:
    """A ConfigMap with 20,000 keys and a Deployment with 500 containers as Go writes them."""
    data = {f"key-{index}": f"value-{index}" for index in range(20_000)}
    decoded = decode_object(envelope("ConfigMap", lfield(1, lfield(1, "big")) + mfield(2, data)))
    assert decoded["data"] == data
    dep = deployment(1)
    for index in range(499):
        dep.spec.template.spec.containers.append(go_container(f"c{index}", "nginx"))
    decoded = decode_object(encode(dep, "apps/v1", "Deployment"))
    assert len(decoded["spec"]["template"]["spec"]["containers"]) == 500


def revision_with_raw(raw: bytes) -> bytes:
    revision = message_class(f"{APPS}.ControllerRevision")(revision=1)
    revision.metadata.name = "deep"
    revision.data.raw = raw
    return encode(revision, "apps/v1", "ControllerRevision")


@pytest.mark.parametrize("depth", [5000, 1025])
def test_raw_json_nested_past_the_parser_limit_is_a_protobuf_error(depth: int) -> None:
    """Python's json raised RecursionError here (not a ValueError: a 500)."""
    with pytest.raises(ProtobufError, match=r"ControllerRevision\.data: raw is not JSON"):
        decode_object(revision_with_raw(b"[" * depth + b"]" * depth))


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000])
def test_raw_json_deeper_than_the_store_can_write_is_refused(depth: int) -> None:
    """The store's serialiser refuses more than 255 levels; the body is refused at the door."""
    with pytest.raises(ProtobufError, match=rf"ControllerRevision\.data: raw JSON is nested "
                                            rf"deeper than {MAX_JSON_DEPTH} levels"):
        decode_object(revision_with_raw(b"[" * depth + b"]" * depth))


def test_raw_json_at_the_depth_limit_decodes() -> None:
    depth = MAX_JSON_DEPTH
    decoded = decode_object(revision_with_raw(b"[" * depth + b"]" * depth))
    value, levels = decoded["data"], 0
    while isinstance(value, list):
        levels += 1
        value = value[0] if value else None
    assert levels == depth


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_check_storable_depth() -> None:
    check_storable({"a": [{"b": []}]}, limit=4)
    check_storable("scalar", limit=1)
    with pytest.raises(UnstorableError, match="nested deeper than 3 levels"):
        check_storable({"a": [{"b": []}]}, limit=3)
    check_storable(nested_lists(MAX_JSON_DEPTH))
    with pytest.raises(UnstorableError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        check_storable(nested_lists(MAX_JSON_DEPTH + 1))
    check_storable(nested_lists(254), limit=254)  # orjson's own limit, exactly


def test_check_storable_refuses_what_yaml_makes_but_json_cannot_hold() -> None:
    """What the store's writer would refuse with a 500: bytes (``!!binary``), sets, int keys."""
    for value in ({"a": b"x"}, {"a": {1, 2}}, {1: "x"}):
        with pytest.raises(UnstorableError, match="not JSON"):
            check_storable(value)


def test_check_storable_refuses_yaml_aliases_expanding_the_text() -> None:
    shared: list[Any] = ["x" * 100]
    for _ in range(30):  # what YAML aliases decode to: 2**30 references to one string
        shared = [shared, shared]
    with pytest.raises(UnstorableError, match="expands into more than 10400 values"):
        check_storable(shared, yaml_size=100)
    check_storable({"a": ["x" * 100] * 10}, yaml_size=1200)  # written out about as it is read
