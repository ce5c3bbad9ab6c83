"""The HTTP face of the simulated cluster: the Kubernetes REST API over aiohttp.

One event loop serves every request and every watch stream, so thousands of
long-lived watches cost a queue each, not a thread each. Routing is done by
hand from the catalogue (rather than one aiohttp route per resource) because
CRDs add resources while the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from pystol_sim import metrics_api, openapi, paging, patching, protobuf_codec, rbac, tables
from pystol_sim.authn import ADMIN, API_AUDIENCE, Authenticator, UserInfo
from pystol_sim.cluster import Cluster
from pystol_sim.control_api import ControlApi, FaultRule
from pystol_sim.errors import ApiError, bad_request, invalid
from pystol_sim.resources import Catalogue, ResourceType
from pystol_sim.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from pystol_sim.service_traffic import PROXY_VERBS, ServiceTraffic
from pystol_sim.store import SUPPORTED_FIELDS, Store, WatchFilter, now_rfc3339
from pystol_sim.validation import validate_object

MAX_BODY = 3 * 1024 * 1024
GIT_VERSION = "v1.35.0"
JSON = "application/json"
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "unsupported",
}


@dataclass
class Target:
    """What a Kubernetes resource path addresses."""

    rtype: ResourceType
    namespace: str
    name: str | None
    subresource: str | None


def _dumps(body: Any) -> bytes:
    return orjson.dumps(body)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(body), status=status, content_type=JSON)


# Lists longer than this are written in batches (see `_send_list`), not joined whole.
STREAMED_LIST_ITEMS = 2000
STREAMED_LIST_BATCH = 500


@dataclass(frozen=True)
class ListBody:
    """A list answer too large to join into one body: the JSON up to `"items":[`, then
    the stored items' bytes."""

    prefix: bytes
    items: list[bytes]


def raw_response(raw: bytes, status: int = 200) -> web.Response:
    return web.Response(body=raw, status=status, content_type=JSON)


def status_response(error: ApiError) -> web.Response:
    response = json_response(error.status(), error.code)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


# TokenRequest bounds (kube-apiserver refuses shorter tokens; 2^32 s is its upper bound).
MIN_TOKEN_SECONDS = 600
MAX_TOKEN_SECONDS = 2**32
DEFAULT_TOKEN_SECONDS = 3600
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/livez", "/readyz"})


@dataclass(frozen=True)
class StaticUser:
    """A user the sim accepts a fixed bearer token for (scenario `users:`)."""

    name: str
    token: str
    groups: tuple[str, ...] = ()


class SimServer:
    def __init__(self, cluster: Cluster, token: str, users: tuple[StaticUser, ...] = ()
                 ) -> None:
        self.cluster = cluster
        self.store: Store = cluster.store
        self.catalogue: Catalogue = cluster.catalogue
        self.token = token
        # The admin's header, compared as is: the admin path costs one string comparison.
        self._admin_header = f"Bearer {token}"
        self.authn = Authenticator(token)
        for user in users:
            self.authn.add_user(user.name, user.token, user.groups)
        self.rbac = rbac.RbacIndex()
        for rtype in self.catalogue.all():
            if rtype.group == rbac.GROUP or rtype.key == "/serviceaccounts":
                for _, item in self.store.select(rtype):
                    self._on_write(rtype, "ADDED", item.load(), None)
        self.store.add_listener(self._on_write)
        self.faults: list[FaultRule] = []
        # services/NAME/proxy and pods/NAME/proxy, and their ground truth (/_sim/traffic)
        self.traffic = ServiceTraffic(self.store, self.catalogue)
        self.request_counts: Counter[tuple[str, str]] = Counter()
        # error answers `/_sim/faults` rules served, by verb, resource and status code
        self.faults_served: Counter[tuple[str, str, int]] = Counter()
        self.streams: set[web.StreamResponse] = set()
        self.closing = asyncio.Event()

    # -- application ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY)
        app.router.add_route("*", "/_sim/traffic", self.traffic.control)
        app.router.add_route("*", "/_sim/{tail:.*}", ControlApi(self).handle)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self.closing.set()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return status_response(error)
        except web.HTTPException:
            raise
        except Exception as error:
            import traceback
            traceback.print_exc()
            return status_response(ApiError(500, f"internal error: {error!r}"))

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") == self._admin_header:
            return await handler(request)  # system:admin, system:masters: never RBAC-checked
        path = request.path
        if path in UNAUTHENTICATED_PATHS:
            return await handler(request)
        user = self.authn.user_for_header(request.headers.get("Authorization", ""))
        if user is None:
            return status_response(ApiError(401, "Unauthorized"))
        request["user"] = user
        if path.lstrip("/").startswith("_sim"):  # the sim's own routes: the admin's only
            raise rbac.forbidden(rbac.Attributes(user.username, user.groups,
                                                 request.method.lower(), False, path=path))
        self._authorize(request, user, path)
        return await handler(request)

    def _authorize(self, request: web.Request, user: UserInfo, path: str) -> None:
        """Refuse (403, worded as kube-apiserver words it) what RBAC does not allow."""
        attrs = rbac.request_attributes(user.username, user.groups, request.method, path,
                                        request.query)
        decision = self.rbac.authorize(attrs)
        if not decision.allowed:
            raise rbac.forbidden(attrs, decision.reason)
        if rbac.needs_connect_create(attrs):
            # Kubernetes 1.35: a WebSocket exec/attach/portforward (a GET) also needs create.
            attrs = dataclasses.replace(attrs, verb="create")
            decision = self.rbac.authorize(attrs)
            if not decision.allowed:
                raise rbac.forbidden(attrs, decision.reason)

    def _on_write(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                  old: dict[str, Any] | None) -> None:
        """Store listener: keep the RBAC index and the live ServiceAccounts' uids current."""
        group = rtype.group
        if group == rbac.GROUP:
            if rtype.kind in rbac.KINDS:
                self.rbac.observe(rtype.kind, event, obj)
        elif not group and rtype.plural == "serviceaccounts":
            self.authn.observe_service_account(event, obj)

    def _user(self, request: web.Request) -> UserInfo:
        user = request.get("user")
        return user if isinstance(user, UserInfo) else ADMIN

    async def _apply_faults(self, verb: str, resource: str) -> None:
        for rule in self.faults:
            if rule.applies(verb, resource) and random.random() < rule.rate:
                if rule.delay_seconds:
                    await asyncio.sleep(rule.delay_seconds)
                if rule.code:
                    self.faults_served[(verb, resource, rule.code)] += 1
                    raise ApiError(rule.code, f"simulated fault ({rule.code}) for {verb} "
                                   f"{resource}", retry_after=1 if rule.code == 429 else None)

    # -- routing -------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return json_response({"major": "1", "minor": "35", "gitVersion": GIT_VERSION,
                                  "platform": "linux/amd64", "goVersion": "go1.25",
                                  "compiler": "gc", "gitCommit": "pystol-sim",
                                  "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z"})
        if parts and parts[0] == "openapi":
            return self._openapi(request, parts)
        if path == "/api":
            return json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [
                                      {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]})
        if path == "/apis":
            return json_response(self._group_list())
        if len(parts) == 2 and parts[0] == "api":
            return self._resource_list("", parts[1])
        if len(parts) == 2 and parts[0] == "apis":
            group = next((g for g in self._group_list()["groups"] if g["name"] == parts[1]), None)
            if group is None:
                raise ApiError(404, f"the server could not find the requested resource "
                               f"(group {parts[1]})")
            return json_response({"kind": "APIGroup", "apiVersion": "v1", **group})
        if len(parts) == 3 and parts[0] == "apis":
            return self._resource_list(parts[1], parts[2])
        target = self._resolve(parts)
        return await self._serve(request, target)

    def _group_list(self) -> dict[str, Any]:
        groups = []
        for group, versions in self.catalogue.group_versions().items():
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> web.Response:
        types = self.catalogue.in_group_version(group, version)
        if not types:
            raise ApiError(404, f"the server could not find the requested resource "
                           f"({group}/{version})" if group else "no such version")
        resources: list[dict[str, Any]] = []
        for rtype in types:
            entry: dict[str, Any] = {
                "name": rtype.plural, "singularName": rtype.singular_name,
                "namespaced": rtype.namespaced, "kind": rtype.kind, "verbs": list(rtype.verbs),
                "storageVersionHash": hashlib.sha256(rtype.key.encode()).hexdigest()[:12]}
            if rtype.short_names:
                entry["shortNames"] = list(rtype.short_names)
            if rtype.categories:
                entry["categories"] = list(rtype.categories)
            resources.append(entry)
            for sub in rtype.subresources:
                sub_entry: dict[str, Any] = {"name": f"{rtype.plural}/{sub}", "singularName": "",
                                             "namespaced": rtype.namespaced,
                                             "kind": rtype.kind, "verbs": ["get", "patch",
                                                                           "update"]}
                if sub == "scale":
                    sub_entry.update(group="autoscaling", version="v1", kind="Scale")
                elif sub == "eviction":
                    sub_entry.update(group="policy", version="v1", kind="Eviction",
                                     verbs=["create"])
                elif sub in ("exec",):
                    sub_entry.update(kind="PodExecOptions", verbs=["create", "get"])
                elif sub == "log":
                    sub_entry.update(kind="Pod", verbs=["get"])
                elif sub == "proxy":
                    sub_entry.update(kind=f"{rtype.kind}ProxyOptions", verbs=[
                        "create", "delete", "get", "patch", "update"])
                elif sub == "token":
                    sub_entry.update(group="authentication.k8s.io", version="v1",
                                     kind="TokenRequest", verbs=["create"])
                resources.append(sub_entry)
        return json_response({"kind": "APIResourceList", "apiVersion": "v1",
                              "groupVersion": f"{group}/{version}" if group else version,
                              "resources": resources})

    def _openapi(self, request: web.Request, parts: list[str]) -> web.Response:
        if parts[:2] != ["openapi", "v3"]:
            raise ApiError(404, "only /openapi/v3 is served")
        version_hash = openapi.catalogue_hash(self.catalogue)
        if len(parts) == 2:
            return json_response(openapi.openapi_v3_index(self.catalogue, version_hash))
        rest = parts[2:]
        if rest[0] == "api" and len(rest) == 2:
            document = openapi.openapi_v3_document(self.catalogue, "", rest[1])
        elif rest[0] == "apis" and len(rest) == 3:
            document = openapi.openapi_v3_document(self.catalogue, rest[1], rest[2])
        else:
            document = None
        if document is None:
            raise ApiError(404, f"no OpenAPI document for {'/'.join(rest)}")
        return json_response(document)

    def _resolve(self, parts: list[str]) -> Target:
        if parts and parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts and parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            candidate = self.catalogue.get(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        rtype = self.catalogue.get(group, version, rest[0])
        if rtype is not None and len(rest) > 3 and rest[2] == "proxy" \
                and "proxy" in rtype.subresources:
            rest = rest[:3]  # the proxied path follows: service_traffic reads it from the URL
        if rtype is None or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource "
                           f"({'/'.join(parts)})")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and sub not in rtype.subresources:
            raise ApiError(404, f"{rtype.plural} has no subresource {sub!r}")
        if rtype.namespaced and name is not None and not namespace:
            raise ApiError(404, f"{rtype.plural} is namespaced: use "
                           f"{rtype.path('NAMESPACE', name)}")
        return Target(rtype, namespace, name, sub)

    # -- verbs ----------------------------------------------------------------------------------

    async def _serve(self, request: web.Request, target: Target) -> web.StreamResponse:
        method = request.method
        rtype, name = target.rtype, target.name
        query = request.query
        if target.subresource == "proxy":
            proxy_verb = PROXY_VERBS.get(method, method.lower())
            self.request_counts[(proxy_verb, f"{rtype.plural}/proxy")] += 1
            await self._apply_faults(proxy_verb, f"{rtype.plural}/proxy")
            return await self.traffic.serve(request, rtype, target.namespace, name or "")
        if target.subresource == "exec":
            from pystol_sim.pod_exec import serve_exec
            await self._apply_faults("create", "pods/exec")
            return await serve_exec(request, self.cluster, target.namespace, name or "")
        if rtype.group == metrics_api.GROUP:
            return self._metrics(request, target)
        if not rtype.stored:
            return await self._review(request, target)
        if method == "GET":
            verb = ("watch" if rbac.is_watch(query) else "list") if name is None else "get"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete" if name else "deletecollection"}.get(method, "")
        if not verb or (verb not in rtype.verbs and target.subresource is None):
            raise ApiError(405, f"method {method} is not allowed on {rtype.plural} "
                           f"(verbs: {', '.join(rtype.verbs)})")
        resource = rtype.plural + (f"/{target.subresource}" if target.subresource else "")
        self.request_counts[(verb, resource)] += 1
        await self._apply_faults(verb, resource)
        if target.namespace and rtype.key != "/namespaces" and method in ("POST", "PUT",
                                                                          "PATCH"):
            ns_type = self.catalogue.get("", "v1", "namespaces")
            assert ns_type is not None
            if self.store.stored(ns_type, "", target.namespace) is None:
                raise ApiError(404, f'namespaces "{target.namespace}" not found')
        if target.subresource == "token":
            if method != "POST":
                raise ApiError(405, f"method {method} is not allowed on serviceaccounts/token "
                               "(verbs: create)")
            return await self._token_request(request, target)
        if target.subresource == "log":
            return self._pod_log(target)
        if target.subresource == "eviction":
            if method != "POST":
                raise ApiError(405, "eviction only supports create")
            body = await self._json_body(request)
            self.cluster.evict(target.namespace, name or "", body.get("deleteOptions") or {})
            return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Success", "code": 201}, 201)
        if target.subresource == "scale":
            return await self._scale(request, target, verb)
        if verb == "list":
            answer = self._list(request, rtype, target.namespace)
            if isinstance(answer, ListBody):
                return await self._send_list(request, answer)
            return answer
        if verb == "watch":
            return await self._watch(request, rtype, target.namespace)
        if verb == "get":
            obj = self.store.get(rtype, target.namespace, name or "")
            return self._object_response(request, rtype, obj)
        if verb == "create":
            if name is not None:
                raise ApiError(405, "POST is only allowed on a collection")
            obj = await self._object_body(request, rtype)
            return self._create(request, rtype, target.namespace, obj)
        if verb == "update":
            obj = await self._object_body(request, rtype)
            return self._update(request, target, obj)
        if verb == "patch":
            return await self._patch(request, target)
        if verb == "delete":
            return await self._delete(request, target)
        return await self._delete_collection(request, rtype, target.namespace)

    # -- authentication and authorization answers ---------------------------------------------

    async def _token_request(self, request: web.Request, target: Target) -> web.Response:
        """`POST .../serviceaccounts/NAME/token` (TokenRequest): a token for the account."""
        name = target.name or ""
        account = self.store.get(target.rtype, target.namespace, name)
        body = await self._object_body(request, target.rtype,
                                       ("authentication.k8s.io/v1", "TokenRequest"))
        if body.get("kind") not in (None, "TokenRequest"):
            raise bad_request(f"the kind of the object ({body['kind']}) does not match the "
                              "resource (TokenRequest)")
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise bad_request("spec must be an object")
        seconds = spec.get("expirationSeconds")
        if seconds is None:
            seconds = DEFAULT_TOKEN_SECONDS
        group = "authentication.k8s.io"
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise invalid("TokenRequest", name, [("spec.expirationSeconds",
                          f"Invalid value: {seconds!r}: must be an integer")], group)
        if seconds < MIN_TOKEN_SECONDS:
            raise invalid("TokenRequest", name, [("spec.expirationSeconds",
                          f"Invalid value: {seconds}: may not specify a duration less than "
                          "10 minutes")], group)
        if seconds > MAX_TOKEN_SECONDS:
            raise invalid("TokenRequest", name, [("spec.expirationSeconds",
                          f"Invalid value: {seconds}: may not specify a duration larger than "
                          "2^32 seconds")], group)
        audiences = spec.get("audiences") or [API_AUDIENCE]
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a
                                                      for a in audiences):
            raise invalid("TokenRequest", name, [("spec.audiences", "Invalid value: must be "
                          "a list of non-empty strings")], group)
        bound = spec.get("boundObjectRef")
        token, record = self.authn.issue_service_account_token(
            target.namespace, name, account["metadata"]["uid"], seconds, audiences,
            bound if isinstance(bound, dict) else None)
        return json_response({
            "kind": "TokenRequest", "apiVersion": f"{group}/v1",
            "metadata": {"name": name, "namespace": target.namespace,
                         "creationTimestamp": now_rfc3339()},
            "spec": {"audiences": list(record.audiences), "expirationSeconds": seconds,
                     "boundObjectRef": bound},
            "status": {"token": token, "expirationTimestamp": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.expires_at))}}, 201)

    async def _review(self, request: web.Request, target: Target) -> web.Response:
        """TokenReview, SelfSubjectReview and the access reviews: answered, never stored."""
        rtype = target.rtype
        kind = rtype.kind
        if request.method != "POST" or target.name is not None:
            raise ApiError(405, f"method {request.method} is not allowed on {rtype.plural} "
                           "(verbs: create)")
        self.request_counts[("create", rtype.plural)] += 1
        await self._apply_faults("create", rtype.plural)
        body = await self._object_body(request, rtype)
        if body.get("kind") not in (None, kind):
            raise bad_request(f"the kind of the object ({body['kind']}) does not match the "
                              f"resource ({kind})")
        spec = body.get("spec") or {}
        meta = body.get("metadata") or {}
        if not isinstance(spec, dict) or not isinstance(meta, dict):
            raise bad_request("spec and metadata must be objects")
        requester = self._user(request)
        status: dict[str, Any]
        if kind == "TokenReview":
            token = spec.get("token")
            audiences = spec.get("audiences")
            if not isinstance(token, str) or (audiences is not None and not isinstance(
                    audiences, list)):
                raise invalid(kind, "", [("spec.token", "Required value: a token string")],
                              rtype.group)
            result = self.authn.authenticate(token, [str(a) for a in audiences or ()])
            status = {"authenticated": result.user is not None,
                      "user": result.user.to_json() if result.user else {}}
            if result.user is not None:
                status["audiences"] = list(result.audiences)
            else:
                status["error"] = result.error
        elif kind == "SelfSubjectReview":
            status = {"userInfo": requester.to_json()}
        elif kind == "SelfSubjectRulesReview":
            rules, error = self.rbac.rules_for(requester.username, requester.groups,
                                               str(spec.get("namespace") or ""))
            status = rbac.rules_review_status(rules, error)
        else:
            if kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
                user, groups = spec.get("user") or "", spec.get("groups") or []
                if not isinstance(user, str) or not isinstance(groups, list):
                    raise bad_request("spec.user must be a string and spec.groups a list")
                if not user and not groups:
                    raise invalid(kind, "", [("spec.user", 'Invalid value: "": at least one '
                                              "of user or group must be specified")],
                                  rtype.group)
                who = (user, tuple(str(g) for g in groups))
            else:
                who = (requester.username, requester.groups)
            namespace = target.namespace if rtype.namespaced else None
            attrs = rbac.review_attributes(*who, spec, kind, namespace)
            status = rbac.review_status(self.rbac.authorize(attrs))
        if rtype.namespaced:
            meta["namespace"] = target.namespace
        return json_response({"kind": kind, "apiVersion": rtype.api_version,
                              "metadata": meta, "spec": spec, "status": status}, 201)

    def _dry_run(self, request: web.Request) -> bool:
        value = request.query.get("dryRun")
        if value is None:
            return False
        if value != "All":
            raise bad_request(f'invalid dryRun value "{value}": only "All" is supported')
        return True

    def _check_object(self, rtype: ResourceType, obj: dict[str, Any],
                      namespace: str, name: str | None) -> None:
        if obj.get("kind") and obj["kind"] != rtype.kind:
            raise bad_request(f"the kind of the object ({obj['kind']}) does not match the "
                              f"resource ({rtype.kind})")
        if obj.get("apiVersion") and obj["apiVersion"] != rtype.api_version:
            raise bad_request(f"the apiVersion of the object ({obj['apiVersion']}) does not "
                              f"match the resource ({rtype.api_version})")
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise invalid(rtype.kind, "", [("metadata", "must be an object")], rtype.group)
        given_name = (meta or {}).get("name")
        if name is not None and given_name not in (None, name):
            raise bad_request(f"the name of the object ({given_name}) does not match the "
                              f"name on the URL ({name})")
        validate_object(rtype, obj)

    def _create(self, request: web.Request, rtype: ResourceType, namespace: str,
                obj: dict[str, Any]) -> web.Response:
        self._check_object(rtype, obj, namespace, None)
        if not rtype.namespaced and namespace:
            raise ApiError(404, f"{rtype.plural} is not namespaced")
        created = self.store.create(rtype, obj, namespace, dry_run=self._dry_run(request),
                                    from_client=True)
        return json_response(created, 201)

    def _update(self, request: web.Request, target: Target, obj: dict[str, Any]
                ) -> web.Response:
        rtype = target.rtype
        self._check_object(rtype, obj, target.namespace, target.name)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("name", target.name)
        if rtype.namespaced:
            meta["namespace"] = target.namespace
        updated = self.store.update(rtype, obj, status_only=target.subresource == "status",
                                    dry_run=self._dry_run(request))
        return json_response(updated)

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        rtype = target.rtype
        kind = PATCH_TYPES.get(request.content_type)
        if kind is None or kind == "unsupported":
            accepted = ", ".join(k for k, v in PATCH_TYPES.items() if v != "unsupported")
            raise ApiError(415, "the body of the request was in an unknown format - accepted "
                           f"media types include: {accepted}")
        text = await self._read_body(request)
        try:
            patch = yaml.safe_load(text) if kind == "apply" else orjson.loads(text)
            protobuf_codec.check_storable(patch, yaml_size=len(text) if kind == "apply" else None)
        except (orjson.JSONDecodeError, yaml.YAMLError, RecursionError,
                protobuf_codec.UnstorableError) as error:
            raise bad_request(f"error decoding patch: {error}") from error
        current = self.store.find(rtype, target.namespace, target.name or "")
        if current is None:
            if kind == "apply" and isinstance(patch, dict):
                self._check_object(rtype, patch, target.namespace, target.name)
                created = self.store.create(rtype, patch, target.namespace,
                                            dry_run=self._dry_run(request), from_client=True)
                return json_response(created, 201)
            self.store.get(rtype, target.namespace, target.name or "")
        assert current is not None
        try:
            if kind == "json":
                if not isinstance(patch, list):
                    raise bad_request("a JSON patch must be a list of operations")
                result = patching.json_patch(current, patch)
            elif not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            elif kind == "merge" or rtype.schema is not None or rtype.group.endswith(
                    "pystol.org"):
                result = patching.json_merge_patch(current, patch)
            else:
                result = patching.strategic_merge_patch(current, patch)
        except patching.PatchError as error:
            raise ApiError(422, f"the patch could not be applied: {error}") from error
        if not isinstance(result, dict):
            raise ApiError(422, "the patch turned the object into something else")
        try:  # a JSON patch can add a deep value at a deep path
            protobuf_codec.check_storable(result)
        except protobuf_codec.UnstorableError as error:
            raise ApiError(422, f"the patched object is {error}") from error
        result.setdefault("metadata", {})
        wanted_rv = patch.get("metadata", {}).get("resourceVersion") if isinstance(
            patch, dict) and isinstance(patch.get("metadata"), dict) else None
        if not wanted_rv:
            result["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self._check_object(rtype, result, target.namespace, target.name)
        updated = self.store.update(rtype, result, status_only=target.subresource == "status",
                                    dry_run=self._dry_run(request))
        return json_response(updated)

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        options = await self._delete_options(request)
        propagation = options.get("propagationPolicy")
        if options.get("orphanDependents") is True:
            propagation = "Orphan"
        if propagation not in (None, "Orphan", "Background", "Foreground"):
            raise bad_request(f'invalid propagationPolicy "{propagation}"')
        last = self.store.delete(target.rtype, target.namespace, target.name or "",
                                 grace_period=options.get("gracePeriodSeconds"),
                                 preconditions=options.get("preconditions"),
                                 dry_run=self._dry_run(request) or options.get("dryRun") == [
                                     "All"],
                                 orphan=propagation == "Orphan",
                                 foreground=propagation == "Foreground")
        if target.rtype.key == "/pods" and not last["metadata"].get("deletionTimestamp"):
            pass
        if self.store.stored(target.rtype, target.namespace, target.name or "") is None:
            return json_response(last)
        return json_response(last, 202 if target.rtype.key != "/pods" else 200)

    async def _delete_collection(self, request: web.Request, rtype: ResourceType,
                                 namespace: str) -> web.Response:
        options = await self._delete_options(request)
        labels, fields = self._selectors(request, rtype)
        for key, _ in list(self.store.select(rtype, namespace or None, labels, fields)):
            with contextlib.suppress(ApiError):
                self.store.delete(rtype, key[0], key[1],
                                  grace_period=options.get("gracePeriodSeconds"),
                                  dry_run=self._dry_run(request))
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success"})

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.can_read_body:
            text = await self._read_body(request)
            if request.content_type == protobuf_codec.PROTOBUF_CONTENT_TYPE:
                try:
                    envelope = protobuf_codec.read_envelope(text)
                    if envelope.kind not in ("", "DeleteOptions"):  # before decoding anything
                        raise bad_request(f"the kind of the object ({envelope.kind}) does not "
                                          "match DeleteOptions")
                    options = protobuf_codec.decode_envelope(
                        dataclasses.replace(envelope, kind="DeleteOptions"))
                except protobuf_codec.ProtobufError as error:
                    raise bad_request(f"cannot decode protobuf DeleteOptions: {error}") from error
            elif text.strip():
                try:
                    options = orjson.loads(text)
                    protobuf_codec.check_storable(options)
                except (orjson.JSONDecodeError, protobuf_codec.UnstorableError) as error:
                    raise bad_request(f"invalid DeleteOptions: {error}") from error
                if not isinstance(options, dict):
                    raise bad_request("DeleteOptions must be a JSON object")
        query = request.query
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = self._int_param(query, "gracePeriodSeconds")
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        grace = options.get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or grace < 0):
            raise bad_request("gracePeriodSeconds must be a non-negative integer")
        return options

    async def _scale(self, request: web.Request, target: Target, verb: str) -> web.Response:
        rtype = target.rtype
        obj = self.store.get(rtype, target.namespace, target.name or "")
        scale = self._scale_of(obj)
        if verb == "get":
            return json_response(scale)
        if verb == "update":
            wanted = await self._json_body(request)
        elif verb == "patch":
            kind = PATCH_TYPES.get(request.content_type)
            if kind not in ("merge", "json", "strategic"):
                raise ApiError(415, f"unsupported patch type {request.content_type!r} for scale")
            try:
                patch = orjson.loads(await self._read_body(request) or b"{}")
            except orjson.JSONDecodeError as error:
                raise bad_request(f"error decoding patch: {error}") from error
            try:
                wanted = patching.json_patch(scale, patch) if kind == "json" else \
                    patching.json_merge_patch(scale, patch)
            except patching.PatchError as error:
                raise ApiError(422, f"the patch could not be applied: {error}") from error
        else:
            raise ApiError(405, f"{verb} is not supported on scale")
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", target.name or "", [("spec.replicas",
                          "Invalid value: must be a non-negative integer")], "autoscaling")
        wanted_rv = (wanted.get("metadata") or {}).get("resourceVersion")
        if verb == "update" and wanted_rv and wanted_rv != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, f'Operation cannot be fulfilled on {rtype.plural} '
                           f'"{target.name}": the object has been modified')
        obj["spec"]["replicas"] = replicas
        if not self._dry_run(request):
            obj = self.store.update(rtype, obj, check_rv=False)
        return json_response(self._scale_of(obj))

    @staticmethod
    def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        selector = (obj.get("spec") or {}).get("selector") or {}
        from pystol_sim.selectors import label_selector_from_spec
        try:
            selector_text = str(label_selector_from_spec(selector))
        except SelectorError:
            selector_text = ""
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": meta["name"], "namespace": meta.get("namespace"),
                             "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
                             "creationTimestamp": meta["creationTimestamp"]},
                "spec": {"replicas": int(obj.get("spec", {}).get("replicas", 0))},
                "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0)),
                           "selector": selector_text}}

    def _pod_log(self, target: Target) -> web.Response:
        pod = self.store.get(target.rtype, target.namespace, target.name or "")
        lines = [f"{cs.get('state', {}).get('running', {}).get('startedAt', '')} "
                 f"pystol-sim: container {cs['name']} ({cs.get('image', '')}) running"
                 for cs in pod.get("status", {}).get("containerStatuses") or ()]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    # -- reads ----------------------------------------------------------------------------------

    @staticmethod
    def _int_param(query: Any, name: str) -> int:
        try:
            return int(query[name])
        except ValueError as error:
            raise bad_request(f"invalid {name} {query[name]!r}: must be an integer") from error

    def _metrics(self, request: web.Request, target: Target) -> web.Response:
        """metrics.k8s.io: node and pod usage, derived from the objects (metrics_api.py)."""
        if request.method != "GET":
            raise ApiError(405, f"method {request.method} is not allowed on "
                           f"{target.rtype.plural}.{metrics_api.GROUP} (verbs: get, list)")
        verb = "get" if target.name else "list"
        self.request_counts[(verb, f"{target.rtype.plural}.{metrics_api.GROUP}")] += 1
        labels, _ = self._selectors(request, target.rtype)
        now = metrics_api.now()
        pods_type = self.catalogue.get("", "v1", "pods")
        nodes_type = self.catalogue.get("", "v1", "nodes")
        assert pods_type is not None and nodes_type is not None
        if target.rtype.plural == "pods":
            if target.name:
                pod = self.store.get(pods_type, target.namespace, target.name)
                if not metrics_api.is_running(pod):
                    raise ApiError(404, f'podmetrics.metrics.k8s.io "{target.name}" not found')
                return json_response(metrics_api.pod_metrics(pod, now))
            pods = [pod for pod in self.store.list_objects(pods_type, target.namespace or None,
                                                           labels)
                    if metrics_api.is_running(pod)]
            return json_response(metrics_api.metrics_list(
                "PodMetrics", [metrics_api.pod_metrics(pod, now) for pod in pods]))
        by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in self.store.list_objects(pods_type):
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name and metrics_api.is_running(pod):
                by_node.setdefault(node_name, []).append(pod)
        if target.name:
            node = self.store.get(nodes_type, "", target.name)
            return json_response(metrics_api.node_metrics(
                node, by_node.get(target.name, []), now))
        nodes = self.store.list_objects(nodes_type, None, labels)
        return json_response(metrics_api.metrics_list("NodeMetrics", [
            metrics_api.node_metrics(node, by_node.get(node["metadata"]["name"], []), now)
            for node in nodes]))

    def _selectors(self, request: web.Request, rtype: ResourceType
                   ) -> tuple[LabelSelector | None, FieldSelector | None]:
        query = request.query
        labels = fields = None
        try:
            if query.get("labelSelector"):
                labels = parse_label_selector(query["labelSelector"])
            if query.get("fieldSelector"):
                fields = parse_field_selector(query["fieldSelector"])
        except SelectorError as error:
            raise bad_request(str(error)) from error
        if fields is not None:
            known = {"metadata.name", "metadata.namespace", *SUPPORTED_FIELDS.get(rtype.key, ())}
            for name in fields.fields:
                if name not in known:
                    raise bad_request(f'field label not supported: {name} (for {rtype.kind}: '
                                      f'{", ".join(sorted(known))})')
        return labels, fields

    @staticmethod
    def _wants_table(request: web.Request) -> str | None:
        accept = request.headers.get("Accept", "")
        first = accept.split(",")[0]
        if "as=Table" in first:
            return request.query.get("includeObject", "Metadata")
        return None

    def _object_response(self, request: web.Request, rtype: ResourceType, obj: dict[str, Any]
                         ) -> web.Response:
        include = self._wants_table(request)
        if include is not None:
            return json_response(tables.render_table(rtype, [obj], {"resourceVersion": obj[
                "metadata"]["resourceVersion"]}, include))
        return json_response(obj)

    def _list(self, request: web.Request, rtype: ResourceType, namespace: str
              ) -> web.Response | ListBody:
        labels, fields = self._selectors(request, rtype)
        query = request.query
        limit = self._int_param(query, "limit") if query.get("limit") else 0
        if limit < 0:
            raise bad_request("limit must be non-negative")
        # Paging is consistent: every page is served as of the first page's resourceVersion,
        # which its continue token carries (paging.py; Store.select_at).
        token = None
        at: int | None = None  # the resourceVersion to serve; None: the latest state
        if query.get("continue"):
            paging.check_continue_options(query)
            token = paging.decode_continue(query["continue"], namespace, rtype.namespaced,
                                           self.store.rv)
            if token.rv > 0:
                at = token.rv
        else:
            at = paging.list_revision(query, self.store.rv)
        list_rv = at if at is not None else self.store.rv
        start = token.start if token is not None else None
        ns = namespace or None
        try:
            items = self.store.select_at(rtype, at, ns, labels, fields, start=start)
        except ApiError as error:
            if error.code != 410:
                raise
            if token is not None:
                raise paging.ExpiredContinue(token) from error
            raise ApiError(410, paging.LIST_TOO_OLD, reason="Expired") from error
        raws: list[bytes] = []
        last_key = next_key = None
        for key, raw in items:
            if limit and len(raws) == limit:
                next_key = key
                break
            raws.append(raw)
            last_key = key
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if next_key is not None and last_key is not None:
            meta["continue"] = paging.encode_continue(list_rv, last_key, namespace,
                                                      rtype.namespaced)
            if labels is None and fields is None:
                # Cheap only without selectors (as on a real apiserver, which then omits it).
                meta["remainingItemCount"] = self.store.count_at(rtype, at, ns, next_key)
        include = self._wants_table(request)
        if include is not None:
            objects = [orjson.loads(raw) for raw in raws]
            return json_response(tables.render_table(rtype, objects, meta, include))
        head = _dumps({"kind": rtype.list_kind, "apiVersion": rtype.api_version,
                       "metadata": meta})
        if len(raws) > STREAMED_LIST_ITEMS:
            return ListBody(head[:-1] + b',"items":[', raws)
        body = head[:-1] + b',"items":[' + b",".join(raws) + b"]}"
        return raw_response(body)

    async def _send_list(self, request: web.Request, body: ListBody) -> web.StreamResponse:
        """Write a large list a batch of items at a time.

        Joining 100,000 stored pods into one body (and copying it once more into the
        response) held three copies of a 157 MB list at once and took the sim from 0.5 to
        1.4 GiB; written in batches, the items are the stored bytes themselves and only one
        batch is copied at a time. The length is known up front, so no chunked encoding."""
        items = body.items
        length = len(body.prefix) + sum(len(raw) for raw in items) + max(len(items) - 1, 0) + 2
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.content_length = length
        await response.prepare(request)
        await response.write(body.prefix)
        for start in range(0, len(items), STREAMED_LIST_BATCH):
            batch = b",".join(items[start:start + STREAMED_LIST_BATCH])
            await response.write(batch if start == 0 else b"," + batch)
        await response.write(b"]}")
        await response.write_eof()
        return response

    async def _watch(self, request: web.Request, rtype: ResourceType, namespace: str
                     ) -> web.StreamResponse:
        labels, fields = self._selectors(request, rtype)
        query = request.query
        timeout = self._int_param(query, "timeoutSeconds") if query.get("timeoutSeconds") \
            else 1800
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        initial = query.get("sendInitialEvents") in ("true", "1")
        rv_text = query.get("resourceVersion", "")
        if rv_text and not rv_text.isdigit():
            raise bad_request(f"invalid resourceVersion {rv_text!r}")
        since = int(rv_text) if rv_text else 0
        watcher = self.store.watch(rtype, WatchFilter(namespace or None, labels, fields))
        response = web.StreamResponse(headers={"Content-Type": JSON,
                                               "Transfer-Encoding": "chunked"})
        try:
            if initial or since == 0:
                for _, stored in self.store.select(rtype, namespace or None, labels, fields):
                    watcher.queue.put_nowait(("ADDED", stored.raw))
                if initial and bookmarks:
                    watcher.queue.put_nowait(("BOOKMARK", self._bookmark(rtype, True)))
            else:
                try:
                    self.store.replay(rtype, since, watcher)
                except ApiError as error:
                    await response.prepare(request)
                    await response.write(b'{"type":"ERROR","object":' +
                                         _dumps(error.status()) + b"}\n")
                    return response
            await response.prepare(request)
            self.streams.add(response)
            deadline = asyncio.get_running_loop().time() + timeout
            loop = asyncio.get_running_loop()
            while not self.closing.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), min(remaining, 30.0))
                except TimeoutError:
                    # A bookmark carries the store's newest version: announcing it while
                    # an event is still queued for this watcher would make the client
                    # resume past that event, and lose it for good. (Seen when the
                    # deadline and a controller's write fall in the same loop pass.)
                    if bookmarks and watcher.queue.empty():
                        await response.write(b'{"type":"BOOKMARK","object":' +
                                             self._bookmark(rtype, False) + b"}\n")
                    continue
                if item is None:
                    break
                chunks = [item]
                while not watcher.queue.empty() and len(chunks) < 500:
                    extra = watcher.queue.get_nowait()
                    if extra is None:
                        break
                    chunks.append(extra)
                await response.write(b"".join(
                    b'{"type":"' + kind.encode() + b'","object":' + raw + b"}\n"
                    for kind, raw in chunks))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(rtype, watcher)
            self.streams.discard(response)
        return response

    def _bookmark(self, rtype: ResourceType, initial_end: bool) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return _dumps({"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta})

    # -- bodies ---------------------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge as error:
            raise ApiError(413, f"request body too large (limit {MAX_BODY} bytes)") from error

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        text = await self._read_body(request)
        try:
            body = orjson.loads(text) if text.strip() else {}
            protobuf_codec.check_storable(body)
        except (orjson.JSONDecodeError, protobuf_codec.UnstorableError) as error:
            raise bad_request(f"invalid JSON body: {error}") from error
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        return body

    async def _object_body(self, request: web.Request, rtype: ResourceType,
                           kind: tuple[str, str] | None = None) -> dict[str, Any]:
        """The request's object. ``kind`` is the (apiVersion, kind) it must be when that is not
        the resource's own (a TokenRequest posted to serviceaccounts/NAME/token)."""
        api_version, expected = kind or (rtype.api_version, rtype.kind)
        content_type = request.content_type
        text = await self._read_body(request)
        if content_type == protobuf_codec.PROTOBUF_CONTENT_TYPE:
            try:
                envelope = protobuf_codec.read_envelope(text)
                # Before any conversion: a body of another kind costs nothing but its envelope
                # (which refuses lists and kinds it cannot decode). Go fills a missing kind and
                # version from the resource's; so does this.
                if envelope.kind and envelope.kind != expected:
                    raise bad_request(f"the kind of the object ({envelope.kind}) does not match "
                                      f"the resource ({expected})")
                if envelope.api_version and envelope.api_version != api_version:
                    raise bad_request(f"the apiVersion of the object ({envelope.api_version}) "
                                      f"does not match the resource ({api_version})")
                body = protobuf_codec.decode_envelope(dataclasses.replace(
                    envelope, api_version=api_version, kind=expected))
                protobuf_codec.check_storable(body)  # an object nesting raw JSON in turn
            except (protobuf_codec.ProtobufError, protobuf_codec.UnstorableError) as error:
                raise bad_request(f"cannot decode protobuf body: {error}") from error
            return body
        yaml_size = None
        if content_type in ("application/yaml", "application/x-yaml"):
            yaml_size = len(text)
            try:
                body = yaml.safe_load(text)
            except (yaml.YAMLError, RecursionError) as error:
                raise bad_request(f"invalid YAML body: {error}") from error
        elif content_type in (JSON, "", "application/octet-stream", "text/plain"):
            try:
                body = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                raise bad_request(f"invalid JSON body: {error}") from error
        else:
            raise ApiError(415, f"unsupported media type {content_type!r}: send "
                           f"application/json, application/yaml or "
                           f"{protobuf_codec.PROTOBUF_CONTENT_TYPE}")
        try:
            protobuf_codec.check_storable(body, yaml_size=yaml_size)
        except protobuf_codec.UnstorableError as error:
            raise bad_request(f"invalid body: {error}") from error
        if not isinstance(body, dict):
            raise bad_request(f"the body must be a {rtype.kind} object")
        return body
