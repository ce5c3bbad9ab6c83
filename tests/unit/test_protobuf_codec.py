"""Tests for pystol_sim.protobuf_codec, using a tiny protobuf encoder defined here.

The encoder mimics what Go's generated (gogo) marshallers emit for k8s objects: non-pointer
strings/ints are always written (even when empty/zero), a zero metav1.Time is an empty message,
and map entries are written in sorted key order.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pytest

from pystol_sim.protobuf_codec import (
    PROTOBUF_CONTENT_TYPE,
    ProtobufError,
    decode_object,
)

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
    with pytest.raises(ProtobufError, match=r"wire type.*field 3 in Secret"):
        decode_object(envelope("Secret", vfield(3, 1)))


def test_overlong_varint() -> None:
    with pytest.raises(ProtobufError, match="varint"):
        decode_object(envelope("Secret", b"\x28" + b"\xff" * 11 + b"\x01"))


@pytest.mark.parametrize(
    ("kind", "api_version"), [("Deployment", "apps/v1"), ("Pod", "v1"), ("Secret", "v2")]
)
def test_unsupported_kind(kind: str, api_version: str) -> None:
    with pytest.raises(ProtobufError, match=f"kind '{kind}'"):
        decode_object(envelope(kind, b"", api_version))


def test_unsupported_content_encoding() -> None:
    type_meta = lfield(1, "v1") + lfield(2, "Secret")
    body = b"k8s\x00" + lfield(1, type_meta) + lfield(2, b"") + lfield(3, "gzip")
    with pytest.raises(ProtobufError, match="contentEncoding"):
        decode_object(body)


def test_error_is_value_error() -> None:
    assert issubclass(ProtobufError, ValueError)
