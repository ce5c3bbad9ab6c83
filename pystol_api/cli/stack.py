"""`pystol up`: the whole Pystol stack on one machine, as supervised child processes.

Trying Pystol should take one command, not a Redis install, a kubeconfig and three
terminals. `pystol up` finds or starts Redis, optionally starts a simulated cluster
(`pystol-sim`), then a worker and the API, waits until the API is ready and prints
what to paste next. It then supervises: every child's output is shown prefixed with
its name, Ctrl-C or SIGTERM stops the children in reverse order (SIGTERM, then
SIGKILL of the child's whole process group after a timeout) and exits 0, and a child
that dies on its own stops the rest and exits 1 after showing its last lines — a
half-running stack that looks healthy is worse than none.

Children run in sessions of their own, so a Ctrl-C typed in the terminal reaches
only this supervisor, which then stops them in order; the worker gets the longest
grace period because it must revert any fault it holds before it exits.

Everything that decides (ports, which Redis, the command lines, the environment,
parsing the simulator's serving line) is a plain function so it can be tested
without starting anything. This module is imported only by `pystol up`, and it is
also runnable (`python -m pystol_api.cli.stack fake-redis --port P`) to host fakeredis's
TCP server as a child like the others.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Literal

import click

# The parser lives with the rehearsal, which starts the simulator too; re-exported here.
from pystol_worker.rehearsal.sim_serving import parse_sim_serving as parse_sim_serving

if TYPE_CHECKING:
    from pystol_worker.core.settings import Settings

LOCALHOST = "127.0.0.1"
DEMO_EXAMPLE = ("shop", "app=web")
STOP_TIMEOUT = 10.0
WORKER_STOP_TIMEOUT = 30.0
REDIS_READY_TIMEOUT = 20.0
SIM_READY_TIMEOUT = 60.0
API_READY_TIMEOUT = 120.0
LAST_LINES = 20
NAME_COLOURS = {"redis": "red", "sim": "magenta", "api": "green"}

RedisKind = Literal["existing", "redis-server", "fakeredis"]
RedisChoice = Literal["auto", "server", "fake"]


class StackError(Exception):
    """The stack cannot be started; the message says why and what to do."""


class ChildDied(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(child.name)
        self.child = child


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while starting."""


@dataclass(frozen=True)
class UpOptions:
    sim: bool = False
    scenario: Path | None = None
    snapshot: Path | None = None
    port: int = 8080
    workers: int = 1
    redis: RedisChoice = "auto"
    worker_concurrency: int = 2


@dataclass(frozen=True)
class RedisPlan:
    """Which Redis the stack uses: one that already answers, or one to start."""

    kind: RedisKind
    url: str
    command: tuple[str, ...] = ()
    note: str = ""

    @property
    def description(self) -> str:
        return {"existing": "already running",
                "redis-server": "redis-server, in memory, stopped with the stack",
                "fakeredis": "fakeredis, in memory, for trying things out only"}[self.kind]


# -- pure decisions ----------------------------------------------------------------------


def find_free_port(host: str = LOCALHOST, avoid: frozenset[int] = frozenset()) -> int:
    """A port the kernel says is free now (another process may still take it first), and
    not one of `avoid`: ports already promised to a child that has not bound them yet."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def redis_answers(url: str, timeout: float = 1.0, sentinel_master: str = "") -> bool:
    """True when a Redis at `url` answers PING (with the URL's credentials, TLS options or
    Sentinels, if any)."""
    import redis

    from pystol_worker.store.redis_connection import client_for, parse_redis_url

    try:
        client = client_for(parse_redis_url(url, sentinel_master),
                            socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def fakeredis_serves_celery() -> bool:
    """fakeredis's TCP server runs Lua (kombu's Redis transport needs EVALSHA) only with lupa."""
    return (importlib.util.find_spec("fakeredis") is not None
            and importlib.util.find_spec("lupa") is not None)


def redis_server_command(binary: str, port: int, workdir: Path) -> list[str]:
    """A throw-away redis-server: localhost only, nothing written to disk."""
    return [binary, "--port", str(port), "--bind", LOCALHOST, "--save", "",
            "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"]


def fake_redis_command(port: int) -> list[str]:
    return [sys.executable, "-m", "pystol_api.cli.stack", "fake-redis", "--port", str(port)]


def plan_redis(configured_url: str, *, choice: RedisChoice, answers: bool,
               redis_server: str | None, fake_ok: bool, port: int, workdir: Path) -> RedisPlan:
    """Use the configured Redis if it answers, else start redis-server, else fakeredis."""
    from pystol_worker.store.redis_connection import shown_url

    url = f"redis://{LOCALHOST}:{port}/0"
    if choice == "auto" and answers:
        return RedisPlan("existing", configured_url)
    missing = f"nothing answers at {shown_url(configured_url)}; " if choice == "auto" else ""
    if choice in ("auto", "server") and redis_server:
        return RedisPlan("redis-server", url, tuple(redis_server_command(redis_server, port,
                                                                          workdir)),
                         f"{missing}starting redis-server on port {port}")
    if choice in ("auto", "fake") and fake_ok:
        why = f"{missing}redis-server is not on PATH; " if choice == "auto" else ""
        return RedisPlan("fakeredis", url, tuple(fake_redis_command(port)),
                         f"{why}starting fakeredis on port {port}: it is slow and for trying "
                         "things out only")
    if choice == "server":
        raise StackError("redis-server is not on PATH: install it (apt-get install "
                         "redis-server) or use --redis auto")
    if choice == "fake":
        raise StackError("fakeredis cannot serve Celery here: it needs Lua "
                         "(pip install 'fakeredis[lua]')")
    raise StackError(f"no Redis: nothing answers at {shown_url(configured_url)} "
                     "(PYSTOL_REDIS_URL), "
                     "redis-server is not on PATH, and fakeredis cannot serve Celery without "
                     "Lua. Install redis-server (apt-get install redis-server), run "
                     "pip install 'fakeredis[lua]', or point PYSTOL_REDIS_URL at a Redis.")


def sim_command(kubeconfig: Path, scenario: Path | None = None,
                snapshot: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "pystol_sim", "--port", "0",
               "--kubeconfig", str(kubeconfig)]
    if scenario is not None:
        command += ["--scenario", str(scenario)]
    if snapshot is not None:
        command += ["--snapshot", str(snapshot)]
    return command


def worker_command(concurrency: int = 2) -> list[str]:
    return [sys.executable, "-m", "pystol_api.cli", "worker", "--concurrency", str(concurrency)]


def api_command() -> list[str]:
    return [sys.executable, "-m", "pystol_api.cli", "api"]


def beat_command() -> list[str]:
    return [sys.executable, "-m", "pystol_api.cli", "beat"]


def watcher_command(liveness_port: int) -> list[str]:
    return [sys.executable, "-m", "pystol_api.cli", "watch", "--standalone", "--liveness",
            f"http://{LOCALHOST}:{liveness_port}/healthz"]


def child_environment(base: Mapping[str, str], *, redis_url: str, kubeconfig: str,
                      api_tokens: Sequence[str], api_bind: str,
                      signing_key: str = "") -> dict[str, str]:
    """The children's environment: ours, plus where Redis, the cluster and the API are,
    and the signing key they share (PYSTOL_SIGNING_KEY if set, else one made for this
    run: every process of the stack must seal and check grants with the same key)."""
    env = dict(base)
    env.update({
        "PYSTOL_REDIS_URL": redis_url,
        "PYSTOL_KUBECONFIG": kubeconfig,
        "PYSTOL_API_TOKENS": ",".join(api_tokens),
        "PYSTOL_API_BIND": api_bind,
        "PYSTOL_SIGNING_KEY": base.get("PYSTOL_SIGNING_KEY") or signing_key
        or secrets.token_hex(32),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def scenario_example(scenario: Path | None) -> tuple[str, str] | None:
    """(namespace, selector) of the first deployment or statefulset of a scenario.

    The demo scenario (no file) has `shop` / `app=web`. This reads the YAML itself
    (pystol_api never imports pystol_sim); a file it cannot read gives None.
    """
    if scenario is None:
        return DEMO_EXAMPLE
    import yaml

    try:
        data = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    for kind in ("deployments", "statefulsets"):
        for item in data.get(kind) or []:
            if not isinstance(item, dict):
                continue
            name = item.get("name") or (f"{item['name_prefix']}-0" if item.get("name_prefix")
                                        else None)
            labels = item.get("labels") or ({"app": name} if name else {})
            if not isinstance(labels, dict) or not labels:
                continue
            key = "app" if "app" in labels else next(iter(labels))
            return str(item.get("namespace") or "default"), f"{key}={labels[key]}"
    return None


def path_export(prefix: str | None = None, base_prefix: str | None = None,
                search_path: str | None = None) -> str | None:
    """The `export PATH=…` line a new terminal needs to find `pystol`, or None.

    Why: `bash scripts/dev.sh up` (and any virtualenv install) puts `pystol` in the
    venv's `bin/`, which a new terminal does not have on its PATH, so the pasted
    command would answer "command not found". A virtualenv is never active in a new
    terminal, so inside one we always print the line; outside one we print it only
    when `pystol` is not on PATH (e.g. a `pip install --user` whose scripts directory
    the shell does not search).
    """
    prefix = sys.prefix if prefix is None else prefix
    base_prefix = sys.base_prefix if base_prefix is None else base_prefix
    search_path = os.environ.get("PATH", os.defpath) if search_path is None else search_path
    in_venv = prefix != base_prefix
    if not in_venv and shutil.which("pystol", path=search_path):
        return None
    candidates = [Path(prefix) / "bin", Path(sysconfig.get_path("scripts")),
                  Path(sysconfig.get_path("scripts", f"{os.name}_user"))]
    for directory in candidates:
        if (directory / "pystol").exists():
            return f'export PATH={shlex.quote(str(directory))}:"$PATH"  # where pystol is'
    return None


def example_command(example: tuple[str, str] | None) -> str:
    namespace, selector = example or ("NAMESPACE", "app=NAME")
    return (f"pystol run pod-kill --namespace {shlex.quote(namespace)} "
            f"--selector {shlex.quote(selector)} --mode fixed --value 1 --wait")


def describe_exit(code: int | None) -> str:
    """`exited with code 3`, `was killed by SIGKILL` for a Popen return code."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def api_ready(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# -- processes ---------------------------------------------------------------------------


class Output:
    """Prefixed, line-at-a-time output shared by the children's reader threads.

    Writing never raises: when our own stdout goes away (a closed pipe, a terminal that
    was shut), the supervisor must still keep draining the children's pipes and still
    stop them, so a failed write only mutes that stream.
    """

    def __init__(self, stdout: IO[str], stderr: IO[str], colour: bool) -> None:
        self.stdout, self.stderr, self.colour = stdout, stderr, colour
        self.lock = threading.Lock()
        self.width = 6
        self.muted: set[int] = set()

    def _write(self, stream: IO[str], text: str) -> None:
        with self.lock:
            if id(stream) in self.muted:
                return
            try:
                click.echo(text, file=stream, color=self.colour)
            except (OSError, ValueError):  # broken pipe, closed file
                self.muted.add(id(stream))

    def child_line(self, name: str, text: str) -> None:
        colour = NAME_COLOURS.get(name, "cyan" if name.startswith("worker") else None)
        prefix = click.style(f"[{name}]".ljust(self.width + 2), fg=colour)
        self._write(self.stdout, f"{prefix} {text}")

    def say(self, text: str = "") -> None:
        self._write(self.stdout, text)

    def warn(self, text: str) -> None:
        self._write(self.stderr, click.style(f"pystol up: warning: {text}", fg="yellow"))

    def error(self, text: str) -> None:
        self._write(self.stderr, click.style(f"pystol up: error: {text}", fg="red"))


class Child:
    """One supervised child process whose output is prefixed and remembered.

    A child with `on_line` (pystol-sim, whose serving line says where the cluster is)
    has its stderr read apart from its stdout and `on_line` sees stdout lines only: what
    it writes to stderr can echo its input (a snapshot's object names, say) and must
    never be taken for something it announces."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str], out: Output,
                 stop_timeout: float = STOP_TIMEOUT,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.out = out
        self.stop_timeout = stop_timeout
        self.on_line = on_line
        self.last_lines: deque[str] = deque(maxlen=LAST_LINES)
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None
        self.error_reader: threading.Thread | None = None

    def start(self) -> None:
        separate = self.on_line is not None
        try:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if separate else subprocess.STDOUT, env=self.env,
                text=True, errors="replace", bufsize=1, start_new_session=True)
        except OSError as error:
            raise StackError(f"cannot start {self.name} ({self.command[0]}): "
                             f"{error.strerror or error}") from None
        self.reader = threading.Thread(target=self._pump, args=(self.process.stdout,
                                                                self.on_line),
                                       name=f"pystol-up-{self.name}", daemon=True)
        self.reader.start()
        if separate:
            self.error_reader = threading.Thread(target=self._pump,
                                                 args=(self.process.stderr, None),
                                                 name=f"pystol-up-{self.name}-stderr",
                                                 daemon=True)
            self.error_reader.start()

    def _pump(self, stream: IO[str] | None, on_line: Callable[[str], None] | None) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.rstrip("\r\n")
            self.last_lines.append(line)
            self.out.child_line(self.name, line)
            if on_line is not None:
                on_line(line)

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def drain(self, timeout: float = 2.0) -> None:
        """Let the reader print what the child wrote before it ended."""
        for reader in (self.reader, self.error_reader):
            if reader is not None:
                reader.join(timeout)

    def stop(self, hurry: threading.Event) -> None:
        """SIGTERM, wait up to stop_timeout (less if hurried), then SIGKILL its process group."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while process.poll() is None and time.monotonic() < deadline and not hurry.is_set():
                time.sleep(0.05)
        # The child's own children (gunicorn and celery workers) share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        self.drain()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


class Supervisor:
    """The running children, in start order, and the stop request from signals."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            self.hurry.set()  # a second Ctrl-C: do not wait for graceful exits
        self.stop_requested.set()

    def start(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def dead_child(self) -> Child | None:
        return next((child for child in self.children if child.exit_code is not None), None)

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.stop_requested.is_set():
                raise Interrupted
            if (dead := self.dead_child()) is not None:
                raise ChildDied(dead)
            if ready():
                return
            if time.monotonic() > deadline:
                raise StackError(f"{what} was not ready after {timeout:.0f}s")
            self.stop_requested.wait(0.1)

    def run_until_stopped(self) -> Child | None:
        """Block until a signal (None) or until a child exits (that child)."""
        while not self.stop_requested.wait(0.2):
            if (dead := self.dead_child()) is not None:
                return dead
        return None

    def stop_all(self) -> None:
        running = [child for child in reversed(self.children) if child.exit_code is None]
        if running:
            self.out.say(f"pystol up: stopping {', '.join(child.name for child in running)}")
        for child in reversed(self.children):
            try:
                child.stop(self.hurry)
            except Exception as error:  # stop the others whatever happened to this one
                self.out.error(f"could not stop {child.name}: {error}")

    def report_death(self, child: Child) -> None:
        child.drain()
        self.out.error(f"{child.name} {describe_exit(child.exit_code)} unexpectedly; "
                       "its last lines:")
        for line in child.last_lines or ["(no output)"]:
            self.out.error(f"  {child.name}| {line}")


def start_sim(supervisor: Supervisor, command: Sequence[str], environ: Mapping[str, str],
              out: Output) -> tuple[str, Path]:
    """Start pystol-sim and wait for its serving line: (cluster URL, kubeconfig path).

    The serving line is the first line the sim prints on its stdout, and only that line
    counts: its stderr (problems and summaries that quote the scenario's or snapshot's
    own names) and its later output are shown, never parsed."""
    first: list[str] = []

    def sim_line(line: str) -> None:
        if not first:
            first.append(line)

    def serving() -> bool:
        if not first:
            return False
        if parse_sim_serving(first[0]) is None:
            raise StackError("pystol-sim's first line of output was not its serving line "
                             f"(pystol-sim: serving URL kubeconfig=PATH): {first[0]!r}")
        return True

    supervisor.start(Child("sim", command, environ, out, on_line=sim_line))
    supervisor.wait_until(serving, SIM_READY_TIMEOUT, "pystol-sim")
    found = parse_sim_serving(first[0])
    assert found is not None
    return found


@contextlib.contextmanager
def signals_to(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `handler` while the stack runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_up(options: UpOptions, settings: Settings, *, colour: bool = False,
           stdout: IO[str] | None = None, stderr: IO[str] | None = None,
           environ: Mapping[str, str] | None = None) -> int:
    """Start, announce and supervise the stack; the process exit code."""
    out = Output(stdout or sys.stdout, stderr or sys.stderr, colour)
    supervisor = Supervisor(out)
    workdir = Path(tempfile.mkdtemp(prefix="pystol-up-"))
    try:
        with signals_to(supervisor.on_signal):
            try:
                return _start_and_supervise(options, settings, out, supervisor, workdir,
                                            dict(os.environ if environ is None else environ))
            except Interrupted:
                return 0
            except ChildDied as died:
                supervisor.report_death(died.child)
                return 1
            except StackError as error:
                out.error(str(error))
                return 1
            finally:
                if supervisor.children:
                    supervisor.stop_all()
                    out.say("pystol up: stopped")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start_and_supervise(options: UpOptions, settings: Settings, out: Output,
                         supervisor: Supervisor, workdir: Path, environ: dict[str, str]) -> int:
    api_port = options.port
    if api_port and not port_is_free(LOCALHOST, api_port):
        raise StackError(f"port {api_port} is already in use on {LOCALHOST}: choose another "
                         "with --port (0 picks a free one)")

    # 1. Redis
    from pystol_worker.core.settings import SettingsError
    from pystol_worker.store.redis_connection import redis_endpoint

    try:
        redis_endpoint(settings)  # a sentinel:// URL without its master name stops here
    except SettingsError as error:
        raise StackError(str(error)) from None
    choice = options.redis
    plan = plan_redis(settings.redis_url, choice=choice,
                      answers=choice == "auto" and redis_answers(
                          settings.redis_url, sentinel_master=settings.redis_sentinel_master),
                      redis_server=shutil.which("redis-server"),
                      fake_ok=fakeredis_serves_celery(),
                      port=find_free_port(avoid=frozenset({api_port} if api_port else ())),
                      workdir=workdir)
    if plan.kind == "fakeredis":
        out.warn(plan.note)
    elif plan.note:
        out.say(f"pystol up: {plan.note}")
    if plan.command:
        supervisor.start(Child("redis", plan.command, environ, out))
        master = settings.redis_sentinel_master
        supervisor.wait_until(lambda: redis_answers(plan.url, timeout=0.5,
                                                    sentinel_master=master),
                              REDIS_READY_TIMEOUT, "Redis")

    # 2. The simulated cluster
    kubeconfig = settings.kubeconfig
    sim_url = ""
    if options.sim:
        sim_url, kubeconfig_path = start_sim(
            supervisor, sim_command(workdir / "sim.kubeconfig", options.scenario,
                                    options.snapshot), environ, out)
        kubeconfig = str(kubeconfig_path)

    # 3. Workers and 4. the API. Picked only now, once Redis and the sim have bound theirs,
    # a free API port cannot be the one the kernel then gave one of them.
    api_port = api_port or find_free_port()
    api_url = f"http://{LOCALHOST}:{api_port}"
    generated = not settings.api_tokens
    tokens = settings.api_tokens or [secrets.token_urlsafe(24)]
    env = child_environment(environ, redis_url=plan.url, kubeconfig=kubeconfig,
                            api_tokens=tokens, api_bind=f"{LOCALHOST}:{api_port}")
    for index in range(options.workers):
        name = "worker" if options.workers == 1 else f"worker-{index + 1}"
        out.width = max(out.width, len(name))
        supervisor.start(Child(name, worker_command(options.worker_concurrency), env, out,
                               stop_timeout=WORKER_STOP_TIMEOUT))
    out.width = max(out.width, len("watcher"))
    supervisor.start(Child("beat", beat_command(), env, out))
    if options.sim:
        # The watcher needs Pystol's CRDs; in the simulated cluster `up` installs them itself.
        from pystol_api.crds import install_crds

        install_crds(kubeconfig)
    if options.sim or kubeconfig:
        supervisor.start(Child("watcher", watcher_command(
            find_free_port(avoid=frozenset({api_port}))), env, out))
    supervisor.start(Child("api", api_command(), env, out))
    supervisor.wait_until(lambda: api_ready(api_url), API_READY_TIMEOUT, f"the API at {api_url}")

    _announce(out, options, plan, api_url, tokens[0] if generated else None, sim_url, kubeconfig)
    dead = supervisor.run_until_stopped()
    if dead is not None:
        supervisor.report_death(dead)
        return 1
    return 0


def _announce(out: Output, options: UpOptions, plan: RedisPlan, api_url: str,
              token: str | None, sim_url: str, kubeconfig: str) -> None:
    from pystol_worker.store.redis_connection import shown_url

    shown_token = token or "<one of your PYSTOL_API_TOKENS>"
    cluster = (f"simulated, {sim_url} (kubeconfig {kubeconfig})" if options.sim
               else (f"kubeconfig {kubeconfig}" if kubeconfig
                     else "in-cluster config, else ~/.kube/config"))
    # A snapshot's workloads are the user's own: no example selector is guessed for them.
    example = (scenario_example(options.scenario)
               if options.sim and options.snapshot is None else None)
    lines = [
        "",
        f"pystol up: ready at {api_url}",
        f"  API:      {api_url}  (REST under /api/v1, docs at /api/v1/docs)",
        f"  token:    {shown_token}",
        f"  Redis:    {shown_url(plan.url)} ({plan.description})",
        f"  cluster:  {cluster}",
        f"  workers:  {options.workers} x {options.worker_concurrency} concurrent jobs, "
        "beat (schedules)" + (", CR watcher" if options.sim or kubeconfig else ""),
        "",
        "In another terminal:",
        "",
    ]
    path_line = path_export()
    if path_line:
        lines.append(path_line)
    lines += [
        f"export PYSTOL_API_URL={api_url} PYSTOL_TOKEN={shlex.quote(shown_token)}",
    ]
    if options.sim:
        lines.append(f"export KUBECONFIG={shlex.quote(kubeconfig)}  # for kubectl")
    lines += [example_command(example), "", "Ctrl-C stops everything.", ""]
    # One write under the output lock: a child's line (the API logging the last /readyz
    # poll) must not land inside the block a user pastes into a shell.
    out.say("\n".join(lines))


# -- fakeredis as a child process --------------------------------------------------------


def serve_fake_redis(host: str, port: int) -> None:
    """Serve fakeredis's in-memory Redis over TCP until SIGTERM or SIGINT."""
    from fakeredis import TcpFakeServer

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    server = TcpFakeServer((host, port))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    bound = server.server_address[1]
    print(f"fakeredis: serving redis://{host}:{bound}/0 (in memory; for trying things out, "
          "not for production or speed)", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()


def _module_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pystol_api.cli.stack")
    commands = parser.add_subparsers(dest="command", required=True)
    fake = commands.add_parser("fake-redis", help="serve fakeredis over TCP")
    fake.add_argument("--host", default=LOCALHOST)
    fake.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "fake-redis":
        serve_fake_redis(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(_module_main(sys.argv[1:]))
