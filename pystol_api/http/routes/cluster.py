"""The cluster's topology for the dashboard: nodes, pods, workloads and what chaos touches.

`GET /api/v1/cluster` is read-only. It lists nodes, pods (all namespaces, paged with
`limit`/`continue`), ReplicaSets, Deployments, StatefulSets and DaemonSets through the
raw-JSON path (no typed deserialisation: a 2,000-pod list parses in milliseconds), and
flags the pods that a running job has chosen as targets (read from the job store).

The dashboard polls this once a second from every open tab, and a 2,000-pod answer is
~390 KB of JSON, so three things keep that cheap:

- **One cluster read for every API process** (`SharedTopology`). The unscoped topology
  is kept in Redis for `SHARED_SECONDS`; when it has expired one request, anywhere,
  takes a single-flight lock (`SET NX` with an expiry) and reads the cluster, while the
  others answer with the topology of a moment ago (at most `STALE_SECONDS` old), or,
  having none, wait for the holder's answer. A holder that died frees the lock when it
  expires and a waiter reads instead; a failed read is shared with those who waited for
  it (they answer 502 at once rather than each asking the cluster again), while the next
  request tries again (a cluster that recovered is seen at once). N viewers on M
  processes: at most one cluster read per `SHARED_SECONDS`.
- **Conditional requests.** Each answer carries a strong `ETag` computed on the body
  *this caller* gets (after `scoped`) and bound to the caller's identity, so a tag never
  matches for anyone else; `If-None-Match` with it is answered `304` with no body.
  `Cache-Control: private, no-cache`: browsers may keep the answer but must revalidate,
  shared caches must not keep it.
- **gzip** when the client accepts it (~13 KB for the 390 KB body), with
  `Vary: Accept-Encoding, Authorization`. The gzipped representation has its own tag
  (`"…-gzip"`), as a strong tag names exact bytes; `If-None-Match` with either matches.

Reading a large or slow cluster takes a while, and every request arriving meanwhile
waits for that one read, holding an API thread. So at most `MAX_CONCURRENT` requests per
API process are in this view at once; one more is answered 503 (`Retry-After: 1`) at once
instead of queueing a thread, and the dashboard simply draws the next poll.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from pystol_api.http.auth import allows, current_actor
from pystol_api.http.problems import ApiProblem, problem_doc
from pystol_api.http.routes.common import (
    API_PREFIX,
    BEARER_SECURITY,
    UNAUTHORIZED_DOC,
    Services,
)
from pystol_worker.core.access import Permission
from pystol_worker.core.model import JobStatus
from pystol_worker.kube.cluster_access import PAGE_SIZE, ClusterAccess, ClusterError

log = logging.getLogger(__name__)
TAG = Tag(name="cluster", description="The cluster as the dashboard draws it.")
# One cluster read serves every API process for this long. A little under the dashboard's
# 1 s poll, so one open dashboard still sees each change within ~2 s (this + a poll + the
# read), as it did with the per-process 0.5 s cache; a crowd costs <= 1.25 reads/s.
SHARED_SECONDS = 0.8
LOCK_SECONDS = 10.0  # the single-flight lock's expiry: how long a dead holder blocks others
STALE_SECONDS = 3.0  # while another request reads, an answer current this recently will do
MAX_SHARED_BODY_BYTES = 64 * 1024 * 1024  # ~300,000 pods; a larger entry was not ours
MAX_FAILURE_CHARS = 500  # a shared read's failure, as its waiters show it
BODY_SECONDS = 30.0  # a published body outlives its pointer, so a reader always finds it
WAIT_STEP_SECONDS = 0.02  # how often a waiter looks for the holder's answer
KEY_CURRENT = "pystol:cluster-view:current"  # the digest of the current body
KEY_LOCK = "pystol:cluster-view:lock"  # the holder's token
KEY_FAILED = "pystol:cluster-view:failed:"  # + the holder's token: why its read failed
KEY_BODY = "pystol:cluster-view:body:"  # + digest: the unscoped topology's JSON
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 6
MAX_VIEWS = 64  # scoped bodies kept per API process (one per distinct scope)
MAX_RUNNING_JOBS = 200
MAX_CONCURRENT = 4  # requests in the view at once, per API process
BUSY_RETRY_SECONDS = 1


class NodeInfo(BaseModel):
    name: str
    ready: bool = Field(description="The node's Ready condition is True.")
    cordoned: bool = Field(description="spec.unschedulable is set.")
    labels: dict[str, str] = Field(default_factory=dict)


class WorkloadKey(BaseModel):
    kind: str = Field(examples=["Deployment"])
    name: str


class PodInfo(BaseModel):
    namespace: str
    name: str
    node: str | None = None
    phase: str = Field(examples=["Running"])
    ready: bool
    terminating: bool = False
    workload: WorkloadKey | None = Field(None, description="The owning workload; a "
                                                           "ReplicaSet's Deployment when "
                                                           "it has one.")
    hit: bool = Field(False, description="A running job has chosen this pod as a target.")
    hit_by: list[str] = Field(default_factory=list, description="Ids of those jobs.")


class WorkloadInfo(BaseModel):
    kind: str
    namespace: str
    name: str
    desired: int
    ready: int


class ClusterTopology(BaseModel):
    nodes: list[NodeInfo]
    pods: list[PodInfo]
    workloads: list[WorkloadInfo]
    namespaces: list[str]
    running_jobs: list[str] = Field(description="Ids of the jobs running now.")


# -- the pure part: Kubernetes objects (plain dicts) to a topology ----------------------------


def _condition(obj: Mapping[str, Any], kind: str) -> bool:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind:
            return condition.get("status") == "True"
    return False


def _controller(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    refs = meta.get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return ref.get("kind", ""), ref.get("name", "")
    if refs:
        return refs[0].get("kind", ""), refs[0].get("name", "")
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def build_topology(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                   replica_sets: Iterable[Mapping[str, Any]] = (),
                   workloads: Iterable[Mapping[str, Any]] = (),
                   hits: Mapping[tuple[str, str], list[str]] | None = None,
                   running_jobs: Iterable[str] = ()) -> ClusterTopology:
    """The topology of plain Kubernetes objects. `workloads` are Deployments, StatefulSets
    and DaemonSets (each carrying its `kind`); `hits` maps (namespace, pod name) to the
    running jobs that chose the pod."""
    hits = hits or {}
    rs_owner: dict[tuple[str, str], tuple[str, str]] = {}
    for rs in replica_sets:
        meta = rs.get("metadata") or {}
        owner = _controller(meta)
        if owner is not None:
            rs_owner[(meta.get("namespace", ""), meta.get("name", ""))] = owner

    node_infos = []
    for node in nodes:
        meta = node.get("metadata") or {}
        node_infos.append(NodeInfo(
            name=meta.get("name", ""), ready=_condition(node, "Ready"),
            cordoned=bool((node.get("spec") or {}).get("unschedulable")),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()}))
    node_infos.sort(key=lambda info: info.name)

    pod_infos = []
    namespaces: set[str] = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        namespaces.add(namespace)
        owner = _controller(meta)
        if owner is not None and owner[0] == "ReplicaSet":
            owner = rs_owner.get((namespace, owner[1]), owner)
        jobs = sorted(hits.get((namespace, name), ()))
        pod_infos.append(PodInfo(
            namespace=namespace, name=name, node=(pod.get("spec") or {}).get("nodeName"),
            phase=(pod.get("status") or {}).get("phase") or "Unknown",
            ready=_condition(pod, "Ready"),
            terminating=bool(meta.get("deletionTimestamp")),
            workload=WorkloadKey(kind=owner[0], name=owner[1]) if owner else None,
            hit=bool(jobs), hit_by=jobs))
    pod_infos.sort(key=lambda info: (info.namespace, info.name))

    workload_infos = []
    for workload in workloads:
        meta = workload.get("metadata") or {}
        spec, status = workload.get("spec") or {}, workload.get("status") or {}
        kind = workload.get("kind", "")
        namespaces.add(meta.get("namespace", ""))
        if kind == "DaemonSet":
            desired, ready = (_int(status.get("desiredNumberScheduled")),
                              _int(status.get("numberReady")))
        else:
            replicas = spec.get("replicas")
            desired = 1 if replicas is None else _int(replicas)
            ready = _int(status.get("readyReplicas"))
        workload_infos.append(WorkloadInfo(kind=kind, namespace=meta.get("namespace", ""),
                                           name=meta.get("name", ""), desired=desired,
                                           ready=ready))
    workload_infos.sort(key=lambda info: (info.namespace, info.kind, info.name))
    return ClusterTopology(nodes=node_infos, pods=pod_infos, workloads=workload_infos,
                           namespaces=sorted(namespaces - {""}),
                           running_jobs=sorted(running_jobs))


# -- reading the cluster -------------------------------------------------------------------------


def list_all(cluster: ClusterAccess, func: Callable[..., Any], kind: str | None = None
             ) -> list[dict[str, Any]]:
    """Every object of a cluster-wide list, paged, as plain dicts (each with its `kind`)."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        body = json.loads(cluster.call("list", func, **kwargs).data)
        for item in body.get("items") or ():
            if kind:
                item.setdefault("kind", kind)
            items.append(item)
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return items


def read_topology(services: Services) -> ClusterTopology:
    cluster = services.cluster.get()
    core, apps = cluster.core, cluster.apps
    hits: dict[tuple[str, str], list[str]] = {}
    running = services.store.list(status=JobStatus.RUNNING, limit=MAX_RUNNING_JOBS).items
    for record in running:
        for target in record.targets:
            if target.kind == "Pod" and target.namespace:
                hits.setdefault((target.namespace, target.name), []).append(record.id)
    workloads = (list_all(cluster, apps.list_deployment_for_all_namespaces, "Deployment")
                 + list_all(cluster, apps.list_stateful_set_for_all_namespaces, "StatefulSet")
                 + list_all(cluster, apps.list_daemon_set_for_all_namespaces, "DaemonSet"))
    return build_topology(
        nodes=list_all(cluster, core.list_node),
        pods=list_all(cluster, core.list_pod_for_all_namespaces),
        replica_sets=list_all(cluster, apps.list_replica_set_for_all_namespaces),
        workloads=workloads, hits=hits, running_jobs=[record.id for record in running])


def scoped(topology: ClusterTopology, readable: Callable[[str], bool]) -> ClusterTopology:
    """The topology without the pods, workloads and namespaces `readable` refuses."""
    namespaces = [namespace for namespace in topology.namespaces if readable(namespace)]
    allowed = set(namespaces)
    pods = [pod for pod in topology.pods if pod.namespace in allowed]
    hits = {job for pod in pods for job in pod.hit_by}
    return topology.model_copy(update={
        "namespaces": namespaces, "pods": pods,
        "workloads": [w for w in topology.workloads if w.namespace in allowed],
        "running_jobs": [job for job in topology.running_jobs if job in hits]})




# -- one cluster read shared by every API process ----------------------------------------------

# Deletes the lock only while it is still ours: after a long read it may have expired and
# been taken by another process, whose lock must stay.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Snapshot:
    """One read of the cluster: the unscoped topology, its JSON and the JSON's digest."""

    digest: str
    topology: ClusterTopology
    body: bytes


def _digest(body: bytes, key: bytes = b"") -> str:
    """The body's name in Redis. Keyed (BLAKE2b as a MAC) with the signing key when there is
    one: Redis is a trust boundary (README "Security"), and a pod that can write Redis must
    not be able to plant a topology every viewer is shown; a body whose MAC is not its
    name is never used."""
    return hashlib.blake2b(body, digest_size=16, key=key[:64]).hexdigest()


class SharedTopology:
    """The unscoped topology, read from the cluster at most once per `ttl` seconds by all
    the API processes sharing one Redis.

    Redis holds a pointer (`KEY_CURRENT`, expiring after `ttl`) to the body
    (`KEY_BODY` + digest, kept longer so a reader that saw the pointer finds it). Each
    process keeps the last snapshot it parsed, so at steady state a request costs one
    small GET. When the pointer has expired, the request that takes the lock reads the
    cluster; the others answer with their last snapshot meanwhile if it was current less
    than `stale_seconds` ago (a slow read must not stall every open dashboard, nor fill
    the view's slots), else they wait for the holder's answer. Without Redis (it failed)
    each process reads for itself: slower, not wrong.
    """

    def __init__(self, client: redis.Redis, read: Callable[[], ClusterTopology], *,
                 key: bytes = b"",
                 ttl: float = SHARED_SECONDS, lock_seconds: float = LOCK_SECONDS,
                 stale_seconds: float = STALE_SECONDS,
                 wait_step: float = WAIT_STEP_SECONDS) -> None:
        self._redis = client
        self._read = read
        self._key = key
        self._ttl = ttl
        self._ttl_ms = max(1, int(ttl * 1000))
        self._lock_seconds = lock_seconds
        self._stale_seconds = stale_seconds
        self._wait_step = wait_step
        self._release = client.register_script(_RELEASE)
        self._parse = threading.Lock()  # one thread per process fetches and parses a body
        self._last: Snapshot | None = None
        self._current_at = -1e9  # monotonic time `_last` was last known current

    def get(self) -> Snapshot:
        """The current snapshot; ClusterError when the (shared) read failed."""
        try:
            return self._shared()
        except redis.RedisError as error:
            log.warning("cluster view: Redis failed (%s); reading the cluster from this "
                        "process", error)
            return self._snapshot(self._read())

    def _shared(self) -> Snapshot:
        give_up = time.monotonic() + self._lock_seconds
        holders: set[bytes] = set()  # the reads this request has waited for
        while True:
            found = self._current()
            if found is not None:
                return found
            for waited in holders:
                failure = self._redis.getrange(KEY_FAILED.encode() + waited, 0,
                                               MAX_FAILURE_CHARS - 1)
                if failure:
                    raise ClusterError(failure.decode(errors="replace")
                                       if isinstance(failure, bytes) else str(failure))
            token = secrets.token_hex(16)
            if self._redis.set(KEY_LOCK, token, nx=True, px=int(self._lock_seconds * 1000)):
                try:
                    # A holder that finished between our GET and our SET published first,
                    # then let go: its answer is the current one, no need to read again.
                    return self._current() or self._read_and_publish(token)
                finally:
                    self._release(keys=[KEY_LOCK], args=[token])
            holder = self._redis.get(KEY_LOCK)
            if holder is not None:
                holders.add(holder if isinstance(holder, bytes) else str(holder).encode())
            last = self._last
            if last is not None and time.monotonic() - self._current_at < self._stale_seconds:
                return last  # another request is reading: the answer of a moment ago
            if time.monotonic() > give_up:
                # The holder outlived its lock's expiry and someone else holds it now:
                # stop waiting and read (sharing the answer all the same).
                return self._read_and_publish(token)
            time.sleep(self._wait_step)

    def _current(self) -> Snapshot | None:
        pointer = self._redis.get(KEY_CURRENT)
        if pointer is None:
            return None
        text = pointer.decode() if isinstance(pointer, bytes) else str(pointer)
        with self._parse:
            last = self._last
            if last is None or last.digest != text:
                found = self._fetch(text)
                if found is None:
                    return None
                last = self._last = found
            self._current_at = time.monotonic()
            return last

    def _fetch(self, name: str) -> Snapshot | None:
        """The published body called `name`, or None (then this request reads the cluster
        and publishes over it): missing, larger than any real topology, not named by its
        MAC, or not a topology. Those last three only come from a hand-written Redis entry."""
        key = KEY_BODY + name
        if self._redis.strlen(key) > MAX_SHARED_BODY_BYTES:
            log.warning("cluster view: the shared body %s is too large; ignored", name[:32])
            return None
        body = self._redis.get(key)
        if body is None:
            return None
        if isinstance(body, str):
            body = body.encode()
        if not hmac.compare_digest(_digest(body, self._key), name):
            log.warning("cluster view: the shared body %s is not named by its MAC; ignored",
                        name[:32])
            return None
        try:
            return Snapshot(name, ClusterTopology.model_validate_json(body), body)
        except ValueError:
            log.warning("cluster view: the shared body %s is not a topology; ignored", name[:32])
            return None

    def _read_and_publish(self, token: str) -> Snapshot:
        try:
            topology = self._read()
        except ClusterError as error:
            # Those waiting for this read answer 502 with it rather than each asking again.
            self._redis.set(KEY_FAILED + token, str(error)[:MAX_FAILURE_CHARS],
                            px=self._ttl_ms)
            raise
        snapshot = self._snapshot(topology)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(KEY_BODY + snapshot.digest, snapshot.body, px=int(BODY_SECONDS * 1000))
            pipe.set(KEY_CURRENT, snapshot.digest, px=self._ttl_ms)
            pipe.execute()
        return snapshot

    def _snapshot(self, topology: ClusterTopology) -> Snapshot:
        body = topology.model_dump_json().encode()
        snapshot = Snapshot(_digest(body, self._key), topology, body)
        with self._parse:
            self._last = snapshot
            self._current_at = time.monotonic()
        return snapshot


# -- one caller's answer ------------------------------------------------------------------------


def _signing_key(settings: Any) -> bytes:
    """The MAC key of shared bodies: the signing key every API process has. Without one (a
    test app) bodies are named by a plain hash, as nothing else is sealed either."""
    key = settings.signing_key.get_secret_value()
    return key.encode() if key else b""


@dataclass
class View:
    """The body one scope sees of one snapshot, its digest and (made on first need) gzip."""

    body: bytes
    digest: str
    gzipped: bytes | None = None

    def compressed(self) -> bytes:
        if self.gzipped is None:
            self.gzipped = gzip.compress(self.body, compresslevel=GZIP_LEVEL, mtime=0)
        return self.gzipped


class Views:
    """Scoped bodies by (snapshot, readable namespaces), so N viewers of one scope cost one
    filtering, one serialisation and one gzip per change, not one per request."""

    def __init__(self, limit: int = MAX_VIEWS) -> None:
        self._limit = limit
        self._views: OrderedDict[tuple[str, tuple[str, ...] | None], View] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, snapshot: Snapshot, readable: tuple[str, ...] | None) -> View:
        """`readable` None: the unscoped body; else the namespaces the caller may read."""
        key = (snapshot.digest, readable)
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
                return view
        if readable is None:
            view = View(snapshot.body, snapshot.digest)
        else:
            allowed = set(readable)
            body = scoped(snapshot.topology, allowed.__contains__).model_dump_json().encode()
            view = View(body, _digest(body))
        with self._lock:
            view = self._views.setdefault(key, view)
            while len(self._views) > self._limit:
                self._views.popitem(last=False)
        return view


def entity_tag(identity: str, view: View) -> str:
    """The caller's tag for a body (unquoted, without the gzip suffix): a digest of who asks
    and of the exact bytes they get. Two callers never share a tag, so one's tag can never
    earn the other a 304, whatever their bodies."""
    return hashlib.blake2b(f"{identity}\n{view.digest}".encode(), digest_size=16).hexdigest()


def caller_identity() -> str:
    """Who asks, as the tag binds it: the actor's kind, name and uid (not the address)."""
    actor = current_actor()
    return f"{actor.kind.value}:{actor.name}:{actor.uid or ''}"


def accepts_gzip() -> bool:
    return request.accept_encodings.quality("gzip") > 0


def not_modified(tags: tuple[str, ...]) -> bool:
    """`If-None-Match` names one of `tags` (either representation of the same body)."""
    condition = request.if_none_match
    if not condition:
        return False
    return any(condition.contains_weak(tag) for tag in tags)


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("cluster", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses={401: UNAUTHORIZED_DOC})
    slots = threading.BoundedSemaphore(MAX_CONCURRENT)
    shared = SharedTopology(services.redis, lambda: read_topology(services),
                            key=_signing_key(services.settings))
    views = Views()

    @bp.get("/cluster", summary="The cluster's topology: nodes, pods, workloads",
            responses={200: ClusterTopology,
                       304: None,
                       502: problem_doc("The Kubernetes API failed or cannot be reached."),
                       503: problem_doc("Too many requests for the topology at once; "
                                        "retry after `Retry-After` seconds.")})
    def cluster_topology() -> Response:
        """Nodes (ready, cordoned), pods (namespace, node, phase, readiness, owning
        workload, and whether a running job has chosen them), and workloads with their
        desired and ready replicas. Read-only; one read of the cluster serves every caller
        for 0.8 s. Answers carry an `ETag`: send it back in `If-None-Match` and an
        unchanged topology is answered `304` without a body. gzip when accepted."""
        if not slots.acquire(blocking=False):
            raise ApiProblem(503, "cluster-view-busy", "Cluster view busy",
                             f"{MAX_CONCURRENT} requests for the topology are being answered "
                             f"by this API process already; retry in {BUSY_RETRY_SECONDS} s",
                             headers={"Retry-After": str(BUSY_RETRY_SECONDS)})
        try:
            return topology_response()
        finally:
            slots.release()

    def topology_response() -> Response:
        try:
            snapshot = shared.get()
        except ClusterError as error:
            raise ApiProblem(502, "cluster-unavailable", "Cluster unavailable",
                             str(error)) from None
        readable: tuple[str, ...] | None = None
        if not allows(Permission.JOBS_READ, None):
            # A scoped caller sees the pods and workloads of the namespaces they may read
            # (nodes are shared by everyone's pods, so they stay, without other tenants'
            # pods on them); the cluster was still read once for all callers.
            readable = tuple(namespace for namespace in snapshot.topology.namespaces
                             if allows(Permission.JOBS_READ, namespace))
        view = views.get(snapshot, readable)
        tag = entity_tag(caller_identity(), view)
        compress = accepts_gzip() and len(view.body) >= GZIP_MIN_BYTES
        sent_tag = f"{tag}-gzip" if compress else tag
        if not_modified((tag, f"{tag}-gzip")):
            response = Response(status=304)
        else:
            response = Response(view.compressed() if compress else view.body,
                                mimetype="application/json")
            if compress:
                response.headers["Content-Encoding"] = "gzip"
        response.set_etag(sent_tag)
        response.headers["Cache-Control"] = "private, no-cache"
        response.headers["Vary"] = "Accept-Encoding, Authorization"
        return response

    return bp
