"""Dashboard cluster view at steady state: what an open dashboard costs the network and the
cluster when nothing changes.

The dashboard's cluster view polls `GET /api/v1/cluster` once a second. On a 2,000-pod
cluster the answer is ~390 KB of JSON. This benchmark runs the real processes (a
`redis-server`, `pystol-sim` with `--pods` pods on `--nodes` nodes, all Ready and then
left alone, and `pystol api`: gunicorn with 2 workers) and compares two ways of viewing:

- **pystol**: a poller that behaves like the dashboard now does: a conditional GET
  every second (`If-None-Match` with the last `ETag`, `Accept-Encoding: gzip`), against
  `pystol api`, whose topology is read once for every API process (Redis, single-flight).
- **baseline**: today's dashboard against today's view: an unconditional GET every
  second without gzip, against a server defined here that serves the same topology the
  way the view did before (`read_topology` per API process, kept 0.5 s per process,
  `Cache-Control: no-store`, no tag, no gzip), run by the same gunicorn configuration
  (`ApiServer`, same number of workers). It has no bearer check; that costs microseconds.

After a warm-up (10 viewers on each server for a few seconds, so every API process has its
cluster client), each phase is measured for `--seconds` of steady state after a viewer's
first answer:

- bytes per second per viewer (status line + headers + body as received), with 1 and
  with 10 viewers (each on its own keep-alive connection, starts spread over a second);
- cluster reads per second: the `list nodes` requests the sim served (each read of the
  topology lists nodes once, then pods, ReplicaSets and the three workload kinds),
  and all Kubernetes requests per second, from the sim's own counters (`/_sim/requests`);
- latency: a viewer's first (full) answer, and each steady-state poll (a 304 for pystol,
  the full body for the baseline).

    .venv/bin/python -m bench.dashboard            # 2,000 pods on 20 nodes, 30 s phases
    .venv/bin/python -m bench.dashboard --smoke    # 200 pods on 5 nodes, 5 s phases

Results: a table on stdout and JSON in bench/results/dashboard.json (dashboard_smoke.json
with --smoke), written by `bench/results_file.py`; `--render FILE` prints an earlier results
file again. Exit status 1 when a check fails: the 10 KB/s per viewer target, more than one
cluster read per `SHARED_SECONDS` with 10 viewers, a failed poll, or a gzip body that is
not the plain body.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import math
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import UNREACHED_RATE_LIMITS
from bench.pipeline import (
    Proc,
    SimEndpoint,
    free_port,
    http_ready,
    serve_scenario,
    spawn,
    start_redis,
    summary,
)
from bench.results_file import Provenance, Row, default_output, render, report
from pystol_api.http.routes.cluster import SHARED_SECONDS

TOKEN = "bench-dashboard-" + "0" * 16
NAMESPACES = 4
DEPLOYMENTS_PER_NAMESPACE = 5
TIMINGS = {"schedule_seconds": 0.0, "start_seconds": 0.2, "ready_seconds": 0.2,
           "terminate_seconds": 0.2}
SIM_SPEED = 10.0
PERIOD_SECONDS = 1.0  # the dashboard's poll
WARMUP_SECONDS = 3.0
BASELINE_CACHE_SECONDS = 0.5  # the view's per-process cache before issue 16
TARGET_BYTES_PER_SECOND = 10 * 1024
VIEW_PATH = "/api/v1/cluster"
BASELINE_CHILD = "_baseline"
TOPOLOGY_LISTS = ("nodes", "pods", "replicasets", "deployments", "statefulsets", "daemonsets")


@dataclass(frozen=True)
class Config:
    pods: int
    nodes: int
    seconds: float
    viewers: int
    api_workers: int
    smoke: bool


# --------------------------------------------------------------------------- the baseline server


def baseline_app(settings: Any) -> Any:
    """The cluster view as it was before issue 16, alone: each API process reads the
    topology itself (`read_topology`, the same six paged lists) and keeps the body for
    `BASELINE_CACHE_SECONDS`; every answer is the whole body, `no-store`, no tag, no gzip."""
    import functools
    import types

    from flask import Flask, Response

    from pystol_api.http.routes.cluster import read_topology
    from pystol_api.http.routes.common import LazyCluster
    from pystol_worker.kube.cluster_access import ClusterAccess
    from pystol_worker.store.job_store import JobStore
    from pystol_worker.store.redis_connection import redis_client

    services = types.SimpleNamespace(
        cluster=LazyCluster(functools.partial(ClusterAccess.from_settings, settings)),
        store=JobStore(redis_client(settings)))
    lock = threading.Lock()
    cached: dict[str, Any] = {"at": -1e9, "body": b""}
    app = Flask("bench-dashboard-baseline")

    @app.get("/readyz")
    def ready() -> Response:
        return Response("ok")

    @app.get(VIEW_PATH)
    def view() -> Response:
        with lock:
            if time.monotonic() - cached["at"] > BASELINE_CACHE_SECONDS:
                cached["body"] = read_topology(services).model_dump_json()  # type: ignore[arg-type]
                cached["at"] = time.monotonic()
            body = cached["body"]
        response = Response(body, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def serve_baseline(bind: str, workers: int) -> None:
    """gunicorn exactly as `pystol api` runs it (same options), serving `baseline_app`."""
    from pystol_api.http.wsgi_server import ApiServer
    from pystol_worker.core.settings import Settings

    settings = Settings(api_bind=bind, api_workers=workers, api_tokens=[TOKEN])
    ApiServer(settings, app_factory=baseline_app).run()


# --------------------------------------------------------------------------- processes


def scenario_document(cfg: Config) -> dict[str, Any]:
    deployments = NAMESPACES * DEPLOYMENTS_PER_NAMESPACE
    replicas = max(1, cfg.pods // deployments)
    return {
        "name": "dashboard-bench",
        "timings": TIMINGS,
        "nodes": [{"name_prefix": "node", "count": cfg.nodes,
                   "capacity": {"cpu": "256", "memory": "1Ti",
                                "pods": 2 * math.ceil(cfg.pods / cfg.nodes) + 10}}],
        "namespaces": [f"team-{n}" for n in range(NAMESPACES)],
        "deployments": [{"name": f"app-{d}", "namespace": f"team-{n}", "replicas": replicas}
                        for n in range(NAMESPACES) for d in range(DEPLOYMENTS_PER_NAMESPACE)],
    }


def ready_pods(sim: SimEndpoint) -> int:
    pods = sim.get("/api/v1/pods")["items"]
    return sum(1 for pod in pods if not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ()))


@contextmanager
def start_sim(cfg: Config, workdir: Path) -> Iterator[SimEndpoint]:
    with serve_scenario(scenario_document(cfg), workdir, SIM_SPEED, 120) as (_, sim):
        expected = scenario_document(cfg)
        want = sum(d["replicas"] for d in expected["deployments"])
        deadline = time.monotonic() + 120
        while ready_pods(sim) < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sim's {want} pods were not all Ready within 120 s")
            time.sleep(0.5)
        yield sim


@contextmanager
def start_server(name: str, args: list[str], env: dict[str, str], workdir: Path
                 ) -> Iterator[tuple[Proc, int]]:
    port = free_port()
    with spawn(name, args, workdir, dict(env, PYSTOL_API_BIND=f"127.0.0.1:{port}")) as proc:
        proc.wait_for(http_ready(port), 60, "/readyz")
        yield proc, port


def sim_requests(sim: SimEndpoint) -> dict[str, int]:
    """The sim's request counts since the last reset, as `verb resource` -> count."""
    counts = sim.get("/_sim/requests")["requests"]
    return {f"{entry['verb']} {entry['resource']}": int(entry["count"]) for entry in counts}


def reset_sim_requests(sim: SimEndpoint) -> None:
    conn = http.client.HTTPSConnection(sim.host, sim.port, timeout=30, context=sim.context)
    try:
        conn.request("DELETE", "/_sim/requests",
                     headers={"Authorization": f"Bearer {sim.token}"})
        conn.getresponse().read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- viewers


@dataclass
class Poll:
    at: float
    status: int
    wire_bytes: int
    body_bytes: int
    latency: float


@dataclass
class Viewer:
    """One open dashboard: a keep-alive connection polling the view every PERIOD_SECONDS."""

    port: int
    conditional: bool  # If-None-Match + gzip (pystol) or neither (baseline)
    polls: list[Poll] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    last_body: bytes = b""
    last_headers: dict[str, str] = field(default_factory=dict)

    def run(self, start: float, until: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        etag: str | None = None
        tick = start
        try:
            while tick < until:
                delay = tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                headers = {"Authorization": f"Bearer {TOKEN}"}
                if self.conditional:
                    headers["Accept-Encoding"] = "gzip"
                    if etag:
                        headers["If-None-Match"] = etag
                sent = time.monotonic()
                try:
                    conn.request("GET", VIEW_PATH, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as error:
                    self.errors.append(repr(error))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    tick += PERIOD_SECONDS
                    continue
                latency = time.monotonic() - sent
                status_line = f"HTTP/1.1 {response.status} {response.reason}\r\n"
                wire = len(status_line) + len(response.msg.as_bytes()) + len(body)
                self.polls.append(Poll(sent, response.status, wire, len(body), latency))
                if response.status == 200:
                    etag = response.getheader("ETag") or etag
                    self.last_body = body
                    self.last_headers = {k.lower(): v for k, v in response.getheaders()}
                elif response.status != 304:
                    self.errors.append(f"HTTP {response.status}: {body[:200]!r}")
                tick += PERIOD_SECONDS
        finally:
            conn.close()


def watch(port: int, conditional: bool, viewers: int, seconds: float, sim: SimEndpoint
          ) -> dict[str, Any]:
    """`viewers` viewers for one first answer each plus `seconds` of steady state; the sim's
    request counters cover the steady state only."""
    crowd = [Viewer(port, conditional) for _ in range(viewers)]
    now = time.monotonic()
    starts = [now + index * PERIOD_SECONDS / viewers for index in range(viewers)]
    # The first answers arrive during the first period; steady state is what follows it.
    steady_from = now + PERIOD_SECONDS
    until = steady_from + seconds
    threads = [threading.Thread(target=viewer.run, args=(start, until), daemon=True)
               for viewer, start in zip(crowd, starts, strict=True)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, steady_from - time.monotonic()))
    reset_sim_requests(sim)
    measured_from = time.monotonic()
    for thread in threads:
        thread.join(seconds + 60)
    window = time.monotonic() - measured_from
    requests = sim_requests(sim)
    topology_requests = sum(count for key, count in requests.items()
                            if key.split(" ")[0] == "list"
                            and key.split(" ")[1] in TOPOLOGY_LISTS)
    first = [viewer.polls[0] for viewer in crowd if viewer.polls]
    steady = [poll for viewer in crowd for poll in viewer.polls[1:]]
    per_viewer_bps = [sum(poll.wire_bytes for poll in viewer.polls[1:]) / seconds
                      for viewer in crowd]
    return {
        "viewers": viewers,
        "seconds": seconds,
        "window_seconds": window,
        "polls": len(steady),
        "statuses": {str(status): sum(1 for poll in steady if poll.status == status)
                     for status in sorted({poll.status for poll in steady})},
        "bytes_per_second_per_viewer": sum(per_viewer_bps) / len(per_viewer_bps),
        "bytes_per_second_per_viewer_max": max(per_viewer_bps),
        "cluster_reads": requests.get("list nodes", 0),
        "cluster_reads_per_second": requests.get("list nodes", 0) / window,
        "topology_requests": topology_requests,
        "kubernetes_requests_per_second": sum(requests.values()) / window,
        "sim_requests": requests,
        "first_answer_ms": summary([poll.latency * 1000 for poll in first]),
        "first_answer_bytes": first[0].wire_bytes if first else None,
        "steady_answer_ms": summary([poll.latency * 1000 for poll in steady]),
        "errors": [error for viewer in crowd for error in viewer.errors][:20],
        "error_count": sum(len(viewer.errors) for viewer in crowd),
        "full_body": crowd[0].last_body,
        "full_headers": crowd[0].last_headers,
    }


# --------------------------------------------------------------------------- driver


def run(cfg: Config) -> dict[str, Any]:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dash-")))
        _, redis_url = stack.enter_context(start_redis(workdir))
        print(f"sim: {cfg.pods} pods on {cfg.nodes} nodes …", file=sys.stderr)
        sim = stack.enter_context(start_sim(cfg, workdir))
        env = {"PYSTOL_REDIS_URL": redis_url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               "PYSTOL_API_TOKENS": TOKEN, "PYSTOL_API_WORKERS": str(cfg.api_workers),
               **UNREACHED_RATE_LIMITS}
        _, pystol_port = stack.enter_context(start_server(
            "pystol-api", [sys.executable, "-m", "pystol_api.cli", "api"], env, workdir))
        _, baseline_port = stack.enter_context(start_server(
            "baseline", [sys.executable, "-m", "bench.dashboard", BASELINE_CHILD,
                         str(cfg.api_workers)], env, workdir))
        # Warm-up, not recorded: every API process has built its cluster client (imported
        # `kubernetes`) and served the view once, so the phases measure steady state.
        for port, conditional in ((baseline_port, False), (pystol_port, True)):
            watch(port, conditional, cfg.viewers, WARMUP_SECONDS, sim)
            time.sleep(PERIOD_SECONDS + 0.2)
        results: dict[str, Any] = {}
        for viewers in (1, cfg.viewers):
            for side, port, conditional in (("baseline", baseline_port, False),
                                            ("pystol", pystol_port, True)):
                print(f"{side}: {viewers} viewer(s), {cfg.seconds:g} s …", file=sys.stderr)
                results[f"{side}_{viewers}"] = watch(port, conditional, viewers, cfg.seconds,
                                                     sim)
                time.sleep(PERIOD_SECONDS + 0.2)  # shared answers and caches expire
    packed = results[f"pystol_{cfg.viewers}"]["full_body"]
    plain = results[f"baseline_{cfg.viewers}"]["full_body"]
    headers = results[f"pystol_{cfg.viewers}"]["full_headers"]
    for phase in results.values():  # bytes are not JSON; the file keeps their sizes
        phase.pop("full_body")
        phase.pop("full_headers")
    try:
        same = json.loads(gzip.decompress(packed)) == json.loads(plain)
    except (OSError, ValueError):
        same = False
    results["full_answer"] = {
        "pystol_gzip_bytes": len(packed), "baseline_plain_bytes": len(plain),
        "gzip_is_plain_body": same, "pystol_headers": headers}
    return results


def build_rows(details: dict[str, Any], cfg: dict[str, Any]) -> list[Row]:
    many = cfg["viewers"]
    p1, b1 = details["pystol_1"], details["baseline_1"]
    pn, bn = details[f"pystol_{many}"], details[f"baseline_{many}"]

    def stat(phase: dict[str, Any], key: str, q: str) -> float | None:
        value = phase[key]
        return float(value[q]) if value.get("n") else None

    polls = pn["polls"] + p1["polls"]
    not_modified = (pn["statuses"].get("304", 0) + p1["statuses"].get("304", 0))
    return [
        Row("bytes/s per viewer, 1 viewer", "B/s", p1["bytes_per_second_per_viewer"],
            b1["bytes_per_second_per_viewer"],
            "steady state; pystol: conditional GET + gzip each second; baseline: full "
            "body each second, no gzip (the dashboard before issue 16)"),
        Row(f"bytes/s per viewer, {many} viewers", "B/s", pn["bytes_per_second_per_viewer"],
            bn["bytes_per_second_per_viewer"]),
        Row("cluster reads/s, 1 viewer", "reads/s", p1["cluster_reads_per_second"],
            b1["cluster_reads_per_second"], "`list nodes` the sim served: one per topology "
            "read"),
        Row(f"cluster reads/s, {many} viewers", "reads/s", pn["cluster_reads_per_second"],
            bn["cluster_reads_per_second"],
            f"pystol: one read per {SHARED_SECONDS:g} s for every API process; baseline: "
            f"one per {BASELINE_CACHE_SECONDS:g} s per API process"),
        Row(f"Kubernetes requests/s, {many} viewers", "req/s",
            pn["kubernetes_requests_per_second"], bn["kubernetes_requests_per_second"]),
        Row("first answer p50", "ms", stat(pn, "first_answer_ms", "p50"),
            stat(bn, "first_answer_ms", "p50"), "a viewer's first (full) answer; pystol "
            "gzipped"),
        Row("steady-state answer p50", "ms", stat(pn, "steady_answer_ms", "p50"),
            stat(bn, "steady_answer_ms", "p50"), "pystol: 304; baseline: the full body"),
        Row("steady-state answer p99", "ms", stat(pn, "steady_answer_ms", "p99"),
            stat(bn, "steady_answer_ms", "p99")),
        Row("full answer body", "B", details["full_answer"]["pystol_gzip_bytes"],
            details["full_answer"]["baseline_plain_bytes"], "pystol: gzip"),
        Row("steady-state polls answered 304", "%",
            100.0 * not_modified / polls if polls else None, None),
    ]



def checks(cfg: dict[str, Any], details: dict[str, Any]) -> list[tuple[str, bool]]:
    many = cfg["viewers"]
    verdicts = []
    for viewers in (1, many):
        bps = details[f"pystol_{viewers}"]["bytes_per_second_per_viewer_max"]
        verdicts.append((f"{viewers} viewer(s): at most {bps:,.0f} B/s per viewer "
                         f"(target <= {TARGET_BYTES_PER_SECOND:,})",
                         bps <= TARGET_BYTES_PER_SECOND))
    crowd = details[f"pystol_{many}"]
    allowed = math.ceil(crowd["window_seconds"] / SHARED_SECONDS) + 1
    verdicts.append((f"{many} viewers on {cfg['api_workers']} API processes: "
                     f"{crowd['cluster_reads']} cluster reads in {crowd['window_seconds']:.1f} s "
                     f"(at most {allowed}: one per {SHARED_SECONDS:g} s)",
                     crowd["cluster_reads"] <= allowed))
    failed = sum(phase["error_count"] for key, phase in details.items()
                 if key != "full_answer")
    verdicts.append((f"{failed} polls failed", failed == 0))
    full = details["full_answer"]
    verdicts.append(("the gzipped answer is the plain answer", bool(full["gzip_is_plain_body"])))
    headers = full["pystol_headers"]
    verdicts.append(("answers carry a strong ETag, private no-cache and Vary",
                     headers.get("etag", "").startswith('"')
                     and headers.get("cache-control") == "private, no-cache"
                     and "authorization" in headers.get("vary", "").lower()))
    return verdicts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [BASELINE_CHILD]:
        import os

        serve_baseline(os.environ["PYSTOL_API_BIND"], int(argv[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="200 pods on 5 nodes, 5 s phases (CI)")
    parser.add_argument("--pods", type=int, help="pods (default 2000; 200 with --smoke)")
    parser.add_argument("--nodes", type=int, help="nodes (default 20; 5 with --smoke)")
    parser.add_argument("--seconds", type=float,
                        help="steady state per phase (default 30; 5 with --smoke)")
    parser.add_argument("--viewers", type=int, default=10,
                        help="viewers of the crowded phases (default 10)")
    parser.add_argument("--api-workers", type=int, default=2,
                        help="gunicorn workers of both servers (default 2)")
    parser.add_argument("--output", type=Path, help="JSON results file (default "
                        "bench/results/dashboard.json, dashboard_smoke.json with --smoke)")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: print the table of an earlier results file")
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render)
    cfg = Config(pods=args.pods or (200 if args.smoke else 2000),
                 nodes=args.nodes or (5 if args.smoke else 20),
                 seconds=args.seconds or (5.0 if args.smoke else 30.0),
                 viewers=args.viewers, api_workers=args.api_workers, smoke=bool(args.smoke))
    if cfg.pods < NAMESPACES * DEPLOYMENTS_PER_NAMESPACE or cfg.nodes < 1 \
            or cfg.seconds < 1 or cfg.viewers < 2 or cfg.api_workers < 1:
        parser.error(f"pods >= {NAMESPACES * DEPLOYMENTS_PER_NAMESPACE}, nodes >= 1, "
                     "seconds >= 1, viewers >= 2, api-workers >= 1")
    output = args.output or default_output("dashboard", cfg.smoke)
    provenance = Provenance.now()
    details = run(cfg)
    config = {**asdict(cfg), "period_seconds": PERIOD_SECONDS,
              "baseline_cache_seconds": BASELINE_CACHE_SECONDS, "sim_speed": SIM_SPEED}
    return report("dashboard", output, provenance, build_rows(details, config),
                  checks(config, details), details, config=config,
                  labels=("pystol (ETag, gzip, shared read)", "baseline (full body)"))


if __name__ == "__main__":
    sys.exit(main())
