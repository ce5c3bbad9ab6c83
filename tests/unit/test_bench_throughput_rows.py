"""bench.throughput's arithmetic: Redis counters less the benchmark's own INFO calls,
per-job figures, and the rows built from them (no process is started here)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.pipeline import Proc
from bench.throughput import build_rows, checks, difference, parse_args, per_job, wait_for_tasks


def figures(commands: float, reads: float, bytes_in: float, bytes_out: float,
            cpu_s: float) -> dict[str, float]:
    return {"commands": commands, "reads": reads, "bytes_in": bytes_in,
            "bytes_out": bytes_out, "cpu_s": cpu_s}


def test_the_benchmarks_own_info_calls_are_subtracted_but_not_their_cpu() -> None:
    probe = figures(1, 1, 40, 2000, 0.0001)
    total = difference(figures(1002, 502, 10080, 44000, 1.5), figures(0, 0, 0, 0, 0.5),
                       probe, 2)
    assert total == pytest.approx(figures(1000, 500, 10000, 40000, 1.0))
    assert per_job(total, 100) == pytest.approx(
        {"commands": 10, "round_trips": 5, "kb_in": 100 / 1024, "kb_out": 400 / 1024,
         "cpu_ms": 10})


def run(jobs_per_s: float, cpu_ms: float, commands: float = 50.0) -> dict[str, Any]:
    per = {"commands": commands, "round_trips": commands / 2, "kb_in": 10.0, "kb_out": 5.0,
           "cpu_ms": cpu_ms}
    return {"jobs_per_s": jobs_per_s, "redis_per_job": per, "redis_submit_per_job": per,
            "recorded": 40, "failed": [], "tracebacks": 0}


def results() -> dict[str, Any]:
    return {"runs": {"bare-1": run(400, 0.2, 8), "bare-2": run(760, 0.2, 8),
                     "pystol-1-unreached": run(100, 1.0), "pystol-2-unreached": run(180, 1.0),
                     "pystol-1-default": run(20, 1.0), "pystol-2-default": run(40, 1.0)},
            "left_in_queues": 0, "api_tracebacks": 0}


def test_rows_compare_each_configuration_with_bare_celery_at_the_same_process_count() -> None:
    rows = {row.metric: row for row in build_rows(results())}
    one = rows["jobs/s, 1 process, kube QPS unreached"]
    assert (one.pystol, one.baseline, one.ratio) == (100, 400, 4.0)  # a rate: bare / pystol
    assert rows["jobs/s, 2 processes, default kube QPS 20"].baseline == 760
    scaling = rows["scaling 1 -> 2 processes, kube QPS unreached"]
    assert scaling.pystol == pytest.approx(1.8) and scaling.baseline == pytest.approx(1.9)
    assert rows["Redis commands per job"].ratio == pytest.approx(50 / 8)
    carried = rows["jobs/s one Redis core carries at this cost"]
    assert carried.pystol == pytest.approx(1000) and carried.baseline == pytest.approx(5000)


def test_a_run_with_a_missing_or_failed_job_fails_the_checks() -> None:
    cfg = parse_args(["--smoke"])[0]
    assert all(ok for _, ok in checks(cfg, results()))
    broken = results()
    broken["runs"]["pystol-2-default"]["failed"] = ["j-1: failed"]
    broken["runs"]["bare-1"]["recorded"] = 39
    assert [ok for _, ok in checks(cfg, broken)].count(False) == 2


def test_the_end_of_a_run_is_read_from_the_workers_log_in_pieces(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_bytes(b"Task a[1] succeeded in 0.01s\nTask a[2] succ")
    with subprocess.Popen(["sleep", "30"]) as process:
        worker = Proc("worker", process, log)
        finish = threading.Timer(0.3, lambda: log.open("ab").write(b"eeded in 0.01s\n"))
        finish.start()
        try:
            wait_for_tasks(worker, 2, timeout=30)  # the second marker, cut in two, counts
            with pytest.raises(RuntimeError, match="2 of 3 tasks"):
                wait_for_tasks(worker, 3, timeout=0.3)
        finally:
            finish.cancel()
            process.kill()
