"""The cluster view at steady state: conditional answers, gzip, and one cluster read shared by
every API process.

- `ETag` / `If-None-Match` / `304`, computed on the body *this caller* gets and bound to
  the caller, so another caller's tag never earns a 304 and scoped bodies never mix;
- gzip when accepted, with `Vary` and the security headers kept;
- `SharedTopology`: several API processes (apps, or `SharedTopology` objects, on one Redis)
  asking at once cause one cluster read; a failed read is shared too; while one request
  reads, the others answer with a recent snapshot (or wait when they have none); a holder
  that died only delays the others until its lock expires; without Redis a process reads
  alone.

Kubernetes requests are counted at the one place the view makes them (`call` of the
stub cluster below, the method `ClusterAccess.call` the route uses).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis
from flask import Flask

from pystol_api.http.app import create_app, services_of
from pystol_api.http.routes import cluster as view
from pystol_api.http.routes.cluster import ClusterTopology, SharedTopology, build_topology
from pystol_api.http.security_headers import SECURITY_HEADERS
from pystol_worker.actions import default_registry
from pystol_worker.core.access import Role
from pystol_worker.core.settings import Settings
from pystol_worker.kube.cluster_access import ClusterError

ADMIN_TOKEN = "admin-token-cluster-view"
LISTS_PER_READ = 6  # nodes, pods, ReplicaSets, Deployments, StatefulSets, DaemonSets


class Raw:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


class StubCluster:
    """Answers the six cluster-wide lists the view makes, like the official client's raw
    path (`_preload_content=False`), and counts every request."""

    def __init__(self, namespaces: tuple[str, ...] = ("shop", "payments"),
                 pods_per_namespace: int = 30) -> None:
        self.requests = 0
        self._lock = threading.Lock()
        pods = [{"metadata": {"namespace": ns, "name": f"web-{i}",
                              "ownerReferences": [{"kind": "ReplicaSet", "name": "web-1",
                                                   "controller": True}]},
                 "spec": {"nodeName": "node-1"},
                 "status": {"phase": "Running",
                            "conditions": [{"type": "Ready", "status": "True"}]}}
                for ns in namespaces for i in range(pods_per_namespace)]
        self.lists: dict[str, list[dict[str, Any]]] = {
            "list_node": [{"metadata": {"name": "node-1"}, "status": {"conditions": [
                {"type": "Ready", "status": "True"}]}}],
            "list_pod_for_all_namespaces": pods,
            "list_replica_set_for_all_namespaces": [],
            "list_deployment_for_all_namespaces": [
                {"metadata": {"namespace": ns, "name": "web"}, "spec": {"replicas": 1},
                 "status": {"readyReplicas": 1}} for ns in namespaces],
            "list_stateful_set_for_all_namespaces": [],
            "list_daemon_set_for_all_namespaces": [],
        }
        self.core = self.apps = self

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self.__dict__.get("lists", {}):
            raise AttributeError(name)
        return lambda **_: Raw({"items": self.lists[name], "metadata": {}})

    def call(self, verb: str, func: Callable[..., Any], **kwargs: Any) -> Any:
        with self._lock:
            self.requests += 1
        return func(**kwargs)


def make_app(cluster: Any, client: redis.Redis) -> Flask:
    return create_app(Settings(api_tokens=[ADMIN_TOKEN], kubernetes_auth=False),
                      redis_client=client, queue=None, registry=default_registry(),
                      cluster_factory=lambda: cluster)


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
def cluster() -> StubCluster:
    return StubCluster()


@pytest.fixture
def app(cluster: StubCluster) -> Flask:
    return make_app(cluster, fakeredis.FakeRedis())


def scoped_token(app: Flask, name: str, namespaces: list[str]) -> str:
    _, secret = services_of(app).tokens.create(name, Role.VIEWER, namespaces, None,
                                               created_by="test")
    return secret


# -- conditional requests -------------------------------------------------------------------------

def test_an_unchanged_topology_is_answered_304_without_a_body(app: Flask,
                                                               cluster: StubCluster) -> None:
    client = app.test_client()
    first = client.get("/api/v1/cluster", headers=auth(ADMIN_TOKEN))
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith('W/')  # strong
    assert first.headers["Cache-Control"] == "private, no-cache"
    assert "Authorization" in first.headers["Vary"]
    assert len(ClusterTopology.model_validate_json(first.data).pods) == 60
    assert cluster.requests == LISTS_PER_READ

    again = client.get("/api/v1/cluster", headers=auth(ADMIN_TOKEN, **{"If-None-Match": etag}))
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == "private, no-cache"
    for name, value in SECURITY_HEADERS.items():
        assert again.headers[name] == value

    # A stale tag (or none) gets the whole body again.
    stale = client.get("/api/v1/cluster",
                       headers=auth(ADMIN_TOKEN, **{"If-None-Match": '"0123abcd"'}))
    assert stale.status_code == 200 and stale.data == first.data


def test_a_changed_topology_changes_the_tag(cluster: StubCluster) -> None:
    shared = fakeredis.FakeRedis()
    client = make_app(cluster, shared).test_client()
    first = client.get("/api/v1/cluster", headers=auth(ADMIN_TOKEN))
    cluster.lists["list_pod_for_all_namespaces"][0]["status"]["phase"] = "Failed"
    shared.delete(view.KEY_CURRENT)  # the shared read expired
    second = client.get("/api/v1/cluster",
                        headers=auth(ADMIN_TOKEN, **{"If-None-Match": first.headers["ETag"]}))
    assert second.status_code == 200
    assert second.headers["ETag"] != first.headers["ETag"]
    assert b"Failed" in second.data


# -- gzip -----------------------------------------------------------------------------------------

def test_gzip_when_accepted_with_its_own_tag(app: Flask) -> None:
    client = app.test_client()
    plain = client.get("/api/v1/cluster", headers=auth(ADMIN_TOKEN))
    packed = client.get("/api/v1/cluster",
                        headers=auth(ADMIN_TOKEN, **{"Accept-Encoding": "gzip, deflate"}))
    assert plain.headers.get("Content-Encoding") is None
    assert packed.status_code == 200
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding, Authorization"
    assert gzip.decompress(packed.data) == plain.data
    assert len(packed.data) < len(plain.data) / 4
    assert packed.headers["ETag"] == plain.headers["ETag"][:-1] + '-gzip"'
    for name, value in SECURITY_HEADERS.items():
        assert packed.headers[name] == value
    # Either representation's tag revalidates the same body.
    for tag in (plain.headers["ETag"], packed.headers["ETag"]):
        answer = client.get("/api/v1/cluster", headers=auth(
            ADMIN_TOKEN, **{"Accept-Encoding": "gzip", "If-None-Match": tag}))
        assert answer.status_code == 304
        assert answer.headers["ETag"] == packed.headers["ETag"]
    refused = client.get("/api/v1/cluster",
                         headers=auth(ADMIN_TOKEN, **{"Accept-Encoding": "gzip;q=0"}))
    assert refused.headers.get("Content-Encoding") is None


# -- scopes ---------------------------------------------------------------------------------------

def test_tags_never_cross_callers_or_scopes(app: Flask) -> None:
    client = app.test_client()
    shop = scoped_token(app, "viewer-shop", ["shop"])
    payments = scoped_token(app, "viewer-payments", ["payments"])
    shop_too = scoped_token(app, "viewer-shop-2", ["shop"])
    answers = {name: client.get("/api/v1/cluster", headers=auth(token))
               for name, token in (("admin", ADMIN_TOKEN), ("shop", shop),
                                   ("payments", payments), ("shop_too", shop_too))}
    namespaces = {name: ClusterTopology.model_validate_json(answer.data).namespaces
                  for name, answer in answers.items()}
    assert namespaces == {"admin": ["payments", "shop"], "shop": ["shop"],
                          "payments": ["payments"], "shop_too": ["shop"]}
    tags = {name: answer.headers["ETag"] for name, answer in answers.items()}
    assert len(set(tags.values())) == 4  # even the two shop viewers' tags differ
    tokens = {"admin": ADMIN_TOKEN, "shop": shop, "payments": payments, "shop_too": shop_too}
    for asker, token in tokens.items():
        for owner, tag in tags.items():
            answer = client.get("/api/v1/cluster",
                                headers=auth(token, **{"If-None-Match": tag}))
            if asker == owner:
                assert answer.status_code == 304, (asker, owner)
            else:
                # Another caller's tag: the asker's own body, never a 304, never theirs.
                assert answer.status_code == 200, (asker, owner)
                assert answer.data == answers[asker].data
                assert answer.headers["ETag"] == tags[asker]


# -- one cluster read for every API process -------------------------------------------------------

def test_viewers_on_several_processes_share_one_cluster_read(cluster: StubCluster) -> None:
    server = fakeredis.FakeServer()
    apps = [make_app(cluster, fakeredis.FakeRedis(server=server)) for _ in range(3)]
    start = threading.Barrier(9)
    statuses: list[int] = []

    def viewer(app: Flask) -> None:
        start.wait()
        statuses.append(app.test_client().get("/api/v1/cluster",
                                              headers=auth(ADMIN_TOKEN)).status_code)
    threads = [threading.Thread(target=viewer, args=(apps[i % 3],)) for i in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 9
    # One read of the cluster for nine viewers on three API processes (the shared answer
    # lives SHARED_SECONDS; a machine stalling longer than that may add a read, no more).
    assert cluster.requests == LISTS_PER_READ


def fixed_topology() -> ClusterTopology:
    return build_topology([{"metadata": {"name": "node-1"}}],
                          [{"metadata": {"namespace": "shop", "name": "web-1"}}])


class CountingRead:
    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.calls = 0
        self.fail = fail
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self) -> ClusterTopology:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise ClusterError("the Kubernetes API is down")
        return fixed_topology()


def test_waiters_get_the_holders_answer_and_one_read_per_expiry() -> None:
    server = fakeredis.FakeServer()
    gate = threading.Event()
    holder_read = CountingRead(gate=gate)
    waiter_reads = [CountingRead() for _ in range(4)]
    holder = SharedTopology(fakeredis.FakeRedis(server=server), holder_read, ttl=60)
    waiters = [SharedTopology(fakeredis.FakeRedis(server=server), read, ttl=60,
                              wait_step=0.005) for read in waiter_reads]
    got: list[str] = []
    first = threading.Thread(target=lambda: got.append(holder.get().digest))
    first.start()
    assert holder_read.entered.wait(5)
    others = [threading.Thread(target=lambda w=w: got.append(w.get().digest)) for w in waiters]
    for thread in others:
        thread.start()
    gate.set()
    for thread in [first, *others]:
        thread.join(10)
    assert len(got) == 5 and len(set(got)) == 1
    assert holder_read.calls == 1 and sum(read.calls for read in waiter_reads) == 0
    # Expired: the next asker reads once more, for everyone again.
    fakeredis.FakeRedis(server=server).delete(view.KEY_CURRENT)
    waiters[0].get()
    waiters[1].get()
    assert waiter_reads[0].calls == 1 and waiter_reads[1].calls == 0


def test_a_failed_read_is_shared_with_its_waiters_and_retried_after() -> None:
    server = fakeredis.FakeServer()
    gate = threading.Event()
    failing, waiting, later = CountingRead(fail=True, gate=gate), CountingRead(), CountingRead()
    errors: list[str] = []

    def ask(shared: SharedTopology) -> None:
        try:
            shared.get()
        except ClusterError as error:
            errors.append(str(error))
    holder = threading.Thread(target=ask, args=(SharedTopology(
        fakeredis.FakeRedis(server=server), failing, ttl=60),))
    holder.start()
    assert failing.entered.wait(5)
    waiter = threading.Thread(target=ask, args=(SharedTopology(
        fakeredis.FakeRedis(server=server), waiting, ttl=60, wait_step=0.005),))
    waiter.start()
    time.sleep(0.5)  # the waiter finds the lock taken and waits for that read
    gate.set()
    for thread in (holder, waiter):
        thread.join(10)
    assert errors == ["the Kubernetes API is down"] * 2
    assert failing.calls == 1 and waiting.calls == 0  # the waiter did not ask again
    assert fakeredis.FakeRedis(server=server).get(view.KEY_LOCK) is None  # released
    # A request after the failure asks the cluster again: a recovered cluster is seen at once.
    SharedTopology(fakeredis.FakeRedis(server=server), later, ttl=60).get()
    assert later.calls == 1


def test_a_dead_holder_only_delays_the_others_until_its_lock_expires() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    client.set(view.KEY_LOCK, "a process that was killed", px=200)
    read = CountingRead()
    snapshot = SharedTopology(client, read, ttl=60, lock_seconds=5, wait_step=0.01).get()
    assert read.calls == 1 and [pod.name for pod in snapshot.topology.pods] == ["web-1"]
    assert client.get(view.KEY_CURRENT) == snapshot.digest.encode()


def test_while_another_request_reads_a_recent_answer_is_served_at_once() -> None:
    client = fakeredis.FakeRedis()
    read = CountingRead()
    shared = SharedTopology(client, read, ttl=60, stale_seconds=60, lock_seconds=5)
    first = shared.get()
    client.delete(view.KEY_CURRENT)  # expired, and another request is reading it again
    client.set(view.KEY_LOCK, "another process", px=5000)
    assert shared.get() is first and read.calls == 1  # no wait, no second read
    # Too old to stand in: wait for the holder (here: until its lock expires) and read.
    client.delete(view.KEY_LOCK)
    strict = SharedTopology(client, read, ttl=60, stale_seconds=0, lock_seconds=5,
                            wait_step=0.01)
    strict.get()
    client.delete(view.KEY_CURRENT)
    client.set(view.KEY_LOCK, "another process", px=200)
    strict.get()
    assert read.calls == 3


def test_without_redis_a_process_reads_for_itself() -> None:
    down = fakeredis.FakeServer()
    down.connected = False  # every command raises ConnectionError
    broken = fakeredis.FakeRedis(server=down)
    read = CountingRead()
    snapshot = SharedTopology(broken, read, ttl=60).get()
    assert read.calls == 1 and snapshot.topology.namespaces == ["shop"]


# -- a hand-written Redis entry is never shown --------------------------------------------------

@pytest.mark.parametrize("forge", [
    lambda real: real.replace(b'"node-1"', b'"planted-node"'),  # a valid topology, unsealed
    lambda real: b"not json at all",
    lambda real: b"[" * 100_000,
])
def test_a_topology_planted_in_redis_is_not_shown(cluster: StubCluster,
                                                  forge: Callable[[bytes], bytes]) -> None:
    """Redis is a trust boundary: a pod that can write it names a body of its own as the
    current topology. Viewers get the cluster's, never a 500 and never the planted one."""
    client = fakeredis.FakeRedis()
    app = create_app(Settings(api_tokens=[ADMIN_TOKEN], kubernetes_auth=False,
                              signing_key="a-signing-key-of-at-least-16"),
                     redis_client=client, queue=None, registry=default_registry(),
                     cluster_factory=lambda: cluster)
    viewer = app.test_client()
    assert viewer.get("/api/v1/cluster", headers=auth(ADMIN_TOKEN)).status_code == 200
    real = client.get(view.KEY_BODY + client.get(view.KEY_CURRENT).decode())
    planted = forge(real)
    name = view._digest(planted)  # what an attacker without the key can compute
    client.set(view.KEY_BODY + name, planted)
    client.set(view.KEY_CURRENT, name)
    answer = viewer.get("/api/v1/cluster", headers=auth(ADMIN_TOKEN))
    assert answer.status_code == 200
    assert [node["name"] for node in answer.get_json()["nodes"]] == ["node-1"]
    assert cluster.requests == 2 * LISTS_PER_READ  # the planted entry made it read again
    assert client.get(view.KEY_CURRENT) != name.encode()  # and the real read replaced it
