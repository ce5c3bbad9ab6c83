"""Decode Kubernetes protobuf request bodies into the JSON the same client would have sent.

Every typed ``kubectl create …`` (deployment, service, job, quota, role, …) and helm's release
Secrets arrive as ``Content-Type: application/vnd.kubernetes.protobuf``, and neither falls back
to JSON, so the simulated API server must read protobuf for every built-in kind it serves. A
body is the magic prefix ``b"k8s\\x00"`` followed by a ``runtime.Unknown`` envelope
(``{TypeMeta typeMeta = 1; bytes raw = 2; string contentEncoding = 3; …}``) whose ``raw`` is
the object's own message.

The messages are not written here by hand: ``pystol_sim/protobuf/kubernetes.binpb`` is a
descriptor set compiled from Kubernetes' published ``generated.proto`` files and
``json_fields.json`` holds what only the Go struct tags know (JSON name, pointer, omitempty,
omitzero, inline); ``scripts/regenerate_sim_protobuf.py`` rebuilds both. This module parses with
the ``protobuf`` runtime and walks the message once, producing the dict Go's ``encoding/json``
would print for the object the API server decoded:

- Go's protobuf marshallers always write non-pointer scalars (``name: ""``, ``paused: false``)
  but JSON's ``omitempty`` drops them; a pointer field is written only when set, so a pointer
  set to zero (``replicas: 0``, ``immutable: false``) stays. Non-pointer structs are always
  printed (``"status": {}``) unless tagged ``omitzero`` (``creationTimestamp``).
- ``Time`` → RFC 3339 in whole seconds (as the API server keeps it), ``MicroTime`` → six
  fractional digits, a zero time → ``null``; ``Duration`` → Go's duration string (``"1h0m0s"``);
  ``Quantity`` → its string; ``IntOrString`` → int or string; ``RawExtension``/``FieldsV1`` → the
  JSON in ``raw``; ``bytes`` → standard base64; maps → objects; named slices (``ExtraValue``) →
  lists; ``json:",inline"`` structs are merged into their parent.

A malformed, truncated, too large or too deeply nested body, a kind this server does not serve
(or a ``…List``, never a request body), a body that would expand into more than
:data:`MAX_VALUES` values, raw JSON nested deeper than :data:`MAX_JSON_DEPTH`, or a known field
sent with the wrong wire type raises :class:`ProtobufError` naming the kind and field; the
server answers it with a 400 Status. The server reads the envelope first (:func:`read_envelope`)
and checks its kind against the resource before anything is converted (:func:`decode_envelope`).
:func:`check_storable` is the server's check, for every body format, that what it decoded is
JSON the store can write.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# The API server's own request limit (and the sim's: server.MAX_BODY).
MAX_BODY_BYTES = 3 * 1024 * 1024
# The protobuf runtime refuses messages nested deeper than 100 on the wire; the walk keeps the
# same bound (only CRD schemas nest: a pod template inside a CronJob is about 12 levels).
MAX_DEPTH = 100
# Every empty nested message on the wire costs two bytes but becomes a dict, often with
# always-printed sub-structs (``"resources": {}``): a hostile body of repeated empty items would
# expand a thousandfold. The walk counts what it produces (messages, list items, map entries,
# unknown fields) and stops at a budget that grows with the body up to a hard cap. Real objects
# produce well under one value per byte (a Deployment: ~0.1; a ConfigMap entry: 8 bytes or more).
MAX_VALUES = 100_000
_VALUES_FLOOR = 10_000
# Nesting of the JSON object a body decodes to (objects and lists). The store's serialiser
# refuses more than 255 levels; a CRD schema 45 levels deep (the runtime's protobuf limit) is
# about 100 JSON levels.
MAX_JSON_DEPTH = 200

_DATA_DIR = Path(__file__).resolve().parent / "protobuf"
_META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_APIEXTENSIONS = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1"
_ENVELOPE = "k8s.io.apimachinery.pkg.runtime.Unknown"

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 3: "group-start",
               4: "group-end", 5: "fixed32"}


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf object this server can decode."""


class _Omit:
    """Marker: the field is left out of the JSON (``omitempty``/``omitzero``/unset pointer)."""


_OMIT = _Omit()


@dataclass(frozen=True)
class _Field:
    """One proto field with the JSON facts of its Go struct field."""

    descriptor: Any  # google.protobuf.descriptor.FieldDescriptor
    json: str
    pointer: bool
    omitempty: bool
    omitzero: bool
    inline: bool


# --------------------------------------------------------------------------- catalogue


class _Catalogue:
    """The descriptor pool and JSON side table, loaded once on the first protobuf body."""

    def __init__(self) -> None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        self._get_class = message_factory.GetMessageClass
        file_set = descriptor_pb2.FileDescriptorSet.FromString(
            (_DATA_DIR / "kubernetes.binpb").read_bytes())
        self.pool = descriptor_pool.DescriptorPool()
        for file in file_set.file:  # --include_imports lists dependencies first
            self.pool.Add(file)
        table = json.loads((_DATA_DIR / "json_fields.json").read_text())
        self.sources: dict[str, str] = table["sources"]
        self.groups: dict[str, str] = table["groups"]
        self.kinds: frozenset[str] = frozenset(table["kinds"])
        self.named_slices: frozenset[str] = frozenset(table["named_slices"])
        self._tags: dict[str, list[list[Any]]] = table["messages"]
        self._plans: dict[str, tuple[_Field, ...]] = {}

    def message_class(self, full_name: str) -> Any:
        return self._get_class(self.pool.FindMessageTypeByName(full_name))

    def plan(self, descriptor: Any) -> tuple[_Field, ...]:
        """The message's fields in Go struct order, with their JSON names and flags."""
        plan = self._plans.get(descriptor.full_name)
        if plan is not None:
            return plan
        fields: list[_Field] = []
        seen: set[int] = set()
        for number, name, flags in self._tags.get(descriptor.full_name, []):
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            seen.add(number)
            fields.append(_Field(field, name, "p" in flags, "e" in flags, "z" in flags,
                                 "i" in flags))
        for field in descriptor.fields:  # not in the side table: proto name, omitempty
            if field.number not in seen:
                fields.append(_Field(field, field.name, False, True, False, False))
        plan = self._plans[descriptor.full_name] = tuple(fields)
        return plan

    def message_for(self, api_version: str, kind: str) -> str:
        if kind.endswith("List"):
            # Lists are answers, never request bodies: nothing creates or deletes one.
            raise ProtobufError(f"cannot decode protobuf for kind {kind!r}: a list is not "
                                "accepted as a request body")
        package = self.groups.get(api_version)
        if package is not None and f"{package}.{kind}" in self.kinds:
            return f"{package}.{kind}"
        # Option kinds (DeleteOptions, …) are meta.k8s.io/v1 types every group version accepts.
        if f"{_META}.{kind}" in self.kinds and kind.endswith("Options"):
            return f"{_META}.{kind}"
        served = ", ".join(sorted(self.groups))
        raise ProtobufError(
            f"cannot decode protobuf for kind {kind!r} (apiVersion {api_version!r}): not a "
            f"built-in kind of the group versions this server decodes ({served})")


@functools.cache
def _catalogue() -> _Catalogue:
    return _Catalogue()


def message_class(full_name: str) -> Any:
    """The protobuf class of a Kubernetes message (``k8s.io.api.apps.v1.Deployment``), built
    from the same descriptors the decoder uses, e.g. to encode test bodies."""
    return _catalogue().message_class(full_name)


def descriptor_sources() -> dict[str, str]:
    """The kubernetes/api and kubernetes/apimachinery commits the descriptors come from."""
    return dict(_catalogue().sources)


# --------------------------------------------------------------------------- special types


def _rfc3339(seconds: int, nanos: int, path: str, *, micro: bool) -> str:
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ProtobufError(f"{path}: seconds out of range: {seconds}") from exc
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{max(nanos, 0) // 1000:06d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(msg: Any, path: str) -> str | None:
    """metav1.Time: an empty message is Go's zero time, which JSON prints as ``null``."""
    if msg.ByteSize() == 0:
        return None
    return _rfc3339(msg.seconds, msg.nanos, path, micro=False)


def _micro_time(msg: Any, path: str) -> str | None:
    if msg.ByteSize() == 0:
        return None
    return _rfc3339(msg.seconds, msg.nanos, path, micro=True)


def _fraction(value: int, precision: int) -> tuple[str, int]:
    """Go's fmtFrac: the last ``precision`` digits as ".ddd" without trailing zeros."""
    digits: list[str] = []
    printed = False
    for _ in range(precision):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        value //= 10
    return ("." + "".join(reversed(digits)) if printed else ""), value


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String()``: ``1h0m0s``, ``1.5s``, ``300ms``, ``0s``."""
    if nanoseconds == 0:
        return "0s"
    value = abs(nanoseconds)
    if value < 1_000_000_000:
        unit, precision = (("ns", 0) if value < 1_000 else ("µs", 3) if value < 1_000_000
                           else ("ms", 6))
        fraction, value = _fraction(value, precision)
        text = f"{value}{fraction}{unit}"
    else:
        fraction, value = _fraction(value, 9)
        text = f"{value % 60}{fraction}s"
        value //= 60
        if value:
            text = f"{value % 60}m{text}"
            value //= 60
            if value:
                text = f"{value}h{text}"
    return "-" + text if nanoseconds < 0 else text


def _duration(msg: Any, path: str) -> str:
    return go_duration(msg.duration)


def _quantity(msg: Any, path: str) -> str:
    return _text(msg.string) or "0"


def _int_or_string(msg: Any, path: str) -> int | str:
    if msg.type == 1:
        return _text(msg.strVal)
    if msg.type != 0:
        raise ProtobufError(f"{path}: IntOrString type must be 0 (int) or 1 (string), "
                            f"got {msg.type}")
    return int(msg.intVal)


class UnstorableError(ValueError):
    """A decoded body the store could not write out: nested too deeply, not JSON (YAML's
    ``!!binary``, sets, non-string keys), or expanded by YAML aliases far beyond its text."""


# orjson, which writes every stored object and every list and watch event around one, refuses
# a 255th level of nesting.
_ORJSON_MAX_DEPTH = 254


def _check_expansion(value: Any, budget: int) -> None:
    """Count nodes and string characters, stopping once past ``budget``: YAML aliases let a few
    hundred bytes name one list a billion times ("billion laughs"), which a writer expands."""
    stack = [value]
    spent = 0
    while stack:
        item = stack.pop()
        children = itertools.chain(item.keys(), item.values()) if isinstance(item, dict) else item
        for child in children:
            spent += len(child) + 1 if isinstance(child, str) else 1
            if spent > budget:
                raise UnstorableError(f"expands into more than {budget} values and characters "
                                      "(YAML aliases?)")
            if isinstance(child, (dict, list)):
                stack.append(child)


def check_storable(value: Any, limit: int = MAX_JSON_DEPTH, *, yaml_size: int | None = None
                   ) -> None:
    """Raise :class:`UnstorableError` unless ``value`` nests objects/lists at most ``limit``
    deep (``{}`` is 1) and is JSON the store can write. ``yaml_size``: the value came from YAML
    of that many bytes, so also refuse what its aliases expand past a few times that.

    The store's own writer is the judge, at C speed (walking a million small lists in Python
    takes over a second): wrapped in enough lists that it reaches orjson's limit exactly when
    the value is deeper than ``limit``."""
    if yaml_size is not None and isinstance(value, (dict, list)):
        _check_expansion(value, 4 * yaml_size + 10_000)
    probe = value
    for _ in range(_ORJSON_MAX_DEPTH - limit):
        probe = [probe]
    try:
        orjson.dumps(probe)
    except orjson.JSONEncodeError as exc:
        if "recursion" in str(exc).lower():
            raise UnstorableError(f"nested deeper than {limit} levels") from exc
        raise UnstorableError(f"not JSON: {exc}") from exc


def _raw_json(raw: bytes, path: str) -> Any:
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
        check_storable(value)
    except UnstorableError as exc:
        raise ProtobufError(f"{_short(path)}: raw JSON is {exc}") from exc
    except (ValueError, RecursionError) as exc:  # orjson refuses over 1024 levels itself
        raise ProtobufError(f"{_short(path)}: raw is not JSON ({exc})") from exc
    return value


def _raw_extension(msg: Any, path: str) -> Any:
    return _raw_json(msg.raw, path)


def _fields_v1(msg: Any, path: str) -> Any:
    return _raw_json(msg.Raw, path)


_SPECIAL = {
    f"{_META}.Time": _time,
    f"{_META}.MicroTime": _micro_time,
    f"{_META}.Duration": _duration,
    f"{_META}.FieldsV1": _fields_v1,
    "k8s.io.apimachinery.pkg.api.resource.Quantity": _quantity,
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": _quantity,
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": _int_or_string,
    "k8s.io.apimachinery.pkg.runtime.RawExtension": _raw_extension,
    f"{_APIEXTENSIONS}.JSON": _raw_extension,
}


# --------------------------------------------------------------------------- conversion


def _short(path: str) -> str:
    """A field path for an error message, its middle cut when a deep nesting made it long."""
    return path if len(path) <= 200 else f"{path[:90]} … {path[-90:]}"


def _text(value: str | bytes) -> str:
    """A proto2 string. Go does not validate them and the runtime hands invalid UTF-8 over as
    bytes; Go's encoding/json replaces it with U+FFFD, and so does this."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _is_zero(msg: Any) -> bool:
    """Go's IsZero for a struct decoded from ``msg``: nothing but zero values set."""
    for field, value in msg.ListFields():
        if field.message_type is not None and not _is_repeated(field):
            if not _is_zero(value):
                return False
        elif value:
            return False
    return True


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _is_map(field: Any) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


class _Converter:
    def __init__(self, catalogue: _Catalogue, budget: int = MAX_VALUES) -> None:
        self.catalogue = catalogue
        self.budget = self.limit = budget

    def spend(self, count: int, path: str) -> None:
        self.budget -= count
        if self.budget < 0:
            raise ProtobufError(f"{_short(path)}: the body expands into more than {self.limit} "
                                "values (messages, list items, map entries, unknown fields)")

    def message(self, msg: Any, path: str, depth: int) -> Any:
        # A backstop: the runtime has already refused wire nesting beyond 100 (map entries count
        # there, not here), so this only matters if its limit is ever raised.
        if depth > MAX_DEPTH:
            raise ProtobufError(f"{_short(path)}: nested deeper than {MAX_DEPTH} messages")
        self.spend(1, path)
        descriptor = msg.DESCRIPTOR
        special = _SPECIAL.get(descriptor.full_name)
        if special is not None:
            return special(msg, path)
        if descriptor.full_name.startswith(f"{_APIEXTENSIONS}.JSONSchemaPropsOr"):
            return self._schema_or(msg, path, depth)
        self._check_unknown(msg, path)
        if descriptor.full_name in self.catalogue.named_slices:
            self.spend(sum(len(getattr(msg, field.name)) for field in descriptor.fields), path)
            return [self.value(field, item, f"{path}[{index}]", depth)
                    for field in descriptor.fields
                    for index, item in enumerate(getattr(msg, field.name))]
        out: dict[str, Any] = {}
        for field in self.catalogue.plan(descriptor):
            value = self.field(msg, field, f"{path}.{field.json}", depth)
            if value is _OMIT:
                continue
            if field.inline and isinstance(value, dict):
                out.update(value)
            else:
                out[field.json] = value
        return out

    def field(self, msg: Any, field: _Field, path: str, depth: int) -> Any:
        proto = field.descriptor
        if _is_repeated(proto):
            container = getattr(msg, proto.name)
            if not container:
                # Go's protobuf decoder leaves an empty list or map nil: omitted, else null.
                return _OMIT if field.omitempty or field.omitzero else None
            self.spend(len(container), path)
            if _is_map(proto):
                value_field = proto.message_type.fields_by_name["value"]
                return {_text(key): self.value(value_field, container[key],
                                               f"{path}[{_text(key)}]", depth)
                        for key in container}
            return [self.value(proto, item, f"{path}[{index}]", depth)
                    for index, item in enumerate(container)]
        present = msg.HasField(proto.name)
        if field.pointer and not present:
            return _OMIT
        value = getattr(msg, proto.name)
        if proto.message_type is not None:
            if field.omitzero and _is_zero(value):
                return _OMIT
            return self.message(value, path, depth + 1)
        if not field.pointer and (field.omitempty or field.omitzero) and not value:
            return _OMIT
        if proto.type == proto.TYPE_BYTES and not present:
            return None  # a nil []byte without omitempty
        return self.value(proto, value, path, depth)

    def value(self, proto: Any, value: Any, path: str, depth: int) -> Any:
        if proto.message_type is not None:
            return self.message(value, path, depth + 1)
        if proto.type == proto.TYPE_BYTES:
            return base64.b64encode(value).decode("ascii")
        if proto.type == proto.TYPE_STRING:
            return _text(value)
        return value

    def _schema_or(self, msg: Any, path: str, depth: int) -> Any:
        """The CRD schema unions, printed as their Go MarshalJSON does: a schema, or else the
        alternative (a list of schemas, a boolean, a list of strings)."""
        name = msg.DESCRIPTOR.name
        if name == "JSONSchemaPropsOrArray":
            if msg.jSONSchemas:
                self.spend(len(msg.jSONSchemas), path)
                return [self.message(item, f"{path}[{index}]", depth + 1)
                        for index, item in enumerate(msg.jSONSchemas)]
            return self.message(msg.schema, path, depth + 1) if msg.HasField("schema") else None
        if name == "JSONSchemaPropsOrBool":
            if msg.HasField("schema"):
                return self.message(msg.schema, path, depth + 1)
            return bool(msg.allows)
        if msg.property:  # JSONSchemaPropsOrStringArray
            self.spend(len(msg.property), path)
            return [_text(item) for item in msg.property]
        return self.message(msg.schema, path, depth + 1) if msg.HasField("schema") else None

    def _check_unknown(self, msg: Any, path: str) -> None:
        """A known field number with another wire type is kept as unknown by protobuf; Go
        refuses it, and so does this server (it would otherwise vanish silently)."""
        from google.protobuf import unknown_fields

        fields = msg.DESCRIPTOR.fields_by_number
        unknown = unknown_fields.UnknownFieldSet(msg)
        self.spend(len(unknown), path)
        for index in range(len(unknown)):
            entry = unknown[index]
            known = fields.get(entry.field_number)
            if known is not None:
                raise ProtobufError(
                    f"bad wire type for field {entry.field_number} ({known.name}) in {path}: "
                    f"got {_WIRE_NAMES.get(entry.wire_type, entry.wire_type)}")


# --------------------------------------------------------------------------- diagnosis


def _varint(buf: memoryview, pos: int, what: str) -> tuple[int, int]:
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
            return result, pos


def _diagnose(buf: memoryview, descriptor: Any, path: str, depth: int = 0) -> None:
    """Find why the protobuf runtime refused ``buf`` and raise it with the field's path.

    The runtime only says "Error parsing message"; this walks the wire format along the
    descriptors, so the error names the field (``Deployment.spec.template``) and the fault.
    Nested messages are views, not copies: a deep body costs no more memory than a flat one.
    """
    if depth > MAX_DEPTH:
        raise ProtobufError(f"{_short(path)}: nested deeper than {MAX_DEPTH} messages")
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, path)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"invalid field number 0 in {path}")
        field = descriptor.fields_by_number.get(number) if descriptor is not None else None
        where = f"field {number}{f' ({field.name})' if field else ''} of {path}"
        if wire == _VARINT:
            _, pos = _varint(buf, pos, where)
        elif wire in (_FIXED64, _FIXED32, _LEN):
            if wire == _LEN:
                size, pos = _varint(buf, pos, where)
            else:
                size = 8 if wire == _FIXED64 else 4
            if pos + size > len(buf):
                raise ProtobufError(
                    f"truncated data: {where} needs {size} bytes, {len(buf) - pos} left")
            if wire == _LEN and field is not None and field.message_type is not None:
                _diagnose(buf[pos : pos + size], field.message_type,
                          f"{path}.{field.name}", depth + 1)
            pos += size
        else:
            raise ProtobufError(f"bad wire type {wire} ({_WIRE_NAMES.get(wire, 'invalid')}) "
                                f"for {where}")


def _parse(catalogue: _Catalogue, full_name: str, raw: bytes, path: str) -> Any:
    from google.protobuf.message import DecodeError

    try:
        return catalogue.message_class(full_name).FromString(raw)
    except DecodeError as exc:
        _diagnose(memoryview(raw), catalogue.pool.FindMessageTypeByName(full_name), path)
        raise ProtobufError(f"malformed protobuf in {path}: {exc}") from exc


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class Envelope:
    """The ``runtime.Unknown`` around a protobuf object: its type and its undecoded bytes."""

    api_version: str
    kind: str
    raw: bytes
    content_encoding: str


def read_envelope(body: bytes | bytearray | memoryview) -> Envelope:
    """Check the magic prefix and size, parse the envelope and refuse a kind this server does
    not decode (or a list), not yet parsing the object in it: the caller checks the kind
    against the resource before paying for the conversion. A missing apiVersion or kind is
    left for the caller to fill in from the resource, as Go does."""
    data = bytes(body)  # also accepts bytearray / memoryview from the HTTP layer
    if not data.startswith(MAGIC):
        raise ProtobufError(
            f"not a Kubernetes protobuf body: missing magic prefix {MAGIC!r} "
            f"(starts with {data[:4]!r})"
        )
    if len(data) > MAX_BODY_BYTES:
        raise ProtobufError(f"protobuf body of {len(data)} bytes exceeds {MAX_BODY_BYTES}")
    catalogue = _catalogue()
    envelope = _parse(catalogue, _ENVELOPE, data[len(MAGIC):], "runtime.Unknown")
    api_version, kind = _text(envelope.typeMeta.apiVersion), _text(envelope.typeMeta.kind)
    if api_version and kind:
        catalogue.message_for(api_version, kind)  # a kind this server cannot decode, or a list
    return Envelope(api_version, kind, envelope.raw, _text(envelope.contentEncoding))


def decode_envelope(envelope: Envelope) -> dict[str, Any]:
    """Decode the object inside ``envelope`` into a JSON-shaped object dict."""
    catalogue = _catalogue()
    api_version, kind = envelope.api_version, envelope.kind
    full_name = catalogue.message_for(api_version, kind)
    if envelope.content_encoding:
        raise ProtobufError(f"unsupported contentEncoding {envelope.content_encoding!r} "
                            f"for {kind}")
    message = _parse(catalogue, full_name, envelope.raw, kind)
    budget = min(MAX_VALUES, _VALUES_FLOOR + len(envelope.raw))
    converted = _Converter(catalogue, budget).message(message, kind, 0)
    if not isinstance(converted, dict):  # pragma: no cover - kinds are structs
        raise ProtobufError(f"{kind} is not an object")
    if full_name.startswith(_META):
        api_version = api_version or "v1"
    return {"apiVersion": api_version, "kind": kind, **converted}


def decode_object(body: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode an ``application/vnd.kubernetes.protobuf`` body into a JSON-shaped object dict."""
    return decode_envelope(read_envelope(body))
