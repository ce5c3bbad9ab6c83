"""Worker throughput benchmark of Pystol: dry-run jobs per second at 1 and 2 processes,
and what each job costs Redis.

Dispatch latency (`bench.pipeline` (b)) times one job on an idle worker; this benchmark
asks how many jobs a worker gets through when the queue is full. Both sides get the same
jobs pre-queued before their worker starts, so submission is not in the measured time:

- **Pystol**: dry-run pod-kill jobs (mode one, on the sim's 3-replica deployment), each
  submitted through `POST /api/v1/jobs` of `pystol api`, then run by `pystol worker
  --pool prefork --concurrency 1`, or `--concurrency 2` for 2 processes. A dry-run job
  does everything but the DELETE: claim, grant check, the selection list (one Kubernetes
  request), the heartbeat, the result and the finish.
- **bare Celery**: a no-op task sent with `send_task` to a bare Celery app with the broker
  settings of `make_celery` (`acks_late`, prefetch 1, json; `bench.pipeline`'s
  `make_baseline_celery`), run by a worker with the same pool, concurrency and flags. Its
  only work is one RPUSH of its start and end times, which the measurement needs.

Jobs/s is N over first start -> last end: the job records' `started_at` and `ended_at`
for Pystol, the tasks' own stamps for the bare side. Pystol runs twice per process count:
at the default `PYSTOL_KUBE_QPS` (20, burst 40) and with a limit no run reaches. The
default token bucket caps one process near 20 dry-run jobs/s once the burst is spent,
because a dry-run job still lists pods (docs/design/performance.md, section 7), so the
default-QPS rows measure the bucket and the unreached rows measure the worker.

Redis per job: each run starts with `CONFIG RESETSTAT` and reads `INFO stats` and
`INFO cpu` after the submissions and again once the last job ended, so the figures
cover submission (the API's or `send_task`'s writes), the worker's store traffic and
Celery's broker traffic, worker start-up included (amortized over N). Commands are
`total_commands_processed`, round trips `total_reads_processed` (socket reads: a
pipeline or MULTI/EXEC sent at once is one), bytes `total_net_input_bytes` /
`total_net_output_bytes`, CPU `used_cpu_sys + used_cpu_user`. The benchmark's own INFO
calls are measured once and subtracted.

Run from the repository root:

    .venv/bin/python -m bench.throughput            # full: 600 jobs per run (~2-3 min)
    .venv/bin/python -m bench.throughput --smoke    # CI: 40 jobs per run (~45 s)

Results are printed as a table and written as JSON to `bench/results/` (see
`bench/results_file.py`); `--render FILE` prints an earlier results file again.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench import UNREACHED_RATE_LIMITS
from bench.pipeline import (
    SUBMIT_SPEC,
    TOKEN,
    CpuSnapshot,
    Proc,
    make_baseline_celery,
    per_process_redis,
    spawn,
    start_pystol_api,
    start_redis,
    start_sim,
    summary,
    ts,
)
from bench.results_file import Provenance, Row, default_output, render, report

PYSTOL_QUEUE = "pystol.jobs"
BARE_QUEUE = "bench.throughput"
BARE_TASK = "bench.throughput_noop"
BARE_DONE = "bench:throughput:done"  # list of "start end" stamps, one per task
BARE_WORKER_CHILD = "_bare-worker"
SUCCEEDED = b"] succeeded in"  # Celery's "Task name[id] succeeded in ...s" log line
DEFAULT_QPS = {"PYSTOL_KUBE_QPS": "20", "PYSTOL_KUBE_BURST": "40"}  # the settings' defaults
UNREACHED_QPS = {"PYSTOL_KUBE_QPS": "100000", "PYSTOL_KUBE_BURST": "100000"}
SUBMIT_THREADS = 4
PROCESS_COUNTS = (1, 2)


@dataclass(frozen=True)
class Config:
    smoke: bool
    jobs: int
    api_workers: int


def parse_args(argv: list[str] | None) -> tuple[Config, Path, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small run for CI: 40 jobs per run")
    parser.add_argument("--jobs", type=int,
                        help="jobs pre-queued per run (default 600; 40 with --smoke)")
    parser.add_argument("--api-workers", type=int, default=2,
                        help="gunicorn workers of the API that takes the submissions")
    parser.add_argument("--output", type=Path, help="JSON results file (default "
                        "bench/results/throughput.json, throughput_smoke.json with --smoke)")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: print the table of an earlier results file")
    args = parser.parse_args(argv)
    smoke = bool(args.smoke)
    cfg = Config(smoke=smoke, jobs=args.jobs or (40 if smoke else 600),
                 api_workers=args.api_workers)
    if cfg.jobs < 1 or cfg.api_workers < 1:
        parser.error("counts must be positive")
    return cfg, args.output or default_output("throughput", smoke), args.render


# --------------------------------------------------------------------------- Redis figures


STAT_FIELDS = {"commands": "total_commands_processed", "reads": "total_reads_processed",
               "bytes_in": "total_net_input_bytes", "bytes_out": "total_net_output_bytes"}


def redis_figures(client: redis.Redis) -> dict[str, float]:
    """Redis's counters now: one INFO command (stats and cpu sections)."""
    info = client.info("stats", "cpu")
    figures = {name: float(info[field]) for name, field in STAT_FIELDS.items()}
    figures["cpu_s"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return figures


def difference(later: dict[str, float], earlier: dict[str, float],
               probe: dict[str, float], probes: int) -> dict[str, float]:
    """later - earlier, less `probes` of the benchmark's own INFO calls (CPU is left as
    measured: one INFO is microseconds)."""
    return {key: later[key] - earlier[key] - (probe[key] * probes if key != "cpu_s" else 0.0)
            for key in later}


def per_job(total: dict[str, float], jobs: int) -> dict[str, float]:
    return {"commands": total["commands"] / jobs, "round_trips": total["reads"] / jobs,
            "kb_in": total["bytes_in"] / jobs / 1024, "kb_out": total["bytes_out"] / jobs / 1024,
            "cpu_ms": total["cpu_s"] * 1000 / jobs}


def probe_cost(client: redis.Redis) -> dict[str, float]:
    """What one of our INFO calls adds to the counters (the next reading counts it)."""
    first = redis_figures(client)
    second = redis_figures(client)
    return {key: second[key] - first[key] for key in first}


# --------------------------------------------------------------------------- one run


def wait_for_tasks(worker: Proc, jobs: int, timeout: float) -> None:
    """Until every task has logged its end. Reading the worker's log adds no polling to
    Redis's counters; only the new part of the log is read each time, so the wait costs
    the measured processes almost nothing."""
    deadline = time.monotonic() + timeout
    seen, offset, tail = 0, 0, b""
    while seen < jobs:
        with worker.log.open("rb") as log:
            log.seek(offset)
            chunk = log.read()
        offset += len(chunk)
        text = tail + chunk
        seen += text.count(SUCCEEDED)
        tail = text[-len(SUCCEEDED) + 1:]  # a marker cut in two at the end of this chunk
        if seen >= jobs:
            break
        if worker.process.poll() is not None:
            raise RuntimeError(f"{worker.name} exited:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{seen} of {jobs} tasks ended within {timeout:.0f}s:\n"
                               f"{worker.tail()}")
        time.sleep(0.1)


def submit_jobs(port: int, jobs: int) -> list[str]:
    """POST `jobs` dry-run pod-kill specs to the API on a few keep-alive connections."""
    body = json.dumps(SUBMIT_SPEC).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    ids: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    counts = [jobs // SUBMIT_THREADS + (1 if i < jobs % SUBMIT_THREADS else 0)
              for i in range(SUBMIT_THREADS)]

    def submitter(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(count):
                conn.request("POST", "/api/v1/jobs", body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                with lock:
                    if response.status == 202:
                        ids.append(json.loads(answer)["id"])
                    else:
                        failures.append(f"{response.status} {answer[:200]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=submitter, args=(count,)) for count in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} submissions refused, first: {failures[0]}")
    return ids


def pystol_run(cfg: Config, processes: int, qps: dict[str, str], env: dict[str, str],
               api_port: int, client: redis.Redis, probe: dict[str, float], workdir: Path,
               name: str) -> dict[str, Any]:
    """Pre-queue cfg.jobs dry-run jobs through the API, then start `pystol worker`."""
    from pystol_worker.store.job_store import JobStore

    client.config_resetstat()
    start = redis_figures(client)
    began = time.monotonic()
    ids = submit_jobs(api_port, cfg.jobs)
    submitted = redis_figures(client)
    before = CpuSnapshot.take()
    with spawn(f"worker-{name}", [sys.executable, "-m", "pystol_api.cli", "worker",
                                  "--concurrency", str(processes), "--pool", "prefork"],
               workdir, dict(env, **qps)) as worker:
        wait_for_tasks(worker, cfg.jobs, 60 + cfg.jobs / 2)
        end = redis_figures(client)
        commands = client.info("commandstats")
        cores = before.until(CpuSnapshot.take())
        worker_wall = time.monotonic() - before.at  # start-up included
        tracebacks = worker.text().count("Traceback")
    store = JobStore(client)
    records = [store.get(job_id, with_timeline=False) for job_id in ids]
    failed = [f"{r.id}: {r.status.value} {r.reason}" for r in records
              if r.status.value != "succeeded"]
    starts = [ts(r.started_at) for r in records if r.started_at is not None]
    ends = [ts(r.ended_at) for r in records if r.ended_at is not None]
    durations = [ts(r.ended_at) - ts(r.started_at) for r in records
                 if r.started_at is not None and r.ended_at is not None]
    result = outcome(cfg.jobs, starts, ends, durations, start, submitted, end, probe,
                     commands, cores, failed, tracebacks, len(records))
    result.update(submit_wall_s=before.at - began, worker_wall_s=worker_wall)
    return result


def bare_run(cfg: Config, processes: int, redis_url: str, client: redis.Redis,
             probe: dict[str, float], workdir: Path, name: str) -> dict[str, Any]:
    """Pre-queue cfg.jobs no-op tasks with `send_task`, then start the bare worker."""
    producer = make_baseline_celery(redis_url)
    producer.send_task(BARE_TASK, args=[], queue=BARE_QUEUE)  # connect before measuring
    client.delete(BARE_DONE)
    queued = client.llen(BARE_QUEUE)
    client.delete(BARE_QUEUE)
    client.config_resetstat()
    start = redis_figures(client)
    began = time.monotonic()
    for _ in range(cfg.jobs):
        producer.send_task(BARE_TASK, args=[], queue=BARE_QUEUE)
    submitted = redis_figures(client)
    before = CpuSnapshot.take()
    with spawn(f"worker-{name}", [sys.executable, "-m", "bench.throughput", BARE_WORKER_CHILD,
                                  redis_url, str(processes)], workdir) as worker:
        wait_for_tasks(worker, cfg.jobs, 60 + cfg.jobs / 2)
        end = redis_figures(client)
        commands = client.info("commandstats")
        cores = before.until(CpuSnapshot.take())
        worker_wall = time.monotonic() - before.at  # start-up included
        tracebacks = worker.text().count("Traceback")
    producer.close()
    stamps = [tuple(float(v) for v in item.split()) for item in client.lrange(BARE_DONE, 0, -1)]
    client.delete(BARE_DONE)
    result = outcome(cfg.jobs, [s for s, _ in stamps], [e for _, e in stamps],
                     [e - s for s, e in stamps], start, submitted, end, probe, commands, cores,
                     [], tracebacks, len(stamps))
    result.update(warmup_messages_dropped=queued, submit_wall_s=before.at - began,
                  worker_wall_s=worker_wall)
    return result


def outcome(jobs: int, starts: list[float], ends: list[float], durations: list[float],
            start: dict[str, float], submitted: dict[str, float], end: dict[str, float],
            probe: dict[str, float], commands: dict[str, Any], cores: dict[str, float],
            failed: list[str], tracebacks: int, recorded: int) -> dict[str, Any]:
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    total = difference(end, start, probe, 2)  # the INFO at `start` and at `submitted`
    submit = difference(submitted, start, probe, 1)
    return {
        "jobs": jobs, "recorded": recorded, "failed": failed, "tracebacks": tracebacks,
        "span_s": span, "jobs_per_s": jobs / span if span > 0 else None,
        "job_seconds": summary(durations), "redis_total": total, "redis_submit": submit,
        "redis_per_job": per_job(total, jobs), "redis_submit_per_job": per_job(submit, jobs),
        "commandstats_per_job": {name.removeprefix("cmdstat_"): stats["calls"] / jobs
                                 for name, stats in sorted(commands.items())},
        "cores": cores,
    }


# --------------------------------------------------------------------------- bare worker


def run_bare_worker(redis_url: str, concurrency: int) -> None:
    """The bare side's worker: its task stores its start and end, nothing else."""
    from celery.signals import worker_process_init

    app = make_baseline_celery(redis_url)
    client = per_process_redis(redis_url)

    @worker_process_init.connect(weak=False)
    def _warm_up(**_: Any) -> None:  # connect before the first task, as pystol worker does
        client().ping()

    @app.task(name=BARE_TASK)  # type: ignore[untyped-decorator]
    def noop() -> None:
        started = time.time()
        client().rpush(BARE_DONE, f"{started!r} {time.time()!r}")

    app.worker_main(["worker", f"--concurrency={concurrency}", "--pool=prefork",
                     "-Q", BARE_QUEUE, "--loglevel=INFO", "--without-gossip",
                     "--without-mingle", "-n", f"bare-{os.getpid()}@%h"])


# --------------------------------------------------------------------------- report


def key(side: str, processes: int, qps: str | None = None) -> str:
    return f"{side}-{processes}" + (f"-{qps}" if qps else "")


def build_rows(results: dict[str, Any]) -> list[Row]:
    runs = results["runs"]

    def rate(name: str) -> float | None:
        value: float | None = runs[name]["jobs_per_s"]
        return value

    def scaling(side: str, qps: str | None = None) -> float | None:
        one, two = rate(key(side, 1, qps)), rate(key(side, 2, qps))
        return two / one if one and two else None

    rows = []
    for qps, label in (("unreached", "kube QPS unreached"), ("default", "default kube QPS 20")):
        for processes in PROCESS_COUNTS:
            note = ""
            if qps == "unreached" and processes == 1:
                note = ("dry-run pod-kill jobs vs bare Celery no-op (acks_late, prefetch 1), "
                        "pre-queued, first start -> last end; target: Pystol >= 0.8x bare "
                        "(ratio <= 1.25)")
            if qps == "default" and processes == 1:
                note = ("PYSTOL_KUBE_QPS 20, burst 40: a dry-run job still lists pods, so the "
                        "token bucket caps one process near 20 jobs/s once the burst is spent")
            rows.append(Row(f"jobs/s, {processes} process{'es' if processes > 1 else ''}, "
                            f"{label}", "jobs/s", rate(key("pystol", processes, qps)),
                            rate(key("bare", processes)), rate=True, note=note))
        rows.append(Row(f"scaling 1 -> 2 processes, {label}", "x", scaling("pystol", qps),
                        scaling("bare"), rate=True,
                        note=("jobs/s at 2 processes over jobs/s at 1; target: Pystol >= 1.7x"
                              if qps == "unreached" else
                              "2 processes have 2 token buckets: this scaling says little")))
    pystol = runs[key("pystol", 1, "unreached")]
    bare = runs[key("bare", 1)]
    p, b = pystol["redis_per_job"], bare["redis_per_job"]
    ps, bs = pystol["redis_submit_per_job"], bare["redis_submit_per_job"]
    rows += [
        Row("Redis commands per job", "commands", p["commands"], b["commands"],
            note="1 process, kube QPS unreached; submit + worker + Celery broker, worker "
            "start-up included (INFO stats after CONFIG RESETSTAT); baseline: a bare no-op task"),
        Row("Redis round trips per job", "reads", p["round_trips"], b["round_trips"],
            note="total_reads_processed: socket reads by Redis; a pipeline or MULTI/EXEC "
            "written at once is one"),
        Row("Redis commands per job, submission only", "commands", ps["commands"],
            bs["commands"], note="POST /api/v1/jobs against send_task"),
        Row("Redis round trips per job, submission only", "reads", ps["round_trips"],
            bs["round_trips"]),
        Row("Redis bytes in per job", "KB", p["kb_in"], b["kb_in"]),
        Row("Redis bytes out per job", "KB", p["kb_out"], b["kb_out"]),
        Row("Redis CPU per job", "ms", p["cpu_ms"], b["cpu_ms"],
            note="INFO cpu used_cpu_sys + used_cpu_user"),
        Row("jobs/s one Redis core carries at this cost", "jobs/s",
            1000 / p["cpu_ms"] if p["cpu_ms"] > 0 else None,
            1000 / b["cpu_ms"] if b["cpu_ms"] > 0 else None, rate=True,
            note="1000 ms / Redis CPU ms per job"),
    ]
    return rows


def checks(cfg: Config, results: dict[str, Any]) -> list[tuple[str, bool]]:
    verdicts = []
    for name, run in results["runs"].items():
        ok = (run["recorded"] == cfg.jobs and not run["failed"] and run["tracebacks"] == 0
              and run["jobs_per_s"] is not None)
        verdicts.append((f"{name}: {run['recorded']} of {cfg.jobs} jobs recorded, "
                         f"{len(run['failed'])} not succeeded, {run['tracebacks']} tracebacks",
                         ok))
    verdicts.append((f"queues empty at the end ({results['left_in_queues']} messages left)",
                     results["left_in_queues"] == 0))
    verdicts.append((f"{results['api_tracebacks']} tracebacks in the API's log",
                     results["api_tracebacks"] == 0))
    return verdicts


# --------------------------------------------------------------------------- main


def run(cfg: Config, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"loadavg_start": os.getloadavg(), "runs": {}}
    runs = results["runs"]
    with ExitStack() as stack:
        _, redis_url = stack.enter_context(start_redis(workdir))
        _, sim = stack.enter_context(start_sim(workdir))
        env = {"PYSTOL_REDIS_URL": redis_url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
               "PYSTOL_API_TOKENS": TOKEN, "PYSTOL_API_WORKERS": str(cfg.api_workers),
               "PYSTOL_QUEUE": PYSTOL_QUEUE, "PYSTOL_HEALTH_DIR": str(workdir),
               **UNREACHED_RATE_LIMITS}
        api, api_port = stack.enter_context(start_pystol_api(env, workdir))
        client = redis.Redis.from_url(redis_url)
        probe = probe_cost(client)
        idle0 = redis_figures(client)
        time.sleep(1.0)
        results["idle_api_per_s"] = difference(redis_figures(client), idle0, probe, 1)
        results["info_probe"] = probe
        for processes in PROCESS_COUNTS:
            name = key("bare", processes)
            print(f"{name}: {cfg.jobs} no-op tasks", flush=True)
            runs[name] = bare_run(cfg, processes, redis_url, client, probe, workdir, name)
            show(name, runs[name])
            for qps_name, qps in (("unreached", UNREACHED_QPS), ("default", DEFAULT_QPS)):
                name = key("pystol", processes, qps_name)
                print(f"{name}: {cfg.jobs} dry-run pod-kill jobs", flush=True)
                runs[name] = pystol_run(cfg, processes, qps, env, api_port, client, probe,
                                        workdir, name)
                show(name, runs[name])
        results["left_in_queues"] = int(client.llen(PYSTOL_QUEUE)) + int(
            client.llen(BARE_QUEUE))
        results["api_tracebacks"] = api.text().count("Traceback")
        client.close()
    results["loadavg_end"] = os.getloadavg()
    return results


def show(name: str, run: dict[str, Any]) -> None:
    per = run["redis_per_job"]
    rate = run["jobs_per_s"]
    print(f"  {name}: {rate or 0:,.1f} jobs/s over {run['span_s']:.2f} s; Redis per job "
          f"{per['commands']:.1f} commands, {per['round_trips']:.1f} reads, "
          f"{per['kb_in']:.2f}/{per['kb_out']:.2f} KB in/out, {per['cpu_ms']:.3f} ms CPU; "
          f"other programs used {run['cores']['other_cores']:.2f} cores; submission took "
          f"{run['submit_wall_s']:.1f} s, the worker {run['worker_wall_s']:.1f} s from its "
          "start", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == BARE_WORKER_CHILD:
        run_bare_worker(argv[1], int(argv[2]))
        return 0
    cfg, output, render_file = parse_args(argv)
    if render_file is not None:
        return render(render_file)
    provenance = Provenance.now()
    print(f"throughput: {'smoke' if cfg.smoke else 'full'} run on {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        results = run(cfg, Path(tmp))
    return report("throughput", output, provenance, build_rows(results), checks(cfg, results),
                  results, config=asdict(cfg))


if __name__ == "__main__":
    sys.exit(main())
