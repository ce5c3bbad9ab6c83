"""Decode Kubernetes protobuf request bodies into JSON-shaped dicts.

helm v4 creates (and may update) its release Secrets with a protobuf request body
(``Content-Type: application/vnd.kubernetes.protobuf``) and does not fall back to JSON, so the
simulated API server must understand that encoding. This module is a small, dependency-free
decoder for the protobuf wire format, limited to the kinds helm writes (core/v1 ``Secret`` and
``ConfigMap``) and the ones kubectl's typed commands send: ``Namespace``, ``ServiceAccount``, the
RBAC kinds (``kubectl create role|rolebinding|...``), ``TokenRequest`` (``kubectl create
token``) and the authentication and authorization reviews (``kubectl auth can-i|whoami``).

A body is the magic prefix ``b"k8s\\x00"`` followed by a ``runtime.Unknown`` envelope
(k8s.io/apimachinery/pkg/runtime/generated.proto)::

    message Unknown  { TypeMeta typeMeta = 1; bytes raw = 2;
                       string contentEncoding = 3; string contentType = 4; }
    message TypeMeta { string apiVersion = 1; string kind = 2; }

``raw`` holds the object message from k8s.io/api/core/v1/generated.proto. The result matches what
the JSON API would carry: the Go marshaller always writes non-pointer scalars (``name: ""``,
``generation: 0``, ``type: ""``) while the JSON tags are ``omitempty``, so empty strings, zero
integers and empty maps/lists are dropped; ``bytes`` map values become padded standard base64.
Like the real API server, timestamps keep whole seconds only (``nanos`` is ignored).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = ("varint", "fixed64", "length-delimited", "group-start", "group-end", "fixed32")

# field number -> list of (wire type, value); value is int for varints, bytes otherwise.
_Fields = dict[int, list[tuple[int, int | bytes]]]


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf object this decoder understands."""


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read an unsigned varint at ``pos``; return (value, new position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError(f"truncated data: varint runs past end of {what}")
        if shift >= 70:
            raise ProtobufError(f"malformed varint in {what}: longer than 10 bytes")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, pos


def _parse(buf: bytes, what: str) -> _Fields:
    """Split one message into its fields; unknown fields are kept and simply never read."""
    fields: _Fields = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"invalid field number 0 in {what}")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(buf, pos, what)
        elif wire in (_FIXED64, _FIXED32, _LEN):
            if wire == _LEN:
                size, pos = _varint(buf, pos, what)
            else:
                size = 8 if wire == _FIXED64 else 4
            if pos + size > len(buf):
                raise ProtobufError(
                    f"truncated data: field {number} of {what} needs {size} bytes, "
                    f"{len(buf) - pos} left"
                )
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ProtobufError(f"bad wire type {wire} for field {number} in {what}")
        fields.setdefault(number, []).append((wire, value))
    return fields


def _values(fields: _Fields, number: int, wire: int, what: str) -> list[Any]:
    out = []
    for got, value in fields.get(number, []):
        if got != wire:
            raise ProtobufError(
                f"bad wire type for field {number} in {what}: expected {_WIRE_NAMES[wire]}, "
                f"got {_WIRE_NAMES[got]}"
            )
        out.append(value)
    return out


def _text(raw: bytes) -> str:
    # Go does not validate proto2 strings, and encoding/json replaces invalid UTF-8 with U+FFFD.
    return raw.decode("utf-8", errors="replace")


def _string(fields: _Fields, number: int, what: str) -> str:
    """Last occurrence wins, as in protobuf; absent -> ""."""
    values = _values(fields, number, _LEN, what)
    return _text(values[-1]) if values else ""


def _int64(fields: _Fields, number: int, what: str) -> int | None:
    values = _values(fields, number, _VARINT, what)
    if not values:
        return None
    return values[-1] - (1 << 64) if values[-1] >= 1 << 63 else values[-1]


def _bool(fields: _Fields, number: int, what: str) -> bool | None:
    values = _values(fields, number, _VARINT, what)
    return bool(values[-1]) if values else None


def _message(fields: _Fields, number: int, what: str) -> bytes | None:
    """Embedded message; repeated occurrences merge, which is what concatenation means."""
    values = _values(fields, number, _LEN, what)
    return b"".join(values) if values else None


def _map(fields: _Fields, number: int, what: str, *, binary: bool = False) -> dict[str, str]:
    """map<string,string> or, with ``binary``, map<string,bytes> rendered as base64."""
    out: dict[str, str] = {}
    for entry in _values(fields, number, _LEN, what):
        entry_fields = _parse(entry, f"{what} map entry")
        key = _string(entry_fields, 1, f"{what} map entry")
        raw = _values(entry_fields, 2, _LEN, f"{what} map entry")
        value = raw[-1] if raw else b""
        out[key] = base64.b64encode(value).decode("ascii") if binary else _text(value)
    return out


def _time(buf: bytes, what: str) -> str | None:
    """metav1.Time {1 seconds, 2 nanos}; an empty message is the zero time (JSON: omitted)."""
    if not buf:
        return None
    seconds = _int64(_parse(buf, what), 1, what) or 0
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ProtobufError(f"{what} seconds out of range: {seconds}") from exc
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _owner_reference(buf: bytes) -> dict[str, Any]:
    what = "OwnerReference"
    fields = _parse(buf, what)
    ref: dict[str, Any] = {
        "apiVersion": _string(fields, 5, what),
        "kind": _string(fields, 1, what),
        "name": _string(fields, 3, what),
        "uid": _string(fields, 4, what),
    }
    for key, number in (("controller", 6), ("blockOwnerDeletion", 7)):
        if (flag := _bool(fields, number, what)) is not None:
            ref[key] = flag
    return ref


def _object_meta(buf: bytes) -> dict[str, Any]:
    what = "ObjectMeta"
    fields = _parse(buf, what)
    meta: dict[str, Any] = {}
    for key, number in (
        ("name", 1),
        ("generateName", 2),
        ("namespace", 3),
        ("selfLink", 4),
        ("uid", 5),
        ("resourceVersion", 6),
    ):
        if text := _string(fields, number, what):
            meta[key] = text
    if generation := _int64(fields, 7, what):
        meta["generation"] = generation
    for key, number in (("creationTimestamp", 8), ("deletionTimestamp", 9)):
        raw = _message(fields, number, what)
        if raw is not None and (stamp := _time(raw, f"{what}.{key}")) is not None:
            meta[key] = stamp
    if (grace := _int64(fields, 10, what)) is not None:
        meta["deletionGracePeriodSeconds"] = grace
    for key, number in (("labels", 11), ("annotations", 12)):
        if mapping := _map(fields, number, f"{what}.{key}"):
            meta[key] = mapping
    if owners := _values(fields, 13, _LEN, what):
        meta["ownerReferences"] = [_owner_reference(owner) for owner in owners]
    if finalizers := _values(fields, 14, _LEN, what):
        meta["finalizers"] = [_text(item) for item in finalizers]
    # managedFields (17) is server-owned and deliberately not decoded.
    return meta


def _secret(fields: _Fields, obj: dict[str, Any]) -> None:
    what = "Secret"
    if data := _map(fields, 2, f"{what}.data", binary=True):
        obj["data"] = data
    if string_data := _map(fields, 4, f"{what}.stringData"):
        obj["stringData"] = string_data
    if secret_type := _string(fields, 3, what):
        obj["type"] = secret_type
    if (immutable := _bool(fields, 5, what)) is not None:
        obj["immutable"] = immutable


def _config_map(fields: _Fields, obj: dict[str, Any]) -> None:
    what = "ConfigMap"
    if data := _map(fields, 2, f"{what}.data"):
        obj["data"] = data
    if binary_data := _map(fields, 3, f"{what}.binaryData", binary=True):
        obj["binaryData"] = binary_data
    if (immutable := _bool(fields, 4, what)) is not None:
        obj["immutable"] = immutable


def _delete_options(fields: _Fields) -> dict[str, Any]:
    """meta/v1 DeleteOptions, which helm sends in protobuf when it deletes its release Secret."""
    what = "DeleteOptions"
    options: dict[str, Any] = {}
    if (grace := _int64(fields, 1, what)) is not None:
        options["gracePeriodSeconds"] = grace
    if (pre := _message(fields, 2, what)) is not None:
        pre_fields = _parse(pre, "Preconditions")
        options["preconditions"] = {
            key: value for key, value in (("uid", _string(pre_fields, 1, "Preconditions")),
                                          ("resourceVersion",
                                           _string(pre_fields, 2, "Preconditions")))
            if value}
    if (orphan := _bool(fields, 3, what)) is not None:
        options["orphanDependents"] = orphan
    if policy := _string(fields, 4, what):
        options["propagationPolicy"] = policy
    if dry_run := _values(fields, 5, _LEN, what):
        options["dryRun"] = [_text(item) for item in dry_run]
    return options


def _namespace(fields: _Fields, obj: dict[str, Any]) -> None:
    """v1 Namespace (`kubectl create namespace` sends it in protobuf): spec.finalizers."""
    spec = _message(fields, 2, "Namespace")
    if spec is not None:
        finalizers = _values(_parse(spec, "NamespaceSpec"), 1, _LEN, "NamespaceSpec")
        if finalizers:
            obj["spec"] = {"finalizers": [_text(item) for item in finalizers]}


def _strings(fields: _Fields, number: int, what: str) -> list[str]:
    return [_text(item) for item in _values(fields, number, _LEN, what)]


def _record(buf: bytes, what: str, names: tuple[str, ...]) -> dict[str, Any]:
    """A message of string fields numbered 1.. in the order of `names`; empties omitted."""
    fields = _parse(buf, what)
    return {key: text for number, key in enumerate(names, 1)
            if (text := _string(fields, number, what))}


def _service_account(fields: _Fields, obj: dict[str, Any]) -> None:
    """v1 ServiceAccount (`kubectl create serviceaccount`)."""
    what = "ServiceAccount"
    if secrets := _values(fields, 2, _LEN, what):
        obj["secrets"] = [_record(item, "ObjectReference", (
            "kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"))
            for item in secrets]
    if pulls := _values(fields, 3, _LEN, what):
        obj["imagePullSecrets"] = [_record(item, "LocalObjectReference", ("name",))
                                   for item in pulls]
    if (automount := _bool(fields, 4, what)) is not None:
        obj["automountServiceAccountToken"] = automount


def _policy_rules(fields: _Fields, number: int, what: str) -> list[dict[str, Any]]:
    rules = []
    for item in _values(fields, number, _LEN, what):
        rule_fields = _parse(item, "PolicyRule")
        rule: dict[str, Any] = {}
        for key, index in (("verbs", 1), ("apiGroups", 2), ("resources", 3),
                           ("resourceNames", 4), ("nonResourceURLs", 5)):
            values = _strings(rule_fields, index, "PolicyRule")
            if values or (key == "apiGroups" and _values(rule_fields, 2, _LEN, "PolicyRule")):
                rule[key] = values
        rules.append(rule)
    return rules


def _label_selector(buf: bytes) -> dict[str, Any]:
    what = "LabelSelector"
    fields = _parse(buf, what)
    selector: dict[str, Any] = {}
    if labels := _map(fields, 1, f"{what}.matchLabels"):
        selector["matchLabels"] = labels
    expressions = []
    for item in _values(fields, 2, _LEN, what):
        expr = _parse(item, "LabelSelectorRequirement")
        entry: dict[str, Any] = {"key": _string(expr, 1, "LabelSelectorRequirement"),
                                 "operator": _string(expr, 2, "LabelSelectorRequirement")}
        if values := _strings(expr, 3, "LabelSelectorRequirement"):
            entry["values"] = values
        expressions.append(entry)
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


def _role(fields: _Fields, obj: dict[str, Any]) -> None:
    """rbac/v1 Role and ClusterRole (`kubectl create role|clusterrole`)."""
    what = obj["kind"]
    obj["rules"] = _policy_rules(fields, 2, what)
    aggregation = _message(fields, 3, what)
    if aggregation is not None:
        selectors = _values(_parse(aggregation, "AggregationRule"), 1, _LEN, "AggregationRule")
        obj["aggregationRule"] = {"clusterRoleSelectors": [_label_selector(item)
                                                           for item in selectors]}


def _role_binding(fields: _Fields, obj: dict[str, Any]) -> None:
    """rbac/v1 RoleBinding and ClusterRoleBinding (`kubectl create rolebinding|...`)."""
    what = obj["kind"]
    subjects = _values(fields, 2, _LEN, what)
    if subjects:
        obj["subjects"] = [_record(item, "Subject", ("kind", "apiGroup", "name", "namespace"))
                           for item in subjects]
    ref = _message(fields, 3, what)
    obj["roleRef"] = _record(ref or b"", "RoleRef", ("apiGroup", "kind", "name"))


def _resource_attributes(buf: bytes) -> dict[str, Any]:
    return _record(buf, "ResourceAttributes", ("namespace", "verb", "group", "version",
                                               "resource", "subresource", "name"))


def _access_review(fields: _Fields, obj: dict[str, Any]) -> None:
    """authorization/v1 (Self|Local)SubjectAccessReview: the spec (`kubectl auth can-i`)."""
    what = f"{obj['kind']}Spec"
    spec: dict[str, Any] = {}
    raw = _message(fields, 2, obj["kind"])
    spec_fields = _parse(raw or b"", what)
    if (resource := _message(spec_fields, 1, what)) is not None:
        spec["resourceAttributes"] = _resource_attributes(resource)
    if (non_resource := _message(spec_fields, 2, what)) is not None:
        spec["nonResourceAttributes"] = _record(non_resource, "NonResourceAttributes",
                                                ("path", "verb"))
    if obj["kind"] != "SelfSubjectAccessReview":
        if user := _string(spec_fields, 3, what):
            spec["user"] = user
        if groups := _strings(spec_fields, 4, what):
            spec["groups"] = groups
        extra: dict[str, list[str]] = {}
        for entry in _values(spec_fields, 5, _LEN, what):
            entry_fields = _parse(entry, f"{what}.extra entry")
            key = _string(entry_fields, 1, f"{what}.extra entry")
            value = _message(entry_fields, 2, f"{what}.extra entry") or b""
            extra[key] = _strings(_parse(value, "ExtraValue"), 1, "ExtraValue")
        if extra:
            spec["extra"] = extra
        if uid := _string(spec_fields, 6, what):
            spec["uid"] = uid
    obj["spec"] = spec


def _rules_review(fields: _Fields, obj: dict[str, Any]) -> None:
    """authorization/v1 SelfSubjectRulesReview (`kubectl auth can-i --list`)."""
    raw = _message(fields, 2, obj["kind"])
    obj["spec"] = _record(raw or b"", "SelfSubjectRulesReviewSpec", ("namespace",))


def _token_review(fields: _Fields, obj: dict[str, Any]) -> None:
    """authentication/v1 TokenReview."""
    spec_fields = _parse(_message(fields, 2, "TokenReview") or b"", "TokenReviewSpec")
    spec: dict[str, Any] = {"token": _string(spec_fields, 1, "TokenReviewSpec")}
    if audiences := _strings(spec_fields, 2, "TokenReviewSpec"):
        spec["audiences"] = audiences
    obj["spec"] = spec


def _token_request(fields: _Fields, obj: dict[str, Any]) -> None:
    """authentication/v1 TokenRequest (`kubectl create token`)."""
    what = "TokenRequestSpec"
    spec_fields = _parse(_message(fields, 2, "TokenRequest") or b"", what)
    spec: dict[str, Any] = {}
    if audiences := _strings(spec_fields, 1, what):
        spec["audiences"] = audiences
    if (seconds := _int64(spec_fields, 4, what)) is not None:
        spec["expirationSeconds"] = seconds
    if (bound := _message(spec_fields, 3, what)) is not None:
        spec["boundObjectRef"] = _record(bound, "BoundObjectReference",
                                         ("kind", "apiVersion", "name", "uid"))
    obj["spec"] = spec


def _nothing(fields: _Fields, obj: dict[str, Any]) -> None:
    """authentication/v1 SelfSubjectReview (`kubectl auth whoami`): no spec."""


_DECODERS: dict[tuple[str, str], Callable[[_Fields, dict[str, Any]], None]] = {
    ("v1", "ServiceAccount"): _service_account,
    ("rbac.authorization.k8s.io/v1", "Role"): _role,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): _role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _role_binding,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _role_binding,
    ("authorization.k8s.io/v1", "SubjectAccessReview"): _access_review,
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview"): _access_review,
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): _access_review,
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): _rules_review,
    ("authentication.k8s.io/v1", "TokenReview"): _token_review,
    ("authentication.k8s.io/v1", "TokenRequest"): _token_request,
    ("authentication.k8s.io/v1", "SelfSubjectReview"): _nothing,
}


def _decoder_for(api_version: str, kind: str) -> Callable[[_Fields, dict[str, Any]], None]:
    if api_version == "v1" and kind == "Secret":
        return _secret
    if api_version == "v1" and kind == "ConfigMap":
        return _config_map
    if api_version == "v1" and kind == "Namespace":
        return _namespace
    decoder = _DECODERS.get((api_version, kind))
    if decoder is not None:
        return decoder
    raise ProtobufError(
        f"cannot decode protobuf for kind {kind!r} (apiVersion {api_version!r}); "
        "only v1 Secret, ConfigMap, Namespace and ServiceAccount, the RBAC kinds, and "
        "the authentication and authorization reviews are supported"
    )


def decode_object(body: bytes) -> dict[str, Any]:
    """Decode a ``application/vnd.kubernetes.protobuf`` body into a JSON-shaped object dict."""
    data = bytes(body)  # also accepts bytearray / memoryview from the HTTP layer
    if not data.startswith(MAGIC):
        raise ProtobufError(
            f"not a Kubernetes protobuf body: missing magic prefix {MAGIC!r} "
            f"(starts with {data[:4]!r})"
        )
    envelope = _parse(data[len(MAGIC) :], "runtime.Unknown")
    type_meta = _parse(_message(envelope, 1, "runtime.Unknown") or b"", "TypeMeta")
    api_version = _string(type_meta, 1, "TypeMeta")
    kind = _string(type_meta, 2, "TypeMeta")
    if kind == "DeleteOptions":
        raw_options = _values(envelope, 2, _LEN, "runtime.Unknown")
        options = _delete_options(_parse(raw_options[-1] if raw_options else b"", kind))
        return {"apiVersion": api_version or "v1", "kind": kind, **options}
    decode_kind = _decoder_for(api_version, kind)
    if encoding := _string(envelope, 3, "runtime.Unknown"):
        raise ProtobufError(f"unsupported contentEncoding {encoding!r} for {kind}")
    raw = _values(envelope, 2, _LEN, "runtime.Unknown")
    fields = _parse(raw[-1] if raw else b"", kind)
    obj: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": _object_meta(_message(fields, 1, kind) or b""),
    }
    decode_kind(fields, obj)
    return obj
