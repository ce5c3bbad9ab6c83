"""Every typed `kubectl create …` against pystol-sim stores what the same object sent as JSON
stores.

kubectl v1.35's typed commands send their object as protobuf; `--dry-run=client -o json` piped
to `kubectl create -f -` sends the identical object as JSON. Creating both and reading them
back must give the same object (apart from the name, namespace and what the server sets), or
the sim's protobuf decoder has dropped, added or mistyped a field.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from pystol_sim.protobuf_codec import MAGIC, PROTOBUF_CONTENT_TYPE
from pystol_sim.tls import make_certificate
from tests.conftest import require_tool
from tests.support.sim_process import SimProcess

pytestmark = pytest.mark.e2e

TYPED_NS, JSON_NS = "typed", "viajson"

# Metadata the server sets itself, different for any two objects.
SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation",
                   "managedFields", "selfLink", "name", "namespace")

# (test id, resource to read back, namespaced, `kubectl create` arguments with NAME for the name)
CASES: list[tuple[str, str, bool, tuple[str, ...]]] = [
    ("clusterrole", "clusterrole", False,
     ("clusterrole", "NAME", "--verb=get,list,watch", "--resource=pods,deployments.apps",
      "--resource-name=web")),
    ("clusterrole-aggregated", "clusterrole", False,
     ("clusterrole", "NAME", "--aggregation-rule=rbac.example.com/aggregate-to-view=true")),
    ("clusterrole-nonresource", "clusterrole", False,
     ("clusterrole", "NAME", "--verb=get", "--non-resource-url=/healthz,/metrics")),
    ("clusterrolebinding", "clusterrolebinding", False,
     ("clusterrolebinding", "NAME", "--clusterrole=view", "--user=alice", "--group=devs",
      "--serviceaccount=typed:robot")),
    ("configmap", "configmap", True,
     ("configmap", "NAME", "--from-literal=a=1", "--from-literal=empty=",
      "--from-file=blob.bin=BLOB")),
    ("cronjob", "cronjob", True,
     ("cronjob", "NAME", "--image=busybox", "--schedule=*/5 * * * *", "--restart=OnFailure",
      "--", "sh", "-c", "echo hi")),
    ("deployment", "deployment", True,
     ("deployment", "NAME", "--image=nginx:1.27", "--image=redis", "--replicas=0",
      "--port=8080")),
    ("ingress", "ingress", True,
     ("ingress", "NAME", "--class=nginx", "--rule=shop.example.com/api*=api:8080,tls=shop-tls",
      "--rule=/=web:http", "--default-backend=fallback:80", "--annotation=team=shop")),
    ("job", "job", True, ("job", "NAME", "--image=busybox", "--", "echo", "done")),
    ("namespace", "namespace", False, ("namespace", "NAME")),
    ("pdb-percent", "poddisruptionbudget", True,
     ("poddisruptionbudget", "NAME", "--selector=app=web", "--min-available=50%")),
    ("pdb-int", "poddisruptionbudget", True,
     ("poddisruptionbudget", "NAME", "--selector=app=web", "--max-unavailable=0")),
    ("priorityclass", "priorityclass", False,
     ("priorityclass", "NAME", "--value=1000", "--description=batch work",
      "--preemption-policy=Never")),
    ("quota", "resourcequota", True,
     ("quota", "NAME", "--hard=cpu=1500m,memory=1Gi,pods=10,requests.storage=0",
      "--scopes=BestEffort")),
    ("role", "role", True,
     ("role", "NAME", "--verb=get,update", "--resource=pods,deployments.apps/scale",
      "--resource-name=web")),
    ("rolebinding", "rolebinding", True,
     ("rolebinding", "NAME", "--role=reader", "--user=bob", "--serviceaccount=typed:robot")),
    ("secret-docker-registry", "secret", True,
     ("secret", "docker-registry", "NAME", "--docker-server=registry.example.com",
      "--docker-username=u", "--docker-password=p", "--docker-email=u@example.com")),
    ("secret-generic", "secret", True,
     ("secret", "generic", "NAME", "--from-literal=password=s3cr3t",
      "--from-file=blob.bin=BLOB", "--type=example.com/custom")),
    ("secret-tls", "secret", True, ("secret", "tls", "NAME", "--cert=CERT", "--key=KEY")),
    ("service-clusterip", "service", True,
     ("service", "clusterip", "NAME", "--tcp=80:8080", "--tcp=443")),
    ("service-headless", "service", True,
     ("service", "clusterip", "NAME", "--clusterip=None", "--tcp=5432")),
    ("service-externalname", "service", True,
     ("service", "externalname", "NAME", "--external-name=db.example.com", "--tcp=5432")),
    ("service-loadbalancer", "service", True,
     ("service", "loadbalancer", "NAME", "--tcp=443:8443")),
    ("service-nodeport", "service", True, ("service", "nodeport", "NAME", "--tcp=80:8080")),
    ("serviceaccount", "serviceaccount", True, ("serviceaccount", "NAME")),
]

# Binary content for --from-file: invalid UTF-8, so it must travel as base64 binaryData/data.
BLOB = b"\x00\x01\xfe\xff not utf-8 \xc3\x28"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    require_tool("kubectl")
    with SimProcess.start(tmp_path_factory.mktemp("kubectl-create"), speed=10.0) as sim:
        for namespace in (TYPED_NS, JSON_NS):
            sim.kubectl("create", "namespace", namespace)
        yield sim


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("kubectl-create-files")
    cert, key = make_certificate("shop.example.com")
    paths = {"CERT": workdir / "tls.crt", "KEY": workdir / "tls.key", "BLOB": workdir / "b"}
    paths["CERT"].write_bytes(cert)
    paths["KEY"].write_bytes(key)
    paths["BLOB"].write_bytes(BLOB)
    return {marker: str(path) for marker, path in paths.items()}


def _args(args: tuple[str, ...], name: str, files: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        arg = name if arg == "NAME" else arg
        for marker, path in files.items():
            if arg.endswith(f"={marker}"):
                arg = arg[: -len(marker)] + path
        out.append(arg)
    return out


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The object minus its identity and what the server fills in, with its uid and name
    replaced so server-set references to itself (a Job's controller-uid label) compare equal."""
    uid, name = obj["metadata"].get("uid", ""), obj["metadata"]["name"]
    text = json.dumps(obj)
    if uid:
        text = text.replace(uid, "<uid>")
    out = json.loads(text.replace(f'"{name}"', '"<name>"'))
    for key in SERVER_METADATA:
        out["metadata"].pop(key, None)
    out.pop("status", None)
    if out["kind"] == "Service":
        # Allocated by the server for each Service: an address and node ports.
        out["spec"].pop("clusterIP", None)
        out["spec"].pop("clusterIPs", None)
        for port in out["spec"].get("ports", []):
            port.pop("nodePort", None)
    return out


def _run_stdin(sim: SimProcess, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], input=stdin, env=sim.env(), capture_output=True,
                          text=True, timeout=60)


def _read(sim: SimProcess, resource: str, name: str, namespace: str | None) -> dict[str, Any]:
    scope = ["-n", namespace] if namespace else []
    return json.loads(sim.kubectl("get", resource, name, "-o", "json", *scope).stdout)


@pytest.mark.parametrize(("case", "resource", "namespaced", "args"), CASES,
                         ids=[case[0] for case in CASES])
def test_typed_create_stores_what_json_create_stores(
        cluster: SimProcess, files: dict[str, str], case: str, resource: str,
        namespaced: bool, args: tuple[str, ...]) -> None:
    typed_name = json_name = case
    if not namespaced:
        typed_name, json_name = f"{case}-typed", f"{case}-json"
    typed_scope = ["-n", TYPED_NS] if namespaced else []
    json_scope = ["-n", JSON_NS] if namespaced else []

    # Flags go first: whatever follows `--` is the container's command.
    cluster.kubectl("create", *typed_scope, *_args(args, typed_name, files))
    manifest = cluster.kubectl("create", *json_scope, "--dry-run=client", "-o", "json",
                               *_args(args, json_name, files)).stdout
    created = _run_stdin(cluster, manifest, "create", "-f", "-", *json_scope)
    assert created.returncode == 0, created.stderr

    typed = _read(cluster, resource, typed_name, TYPED_NS if namespaced else None)
    via_json = _read(cluster, resource, json_name, JSON_NS if namespaced else None)
    assert _comparable(typed) == _comparable(via_json)
    assert typed["metadata"]["name"] == typed_name
    if namespaced:
        assert typed["metadata"]["namespace"] == TYPED_NS


def test_typed_deployment_keeps_pointer_zero_and_drops_empty_strings(
        cluster: SimProcess) -> None:
    """`replicas: 0` is a pointer set to zero and must survive; Go writes the empty
    non-pointer strings of the pod template on the wire and JSON's omitempty drops them."""
    cluster.kubectl("create", "deployment", "idle", "--image=nginx", "--replicas=0",
                    "-n", TYPED_NS)
    spec = _read(cluster, "deployment", "idle", TYPED_NS)["spec"]
    assert spec["replicas"] == 0
    container = spec["template"]["spec"]["containers"][0]
    assert container == {"name": "nginx", "image": "nginx", "resources": {}}


def test_typed_configmap_keeps_binary_file_bytes(cluster: SimProcess,
                                                 files: dict[str, str]) -> None:
    cluster.kubectl("create", "configmap", "blob", f"--from-file=blob.bin={files['BLOB']}",
                    "-n", TYPED_NS)
    stored = _read(cluster, "configmap", "blob", TYPED_NS)
    assert base64.b64decode(stored["binaryData"]["blob.bin"]) == BLOB


def test_create_token_for_a_created_service_account(cluster: SimProcess) -> None:
    """`kubectl create token` posts a protobuf TokenRequest; its duration and audience must
    arrive, and the token must then authenticate as the ServiceAccount."""
    cluster.kubectl("create", "serviceaccount", "robot", "-n", TYPED_NS)
    request = json.loads(cluster.kubectl(
        "create", "token", "robot", "-n", TYPED_NS, "--duration=2h", "--audience=shop",
        "-o", "json").stdout)
    assert request["spec"]["expirationSeconds"] == 2 * 3600
    assert request["spec"]["audiences"] == ["shop"]
    token = cluster.kubectl("create", "token", "robot", "-n", TYPED_NS).stdout.strip()
    review = json.loads(cluster.kubectl("auth", "whoami", f"--token={token}", "-o",
                                        "json").stdout)
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{TYPED_NS}:robot"


def test_unknown_protobuf_kind_is_a_400_naming_the_kind(cluster: SimProcess) -> None:
    """A protobuf body for a kind the sim does not decode is refused with a Status, not a 500."""

    def lfield(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    type_meta = lfield(1, b"example.com/v1") + lfield(2, b"Widget")
    body = MAGIC + lfield(1, type_meta) + lfield(2, b"")
    request = urllib.request.Request(
        cluster.url + f"/api/v1/namespaces/{TYPED_NS}/configmaps", data=body, method="POST",
        headers={"Authorization": f"Bearer {cluster.token}",
                 "Content-Type": PROTOBUF_CONTENT_TYPE})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10, context=cluster.ssl_context)
    status = json.loads(raised.value.read())
    assert raised.value.code == 400
    assert status["kind"] == "Status"
    assert "cannot decode protobuf for kind 'Widget'" in status["message"]
