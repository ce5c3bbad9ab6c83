"""Pystol's own processes (worker, API) started the way a user starts them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests


@dataclass
class Process:
    name: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output[-lines:])

    def kill_group(self) -> None:
        """SIGKILL the process and every child it forked, as a lost machine would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        with contextlib.suppress(ProcessLookupError):  # pool children left behind, if any
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


def spawn(name: str, args: list[str], env: dict[str, str]) -> Process:
    # Own session: a test can SIGKILL the whole process group, pool children included.
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
                               start_new_session=True)
    handle = Process(name, process)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            handle.output.append(line.rstrip("\n"))
    threading.Thread(target=pump, name=f"pump-{name}", daemon=True).start()
    return handle


def started(name: str, argv: list[str], env: dict[str, str], ready_text: str,
            timeout: float = 30) -> Process:
    """Spawn a process and wait until a line of its output contains `ready_text`; a process
    that exits or stays silent that long is stopped and its last lines raised."""
    handle = spawn(name, argv, env)
    deadline = time.monotonic() + timeout
    while not any(ready_text in line for line in handle.output):
        if handle.process.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"{name} did not start:\n{handle.tail()}")
        time.sleep(0.05)
    return handle


@contextmanager
def worker(env: dict[str, str], concurrency: int = 2, pool: str = "prefork"
           ) -> Iterator[Process]:
    handle = started("worker", [sys.executable, "-m", "pystol_api.cli", "worker",
                                "--concurrency", str(concurrency), "--pool", pool], env,
                     ready_text="ready.")
    try:
        yield handle
    finally:
        handle.stop()


def start_beat(env: dict[str, str]) -> Process:
    """`pystol beat`, once it holds redbeat's lock (and so fires schedules)."""
    return started("beat", [sys.executable, "-m", "pystol_api.cli", "beat"], env,
                   ready_text="Acquired lock")


@contextmanager
def beat(env: dict[str, str]) -> Iterator[Process]:
    handle = start_beat(env)
    try:
        yield handle
    finally:
        handle.stop()


@contextmanager
def api(env: dict[str, str], port: int, token: str) -> Iterator[Process]:
    handle = spawn("api", [sys.executable, "-m", "pystol_api.cli", "api"],
                   dict(env, PYSTOL_API_BIND=f"127.0.0.1:{port}", PYSTOL_API_TOKENS=token))
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if handle.process.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"API did not start:\n{handle.tail()}")
        time.sleep(0.1)
    try:
        yield handle
    finally:
        handle.stop()
