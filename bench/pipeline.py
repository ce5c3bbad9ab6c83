"""Pipeline benchmark of Pystol: submission throughput, dispatch latency, injection latency.

A chaos job goes through three hand-offs: the API accepts it (validates, stores it
in Redis and queues it on Celery), a worker picks it up and marks it running, and
the running job deletes a pod through the Kubernetes API. This benchmark times each
hand-off next to the bare version of the same hand-off on the same machine, in the
same run, so the ratio says how much Pystol itself adds:

(a) Submission throughput. `wrk` POSTs a valid pod-kill spec (`dry_run: true`) to
    `POST /api/v1/jobs` of `pystol api` (gunicorn, `PYSTOL_API_WORKERS` gthread workers
    of 8 threads each, as `pystol_api.http.wsgi_server` configures them).
    The baseline is a WSGI app defined here that reads the body and answers a fixed
    202 (no validation, no Redis), served by the very same gunicorn configuration
    (`pystol_api.http.wsgi_server.ApiServer` with the same options). No worker runs during
    (a), so it measures submission only; the queue is emptied afterwards. Reported:
    requests/s, p50/p99 latency, and the CPU the server and Redis spend per request.
    A second baseline, (b) in issue 16's words, is a plain Flask route that only calls
    `send_task` on `make_celery`'s app (same Redis), under the same gunicorn: what a
    minimal Flask + Celery service pays per request. Then "latency at half peak": an
    open-loop client (`open_loop`) POSTs at a constant half of Pystol's best rate, to
    Pystol and to the fixed 202, timing each request from its scheduled send.
(b) Dispatch latency: accepted -> running, i.e. the job record's `created_at` ->
    `started_at`, over jobs submitted one at a time to an idle `pystol worker`. The
    baseline is a bare Celery app (defined here) on the same Redis with the broker
    settings that matter copied from `make_celery` (acks_late, prefetch 1, the same
    visibility timeout): `send_task` -> a no-op task that stores `time.time()` at its
    start. Same pool type and concurrency for both workers.
(c) Injection latency: running -> pod deleted, i.e. `started_at` -> the simulator's
    ground-truth `deleted` time of the pod the job killed, over pod-kill jobs
    (mode one) on a deployment whose pods start and become ready quickly, so it heals
    between jobs. The baseline is the official `kubernetes` client doing
    `list_namespaced_pod(label_selector)` + `delete_namespaced_pod` on the same sim,
    timed the same way (start -> ground-truth deleted).

Why side by side in one run: this machine is shared, so absolute figures drift with
whatever else runs; the two sides of (b) and (c) are interleaved job by job, and the
wrk runs of (a) alternate, so both sides see the same background load.

Everything runs as real processes started the way a user starts them
(`redis-server`, `python -m pystol_sim`, `python -m pystol_api.cli api|worker`).

Run from the repository root:

    .venv/bin/python -m bench.pipeline            # full run (~3.5 min)
    .venv/bin/python -m bench.pipeline --smoke    # CI (~1 min)

Results are printed as a table and written as JSON to `bench/results/` (see
`bench/results_file.py`); `--render FILE` prints an earlier results file again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import http.client
import json
import os
import random
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from bench import UNREACHED_RATE_LIMITS
from bench.results_file import Provenance, Row, default_output, render, report

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

NAMESPACE = "bench"
DEPLOYMENT = "victim"
REPLICAS = 3
SIM_SPEED = 10.0
# Simulated seconds (divided by SIM_SPEED): a killed pod is replaced and Ready in ~0.1 s.
POD_TIMINGS = {"schedule_seconds": 0.0, "start_seconds": 0.5, "ready_seconds": 0.5,
               "terminate_seconds": 0.5}
PYSTOL_QUEUE = "pystol.jobs"
BASELINE_QUEUE = "bench.baseline"
BASELINE_TASK = "bench.noop"
BASELINE_STARTED = "bench:started:"  # + token: list holding the task's start time
TOKEN = "bench-" + "0" * 24
POLL_SECONDS = 0.005
IDLE_GAP_SECONDS = 0.1  # after a job ends, before the next one: the worker is idle again
JOB_TIMEOUT_SECONDS = 60.0
WARMUP_JOBS = 3
SERVER_CHILD = "_baseline-http"
SEND_SERVER_CHILD = "_baseline-send-task"
WORKER_CHILD = "_baseline-worker"
SEND_QUEUE = "bench.send_task"  # what the Flask + send_task route queues; flushed after (a)
SEND_TASK = "bench.submitted"  # never consumed: only the publish is measured
# (a) sides: Pystol, the fixed 202 and the Flask route that only calls send_task
SUBMIT_SIDES = ("pystol", "baseline", "send_task")

SUBMIT_SPEC: dict[str, Any] = {
    "action": "pod-kill",
    "target": {"namespaces": [NAMESPACE], "label_selector": f"app={DEPLOYMENT}",
               "mode": "one"},
    "dry_run": True,
}
KILL_SPEC: dict[str, Any] = {
    "action": "pod-kill",
    "target": {"namespaces": [NAMESPACE], "label_selector": f"app={DEPLOYMENT}",
               "mode": "one"},
    "recovery_timeout": "30s",
}

# What the baseline server answers: a job record of the same shape and about the same
# size as Pystol's 202 body, fixed, so both servers write comparable responses.
ACCEPTED_BODY = json.dumps({
    "id": "j-20260101000000-00000000", "spec": {**SUBMIT_SPEC, "params": {}, "duration": None,
                                                "recovery_timeout": None, "probes": [],
                                                "idempotency_key": None},
    "status": "queued", "source": "api", "submitter": "token-00000000",
    "created_at": "2026-01-01T00:00:00.000000Z", "started_at": None, "finished_at": None,
    "reason": None, "error": None, "worker": None, "schedule_id": None,
    "cancel_requested": False, "targets": [],
    "result": {"changes": [], "recovery": [], "probes": [], "output": {}},
    "metrics": {"targets_selected": 0, "targets_affected": 0, "injected_at": None,
                "reverted_at": None, "recovery_seconds": None},
    "timeline": [{"at": "2026-01-01T00:00:00.000000Z", "kind": "queued",
                  "message": "submitted by token-00000000 via api", "data": {}}],
}).encode()

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    smoke: bool
    load_seconds: float
    rounds: int
    connections: int
    wrk_threads: int
    api_workers: int
    dispatch_jobs: int
    injection_jobs: int
    pool: str
    concurrency: int
    baseline_events: bool
    open_loop_seconds: float
    open_loop_fraction: float


def parse_args(argv: list[str] | None) -> tuple[Config, Path, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="small run for CI: 2 s of load, 20 dispatches, 10 kills")
    parser.add_argument("--load-seconds", type=float,
                        help="length of each wrk run (default 10; 2 with --smoke)")
    parser.add_argument("--rounds", type=int, help="wrk runs per side, alternating; the best "
                        "is reported (default 2; 1 with --smoke)")
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections (default 8)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--api-workers", type=int, default=2,
                        help="gunicorn workers for both servers (PYSTOL_API_WORKERS, default 2)")
    parser.add_argument("--dispatch-jobs", type=int,
                        help="timed jobs per side in (b) (default 200; 20 with --smoke)")
    parser.add_argument("--injection-jobs", type=int,
                        help="timed pod kills per side in (c) (default 100; 10 with --smoke)")
    parser.add_argument("--pool", choices=["prefork", "solo", "threads"], default="prefork",
                        help="Celery pool of both workers (default prefork)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="Celery concurrency of both workers (default 2)")
    parser.add_argument("--baseline-events", action="store_true",
                        help="diagnosis: give the baseline Celery app Pystol's event settings "
                        "(task_send_sent_event, worker_send_task_events) in (b)")
    parser.add_argument("--open-loop-seconds", type=float,
                        help="length of each constant-rate run of (a) (default 10; 3 with "
                        "--smoke)")
    parser.add_argument("--open-loop-fraction", type=float, default=0.5,
                        help="the constant rate as a fraction of Pystol's peak req/s "
                        "(default 0.5)")
    parser.add_argument("--output", type=Path, help="JSON results file (default "
                        "bench/results/pipeline.json, pipeline_smoke.json with --smoke)")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: print the table of an earlier results file")
    args = parser.parse_args(argv)
    smoke = bool(args.smoke)
    cfg = Config(
        smoke=smoke,
        load_seconds=args.load_seconds or (2.0 if smoke else 10.0),
        rounds=args.rounds or (1 if smoke else 2),
        connections=args.connections,
        wrk_threads=args.wrk_threads,
        api_workers=args.api_workers,
        dispatch_jobs=args.dispatch_jobs or (20 if smoke else 200),
        injection_jobs=args.injection_jobs or (10 if smoke else 100),
        pool=args.pool,
        concurrency=args.concurrency,
        baseline_events=bool(args.baseline_events),
        open_loop_seconds=args.open_loop_seconds or (3.0 if smoke else 10.0),
        open_loop_fraction=args.open_loop_fraction,
    )
    if min(cfg.rounds, cfg.connections, cfg.wrk_threads, cfg.api_workers, cfg.dispatch_jobs,
           cfg.injection_jobs, cfg.concurrency) < 1 or cfg.load_seconds <= 0 \
            or cfg.open_loop_seconds <= 0 or not 0 < cfg.open_loop_fraction <= 1:
        parser.error("counts and durations must be positive")
    output = args.output or default_output("pipeline", smoke)
    return cfg, output, args.render


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A child process whose output goes to a log file (read back to find start-up lines)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for(self, ready: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {what} not reached within {timeout:.0f}s "
                                   f"(exit {self.process.poll()}):\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


LIVE: list[Proc] = []  # every child process this benchmark started and has not stopped yet


@contextmanager
def spawn(name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None
          ) -> Iterator[Proc]:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    proc = Proc(name, process, log)
    LIVE.append(proc)
    try:
        yield proc
    finally:
        proc.stop()
        LIVE.remove(proc)


@contextmanager
def start_redis(workdir: Path) -> Iterator[tuple[Proc, str]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (scripts/dev.sh installs it)")
    port = free_port()
    with spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", str(workdir)], workdir) as proc:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)

        def pings() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False
        proc.wait_for(pings, 10, "PING")
        client.close()
        yield proc, url


@dataclass
class SimEndpoint:
    """The sim's URL and credentials, read from the kubeconfig it wrote."""

    kubeconfig: Path
    host: str
    port: int
    token: str
    context: ssl.SSLContext

    @classmethod
    def from_kubeconfig(cls, path: Path) -> SimEndpoint:
        config = yaml.safe_load(path.read_text())
        cluster = config["clusters"][0]["cluster"]
        url = urllib.parse.urlsplit(cluster["server"])
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        return cls(path, url.hostname or "127.0.0.1", url.port or 443,
                   config["users"][0]["user"]["token"],
                   ssl.create_default_context(cadata=ca))

    def get(self, path: str) -> Any:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=30,
                                           context=self.context)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"sim GET {path}: {response.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def truth(self) -> dict[str, dict[str, Any]]:
        """Ground truth of every pod the sim has seen in the namespace, by uid."""
        pods = self.get(f"/_sim/truth?namespace={NAMESPACE}")["pods"]
        return {pod["uid"]: pod for pod in pods}

    def healed(self) -> bool:
        """The deployment has its replicas, all Ready, none terminating."""
        pods = self.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector="
                        f"app%3D{DEPLOYMENT}")["items"]
        ready = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp") and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or ())]
        return len(pods) == REPLICAS and len(ready) == REPLICAS

    def wait_healed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healed():
            if time.monotonic() > deadline:
                raise RuntimeError(f"deployment {DEPLOYMENT} did not heal within {timeout:.0f}s")
            time.sleep(0.02)


def scenario_document() -> dict[str, Any]:
    return {
        "name": "pipeline-bench",
        "timings": POD_TIMINGS,
        "nodes": [{"name_prefix": "node", "count": 3}],
        "namespaces": [NAMESPACE],
        "deployments": [{"name": DEPLOYMENT, "namespace": NAMESPACE, "replicas": REPLICAS}],
    }


@contextmanager
def serve_scenario(document: dict[str, Any], workdir: Path, speed: float = SIM_SPEED,
                   timeout: float = 60) -> Iterator[tuple[Proc, SimEndpoint]]:
    """A `pystol-sim` child serving `document` (a scenario), once it says it serves."""
    scenario = workdir / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(document, sort_keys=False))
    kubeconfig = workdir / "kubeconfig"
    with spawn("sim", [sys.executable, "-m", "pystol_sim", "--scenario", str(scenario),
                       "--port", "0", "--kubeconfig", str(kubeconfig),
                       "--speed", str(speed)], workdir) as proc:
        proc.wait_for(lambda: "pystol-sim: serving " in proc.text(), timeout, "serving line")
        yield proc, SimEndpoint.from_kubeconfig(kubeconfig)


@contextmanager
def start_sim(workdir: Path) -> Iterator[tuple[Proc, SimEndpoint]]:
    with serve_scenario(scenario_document(), workdir) as (proc, endpoint):
        endpoint.wait_healed()
        yield proc, endpoint


def http_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status < 500
        except OSError:
            return False
        finally:
            conn.close()
    return ready


def pystol_env(redis_url: str, sim: SimEndpoint, cfg: Config) -> dict[str, str]:
    return {"PYSTOL_REDIS_URL": redis_url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
            "PYSTOL_API_TOKENS": TOKEN, "PYSTOL_API_WORKERS": str(cfg.api_workers),
            "PYSTOL_QUEUE": PYSTOL_QUEUE, "PYSTOL_WORKER_CONCURRENCY": str(cfg.concurrency),
            **UNREACHED_RATE_LIMITS}


@contextmanager
def start_pystol_api(env: dict[str, str], workdir: Path) -> Iterator[tuple[Proc, int]]:
    port = free_port()
    with spawn("pystol-api", [sys.executable, "-m", "pystol_api.cli", "api"], workdir,
               dict(env, PYSTOL_API_BIND=f"127.0.0.1:{port}")) as proc:
        proc.wait_for(http_ready(port), 60, "/readyz")
        yield proc, port


@contextmanager
def start_baseline_http(cfg: Config, workdir: Path) -> Iterator[tuple[Proc, int]]:
    port = free_port()
    with spawn("baseline-http", [sys.executable, "-m", "bench.pipeline", SERVER_CHILD,
                                 f"127.0.0.1:{port}", str(cfg.api_workers)], workdir) as proc:
        proc.wait_for(http_ready(port), 60, "first answer")
        yield proc, port


@contextmanager
def start_send_task_http(cfg: Config, redis_url: str, workdir: Path
                         ) -> Iterator[tuple[Proc, int]]:
    """Baseline (b) of (a): the Flask route that only calls `send_task`."""
    port = free_port()
    with spawn("send-task-http", [sys.executable, "-m", "bench.pipeline", SEND_SERVER_CHILD,
                                  f"127.0.0.1:{port}", str(cfg.api_workers), redis_url],
               workdir) as proc:
        proc.wait_for(http_ready(port), 60, "first answer")
        yield proc, port


def worker_ready(proc: Proc) -> Callable[[], bool]:
    return lambda: " ready." in proc.text()


@contextmanager
def start_pystol_worker(env: dict[str, str], cfg: Config, workdir: Path) -> Iterator[Proc]:
    with spawn("pystol-worker", [sys.executable, "-m", "pystol_api.cli", "worker",
                                 "--concurrency", str(cfg.concurrency), "--pool", cfg.pool],
               workdir, env) as proc:
        proc.wait_for(worker_ready(proc), 60, "'ready.'")
        yield proc


@contextmanager
def start_baseline_worker(redis_url: str, cfg: Config, workdir: Path) -> Iterator[Proc]:
    with spawn("baseline-worker", [sys.executable, "-m", "bench.pipeline", WORKER_CHILD,
                                   redis_url, cfg.pool, str(cfg.concurrency),
                                   "events" if cfg.baseline_events else "bare"],
               workdir) as proc:
        proc.wait_for(worker_ready(proc), 60, "'ready.'")
        yield proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants (gunicorn's master and workers, a prefork pool)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(grandchild for child in children for grandchild in tree_pids(int(child)))]


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


@dataclass
class CpuSnapshot:
    """Machine-wide busy CPU and the CPU of this benchmark's own processes, at one instant."""

    at: float
    machine: float
    ours: float

    @classmethod
    def take(cls) -> CpuSnapshot:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:9]]
        busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
        pids = {pid for proc in LIVE for pid in tree_pids(proc.pid)}
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN)]
        own = sum(u.ru_utime + u.ru_stime for u in usage)  # this process, and wrk once reaped
        return cls(time.monotonic(), busy, own + tree_cpu(sorted(pids)))

    def until(self, later: CpuSnapshot) -> dict[str, float]:
        """Cores in use between two snapshots: the whole machine, ours, everyone else's."""
        span = max(1e-9, later.at - self.at)
        machine = (later.machine - self.machine) / span
        ours = (later.ours - self.ours) / span
        return {"machine_cores": machine, "our_cores": ours,
                "other_cores": max(0.0, machine - ours)}


# --------------------------------------------------------------------------- child processes


def accept_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The baseline of (a): read the body, answer a fixed 202. No validation, no Redis."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("202 Accepted", [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(ACCEPTED_BODY))),
                                    ("Location", "/api/v1/jobs/j-20260101000000-00000000")])
    return [ACCEPTED_BODY]


def serve_baseline_http(bind: str, workers: int) -> None:
    """gunicorn exactly as `pystol api` runs it (same options), serving `accept_app`."""
    from pystol_api.http.wsgi_server import ApiServer
    from pystol_worker.core.settings import Settings

    settings = Settings(api_bind=bind, api_workers=workers, api_tokens=[TOKEN])
    ApiServer(settings, app_factory=lambda _: accept_app).run()  # type: ignore[arg-type,return-value]


def send_task_app(settings: Any) -> Any:
    """Baseline (b) of (a): a plain Flask route that parses the JSON body, calls Celery's
    `send_task` and answers the same fixed 202 as `accept_app`. The Celery app is
    `make_celery`'s own (same broker, same Redis, same settings), so the route pays for
    exactly what a minimal Flask + Celery service pays: Flask's request handling and one
    publish. Nothing consumes SEND_QUEUE; it is counted and flushed after (a)."""
    from flask import Flask, Response, request

    from pystol_worker.process.celery_app import make_celery

    celery = make_celery(settings)
    app = Flask("bench-send-task")

    @app.post("/api/v1/jobs")
    def submit() -> Response:
        request.get_json(force=True)
        celery.send_task(SEND_TASK, args=[uuid.uuid4().hex], queue=SEND_QUEUE)
        return Response(ACCEPTED_BODY, status=202, content_type="application/json")

    return app


def serve_send_task_http(bind: str, workers: int, redis_url: str) -> None:
    """gunicorn exactly as `pystol api` runs it (same options), serving `send_task_app`."""
    from pystol_api.http.wsgi_server import ApiServer
    from pystol_worker.core.settings import Settings

    settings = Settings(api_bind=bind, api_workers=workers, api_tokens=[TOKEN],
                        redis_url=redis_url, queue=SEND_QUEUE)
    ApiServer(settings, app_factory=send_task_app).run()


def per_process_redis(redis_url: str) -> Callable[[], redis.Redis]:
    """A Redis client per process (a prefork pool child must not share its parent's)."""
    clients: dict[int, redis.Redis] = {}

    def client() -> redis.Redis:
        pid = os.getpid()
        if pid not in clients:
            clients[pid] = redis.Redis.from_url(redis_url)
        return clients[pid]
    return client


def make_baseline_celery(redis_url: str, events: bool = False) -> Any:
    """A bare Celery app with the broker settings of `make_celery` that shape dispatch.

    Task events stay off (a bare app's default) unless `events`: then it also publishes
    Pystol's task-sent and worker task events, to measure what they cost."""
    from celery import Celery

    app = Celery("bench-baseline", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=BASELINE_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 7200, "socket_keepalive": True},
        broker_pool_limit=10,
        worker_send_task_events=events,
        task_send_sent_event=events,
    )
    return app


def run_baseline_worker(redis_url: str, pool: str, concurrency: int, events: bool) -> None:
    """The baseline of (b): a worker whose only task stores its start time in Redis."""
    from celery.signals import worker_process_init

    app = make_baseline_celery(redis_url, events)
    client = per_process_redis(redis_url)

    @worker_process_init.connect(weak=False)
    def _warm_up(**_: Any) -> None:  # connect before the first task, as pystol worker does
        client().ping()

    @app.task(name=BASELINE_TASK)  # type: ignore[untyped-decorator]
    def noop(token: str) -> None:
        started = time.time()
        client().rpush(BASELINE_STARTED + token, repr(started))

    client().ping()
    app.worker_main(["worker", f"--concurrency={concurrency}", f"--pool={pool}",
                     "-Q", BASELINE_QUEUE, "--loglevel=INFO", "--without-gossip",
                     "--without-mingle", "-n", f"baseline-{os.getpid()}@%h"])


# --------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "min": min(values), "max": max(values),
            "mean": sum(values) / len(values)}


def ts(value: str | datetime.datetime | None) -> float:
    if value is None:
        raise ValueError("missing timestamp")
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp()


# --------------------------------------------------------------------------- (a) submission


def run_wrk(port: int, path: str, cfg: Config, seconds: float, workdir: Path
            ) -> dict[str, Any]:
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(SUBMIT_SPEC), token=TOKEN))
    args = ["wrk", f"-t{cfg.wrk_threads}", f"-c{cfg.connections}", f"-d{seconds:g}s",
            "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}{path}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    line = next((line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")),
                None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(raw[key] for key in ("connect_errors", "read_errors", "write_errors",
                                      "status_errors", "timeouts"))
    return {"client": "wrk", "requests": raw["requests"], "seconds": raw["duration_us"] / 1e6,
            "rps": raw["requests"] / (raw["duration_us"] / 1e6), "errors": errors,
            "p50_s": raw["p50_us"] / 1e6, "p90_s": raw["p90_us"] / 1e6,
            "p99_s": raw["p99_us"] / 1e6, "max_s": raw["max_us"] / 1e6, "raw": raw}


def run_python_load(port: int, path: str, cfg: Config, seconds: float) -> dict[str, Any]:
    """Fallback when wrk is missing: one thread per connection, http.client, same request.
    Slower than wrk (the client shares the GIL), so the figures are lower bounds."""
    body = json.dumps(SUBMIT_SPEC).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    latencies: list[list[float]] = [[] for _ in range(cfg.connections)]
    errors = [0] * cfg.connections
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        while time.monotonic() < stop_at:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status >= 300:
                    errors[index] += 1
                latencies[index].append(time.perf_counter() - t0)
            except OSError:
                errors[index] += 1
            finally:
                conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(cfg.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    flat = [value for chunk in latencies for value in chunk]
    return {"client": "python", "requests": len(flat), "seconds": elapsed,
            "rps": len(flat) / elapsed, "errors": sum(errors),
            "p50_s": percentile(flat, 50), "p90_s": percentile(flat, 90),
            "p99_s": percentile(flat, 99), "max_s": max(flat)}


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; its status code.
    EOF before the status line (the server closed an idle keep-alive connection) raises
    ConnectionResetError, so the caller reconnects and sends again."""
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("connection closed before the response")
    status = int(line.split()[1])
    length = 0
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def open_loop(port: int, path: str, rate: float, seconds: float, connections: int
                    ) -> dict[str, Any]:
    """POST at a constant rate whatever the answers' speed (an open loop, unlike wrk).

    Send times are fixed in advance (start + i/rate); each request's latency is measured
    from its *scheduled* time to the end of its response, so a request that waited for a
    free connection or for the client itself counts that wait (no coordinated omission).
    `connections` keep-alive connections take the scheduled requests in order. `lag` is
    how late the client actually wrote each request (its own overload, reported apart)."""
    body = json.dumps(SUBMIT_SPEC).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    total = max(1, int(rate * seconds))
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    lags: list[float] = []
    errors = [0]

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while (scheduled := await queue.get()) is not None:
            status = None
            for _attempt in range(2):  # once more on a fresh connection if it was closed
                try:
                    if writer is None or reader is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    lags.append(time.perf_counter() - scheduled)
                    writer.write(request)
                    status = await read_response(reader)
                    break
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    if writer is not None:
                        writer.close()
                    reader = writer = None
            if status is None or status >= 300:
                errors[0] += 1
            latencies.append(time.perf_counter() - scheduled)
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    start = time.perf_counter() + 0.05
    for index in range(total):
        at = start + index / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(at)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    return {"client": "python open loop", "rate": rate, "requests": len(latencies),
            "seconds": elapsed, "achieved_rps": len(latencies) / elapsed,
            "errors": errors[0], "connections": connections,
            "latency_s": summary(latencies), "client_lag_s": summary(lags)}


def constant_rate_run(port: int, path: str, rate: float, seconds: float, connections: int,
                      server_pid: int) -> dict[str, Any]:
    """`open_loop` with the server's CPU and the machine's other load around it."""
    pids = tree_pids(server_pid)
    cpu0 = tree_cpu(pids)
    before = CpuSnapshot.take()
    result = asyncio.run(open_loop(port, path, rate, seconds, connections))
    result.update(server_cpu_s=tree_cpu(pids) - cpu0, **before.until(CpuSnapshot.take()))
    return result


def load_run(port: int, path: str, cfg: Config, seconds: float, workdir: Path,
             server_pid: int, redis_pid: int) -> dict[str, Any]:
    pids = tree_pids(server_pid)
    cpu0, redis0 = tree_cpu(pids), cpu_seconds(redis_pid)
    before = CpuSnapshot.take()
    if shutil.which("wrk"):
        result = run_wrk(port, path, cfg, seconds, workdir)
    else:
        result = run_python_load(port, path, cfg, seconds)
    cores = before.until(CpuSnapshot.take())
    server_cpu, redis_cpu = tree_cpu(pids) - cpu0, cpu_seconds(redis_pid) - redis0
    requests = max(1, result["requests"])
    result.update(server_cpu_s=server_cpu, redis_cpu_s=redis_cpu,
                  server_cpu_per_request_s=server_cpu / requests,
                  redis_cpu_per_request_s=redis_cpu / requests,
                  loadavg=os.getloadavg()[0], **cores)
    return result


def bench_submission(cfg: Config, env: dict[str, str], redis_url: str, redis_pid: int,
                     workdir: Path) -> dict[str, Any]:
    """(a): wrk against `pystol api`, the fixed-202 app and the Flask + send_task route,
    in turns; then the same POST at a constant rate of half Pystol's peak (open loop),
    against Pystol and against the fixed 202."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SUBMIT_SIDES}
    answered = dict.fromkeys(SUBMIT_SIDES, 0)  # 2xx answers, warm-up and open loop included
    with ExitStack() as stack:
        api, api_port = stack.enter_context(start_pystol_api(env, workdir))
        base, base_port = stack.enter_context(start_baseline_http(cfg, workdir))
        send, send_port = stack.enter_context(start_send_task_http(cfg, redis_url, workdir))
        procs = {"pystol": api, "baseline": base, "send_task": send}
        targets = {"pystol": (api_port, "/api/v1/jobs", api.pid),
                   "baseline": (base_port, "/api/v1/jobs", base.pid),
                   "send_task": (send_port, "/api/v1/jobs", send.pid)}
        for side, (port, path, pid) in targets.items():  # warm-up: connections, imports
            warm = load_run(port, path, cfg, 1.0, workdir, pid, redis_pid)
            answered[side] += warm["requests"] - warm["errors"]
            if warm["errors"]:
                raise RuntimeError(f"(a) {side}: {warm['errors']} errors during warm-up; "
                                   f"log:\n{procs[side].tail()}")
        for round_no in range(cfg.rounds):
            shift = round_no % len(SUBMIT_SIDES)  # each side takes each place in turn
            order = [*SUBMIT_SIDES[shift:], *SUBMIT_SIDES[:shift]]
            for side in order:
                port, path, pid = targets[side]
                run = load_run(port, path, cfg, cfg.load_seconds, workdir, pid, redis_pid)
                runs[side].append(run)
                answered[side] += run["requests"] - run["errors"]
                print(f"  (a) {side:9s} round {round_no + 1}: {run['rps']:,.0f} req/s, "
                      f"p50 {run['p50_s'] * 1e3:.2f} ms, p99 {run['p99_s'] * 1e3:.2f} ms, "
                      f"{run['errors']} errors; other programs used "
                      f"{run['other_cores']:.2f} cores", flush=True)
        best = {side: max(items, key=lambda r: r["rps"]) for side, items in runs.items()}
        rate = cfg.open_loop_fraction * best["pystol"]["rps"]
        half: dict[str, Any] = {"rate": rate, "fraction": cfg.open_loop_fraction}
        for side in ("pystol", "baseline"):
            port, path, pid = targets[side]
            steady = constant_rate_run(port, path, rate, cfg.open_loop_seconds,
                                       cfg.connections, pid)
            half[side] = steady
            answered[side] += steady["requests"] - steady["errors"]
            latency = steady["latency_s"]
            print(f"  (a) {side:9s} at {rate:,.0f} req/s (open loop, "
                  f"{cfg.open_loop_seconds:g} s): p50 {latency['p50'] * 1e3:.2f} ms, "
                  f"p99 {latency['p99'] * 1e3:.2f} ms, {steady['errors']} errors; client lag "
                  f"p99 {steady['client_lag_s']['p99'] * 1e3:.2f} ms", flush=True)
    client = redis.Redis.from_url(redis_url)
    flushed = {}
    for prefix in (PYSTOL_QUEUE, SEND_QUEUE):  # nobody consumed them: count, then flush
        lists = [key for key in client.scan_iter(f"{prefix}*") if client.type(key) == b"list"]
        flushed[prefix] = sum(int(client.llen(key)) for key in lists)
        if lists:
            client.delete(*lists)
    jobs = int(client.zcard("pystol:jobs"))
    client.close()
    return {"runs": runs, "best": best, "half_peak": half, "jobs_stored": jobs,
            "messages_flushed": flushed[PYSTOL_QUEUE],
            "send_task_messages_flushed": flushed[SEND_QUEUE], "answered": answered,
            "client": best["pystol"]["client"]}


# --------------------------------------------------------------------------- (b), (c) helpers


class PystolClient:
    """Submits jobs to `pystol api` over HTTP and reads their records from the job store."""

    def __init__(self, port: int, redis_url: str) -> None:
        from pystol_worker.store.job_store import JobStore

        self.port = port
        self.store = JobStore(redis.Redis.from_url(redis_url))

    def submit(self, spec: dict[str, Any]) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/api/v1/jobs", body=json.dumps(spec).encode(),
                         headers={"Content-Type": "application/json",
                                  "Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 202:
            raise RuntimeError(f"POST /api/v1/jobs: {response.status} {body[:300]!r}")
        job_id: str = json.loads(body)["id"]
        return job_id

    def wait_terminal(self, job_id: str) -> Any:
        deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
        while True:
            record = self.store.get(job_id, with_timeline=False)
            if record.status.terminal:
                return self.store.get(job_id)
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {record.status.value} after "
                                   f"{JOB_TIMEOUT_SECONDS:.0f}s")
            time.sleep(POLL_SECONDS)


def event_at(record: Any, kind: str) -> float | None:
    return next((ts(event.at) for event in record.timeline if event.kind == kind), None)


# --------------------------------------------------------------------------- (b) dispatch


def bench_dispatch(cfg: Config, pystol: PystolClient, redis_url: str) -> dict[str, Any]:
    """(b): accepted -> running, one job at a time, Pystol and bare Celery interleaved."""
    producer = make_baseline_celery(redis_url, cfg.baseline_events)
    client = redis.Redis.from_url(redis_url)
    samples: dict[str, list[float]] = {"pystol": [], "baseline": []}
    started_event: list[float] = []
    failures: list[str] = []

    def one_pystol(keep: bool) -> None:
        job_id = pystol.submit(SUBMIT_SPEC)
        record = pystol.wait_terminal(job_id)
        if record.status.value != "succeeded":
            failures.append(f"{job_id}: {record.status.value} {record.reason}")
        if keep:
            samples["pystol"].append(ts(record.started_at) - ts(record.created_at))
            event = event_at(record, "started")
            if event is not None:
                started_event.append(event - ts(record.created_at))

    def one_baseline(keep: bool) -> None:
        token = uuid.uuid4().hex
        sent = time.time()
        producer.send_task(BASELINE_TASK, args=[token], queue=BASELINE_QUEUE)
        answer = client.blpop([BASELINE_STARTED + token], timeout=JOB_TIMEOUT_SECONDS)
        if answer is None:
            failures.append(f"baseline task {token} never started")
            return
        if keep:
            samples["baseline"].append(float(answer[1]) - sent)

    for index in range(-WARMUP_JOBS, cfg.dispatch_jobs):
        steps = [one_pystol, one_baseline] if index % 2 == 0 else [one_baseline, one_pystol]
        for step in steps:
            step(index >= 0)
            time.sleep(IDLE_GAP_SECONDS)
    producer.close()
    client.close()
    return {"pystol": summary(samples["pystol"]), "baseline": summary(samples["baseline"]),
            "pystol_started_event": summary(started_event), "failures": failures,
            "samples": samples}


# --------------------------------------------------------------------------- (c) injection


def bench_injection(cfg: Config, pystol: PystolClient, sim: SimEndpoint) -> dict[str, Any]:
    """(c): running -> pod deleted (sim ground truth), Pystol pod-kill jobs and the bare
    kubernetes client interleaved; the deployment heals before every kill."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    core = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(sim.kubeconfig)))
    core.list_namespaced_pod(NAMESPACE, label_selector=f"app={DEPLOYMENT}")  # connect, warm up
    rng = random.Random(7)
    pending: dict[str, list[tuple[str, dict[str, float]]]] = {"pystol": [], "baseline": []}
    failures: list[str] = []

    def one_pystol(keep: bool) -> None:
        job_id = pystol.submit(KILL_SPEC)
        record = pystol.wait_terminal(job_id)
        if record.status.value != "succeeded" or not record.result.changes:
            failures.append(f"{job_id}: {record.status.value} {record.reason}")
            return
        change = record.result.changes[0]
        marks = {"start": ts(record.started_at), "before_delete": ts(change.at)}
        selected = event_at(record, "selected")
        if selected is not None:
            marks["selected"] = selected
        if keep:
            pending["pystol"].append((change.target.uid or "", marks))

    def one_baseline(keep: bool) -> None:
        start = time.time()
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={DEPLOYMENT}").items
        live = [pod.metadata for pod in pods
                if pod.metadata is not None and pod.metadata.deletion_timestamp is None]
        listed = time.time()
        victim = rng.choice(live)
        before_delete = time.time()
        core.delete_namespaced_pod(str(victim.name), NAMESPACE)
        if keep:
            pending["baseline"].append((str(victim.uid), {
                "start": start, "selected": listed, "before_delete": before_delete}))

    for index in range(-WARMUP_JOBS, cfg.injection_jobs):
        steps = [one_pystol, one_baseline] if index % 2 == 0 else [one_baseline, one_pystol]
        for step in steps:
            sim.wait_healed()
            step(index >= 0)
    sim.wait_healed()
    truth = sim.truth()
    out: dict[str, Any] = {"failures": failures}
    for side, items in pending.items():
        total, prepare, delete, select = [], [], [], []
        for uid, marks in items:
            deleted = (truth.get(uid) or {}).get("deleted")
            if deleted is None:
                failures.append(f"{side}: pod {uid} has no deleted time in the sim's truth")
                continue
            total.append(deleted - marks["start"])
            prepare.append(marks["before_delete"] - marks["start"])
            delete.append(deleted - marks["before_delete"])
            if "selected" in marks:
                select.append(marks["selected"] - marks["start"])
        out[side] = summary(total)
        out[side + "_until_delete_call"] = summary(prepare)
        out[side + "_delete_call_to_deleted"] = summary(delete)
        out[side + "_until_selected"] = summary(select)
        out[side + "_samples"] = total
    core.api_client.close()
    return out


# --------------------------------------------------------------------------- report


def build_rows(results: dict[str, Any]) -> list[Row]:
    ms = 1000.0
    sub, dis, inj = results["submission"], results["dispatch"], results["injection"]
    p, b = sub["best"]["pystol"], sub["best"]["baseline"]
    send = sub["best"]["send_task"]
    half = sub["half_peak"]
    hp, hb = half["pystol"]["latency_s"], half["baseline"]["latency_s"]

    def q(side: dict[str, Any], key: str) -> float | None:
        return side[key] * ms if key in side else None

    return [
        Row("(a) submissions", "req/s", p["rps"], b["rps"], rate=True,
            note="best of the alternating runs; baseline: fixed 202, same gunicorn "
            f"(gthread workers); load from {sub['client']}; target: Pystol >= 0.5x the "
            "fixed 202's rate (ratio <= 2)"),
        Row("(a) submissions vs Flask + send_task", "req/s", p["rps"], send["rps"], rate=True,
            note="baseline (b): a plain Flask route that only calls send_task of "
            "make_celery's app (same Redis), same gunicorn; target: Pystol >= 1.4x its rate "
            "(ratio <= 0.71)"),
        Row("(a) server CPU per request vs Flask + send_task", "ms",
            p["server_cpu_per_request_s"] * ms, send["server_cpu_per_request_s"] * ms),
        Row("(a) latency p50 at half peak", "ms", hp["p50"] * ms, hb["p50"] * ms,
            note=f"open loop, {half['rate']:,.0f} req/s (half Pystol's peak) for "
            f"{half['pystol']['seconds']:.0f} s, timed from each request's scheduled send; "
            "baseline: the fixed 202 at the same rate"),
        Row("(a) latency p99 at half peak", "ms", hp["p99"] * ms, hb["p99"] * ms,
            note="target: Pystol p99 <= 20 ms"),
        Row("(a) submit latency p50", "ms", p["p50_s"] * ms, b["p50_s"] * ms),
        Row("(a) submit latency p99", "ms", p["p99_s"] * ms, b["p99_s"] * ms),
        Row("(a) server CPU per request", "ms", p["server_cpu_per_request_s"] * ms,
            b["server_cpu_per_request_s"] * ms, note="gunicorn master + workers"),
        Row("(a) redis CPU per request", "ms", p["redis_cpu_per_request_s"] * ms, None),
        Row("(b) dispatch accepted -> running p50", "ms", q(dis["pystol"], "p50"),
            q(dis["baseline"], "p50"), note="baseline: send_task -> no-op task start"),
        Row("(b) dispatch accepted -> running p99", "ms", q(dis["pystol"], "p99"),
            q(dis["baseline"], "p99")),
        Row("(c) injection running -> pod deleted p50", "ms", q(inj["pystol"], "p50"),
            q(inj["baseline"], "p50"), note="baseline: list_namespaced_pod + delete"),
        Row("(c) injection running -> pod deleted p99", "ms", q(inj["pystol"], "p99"),
            q(inj["baseline"], "p99")),
        Row("(c) start -> pods selected p50", "ms", q(inj["pystol_until_selected"], "p50"),
            q(inj["baseline_until_selected"], "p50"), note="pystol: 'selected' event"),
        Row("(c) start -> DELETE sent p50", "ms", q(inj["pystol_until_delete_call"], "p50"),
            q(inj["baseline_until_delete_call"], "p50")),
        Row("(c) DELETE sent -> sim deleted p50", "ms",
            q(inj["pystol_delete_call_to_deleted"], "p50"),
            q(inj["baseline_delete_call_to_deleted"], "p50")),
    ]


def checks(cfg: Config, results: dict[str, Any]) -> list[tuple[str, bool]]:
    sub, dis, inj = results["submission"], results["dispatch"], results["injection"]
    errors = sum(run["errors"] for runs in sub["runs"].values() for run in runs)
    errors += sum(sub["half_peak"][side]["errors"] for side in ("pystol", "baseline"))
    answered = sub["answered"]
    return [
        (f"(a) {errors} failed requests (non-2xx, socket errors, timeouts)", errors == 0),
        (f"(a) {sub['jobs_stored']} jobs stored, {sub['messages_flushed']} queued, "
         f"{answered['pystol']} accepted: every accepted job stored and queued once",
         sub["jobs_stored"] == sub["messages_flushed"] >= answered["pystol"]),
        (f"(a) Flask + send_task: {sub['send_task_messages_flushed']} messages queued for "
         f"{answered['send_task']} answers", sub["send_task_messages_flushed"]
         >= answered["send_task"]),
        (f"(b) {dis['pystol']['n']} + {dis['baseline']['n']} of {cfg.dispatch_jobs} + "
         f"{cfg.dispatch_jobs} dispatches timed; {len(dis['failures'])} failures",
         dis["pystol"]["n"] == dis["baseline"]["n"] == cfg.dispatch_jobs
         and not dis["failures"]),
        (f"(c) {inj['pystol']['n']} + {inj['baseline']['n']} of {cfg.injection_jobs} + "
         f"{cfg.injection_jobs} kills timed; {len(inj['failures'])} failures",
         inj["pystol"]["n"] == inj["baseline"]["n"] == cfg.injection_jobs
         and not inj["failures"]),
    ]


# --------------------------------------------------------------------------- main


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"loadavg_start": os.getloadavg()}
    with ExitStack() as stack:
        redis_proc, redis_url = stack.enter_context(start_redis(workdir))
        _, sim = stack.enter_context(start_sim(workdir))
        env = pystol_env(redis_url, sim, cfg)
        print(f"(a) submission: wrk {cfg.connections} connections, {cfg.load_seconds:g} s x "
              f"{cfg.rounds} round(s) per side"
              + ("" if shutil.which("wrk") else " [wrk missing: Python client]"), flush=True)
        results["submission"] = bench_submission(cfg, env, redis_url, redis_proc.pid, workdir)

        api, api_port = stack.enter_context(start_pystol_api(env, workdir))
        stack.enter_context(start_pystol_worker(env, cfg, workdir))
        stack.enter_context(start_baseline_worker(redis_url, cfg, workdir))
        pystol = PystolClient(api_port, redis_url)
        print(f"(b) dispatch: {cfg.dispatch_jobs} jobs per side, {cfg.pool} pool, "
              f"concurrency {cfg.concurrency}", flush=True)
        before = CpuSnapshot.take()
        results["dispatch"] = bench_dispatch(cfg, pystol, redis_url)
        after = CpuSnapshot.take()
        results["dispatch"]["cores"] = cores = before.until(after)
        print(f"  other programs used {cores['other_cores']:.2f} cores", flush=True)
        print(f"(c) injection: {cfg.injection_jobs} pod kills per side", flush=True)
        before = after
        results["injection"] = bench_injection(cfg, pystol, sim)
        results["injection"]["cores"] = cores = before.until(CpuSnapshot.take())
        print(f"  other programs used {cores['other_cores']:.2f} cores", flush=True)
        results["api_tracebacks"] = api.text().count("Traceback")
    results["loadavg_end"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == SERVER_CHILD:
        serve_baseline_http(argv[1], int(argv[2]))
        return 0
    if argv and argv[0] == SEND_SERVER_CHILD:
        serve_send_task_http(argv[1], int(argv[2]), argv[3])
        return 0
    if argv and argv[0] == WORKER_CHILD:
        run_baseline_worker(argv[1], argv[2], int(argv[3]), argv[4] == "events")
        return 0
    cfg, output, render_file = parse_args(argv)
    if render_file is not None:
        return render(render_file)
    provenance = Provenance.now()
    print(f"pipeline: {'smoke' if cfg.smoke else 'full'} run on {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        results = run(cfg, Path(tmp))
    rows = build_rows(results)
    verdicts = checks(cfg, results)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True) \
        if shutil.which("wrk") else None
    machine = {"wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if wrk else None}
    return report("pipeline", output, provenance, rows, verdicts, results,
                  config=asdict(cfg), machine=machine)


if __name__ == "__main__":
    sys.exit(main())
