"""Safety benchmark of Pystol: how fast a halt stops injections, and what selecting costs.

Issue 4 asks for two figures, each measured here next to a baseline in the same run:

1. Halt latency. A full stack runs as real processes (`redis-server` on a free
   port, `pystol-sim` at speed 10 with two deployments that heal in ~0.1 s, a
   `pystol worker` with concurrency 2 and `pystol api` under gunicorn), started
   once and reused by every halt. Each halt starts two pod-kill jobs that keep
   injecting (mode `all` on a 200-replica deployment each, the kills spread
   `uniform` over 20 s: one kill per job every ~100 ms), waits until both have
   injected and then a random 0.1 s to 0.1 s + two kill intervals, so the halt
   lands at any phase of the kill schedule, notes T = `time.time()` just before
   `POST /api/v1/halt`, and reads the simulator's ground truth (`/_sim/truth`,
   each pod's `deleted` time). Halt latency = last deletion of the victims' pods
   - T, signed: negative when the last kill landed before T (the workers were
   between checks and never injected again), positive when a DELETE that had
   already passed its halt check landed after T. p50/p95/max over the halts (100
   in the full run). Also timed: T until both jobs are terminal (their
   `finished_at`) and the `POST /halt` answer. `DELETE /api/v1/halt` and a healed
   deployment between halts.
   Baseline: the physical floor of a halt that workers learn about by polling,
   measured in the same run. A worker can only stop once it reads the halt key,
   so nothing that polls can promise better than one polling interval plus one
   round trip of the read. Both parts are measured, not configured:
   - the interval between a job's halt checks: a running pod-kill job calls
     `RunContext.check()` (`JobStore.stop_reason`: one MGET of the job's cancel
     key and the halt key) right before every DELETE (`pod_kill.kill_all`), and
     while it sleeps towards the next kill it checks again every
     `CANCEL_POLL_SECONDS` (0.2 s). With kills every 100 ms the checks therefore
     come once per kill, and the gaps between a job's consecutive kills before T
     in the sim's ground truth are the gaps between its checks (as an upper
     bound: the check at the start of each sleep follows the previous DELETE by
     its call time, `check -> DELETE landed` in the table). `parse_args` refuses
     kill intervals of 0.2 s or more, for which this would not hold;
   - the round trip of the check: `JobStore.stop_reason` timed 1,000 times on the
     same Redis (next to a bare `GET` of the halt key).
   The floor's p50/p95/max is the round trip's plus the interval's at the same
   quantile.
2. Selection cost. `pystol-sim` holding 10,000 pods (100 nodes) and, in the full
   run, 100,000 pods (1,000 nodes) in 100 deployments of one namespace; every
   pod carries `tier=crowd` (selects all) and `app=crowd-<i>` (selects 1%, a real
   user's case). Three sides run as fresh child processes on the same sim, in
   rotating order, and the medians are reported:
   - Pystol: a `python -c` child that imports Pystol (and
     `preload_client_modules()`, as a worker does before forking), then times
     `ClusterAccess.from_settings` with the sim's kubeconfig and
     `select_pods(..., Target(mode="all"), ..., project=slim_pod)`, as pod-kill selects;
   - the bare client: a `python -c` child that imports the kubernetes client's
     same modules, then times `new_client_from_config` and `list_namespaced_pod`
     with the same label selector and page size, `_preload_content=False` and
     `json.loads` of each page (the fast way FACTS.md gives for large lists);
   - kubectl: `kubectl get pods -n NS -l SEL -o name` (discovery cache warmed
     once).
   Like is compared with like. Whole process (spawn to exit, the process's peak
   RSS from `os.wait4`'s `ru_maxrss`, its CPU): Pystol's child against kubectl.
   In-process (after the imports: time, and `ru_maxrss` minus the RSS after the
   imports): Pystol's `select_pods` against the bare client's list. Also the HTTP
   requests each made (`/_sim/requests`, reset before each run; it counts API
   resource requests, not discovery) and the sim's CPU per selection.

Why real processes and the simulator's ground truth: a halt is only as fast as
the slowest worker's next Kubernetes call, which no in-process test can see, and
the sim records when each DELETE actually landed. Why the same sim for every
selection side: the sim's own list cost is then identical for all of them, so the
ratios show what Pystol adds.

Run from the repository root:

    .venv/bin/python -m bench.safety            # 100 halts, 10k and 100k pods
    .venv/bin/python -m bench.safety --smoke    # CI: 3 halts, 10k pods, 2 reps

Results are printed as a table and written as JSON to `bench/results/` (see
`bench/results_file.py`); `--render FILE` prints an earlier results file again.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import itertools
import json
import os
import random
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from bench import UNREACHED_RATE_LIMITS
from bench.pipeline import (
    Proc,
    cpu_seconds,
    free_port,
    http_ready,
    spawn,
    start_redis,
    summary,
    worker_ready,
)
from bench.results_file import Provenance, Row, default_output, render, report
from pystol_worker.safety.job_context import CANCEL_POLL_SECONDS

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
KUBECTL = REPO_ROOT / ".tools" / "bin" / "kubectl"
MIB = 1024 * 1024

TOKEN = "safety-" + "0" * 24
SERVING = "pystol-sim: serving "

# --- halt latency
HALT_NS = "safety"
VICTIMS = ("victim-a", "victim-b")
HALT_SIM_SPEED = 10.0
# Simulated seconds (divided by the speed): a killed pod is replaced and Ready in ~0.1 s.
HALT_TIMINGS = {"schedule_seconds": 0.0, "start_seconds": 0.5, "ready_seconds": 0.5,
                "terminate_seconds": 0.5}
HALT_WARMUP_RUNS = 1
# Once both jobs are terminal their workers have returned from every DELETE call, so every
# kill has landed in the sim's truth; this only leaves room for the sim's own bookkeeping.
HALT_SETTLE_SECONDS = 0.2
HALT_DELAY_MIN_SECONDS = 0.1  # after both jobs injected, before T (plus a random phase)
LATE_KILL_SECONDS = 1.0  # a kill later than T + this fails the check (as tests/integration do)
JOB_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.005
REDIS_RTT_CALLS = 1000

# --- selection cost
SELECT_NS = "crowd"
SELECT_DEPLOYMENTS = 100
ALL_SELECTOR = "tier=crowd"
ONE_PERCENT_SELECTOR = "app=crowd-7"
CHILD_TIMEOUT_SECONDS = 900.0
PAGE_SIZE = 500  # pystol_worker.kube.cluster_access.PAGE_SIZE and kubectl's --chunk-size default

# Pystol's side of the selection, run by a fresh interpreter:
# argv = kubeconfig, namespace, label selector. Prints one JSON line. "seconds" and
# "peak_increase" are the in-process figures (after the imports).
SELECT_CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
import pystol_worker.kube.cluster_access as kube_access
from pystol_worker.kube.cluster_access import ClusterAccess, preload_client_modules
from pystol_worker.core.model import Target
from pystol_worker.faults.pod_selection import select_pods, slim_pod
from pystol_worker.core.settings import Settings
preload_client_modules()  # what a worker does before forking: not part of a selection

def vm(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

class TimedJson:  # instrumentation: time spent parsing pages, nothing else changes
    parse_seconds = 0.0
    pages = 0
    @classmethod
    def loads(cls, data, **kwargs):
        t0 = time.perf_counter()
        try:
            return json.loads(data, **kwargs)
        finally:
            cls.parse_seconds += time.perf_counter() - t0
            cls.pages += 1
    dumps = staticmethod(json.dumps)

kube_access.json = TimedJson
imported = time.perf_counter()
rss_after_imports = vm("VmRSS")
kubeconfig, namespace, selector = sys.argv[1:4]

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

cpu0 = cpu()
t0 = time.perf_counter()
settings = Settings(kubeconfig=kubeconfig)
cluster = ClusterAccess.from_settings(settings)
waits = []
acquire = cluster.limiter.acquire
def timed_acquire():
    waited = acquire()
    waits.append(waited)
    return waited
cluster.limiter.acquire = timed_acquire
t1 = time.perf_counter()
selection = select_pods(cluster, Target(namespaces=[namespace], label_selector=selector,
                                        mode="all"), settings, project=slim_pod)
t2 = time.perf_counter()
cpu2 = cpu()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({
    "matched": selection.matched, "chosen": len(selection.chosen),
    "excluded": selection.excluded,
    "seconds": t2 - t0, "client_seconds": t1 - t0, "select_seconds": t2 - t1,
    "import_seconds": imported - started, "cpu_seconds": cpu2 - cpu0,
    "parse_seconds": TimedJson.parse_seconds, "pages": TimedJson.pages,
    "limiter_wait_seconds": sum(waits), "limiter_calls": len(waits),
    "rss_after_imports": rss_after_imports, "peak_rss": peak,
    "peak_increase": peak - rss_after_imports, "vm_hwm": vm("VmHWM")}))
"""

# The in-process baseline of the selection, run by a fresh interpreter: the kubernetes
# client alone, listing the same pods the fast way (raw pages, json.loads), with the same
# page size and the same client modules imported first.
# argv = kubeconfig, namespace, label selector, page size. Prints one JSON line.
CLIENT_CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
from kubernetes import config
from kubernetes.client import AppsV1Api, CoreV1Api  # what preload_client_modules imports

def vm(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

imported = time.perf_counter()
rss_after_imports = vm("VmRSS")
kubeconfig, namespace, selector, page_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

cpu0 = cpu()
t0 = time.perf_counter()
core = CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
items, token, pages = [], None, 0
while True:
    kwargs = {"label_selector": selector, "limit": page_size, "_preload_content": False}
    if token:
        kwargs["_continue"] = token
    page = json.loads(core.list_namespaced_pod(namespace, **kwargs).data)
    pages += 1
    items.extend(page.get("items") or ())
    token = (page.get("metadata") or {}).get("continue")
    if not token:
        break
t1 = time.perf_counter()
cpu1 = cpu()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({
    "matched": len(items), "pages": pages, "seconds": t1 - t0,
    "import_seconds": imported - started, "cpu_seconds": cpu1 - cpu0,
    "rss_after_imports": rss_after_imports, "peak_rss": peak,
    "peak_increase": peak - rss_after_imports}))
"""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    smoke: bool
    halt_runs: int
    replicas: int
    kill_seconds: float
    concurrency: int
    sizes: tuple[int, ...]
    select_reps: int
    skip_halt: bool
    skip_select: bool

    @property
    def kill_interval(self) -> float:
        return self.kill_seconds / self.replicas


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.safety",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="small run for CI: 3 halts, 10,000 pods, 2 reps")
    parser.add_argument("--halt-runs", type=int,
                        help="timed halts (default 100; 3 with --smoke)")
    parser.add_argument("--replicas", type=int, default=200,
                        help="replicas of each victim deployment = kills per job (default 200)")
    parser.add_argument("--kill-seconds", type=float, default=20.0,
                        help="each job's duration: its kills are spread uniformly over it "
                        "(default 20, i.e. one kill per ~100 ms with 200 replicas)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="worker concurrency (default 2: both jobs run at once)")
    parser.add_argument("--sizes", type=str,
                        help="comma-separated pod counts for the selection runs "
                        "(default 10000,100000; 10000 with --smoke); multiples of 100")
    parser.add_argument("--select-reps", type=int,
                        help="timed selections per side, selector and size (default 5; 2 "
                        "with --smoke)")
    parser.add_argument("--skip-halt", action="store_true", help="only the selection part")
    parser.add_argument("--skip-select", action="store_true", help="only the halt part")
    parser.add_argument("--output", type=Path, help="JSON results file (default "
                        "bench/results/safety.json, safety_smoke.json with --smoke)")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: print the table of an earlier results file")
    return parser


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace
                     ) -> tuple[Config, Path]:
    smoke = bool(args.smoke)
    sizes_text = args.sizes or ("10000" if smoke else "10000,100000")
    try:
        sizes = tuple(int(part) for part in sizes_text.split(",") if part.strip())
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {sizes_text!r}")
    cfg = Config(
        smoke=smoke,
        halt_runs=args.halt_runs or (3 if smoke else 100),
        replicas=args.replicas,
        kill_seconds=args.kill_seconds,
        concurrency=args.concurrency,
        sizes=sizes,
        select_reps=args.select_reps or (2 if smoke else 5),
        skip_halt=bool(args.skip_halt),
        skip_select=bool(args.skip_select),
    )
    if min(cfg.halt_runs, cfg.replicas, cfg.concurrency, cfg.select_reps) < 1 \
            or cfg.kill_seconds <= 0:
        parser.error("counts and durations must be positive")
    if not cfg.skip_halt and cfg.kill_interval >= CANCEL_POLL_SECONDS:
        parser.error(f"--kill-seconds / --replicas must be below {CANCEL_POLL_SECONDS:g} s: "
                     "the halt floor reads the interval between halt checks from the gaps "
                     "between kills, which holds only while kills come faster than the "
                     "checks of a sleeping job")
    if any(size < SELECT_DEPLOYMENTS or size % SELECT_DEPLOYMENTS for size in cfg.sizes):
        parser.error(f"--sizes must be multiples of {SELECT_DEPLOYMENTS}")
    if not cfg.skip_select and not KUBECTL.exists():
        parser.error(f"{KUBECTL} is missing: run `bash scripts/dev.sh setup` "
                     "(or --skip-select)")
    output = args.output or default_output("safety", smoke)
    return cfg, output


# --------------------------------------------------------------------------- the simulator


@dataclass
class SimClient:
    """Talks to one `pystol-sim` over HTTPS with the token of the kubeconfig it wrote."""

    proc: Proc
    kubeconfig: Path
    host: str
    port: int
    token: str
    context: ssl.SSLContext

    @classmethod
    def from_kubeconfig(cls, proc: Proc, path: Path) -> SimClient:
        config = yaml.safe_load(path.read_text())
        cluster = config["clusters"][0]["cluster"]
        url = urllib.parse.urlsplit(cluster["server"])
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        return cls(proc, path, url.hostname or "127.0.0.1", url.port or 443,
                   config["users"][0]["user"]["token"], ssl.create_default_context(cadata=ca))

    def request(self, method: str, path: str, timeout: float = 120.0) -> Any:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                           context=self.context)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"sim {method} {path}: {response.status} {body[:200]!r}")
        return json.loads(body)

    def truth(self, namespace: str) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self.request("GET", f"/_sim/truth?namespace={namespace}")[
            "pods"]
        return pods

    def reset_requests(self) -> None:
        self.request("DELETE", "/_sim/requests")

    def requests(self) -> dict[str, int]:
        return {f"{row['verb']} {row['resource']}": row["count"]
                for row in self.request("GET", "/_sim/requests")["requests"]}

    def healed(self, namespace: str, app: str, replicas: int) -> bool:
        """The deployment has its replicas, all Ready, none terminating."""
        pods = self.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector="
                            f"app%3D{app}")["items"]
        ready = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp") and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or ())]
        return len(pods) == replicas and len(ready) == replicas

    def wait_healed(self, namespace: str, apps: tuple[str, ...], replicas: int,
                    timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for app in apps:
            while not self.healed(namespace, app, replicas):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"deployment {namespace}/{app} did not heal within "
                                       f"{timeout:.0f}s")
                time.sleep(0.05)


@contextmanager
def start_sim(name: str, document: dict[str, Any], speed: float, workdir: Path,
              timeout: float) -> Iterator[SimClient]:
    scenario = workdir / f"{name}.yaml"
    scenario.write_text(yaml.safe_dump(document, sort_keys=False))
    kubeconfig = workdir / f"{name}.kubeconfig"
    with spawn(name, [sys.executable, "-m", "pystol_sim", "--scenario", str(scenario),
                      "--port", "0", "--kubeconfig", str(kubeconfig), "--speed", str(speed)],
               workdir) as proc:
        proc.wait_for(lambda: SERVING in proc.text(), timeout, "serving line")
        yield SimClient.from_kubeconfig(proc, kubeconfig)


# --------------------------------------------------------------------------- statistics


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ts(value: datetime.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


# --------------------------------------------------------------------------- 1. halt latency


def halt_scenario(cfg: Config) -> dict[str, Any]:
    per_node = cfg.replicas * len(VICTIMS) // 4 + 50
    return {
        "name": "safety-halt",
        "timings": HALT_TIMINGS,
        "nodes": [{"name_prefix": "node", "count": 4, "capacity": {"pods": per_node}}],
        "namespaces": [HALT_NS],
        "deployments": [{"name": victim, "namespace": HALT_NS, "replicas": cfg.replicas}
                        for victim in VICTIMS],
    }


def kill_spec(victim: str, cfg: Config) -> dict[str, Any]:
    return {"action": "pod-kill",
            "target": {"namespaces": [HALT_NS], "label_selector": f"app={victim}",
                       "mode": "all"},
            "duration": f"{cfg.kill_seconds:g}s", "params": {"distribution": "uniform"},
            "recovery_timeout": "30s", "on_conflict": "reject"}


class ApiClient:
    """`pystol api` over plain HTTP with the benchmark's bearer token."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Authorization": f"Bearer {TOKEN}"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, json.loads(raw) if raw else None


@contextmanager
def halt_stack(cfg: Config, workdir: Path) -> Iterator[tuple[SimClient, ApiClient, str]]:
    with ExitStack() as stack:
        _, redis_url = stack.enter_context(start_redis(workdir))
        sim = stack.enter_context(start_sim("sim-halt", halt_scenario(cfg), HALT_SIM_SPEED,
                                            workdir, 60))
        sim.wait_healed(HALT_NS, VICTIMS, cfg.replicas)
        env = {"PYSTOL_REDIS_URL": redis_url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               "PYSTOL_API_TOKENS": TOKEN, "PYSTOL_API_WORKERS": "2",
               "PYSTOL_WORKER_CONCURRENCY": str(cfg.concurrency), **UNREACHED_RATE_LIMITS}
        port = free_port()
        api = stack.enter_context(spawn("pystol-api", [sys.executable, "-m", "pystol_api.cli",
                                                       "api"], workdir,
                                        dict(env, PYSTOL_API_BIND=f"127.0.0.1:{port}")))
        api.wait_for(http_ready(port), 60, "/readyz")
        worker = stack.enter_context(spawn(
            "pystol-worker", [sys.executable, "-m", "pystol_api.cli", "worker",
                              "--concurrency", str(cfg.concurrency), "--pool", "prefork"],
            workdir, env))
        worker.wait_for(worker_ready(worker), 60, "'ready.'")
        yield sim, ApiClient(port), redis_url


def redis_round_trips(redis_url: str, job_id: str) -> dict[str, Any]:
    """The halt check's cost: a bare GET of the key, and Pystol's own check (stop_reason)."""
    from pystol_worker.store.job_store import HALT_KEY, JobStore

    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    out: dict[str, Any] = {}
    for name, call in (("get", lambda: client.get(HALT_KEY)),
                       ("stop_reason", lambda: store.stop_reason(job_id))):
        for _ in range(50):
            call()
        samples = []
        for _ in range(REDIS_RTT_CALLS):
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        out[name] = summary(samples)
    client.close()
    return out


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(POLL_SECONDS * 4)


def one_halt(cfg: Config, sim: SimClient, api: ApiClient, store: Any, rng: random.Random
             ) -> dict[str, Any]:
    """Start two injecting jobs, halt, and read what happened from the sim's truth."""
    from pystol_worker.safety.target_locks import PREFIX as LOCK_PREFIX

    sim.wait_healed(HALT_NS, VICTIMS, cfg.replicas)
    # The previous halt's jobs release their target locks just after they end; the jobs
    # here ask `on_conflict: reject`, so start them only once nothing is locked.
    wait_until(lambda: next(store.redis.scan_iter(f"{LOCK_PREFIX}*"), None) is None,
               JOB_TIMEOUT_SECONDS, "target locks of the previous halt released")
    began = time.time()
    job_ids: dict[str, str] = {}
    for victim in VICTIMS:
        status, body = api.call("POST", "/api/v1/jobs", kill_spec(victim, cfg))
        if status != 202:
            raise RuntimeError(f"POST /api/v1/jobs: {status} {body}")
        job_ids[victim] = body["id"]

    def injected() -> bool:
        for job_id in job_ids.values():
            if store.get(job_id, with_timeline=False).status.terminal:
                raise RuntimeError(f"job {job_id} ended before the halt: "
                                   f"{store.get(job_id).reason}")
            if not any(event.kind == "injected" for event in store.timeline(job_id)):
                return False
        return True
    wait_until(injected, JOB_TIMEOUT_SECONDS, "both jobs injected")
    # A random phase over two kill intervals: the halt lands anywhere in the kill schedule.
    time.sleep(HALT_DELAY_MIN_SECONDS + rng.uniform(0.0, 2 * cfg.kill_interval))

    halt_at = time.time()
    status, state = api.call("POST", "/api/v1/halt", {"reason": "bench.safety"})
    answered = time.time()
    if status != 200 or not state.get("halted"):
        raise RuntimeError(f"POST /api/v1/halt: {status} {state}")

    records: dict[str, Any] = {}

    def terminal() -> bool:
        for victim, job_id in job_ids.items():
            if victim not in records:
                record = store.get(job_id, with_timeline=False)
                if record.status.terminal:
                    records[victim] = record
        return len(records) == len(job_ids)
    wait_until(terminal, JOB_TIMEOUT_SECONDS, "both jobs terminal after the halt")
    time.sleep(HALT_SETTLE_SECONDS)
    truth = sim.truth(HALT_NS)
    status, _ = api.call("DELETE", "/api/v1/halt")
    if status != 200:
        raise RuntimeError(f"DELETE /api/v1/halt: {status}")

    deletions: dict[str, list[float]] = {victim: sorted(
        pod["deleted"] for pod in truth
        if pod["owner_name"] == victim and pod["deleted"] and pod["deleted"] >= began)
        for victim in VICTIMS}
    every = [at for times in deletions.values() for at in times]
    # The interval between a job's halt checks: its kills come right after a check each.
    gaps = [later - earlier for times in deletions.values()
            for earlier, later in itertools.pairwise(times) if later < halt_at]
    changes = {victim: len(records[victim].result.changes) for victim in VICTIMS}
    # For each kill that landed after T: when its worker passed the halt check (the change's
    # `at`, taken right after the check, before the DELETE) and when the sim saw the DELETE.
    checked = {change.target.uid: ts(change.at) for record in records.values()
               for change in record.result.changes}
    late = sorted(({"victim": pod["owner_name"], "checked_s": (checked.get(pod["uid"]) or 0.0)
                    - halt_at, "deleted_s": pod["deleted"] - halt_at}
                   for pod in truth if pod["owner_name"] in VICTIMS and pod["deleted"]
                   and pod["deleted"] > halt_at), key=lambda kill: kill["deleted_s"])
    finished = [ts(record.finished_at) for record in records.values()]
    return {
        "job_ids": job_ids,
        "statuses": {victim: records[victim].status.value for victim in VICTIMS},
        "reasons": {victim: records[victim].reason for victim in VICTIMS},
        "kills": {victim: len(times) for victim, times in deletions.items()},
        "changes_recorded": changes,
        "kills_after_halt": sum(1 for at in every if at > halt_at),
        "kills_after_answer": sum(1 for at in every if at > answered),
        "after_halt": late,
        "late_kills": sum(1 for at in every if at > halt_at + LATE_KILL_SECONDS),
        # Signed: negative when the last kill landed before T.
        "latency_s": max(every) - halt_at if every else None,
        "post_answer_s": answered - halt_at,
        "terminal_s": max(at for at in finished if at is not None) - halt_at
        if all(at is not None for at in finished) else None,
        "gaps_s": gaps,
        # Every kill's window from its halt check to the sim seeing its DELETE: the most a
        # halt can lag when it lands just after a check.
        "check_to_deleted_s": [pod["deleted"] - checked[pod["uid"]] for pod in truth
                               if pod["uid"] in checked and pod["deleted"]
                               and checked[pod["uid"]] is not None],
    }


def halt_floor(round_trip: dict[str, Any], interval: dict[str, Any]) -> dict[str, Any]:
    """The physical floor at p50, p95 and max: the halt check's round trip plus the interval
    between a job's halt checks, each at that quantile (None where one was not measured)."""
    floor: dict[str, Any] = {}
    for q in ("p50", "p95", "max"):
        rtt, gap = round_trip.get(q), interval.get(q)
        floor[q] = rtt + gap if rtt is not None and gap is not None else None
    return floor


def bench_halt(cfg: Config, workdir: Path) -> dict[str, Any]:
    from pystol_worker.store.job_store import JobStore

    rng = random.Random(4)
    runs: list[dict[str, Any]] = []
    with halt_stack(cfg, workdir) as (sim, api, redis_url):
        store = JobStore(redis.Redis.from_url(redis_url))
        for index in range(-HALT_WARMUP_RUNS, cfg.halt_runs):
            run = one_halt(cfg, sim, api, store, rng)
            label = "warm-up" if index < 0 else f"{index + 1}/{cfg.halt_runs}"
            print(f"  halt {label}: latency {run['latency_s'] * 1000:+.1f} ms, "
                  f"terminal after {run['terminal_s'] * 1000:.0f} ms, "
                  f"{sum(run['kills'].values())} kills, {run['kills_after_halt']} after T, "
                  f"{run['statuses']}", flush=True)
            if index >= 0:
                runs.append(run)
        rtt = redis_round_trips(redis_url, runs[-1]["job_ids"][VICTIMS[0]])
        store.redis.close()
    interval = summary([gap for run in runs for gap in run["gaps_s"]])
    return {
        "runs": [{k: v for k, v in run.items() if k not in ("gaps_s", "check_to_deleted_s")}
                 for run in runs],
        "latency": summary([run["latency_s"] for run in runs if run["latency_s"] is not None]),
        "check_interval": interval,
        "redis": rtt,
        "floor": halt_floor(rtt["stop_reason"], interval),
        "check_to_deleted": summary([gap for run in runs for gap in run["check_to_deleted_s"]]),
        "terminal": summary([run["terminal_s"] for run in runs
                             if run["terminal_s"] is not None]),
        "post_answer": summary([run["post_answer_s"] for run in runs]),
        "planned_interval_s": cfg.kill_interval,
        "late_kills": sum(run["late_kills"] for run in runs),
        "kills_after_halt": sum(run["kills_after_halt"] for run in runs),
        "runs_with_kill_after_halt": sum(1 for run in runs if run["kills_after_halt"]),
        "kills_after_answer": sum(run["kills_after_answer"] for run in runs),
        "not_aborted": [run["statuses"] for run in runs
                        if any(s not in ("aborted", "cancelled")
                               for s in run["statuses"].values())],
    }


# --------------------------------------------------------------------------- 2. selection


def select_scenario(size: int) -> dict[str, Any]:
    nodes = max(1, size // 100)
    return {
        "name": f"safety-select-{size}",
        # Pods stay Pending for a day: the store is quiet while the lists run.
        "timings": {"start_seconds": 86_400},
        "nodes": [{"name_prefix": "node", "count": nodes,
                   "capacity": {"pods": max(110, size // nodes + 10)}}],
        "namespaces": [SELECT_NS],
        "deployments": [{"name_prefix": "crowd", "count": SELECT_DEPLOYMENTS,
                         "namespace": SELECT_NS, "replicas": size // SELECT_DEPLOYMENTS,
                         "labels": {"tier": "crowd"}}],
    }


def run_child(args: list[str], env: dict[str, str], stdout: Path
              ) -> tuple[float, resource.struct_rusage]:
    """Run a process to its end; its wall time and its own rusage (from `os.wait4`)."""
    stderr = stdout.with_suffix(".stderr")
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=REPO_ROOT)
    watchdog = threading.Timer(CHILD_TIMEOUT_SECONDS, process.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        watchdog.cancel()
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {process.returncode}:\n"
                           f"{stderr.read_text(errors='replace')[-2000:]}")
    return wall, usage


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYSTOL_")}
    env.update(PYTHONUNBUFFERED="1", **(extra or {}))
    return env


def pystol_select(sim: SimClient, selector: str, workdir: Path) -> dict[str, Any]:
    sim.reset_requests()
    cpu_before = cpu_seconds(sim.proc.pid)
    out = workdir / "pystol-select.json"
    wall, usage = run_child([sys.executable, "-c", SELECT_CHILD, str(sim.kubeconfig),
                             SELECT_NS, selector], child_env(), out)
    sim_cpu = cpu_seconds(sim.proc.pid) - cpu_before
    result: dict[str, Any] = json.loads(out.read_text().strip().splitlines()[-1])
    requests = sim.requests()
    result.update(process_seconds=wall, process_max_rss=usage.ru_maxrss * 1024,
                  process_cpu_seconds=usage.ru_utime + usage.ru_stime,
                  requests=requests, total_requests=sum(requests.values()), sim_cpu_s=sim_cpu)
    return result


def client_select(sim: SimClient, selector: str, workdir: Path) -> dict[str, Any]:
    """The in-process baseline: the bare kubernetes client listing the same pods."""
    sim.reset_requests()
    cpu_before = cpu_seconds(sim.proc.pid)
    out = workdir / "client-select.json"
    wall, usage = run_child([sys.executable, "-c", CLIENT_CHILD, str(sim.kubeconfig),
                             SELECT_NS, selector, str(PAGE_SIZE)], child_env(), out)
    sim_cpu = cpu_seconds(sim.proc.pid) - cpu_before
    result: dict[str, Any] = json.loads(out.read_text().strip().splitlines()[-1])
    requests = sim.requests()
    result.update(process_seconds=wall, process_max_rss=usage.ru_maxrss * 1024,
                  process_cpu_seconds=usage.ru_utime + usage.ru_stime,
                  requests=requests, total_requests=sum(requests.values()), sim_cpu_s=sim_cpu)
    return result


def kubectl_args(selector: str, cache: Path, verbose: bool = False) -> list[str]:
    args = [str(KUBECTL), "get", "pods", "-n", SELECT_NS, "-l", selector, "-o", "name",
            "--cache-dir", str(cache)]
    return [*args, "-v=6"] if verbose else args


def kubectl_select(sim: SimClient, selector: str, cache: Path, workdir: Path
                   ) -> dict[str, Any]:
    sim.reset_requests()
    cpu_before = cpu_seconds(sim.proc.pid)
    out = workdir / "kubectl-select.txt"
    wall, usage = run_child(kubectl_args(selector, cache),
                            child_env({"KUBECONFIG": str(sim.kubeconfig)}), out)
    sim_cpu = cpu_seconds(sim.proc.pid) - cpu_before
    with out.open("rb") as lines:
        matched = sum(1 for line in lines if line.startswith(b"pod/"))
    requests = sim.requests()
    return {"matched": matched, "seconds": wall, "peak_rss": usage.ru_maxrss * 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "requests": requests, "total_requests": sum(requests.values()),
            "sim_cpu_s": sim_cpu}


def kubectl_first_run(sim: SimClient, cache: Path, workdir: Path) -> dict[str, Any]:
    """Warm kubectl's discovery cache; count every request it sends (-v=6), discovery too."""
    out = workdir / "kubectl-first.txt"
    with out.open("wb") as stdout:
        done = subprocess.run(kubectl_args(ONE_PERCENT_SELECTOR, cache, verbose=True),
                              env=child_env({"KUBECONFIG": str(sim.kubeconfig)}),
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300,
                              check=False)
    sent = [line.split('url="', 1)[1].split('"', 1)[0] for line in done.stderr.splitlines()
            if '"Response"' in line and 'url="' in line]
    return {"exit": done.returncode, "requests_with_cold_cache": len(sent),
            "paths": sorted({urllib.parse.urlsplit(url).path for url in sent})}


SIDES = ("pystol", "client", "kubectl")
MEDIAN_KEYS = {
    "pystol": ("seconds", "select_seconds", "client_seconds", "parse_seconds",
               "limiter_wait_seconds", "import_seconds", "process_seconds", "peak_increase",
               "peak_rss", "rss_after_imports", "process_max_rss", "total_requests",
               "sim_cpu_s", "pages", "cpu_seconds", "process_cpu_seconds"),
    "client": ("seconds", "import_seconds", "process_seconds", "peak_increase", "peak_rss",
               "rss_after_imports", "process_max_rss", "total_requests", "sim_cpu_s",
               "pages", "cpu_seconds", "process_cpu_seconds"),
    "kubectl": ("seconds", "peak_rss", "total_requests", "sim_cpu_s", "cpu_seconds"),
}


def bench_selection(cfg: Config, size: int, workdir: Path) -> dict[str, Any]:
    nodes = max(1, size // 100)
    print(f"selection: {size} pods on {nodes} nodes", flush=True)
    cases = {"all": (ALL_SELECTOR, size), "1%": (ONE_PERCENT_SELECTOR,
                                                 size // SELECT_DEPLOYMENTS)}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        case: {side: [] for side in SIDES} for case in cases}
    started = time.monotonic()
    with start_sim(f"sim-select-{size}", select_scenario(size), 1.0, workdir,
                   60 + size / 100) as sim:
        startup = time.monotonic() - started
        sim_rss = Path(f"/proc/{sim.proc.pid}/status").read_text()
        print(f"  sim serving after {startup:.1f} s", flush=True)
        cache = workdir / f"kubectl-cache-{size}"
        first = kubectl_first_run(sim, cache, workdir)
        # Warm the page cache (the imports) of both Python sides; not measured.
        pystol_select(sim, ONE_PERCENT_SELECTOR, workdir)
        client_select(sim, ONE_PERCENT_SELECTOR, workdir)
        for rep in range(cfg.select_reps):
            for case, (selector, expected) in cases.items():
                shift = rep % len(SIDES)  # rotate the order: each side goes first in turn
                for side in SIDES[shift:] + SIDES[:shift]:
                    if side == "pystol":
                        result = pystol_select(sim, selector, workdir)
                    elif side == "client":
                        result = client_select(sim, selector, workdir)
                    else:
                        result = kubectl_select(sim, selector, cache, workdir)
                    result["expected"] = expected
                    samples[case][side].append(result)
                    whole_rss = result.get("process_max_rss") or result["peak_rss"]
                    print(f"  {case:>3} {side:<7} rep {rep + 1}: {result['seconds']:.2f} s "
                          f"({result.get('process_seconds', result['seconds']):.2f} s whole "
                          f"process), {result['matched']} pods, peak "
                          f"{whole_rss / MIB:.0f} MiB, {result['total_requests']} requests",
                          flush=True)
    vm = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in sim_rss.splitlines()
          if line.startswith(("VmRSS", "VmHWM"))}
    out: dict[str, Any] = {"size": size, "nodes": nodes, "sim_startup_s": startup,
                           "sim_rss": vm.get("VmRSS"), "kubectl_first_run": first,
                           "cases": {}}
    for case, sides in samples.items():
        data: dict[str, Any] = {"selector": cases[case][0], "expected": cases[case][1]}
        for side, rows in sides.items():
            data[side] = {key: median([row[key] for row in rows if row.get(key) is not None])
                          for key in MEDIAN_KEYS[side]}
            data[f"{side}_requests"] = rows[-1]["requests"] if rows else {}
        data["wrong_counts"] = [f"{side} matched {row['matched']} of {row['expected']}"
                                for side, rows in sides.items() for row in rows
                                if row["matched"] != row["expected"]]
        data["samples"] = sides
        out["cases"][case] = data
    return out


# --------------------------------------------------------------------------- report


def build_rows(results: dict[str, Any]) -> list[Row]:
    ms = 1000.0

    def scaled(value: float | None, factor: float) -> float | None:
        return value * factor if value is not None else None

    rows: list[Row] = []
    halt = results.get("halt")
    if halt:
        lat, floor, interval = halt["latency"], halt["floor"], halt["check_interval"]
        get, check = halt["redis"]["get"], halt["redis"]["stop_reason"]
        term, landed = halt["terminal"], halt["check_to_deleted"]
        rows += [
            Row("halt: T -> last kill landed p50", "ms", scaled(lat.get("p50"), ms),
                scaled(floor["p50"], ms),
                note="signed (< 0: the last kill landed before T); baseline: the floor, "
                "halt-check round trip + interval between a job's halt checks, same quantile"),
            Row("halt: T -> last kill landed p95", "ms", scaled(lat.get("p95"), ms),
                scaled(floor["p95"], ms)),
            Row("halt: T -> last kill landed max", "ms", scaled(lat.get("max"), ms),
                scaled(floor["max"], ms)),
            Row("halt: halts with a kill landing after T", "n",
                halt["runs_with_kill_after_halt"], None,
                note=f"of {lat.get('n', 0)} halts"),
            Row("halt: kill's halt check -> DELETE landed p50", "ms",
                scaled(landed.get("p50"), ms), None,
                note="a kill past its check when the halt lands still lands"),
            Row("halt: kill's halt check -> DELETE landed max", "ms",
                scaled(landed.get("max"), ms), None),
            Row("floor part: interval between a job's halt checks p50", "ms", None,
                scaled(interval.get("p50"), ms),
                note="gaps between a job's consecutive kills before T (sim truth)"),
            Row("floor part: interval between a job's halt checks max", "ms", None,
                scaled(interval.get("max"), ms)),
            Row("halt check round trip p50", "ms", scaled(check.get("p50"), ms),
                scaled(get.get("p50"), ms),
                note="pystol: JobStore.stop_reason (MGET, the floor's part); "
                "baseline: GET of the halt key"),
            Row("halt check round trip p95", "ms", scaled(check.get("p95"), ms),
                scaled(get.get("p95"), ms)),
            Row("halt: POST answered p50", "ms", scaled(halt["post_answer"].get("p50"), ms),
                None),
            Row("halt: T -> both jobs terminal p50", "ms", scaled(term.get("p50"), ms), None),
            Row("halt: T -> both jobs terminal p95", "ms", scaled(term.get("p95"), ms), None),
        ]
    for size_result in results.get("selection", []):
        size = size_result["size"]
        for case, data in size_result["cases"].items():
            py, kc, bare = data["pystol"], data["kubectl"], data.get("client") or {}
            label = f"select {case} of {size:,} ({data['expected']:,} pods)"
            rows += [
                Row(f"{label}: whole process, spawn to exit", "s", py["process_seconds"],
                    kc["seconds"], note="pystol: fresh python, imports + select_pods; "
                    "baseline: kubectl get -o name"),
                Row(f"{label}: whole process, peak RSS", "MiB",
                    scaled(py["process_max_rss"], 1 / MIB), scaled(kc["peak_rss"], 1 / MIB),
                    note="ru_maxrss of each process (os.wait4)"),
                Row(f"{label}: whole process, CPU", "s", py["process_cpu_seconds"],
                    kc["cpu_seconds"], note="user + system"),
                Row(f"{label}: in-process time", "s", py["seconds"], bare.get("seconds"),
                    note="after the imports; pystol: select_pods; baseline: bare kubernetes "
                    "client list, raw pages + json.loads"),
                Row(f"{label}: in-process peak memory", "MiB",
                    scaled(py["peak_increase"], 1 / MIB),
                    scaled(bare.get("peak_increase"), 1 / MIB),
                    note="ru_maxrss - RSS after the imports, both sides"),
                Row(f"{label}: HTTP requests", "n", py["total_requests"],
                    kc["total_requests"], note="baseline: kubectl"),
                Row(f"{label}: sim CPU", "s", py["sim_cpu_s"], kc["sim_cpu_s"],
                    note="baseline: kubectl"),
            ]
    return rows


def checks(cfg: Config, results: dict[str, Any]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    halt = results.get("halt")
    if halt:
        out += [
            (f"halt: {len(halt['runs'])} of {cfg.halt_runs} halts timed", len(halt["runs"])
             == cfg.halt_runs),
            (f"halt: every job ended aborted or cancelled ({len(halt['not_aborted'])} halts "
             "did not)", not halt["not_aborted"]),
            (f"halt: no kill later than T + {LATE_KILL_SECONDS:g} s ({halt['late_kills']})",
             halt["late_kills"] == 0),
        ]
    for size_result in results.get("selection", []):
        wrong = [w for case in size_result["cases"].values() for w in case["wrong_counts"]]
        out.append((f"select {size_result['size']:,}: every run matched the expected pods "
                    f"({len(wrong)} did not)", not wrong))
    return out


# --------------------------------------------------------------------------- main


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"loadavg_start": os.getloadavg()}
    if not cfg.skip_halt:
        print(f"halt: {cfg.halt_runs} halts (+{HALT_WARMUP_RUNS} warm-up), 2 jobs x "
              f"{cfg.replicas} kills over {cfg.kill_seconds:g} s each "
              f"(one per {cfg.kill_interval * 1000:.0f} ms), worker concurrency "
              f"{cfg.concurrency}", flush=True)
        started = time.monotonic()
        results["halt"] = bench_halt(cfg, workdir)
        results["halt"]["wall_seconds"] = time.monotonic() - started
    if not cfg.skip_select:
        started = time.monotonic()
        results["selection"] = [bench_selection(cfg, size, workdir) for size in cfg.sizes]
        results["selection_wall_seconds"] = time.monotonic() - started
    results["loadavg_end"] = os.getloadavg()
    return results


def kubectl_version() -> str | None:
    if not KUBECTL.exists():
        return None
    done = subprocess.run([str(KUBECTL), "version", "--client", "-o", "json"],
                          capture_output=True, text=True, check=False)
    try:
        version: str = json.loads(done.stdout)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError):
        return None
    return version


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render)
    cfg, output = config_from_args(parser, args)
    if shutil.which("redis-server") is None and not cfg.skip_halt:
        print("redis-server is not on PATH (scripts/dev.sh installs it)", file=sys.stderr)
        return 2
    provenance = Provenance.now()
    print(f"safety: {'smoke' if cfg.smoke else 'full'} run on {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-safety-") as tmp:
        results = run(cfg, Path(tmp))
    return report("safety", output, provenance, build_rows(results), checks(cfg, results),
                  results, config=asdict(cfg), machine={"kubectl": kubectl_version()})


if __name__ == "__main__":
    sys.exit(main())
