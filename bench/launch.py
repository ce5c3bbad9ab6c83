"""Launch benchmark: `pystol run pod-kill … ` against Chaos Toolkit's `chaos run`, from the
moment the command is spawned to the moment a watch sees the second pod DELETED.

Issue 16's row "launch → 2 pods deleted (CLI, seen by a watch)". What a user types and
waits for: a one-shot command that makes two pods go away.

- Pystol: `pystol run pod-kill -n bench -l app=victim --mode fixed --value 2
  -p grace_period_seconds=0 -o json` (the console script of the venv). The CLI only
  submits the job to the API (it does not wait without `--wait`); a worker picks it up,
  selects, locks and deletes. As for a user who has run `pystol up`, the stack is already
  running: a real `redis-server`, `pystol api` and `pystol worker`, so this compares a
  service's client with a one-shot tool, which is what each user runs to cause the fault.
  Because that leaves the stack's own start out, a second row times it once per run:
  spawning `pystol api` and `pystol worker` on a running Redis and sim, waiting until both
  are ready, then the same launch (the "cold" row).
- Chaos Toolkit (chaostoolkit 1.19.0, chaostoolkit-lib 1.44.0, chaostoolkit-kubernetes
  0.39.0 in `.tools/ctk`, installed by `bash scripts/dev.sh setup`): `chaos
  --no-version-check run --journal-path J experiment.json` whose method is one action,
  `chaosk8s.pod.actions.terminate_pods` with `qty: 2`, the same label selector and
  namespace and `grace_period: 0`, with no steady-state hypothesis and no rollbacks. It
  reads the sim's kubeconfig from `KUBECONFIG`.

Both kill with grace period 0, so the pod is gone at once and the figure is the tool's
cost, not the sim's termination delay. The end point of both is the watch: a `watch=true`
stream on the namespace's pods, opened before the spawn (from the list's resourceVersion)
and read in this process, timestamps each DELETED event; the launch ends at the second.
The exit of the command is timed too (`os.wait4`, which also gives each launched process's
peak RSS and CPU time). Between launches the deployment heals (all replicas Ready, none
terminating) and Pystol's job has ended (it watches its workload recover after the kills),
so every launch starts from the same state with idle processes. The two sides alternate
(the order flips every repetition), after one warm-up pair that is not counted.

    .venv/bin/python -m bench.launch            # 10 launches per side (~1 min)
    .venv/bin/python -m bench.launch --smoke    # 2 launches per side (CI)

Results: a table on stdout and JSON in bench/results/launch.json (launch_smoke.json with
--smoke) via `bench/results_file.py`; `--render FILE` prints an earlier file again. Exit
status 1 when a launch did not delete exactly 2 pods, a command failed or a Pystol job did
not succeed. Needs `.tools/ctk` (no baseline, no benchmark): run `bash scripts/dev.sh setup`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import UNREACHED_RATE_LIMITS
from bench.pipeline import (
    REPO_ROOT,
    Proc,
    SimEndpoint,
    free_port,
    http_ready,
    serve_scenario,
    spawn,
    start_redis,
    summary,
    worker_ready,
)
from bench.results_file import Provenance, Row, default_output, fmt, render, report

CHAOS = REPO_ROOT / ".tools" / "ctk" / "bin" / "chaos"
PYSTOL = Path(sys.executable).with_name("pystol")
NAMESPACE = "bench"
DEPLOYMENT = "victim"
SELECTOR = f"app={DEPLOYMENT}"
KILLS = 2
SIM_SPEED = 10.0
TOKEN = "bench-launch-" + "0" * 20
WARMUP_PAIRS = 1
LAUNCH_TIMEOUT = 120.0
QUIET_SECONDS = 0.3  # after the command exits: a third DELETED would show up within this
TERMINAL = {"succeeded", "failed", "aborted", "cancelled", "skipped"}


@dataclass(frozen=True)
class Config:
    repetitions: int
    pods: int
    concurrency: int
    smoke: bool


# --------------------------------------------------------------------------- the sim


def scenario_document(pods: int) -> dict[str, Any]:
    """One deployment whose pods come back Ready quickly, so it heals between launches."""
    return {
        "name": "launch-bench",
        "timings": {"schedule_seconds": 0.0, "start_seconds": 0.5, "ready_seconds": 0.5},
        "nodes": [{"name_prefix": "node", "count": 3}],
        "namespaces": [NAMESPACE],
        "deployments": [{"name": DEPLOYMENT, "namespace": NAMESPACE, "replicas": pods,
                         "labels": {"app": DEPLOYMENT}}],
    }


def healed(sim: SimEndpoint, pods: int) -> bool:
    """The deployment has its replicas, all Ready, none terminating."""
    items = sim.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3D{DEPLOYMENT}"
                    )["items"]
    ready = [pod for pod in items if not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ())]
    return len(items) == pods and len(ready) == pods


def wait_healed(sim: SimEndpoint, pods: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not healed(sim, pods):
        if time.monotonic() > deadline:
            raise RuntimeError(f"deployment {DEPLOYMENT} did not heal within {timeout:.0f}s")
        time.sleep(0.02)


@contextmanager
def start_sim(workdir: Path, pods: int) -> Iterator[SimEndpoint]:
    with serve_scenario(scenario_document(pods), workdir, SIM_SPEED) as (_, sim):
        wait_healed(sim, pods)
        yield sim


class DeleteWatch:
    """A watch on the namespace's pods, opened before a launch; the monotonic time of each
    DELETED event, read on its own thread so a launch's end is seen when it happens."""

    def __init__(self, sim: SimEndpoint) -> None:
        listed = sim.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector="
                         f"app%3D{DEPLOYMENT}")
        version = listed["metadata"]["resourceVersion"]
        self.conn = http.client.HTTPSConnection(sim.host, sim.port, timeout=LAUNCH_TIMEOUT,
                                                context=sim.context)
        self.conn.connect()
        self.sock = self.conn.sock  # close() shuts it down to wake the reader thread
        self.conn.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?watch=true&"
                                 f"labelSelector=app%3D{DEPLOYMENT}&resourceVersion={version}",
                          headers={"Authorization": f"Bearer {sim.token}"})
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise RuntimeError(f"watch answered {self.response.status}")
        self.deleted: list[tuple[float, str]] = []
        self.enough = threading.Event()
        self.closed = False
        self.error: str | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        pending = b""
        try:
            while True:
                chunk = self.response.read1(1 << 16)
                now = time.monotonic()
                if not chunk:
                    return
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "DELETED":
                        self.deleted.append((now, event["object"]["metadata"]["name"]))
                        if len(self.deleted) >= KILLS:
                            self.enough.set()
        # The stream broke or timed out, or close() shut it down mid-read (http.client
        # then fails in its own ways: IncompleteRead, AttributeError, ValueError).
        except (OSError, ValueError, AttributeError, http.client.HTTPException) as error:
            if not self.closed:
                self.error = f"{type(error).__name__}: {error}"

    def close(self) -> None:
        """Stop reading: shutdown wakes the thread blocked in recv (closing the connection
        alone would wait for the response's lock, which that thread holds until timeout)."""
        self.closed = True
        if self.sock is not None:
            with suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.conn.close()


# --------------------------------------------------------------------------- one launch


@dataclass
class Launch:
    side: str
    to_second_deleted: float | None = None  # s from spawn
    to_exit: float | None = None  # s from spawn
    exit_code: int | None = None
    peak_rss_mib: float | None = None
    cpu_seconds: float | None = None
    deleted: list[str] = field(default_factory=list)
    job_id: str | None = None
    job_status: str | None = None
    error: str | None = None


def launch(side: str, args: list[str], env: dict[str, str], sim: SimEndpoint,
           workdir: Path) -> tuple[Launch, str]:
    """Spawn one command with a watch already open; time spawn → 2nd DELETED and → exit."""
    result = Launch(side)
    watch = DeleteWatch(sim)
    out_path = workdir / f"{side}.out"
    try:
        with out_path.open("wb") as out, (workdir / f"{side}.err").open("wb") as err:
            started = time.monotonic()
            process = subprocess.Popen(args, stdout=out, stderr=err, cwd=workdir, env=env)
        # os.wait4 instead of Popen.wait: it gives the child's own peak RSS and CPU time.
        _, status, usage = os.wait4(process.pid, 0)
        exited = time.monotonic()
        process.returncode = os.waitstatus_to_exitcode(status)
        result.to_exit = exited - started
        result.exit_code = process.returncode
        result.peak_rss_mib = usage.ru_maxrss / 1024  # KiB on Linux
        result.cpu_seconds = usage.ru_utime + usage.ru_stime
        # A failed command deletes nothing more after its exit: no point waiting long.
        if watch.enough.wait(LAUNCH_TIMEOUT if result.exit_code == 0 else QUIET_SECONDS):
            result.to_second_deleted = watch.deleted[KILLS - 1][0] - started
        time.sleep(QUIET_SECONDS)  # a third kill would show up as a failed check
    finally:
        watch.close()
    result.deleted = [name for _, name in watch.deleted]
    result.error = watch.error
    return result, out_path.read_text(errors="replace")


def api_get(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"API GET {path}: {response.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


def wait_job(port: int, job_id: str, timeout: float = LAUNCH_TIMEOUT) -> str:
    """The job's terminal status: the next launch starts with an idle worker."""
    deadline = time.monotonic() + timeout
    while True:
        status = str(api_get(port, f"/api/v1/jobs/{job_id}").get("status"))
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def pystol_command() -> list[str]:
    return [str(PYSTOL), "run", "pod-kill", "-n", NAMESPACE, "-l", SELECTOR, "--mode", "fixed",
            "--value", str(KILLS), "-p", "grace_period_seconds=0", "-o", "json"]


def chaos_command(workdir: Path) -> list[str]:
    experiment = workdir / "experiment.json"
    experiment.write_text(json.dumps({
        "version": "1.0.0",
        "title": f"terminate {KILLS} {DEPLOYMENT} pods",
        "description": "The launch benchmark's baseline: the same kill as `pystol run`.",
        "method": [{
            "type": "action",
            "name": f"terminate {KILLS} pods",
            "provider": {"type": "python", "module": "chaosk8s.pod.actions",
                         "func": "terminate_pods",
                         "arguments": {"label_selector": SELECTOR, "ns": NAMESPACE,
                                       "qty": KILLS, "grace_period": 0}},
        }],
        "rollbacks": [],
    }, indent=2))
    return [str(CHAOS), "--no-version-check", "run", "--journal-path",
            str(workdir / "journal.json"), str(experiment)]


def base_environment() -> dict[str, str]:
    """The user's shell: no Pystol server settings, no Kubernetes variables."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("PYSTOL_", "KUBERNETES_"))}


class Bench:
    """The running pieces, and one launch of either side on them."""

    def __init__(self, cfg: Config, sim: SimEndpoint, workdir: Path, api_port: int) -> None:
        self.cfg = cfg
        self.sim = sim
        self.workdir = workdir
        self.api_port = api_port
        base = base_environment()
        self.pystol_env = {**base, "PYSTOL_API_URL": f"http://127.0.0.1:{api_port}",
                           "PYSTOL_TOKEN": TOKEN}
        self.chaos_env = {**base, "KUBECONFIG": str(sim.kubeconfig)}
        self.chaos_args = chaos_command(workdir)

    def pystol(self) -> Launch:
        wait_healed(self.sim, self.cfg.pods)
        result, out = launch("pystol", pystol_command(), self.pystol_env, self.sim,
                             self.workdir)
        try:
            result.job_id = str(json.loads(out)["id"])
        except (ValueError, KeyError, TypeError) as error:
            err = (self.workdir / "pystol.err").read_text(errors="replace")
            result.error = f"no job in the CLI's output ({error}): {out[:300]!r} {err[:300]!r}"
            return result
        result.job_status = wait_job(self.api_port, result.job_id)
        return result

    def chaos(self) -> Launch:
        wait_healed(self.sim, self.cfg.pods)
        result, _ = launch("chaos", self.chaos_args, self.chaos_env, self.sim, self.workdir)
        journal = self.workdir / "journal.json"
        if journal.exists():
            result.job_status = str(json.loads(journal.read_text()).get("status"))
        return result


# --------------------------------------------------------------------------- driver


def stack_env(redis_url: str, sim: SimEndpoint, cfg: Config, api_port: int) -> dict[str, str]:
    return {"PYSTOL_REDIS_URL": redis_url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig),
            "PYSTOL_API_TOKENS": TOKEN, "PYSTOL_API_BIND": f"127.0.0.1:{api_port}",
            "PYSTOL_WORKER_CONCURRENCY": str(cfg.concurrency), **UNREACHED_RATE_LIMITS}


def run(cfg: Config) -> dict[str, Any]:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-launch-")))
        _, redis_url = stack.enter_context(start_redis(workdir))
        sim = stack.enter_context(start_sim(workdir, cfg.pods))
        api_port = free_port()
        env = stack_env(redis_url, sim, cfg, api_port)
        cli = [sys.executable, "-m", "pystol_api.cli"]
        # Cold: the stack starts (on a running Redis and sim, as `pystol up` would find
        # them after its own start), then the first launch.
        print("cold start: pystol api + pystol worker, then the first launch …",
              file=sys.stderr)
        cold_started = time.monotonic()
        api: Proc = stack.enter_context(spawn("pystol-api", [*cli, "api"], workdir, env))
        worker: Proc = stack.enter_context(spawn("pystol-worker", [
            *cli, "worker", "--concurrency", str(cfg.concurrency)], workdir, env))
        api.wait_for(http_ready(api_port), 60, "/readyz")
        worker.wait_for(worker_ready(worker), 60, "'ready.'")
        stack_ready = time.monotonic() - cold_started
        bench = Bench(cfg, sim, workdir, api_port)
        cold = bench.pystol()
        cold_total = (stack_ready + cold.to_second_deleted
                      if cold.to_second_deleted is not None else None)
        launches: dict[str, list[Launch]] = {"pystol": [], "chaos": []}
        for index in range(-WARMUP_PAIRS, cfg.repetitions):
            order = [bench.pystol, bench.chaos] if index % 2 == 0 else [bench.chaos,
                                                                         bench.pystol]
            for step in order:
                result = step()
                label = "warm-up" if index < 0 else f"{index + 1}/{cfg.repetitions}"
                print(f"{label} {result.side}: {len(result.deleted)} DELETED, the 2nd after "
                      f"{fmt(result.to_second_deleted)} s; exit {result.exit_code} after "
                      f"{fmt(result.to_exit)} s{'; ' + result.error if result.error else ''}",
                      file=sys.stderr)
                if index >= 0:
                    launches[result.side].append(result)
        wait_healed(sim, cfg.pods)
    return {"stack_ready_s": stack_ready, "cold_launch": asdict(cold),
            "cold_total_s": cold_total,
            **{side: side_summary(items) for side, items in launches.items()},
            "launches": {side: [asdict(item) for item in items]
                         for side, items in launches.items()}}


def side_summary(items: list[Launch]) -> dict[str, Any]:
    def values(name: str) -> list[float]:
        return [value for item in items if (value := getattr(item, name)) is not None]

    return {"to_second_deleted_s": summary(values("to_second_deleted")),
            "to_exit_s": summary(values("to_exit")),
            "peak_rss_mib": summary(values("peak_rss_mib")),
            "cpu_seconds": summary(values("cpu_seconds"))}


def build_rows(details: dict[str, Any]) -> list[Row]:
    pystol, chaos = details["pystol"], details["chaos"]

    def value(stats: dict[str, Any], key: str) -> float | None:
        return stats[key] if stats.get("n") else None

    def pair(metric: str, unit: str, name: str, key: str, note: str = "") -> Row:
        return Row(metric, unit, value(pystol[name], key), value(chaos[name], key), note)

    return [
        pair("launch -> 2nd pod DELETED p50", "s", "to_second_deleted_s", "p50",
             "spawn of the command -> the watch sees the 2nd DELETED; pystol: api + worker "
             "already running (as after `pystol up`)"),
        pair("launch -> 2nd pod DELETED max", "s", "to_second_deleted_s", "max"),
        pair("launch -> command exit p50", "s", "to_exit_s", "p50",
             "pystol run submits and exits; chaos run exits after its journal"),
        pair("launch -> command exit max", "s", "to_exit_s", "max"),
        pair("command peak RSS p50", "MiB", "peak_rss_mib", "p50", "os.wait4 ru_maxrss"),
        pair("command peak RSS max", "MiB", "peak_rss_mib", "max"),
        pair("command CPU p50", "s", "cpu_seconds", "p50", "user + system, os.wait4"),
        pair("command CPU max", "s", "cpu_seconds", "max"),
        Row("cold: stack start + launch -> 2nd DELETED", "s", details["cold_total_s"],
            value(chaos["to_second_deleted_s"], "p50"),
            "once per run: spawn pystol api + worker (Redis, sim running) -> ready -> "
            "launch -> 2nd DELETED; baseline: chaos run p50"),
        Row("cold: stack start -> ready", "s", details["stack_ready_s"], None,
            "pystol api /readyz and pystol worker 'ready.'"),
    ]


def checks(cfg: Config, details: dict[str, Any]) -> list[tuple[str, bool]]:
    launches = [Launch(**item) for items in details["launches"].values() for item in items]
    launches.append(Launch(**details["cold_launch"]))
    exact = [item for item in launches if len(item.deleted) == KILLS]
    ok_exit = [item for item in launches if item.exit_code == 0]
    pystol_ok = [item for item in launches
                 if item.side == "pystol" and item.job_status == "succeeded"]
    pystol_all = [item for item in launches if item.side == "pystol"]
    chaos_ok = [item for item in launches
                if item.side == "chaos" and item.job_status == "completed"]
    chaos_all = [item for item in launches if item.side == "chaos"]
    measured = [len(details["launches"][side]) for side in ("pystol", "chaos")]
    return [
        (f"{len(exact)} of {len(launches)} launches deleted exactly {KILLS} pods",
         len(exact) == len(launches)),
        (f"{len(ok_exit)} of {len(launches)} commands exited 0", len(ok_exit) == len(launches)),
        (f"{len(pystol_ok)} of {len(pystol_all)} pystol jobs succeeded",
         len(pystol_ok) == len(pystol_all)),
        (f"{len(chaos_ok)} of {len(chaos_all)} chaos journals say completed",
         len(chaos_ok) == len(chaos_all)),
        (f"{measured[0]} + {measured[1]} of {cfg.repetitions} + {cfg.repetitions} launches "
         "measured", measured == [cfg.repetitions, cfg.repetitions]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.launch",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 launches per side (CI)")
    parser.add_argument("--repetitions", type=int,
                        help="launches per side (default 10; 2 with --smoke)")
    parser.add_argument("--pods", type=int, help="replicas of the deployment (default 10; "
                                                 "4 with --smoke)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="pystol worker concurrency (default 2, as `pystol up`)")
    parser.add_argument("--output", type=Path, help="JSON results file (default "
                        "bench/results/launch.json, launch_smoke.json with --smoke)")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: print the table of an earlier results file")
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render)
    if not CHAOS.exists():
        print(f"error: {CHAOS} is missing: run `bash scripts/dev.sh setup` (it installs Chaos "
              "Toolkit there; this benchmark's baseline is `chaos run`)", file=sys.stderr)
        return 2
    cfg = Config(repetitions=args.repetitions or (2 if args.smoke else 10),
                 pods=args.pods or (4 if args.smoke else 10),
                 concurrency=args.concurrency, smoke=bool(args.smoke))
    if cfg.repetitions < 1 or cfg.pods < KILLS + 1 or cfg.concurrency < 1:
        parser.error(f"repetitions >= 1, pods >= {KILLS + 1}, concurrency >= 1")
    output = args.output or default_output("launch", cfg.smoke)
    # SIGTERM unwinds like Ctrl-C, so the children (Redis, sim, api, worker) are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    provenance = Provenance.now()
    details = run(cfg)
    config = {**asdict(cfg), "kills": KILLS, "warmup_pairs": WARMUP_PAIRS,
              "sim_speed": SIM_SPEED, "grace_period_seconds": 0}
    return report("launch", output, provenance, build_rows(details), checks(cfg, details),
                  details, config=config, labels=("pystol run", "chaos run"))


if __name__ == "__main__":
    sys.exit(main())
