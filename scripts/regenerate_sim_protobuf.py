"""Regenerate the simulated cluster's protobuf descriptors from Kubernetes' own sources.

kubectl's typed commands (``kubectl create deployment|service|job|...``) and helm send their
objects as protobuf, so the sim decodes them with the messages Kubernetes publishes in the
``generated.proto`` files of the public ``kubernetes/api`` and ``kubernetes/apimachinery``
repositories, rather than with field tables written by hand kind by kind. This script turns
those sources into the two files ``pystol_sim.protobuf_codec`` loads:

``pystol_sim/protobuf/kubernetes.binpb``
    One ``FileDescriptorSet`` (``protoc --include_imports``, no source info) for the groups the
    sim serves: core, apps, batch, policy, networking, scheduling, rbac, authentication,
    authorization, coordination and autoscaling (all at v1), apiextensions/v1 (from
    ``kubernetes/apiextensions-apiserver``) and the apimachinery types they import (meta/v1,
    runtime, runtime/schema, resource, intstr). About 110 KB: only the versions the sim serves.

``pystol_sim/protobuf/json_fields.json``
    What the ``.proto`` files cannot say: how Go marshals each field as JSON. It is read from
    the struct tags in the same packages' Go sources, e.g.
    ``Replicas *int32 `json:"replicas,omitempty" protobuf:"varint,1,opt,name=replicas"```:
    per message (in Go field order) the field number, its JSON name, and whether the Go field is
    a pointer, ``omitempty``, ``omitzero`` or ``inline``. Go's protobuf marshallers always write
    non-pointer scalars (an empty string is on the wire) while JSON's ``omitempty`` drops them,
    and a pointer set to zero (``replicas: 0``) must stay: only the Go types can tell them apart.
    It also lists which messages are top-level kinds (structs embedding ``TypeMeta``), which Go
    types are named slices (``ExtraValue []string`` -> a JSON list), the API group of each proto
    package (``GroupName`` in ``register.go``, else ``+groupName`` in ``doc.go``) and the
    source commits.

Invocation (needs the ``regen`` extra: ``pip install -e .[regen]``)::

    python scripts/regenerate_sim_protobuf.py \\
        --api /path/to/kubernetes/api --apimachinery /path/to/kubernetes/apimachinery \\
        [--apiextensions /path/to/kubernetes/apiextensions-apiserver] \\
        [--ref v0.35.2] [--out pystol_sim/protobuf]

``--api``/``--apimachinery``/``--apiextensions`` are either checkouts (work trees) or bare
git directories; with a git directory the files are read at ``--ref`` (default ``HEAD``) with
``git archive``. The committed files were generated from tag ``v0.35.2`` of all three
repositories (the release that matches kubectl v1.35.2; the commits are recorded in
``json_fields.json``)::

    python scripts/regenerate_sim_protobuf.py --ref v0.35.2 \\
        --api /work/.mirror/kubernetes+api/repo \\
        --apimachinery /work/.mirror/kubernetes+apimachinery/repo \\
        --apiextensions /work/.mirror/kubernetes+apiextensions-apiserver/repo
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

# kubernetes/api directories compiled (group dir/version); their imports come along.
API_PACKAGES = (
    "core/v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "networking/v1",
    "scheduling/v1",
    "rbac/v1",
    "authentication/v1",
    "authorization/v1",
    "coordination/v1",
    "autoscaling/v1",
)
APIEXTENSIONS_PACKAGES = ("pkg/apis/apiextensions/v1",)
APIMACHINERY_PACKAGES = (
    "pkg/apis/meta/v1",
    "pkg/runtime",
    "pkg/runtime/schema",
    "pkg/api/resource",
    "pkg/util/intstr",
)

# Messages with their own JSON marshalling (pystol_sim.protobuf_codec converts them by name).
SPECIAL_JSON = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "k8s.io.apimachinery.pkg.runtime.Unknown",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
}

# Per-field flags in json_fields.json, one letter each.
_FLAGS = {"pointer": "p", "omitempty": "e", "omitzero": "z", "inline": "i"}

_STRUCT = re.compile(r"^type (\w+) struct \{\s*$")
_NAMED_SLICE = re.compile(r"^type (\w+) \[\]([\w.*]+)\s*$")
_NAMED_FIELD = re.compile(r"^\s*(\w+)\s+([^\s`]+)\s+`([^`]*)`")
_EMBEDDED_FIELD = re.compile(r"^\s*([^\s`]+)\s+`([^`]*)`")
_TAG = re.compile(r'(\w+):"([^"]*)"')
_PACKAGE = re.compile(r"^package ([\w.]+);", re.MULTILINE)
_GROUP_NAME = (re.compile(r'^const GroupName = "([^"]*)"', re.MULTILINE),
               re.compile(r"^// \+groupName=(\S*)\s*$", re.MULTILINE))


def _git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True,
                          capture_output=True).stdout


def materialise(source: Path, ref: str, dest: Path) -> str:
    """Copy the repository at ``source`` into ``dest``; return the commit it was read at."""
    dest.mkdir(parents=True, exist_ok=True)
    is_bare = (source / "HEAD").is_file() and (source / "objects").is_dir()
    if is_bare:
        commit = _git(source, "rev-parse", f"{ref}^{{commit}}").decode().strip()
        archive = _git(source, "archive", "--format=tar", commit)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
        return commit
    for path in source.rglob("*"):
        if path.is_file() and path.suffix in (".go", ".proto") and ".git" not in path.parts:
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    try:
        return subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown (not a git checkout)"


def _tags(raw: str) -> dict[str, str]:
    return dict(_TAG.findall(raw))


def go_fields(package_dir: Path) -> tuple[dict[str, list[dict[str, Any]]], set[str], set[str]]:
    """Struct fields with protobuf tags, kinds (embed TypeMeta) and named slices, per Go type."""
    structs: dict[str, list[dict[str, Any]]] = {}
    kinds: set[str] = set()
    slices: set[str] = set()
    for path in sorted(package_dir.glob("*.go")):
        if path.name.endswith("_test.go") or path.name.startswith(("zz_generated", "generated")):
            continue
        current: str | None = None
        depth = 0
        for line in path.read_text().splitlines():
            if current is None:
                if match := _STRUCT.match(line):
                    current, depth, structs[match.group(1)] = match.group(1), 1, []
                elif match := _NAMED_SLICE.match(line):
                    slices.add(match.group(1))
                continue
            code = line.split("//", 1)[0] if "`" not in line else line
            depth += code.count("{") - code.count("}")
            if depth <= 0:
                current = None
                continue
            if depth != 1 or code.strip().startswith("//"):
                continue
            if match := _NAMED_FIELD.match(line):
                go_name, go_type, raw_tags = match.groups()
            elif match := _EMBEDDED_FIELD.match(line):
                go_type, raw_tags = match.groups()
                go_name = go_type.rsplit(".", 1)[-1]
            else:
                continue
            tags = _tags(raw_tags)
            json_parts = tags.get("json", "").split(",")
            if go_type.endswith("TypeMeta") and "inline" in json_parts[1:]:
                kinds.add(current)
            proto = tags.get("protobuf")
            if not proto or proto == "-" or json_parts[0] == "-":
                continue
            proto_parts = proto.split(",")
            structs[current].append({
                "number": int(proto_parts[1]),
                "json": json_parts[0] or go_name,
                "proto": next((part[5:] for part in proto_parts if part.startswith("name=")),
                              ""),
                "pointer": go_type.startswith("*"),
                "omitempty": "omitempty" in json_parts[1:],
                "omitzero": "omitzero" in json_parts[1:],
                "inline": "inline" in json_parts[1:],
            })
    return structs, kinds, slices


def group_name(package_dir: Path) -> str | None:
    """The API group a Go package registers (register.go's GroupName, else doc.go's tag)."""
    for pattern, files in zip(_GROUP_NAME, (("register.go",), ("doc.go",)), strict=True):
        for file in files:
            path = package_dir / file
            if path.exists() and (match := pattern.search(path.read_text())):
                return match.group(1)
    return None


def compile_descriptors(root: Path, protos: list[str], out: Path) -> None:
    from grpc_tools import protoc  # type: ignore[import-untyped]  # the `regen` extra

    args = ["protoc", f"-I{root}", f"--descriptor_set_out={out}", "--include_imports", *protos]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


def side_table(root: Path, commits: dict[str, str]) -> dict[str, Any]:
    """The JSON facts per proto message, keyed by full message name (package + Go type)."""
    messages: dict[str, Any] = {}
    kinds: list[str] = []
    slices: list[str] = []
    groups: dict[str, str] = {}
    for proto in sorted(root.glob("k8s.io/**/generated.proto")):
        package_dir = proto.parent
        package = _PACKAGE.search(proto.read_text())
        if package is None:
            continue
        name = package.group(1)
        structs, package_kinds, package_slices = go_fields(package_dir)
        for struct, fields in structs.items():
            if fields:
                messages[f"{name}.{struct}"] = [
                    [f["number"], f["json"], "".join(letter for flag, letter in _FLAGS.items()
                                                     if f[flag])]
                    for f in fields
                ]
        kinds += [f"{name}.{kind}" for kind in sorted(package_kinds)]
        slices += [f"{name}.{item}" for item in sorted(package_slices)]
        if (group := group_name(package_dir)) is not None:
            version = package_dir.name
            groups[f"{group}/{version}" if group else version] = name
    return {
        "_comment": "Generated by scripts/regenerate_sim_protobuf.py; do not edit. Flags: "
                    + ", ".join(f"{letter}={flag}" for flag, letter in _FLAGS.items()),
        "sources": commits,
        "groups": dict(sorted(groups.items())),
        "kinds": sorted(kinds),
        "named_slices": sorted(slices),
        "messages": dict(sorted(messages.items())),
    }


def check(descriptor_file: Path, table: dict[str, Any]) -> list[str]:
    """Problems: proto fields without a Go field, or a JSON name that differs from the proto's."""
    from google.protobuf import descriptor_pb2

    problems: list[str] = []
    exempt = SPECIAL_JSON | set(table["named_slices"])
    file_set = descriptor_pb2.FileDescriptorSet.FromString(descriptor_file.read_bytes())
    for file in file_set.file:
        for message in file.message_type:
            full = f"{file.package}.{message.name}"
            if full in exempt or message.name == "List":
                continue
            known = {entry[0]: entry for entry in table["messages"].get(full, [])}
            for field in message.field:
                if field.number not in known:
                    problems.append(f"{full}.{field.name} ({field.number}): no Go struct tag")
                elif known[field.number][1] != field.name and "i" not in known[field.number][2]:
                    json_name = known[field.number][1]
                    problems.append(f"{full}.{field.name}: JSON name is {json_name!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", type=Path, required=True,
                        help="kubernetes/api checkout or bare git directory")
    parser.add_argument("--apimachinery", type=Path, required=True,
                        help="kubernetes/apimachinery checkout or bare git directory")
    parser.add_argument("--apiextensions", type=Path,
                        help="kubernetes/apiextensions-apiserver checkout or bare git directory "
                             "(CustomResourceDefinition; left out when not given)")
    parser.add_argument("--ref", default="HEAD",
                        help="tag/commit to read from git directories (default HEAD)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "pystol_sim" / "protobuf")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="k8s-proto-") as tmp:
        root = Path(tmp)
        commits = {
            "kubernetes/api": materialise(args.api, args.ref, root / "k8s.io" / "api"),
            "kubernetes/apimachinery": materialise(args.apimachinery, args.ref,
                                                   root / "k8s.io" / "apimachinery"),
        }
        protos = [f"k8s.io/api/{package}/generated.proto" for package in API_PACKAGES]
        if args.apiextensions is not None:
            commits["kubernetes/apiextensions-apiserver"] = materialise(
                args.apiextensions, args.ref, root / "k8s.io" / "apiextensions-apiserver")
            protos += [f"k8s.io/apiextensions-apiserver/{package}/generated.proto"
                       for package in APIEXTENSIONS_PACKAGES]
        protos += [f"k8s.io/apimachinery/{package}/generated.proto"
                   for package in APIMACHINERY_PACKAGES]
        # Keep only the packages compiled, so the side table describes the descriptor set.
        for proto in root.glob("k8s.io/**/generated.proto"):
            if str(proto.relative_to(root)) not in protos:
                proto.unlink()
        args.out.mkdir(parents=True, exist_ok=True)
        descriptor_file = args.out / "kubernetes.binpb"
        compile_descriptors(root, protos, descriptor_file)
        table = side_table(root, commits)
    problems = check(descriptor_file, table)
    # Every proto field must be described; different JSON names are reported for review.
    missing = [problem for problem in problems if "no Go struct tag" in problem]
    for problem in problems:
        print(f"note: {problem}", file=sys.stderr)
    (args.out / "json_fields.json").write_text(
        json.dumps(table, separators=(",", ":"), sort_keys=False) + "\n")
    print(f"wrote {descriptor_file} ({descriptor_file.stat().st_size} bytes) and "
          f"{args.out / 'json_fields.json'} from {commits}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
