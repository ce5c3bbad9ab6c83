"""Bad requests get Kubernetes-style 4xx `Status` answers, and the sim keeps serving.

Clients such as kubectl and the Python client branch on a failure's `code` and `reason`, so
each case below checks the whole `Status` object, then that the server still answers a plain
`GET /api/v1/namespaces`. Requests are sent raw (urllib over HTTPS, trusting the CA from the
sim's kubeconfig) because no well-behaved client would send most of them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pystol_sim.protobuf_codec import MAGIC, message_class
from tests.support.sim_process import SimProcess

JSON = "application/json"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
# The group of this module's CRD (widgets.<group>, spec.size an integer >= 1).
GROUP = f"bad{uuid.uuid4().hex[:8]}.test.pystol.org"


def raw_request(sim: SimProcess, method: str, path: str, data: bytes | None = None,
                content_type: str | None = JSON, token: str | None = None
                ) -> tuple[int, Any]:
    """Send exactly these bytes; returns (HTTP status, decoded JSON body or the raw text)."""
    headers = {"Authorization": f"Bearer {token or sim.token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(sim.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20, context=sim.ssl_context) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    try:
        return status, json.loads(payload or b"null")
    except ValueError:
        return status, payload.decode(errors="replace")


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    data: bytes | None
    code: int
    reason: str
    content_type: str | None = JSON
    check: Callable[[dict[str, Any]], None] = field(default=lambda status: None)


def _names_the_selector(status: dict[str, Any]) -> None:
    assert "app in (web" in status["message"]


def _names_the_field(status: dict[str, Any]) -> None:
    assert "spec.foo" in status["message"]


def _container_cause(status: dict[str, Any]) -> None:
    details = status["details"]
    assert details["kind"] == "Pod"
    assert details["name"] == "empty"
    fields = [cause["field"] for cause in details["causes"]]
    assert "spec.containers" in fields


def _image_cause(status: dict[str, Any]) -> None:
    fields = [cause["field"] for cause in status["details"]["causes"]]
    assert fields == ["spec.containers[0].image"]


def _name_cause(status: dict[str, Any]) -> None:
    assert [cause["field"] for cause in status["details"]["causes"]] == ["metadata.name"]


def _size_minimum(status: dict[str, Any]) -> None:
    details = status["details"]
    assert (details["kind"], details["group"], details["name"]) == ("Widget", GROUP, "tiny")
    assert [cause["field"] for cause in details["causes"]] == ["spec.size"]
    assert "greater than or equal to 1" in details["causes"][0]["message"]


def _size_type_and_color_enum(status: dict[str, Any]) -> None:
    fields = sorted(cause["field"] for cause in status["details"]["causes"])
    assert fields == ["spec.color", "spec.size"]


def _size_required(status: dict[str, Any]) -> None:
    causes = status["details"]["causes"]
    assert [(c["field"], c["message"]) for c in causes] == [("spec.size", "Required value")]


def _widget(name: str, spec: dict[str, Any]) -> bytes:
    return encode({"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name},
                   "spec": spec})


WIDGETS = f"/apis/{GROUP}/v1/namespaces/default/widgets"
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"},
       "spec": {"containers": []}}
MIB = 1024 * 1024

CASES = [
    Case("malformed-json", "POST", CONFIGMAPS, b'{"metadata": {"name": ', 400, "BadRequest"),
    Case("json-array-body", "POST", CONFIGMAPS, b"[1, 2]", 400, "BadRequest"),
    Case("kind-mismatch", "POST", CONFIGMAPS,
         encode({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}}),
         400, "BadRequest"),
    Case("malformed-patch", "PATCH", "/api/v1/namespaces/shop/services/web", b"{nope", 400,
         "BadRequest", content_type="application/merge-patch+json"),
    Case("unknown-resource", "GET", "/api/v1/widgets", None, 404, "NotFound"),
    Case("unknown-namespaced-resource", "GET", "/api/v1/namespaces/default/widgets", None,
         404, "NotFound"),
    Case("unknown-group", "GET", "/apis/nope.example.com/v1/things", None, 404, "NotFound"),
    Case("unknown-subresource", "GET", "/api/v1/namespaces/shop/services/web/nosuch", None,
         404, "NotFound"),
    Case("missing-object", "GET", f"{CONFIGMAPS}/does-not-exist", None, 404, "NotFound"),
    Case("missing-namespace", "POST", "/api/v1/namespaces/no-such-ns/configmaps",
         encode({"metadata": {"name": "x"}}), 404, "NotFound"),
    Case("invalid-label-selector", "GET",
         f"/api/v1/namespaces/shop/pods?labelSelector={q('app in (web')}", None, 400,
         "BadRequest", check=_names_the_selector),
    Case("invalid-label-selector-watch", "GET",
         f"/api/v1/namespaces/shop/pods?watch=true&labelSelector={q('app in (web')}", None,
         400, "BadRequest", check=_names_the_selector),
    Case("unsupported-field-selector", "GET",
         f"/api/v1/namespaces/shop/pods?fieldSelector={q('spec.foo=bar')}", None, 400,
         "BadRequest", check=_names_the_field),
    Case("create-wrong-content-type", "POST", CONFIGMAPS, encode({"metadata": {"name": "x"}}),
         415, "UnsupportedMediaType", content_type="application/xml"),
    Case("patch-wrong-content-type", "PATCH", "/api/v1/namespaces/shop/services/web",
         encode({"metadata": {"labels": {"x": "y"}}}), 415, "UnsupportedMediaType",
         content_type=JSON),
    Case("patch-cbor-apply", "PATCH", "/api/v1/namespaces/shop/services/web", b"\xa0", 415,
         "UnsupportedMediaType", content_type="application/apply-patch+cbor"),
    Case("pod-without-containers", "POST", "/api/v1/namespaces/default/pods", encode(POD),
         422, "Invalid", check=_container_cause),
    Case("pod-container-without-image", "POST", "/api/v1/namespaces/default/pods",
         encode({"metadata": {"name": "noimage"},
                 "spec": {"containers": [{"name": "app"}]}}),
         422, "Invalid", check=_image_cause),
    Case("invalid-name", "POST", CONFIGMAPS, encode({"metadata": {"name": "Not_A_Name"}}),
         422, "Invalid", check=_name_cause),
    Case("cr-below-minimum", "POST", WIDGETS, _widget("tiny", {"size": 0}), 422, "Invalid",
         check=_size_minimum),
    Case("cr-wrong-type-and-enum", "POST", WIDGETS,
         _widget("odd", {"size": "big", "color": "green"}), 422, "Invalid",
         check=_size_type_and_color_enum),
    Case("cr-missing-required", "POST", WIDGETS, _widget("bare", {}), 422, "Invalid",
         check=_size_required),
    Case("limit-not-a-number", "GET", f"{CONFIGMAPS}?limit=abc", None, 400, "BadRequest"),
    Case("limit-negative", "GET", f"{CONFIGMAPS}?limit=-1", None, 400, "BadRequest"),
    Case("bad-continue-token", "GET", f"{CONFIGMAPS}?limit=1&continue=zzz", None, 400,
         "BadRequest"),
    Case("watch-timeout-not-a-number", "GET", f"{CONFIGMAPS}?watch=true&timeoutSeconds=abc",
         None, 400, "BadRequest"),
    Case("watch-bad-resource-version", "GET", f"{CONFIGMAPS}?watch=true&resourceVersion=x1",
         None, 400, "BadRequest"),
    Case("bad-dry-run", "POST", f"{CONFIGMAPS}?dryRun=Some", encode({"metadata": {"name": "d"}}),
         400, "BadRequest"),
    Case("negative-grace-period", "DELETE", f"{CONFIGMAPS}/whatever?gracePeriodSeconds=-1",
         None, 400, "BadRequest"),
    Case("post-to-named-object", "POST", f"{CONFIGMAPS}/named", encode({}), 405,
         "MethodNotAllowed"),
    Case("unknown-sim-path", "GET", "/_sim/nonsense", None, 404, "NotFound"),
    Case("unknown-sim-path-post", "POST", "/_sim/reboot", encode({}), 404, "NotFound"),
    Case("sim-bad-fault", "POST", "/_sim/faults", encode({"code": 418}), 400, "BadRequest"),
    Case("sim-unknown-node", "POST", "/_sim/nodes", encode({"name": "no-such-node"}), 404,
         "NotFound"),
    Case("body-too-large", "POST", CONFIGMAPS,
         encode({"metadata": {"name": "huge"}, "data": {"blob": "x" * (3 * MIB + 1)}}), 413,
         "RequestEntityTooLarge"),
]


@pytest.fixture(scope="module")
def widgets_crd(sim: SimProcess) -> Iterator[None]:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                         "type": "object", "required": ["size"], "properties": {
                             "size": {"type": "integer", "minimum": 1},
                             "color": {"type": "string", "enum": ["red", "blue"]}}}}}}}]},
    }
    status, body = raw_request(sim, "POST",
                               "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                               encode(crd))
    assert status == 201, body
    yield
    raw_request(sim, "DELETE",
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}")


def assert_still_serving(sim: SimProcess) -> None:
    status, body = raw_request(sim, "GET", "/api/v1/namespaces")
    assert status == 200, body
    assert body["kind"] == "NamespaceList"
    assert "default" in [item["metadata"]["name"] for item in body["items"]]


def assert_status(body: Any, code: int, reason: str) -> dict[str, Any]:
    assert isinstance(body, dict), f"not a JSON Status object: {body!r}"
    assert body.get("kind") == "Status", body
    assert body.get("apiVersion") == "v1", body
    assert body.get("status") == "Failure", body
    assert (body.get("code"), body.get("reason")) == (code, reason), body
    assert body.get("message"), body
    return body


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_request_gets_a_status(sim: SimProcess, widgets_crd: None, case: Case) -> None:
    code, body = raw_request(sim, case.method, case.path, case.data, case.content_type)
    assert code == case.code, body
    case.check(assert_status(body, case.code, case.reason))
    assert_still_serving(sim)


def test_nothing_was_stored_by_the_bad_requests(sim: SimProcess, widgets_crd: None) -> None:
    status, body = raw_request(sim, "GET", CONFIGMAPS)
    assert status == 200
    names = {item["metadata"]["name"] for item in body["items"]}
    assert not names & {"x", "k", "d", "huge", "named", "Not_A_Name"}
    status, body = raw_request(sim, "GET", "/api/v1/namespaces/default/pods")
    assert not {item["metadata"]["name"] for item in body["items"]} & {"empty", "noimage"}
    status, body = raw_request(sim, "GET", WIDGETS)
    assert status == 200
    assert body["items"] == []


def test_wrong_token_gets_401(sim: SimProcess) -> None:
    code, body = raw_request(sim, "GET", "/api/v1/namespaces", token="wrong")
    assert code == 401
    assert_status(body, 401, "Unauthorized")
    code, body = raw_request(sim, "GET", "/_sim/truth", token="wrong")
    assert code == 401
    assert_status(body, 401, "Unauthorized")
    assert_still_serving(sim)


def test_many_bad_requests_in_a_row(sim: SimProcess) -> None:
    for index in range(50):
        code, body = raw_request(sim, "POST", CONFIGMAPS, b"{" * (index + 1))
        assert code == 400
        assert_status(body, 400, "BadRequest")
    assert_still_serving(sim)


def test_malformed_scale_patch_is_a_bad_request(sim: SimProcess) -> None:
    code, body = raw_request(sim, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale",
                             b"{nope", "application/merge-patch+json")
    assert_still_serving(sim)
    assert code == 400, body
    assert_status(body, 400, "BadRequest")


def test_scale_patch_with_wrong_content_type_is_refused(sim: SimProcess) -> None:
    path = "/apis/apps/v1/namespaces/shop/deployments/web/scale"
    code, body = raw_request(sim, "GET", path)
    replicas = body["spec"]["replicas"]
    code, body = raw_request(sim, "PATCH", path, encode({"spec": {"replicas": replicas}}),
                             "text/plain")
    assert code == 415, body
    assert_status(body, 415, "UnsupportedMediaType")


def test_deletecollection_of_namespaces_is_not_allowed(sim: SimProcess) -> None:
    marker = uuid.uuid4().hex[:10]
    name = f"bad-{marker}"
    code, body = raw_request(sim, "POST", "/api/v1/namespaces", encode(
        {"metadata": {"name": name, "labels": {"bad-input-test": marker}}}))
    assert code == 201, body
    try:
        # Scoped by a label selector so that a server with the bug deletes only our namespace.
        code, body = raw_request(
            sim, "DELETE", f"/api/v1/namespaces?labelSelector={q('bad-input-test=' + marker)}")
        assert code == 405, body
        assert_status(body, 405, "MethodNotAllowed")
        assert raw_request(sim, "GET", f"/api/v1/namespaces/{name}")[0] == 200
    finally:
        raw_request(sim, "DELETE", f"/api/v1/namespaces/{name}")
        assert_still_serving(sim)


# --------------------------------------------------------------------------- hostile bodies

PROTOBUF = "application/vnd.kubernetes.protobuf"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def protobuf_body(api_version: str, kind: str, raw: bytes) -> bytes:
    """A `k8s\\x00` runtime.Unknown envelope around ``raw``, as client-go writes it."""
    unknown = message_class("k8s.io.apimachinery.pkg.runtime.Unknown")(raw=raw)
    unknown.typeMeta.apiVersion = api_version
    unknown.typeMeta.kind = kind
    return MAGIC + unknown.SerializeToString()


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _swarm(containers: int) -> bytes:
    """A Deployment "swarm" whose pod template holds this many empty containers."""
    meta = b"\x0a\x05swarm"  # metadata.name
    pod_spec = b"\x12\x00" * containers  # PodSpec.containers (2), each empty
    template = b"\x12" + _varint(len(pod_spec)) + pod_spec  # PodTemplateSpec.spec (2)
    spec = b"\x1a" + _varint(len(template)) + template  # DeploymentSpec.template (3)
    raw = b"\x0a" + _varint(len(meta)) + meta + b"\x12" + _varint(len(spec)) + spec
    return protobuf_body("apps/v1", "Deployment", raw)


def test_protobuf_list_body_is_refused_before_decoding(sim: SimProcess) -> None:
    """50,000 empty DeploymentList items (100 KB) took seconds of the event loop to expand."""
    body = protobuf_body("apps/v1", "DeploymentList", b"\x12\x00" * 50_000)
    code, status = raw_request(sim, "POST", DEPLOYMENTS, body, PROTOBUF)
    assert code == 400, status
    assert "a list is not accepted as a request body" in assert_status(
        status, 400, "BadRequest")["message"]
    assert_still_serving(sim)


def test_protobuf_body_expanding_into_too_many_values_gets_a_400(sim: SimProcess) -> None:
    """A Deployment whose pod template holds 200,000 empty containers (400 KB)."""
    code, status = raw_request(sim, "POST", DEPLOYMENTS, _swarm(200_000), PROTOBUF)
    assert code == 400, status
    message = assert_status(status, 400, "BadRequest")["message"]
    assert "spec.template.spec.containers" in message
    assert "expands into more than 100000 values" in message
    assert_still_serving(sim)
    assert raw_request(sim, "GET", f"{DEPLOYMENTS}/swarm")[0] == 404


def test_protobuf_delete_body_of_another_kind_deletes_nothing(sim: SimProcess) -> None:
    name = f"keep-{uuid.uuid4().hex[:8]}"
    code, body = raw_request(sim, "POST", CONFIGMAPS, encode({"metadata": {"name": name}}))
    assert code == 201, body
    hostile = _swarm(200_000)  # refused as not DeleteOptions before it is decoded
    code, status = raw_request(sim, "DELETE", f"{CONFIGMAPS}/{name}", hostile, PROTOBUF)
    assert code == 400, status
    assert "does not match DeleteOptions" in assert_status(status, 400, "BadRequest")["message"]
    assert raw_request(sim, "GET", f"{CONFIGMAPS}/{name}")[0] == 200
    assert raw_request(sim, "DELETE", f"{CONFIGMAPS}/{name}")[0] == 200
    assert_still_serving(sim)


def _managed_fields(name: str, depth: int) -> bytes:
    """A ConfigMap whose metadata.managedFields[0].fieldsV1 (raw JSON) nests ``depth`` lists."""
    config_map = message_class("k8s.io.api.core.v1.ConfigMap")()
    config_map.metadata.name = name
    entry = config_map.metadata.managedFields.add(manager="kubectl", operation="Apply")
    entry.fieldsV1.Raw = b"[" * depth + b"]" * depth
    return protobuf_body("v1", "ConfigMap", config_map.SerializeToString())


def _yaml_laughs(name: str) -> bytes:
    """YAML aliases: 350 bytes that decode to 100,000 references to one list."""
    lines = [f"metadata: {{name: {name}}}", "l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]"
              for level in range(1, 6)]
    return "\n".join(lines).encode()


DEEP_CASES = [
    # (id, method, path, body, content type, the name that must not exist afterwards)
    ("json-300-levels", "POST", CONFIGMAPS,
     encode({"metadata": {"name": "deep-json"}, "extra": nested(300)}), JSON,
     f"{CONFIGMAPS}/deep-json"),
    ("yaml-aliases", "POST", CONFIGMAPS, _yaml_laughs("laughs"), "application/yaml",
     f"{CONFIGMAPS}/laughs"),
    ("yaml-5000-levels", "POST", CONFIGMAPS,
     b"metadata: {name: deep-yaml}\nextra: " + b"[" * 5000 + b"]" * 5000, "application/yaml",
     f"{CONFIGMAPS}/deep-yaml"),
    ("yaml-binary", "POST", CONFIGMAPS, b"metadata: {name: binary}\nextra: !!binary aGk=\n",
     "application/yaml", f"{CONFIGMAPS}/binary"),
    ("protobuf-raw-5000-levels", "POST", CONFIGMAPS, _managed_fields("deep-5000", 5000),
     PROTOBUF, f"{CONFIGMAPS}/deep-5000"),
    ("protobuf-raw-300-levels", "POST", CONFIGMAPS, _managed_fields("deep-300", 300),
     PROTOBUF, f"{CONFIGMAPS}/deep-300"),
]


@pytest.mark.parametrize(("method", "path", "data", "content_type", "created"),
                         [case[1:] for case in DEEP_CASES], ids=[case[0] for case in DEEP_CASES])
def test_unstorable_body_is_a_400_not_a_500(sim: SimProcess, method: str, path: str,
                                               data: bytes, content_type: str,
                                               created: str) -> None:
    code, status = raw_request(sim, method, path, data, content_type)
    assert code == 400, status
    message = assert_status(status, 400, "BadRequest")["message"]
    assert any(text in message for text in (
        "nested deeper than 200 levels", "raw is not JSON", "expands into more than",
        "not JSON", "invalid YAML body: maximum recursion depth")), message
    assert_still_serving(sim)
    assert raw_request(sim, "GET", created)[0] == 404


def test_deeply_nested_merge_patch_is_a_400_not_a_500(sim: SimProcess) -> None:
    name = f"patched-{uuid.uuid4().hex[:8]}"
    code, body = raw_request(sim, "POST", CONFIGMAPS, encode({"metadata": {"name": name}}))
    assert code == 201, body
    code, status = raw_request(sim, "PATCH", f"{CONFIGMAPS}/{name}",
                               encode({"extra": nested(300)}), "application/merge-patch+json")
    assert code == 400, status
    assert "nested deeper than 200 levels" in assert_status(status, 400, "BadRequest")["message"]
    code, body = raw_request(sim, "GET", f"{CONFIGMAPS}/{name}")
    assert code == 200 and "extra" not in body, body
    raw_request(sim, "DELETE", f"{CONFIGMAPS}/{name}")
    assert_still_serving(sim)
