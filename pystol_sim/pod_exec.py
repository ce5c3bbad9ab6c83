"""`pods/exec` over WebSocket, the way the kubelet answers it.

There are no real containers, so a small interpreter answers the commands
chaos tools actually send: `kill 1` (or `kill -9 1`, `kill -s KILL 1`, also
wrapped in `sh -c`) makes the container's main process die, and the sim's
kubelet restarts it with a bumped restart count and a readiness dip; `true`,
`false`, `exit N`, `echo`, `hostname`, `sleep` and `date` behave as in a
shell; anything else is "not found" with exit code 127.

The framing is the Kubernetes channel protocol (`v4.channel.k8s.io` and
`v5.channel.k8s.io`): every binary message starts with a channel byte, 1 for
stdout, 2 for stderr, 3 for the final Status carrying the exit code.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from pystol_sim.cluster import Cluster
from pystol_sim.errors import ApiError

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
STDOUT, STDERR, ERROR, CLOSE = 1, 2, 3, 255
SIGNALS = {"": 15, "15": 15, "TERM": 15, "SIGTERM": 15, "9": 9, "KILL": 9, "SIGKILL": 9,
           "2": 2, "INT": 2, "SIGINT": 2, "1": 1, "HUP": 1, "SIGHUP": 1,
           "3": 3, "QUIT": 3, "SIGQUIT": 3, "10": 10, "USR1": 10, "SIGUSR1": 10,
           "12": 12, "USR2": 12, "SIGUSR2": 12, "18": 18, "CONT": 18, "SIGCONT": 18,
           "19": 19, "STOP": 19, "SIGSTOP": 19}
#: Signals PID 1 survives in the simulation (a process stopped, or continued, keeps running).
SURVIVED = frozenset({18, 19})
#: A pod annotation whose text every exec in the pod prints on stdout and stderr.
EXEC_OUTPUT = "sim.pystol.org/exec-output"


def _kill_signal(argv: list[str]) -> int | None:
    """The signal a `kill ... 1` command sends to PID 1, or None when it is not one."""
    if not argv or argv[0] not in ("kill", "/bin/kill", "/usr/bin/kill") or argv[-1] != "1":
        return None
    flags = argv[1:-1]
    if not flags:
        return 15
    if flags[0] == "-s" and len(flags) == 2:
        return SIGNALS.get(flags[1].upper())
    if len(flags) == 1 and flags[0].startswith("-"):
        return SIGNALS.get(flags[0][1:].upper())
    return None


async def run_command(argv: list[str], pod: dict[str, Any], speed: float
                      ) -> tuple[bytes, bytes, int, int | None]:
    """Interpret one command: (stdout, stderr, exit code, signal sent to PID 1 or None)."""
    if len(argv) >= 3 and argv[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and argv[1] == "-c":
        try:
            argv = shlex.split(argv[2])
        except ValueError as error:
            return b"", f"sh: syntax error: {error}\n".encode(), 2, None
    if not argv:
        return b"", b"", 0, None
    signal = _kill_signal(argv)
    if signal is not None:
        return b"", b"", 0, signal
    name = argv[0].rsplit("/", 1)[-1]
    if name == "true":
        return b"", b"", 0, None
    if name == "false":
        return b"", b"", 1, None
    if name == "exit":
        code = int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else 0
        return b"", b"", code % 256, None
    if name == "echo":
        return (" ".join(argv[1:]) + "\n").encode(), b"", 0, None
    if name == "hostname" or argv == ["cat", "/etc/hostname"]:
        return (pod["metadata"]["name"] + "\n").encode(), b"", 0, None
    if name == "date":
        return (time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()) + "\n").encode(), \
            b"", 0, None
    if name == "sleep" and len(argv) == 2:
        try:
            await asyncio.sleep(float(argv[1]) / speed)
        except ValueError:
            return b"", f"sleep: invalid time interval '{argv[1]}'\n".encode(), 1, None
        return b"", b"", 0, None
    return b"", f"sh: {argv[0]}: not found\n".encode(), 127, None


def _status(code: int) -> bytes:
    if code == 0:
        return orjson.dumps({"metadata": {}, "status": "Success"})
    return orjson.dumps({
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command, "
                   f"exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})


async def serve_exec(request: web.Request, cluster: Cluster, namespace: str, name: str
                     ) -> web.StreamResponse:
    pods = cluster.pods
    pod = cluster.store.get(pods, namespace, name)
    argv = request.query.getall("command", [])
    if not argv:
        raise ApiError(400, "you must specify at least 1 command")
    containers = [c.get("name") for c in pod.get("spec", {}).get("containers") or ()]
    container = request.query.get("container") or (containers[0] if containers else "")
    if container not in containers:
        raise ApiError(400, f"container {container} is not valid for pod {name}")
    statuses = {cs["name"]: cs for cs in pod.get("status", {}).get("containerStatuses") or ()}
    if pod.get("status", {}).get("phase") != "Running" or "running" not in statuses.get(
            container, {}).get("state", {}):
        raise ApiError(400, f"unable to upgrade connection: container {container} not found in "
                       f"pod {name}" if container not in statuses else
                       f"unable to upgrade connection: container {container} is not running")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "exec needs a WebSocket upgrade (Upgrade: websocket) with one of "
                       f"the subprotocols {', '.join(PROTOCOLS)}")
    ws = web.WebSocketResponse(protocols=PROTOCOLS)
    await ws.prepare(request)
    stdout, stderr, code, signal = await run_command(argv, pod, cluster.speed)
    printed = (pod.get("metadata", {}).get("annotations") or {}).get(EXEC_OUTPUT)
    if printed:  # what the container's own shell or wrappers print around any command
        stdout, stderr = (printed + "\n").encode() + stdout, (printed + "\n").encode() + stderr
    if stdout and request.query.get("stdout", "true").lower() in ("true", "1"):
        await ws.send_bytes(bytes([STDOUT]) + stdout)
    if stderr and request.query.get("stderr", "true").lower() in ("true", "1"):
        await ws.send_bytes(bytes([STDERR]) + stderr)
    await ws.send_bytes(bytes([ERROR]) + _status(code))
    if signal is not None and signal not in SURVIVED:
        cluster.restart_container(namespace, name, container, 128 + signal)
    await ws.close()
    # Drain whatever the client still sends (stdin, close frame) so the socket ends cleanly.
    async for message in ws:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break
    return ws
