"""Health files: how Kubernetes tells a working worker or beat from a stuck one.

A worker serves no HTTP, and asking it over the broker (`celery inspect ping`) goes through
Redis, so during a Redis outage every worker would look dead and be restarted, which fixes
nothing. Instead each process touches a file of its own from the loop that does its work
(the worker's event loop, beat's scheduler tick) and `pystol health` compares the file's
age with a maximum: a process whose loop stopped (deadlocked, wedged on a call, SIGSTOPped)
leaves the file to age, and the liveness probe restarts it. The check reads one file and
imports nothing but the standard library, so the probe costs little.

This module is the file's two sides; the hooks that call `touch` are in
`pystol_worker.process.worker_main` and `pystol_worker.process.beat_main`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("pystol.health")


def health_file_path(health_dir: str, process: str) -> Path | None:
    """`<health_dir>/pystol-<process>.health`, or None when `health_dir` is empty (off).

    One file per kind of process, so a worker and beat on the same machine (`pystol up`)
    never keep each other's file fresh."""
    if not health_dir:
        return None
    return Path(health_dir) / f"pystol-{process}.health"


class HealthFile:
    """The writing side: `touch` sets the file's modification time to now.

    It never raises: a health file that cannot be written must not stop a worker from
    running jobs. The first failure is logged (then the probe says the rest); a later
    success is logged too, so the log shows when it works again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._failing = False

    def touch(self) -> None:
        try:
            self.path.touch()
        except OSError as error:
            if not self._failing:
                log.warning("cannot write the health file %s: %s (the liveness probe will "
                            "count this process as stuck)", self.path, error)
            self._failing = True
            return
        if self._failing:
            log.info("health file %s written again", self.path)
        self._failing = False


def check_health_file(path: Path, max_age: float, now: float | None = None) -> str | None:
    """None when `path` was touched at most `max_age` seconds ago; else why not, one line.

    The file's modification time is wall-clock time. A file dated more than `max_age` in
    the future means the clock was set back; it counts as stale rather than as fresh for
    however long the jump was, and a live process makes it fresh again at its next touch.
    """
    try:
        modified = os.stat(path).st_mtime
    except FileNotFoundError:
        return f"no health file {path}: the process has not started, or writes elsewhere"
    except OSError as error:
        return f"cannot read the health file {path}: {error.strerror or error}"
    age = (time.time() if now is None else now) - modified
    if age > max_age:
        return (f"health file {path} is {age:.1f} s old (at most {max_age:g} s): the process "
                "stopped working")
    if age < -max_age:
        return (f"health file {path} is dated {-age:.1f} s in the future: the clock was set "
                "back")
    return None
