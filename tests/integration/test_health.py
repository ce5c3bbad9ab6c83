"""Liveness of workers and beat: real `pystol worker` / `pystol beat` processes, a real
redis-server, and `pystol health` run as the chart's exec probe runs it.

A process whose loop stops (SIGSTOP here; a deadlock or a call that never returns in
real life) must fail the probe within --max-age; a worker whose Redis is gone must not,
because restarting it would not bring Redis back. Intervals are small (PYSTOL_HEALTH_*)
so the whole module takes seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.pystol_processes import Process, beat, worker
from tests.support.redis_server import RedisServer

INTERVAL = 0.2  # PYSTOL_HEALTH_INTERVAL_SECONDS: the worker's touch
MAX_AGE = 3.0  # beat touches after each tick, at least once a second
PROBE_SLACK = 1.5  # one `pystol health` run, and the poll between runs


def env_for(redis_url: str, health_dir: Path) -> dict[str, str]:
    return {"PYSTOL_REDIS_URL": redis_url, "PYSTOL_HEALTH_DIR": str(health_dir),
            "PYSTOL_HEALTH_INTERVAL_SECONDS": str(INTERVAL),
            # no cluster is needed: the reaper's one pass at start fails and is logged
            "PYSTOL_KUBECONFIG": str(health_dir / "no-kubeconfig"),
            "PYSTOL_REAPER_INTERVAL_SECONDS": "3600"}


def probe(path: Path) -> subprocess.CompletedProcess[str]:
    """The chart's livenessProbe command."""
    return subprocess.run([sys.executable, "-m", "pystol_api.cli", "health", "--file",
                           str(path), "--max-age", str(MAX_AGE)],
                          capture_output=True, text=True, timeout=30)


def wait_for_probe(path: Path, exit_code: int, within: float, process: Process) -> float:
    """Seconds until the probe exits with `exit_code`; fails after `within` seconds."""
    start = time.monotonic()
    while True:
        result = probe(path)
        if result.returncode == exit_code:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"probe still exits {result.returncode} after {within} s: "
                                 f"{result.stdout}{result.stderr}\n{process.tail()}")
        time.sleep(0.1)


@contextmanager
def stopped(process: Process) -> Iterator[None]:
    """SIGSTOP the process (not its pool children), SIGCONT it afterwards."""
    os.kill(process.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.process.pid, signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own: beat's lock and the outage test touch nobody else's."""
    with RedisServer.start(tmp_path) as server:
        yield server


def test_a_stopped_worker_fails_its_probe_and_recovers(redis_server: RedisServer,
                                                       tmp_path: Path) -> None:
    health = tmp_path / "pystol-worker.health"
    with worker(env_for(redis_server.url, tmp_path), concurrency=1) as process:
        wait_for_probe(health, 0, within=MAX_AGE, process=process)
        assert probe(health).stdout.startswith("ok: ")
        with stopped(process):
            took = wait_for_probe(health, 1, within=MAX_AGE + PROBE_SLACK, process=process)
            result = probe(health)
            assert result.returncode == 1
            assert result.stderr.startswith(f"error: health file {health} is ")
            assert len(result.stderr.strip().splitlines()) == 1
        assert took <= MAX_AGE + PROBE_SLACK
        wait_for_probe(health, 0, within=2 * INTERVAL + PROBE_SLACK, process=process)


def test_a_stopped_beat_fails_its_probe(redis_server: RedisServer, tmp_path: Path) -> None:
    health = tmp_path / "pystol-beat.health"
    with beat(env_for(redis_server.url, tmp_path)) as process:
        wait_for_probe(health, 0, within=MAX_AGE, process=process)
        before = health.stat().st_mtime
        time.sleep(1.5)
        assert health.stat().st_mtime > before  # ticking, not just touched at start
        with stopped(process):
            took = wait_for_probe(health, 1, within=MAX_AGE + PROBE_SLACK, process=process)
        assert took <= MAX_AGE + PROBE_SLACK
        wait_for_probe(health, 0, within=1.0 + PROBE_SLACK, process=process)


def test_a_redis_outage_keeps_the_worker_live(redis_server: RedisServer,
                                             tmp_path: Path) -> None:
    health = tmp_path / "pystol-worker.health"
    with worker(env_for(redis_server.url, tmp_path), concurrency=1) as process:
        wait_for_probe(health, 0, within=MAX_AGE, process=process)
        redis_server.process.terminate()
        redis_server.process.wait(10)
        deadline = time.monotonic() + 10
        while not any("Cannot connect to redis" in line for line in process.output):
            assert time.monotonic() < deadline, process.tail()
            time.sleep(0.1)
        # Waiting for Redis, the event loop does not run; the reconnect loop touches the
        # file. Watch for twice --max-age: every probe in that time must pass.
        until = time.monotonic() + 2 * MAX_AGE
        while time.monotonic() < until:
            result = probe(health)
            assert result.returncode == 0, f"{result.stderr}\n{process.tail()}"
            time.sleep(0.3)
        assert process.process.poll() is None
