"""Services that answer: the API server's proxy subresources, served from the simulation.

`GET /api/v1/namespaces/NS/services/NAME[:PORT]/proxy/PATH` and
`.../pods/NAME[:PORT]/proxy/PATH` are how `kubectl get --raw`, dashboards and
Pystol's http-probe (`params.service`) reach an application through the API server.
No container runs in the sim, so the application is simulated: a pod *serves* while
it is Running and Ready, and a Service answers from one of its Endpoints' ready
addresses. That makes chaos visible where users look for it: kill every pod of a
Deployment and the service proxy answers 503 until the replacements are Ready;
partition pods with a NetworkPolicy (network_policy.py) and they stop answering.

Why each answer looks the way it does (kube-apiserver's own wording, so that clients
that branch on it behave the same against the sim and a real cluster):

- `NAME:PORT` is split like `utilnet.SplitSchemeNamePort` (`[scheme:]name[:port]`,
  scheme `http` or `https`): anything else is 400 `invalid service request "ID"`;
- a numeric PORT must be one of the Service's ports: otherwise 503 `no service port
  N found for service "NAME"`; a named PORT (or none, for a single unnamed port) is
  looked up in the Endpoints' ports;
- no ready address with that port: 503 `no endpoints available for service "NAME"`;
- a backend that does not accept the connection: 503 `error trying to reach service:
  dial tcp IP:PORT: connect: connection refused` (a pod not Running and Ready), or,
  after the profile's dial timeout, `...: i/o timeout` (a NetworkPolicy drops the
  API server's packets);
- a pod without an IP: 400 `address not allowed`.

What a backend answers (its *traffic profile*, from the Service's annotations, or a
pod's for `pods/NAME/proxy`; a scenario's `services[].traffic` writes them):

| annotation | default | meaning |
| --- | --- | --- |
| `sim.pystol.org/latency-ms` | 5 | base latency of an answer |
| `sim.pystol.org/jitter-ms` | 0 | plus a uniform random 0..jitter |
| `sim.pystol.org/error-rate` | 0 | share of answers that are 500 (0..1) |
| `sim.pystol.org/slowdown` | `proportional` | latency x desired/reachable endpoints; `none` |
| `sim.pystol.org/max-latency-ms` | 5000 | cap on one answer's latency (at most 30000) |
| `sim.pystol.org/dial-timeout-ms` | 1000 | time an unreachable backend takes to fail |

Latencies are real milliseconds, not divided by `--speed`: they are what a probe
measures. "Desired" endpoints are the replicas the Deployments and StatefulSets behind
the Service want (their template labels match its selector), or, without such a
workload, its ready plus not-ready addresses. A Service skips ready addresses that a
NetworkPolicy isolates while others remain; when every ready address is isolated the
request dials one and times out, as on a real cluster.

A backend's body is a small JSON document naming the pod that answered (tests and
probes check who served); `/healthz` answers `ok`, `/status/CODE` answers CODE.
Every request is counted (`/_sim/traffic`), so a probe's view can be compared with
what the sim did.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from pystol_sim.errors import ApiError, bad_request
from pystol_sim.network_policy import APISERVER, APISERVER_ADDRESS, ingress_verdict
from pystol_sim.resources import Catalogue, ResourceType
from pystol_sim.store import Store

ANNOTATION_PREFIX = "sim.pystol.org/"
LATENCY_ANNOTATION = f"{ANNOTATION_PREFIX}latency-ms"
JITTER_ANNOTATION = f"{ANNOTATION_PREFIX}jitter-ms"
ERROR_RATE_ANNOTATION = f"{ANNOTATION_PREFIX}error-rate"
SLOWDOWN_ANNOTATION = f"{ANNOTATION_PREFIX}slowdown"
MAX_LATENCY_ANNOTATION = f"{ANNOTATION_PREFIX}max-latency-ms"
DIAL_TIMEOUT_ANNOTATION = f"{ANNOTATION_PREFIX}dial-timeout-ms"
SLOWDOWN_RULES = ("proportional", "none")
# Hard bounds: no proxied request may hold a connection longer than this.
LATENCY_CEILING_MS = 30_000.0
MAX_PROXY_BODY = 1024 * 1024
MAX_PROXY_PATH = 4096
# An Endpoints object is user-written: the proxy considers at most this many of its ready
# addresses (after dropping repeats of one pod), so a request's work stays bounded
# whatever the object holds.
MAX_PROXY_ADDRESSES = 1000
# Counts kept per Service and per pod: past this many, those of deleted objects are dropped.
MAX_TRACKED = 10_000
MAX_LIVE_PORTS = 32  # /_sim/traffic looks at this many of an Endpoints' port names
# The methods kube-apiserver proxies, and the verb each counts as in /_sim/requests (RBAC
# maps them in rbac.request_attributes, where OPTIONS is the empty verb, as on a real server).
PROXY_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update",
               "PATCH": "patch", "DELETE": "delete", "OPTIONS": "options"}
PROXY_METHODS = frozenset(PROXY_VERBS)
_STATUS_PATH = re.compile(r"^/status/(\d{3})/?$")


# ------------------------------------------------------------------------- the profile


@dataclass(frozen=True)
class TrafficProfile:
    """How a simulated backend answers (see the module docstring for the annotations)."""

    latency_ms: float = 5.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    slowdown: str = "proportional"
    max_latency_ms: float = 5000.0
    dial_timeout_ms: float = 1000.0

    def latency_seconds(self, desired: int, reachable: int, rng: random.Random) -> float:
        """One answer's latency: base plus jitter, scaled when fewer endpoints remain."""
        latency = self.latency_ms + (rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0.0)
        if self.slowdown == "proportional" and 0 < reachable < desired:
            latency *= desired / reachable
        return min(latency, self.max_latency_ms, LATENCY_CEILING_MS) / 1000.0

    def to_json(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "jitter_ms": self.jitter_ms,
                "error_rate": self.error_rate, "slowdown": self.slowdown,
                "max_latency_ms": self.max_latency_ms, "dial_timeout_ms": self.dial_timeout_ms}


def _milliseconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= LATENCY_CEILING_MS:
        raise ValueError(f"must be within 0..{LATENCY_CEILING_MS:g} (milliseconds)")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError("must be within 0..1")
    return value


def _slowdown(text: str) -> str:
    if text not in SLOWDOWN_RULES:
        raise ValueError(f"must be one of {', '.join(SLOWDOWN_RULES)}")
    return text


_PROFILE_FIELDS = (
    (LATENCY_ANNOTATION, "latency_ms", _milliseconds),
    (JITTER_ANNOTATION, "jitter_ms", _milliseconds),
    (ERROR_RATE_ANNOTATION, "error_rate", _rate),
    (SLOWDOWN_ANNOTATION, "slowdown", _slowdown),
    (MAX_LATENCY_ANNOTATION, "max_latency_ms", _milliseconds),
    (DIAL_TIMEOUT_ANNOTATION, "dial_timeout_ms", _milliseconds),
)


def profile_from_annotations(annotations: Mapping[str, str] | None
                             ) -> tuple[TrafficProfile, list[str]]:
    """The profile the annotations give, and a problem per annotation that is not valid.

    A bad annotation does not break the Service's traffic: its default is used and the
    problem is reported by `/_sim/traffic` (annotations are free text on a real server
    too, so writing one is never refused)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, attribute, parse in _PROFILE_FIELDS:
        text = (annotations or {}).get(key)
        if text is None:
            continue
        try:
            values[attribute] = parse(str(text).strip())
        except ValueError as error:
            message = str(error) if "must be" in str(error) else "must be a number"
            problems.append(f"{key}: {text!r} {message}; the default is used")
    return TrafficProfile(**values), problems


# ------------------------------------------------------------------------- ids and ports


def split_scheme_name_port(ident: str) -> tuple[str, str, str] | None:
    """`[scheme:]name[:port]` as kube-apiserver splits it (utilnet.SplitSchemeNamePort)."""
    parts = ident.split(":")
    if len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, name, port = "", parts[0], parts[1]
    elif len(parts) == 3:
        scheme, name, port = parts
    else:
        return None
    if not name or scheme not in ("", "http", "https"):
        return None
    return scheme, name, port


def proxy_tail(path: str, plural: str, ident: str) -> str:
    """The path after `PLURAL/ID/proxy` in a request path ("/" when there is none)."""
    marker = f"/{plural}/{ident}/proxy"
    index = path.find(marker)
    tail = path[index + len(marker):] if index >= 0 else ""
    return tail if tail.startswith("/") else "/" + tail


def _number(value: Any) -> int:
    """A port number from a user-written field (0 when it is not one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def pod_serves(pod: Mapping[str, Any]) -> bool:
    """Running, Ready and not terminating: the simulated container accepts connections."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(cond.get("type") == "Ready" and cond.get("status") == "True"
               for cond in status.get("conditions") or ())


# ------------------------------------------------------------------------- ground truth


@dataclass
class Counts:
    """What happened to the requests that reached one Service or pod through the proxy."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    served: int = 0  # a backend answered (whatever its status)
    errors: int = 0  # the backend's simulated errors (500, from the error rate)
    unavailable: int = 0  # 503 "no endpoints available" / "no service port"
    unreachable: int = 0  # 503 after a dial timeout (NetworkPolicy)
    refused: int = 0  # 503 connection refused (pod not Running and Ready)
    latency_seconds: float = 0.0  # sum of the answers' simulated latencies
    served_by: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests,
                "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
                "served": self.served, "errors": self.errors, "unavailable": self.unavailable,
                "unreachable": self.unreachable, "refused": self.refused,
                "mean_latency_seconds": round(self.latency_seconds / self.served, 6)
                if self.served else None,
                "served_by": dict(sorted(self.served_by.items()))}


class Reachability:
    """Does a pod accept the API server's connections under its NetworkPolicies? One
    request's answers: each namespace's policies are listed once, each (pod, port)
    evaluated once."""

    def __init__(self, store: Store, rtype: ResourceType, pods: ResourceType) -> None:
        self.store = store
        self.rtype = rtype
        self.pods = pods
        self._policies: dict[str, list[dict[str, Any]]] = {}
        self._verdicts: dict[tuple[str, str, int], bool] = {}
        self._found: dict[tuple[str, str], dict[str, Any] | None] = {}

    def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod (looked up once per request), or None."""
        key = (namespace, name)
        if key not in self._found:
            self._found[key] = self.store.find(self.pods, namespace, name)
        return self._found[key]

    def __call__(self, pod: Mapping[str, Any], port: int) -> bool:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"], port)
        known = self._verdicts.get(key)
        if known is None:
            policies = self._policies.get(key[0])
            if policies is None:
                policies = self._policies[key[0]] = self.store.list_objects(self.rtype, key[0])
            known = not policies or ingress_verdict(pod, APISERVER, port or None,
                                                    policies).allowed
            self._verdicts[key] = known
        return known


@dataclass(frozen=True)
class Backend:
    """One address a Service may send a request to."""

    ip: str
    port: int
    pod: dict[str, Any] | None  # None: an address that names no pod of the store
    reachable: bool


# ------------------------------------------------------------------------- the server part


class ServiceTraffic:
    """Serves `services/*/proxy` and `pods/*/proxy` and keeps their ground truth."""

    def __init__(self, store: Store, catalogue: Catalogue, seed: int | None = None) -> None:
        self.store = store
        self.catalogue = catalogue
        self.rng = random.Random(seed)
        self.services: dict[tuple[str, str], Counts] = {}
        self.pods: dict[tuple[str, str], Counts] = {}
        self._next: Counter[tuple[str, str]] = Counter()  # round-robin position per Service

    def _type(self, group: str, plural: str) -> ResourceType:
        rtype = self.catalogue.get(group, "v1", plural)
        assert rtype is not None, plural
        return rtype

    # -- requests --------------------------------------------------------------------------

    async def serve(self, request: web.Request, rtype: ResourceType, namespace: str,
                    ident: str) -> web.StreamResponse:
        """A proxied request to a Service or pod (the route `_serve` hands over)."""
        if request.method not in PROXY_METHODS:
            raise ApiError(405, f"method {request.method} is not allowed on "
                           f"{rtype.plural}/proxy")
        tail = proxy_tail(request.path, rtype.plural, ident)
        if len(tail) > MAX_PROXY_PATH:
            raise bad_request(f"proxy path: {len(tail)} characters; at most "
                              f"{MAX_PROXY_PATH} are accepted")
        if request.content_length is not None and request.content_length > MAX_PROXY_BODY:
            raise ApiError(413, f"request body too large for {rtype.plural}/proxy: "
                           f"{request.content_length} bytes (limit {MAX_PROXY_BODY})")
        # read() returns what is buffered: a chunked body is read until its end, and
        # refused as soon as it passes the limit.
        body = b""
        while True:
            chunk = await request.content.read(MAX_PROXY_BODY + 1 - len(body))
            if not chunk:
                break
            body += chunk
            if len(body) > MAX_PROXY_BODY:
                raise ApiError(413, f"request body too large for {rtype.plural}/proxy "
                               f"(limit {MAX_PROXY_BODY} bytes)")
        if rtype.plural == "services":
            return await self._serve_service(request, namespace, ident, tail, len(body))
        return await self._serve_pod(request, namespace, ident, tail, len(body))

    async def _serve_service(self, request: web.Request, namespace: str, ident: str,
                             tail: str, body_bytes: int) -> web.StreamResponse:
        split = split_scheme_name_port(ident)
        if split is None:
            raise bad_request(f'invalid service request "{ident}"')
        _, name, port_text = split
        service = self.store.get(self._type("", "services"), namespace, name)
        counts = self._counts(self.services, "services", (namespace, name))
        counts.requests += 1
        if len(self._next) > MAX_TRACKED:  # round-robin positions: losing them is harmless
            self._next.clear()
        try:
            port_name = self._service_port_name(service, port_text)
            backends, desired = self._backends(service, port_name, self._reachability())
            if not backends:
                raise ApiError(503, f'no endpoints available for service "{name}"')
        except ApiError as error:
            counts.by_status[error.code] += 1
            if error.code == 503:
                counts.unavailable += 1
            raise
        reachable = [b for b in backends if b.reachable]
        if reachable:
            position = self._next[(namespace, name)]
            self._next[(namespace, name)] = position + 1
            backend = reachable[position % len(reachable)]
        else:  # every ready address is isolated: dial one, as kube-apiserver would
            backend = self.rng.choice(backends)
        profile, _ = profile_from_annotations(service["metadata"].get("annotations"))
        return await self._answer(request, counts, backend, profile, desired, len(reachable),
                                  tail, body_bytes, service=name)

    async def _serve_pod(self, request: web.Request, namespace: str, ident: str, tail: str,
                         body_bytes: int) -> web.StreamResponse:
        split = split_scheme_name_port(ident)
        if split is None:
            raise bad_request(f'invalid pod request "{ident}"')
        _, name, port_text = split
        pod = self.store.get(self._type("", "pods"), namespace, name)
        counts = self._counts(self.pods, "pods", (namespace, name))
        counts.requests += 1
        ip = str((pod.get("status") or {}).get("podIP") or "")
        if not ip:
            counts.by_status[400] += 1
            raise bad_request("address not allowed")
        port = self._pod_port(pod, port_text)
        backend = Backend(ip, port, pod, self._reachability()(pod, port))
        profile, _ = profile_from_annotations(pod["metadata"].get("annotations"))
        return await self._answer(request, counts, backend, profile, 1, 1, tail, body_bytes)

    async def _answer(self, request: web.Request, counts: Counts, backend: Backend,
                      profile: TrafficProfile, desired: int, reachable: int, tail: str,
                      body_bytes: int, service: str | None = None) -> web.StreamResponse:
        """Dial the backend and let it answer after its latency (or fail like a dial)."""
        address = f"{backend.ip}:{backend.port}" if backend.port else backend.ip
        pod = backend.pod
        pod_key = ((pod["metadata"]["namespace"], pod["metadata"]["name"]) if pod is not None
                   else None)
        pod_counts = (self._counts(self.pods, "pods", pod_key) if pod_key and service
                      else None)
        if pod_counts is not None:
            pod_counts.requests += 1
        every = [c for c in (counts, pod_counts) if c is not None]
        if pod is not None and not pod_serves(pod):
            for c in every:
                c.refused += 1
                c.by_status[503] += 1
            raise ApiError(503, f"error trying to reach service: dial tcp {address}: "
                           "connect: connection refused")
        if not backend.reachable:
            await asyncio.sleep(min(profile.dial_timeout_ms, LATENCY_CEILING_MS) / 1000.0)
            for c in every:
                c.unreachable += 1
                c.by_status[503] += 1
            raise ApiError(503, f"error trying to reach service: dial tcp {address}: "
                           "i/o timeout")
        latency = profile.latency_seconds(desired, reachable, self.rng)
        if latency:
            await asyncio.sleep(latency)
        pod_name = pod["metadata"]["name"] if pod is not None else backend.ip
        status = 200
        if profile.error_rate and self.rng.random() < profile.error_rate:
            status = 500
        else:
            match = _STATUS_PATH.match(tail)
            if match and 100 <= int(match.group(1)) <= 599:
                status = int(match.group(1))
        for c in every:
            c.served += 1
            c.latency_seconds += latency
            c.by_status[status] += 1
            c.served_by[pod_name] += 1
            if status == 500 and profile.error_rate:
                c.errors += 1
        headers = {"X-Served-By": pod_name}
        if request.method == "OPTIONS":
            headers["Allow"] = ", ".join(sorted(PROXY_METHODS))
            return web.Response(status=204, headers=headers)
        if tail.rstrip("/") == "/healthz" and status == 200:
            return web.Response(text="ok" if request.method != "HEAD" else None,
                                headers=headers, content_type="text/plain")
        document = {"pod": pod_name, "namespace": (pod or {}).get("metadata", {}).get(
            "namespace"), "service": service, "address": address,
            "method": request.method, "path": tail, "status": status,
            "request_body_bytes": body_bytes,
            "latency_ms": round(latency * 1000, 3)}
        if status == 500 and profile.error_rate:
            document["error"] = "simulated error (sim.pystol.org/error-rate)"
        return web.Response(body=b"" if request.method == "HEAD" else orjson.dumps(document),
                            status=status, headers=headers, content_type="application/json")

    # -- endpoints -------------------------------------------------------------------------

    @staticmethod
    def _service_port_name(service: Mapping[str, Any], port_text: str) -> str:
        """The Endpoints port name a request's PORT means (ResourceLocation's lookup)."""
        if not (port_text.isascii() and port_text.isdigit()):
            return port_text
        number = int(port_text)
        spec = service.get("spec")
        for port in _list(spec.get("ports") if isinstance(spec, Mapping) else None):
            if isinstance(port, Mapping) and _number(port.get("port")) == number:
                return str(port.get("name") or "")
        raise ApiError(503, f'no service port {number} found for service '
                       f'"{service["metadata"]["name"]}"')

    def _reachability(self) -> Reachability:
        return Reachability(self.store, self._type("networking.k8s.io", "networkpolicies"),
                            self._type("", "pods"))

    def _counts(self, table: dict[tuple[str, str], Counts], plural: str,
                key: tuple[str, str]) -> Counts:
        """The counts of one Service or pod; past MAX_TRACKED entries, those of objects
        that no longer exist are dropped (then the oldest), so the table stays bounded."""
        counts = table.get(key)
        if counts is not None:
            return counts
        if len(table) >= MAX_TRACKED:
            rtype = self._type("", plural)
            for gone in [k for k in table if self.store.stored(rtype, *k) is None]:
                del table[gone]
            while len(table) >= MAX_TRACKED * 9 // 10:  # so that the next ones are cheap
                del table[next(iter(table))]
        counts = table[key] = Counts()
        return counts

    def _backends(self, service: Mapping[str, Any], port_name: str,
                  reachable: Reachability) -> tuple[list[Backend], int]:
        """The ready addresses serving `port_name`, each with its pod and reachability;
        and how many endpoints the Service is meant to have.

        Endpoints are user-written, so an address counts only when its targetRef names a
        pod of the Service's own namespace whose IP it is (none outside it is looked up),
        a pod counts once per port, and at most MAX_PROXY_ADDRESSES addresses are
        considered."""
        meta = service["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        endpoints = self.store.get(self._type("", "endpoints"), namespace, name)
        backends: list[Backend] = []
        not_ready = 0
        considered = 0
        subsets = endpoints.get("subsets")
        for subset in subsets if isinstance(subsets, list) else ():
            if not isinstance(subset, Mapping):
                continue
            waiting = subset.get("notReadyAddresses")
            not_ready += len(waiting) if isinstance(waiting, list) else 0
            ports = subset.get("ports")
            port = next((p for p in ports if isinstance(p, Mapping)
                         and str(p.get("name") or "") == port_name), None) \
                if isinstance(ports, list) else None
            addresses = subset.get("addresses")
            if port is None or not isinstance(addresses, list):
                continue
            number = _number(port.get("port"))
            seen: set[tuple[str, str]] = set()
            for address in addresses:
                if considered >= MAX_PROXY_ADDRESSES:
                    break
                if not isinstance(address, Mapping):
                    continue
                ip = str(address.get("ip", ""))
                ref = address.get("targetRef")
                ref = ref if isinstance(ref, Mapping) else {}
                pod = None
                if ref.get("kind") == "Pod":
                    ref_key = (str(ref.get("name", "")), ip)
                    if ref.get("namespace") not in (None, "", namespace) or ref_key in seen:
                        continue
                    seen.add(ref_key)
                    considered += 1
                    pod = reachable.find_pod(namespace, ref_key[0])
                    # kube-apiserver's isValidAddress: the pod exists and has this IP
                    if pod is None or (pod.get("status") or {}).get("podIP") != ip:
                        continue
                else:
                    considered += 1
                backends.append(Backend(ip, number, pod,
                                        pod is None or reachable(pod, number)))
        desired = self._desired(service) or (len(backends) + not_ready)
        return backends, desired

    def _desired(self, service: Mapping[str, Any]) -> int:
        """Replicas the Deployments and StatefulSets behind the Service want (0: none)."""
        spec = service.get("spec")
        selector = spec.get("selector") if isinstance(spec, Mapping) else None
        if not selector or not isinstance(selector, Mapping):
            return 0
        namespace = service["metadata"]["namespace"]
        total = 0
        for plural in ("deployments", "statefulsets"):
            rtype = self.catalogue.get("apps", "v1", plural)
            if rtype is None:
                continue
            for workload in self.store.list_objects(rtype, namespace):
                spec = workload.get("spec") or {}
                labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
                if isinstance(labels, Mapping) and all(labels.get(k) == v
                                                       for k, v in selector.items()):
                    total += int(spec.get("replicas", 1) or 0)
        return total

    @staticmethod
    def _pod_port(pod: Mapping[str, Any], port_text: str) -> int:
        """The port a `pods/NAME[:PORT]/proxy` request dials (first container port when
        none is given, as kube-apiserver does; 0 when the pod declares none)."""
        containers = (pod.get("spec") or {}).get("containers") or ()
        ports = [port for container in _list(containers) if isinstance(container, Mapping)
                 for port in _list(container.get("ports")) if isinstance(port, Mapping)]
        if not port_text:
            return _number(ports[0].get("containerPort")) if ports else 0
        if port_text.isascii() and port_text.isdigit():
            return int(port_text)
        for port in ports:
            if port.get("name") == port_text:
                return _number(port.get("containerPort"))
        raise ApiError(503, f"error trying to reach service: dial tcp "
                       f"{(pod.get('status') or {}).get('podIP')}:{port_text}: "
                       "unknown port")

    # -- ground truth ----------------------------------------------------------------------

    async def control(self, request: web.Request) -> web.Response:
        """`GET /_sim/traffic[?namespace=NS]`: per Service and pod, what the proxy served
        and what serves now; `DELETE /_sim/traffic` forgets the counts."""
        if request.method == "DELETE":
            self.services.clear()
            self.pods.clear()
            return web.json_response({"services": [], "pods": []})
        if request.method != "GET":
            raise ApiError(405, f"method {request.method} is not allowed on /_sim/traffic "
                           "(GET, DELETE)")
        namespace = request.query.get("namespace") or None
        return web.Response(body=orjson.dumps(self.report(namespace)),
                            content_type="application/json")

    def report(self, namespace: str | None = None) -> dict[str, Any]:
        services = []
        reachable = self._reachability()  # one look at each namespace's policies
        for service in self.store.list_objects(self._type("", "services"), namespace):
            meta = service["metadata"]
            key = (meta["namespace"], meta["name"])
            profile, problems = profile_from_annotations(meta.get("annotations"))
            entry: dict[str, Any] = {"namespace": key[0], "name": key[1],
                                     **self.services.get(key, Counts()).to_json(),
                                     "profile": profile.to_json()}
            entry.update(self._live(service, reachable))
            if problems:
                entry["profile_problems"] = problems
            services.append(entry)
        pods = [{"namespace": ns, "name": name, **counts.to_json()}
                for (ns, name), counts in sorted(self.pods.items())
                if namespace is None or ns == namespace]
        return {"apiserver_address": APISERVER_ADDRESS, "services": services, "pods": pods}

    def _live(self, service: Mapping[str, Any], reachable: Reachability) -> dict[str, Any]:
        """The Service's endpoints now: ready, reachable (not isolated), desired."""
        try:
            endpoints = self.store.get(self._type("", "endpoints"),
                                       service["metadata"]["namespace"],
                                       service["metadata"]["name"])
        except ApiError:
            return {"ready_endpoints": 0, "reachable_endpoints": 0, "isolated_pods": [],
                    "desired_endpoints": self._desired(service)}
        subsets = [s for s in endpoints.get("subsets") or () if isinstance(s, Mapping)] \
            if isinstance(endpoints.get("subsets"), list) else []
        names = {str((a.get("targetRef") or {}).get("name", a.get("ip", "")))
                 if isinstance(a.get("targetRef") or {}, Mapping) else str(a.get("ip", ""))
                 for s in subsets for a in _list(s.get("addresses")) if isinstance(a, Mapping)}
        all_backends: dict[str, Backend] = {}
        ports = {str(p.get("name") or "") for s in subsets for p in _list(s.get("ports"))
                 if isinstance(p, Mapping)}
        for port in sorted(ports)[:MAX_LIVE_PORTS] or [""]:
            backends, _ = self._backends(service, port, reachable)
            for backend in backends:
                key = backend.pod["metadata"]["name"] if backend.pod else backend.ip
                known = all_backends.get(key)
                if known is None or not backend.reachable:
                    all_backends[key] = backend
        desired = self._desired(service)
        return {"ready_endpoints": len(names),
                "reachable_endpoints": sum(1 for b in all_backends.values() if b.reachable),
                "isolated_pods": sorted(k for k, b in all_backends.items() if not b.reachable),
                "desired_endpoints": desired or len(names)}


__all__ = [
    "DIAL_TIMEOUT_ANNOTATION",
    "ERROR_RATE_ANNOTATION",
    "JITTER_ANNOTATION",
    "LATENCY_ANNOTATION",
    "MAX_LATENCY_ANNOTATION",
    "PROXY_VERBS",
    "SLOWDOWN_ANNOTATION",
    "ServiceTraffic",
    "TrafficProfile",
    "pod_serves",
    "profile_from_annotations",
    "proxy_tail",
    "split_scheme_name_port",
]
