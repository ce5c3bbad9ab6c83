"""A private simulated cluster loaded from a snapshot, for one rehearsal.

The rehearsal must never share a cluster with anything: it deletes pods, and its speed
is its own. So each rehearsal starts its own `pystol-sim --snapshot FILE --port 0` (the
console script, as a user would; the worker's layers may not import the simulator), reads
where it serves from its first line of output, and kills it when the rehearsal ends,
however it ends.

The child runs in a process group of its own (`start_new_session`), so that stopping it
reaches everything it started, and so that a Ctrl-C typed at `pystol rehearse` reaches
the rehearsal, which then stops the child in its `finally`. A `finally` does not run when
the parent is SIGKILLed (a worker killed mid-rehearsal), so on Linux the child also asks
the kernel to kill it when its parent dies (`PR_SET_PDEATHSIG`): no private cluster
outlives its rehearsal. Its stdout and stderr go to
files in the rehearsal's work directory rather than pipes: a pipe nobody reads fills up
and stalls the simulator mid-rehearsal.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pystol_worker.rehearsal.sim_serving import parse_sim_serving

START_TIMEOUT_SECONDS = 120.0  # loading a 100,000-object snapshot takes a while
STOP_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 10.0


class PrivateSimError(Exception):
    """The private simulated cluster could not be started or refused a request."""


def sim_executable() -> list[str]:
    """The `pystol-sim` console script of this installation (next to this Python first,
    so that a virtualenv's is used even when it is not on PATH), else `python -m
    pystol_sim`."""
    beside = Path(sys.executable).with_name("pystol-sim")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pystol-sim")
    return [found] if found else [sys.executable, "-m", "pystol_sim"]


@dataclass
class PrivateSim:
    """A running private sim: where it serves, its kubeconfig, and its admin token (the
    kubeconfig's user, the only one that reaches `/_sim/`)."""

    process: subprocess.Popen[bytes]
    url: str
    kubeconfig: Path
    token: str
    ssl_context: ssl.SSLContext

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A JSON request to the sim as its admin: (status, decoded body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS,
                                        context=self.ssl_context) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw or b"null")
            except ValueError:
                return error.code, raw.decode(errors="replace")

    def set_speed(self, speed: float) -> float:
        status, body = self.request("PUT", "/_sim/speed", {"speed": speed})
        if status != 200:
            message = body.get("message") if isinstance(body, dict) else body
            raise PrivateSimError(f"the private cluster refused speed {speed:g}: {message}")
        return float(body["speed"])

    def truth(self) -> list[dict[str, Any]]:
        status, body = self.request("GET", "/_sim/truth")
        if status != 200:
            raise PrivateSimError(f"the private cluster's /_sim/truth answered {status}")
        pods: list[dict[str, Any]] = body["pods"]
        return pods


PR_SET_PDEATHSIG = 1


def _death_signal_setter() -> Callable[[], None] | None:
    """A function for the child to run before exec that has the kernel SIGKILL it when
    its parent dies (Linux only). Everything is looked up here, in the parent: the child
    between fork and exec must not import or allocate (another thread of the parent may
    have held a lock at the fork), so it only calls the already-bound `prctl`."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    kill = int(signal.SIGKILL)

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, kill)
    return die_with_parent


def _read_kubeconfig(path: Path) -> tuple[str, ssl.SSLContext]:
    config = yaml.safe_load(path.read_text())
    token = str(config["users"][0]["user"]["token"])
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    return token, ssl.create_default_context(cadata=ca.decode())


def _first_line(process: subprocess.Popen[bytes], stdout: Path, timeout: float) -> str:
    """The child's first line of stdout, once it is whole."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = stdout.read_bytes().decode(errors="replace") if stdout.exists() else ""
        if "\n" in text:
            return text.split("\n", 1)[0]
        if process.poll() is not None:
            raise PrivateSimError(f"pystol-sim exited with code {process.returncode} before "
                                  "serving")
        time.sleep(0.05)
    raise PrivateSimError(f"pystol-sim did not serve within {timeout:g}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, then SIGKILL it after a grace period."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT_SECONDS)


@contextlib.contextmanager
def private_sim(snapshot: Path, workdir: Path, *, speed: float = 1.0,
                timeout: float = START_TIMEOUT_SECONDS) -> Iterator[PrivateSim]:
    """Start `pystol-sim --snapshot SNAPSHOT` in `workdir` and yield it; always stopped.

    It starts at `speed` (1 by default: the rehearsal reads the workloads' delays first
    and then sets the speed with `PrivateSim.set_speed`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    stdout_path, stderr_path = workdir / "sim.out", workdir / "sim.err"
    command = [*sim_executable(), "--snapshot", str(snapshot), "--port", "0",
               "--kubeconfig", str(kubeconfig), "--speed", f"{speed:g}"]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout,
                                       stderr=stderr, start_new_session=True,
                                       preexec_fn=_death_signal_setter(),
                                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
        except OSError as error:
            raise PrivateSimError(f"cannot start pystol-sim ({command[0]}): "
                                  f"{error.strerror or error}") from None
    try:
        try:
            line = _first_line(process, stdout_path, timeout)
        except PrivateSimError as error:
            problems = stderr_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise PrivateSimError(f"{error}" + (": " + " | ".join(problems) if problems
                                                else "")) from None
        found = parse_sim_serving(line)
        if found is None:
            raise PrivateSimError("pystol-sim's first line of output was not its serving "
                                  f"line: {line[:200]!r}")
        url, path = found
        token, context = _read_kubeconfig(path)
        yield PrivateSim(process, url, path, token, context)
    finally:
        stop(process)
