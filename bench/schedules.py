"""Schedule precision: how close to its nominal time does a scheduled chaos job start?

Pystol side: an `interval` schedule (1 s by default, the shortest period Pystol allows)
whose template is a dry-run pod-kill on the simulated cluster. `pystol beat` (celery-
redbeat) fires `pystol.fire_schedule`; the worker decides the slot, stores the job and
queues `pystol.run_job`; the job starts when a worker claims it. Measured per run: **job
`started_at` - nominal slot time** (the slot is in the job's idempotency key), and its
parts: beat's lateness (the fire's send stamp - slot), fire → job stored (`created_at`),
stored → started.

Baseline: a bare redbeat entry with the same interval, on the same Redis, fired by the
same `pystol beat` process (same redbeat prefix, same `beat_max_loop_interval`), sending a
no-op task to a worker built from the same `make_celery` settings (prefork, same
concurrency) on its own queue. The task stores `time.time()` when it starts. A bare redbeat
entry has no anchor: its nominal time for a run is the previous run's `last_run_at` (the
moment beat reserved it, a few µs before the send stamp) + the interval, which is what is
used.

The two sides take turns, never at once (redbeat peeks only one entry ahead per tick, so
two short-interval entries at once would disturb each other): `--rounds` alternations
(4 by default), each on a fresh schedule and a fresh entry, so both sides see the same
background load on a shared machine. The first 3 runs of each round and side are warm-up
and not counted.

    .venv/bin/python -m bench.schedules            # 200 runs per side (~4 min)
    .venv/bin/python -m bench.schedules --smoke    # 20 runs per side (~40 s)

Results: a table on stdout and JSON in bench/results/schedules.json (schedules_smoke.json
with --smoke), written by `bench/results_file.py`; `--render FILE` prints an earlier results
file again. Exit status 1 when a slot ran twice or a run is missing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from bench.pipeline import free_port, spawn, summary
from bench.results_file import Provenance, Row, default_output, render, report

BASELINE_QUEUE = "bench.noop"
BASELINE_TASK = "bench.noop"
BASELINE_ENTRY = "bench-noop"
BASELINE_LIST = "bench:noop:runs"
WARMUP = 3
SCHEDULE_ID = "bench-precision"
TEMPLATE = {"action": "pod-kill", "dry_run": True,
            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}


@dataclass(frozen=True)
class Config:
    runs: int
    interval: float
    concurrency: int
    rounds: int
    smoke: bool


def run_baseline_worker(redis_url: str, concurrency: int) -> None:
    """A worker of a bare Celery app (Pystol's broker settings) whose task records its start."""
    from celery.signals import worker_process_init

    from pystol_worker.core.settings import Settings
    from pystol_worker.process.celery_app import make_celery

    app = make_celery(Settings(redis_url=redis_url, queue=BASELINE_QUEUE))
    clients: dict[int, redis.Redis] = {}

    def client() -> redis.Redis:
        if os.getpid() not in clients:
            clients[os.getpid()] = redis.Redis.from_url(redis_url)
        return clients[os.getpid()]

    @worker_process_init.connect(weak=False)
    def _warm_up(**_: Any) -> None:
        client().ping()

    @app.task(name=BASELINE_TASK, bind=True)  # type: ignore[untyped-decorator]
    def noop(task: Any) -> None:
        started = time.time()
        fired = getattr(task.request, "pystol_fired_at", None)
        client().rpush(BASELINE_LIST, json.dumps({"started": started, "fired": fired}))

    app.worker_main(["worker", f"--concurrency={concurrency}", "--pool=prefork",
                     "-Q", BASELINE_QUEUE, "--loglevel=INFO", "--without-gossip",
                     "--without-mingle", "-n", f"bench-noop-{os.getpid()}@%h"])


# --------------------------------------------------------------------------- statistics


def ts(value: datetime | None) -> float:
    if value is None:
        raise ValueError("missing timestamp")
    return value.timestamp()


# --------------------------------------------------------------------------- the two sides


def measure_pystol(client: redis.Redis, settings: Any, cfg: Config, count: int,
                   schedule_id: str) -> dict[str, Any]:
    """`count` measured runs (after WARMUP) of a fresh interval schedule."""
    from pystol_worker.core.access import Actor, ActorKind, Identity, Role, RoleAuthority
    from pystol_worker.core.model import Source
    from pystol_worker.core.policy import Policy
    from pystol_worker.core.schedule_model import ScheduleSpec
    from pystol_worker.schedules.store import ScheduleStore
    from pystol_worker.store.job_store import JobStore

    store = ScheduleStore(client, settings, policy=Policy(min_schedule_period=cfg.interval))
    admin = Identity(Actor(kind=ActorKind.SETTINGS_TOKEN, name="bench", role=Role.ADMIN),
                     RoleAuthority(Role.ADMIN))
    spec = ScheduleSpec.model_validate({"interval": cfg.interval, "template": TEMPLATE,
                                        "history_limit": 1000})
    total = count + WARMUP
    store.create(spec, Source.API, admin, schedule_id=schedule_id)
    deadline = time.monotonic() + total * cfg.interval + 60
    jobs = JobStore(client)
    while True:
        runs = [run for run in store.runs(schedule_id) if run.job_id]
        records = [jobs.get(run.job_id or "", with_timeline=False) for run in runs]
        started = [record for record in records if record.started_at is not None]
        if len(started) >= total or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    history = store.runs(schedule_id)
    store.delete(schedule_id)
    runs = sorted((run for run in history if run.job_id), key=lambda run: run.slot_at)
    slots = [round(ts(run.slot_at) * 1000) for run in runs]
    rows = []
    for run in runs[WARMUP:total]:
        record = jobs.get(run.job_id or "", with_timeline=False)
        slot = ts(run.slot_at)
        if record.started_at is None or run.fired_at is None:
            continue
        rows.append({"fired": ts(run.fired_at) - slot, "created": ts(record.created_at) - slot,
                     "started": ts(record.started_at) - slot})
    return {"rows": rows, "duplicate_slots": len(slots) - len(set(slots)),
            "slots_contiguous": all(later - earlier == round(cfg.interval * 1000)
                                    for earlier, later in itertools.pairwise(slots)),
            "not_started": [run.model_dump(mode="json") for run in history
                            if run.outcome != "started"]}


def measure_baseline(client: redis.Redis, settings: Any, cfg: Config, count: int,
                     name: str) -> list[dict[str, float]]:
    """`count` measured runs (after WARMUP) of a fresh bare redbeat entry."""
    from datetime import timedelta

    from celery import Celery
    from celery.schedules import schedule
    from redbeat.schedulers import RedBeatSchedulerEntry

    from pystol_worker.schedules.store import configure_redbeat

    app = configure_redbeat(Celery("bench", set_as_current=False), settings)
    client.delete(BASELINE_LIST)
    entry = RedBeatSchedulerEntry(name, BASELINE_TASK,
                                  schedule(run_every=timedelta(seconds=cfg.interval)),
                                  options={"queue": BASELINE_QUEUE}, app=app)
    entry.save()
    total = count + WARMUP + 1
    deadline = time.monotonic() + total * cfg.interval + 60
    while client.llen(BASELINE_LIST) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    entry.delete()
    time.sleep(cfg.interval * 2)
    events = [json.loads(item) for item in client.lrange(BASELINE_LIST, 0, -1)]
    events = sorted((event for event in events if event["fired"]),
                    key=lambda event: event["fired"])
    rows = []
    for previous, current in itertools.pairwise(events):
        nominal = previous["fired"] + cfg.interval
        rows.append({"fired": current["fired"] - nominal,
                     "started": current["started"] - nominal})
    return rows[WARMUP:WARMUP + count]


def pystol_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [row for measured in rounds for row in measured["rows"]]
    return {
        "runs": len(rows),
        "start_minus_nominal_ms": summary([row["started"] * 1000 for row in rows]),
        "beat_lateness_ms": summary([row["fired"] * 1000 for row in rows]),
        "fire_to_job_stored_ms": summary([(row["created"] - row["fired"]) * 1000
                                          for row in rows]),
        "fire_to_start_ms": summary([(row["started"] - row["fired"]) * 1000 for row in rows]),
        "stored_to_started_ms": summary([(row["started"] - row["created"]) * 1000
                                         for row in rows]),
        "duplicate_slots": sum(measured["duplicate_slots"] for measured in rounds),
        "slots_contiguous": all(measured["slots_contiguous"] for measured in rounds),
        "not_started": [run for measured in rounds for run in measured["not_started"]],
    }


def baseline_summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "runs": len(rows),
        "start_minus_nominal_ms": summary([row["started"] * 1000 for row in rows]),
        "beat_lateness_ms": summary([row["fired"] * 1000 for row in rows]),
        "fire_to_start_ms": summary([(row["started"] - row["fired"]) * 1000 for row in rows]),
    }


# --------------------------------------------------------------------------- driver


def run(cfg: Config) -> dict[str, Any]:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not on PATH (scripts/dev.sh installs it)")
    from pystol_worker.core.settings import Settings

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sched-")))
        port = free_port()
        redis_url = f"redis://127.0.0.1:{port}/0"
        stack.enter_context(spawn("redis", [redis_server, "--port", str(port), "--bind",
                                            "127.0.0.1", "--save", "", "--appendonly", "no"],
                                  workdir))
        client = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        kubeconfig = workdir / "kubeconfig"
        sim = stack.enter_context(spawn("sim", [sys.executable, "-m", "pystol_sim", "--port",
                                                "0", "--kubeconfig", str(kubeconfig),
                                                "--speed", "10"], workdir))
        sim.wait_for(lambda: "pystol-sim: serving" in sim.text(), 60)
        # Sub-second intervals are what this measures: the policy allows them here only
        # (the worker checks the shortest period again at every fire).
        policy = workdir / "policy.yaml"
        policy.write_text(f"min_schedule_period: {cfg.interval}\n", encoding="utf-8")
        env = {"PYSTOL_REDIS_URL": redis_url, "PYSTOL_KUBECONFIG": str(kubeconfig),
               "PYSTOL_POLICY_FILE": str(policy)}
        cli = [sys.executable, "-m", "pystol_api.cli"]
        worker = stack.enter_context(spawn("worker", [*cli, "worker", "--concurrency",
                                                      str(cfg.concurrency)], workdir, env))
        baseline = stack.enter_context(spawn("baseline", [sys.executable, "-m",
                                                          "bench.schedules", "_worker",
                                                          redis_url, str(cfg.concurrency)],
                                             workdir))
        beat = stack.enter_context(spawn("beat", [*cli, "beat"], workdir, env))
        worker.wait_for(lambda: " ready." in worker.text(), 60)
        baseline.wait_for(lambda: " ready." in baseline.text(), 60)
        beat.wait_for(lambda: "Acquired lock" in beat.text(), 60)
        settings = Settings(redis_url=redis_url)
        ours: list[dict[str, Any]] = []
        theirs: list[dict[str, float]] = []
        for index in range(cfg.rounds):
            count = cfg.runs // cfg.rounds + (1 if index < cfg.runs % cfg.rounds else 0)
            print(f"round {index + 1}/{cfg.rounds}: pystol schedule, {count} runs every "
                  f"{cfg.interval:g}s …", file=sys.stderr)
            ours.append(measure_pystol(client, settings, cfg, count, f"{SCHEDULE_ID}-{index}"))
            print(f"round {index + 1}/{cfg.rounds}: bare redbeat entry, {count} runs …",
                  file=sys.stderr)
            theirs += measure_baseline(client, settings, cfg, count, f"{BASELINE_ENTRY}-{index}")
        pystol, bare = pystol_summary(ours), baseline_summary(theirs)
    return {"pystol": pystol, "baseline": bare}


def build_rows(details: dict[str, Any]) -> list[Row]:
    """Pystol's schedule beside the bare redbeat entry; every figure in ms."""
    pystol, bare = details["pystol"], details["baseline"]

    def value(stats: dict[str, Any] | None, key: str) -> float | None:
        return stats[key] if stats and stats.get("n") else None

    def pair(metric: str, name: str, key: str, note: str = "") -> Row:
        return Row(metric, "ms", value(pystol.get(name), key), value(bare.get(name), key),
                   note)

    return [
        pair("start - nominal p50", "start_minus_nominal_ms", "p50",
             "pystol: job started_at - slot; baseline: task start - (last run + interval)"),
        pair("start - nominal p99", "start_minus_nominal_ms", "p99"),
        pair("start - nominal max", "start_minus_nominal_ms", "max"),
        pair("beat lateness (send - nominal) p50", "beat_lateness_ms", "p50"),
        pair("beat lateness (send - nominal) p99", "beat_lateness_ms", "p99"),
        pair("beat send -> start p50", "fire_to_start_ms", "p50",
             "pystol: fire task + run_job task; baseline: the no-op task"),
        pair("beat send -> start p99", "fire_to_start_ms", "p99"),
        Row("fire -> job stored p50", "ms", value(pystol["fire_to_job_stored_ms"], "p50"), None),
        Row("fire -> job stored p99", "ms", value(pystol["fire_to_job_stored_ms"], "p99"), None),
        Row("job stored -> started p50", "ms", value(pystol["stored_to_started_ms"], "p50"),
            None),
        Row("job stored -> started p99", "ms", value(pystol["stored_to_started_ms"], "p99"),
            None),
        Row("runs measured", "n", pystol["runs"], bare["runs"]),
    ]


def checks(config: dict[str, Any], details: dict[str, Any]) -> list[tuple[str, bool]]:
    pystol, bare = details["pystol"], details["baseline"]
    return [
        (f"{pystol['duplicate_slots']} slots ran twice", pystol["duplicate_slots"] == 0),
        ("no slot was skipped" if pystol["slots_contiguous"] else "a slot was skipped",
         bool(pystol["slots_contiguous"])),
        (f"{pystol['runs']} + {bare['runs']} of {config['runs']} + {config['runs']} runs "
         "measured", pystol["runs"] >= config["runs"] and bare["runs"] >= config["runs"]),
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        run_baseline_worker(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.schedules",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="20 runs per side (CI)")
    parser.add_argument("--runs", type=int, help="measured runs per side (default 200)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between runs (default 1; schedules never fire more "
                             "often than once a second)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="worker concurrency of both sides (default 2)")
    parser.add_argument("--rounds", type=int, help="alternations of the two sides (default "
                        "4; 1 with --smoke), so both see the same background load")
    parser.add_argument("--output", type=Path, help="JSON results file (default "
                        "bench/results/schedules.json, schedules_smoke.json with --smoke)")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: print the table of an earlier results file")
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render)
    runs = args.runs or (20 if args.smoke else 200)
    if runs < 1 or args.interval < 1 or args.concurrency < 1:
        parser.error("runs >= 1, interval >= 0.1 s, concurrency >= 1")
    rounds = args.rounds or (1 if args.smoke else 4)
    if not 1 <= rounds <= runs:
        parser.error("1 <= rounds <= runs")
    cfg = Config(runs=runs, interval=args.interval, concurrency=args.concurrency,
                 rounds=rounds, smoke=bool(args.smoke))
    output = args.output or default_output("schedules", cfg.smoke)
    provenance = Provenance.now()
    details = run(cfg)
    config = {**asdict(cfg), "warmup_runs": WARMUP, "beat_max_loop_interval": 1.0}
    return report("schedules", output, provenance, build_rows(details),
                  checks(config, details), details, config=config,
                  labels=("pystol schedule", "bare redbeat entry"))


if __name__ == "__main__":
    sys.exit(main())
