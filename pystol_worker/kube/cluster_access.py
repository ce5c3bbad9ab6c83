"""The cluster access layer: every call Pystol makes to a Kubernetes API goes through here.

It owns three concerns so that actions do not have to:
- one client-side rate limiter (token bucket, QPS and burst from settings), because
  the Python client has none and a chaos tool must not be the thing that takes the
  API server down;
- retries with exponential backoff on 429, 5xx and connection errors;
- fast reads of large lists: pages of `limit` objects parsed with `json.loads`
  instead of the client's typed models (2 s vs 0.09 s for 10,000 pods).

The `kubernetes` package is imported lazily: the API process and the CLI only
pay for it when they actually talk to a cluster.
"""

from __future__ import annotations

import gc
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from urllib3 import BaseHTTPResponse

    from pystol_worker.core.model import TargetRef

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PAGE_SIZE = 500
PROXY_CONNECT_TIMEOUT = 10.0  # seconds to connect to the API server for a proxied GET


def _loads_without_gc(data: bytes) -> Any:
    """json.loads of a large list with the cyclic collector paused: parsing 100,000 pods
    allocates millions of containers, and collections triggered meanwhile double the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(data)
    finally:
        if enabled:
            gc.enable()


class ClusterError(Exception):
    """A Kubernetes API call failed for good; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(ClusterError):
    pass


class TokenBucket:
    """Client-side rate limiter shared by every thread of a process."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is free; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


@dataclass
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(self.max_delay, float(retry_after))
        backoff = min(self.max_delay, self.base_delay * (2.0 ** attempt))
        return backoff * (0.5 + random.random() / 2)


def preload_client_modules() -> None:
    """Import the client's API modules now: CoreV1Api alone takes about 1.7 s to import,
    which a worker should pay once before forking, not inside a job's dispatch latency."""
    from kubernetes.client import AppsV1Api, CoreV1Api  # noqa: F401


def load_api_client(kubeconfig: str) -> ApiClient:
    """A client from a kubeconfig path, or in-cluster config, or ~/.kube/config."""
    from kubernetes import client, config

    api_client: ApiClient
    if kubeconfig:
        api_client = config.new_client_from_config(config_file=kubeconfig)
        return api_client
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        api_client = config.new_client_from_config()
        return api_client


def event_body(target: TargetRef, api_version: str, reason: str, message: str,
               event_type: str = "Normal") -> dict[str, Any]:
    """The Event `post_event` creates (shared with the fake cluster, so both post the same)."""
    namespace = target.namespace or "default"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "metadata": {"generateName": f"{target.name}.pystol-", "namespace": namespace},
        "involvedObject": {"kind": target.kind, "name": target.name,
                           "namespace": target.namespace or "", "uid": target.uid,
                           "apiVersion": api_version},
        "reason": reason, "message": message, "type": event_type,
        "source": {"component": "pystol"}, "reportingComponent": "pystol",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


class ClusterAccess:
    """The real `Cluster` (pystol_worker/kube/cluster.py): a Kubernetes API server.

    Every request takes one path, `_call`: a token from the rate limiter, the request,
    the `on_request` count, and on failure a translated `ClusterError`. Most requests
    are also retried there with backoff (429, 5xx, connection errors). Three are not,
    or only in part, and on purpose:

    - `evict`: 429 is not retried here. From the Eviction API it means that a
      PodDisruptionBudget says no, which is an answer, not an overload; node-drain
      retries it on its own clock (`eviction_timeout`) and reports pods it gave up on.
      5xx and connection errors are retried as for any request.
    - `exec_in_pod`: never retried. Exec is a WebSocket session that runs a command; a
      second attempt after an unclear failure could run it twice (`kill 1` would kill
      the freshly restarted container again). It is rate-limited and counted all the same.
    - `watch_pods`: opening the watch is an ordinary GET and is retried; the stream that
      follows is one long response and cannot be: when it breaks, the caller (the
      recovery observer) watches again from the last resourceVersion it saw, and lists
      again when the server says that version is gone (410).
    """

    def __init__(self, api_client: ApiClient, limiter: TokenBucket,
                 retry: RetryPolicy | None = None,
                 on_request: Callable[[str, int], None] | None = None) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.on_request = on_request
        self._watch_core: Any = None

    @classmethod
    def from_settings(cls, settings: Any) -> ClusterAccess:
        return cls(load_api_client(settings.kubeconfig),
                   TokenBucket(settings.kube_qps, settings.kube_burst))

    # -- the one path every request takes ----------------------------------------------------

    def call(self, verb: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`func(*args, **kwargs)` rate-limited, retried on 429, 5xx and connection errors."""
        return self._call(verb, func, args, kwargs)

    def call_raw(self, verb: str, func: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> BaseHTTPResponse:
        """`call` with `_preload_content=False`: the HTTP response, unparsed. The client's
        model objects are slow to build; callers read the JSON as plain dicts."""
        response: BaseHTTPResponse = self._call(verb, func, args,
                                                {**kwargs, "_preload_content": False})
        return response

    def _call(self, verb: str, func: Callable[..., T], args: tuple[Any, ...],
              kwargs: dict[str, Any], retry_statuses: frozenset[int] = RETRY_STATUSES,
              retry_unreachable: bool = True) -> T:
        """The one path every request takes (see the class docstring for what is retried)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        attempt = 0
        while True:
            self.limiter.acquire()
            try:
                result = func(*args, **kwargs)
                self._count(verb, 200)
                return result
            except ApiException as error:
                self._count(verb, error.status or 0)
                retry_after = (error.headers or {}).get("Retry-After") if error.headers else None
                if error.status in retry_statuses and attempt + 1 < self.retry.attempts:
                    time.sleep(self.retry.delay(attempt, retry_after))
                    attempt += 1
                    continue
                raise self._translate(error) from None
            except (Urllib3Error, ConnectionError, OSError) as error:
                self._count(verb, 0)
                if retry_unreachable and attempt + 1 < self.retry.attempts:
                    time.sleep(self.retry.delay(attempt, None))
                    attempt += 1
                    continue
                raise ClusterError(f"cannot reach the Kubernetes API: {error}") from None

    def _count(self, verb: str, code: int) -> None:
        if self.on_request is not None:
            self.on_request(verb, code)

    @staticmethod
    def _translate(error: Any) -> ClusterError:
        reason, message = None, str(error.reason or "")
        try:
            body = json.loads(error.body or "{}")
            message = body.get("message") or message
            reason = body.get("reason")
        except (ValueError, TypeError):
            pass
        kind = NotFound if error.status == 404 else ClusterError
        return kind(f"Kubernetes API answered {error.status}: {message}", error.status, reason)

    # -- reads ---------------------------------------------------------------------------------

    def list_pods(self, namespace: str, label_selector: str | None = None,
                  field_selector: str | None = None, *,
                  project: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                  ) -> tuple[list[dict[str, Any]], str]:
        """Every matching pod as plain dicts, paging through large lists; and the list's rv.

        With `project`, each page's pods are projected and the page dropped before the
        next is fetched (peak: one page, plus what the projection keeps)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        resource_version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE}
            if label_selector:
                kwargs["label_selector"] = label_selector
            if field_selector:
                kwargs["field_selector"] = field_selector
            if token:
                kwargs["_continue"] = token
            response = self.call_raw("list", self.core.list_namespaced_pod, namespace, **kwargs)
            body: dict[str, Any] = _loads_without_gc(response.data)
            del response
            page = body.get("items") or ()
            items.extend(page if project is None else map(project, page))
            meta = body.get("metadata") or {}
            del body, page
            resource_version = resource_version or meta.get("resourceVersion", "")
            token = meta.get("continue")
            if not token:
                return items, resource_version

    def get_raw(self, func: Callable[..., Any], *args: Any) -> dict[str, Any]:
        response = self.call_raw("get", func, *args)
        body: dict[str, Any] = json.loads(response.data)
        return body

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get_raw(self.core.read_namespaced_pod, name, namespace)

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        readers = {"Deployment": self.apps.read_namespaced_deployment,
                   "ReplicaSet": self.apps.read_namespaced_replica_set,
                   "StatefulSet": self.apps.read_namespaced_stateful_set,
                   "DaemonSet": self.apps.read_namespaced_daemon_set}
        if kind not in readers:
            raise ClusterError(f"unsupported workload kind {kind}")
        return self.get_raw(readers[kind], name, namespace)

    def get_object(self, kind: str, namespace: str | None, name: str
                   ) -> dict[str, Any] | None:
        """One object of a kind a k8s probe reads; None when it does not exist."""
        from kubernetes import client

        policy = client.PolicyV1Api(self.api_client)
        readers: dict[str, Callable[..., Any]] = {
            "Pod": self.core.read_namespaced_pod,
            "Service": self.core.read_namespaced_service,
            "Endpoints": self.core.read_namespaced_endpoints,
            "Deployment": self.apps.read_namespaced_deployment,
            "ReplicaSet": self.apps.read_namespaced_replica_set,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
            "DaemonSet": self.apps.read_namespaced_daemon_set,
            "PodDisruptionBudget": policy.read_namespaced_pod_disruption_budget}
        try:
            if kind == "Node":
                return self.get_raw(self.core.read_node, name)
            if kind not in readers or namespace is None:
                raise ClusterError(f"unsupported kind {kind} (or no namespace)")
            return self.get_raw(readers[kind], name, namespace)
        except NotFound:
            return None

    def list_pdbs(self, namespace: str) -> list[dict[str, Any]]:
        from kubernetes import client

        policy = client.PolicyV1Api(self.api_client)
        response = self.call_raw("list", policy.list_namespaced_pod_disruption_budget,
                                 namespace)
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    # -- writes --------------------------------------------------------------------------------

    def delete_pod(self, namespace: str, name: str, uid: str | None,
                   grace_period: int | None) -> None:
        from kubernetes import client

        body = client.V1DeleteOptions(
            grace_period_seconds=grace_period,
            preconditions=client.V1Preconditions(uid=uid) if uid else None)
        self.call("delete", self.core.delete_namespaced_pod, name, namespace, body=body)

    def patch(self, kind: str, namespace: str | None, name: str, body: Any) -> dict[str, Any]:
        """Strategic-merge (built-ins) patch of a Pod, Node, Deployment or StatefulSet."""
        patchers: dict[str, Callable[..., Any]] = {
            "Pod": self.core.patch_namespaced_pod, "Node": self.core.patch_node,
            "Deployment": self.apps.patch_namespaced_deployment,
            "StatefulSet": self.apps.patch_namespaced_stateful_set}
        args = (name, body) if kind == "Node" else (name, namespace, body)
        response = self.call_raw("patch", patchers[kind], *args)
        patched: dict[str, Any] = json.loads(response.data)
        return patched

    def list_nodes(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        if label_selector:
            kwargs["label_selector"] = label_selector
        response = self.call_raw("list", self.core.list_node, **kwargs)
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def list_all_pods(self, field_selector: str) -> list[dict[str, Any]]:
        response = self.call_raw("list", self.core.list_pod_for_all_namespaces,
                                 field_selector=field_selector)
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def get_node(self, name: str) -> dict[str, Any]:
        return self.get_raw(self.core.read_node, name)

    def get_scale(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        reader = {"Deployment": self.apps.read_namespaced_deployment_scale,
                  "StatefulSet": self.apps.read_namespaced_stateful_set_scale}[kind]
        return self.get_raw(reader, name, namespace)

    def set_scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        patcher = {"Deployment": self.apps.patch_namespaced_deployment_scale,
                   "StatefulSet": self.apps.patch_namespaced_stateful_set_scale}[kind]
        self.call("patch", patcher, name, namespace, {"spec": {"replicas": replicas}})

    def list_workloads(self, kind: str, namespace: str, label_selector: str | None
                       ) -> list[dict[str, Any]]:
        lister = {"Deployment": self.apps.list_namespaced_deployment,
                  "StatefulSet": self.apps.list_namespaced_stateful_set}[kind]
        kwargs: dict[str, Any] = {}
        if label_selector:
            kwargs["label_selector"] = label_selector
        response = self.call_raw("list", lister, namespace, **kwargs)
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def evict(self, namespace: str, name: str, grace_period: int | None = None) -> None:
        from kubernetes import client

        body = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            delete_options=client.V1DeleteOptions(grace_period_seconds=grace_period))
        # One request, rate-limited and counted, never retried here: a 429 is a
        # PodDisruptionBudget saying no, and for 5xx or an unreachable API server the caller
        # (node-drain) retries on its own clock, checking halt and cancel before each try.
        self._call("create", self.core.create_namespaced_pod_eviction, (name, namespace, body),
                   {}, retry_statuses=frozenset(), retry_unreachable=False)

    # -- who a bearer token is, and what it may do (the API's Kubernetes identities) --------

    def review_token(self, token: str) -> dict[str, Any]:
        """The TokenReview's status for `token`: `authenticated`, `user` (username, uid,
        groups) or `error`."""
        from kubernetes import client

        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token}}
        response = self.call_raw("create", client.AuthenticationV1Api(self.api_client)
                                 .create_token_review, body)
        status: dict[str, Any] = json.loads(response.data).get("status") or {}
        return status

    def review_access(self, user: str, groups: list[str], uid: str | None, verb: str,
                      group: str, resource: str, namespace: str | None, *,
                      extra: Mapping[str, list[str]] | None = None) -> bool:
        """Whether the cluster's authorizer lets `user` do `verb` on `group/resource` in
        `namespace` (None: at cluster scope), by a SubjectAccessReview. `extra` is the
        TokenReview's `user.extra`, sent as `spec.extra`: an authorizer that narrows a
        user by it (scoped tokens) must see the user who signed in, not a wider one."""
        from kubernetes import client

        attributes: dict[str, Any] = {"verb": verb, "group": group, "resource": resource}
        if namespace is not None:
            attributes["namespace"] = namespace
        spec: dict[str, Any] = {"user": user, "groups": groups,
                                "resourceAttributes": attributes}
        if uid:
            spec["uid"] = uid
        if extra:
            spec["extra"] = {key: list(values) for key, values in extra.items()}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": spec}
        response = self.call_raw("create", client.AuthorizationV1Api(self.api_client)
                                 .create_subject_access_review, body)
        status = json.loads(response.data).get("status") or {}
        return bool(status.get("allowed")) and not status.get("denied")

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes import client

        creators: dict[str, Callable[..., Any]] = {
            "Pod": self.core.create_namespaced_pod,
            "NetworkPolicy": client.NetworkingV1Api(self.api_client)
            .create_namespaced_network_policy}
        response = self.call_raw("create", creators[kind], namespace, body)
        created: dict[str, Any] = json.loads(response.data)
        return created

    def delete(self, kind: str, namespace: str, name: str, grace_period: int | None = 0
               ) -> bool:
        """Delete an object; False when it was already gone."""
        from kubernetes import client

        deleters: dict[str, Callable[..., Any]] = {
            "Pod": self.core.delete_namespaced_pod,
            "NetworkPolicy": client.NetworkingV1Api(self.api_client)
            .delete_namespaced_network_policy}
        try:
            self.call("delete", deleters[kind], name, namespace,
                      grace_period_seconds=grace_period)
        except NotFound:
            return False
        return True

    def exec_in_pod(self, namespace: str, name: str, container: str, command: list[str],
                    timeout: float = 30.0) -> tuple[int, str, str]:
        """Run a command in a container (pods/exec over WebSocket): (exit code, out, err).
        Never retried: the command may have run (class docstring)."""
        from kubernetes.stream import stream

        def run() -> tuple[int, str, str]:
            client_stream = stream(self.core.connect_get_namespaced_pod_exec, name, namespace,
                                   container=container, command=command, stderr=True,
                                   stdin=False, stdout=True, tty=False, _preload_content=False)
            try:
                client_stream.run_forever(timeout=timeout)
                out = client_stream.read_stdout() if client_stream.peek_stdout() else ""
                err = client_stream.read_stderr() if client_stream.peek_stderr() else ""
                code = client_stream.returncode
            finally:
                client_stream.close()
            return int(code if code is not None else -1), out, err

        return self._call("create", run, (), {}, retry_statuses=frozenset(),
                          retry_unreachable=False)

    def service_proxy_get(self, namespace: str, service: str, path: str, timeout: float,
                          max_body: int, on_response: Callable[[Any], None] | None = None,
                          head_bytes: int = 4096) -> tuple[int, int, bool, bytes]:
        """GET `PATH` of a Service through the API server's proxy
        (`/api/v1/namespaces/NS/services/SERVICE/proxy/PATH`, SERVICE as `name[:port]`):
        (status, body bytes read, body cut at `max_body`, the body's first `head_bytes`
        (4 KiB; a probe with `body_contains` keeps up to the cap)).

        Rate-limited and counted like every call, never retried: a 503 (no endpoints, a
        backend that cannot be reached) is the answer http-probe measures. Whatever the
        status, it is returned, not raised; a connection failure is a ClusterError.

        `timeout` bounds the whole call, not each socket operation: a backend that trickles
        its body is cut off at the deadline (a ClusterError saying "timed out").
        `on_response` gets the open HTTP response, so that a caller waiting in another
        thread can close it (`shutdown()`) on a cancel or at its own deadline."""
        from urllib.parse import quote

        resource = (f"/api/v1/namespaces/{quote(namespace, safe='')}/services/"
                    f"{quote(service, safe=':')}/proxy/"
                    f"{quote(path.lstrip('/'), safe='/?=&%:@,;+~')}")

        def get() -> tuple[int, int, bool, bytes]:
            deadline = time.monotonic() + timeout
            method, url, headers, _, _ = self.api_client.param_serialize(
                method="GET", resource_path=resource, header_params={"Accept": "*/*"},
                auth_settings=["BearerToken"])
            raw = self.api_client.call_api(
                method, url, header_params=headers,
                _request_timeout=(min(timeout, PROXY_CONNECT_TIMEOUT), timeout)).response
            if on_response is not None:
                on_response(raw)
            # read1 returns what has arrived (read(n) would wait for all n bytes)
            read_some = getattr(raw, "read1", None) or raw.read
            complete = False
            try:
                read, head = 0, b""
                while read <= max_body:  # one byte past the cap tells a cut body
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"timed out after {timeout:g}s reading the answer "
                                           f"({read} bytes arrived)")
                    chunk = read_some(min(65536, max_body + 1 - read))
                    if not chunk:
                        complete = True
                        break
                    if len(head) < head_bytes:
                        head += chunk[:head_bytes - len(head)]
                    read += len(chunk)
                return int(raw.status), min(read, max_body), read > max_body, head
            finally:
                if not complete:  # unread bytes: the connection cannot be reused
                    raw.close()
                raw.release_conn()

        return self._call("get", get, (), {}, retry_statuses=frozenset(),
                          retry_unreachable=False)

    def post_event(self, target: TargetRef, api_version: str, reason: str, message: str,
                   event_type: str = "Normal") -> None:
        """A Kubernetes Event on the affected object, so `kubectl describe` shows the chaos."""
        body = event_body(target, api_version, reason, message, event_type)
        self.call("create", self.core.create_namespaced_event, body["metadata"]["namespace"],
                  body)

    @property
    def watch_core(self) -> Any:
        """A CoreV1Api on its own connection pool (same configuration), for watches only.

        A watch holds its connection for seconds, and one abandoned mid-stream (the
        workload recovered, the job stopped) cannot be reused: it is closed. On the pool
        of ordinary requests that closed connection would be the next one handed out (the
        pool is last-in first-out), so the next job's first request would reconnect
        (TCP + TLS, 2.5-4.7 ms). Kept apart, requests keep their live connections."""
        if self._watch_core is None:
            from kubernetes import client

            watch_client = client.ApiClient(configuration=self.api_client.configuration)
            watch_client.default_headers.update(self.api_client.default_headers)
            self._watch_core = client.CoreV1Api(watch_client)
        return self._watch_core

    def watch_pods(self, namespace: str, label_selector: str, resource_version: str,
                   timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, pod dict) from a resourceVersion, until the server ends the stream."""
        # Opening the watch is retried like any GET; the stream itself cannot be (docstring).
        response = self.call_raw(
            "watch", self.watch_core.list_namespaced_pod, namespace,
            label_selector=label_selector, watch=True,
            resource_version=resource_version, timeout_seconds=timeout_seconds,
            allow_watch_bookmarks=True, _request_timeout=(10, timeout_seconds + 10))
        complete = False
        try:
            buffer = b""
            for chunk in response.stream(65536, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        yield event.get("type", ""), event.get("object") or {}
            complete = True
        finally:
            # A stream the caller abandoned (recovered, stopped, an error) still has unread
            # bytes: released to the pool as it is, the next request on that connection
            # would fail and reconnect (TCP + TLS, 2.5-4.7 ms) inside some job's latency.
            # Close it instead; only a stream read to its end goes back to the pool.
            if not complete:
                response.close()
            response.release_conn()
