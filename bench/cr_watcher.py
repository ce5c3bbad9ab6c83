"""CR watcher benchmark: how fast does a burst of PystolActions become queued jobs?

One `kubectl create -f` of N PystolAction objects (N = 1,000; 50 with --smoke), timed
twice, each time on a fresh `pystol-sim` and a fresh `redis-server`:

- **alone**: no watcher runs. This is the floor: what the same burst costs the API
  server and kubectl when nobody acts on it.
- **watcher**: `pystol watch` (peering on, as deployed) runs and turns every object
  into a job: finalizer, validation, `JobStore.create`, `send_job`, status patch.

A watch opened by this benchmark on the namespace (before kubectl starts) records when
each object was created (its ADDED event) and when its `status.jobId` appeared. A job's
`created_at` in the job store is when it was queued (the watcher stores it, then sends
the task in the same handler). Per object: created -> job queued, created -> status
shows the job. Per burst: from starting kubectl until every object exists (alone), or
until every job is queued (watcher). CPU of the sim, the watcher and Redis comes from
/proc. No worker runs, so the queue only fills: what is measured is the watcher alone.

Run from the repository root:

    .venv/bin/python -m bench.cr_watcher            # 1,000 CRs (~2 min)
    .venv/bin/python -m bench.cr_watcher --smoke    # 50 CRs (~30 s)

Results are printed as a table and written to bench/results/cr_watcher.json
(cr_watcher_smoke.json with --smoke) by `bench/results_file.py`; `--render FILE` prints an
earlier results file again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from bench.pipeline import Proc, free_port, spawn, start_redis, summary
from bench.results_file import Provenance, Row, default_output, render, report

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
NAMESPACE = "burst"
GROUP, VERSION, PLURAL = "pystol.org", "v1alpha1", "pystolactions"
# A PystolAction acts only in its own namespace (issue 12): the burst targets `burst`.
SPEC = {"action": "pod-kill", "dryRun": True,
        "target": {"namespaces": [NAMESPACE], "labelSelector": "app=web", "mode": "one"}}
QUEUE_TIMEOUT_SECONDS = 600.0


# --------------------------------------------------------------------------- processes


@dataclass
class Sim:
    proc: Proc
    kubeconfig: Path

    def objects(self) -> Any:
        from kubernetes import client, config

        return client.CustomObjectsApi(config.new_client_from_config(
            config_file=str(self.kubeconfig)))

    def requests(self) -> dict[str, int]:
        """The sim's own count of API requests so far (`/_sim/requests`), `verb resource`."""
        from kubernetes import config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        headers = {setting["key"]: setting["value"]
                   for setting in api.configuration.auth_settings().values()
                   if setting.get("in") == "header" and setting.get("value")}
        response = api.call_api("GET", f"{api.configuration.host}/_sim/requests",
                                header_params=headers)
        answer = json.loads(response.read())
        return {f"{entry['verb']} {entry['resource']}": int(entry["count"])
                for entry in answer["requests"]}

    def kubectl(self, *args: str, input_text: str | None = None) -> None:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                   PATH=f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        result = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True,
                                input=input_text, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")


@contextmanager
def start_sim(workdir: Path) -> Iterator[Sim]:
    kubeconfig = workdir / "kubeconfig"
    with spawn("sim", [sys.executable, "-m", "pystol_sim", "--port", "0", "--kubeconfig",
                       str(kubeconfig), "--speed", "10"], workdir) as proc:
        proc.wait_for(lambda: "pystol-sim: serving " in proc.text(), 120, "serving")
        sim = Sim(proc, kubeconfig)
        sim.kubectl("apply", "-f", str(REPO_ROOT / "pystol_api" / "crds"))
        sim.kubectl("wait", "--for", "condition=Established", "--timeout", "60s",
                    "crd/pystolactions.pystol.org")
        sim.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        yield sim


@contextmanager
def start_watcher(sim: Sim, redis_url: str, workdir: Path, profile: Path | None = None
                  ) -> Iterator[Proc]:
    port = free_port()
    env = {"PYSTOL_REDIS_URL": redis_url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig)}
    python = [sys.executable, *(("-m", "cProfile", "-o", str(profile)) if profile else ())]
    with spawn("watcher", [*python, "-m", "pystol_api.cli", "watch", "--liveness",
                           f"http://127.0.0.1:{port}/healthz"], workdir, env) as proc:
        # Active: peering said it may act (not merely alive).
        proc.wait_for(lambda: "Resuming operations" in proc.text(), 120, "active")
        yield proc


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- measuring


@dataclass
class Observer:
    """A watch on the namespace's PystolActions: when each was created, got its job id."""

    sim: Sim
    expected: int
    added: dict[str, float] = field(default_factory=dict)
    job_seen: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._all_added = threading.Event()
        self._api = self.sim.objects()
        listing = self._api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL,
                                                          limit=1)
        self._rv = listing["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                response = self._api.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, watch=True, resource_version=self._rv,
                    allow_watch_bookmarks=True, timeout_seconds=50, _preload_content=False,
                    _request_timeout=(10, 60))
                buffer = b""
                for chunk in response.stream(65536, decode_content=False):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            self._event(time.time(), json.loads(line))
                    if self._stop.is_set():
                        return
        except Exception as error:  # reported by the caller
            self.error = f"{type(error).__name__}: {error}"
            self._all_added.set()

    def _event(self, now: float, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        self._rv = meta.get("resourceVersion", self._rv)
        name = str(meta.get("name") or "")
        if event.get("type") == "ADDED" and name not in self.added:
            self.added[name] = now
            if len(self.added) >= self.expected:
                self._all_added.set()
        if (obj.get("status") or {}).get("jobId") and name not in self.job_seen:
            self.job_seen[name] = now

    def wait_added(self, timeout: float) -> None:
        if not self._all_added.wait(timeout) or self.error:
            raise RuntimeError(f"watch saw {len(self.added)}/{self.expected} objects "
                               f"({self.error or 'timed out'})")

    def stop(self) -> None:
        self._stop.set()


def manifests(count: int) -> str:
    return yaml.safe_dump_all([
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolAction",
         "metadata": {"name": f"burst-{index:05d}", "namespace": NAMESPACE}, "spec": SPEC}
        for index in range(count)])


def job_times(redis_url: str) -> dict[str, float]:
    """object name -> when its job was stored and queued (epoch seconds)."""
    from pystol_worker.store.job_store import JobStore

    store = JobStore(redis.Redis.from_url(redis_url))
    times: dict[str, float] = {}
    cursor = None
    while True:
        page = store.list(cursor=cursor, limit=200)
        for record in page.items:
            if record.source.value == "cr":
                name = record.submitter.split("/", 1)[1]
                if name in times:
                    raise RuntimeError(f"two jobs for {record.submitter}")
                times[name] = record.created_at.timestamp()
        if page.next_cursor is None:
            return times
        cursor = page.next_cursor


def trickle(sim: Sim, observer: Observer, redis_url: str, count: int) -> dict[str, Any]:
    """CRs created one at a time on an idle watcher: its latency without queueing."""
    api = sim.objects()
    client = redis.Redis.from_url(redis_url)
    before = client.zcard("pystol:jobs")
    names = []
    for index in range(count):
        name = f"single-{index:04d}"
        api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "PystolAction",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": SPEC})
        names.append(name)
        deadline = time.monotonic() + 30
        while name not in observer.job_seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: no job within 30 s")
            time.sleep(0.002)
        time.sleep(0.2)  # idle again: its status patches and events are done
    if client.zcard("pystol:jobs") != before + count:
        raise RuntimeError("the trickle did not queue one job per CR")
    queued = job_times(redis_url)
    return {"created_to_queued_s": summary([queued[n] - observer.added[n] for n in names]),
            "created_to_status_s": summary([observer.job_seen[n] - observer.added[n]
                                            for n in names])}


def burst(count: int, workdir: Path, with_watcher: bool, profile: Path | None = None,
          singles: int = 0) -> dict[str, Any]:
    side = "watcher" if with_watcher else "alone"
    phase_dir = workdir / side
    phase_dir.mkdir()
    text = manifests(count)
    with contextlib.ExitStack() as stack:
        redis_proc, redis_url = stack.enter_context(start_redis(phase_dir))
        sim = stack.enter_context(start_sim(phase_dir))
        watcher = stack.enter_context(start_watcher(sim, redis_url, phase_dir, profile)) \
            if with_watcher else None
        observer = Observer(sim, count)
        time.sleep(1.0)  # let everything settle; the watch is open
        cpu_before = {name: cpu_seconds(proc.pid) for name, proc in
                      (("sim", sim.proc), ("redis", redis_proc),
                       *((("watcher", watcher),) if watcher else ()))}
        requests_before = sim.requests()
        started = time.time()
        sim.kubectl("create", "-f", "-", input_text=text)
        kubectl_done = time.time()
        observer.wait_added(120)
        result: dict[str, Any] = {"count": count, "kubectl_seconds": kubectl_done - started,
                                  "all_created_seconds": max(observer.added.values()) - started}
        if watcher is not None:
            client = redis.Redis.from_url(redis_url)
            deadline = time.monotonic() + QUEUE_TIMEOUT_SECONDS
            while client.zcard("pystol:jobs") < count:
                if time.monotonic() > deadline or watcher.process.poll() is not None:
                    raise RuntimeError(f"only {client.zcard('pystol:jobs')}/{count} jobs "
                                       f"queued:\n{watcher.tail()}")
                time.sleep(0.05)
            queued = job_times(redis_url)
            deadline = time.monotonic() + 120
            while len(observer.job_seen) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            result["all_queued_seconds"] = max(queued.values()) - started
            result["jobs"] = len(queued)
            result["created_to_queued_s"] = summary(
                [queued[name] - added for name, added in observer.added.items()])
            result["created_to_status_s"] = summary(
                [observer.job_seen[name] - observer.added[name] for name in observer.job_seen])
            result["statuses_seen"] = len(observer.job_seen)
            time.sleep(1.0)  # the last status patches land
            requests_after = sim.requests()
            result["api_requests"] = {
                key: count - requests_before.get(key, 0)
                for key, count in requests_after.items()
                if count != requests_before.get(key, 0)}
            result["watcher_tracebacks"] = watcher.text().count("Traceback")
            result["queued_log_lines"] = sum("queued job" in line
                                             for line in watcher.text().splitlines())
        cpu_after = {name: cpu_seconds(pid) for name, pid in
                     (("sim", sim.proc.pid), ("redis", redis_proc.pid),
                      *((("watcher", watcher.pid),) if watcher else ()))}
        result["cpu_seconds"] = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
        if watcher is not None and singles:
            result["one_at_a_time"] = trickle(sim, observer, redis_url, singles)
        observer.stop()
    return result


# --------------------------------------------------------------------------- report


def build_rows(results: dict[str, Any]) -> list[Row]:
    w, a = results["watcher"], results["alone"]
    n = results["count"]
    ms = 1000.0

    def lat(key: str, q: str) -> float | None:
        return w[key][q] * ms if w[key].get("n") else None

    def single(key: str, q: str) -> float | None:
        data = (w.get("one_at_a_time") or {}).get(key) or {}
        return data[q] * ms if data.get("n") else None

    return [
        Row(f"kubectl create -f, {n} CRs", "s", w["kubectl_seconds"], a["kubectl_seconds"]),
        Row("start -> every CR created", "s", w["all_created_seconds"],
            a["all_created_seconds"]),
        Row("start -> every job queued (alone: created)", "s", w["all_queued_seconds"],
            a["all_created_seconds"]),
        Row("CR created -> job queued p50", "ms", lat("created_to_queued_s", "p50"), None),
        Row("CR created -> job queued p99", "ms", lat("created_to_queued_s", "p99"), None),
        Row("CR created -> job queued max", "ms", lat("created_to_queued_s", "max"), None),
        Row("CR created -> status.jobId seen p50", "ms", lat("created_to_status_s", "p50"),
            None),
        Row("CR created -> status.jobId seen p99", "ms", lat("created_to_status_s", "p99"),
            None),
        Row(f"one CR at a time ({results['singles']}): created -> queued p50", "ms",
            single("created_to_queued_s", "p50"), None),
        Row(f"one CR at a time ({results['singles']}): created -> queued p99", "ms",
            single("created_to_queued_s", "p99"), None),
        Row(f"one CR at a time ({results['singles']}): created -> status p50", "ms",
            single("created_to_status_s", "p50"), None),
        Row("sim CPU per CR", "ms", w["cpu_seconds"]["sim"] / n * ms,
            a["cpu_seconds"]["sim"] / n * ms),
        Row("watcher CPU per CR", "ms", w["cpu_seconds"]["watcher"] / n * ms, None),
        Row("redis CPU per CR", "ms", w["cpu_seconds"]["redis"] / n * ms,
            a["cpu_seconds"]["redis"] / n * ms),
        Row("watcher PATCHes per CR (object + status)", "count",
            requests_per_cr(w, n, "patch pystolactions", "patch pystolactions/status"), None),
        Row("watcher Event POSTs per CR", "count", requests_per_cr(w, n, "create events"),
            None),
    ]


def requests_per_cr(side: dict[str, Any], count: int, *keys: str) -> float | None:
    """API requests of these kinds during the burst, per CR (None: not counted then)."""
    counted = side.get("api_requests")
    if counted is None:
        return None
    return sum(counted.get(key, 0) for key in keys) / count


def checks(results: dict[str, Any]) -> list[tuple[str, bool]]:
    w, n = results["watcher"], results["count"]
    return [
        (f"{w['jobs']} jobs for the burst of {n} CRs (one each)", w["jobs"] == n),
        (f"{w['statuses_seen']} of {n} statuses show their job", w["statuses_seen"] == n),
        (f"{w['queued_log_lines']} 'queued job' log lines", w["queued_log_lines"] == n),
        (f"{w['watcher_tracebacks']} tracebacks in the watcher log",
         w["watcher_tracebacks"] == 0),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cr_watcher",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="50 CRs instead of 1,000")
    parser.add_argument("--count", type=int, help="CRs in the burst")
    parser.add_argument("--output", type=Path, help="JSON results file (default "
                        "bench/results/cr_watcher.json, cr_watcher_smoke.json with --smoke)")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: print the table of an earlier results file")
    parser.add_argument("--profile-watcher", type=Path, metavar="FILE",
                        help="diagnosis: run the watcher under cProfile (slower; do not "
                             "record those figures)")
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render)
    count = args.count or (50 if args.smoke else 1000)
    singles = 10 if args.smoke else 50
    output = args.output or default_output("cr_watcher", bool(args.smoke))
    provenance = Provenance.now()
    results: dict[str, Any] = {"count": count, "singles": singles,
                               "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-cr-watcher-") as tmp:
        workdir = Path(tmp)
        print(f"burst of {count} PystolActions, kubectl create alone ...", flush=True)
        results["alone"] = burst(count, workdir, with_watcher=False)
        print(f"burst of {count} PystolActions, with pystol watch ...", flush=True)
        results["watcher"] = burst(count, workdir, with_watcher=True,
                                   profile=args.profile_watcher, singles=singles)
    results["loadavg_end"] = os.getloadavg()
    config = {"count": count, "singles": singles, "smoke": bool(args.smoke)}
    return report("cr_watcher", output, provenance, build_rows(results), checks(results),
                  results, config=config, labels=("watcher", "kubectl alone"))


if __name__ == "__main__":
    sys.exit(main())
