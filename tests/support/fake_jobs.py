"""Running jobs through the public job path on the in-process fake cluster (unit tests).

A job is stored in a fakeredis `JobStore` as the submission service stores it (with a
sealed grant: `tests.support.grants.store_job`) and run by `JobRunner(...).run(job_id,
worker)`, exactly as a worker runs it, with the `FakeCluster` as its cluster and the
admin policy the test gives (default: the default policy). Tests then look at the
fake's objects, the stored record and the revert journal. Going through the runner keeps
the tests independent of the action contract's internals (params, contexts, helpers).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fakeredis

from pystol_worker.actions import default_registry
from pystol_worker.core.access import Identity
from pystol_worker.core.model import JobRecord, JobSpec
from pystol_worker.core.policy import Policy, ProbePolicy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.reaper import ReapReport, reap_once
from pystol_worker.jobs.runner import JobRunner
from pystol_worker.kube.fake_cluster import PASS, FakeCluster, Request
from pystol_worker.safety.revert_journal import JournalEntry
from pystol_worker.store.job_store import JobStore, TransitionRefused
from tests.support.grants import ADMIN, store_job

RECOVERY_TIMEOUT = 5.0  # what a workload gets to recover, unless a test says otherwise


@dataclass
class FakeJobs:
    """One fake cluster, one fakeredis job store and one runner, as a worker has them."""

    fake: FakeCluster = field(default_factory=FakeCluster)
    redis: fakeredis.FakeRedis = field(default_factory=fakeredis.FakeRedis)
    policy: Policy = field(default_factory=Policy)  # the admin policy the worker runs under

    def __post_init__(self) -> None:
        self.settings = Settings(recovery_timeout_seconds=RECOVERY_TIMEOUT)
        self.store = JobStore(self.redis)
        self.runner = JobRunner(self.settings, self.store, default_registry(),
                                cluster_factory=lambda: self.fake, policy=self.policy)
        self.journal = self.runner.journal

    def submit(self, spec: dict[str, Any], identity: Identity = ADMIN) -> str:
        """Store a queued job as the submission service would for `identity`; its id."""
        return store_job(self.store, JobSpec.model_validate(spec), identity=identity,
                         settings=self.settings, registry=self.runner.registry).id

    def run_stored(self, job_id: str, within: float = 30.0) -> JobRecord:
        """Run a stored job to its end; the stored record. A job still running after
        `within` seconds is cancelled and the test fails (instead of hanging)."""
        thread = threading.Thread(target=self.runner.run, args=(job_id, "worker-1"),
                                  daemon=True)
        thread.start()
        thread.join(within)
        if thread.is_alive():
            with contextlib.suppress(TransitionRefused):
                self.store.request_cancel(job_id, "the test's deadline")
            thread.join(10)
            action = self.store.get(job_id, with_timeline=False).spec.action
            raise AssertionError(f"job {job_id} ({action}) still ran after {within:g}s")
        return self.store.get(job_id)

    def run(self, spec: dict[str, Any], within: float = 30.0) -> JobRecord:
        """Submit and run a job to its end; the stored record. A job still running after
        `within` seconds is cancelled and the test fails (instead of hanging)."""
        return self.run_stored(self.submit(spec), within)

    @contextmanager
    def running(self, spec: dict[str, Any]) -> Iterator[str]:
        """Run a job in a thread for the block (which gets its id), then wait for its end;
        a block that fails cancels the job first."""
        job_id = self.submit(spec)
        thread = threading.Thread(target=self.runner.run, args=(job_id, "worker-1"),
                                  daemon=True)
        thread.start()
        try:
            yield job_id
        except BaseException:
            with contextlib.suppress(TransitionRefused):  # a failing test ends its job too
                self.store.request_cancel(job_id, "the failing test")
            raise
        finally:
            thread.join(30)
        assert not thread.is_alive(), "the job did not end"

    def journal_entries(self) -> list[JournalEntry]:
        return self.journal.entries()

    def reap(self) -> ReapReport:
        """One reaper pass over this store and journal, on the fake cluster."""
        return reap_once(self.store, self.journal, self.fake, self.settings.heartbeat_seconds,
                         self.runner.registry.undo_registry())

    def during_hold(self, look: Callable[[], Any]) -> list[Any]:
        """What `look()` saw each time a `PystolChaos` Event was posted, i.e. right after
        each injection: the last item is the cluster with every fault in place."""
        seen: list[Any] = []

        def snapshot(request: Request) -> Any:
            if request.body.get("reason") == "PystolChaos":
                seen.append(look())
            return PASS
        self.fake.prepend_reactor("create", "events", snapshot)
        return seen

    def when_injected(self) -> threading.Event:
        """Set once the first `PystolChaos` Event is posted (a fault is in place)."""
        injected = threading.Event()

        def note(request: Request) -> Any:
            if request.body.get("reason") == "PystolChaos":
                injected.set()
            return PASS
        self.fake.prepend_reactor("create", "events", note)
        return injected


def app_deployment(fake: FakeCluster, namespace: str = "shop", name: str = "web",
                   replicas: int = 3, nodes: tuple[str, ...] = ("n1", "n2", "n3"),
                   containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Nodes (when missing) and a Deployment `name` (label app=<name>) spread over them."""
    for node in nodes:
        if fake.get("Node", None, node) is None:
            fake.add_node(node)
    return fake.add_deployment(namespace, name, replicas, containers=containers)


def pods_of(fake: FakeCluster, namespace: str = "shop", app: str = "web"
            ) -> dict[str, dict[str, Any]]:
    """The app's pods by uid."""
    return {p["metadata"]["uid"]: p for p in fake.objects("Pod", namespace, f"app={app}")}


def ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


def later(seconds: float, action: Callable[[], Any]) -> None:
    """Do `action` a moment from now, as a kubelet would (readiness is never instant)."""
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = int(self.path.strip("/").split("/")[0] or 200)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


#: The admin policy a worker needs to probe `http_server()`: probes may not reach loopback
#: unless the policy allows it.
LOOPBACK_PROBES = Policy(probes=ProbePolicy(allow=["127.0.0.1/32"]))


@contextmanager
def http_server() -> Iterator[str]:
    """A local HTTP server answering `GET /<status>` with that status; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
