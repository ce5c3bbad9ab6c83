"""Scale benchmark of `pystol-sim`: memory, label-selected lists and a watch under a burst.

What it measures (the issue's three claims), each beside a floor made of the
same objects and the JSON library the sim itself uses (orjson):

1. Memory. A scenario of `--nodes` nodes and 100 deployments holding `--pods`
   pods is loaded into a `pystol-sim` child process; its current and peak RSS
   (`VmRSS`, `VmHWM` from `/proc/<pid>/status`) once it serves. The floor is a
   bare Python process holding the very same pods as orjson bytes in a dict
   keyed by (namespace, name). Target: sim RSS < 1 GiB at 100,000 pods.
2. Label-selected list. `GET /api/v1/pods?labelSelector=app=<deployment>`
   (1,000 pods at full size) repeated over one keep-alive HTTPS connection; the
   latency runs from sending the request to holding the parsed items. The floor
   is `orjson.dumps` of the same 1,000 pod dicts plus `orjson.loads` of the
   response, timed in the same run. Target: p99 well under 1 s.
3. Watch burst. A watch on all pods (from the list resourceVersion), read by a
   separate process so that its parsing does not share a GIL with the writers,
   while `--writers` threads create `--burst` bare pods (with `nodeName` set)
   over their own keep-alive connections. Measured: time until the watcher holds
   every ADDED event, events/s, each pod's write ack -> ADDED event latency
   (p50/p99/max), the lag from the last acknowledged write to the last event, and
   checks that no event is missing or repeated and that resourceVersions strictly
   increase. The floor of the watch is `orjson.dumps` of the same number of
   watch-event lines built from the same pods.
   The writes/s the sim sustains has its own baseline: the same writer threads
   POSTing the same bodies to a bare aiohttp HTTPS server (the sim's stack and its
   certificate code) that parses each body and answers 201 with it, storing nothing.
4. Peak memory. After a full list of every workload pod (the largest answer the
   sim builds), the sim's `VmHWM`: its peak over loading, the lists, the burst and
   that list. The < 1 GiB target is checked against this peak, not only against
   the RSS once loaded.
5. Paged list. The same pods listed the way kubectl and informers list them:
   `limit=500`, following `continue` until the end (every page served as of the
   first page's resourceVersion). Its floor is the full list's floor (orjson.dumps
   + orjson.loads of every pod), so the ratio is what paging costs on top.

The label-selected list has a second target beside "well under 1 s": its p99 within
3x the JSON floor's p99 (the sim answers it from a label index, not by scanning
every pod), enforced on full runs like the other speed target.

Why a child process and real HTTPS: that is how every user and test talks to
the sim, so TLS, aiohttp and the event loop are part of what is measured. Why
the scenario sets `start_seconds: 3600`: every created pod then gets exactly
one follow-up write from the simulated kubelet (its Pending status), so the
burst is 10,000 client writes + 10,000 controller writes, not an open-ended
stream of Running/Ready transitions.

Run from the repository root:

    .venv/bin/python -m bench.sim_scale                 # 100,000 pods, 1,000 nodes
    .venv/bin/python -m bench.sim_scale --smoke         # 2,000 pods, 20 nodes (CI)

Results are printed as a table and written as JSON to `bench/results/` (see
`bench/results_file.py`); `--render FILE` prints an earlier results file again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import multiprocessing
import os
import queue
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.results_file import Provenance, Row, default_output, render, report

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SERVING_PREFIX = "pystol-sim: serving "
BENCH_NS = "bench"
BURST_NS = "burst"
BURST_LABEL = "sim-scale-burst"
MIB = 1024 * 1024
GIB = 1024 * MIB
RSS_TARGET_BYTES = GIB
LIST_P99_TARGET_SECONDS = 1.0
LIST_P99_TARGET_FLOOR_RATIO = 3.0
PAGE_LIMIT = 500
FLOOR_REPS = 30
WARMUP_REPS = 3
BARE_HTTPS_CHILD = "_bare-https"  # argv[0] of the writes/s baseline's server process

# Run by the memory floor's child process: a bare interpreter holding the pods as
# orjson bytes in a dict, exactly the shape of the sim's own store (minus its index).
FLOOR_CHILD = r"""
import gc, json, sys
import orjson  # the sim imports it too; its import cost belongs to the floor

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out

bare = status()
store = {}
with open(sys.argv[1], "rb") as f:
    for line in f:
        namespace, name, raw = line[:-1].split(b"\t", 2)
        store[(namespace.decode(), name.decode())] = raw
gc.collect()
loaded = status()
print(json.dumps({"objects": len(store), "bytes": sum(len(v) for v in store.values()),
                  "bare_rss": bare["VmRSS"], "rss": loaded["VmRSS"],
                  "hwm": loaded["VmHWM"]}))
"""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    pods: int
    nodes: int
    deployments: int
    burst: int
    list_reps: int
    writers: int
    smoke: bool

    @property
    def replicas(self) -> int:
        return self.pods // self.deployments


def parse_args(argv: list[str] | None) -> tuple[Config, Path, Path | None, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_scale", description=__doc__
                                     .split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true",
                        help="small configuration for CI: 2,000 pods, 20 nodes, 1,000 writes")
    parser.add_argument("--pods", type=int, help="pods held by the deployments "
                        "(default 100000; 2000 with --smoke)")
    parser.add_argument("--nodes", type=int, help="nodes (default 1000; 20 with --smoke)")
    parser.add_argument("--deployments", type=int, default=100,
                        help="deployments sharing the pods, one `app` label each (default 100)")
    parser.add_argument("--burst", type=int, help="pod creations during the watch "
                        "(default 10000; 1000 with --smoke)")
    parser.add_argument("--list-reps", type=int,
                        help="timed label-selected lists (default 100; 30 with --smoke)")
    parser.add_argument("--writers", type=int, default=8,
                        help="concurrent writer connections for the burst (default 8)")
    parser.add_argument("--output", type=Path,
                        help="JSON results file (default bench/results/sim_scale.json, "
                        "sim_scale_smoke.json with --smoke)")
    parser.add_argument("--profile-sim", type=Path, metavar="FILE",
                        help="run the sim under cProfile and write its stats to FILE "
                        "(slows the sim down: for diagnosis, not for the recorded figures)")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: print the table of an earlier results file")
    args = parser.parse_args(argv)
    smoke = bool(args.smoke)
    cfg = Config(
        pods=args.pods or (2_000 if smoke else 100_000),
        nodes=args.nodes or (20 if smoke else 1_000),
        deployments=args.deployments,
        burst=args.burst or (1_000 if smoke else 10_000),
        list_reps=args.list_reps or (30 if smoke else 100),
        writers=args.writers,
        smoke=smoke,
    )
    if cfg.deployments < 1 or cfg.pods % cfg.deployments:
        parser.error(f"--pods ({cfg.pods}) must be a multiple of --deployments "
                     f"({cfg.deployments})")
    if cfg.nodes < 1 or cfg.burst < 1 or cfg.writers < 1 or cfg.list_reps < 1:
        parser.error("--nodes, --burst, --writers and --list-reps must be at least 1")
    output = args.output or default_output("sim_scale", smoke)
    return cfg, output, args.profile_sim, args.render


def scenario_document(cfg: Config, with_pods: bool = True) -> dict[str, Any]:
    """The scenario: `nodes` nodes, `deployments` deployments of `replicas` pods each.

    Each generated deployment `app-<i>` gets the label `app: app-<i>` (the
    generator's default), which is what the label-selected list asks for.
    """
    per_node = -(-cfg.pods // cfg.nodes) + -(-cfg.burst // cfg.nodes)
    document: dict[str, Any] = {
        "name": "sim-scale",
        # Burst pods stay Pending: one kubelet status write each, then quiet.
        "timings": {"start_seconds": 3600},
        "nodes": [{"name_prefix": "node", "count": cfg.nodes,
                   "capacity": {"pods": max(110, per_node + 10)}}],
        "namespaces": [BENCH_NS, BURST_NS],
    }
    if with_pods:
        document["deployments"] = [{"name_prefix": "app", "count": cfg.deployments,
                                    "namespace": BENCH_NS, "replicas": cfg.replicas}]
    return document


# --------------------------------------------------------------------------- the sim process


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


@dataclass
class Endpoint:
    """Where the sim serves and how to authenticate: enough to open connections."""

    host: str
    port: int
    token: str
    ca_pem: bytes

    def connect(self, timeout: float = 300.0) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                           context=client_context(self.ca_pem))
        conn.connect()  # TCP + TLS handshake now, not inside a timed request
        return conn

    def headers(self, body: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    def call(self, conn: http.client.HTTPSConnection, method: str, path: str,
             body: bytes | None = None) -> tuple[int, bytes]:
        conn.request(method, path, body=body, headers=self.headers(body is not None))
        response = conn.getresponse()
        return response.status, response.read()


@dataclass
class Sim:
    process: subprocess.Popen[str]
    endpoint: Endpoint
    startup_seconds: float
    output: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid


def _pump(stream: Any, lines: list[str], serving: queue.Queue[str]) -> None:
    """Keep reading the sim's output (so its pipe never fills); hand over the serving line."""
    for line in stream:
        lines.append(line.rstrip("\n"))
        if line.startswith(SERVING_PREFIX):
            serving.put(line)
    serving.put("")


@contextmanager
def start_sim(scenario: Path, workdir: Path, timeout: float,
              profile: Path | None = None) -> Iterator[Sim]:
    """Start `pystol-sim` as a child process and wait for its serving line."""
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.unlink(missing_ok=True)
    runner = [sys.executable]
    if profile is not None:
        runner += ["-m", "cProfile", "-o", str(profile)]
    args = [*runner, "-m", "pystol_sim", "--scenario", str(scenario), "--port", "0",
            "--kubeconfig", str(kubeconfig), "--speed", "1"]
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=REPO_ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: list[str] = []
    serving: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines, serving), daemon=True).start()
    try:
        try:
            line = serving.get(timeout=timeout)
        except queue.Empty:
            line = ""
        startup = time.monotonic() - started
        if not line:
            raise RuntimeError(f"pystol-sim did not serve within {timeout:.0f}s:\n"
                               + "\n".join(lines[-30:]))
        url = line.split()[2]
        host, port = url.removeprefix("https://").rsplit(":", 1)
        config = yaml.safe_load(kubeconfig.read_text())
        token = config["users"][0]["user"]["token"]
        ca_pem = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        yield Sim(process, Endpoint(host, int(port), token, ca_pem), startup, lines)
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --------------------------------------------------------------------------- benchmarks


def bench_lists(sim: Sim, cfg: Config) -> dict[str, Any]:
    """Label-selected lists of one deployment's pods, and the orjson floor for them."""
    endpoint = sim.endpoint
    conn = endpoint.connect()
    selectors = [f"app-{i}" for i in range(cfg.deployments)]
    fetch_s: list[float] = []
    parsed_s: list[float] = []
    sizes: list[int] = []
    body = b""
    items: list[dict[str, Any]] = []
    cpu_before = 0.0
    for rep in range(-WARMUP_REPS, cfg.list_reps):
        if rep == 0:
            cpu_before = cpu_seconds(sim.pid)
        path = f"/api/v1/pods?labelSelector=app%3D{selectors[rep % len(selectors)]}"
        t0 = time.perf_counter()
        status, body = endpoint.call(conn, "GET", path)
        t1 = time.perf_counter()
        items = orjson.loads(body)["items"]
        t2 = time.perf_counter()
        if status != 200 or len(items) != cfg.replicas:
            raise RuntimeError(f"GET {path}: status {status}, {len(items)} items "
                               f"(expected {cfg.replicas})")
        if rep >= 0:
            fetch_s.append(t1 - t0)
            parsed_s.append(t2 - t0)
            sizes.append(len(body))
    sim_cpu = cpu_seconds(sim.pid) - cpu_before
    conn.close()
    floor_s: list[float] = []
    dumps_s: list[float] = []
    floor_size = 0
    list_doc = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                "items": items}
    for _ in range(FLOOR_REPS):
        t0 = time.perf_counter()
        floor_size = len(orjson.dumps(list_doc))
        t1 = time.perf_counter()
        orjson.loads(body)
        t2 = time.perf_counter()
        dumps_s.append(t1 - t0)
        floor_s.append(t2 - t0)
    return {
        "reps": cfg.list_reps, "items": cfg.replicas,
        "response_bytes": int(sum(sizes) / len(sizes)),
        "p50_s": percentile(parsed_s, 50), "p99_s": percentile(parsed_s, 99),
        "max_s": max(parsed_s),
        "fetch_p50_s": percentile(fetch_s, 50), "fetch_p99_s": percentile(fetch_s, 99),
        "sim_cpu_per_list_s": sim_cpu / cfg.list_reps,
        "floor_bytes": floor_size,
        "floor_p50_s": percentile(floor_s, 50), "floor_p99_s": percentile(floor_s, 99),
        "floor_dumps_p50_s": percentile(dumps_s, 50),
    }


def watch_worker(endpoint: Endpoint, path: str, namespace: str, expected: int, quiet: float,
                 limit: float, ready: Any, out: Any) -> None:
    """Child process: read a watch stream until every expected ADDED event has arrived.

    Then keeps reading until the stream has been quiet for `quiet` seconds, so the
    follow-up events are counted too. Reports receive times on the monotonic clock,
    which is shared by every process on the machine.
    """
    report: dict[str, Any] = {"error": None}
    try:
        conn = endpoint.connect(timeout=limit)
        conn.request("GET", path, headers=endpoint.headers())
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"watch answered {response.status}: {response.read()[:300]!r}")
        ready.set()
        added: dict[str, float] = {}
        duplicates = 0
        counts: dict[str, int] = {}
        burst_events = 0
        last_rv = 0
        rv_violations = 0
        first_event = last_event = last_burst_event = 0.0
        received = 0
        pending = b""
        done = False
        while True:
            try:
                chunk = response.read1(1 << 16)
            except TimeoutError:
                break
            now = time.monotonic()
            if not chunk:
                break
            received += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if not line:
                    continue
                event = orjson.loads(line)
                kind = event["type"]
                meta = event["object"].get("metadata") or {}
                counts[kind] = counts.get(kind, 0) + 1
                rv = int(meta.get("resourceVersion") or 0)
                if kind != "BOOKMARK":
                    if rv <= last_rv:
                        rv_violations += 1
                    last_rv = max(last_rv, rv)
                if not first_event:
                    first_event = now
                last_event = now
                if meta.get("namespace") == namespace:
                    burst_events += 1
                    last_burst_event = now
                    if kind == "ADDED":
                        if meta["name"] in added:
                            duplicates += 1
                        else:
                            added[meta["name"]] = now
            if not done and len(added) >= expected:
                done = True
                if conn.sock is not None:
                    conn.sock.settimeout(quiet)
        report.update(added=added, duplicates=duplicates, counts=counts,
                      burst_events=burst_events, rv_violations=rv_violations,
                      first_event=first_event, last_event=last_event,
                      last_burst_event=last_burst_event, bytes=received,
                      complete=len(added) >= expected)
        conn.close()
    except Exception as error:  # reported to the parent, which decides
        report["error"] = f"{type(error).__name__}: {error}"
    finally:
        ready.set()
        out.put(report)


def burst_pod(index: int, nodes: int) -> bytes:
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"burst-{index}", "labels": {"app": BURST_LABEL}},
        "spec": {"nodeName": f"node-{index % nodes}",
                 "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
    })


def write_burst(endpoint: Endpoint, cfg: Config, bodies: list[bytes], path: str,
                on_go: Callable[[], None] | None = None) -> dict[str, Any]:
    """POST every body over `cfg.writers` keep-alive connections, one thread each.

    The threads connect (TCP + TLS) first and then start together; `on_go` runs just
    before they do, so a CPU reading taken there leaves the handshakes out. Returns
    each write's send and acknowledgement time (monotonic clock, 0.0 when it failed),
    the errors, and when the writes started and ended."""
    sent = [0.0] * len(bodies)
    acks = [0.0] * len(bodies)
    errors: list[str] = []
    gate = threading.Barrier(cfg.writers + 1)

    def write(first: int) -> None:
        writer = endpoint.connect()
        gate.wait()
        for index in range(first, len(bodies), cfg.writers):
            sent[index] = time.monotonic()
            try:
                code, answer = endpoint.call(writer, "POST", path, bodies[index])
            except (OSError, http.client.HTTPException) as error:
                errors.append(f"burst-{index}: {error!r}")
                writer = endpoint.connect()
                continue
            acks[index] = time.monotonic()
            if code != 201:
                errors.append(f"burst-{index}: {code} {answer[:200]!r}")
        writer.close()

    threads = [threading.Thread(target=write, args=(k,), daemon=True)
               for k in range(cfg.writers)]
    for thread in threads:
        thread.start()
    if on_go is not None:
        on_go()
    gate.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    return {"sent": sent, "acks": acks, "errors": errors, "started": started,
            "done": time.monotonic()}


def serve_bare_https(ready_file: Path) -> None:
    """Child process: the writes/s baseline. aiohttp over TLS, set up with the sim's own
    certificate code, answering every pod POST with 201 and the body it parsed and
    serialised again (as the sim answers with the object it created). It stores nothing,
    checks no token and notifies no watcher: what is left is the transport."""
    from aiohttp import web

    from pystol_sim.tls import make_certificate, server_context

    async def create(request: web.Request) -> web.Response:
        obj = orjson.loads(await request.read())
        return web.Response(status=201, body=orjson.dumps(obj),
                            content_type="application/json")

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/api/v1/namespaces/{namespace}/pods", create)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        cert_pem, key_pem = make_certificate("127.0.0.1")
        with tempfile.TemporaryDirectory(prefix="bare-https-") as tmp:
            context = server_context(cert_pem, key_pem, Path(tmp))
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        partial = ready_file.with_suffix(".partial")  # renamed: the parent never reads half
        partial.write_bytes(orjson.dumps({"port": port, "ca_pem": cert_pem.decode()}))
        os.replace(partial, ready_file)
        await asyncio.Event().wait()  # until terminated

    asyncio.run(serve())


def bench_bare_writes(cfg: Config, workdir: Path) -> dict[str, Any]:
    """The same burst of POSTs against the bare aiohttp HTTPS server (the writes/s floor)."""
    ready_file = workdir / "bare-https.json"
    process = subprocess.Popen([sys.executable, "-m", "bench.sim_scale", BARE_HTTPS_CHILD,
                                str(ready_file)], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not ready_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare HTTPS server did not start")
            time.sleep(0.05)
        info = orjson.loads(ready_file.read_bytes())
        endpoint = Endpoint("127.0.0.1", int(info["port"]), "bare", info["ca_pem"].encode())
        bodies = [burst_pod(i, cfg.nodes) for i in range(cfg.burst)]
        cpu_before: list[float] = []
        writes = write_burst(endpoint, cfg, bodies, f"/api/v1/namespaces/{BURST_NS}/pods",
                             on_go=lambda: cpu_before.append(cpu_seconds(process.pid)))
        server_cpu = cpu_seconds(process.pid) - cpu_before[0]
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    acks, sent = writes["acks"], writes["sent"]
    latency = [acks[i] - sent[i] for i in range(len(acks)) if acks[i]]
    last_ack = max(acks)
    return {
        "writes": cfg.burst, "writers": cfg.writers, "write_errors": len(writes["errors"]),
        "first_errors": writes["errors"][:5],
        "writes_per_s": cfg.burst / (last_ack - writes["started"]),
        "write_p50_s": percentile(latency, 50) if latency else None,
        "write_p99_s": percentile(latency, 99) if latency else None,
        "write_max_s": max(latency) if latency else None,
        "server_cpu_s": server_cpu,
    }


def bench_watch(sim: Sim, cfg: Config) -> dict[str, Any]:
    """A watch on all pods while `burst` pods are created over `writers` connections."""
    endpoint = sim.endpoint
    conn = endpoint.connect()
    status, body = endpoint.call(conn, "GET", f"/api/v1/namespaces/{BURST_NS}/pods")
    if status != 200:
        raise RuntimeError(f"list of namespace {BURST_NS}: status {status}")
    list_rv = orjson.loads(body)["metadata"]["resourceVersion"]
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    results: Any = context.Queue()
    limit = 120.0 + cfg.burst / 20
    watcher = context.Process(
        target=watch_worker, daemon=True,
        args=(endpoint, f"/api/v1/pods?watch=true&resourceVersion={list_rv}"
              f"&timeoutSeconds={int(limit) + 60}", BURST_NS, cfg.burst, 1.5, limit,
              ready, results))
    watcher.start()
    if not ready.wait(60):
        watcher.kill()
        raise RuntimeError("the watcher did not connect within 60 s")

    bodies = [burst_pod(i, cfg.nodes) for i in range(cfg.burst)]
    path = f"/api/v1/namespaces/{BURST_NS}/pods"
    cpu_before: list[float] = []
    writes = write_burst(endpoint, cfg, bodies, path,
                         on_go=lambda: cpu_before.append(cpu_seconds(sim.pid)))
    sent, acks, errors = writes["sent"], writes["acks"], writes["errors"]
    started, writes_done = writes["started"], writes["done"]
    try:
        watched = results.get(timeout=limit + 30)
    except queue.Empty:
        watcher.kill()
        raise RuntimeError("the watcher did not report") from None
    sim_cpu = cpu_seconds(sim.pid) - cpu_before[0]
    watcher.join(10)
    if watched["error"]:
        raise RuntimeError(f"watcher failed: {watched['error']}")

    added: dict[str, float] = watched["added"]
    expected_names = {f"burst-{i}" for i in range(cfg.burst)}
    missing = sorted(expected_names - set(added))
    last_ack = max(acks)
    last_added = max(added.values()) if added else 0.0
    delays = [added[f"burst-{i}"] - acks[i] for i in range(cfg.burst)
              if f"burst-{i}" in added and acks[i]]
    write_latency = [acks[i] - sent[i] for i in range(cfg.burst) if acks[i]]

    # The floor: serialise the same pods as watch-event lines (and, for reference, parse them).
    status, body = endpoint.call(conn, "GET", f"{path}?labelSelector=app%3D{BURST_LABEL}")
    pods = orjson.loads(body)["items"]
    conn.close()
    floor_dumps: list[float] = []
    floor_loads: list[float] = []
    for _ in range(5):
        t0 = time.perf_counter()
        lines = [orjson.dumps({"type": "ADDED", "object": pod}) + b"\n" for pod in pods]
        t1 = time.perf_counter()
        for line in lines:
            orjson.loads(line)
        t2 = time.perf_counter()
        floor_dumps.append(t1 - t0)
        floor_loads.append(t2 - t1)
    delivered = last_added - started
    return {
        "writes": cfg.burst, "writers": cfg.writers, "write_errors": len(errors),
        "first_errors": errors[:5], "missing": len(missing), "first_missing": missing[:5],
        "duplicates": watched["duplicates"], "rv_violations": watched["rv_violations"],
        "complete": watched["complete"], "events_by_type": watched["counts"],
        "burst_events": watched["burst_events"], "stream_bytes": watched["bytes"],
        "writes_seconds": writes_done - started,
        "writes_per_s": cfg.burst / (last_ack - started),
        "write_p50_s": percentile(write_latency, 50) if write_latency else None,
        "write_p99_s": percentile(write_latency, 99) if write_latency else None,
        "write_max_s": max(write_latency) if write_latency else None,
        "all_added_seconds": delivered,
        "all_events_seconds": watched["last_burst_event"] - started,
        "added_per_s": len(added) / delivered if delivered > 0 else None,
        "events_per_s": watched["burst_events"] / (watched["last_burst_event"] - started)
        if watched["last_burst_event"] > started else None,
        "end_lag_s": last_added - last_ack,
        "delivery_p50_s": percentile(delays, 50) if delays else None,
        "delivery_p99_s": percentile(delays, 99) if delays else None,
        "delivery_max_s": max(delays) if delays else None,
        "sim_cpu_s": sim_cpu,
        "floor_pods": len(pods),
        "floor_dumps_s": min(floor_dumps),
        "floor_loads_s": min(floor_loads),
        "floor_events_per_s": len(pods) / min(floor_dumps) if pods else None,
    }


def bench_full_list_and_floor(sim: Sim, cfg: Config, workdir: Path) -> dict[str, Any]:
    """List every workload pod once, then hold the same pods as bytes in a bare process."""
    endpoint = sim.endpoint
    conn = endpoint.connect(timeout=900)
    t0 = time.perf_counter()
    status, body = endpoint.call(conn, "GET", f"/api/v1/namespaces/{BENCH_NS}/pods")
    t1 = time.perf_counter()
    document = orjson.loads(body)
    t2 = time.perf_counter()
    conn.close()
    items = document["items"]
    if status != 200 or len(items) != cfg.pods:
        raise RuntimeError(f"full list: status {status}, {len(items)} pods (expected {cfg.pods})")
    t3 = time.perf_counter()
    orjson.dumps(document)
    floor_dumps = time.perf_counter() - t3
    size = len(body)
    del body
    pods_file = workdir / "pods.tsv"
    raw_bytes = 0
    with pods_file.open("wb") as out:
        for pod in items:
            raw = orjson.dumps(pod)
            raw_bytes += len(raw)
            meta = pod["metadata"]
            out.write(f"{meta['namespace']}\t{meta['name']}\t".encode() + raw + b"\n")
    del document, items
    child = subprocess.run([sys.executable, "-c", FLOOR_CHILD, str(pods_file)],
                           capture_output=True, text=True, check=True, timeout=600)
    floor = json.loads(child.stdout)
    pods_file.unlink()
    return {
        "full_list_seconds": t2 - t0, "full_list_fetch_seconds": t1 - t0,
        "full_list_bytes": size, "full_list_floor_seconds": floor_dumps + (t2 - t1),
        "pod_bytes_mean": raw_bytes / cfg.pods,
        "floor_objects": floor["objects"], "floor_raw_bytes": floor["bytes"],
        "floor_bare_rss": floor["bare_rss"], "floor_rss": floor["rss"],
        "floor_hwm": floor["hwm"],
    }


def bench_paged_list(sim: Sim, cfg: Config) -> dict[str, Any]:
    """List every workload pod in pages of PAGE_LIMIT, as kubectl and informers do."""
    endpoint = sim.endpoint
    conn = endpoint.connect(timeout=900)
    names: set[str] = set()
    pages = 0
    versions: set[str] = set()
    token = ""
    cpu_before = cpu_seconds(sim.pid)
    t0 = time.perf_counter()
    while True:
        path = f"/api/v1/namespaces/{BENCH_NS}/pods?limit={PAGE_LIMIT}"
        if token:
            path += f"&continue={token}"
        status, body = endpoint.call(conn, "GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: status {status}: {body[:300]!r}")
        page = orjson.loads(body)
        pages += 1
        versions.add(page["metadata"]["resourceVersion"])
        names.update(item["metadata"]["name"] for item in page["items"])
        token = page["metadata"].get("continue", "")
        if not token:
            break
    elapsed = time.perf_counter() - t0
    sim_cpu = cpu_seconds(sim.pid) - cpu_before
    conn.close()
    if len(names) != cfg.pods or len(versions) != 1:
        raise RuntimeError(f"paged list: {len(names)} distinct pods (expected {cfg.pods}) "
                           f"over {len(versions)} resourceVersions (expected 1)")
    return {"seconds": elapsed, "pages": pages, "sim_cpu_s": sim_cpu}


# --------------------------------------------------------------------------- report


def build_rows(cfg: Config, r: dict[str, Any]) -> list[Row]:
    mem, lists, watch, full, bare = (r["memory"], r["lists"], r["watch"], r["full_list"],
                                     r["bare_writes"])
    paged = r["paged_list"]
    per_pod_sim = (mem["rss"] - mem["empty_rss"]) / cfg.pods
    per_pod_floor = (full["floor_rss"] - full["floor_bare_rss"]) / cfg.pods
    ms = 1000.0

    def in_ms(value: float | None) -> float | None:
        return value * ms if value is not None else None

    return [
        Row("start-up to serving", "s", r["startup_seconds"], None,
            "scenario load + settle"),
        Row("RSS once loaded", "MiB", mem["rss"] / MIB, full["floor_rss"] / MIB,
            "baseline: bare python + pods as orjson bytes in a dict"),
        Row("peak RSS (VmHWM) once loaded", "MiB", mem["hwm"] / MIB, full["floor_hwm"] / MIB),
        Row("peak RSS (VmHWM) after the full list", "MiB", mem["hwm_after_full_list"] / MIB,
            full["floor_hwm"] / MIB,
            "the sim's peak over load, lists, burst and full list; the < 1 GiB check"),
        Row("memory per pod", "bytes", per_pod_sim, per_pod_floor,
            "(loaded - empty process) / pods"),
        Row(f"label list of {cfg.replicas} pods p50", "ms", lists["p50_s"] * ms,
            lists["floor_p50_s"] * ms, "baseline: orjson.dumps + orjson.loads"),
        Row(f"label list of {cfg.replicas} pods p99", "ms", lists["p99_s"] * ms,
            lists["floor_p99_s"] * ms),
        Row("label list: sim CPU per list", "ms", lists["sim_cpu_per_list_s"] * ms,
            lists["floor_dumps_p50_s"] * ms, "baseline: orjson.dumps of the same pods"),
        Row("label list response", "KiB", lists["response_bytes"] / 1024,
            lists["floor_bytes"] / 1024),
        Row(f"full list of {cfg.pods} pods", "s", full["full_list_seconds"],
            full["full_list_floor_seconds"], "baseline: orjson.dumps + orjson.loads"),
        Row(f"paged list of {cfg.pods} pods ({PAGE_LIMIT} a page)", "s", paged["seconds"],
            full["full_list_floor_seconds"], f"{paged['pages']} pages at one resourceVersion; "
            "baseline: the full list's"),
        Row("paged list: sim CPU", "s", paged["sim_cpu_s"], None),
        Row(f"watch: all {cfg.burst} ADDED received", "s", watch["all_added_seconds"],
            watch["floor_dumps_s"], "from the first write; baseline: orjson.dumps of the "
            "same event lines"),
        Row("watch: ADDED events/s", "1/s", watch["added_per_s"], watch["floor_events_per_s"],
            rate=True),
        Row(f"burst: writes sustained ({cfg.writers} connections)", "writes/s",
            watch["writes_per_s"], bare["writes_per_s"], rate=True,
            note="baseline: bare aiohttp HTTPS server answering 201, same writers"),
        Row("burst: write round trip p50", "ms", in_ms(watch["write_p50_s"]),
            in_ms(bare["write_p50_s"])),
        Row("burst: write round trip p99", "ms", in_ms(watch["write_p99_s"]),
            in_ms(bare["write_p99_s"])),
        Row("burst: sim CPU per write", "ms", watch["sim_cpu_s"] / cfg.burst * ms,
            bare["server_cpu_s"] / cfg.burst * ms,
            "sim: includes the kubelet's follow-up write; baseline: bare HTTPS server"),
        Row("watch: write ack -> ADDED event p50", "ms", in_ms(watch["delivery_p50_s"]), None),
        Row("watch: write ack -> ADDED event p99", "ms", in_ms(watch["delivery_p99_s"]), None),
        Row("watch: write ack -> ADDED event max", "ms", in_ms(watch["delivery_max_s"]), None),
        Row("watch: lag last write -> last event", "ms", watch["end_lag_s"] * ms, None),
    ]


def checks(cfg: Config, r: dict[str, Any]) -> list[tuple[str, bool]]:
    watch, peak = r["watch"], r["memory"]["hwm_after_full_list"]
    return [
        (f"sim peak RSS (VmHWM after the full list) {peak / MIB:.0f} MiB < 1 GiB",
         peak < RSS_TARGET_BYTES),
        # a speed target, so only the full run enforces it: a smoke run checks that the
        # script works, and CI's machine is busy with other things
        (f"label list p99 {r['lists']['p99_s'] * 1000:.0f} ms < 1 s"
         + (" (smoke: not enforced)" if cfg.smoke else ""),
         cfg.smoke or r["lists"]["p99_s"] < LIST_P99_TARGET_SECONDS),
        (f"label list p99 {r['lists']['p99_s'] * 1000:.1f} ms <= {LIST_P99_TARGET_FLOOR_RATIO:g}x "
         f"its JSON floor ({r['lists']['floor_p99_s'] * 1000:.1f} ms)"
         + (" (smoke: not enforced)" if cfg.smoke else ""),
         cfg.smoke or r["lists"]["p99_s"]
         <= LIST_P99_TARGET_FLOOR_RATIO * r["lists"]["floor_p99_s"]),
        (f"burst: {watch['write_errors']} write errors", watch["write_errors"] == 0),
        (f"bare HTTPS baseline: {r['bare_writes']['write_errors']} write errors",
         r["bare_writes"]["write_errors"] == 0),
        (f"watch: every ADDED received ({watch['missing']} missing, "
         f"{watch['duplicates']} duplicated)",
         watch["complete"] and watch["missing"] == 0 and watch["duplicates"] == 0),
        (f"watch: resourceVersions strictly increasing ({watch['rv_violations']} violations)",
         watch["rv_violations"] == 0),
    ]


# --------------------------------------------------------------------------- main


def run(cfg: Config, workdir: Path, profile: Path | None) -> dict[str, Any]:
    load_timeout = 60.0 + cfg.pods / 100
    results: dict[str, Any] = {"loadavg_start": os.getloadavg()}

    empty = workdir / "empty.yaml"
    empty.write_text(yaml.safe_dump(scenario_document(cfg, with_pods=False), sort_keys=False))
    with start_sim(empty, workdir, load_timeout) as sim:
        time.sleep(0.5)
        empty_status = proc_status(sim.pid)
        print(f"empty sim ({cfg.nodes} nodes, no pods): RSS "
              f"{empty_status['VmRSS'] / MIB:.0f} MiB", flush=True)

    scenario = workdir / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(scenario_document(cfg), sort_keys=False))
    with start_sim(scenario, workdir, load_timeout, profile) as sim:
        results["startup_seconds"] = sim.startup_seconds
        time.sleep(0.5)
        loaded = proc_status(sim.pid)
        results["memory"] = {"rss": loaded["VmRSS"], "hwm": loaded["VmHWM"],
                             "empty_rss": empty_status["VmRSS"],
                             "empty_hwm": empty_status["VmHWM"]}
        print(f"loaded {cfg.pods} pods on {cfg.nodes} nodes in {sim.startup_seconds:.1f} s: "
              f"RSS {loaded['VmRSS'] / MIB:.0f} MiB, peak {loaded['VmHWM'] / MIB:.0f} MiB",
              flush=True)
        results["lists"] = bench_lists(sim, cfg)
        print(f"label list: p50 {results['lists']['p50_s'] * 1000:.1f} ms, "
              f"p99 {results['lists']['p99_s'] * 1000:.1f} ms", flush=True)
        results["watch"] = bench_watch(sim, cfg)
        print(f"watch burst: all ADDED after {results['watch']['all_added_seconds']:.2f} s, "
              f"{results['watch']['writes_per_s']:,.0f} writes/s, "
              f"lag {results['watch']['end_lag_s'] * 1000:.0f} ms", flush=True)
        after = proc_status(sim.pid)
        results["memory"].update(rss_after_burst=after["VmRSS"], hwm_after_burst=after["VmHWM"])
        # The sim is idle now: the baseline's burst does not compete with it for a core.
        results["bare_writes"] = bench_bare_writes(cfg, workdir)
        print(f"bare HTTPS baseline: {results['bare_writes']['writes_per_s']:,.0f} writes/s",
              flush=True)
        results["full_list"] = bench_full_list_and_floor(sim, cfg, workdir)
        results["paged_list"] = bench_paged_list(sim, cfg)
        print(f"paged list: {results['paged_list']['seconds']:.2f} s in "
              f"{results['paged_list']['pages']} pages", flush=True)
        final = proc_status(sim.pid)
        results["memory"].update(rss_after_full_list=final["VmRSS"],
                                 hwm_after_full_list=final["VmHWM"])
        print(f"full list: {results['full_list']['full_list_seconds']:.2f} s; sim peak RSS "
              f"{final['VmHWM'] / MIB:.0f} MiB", flush=True)
        tracebacks = [line for line in sim.output if line.startswith("Traceback")]
        results["sim_tracebacks"] = len(tracebacks)
    results["loadavg_end"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [BARE_HTTPS_CHILD]:
        serve_bare_https(Path(argv[1]))
        return 0
    cfg, output, profile, render_file = parse_args(argv)
    if render_file is not None:
        return render(render_file)
    provenance = Provenance.now()
    print(f"sim_scale: {cfg.pods} pods, {cfg.nodes} nodes, {cfg.deployments} deployments, "
          f"burst of {cfg.burst} writes over {cfg.writers} connections", flush=True)
    with tempfile.TemporaryDirectory(prefix="sim-scale-") as tmp:
        results = run(cfg, Path(tmp), profile)
    if results["sim_tracebacks"]:
        print(f"[warn] the sim printed {results['sim_tracebacks']} traceback(s)")
    return report("sim_scale", output, provenance, build_rows(cfg, results),
                  checks(cfg, results), results, config=asdict(cfg),
                  machine={"orjson": orjson.__version__}, labels=("pystol-sim", "baseline"))


if __name__ == "__main__":
    sys.exit(main())
