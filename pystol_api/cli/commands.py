"""`pystol`: one command line for every Pystol process and every API verb.

Two kinds of subcommands live here. Process commands (`api`, `worker`, `up`) load the
settings and run a server in this process or as children. Client commands (`run`,
`jobs`, `actions`) are plain HTTP clients of the API, so whatever the CLI can do, a
script with curl can do too, and the API stays the only place that validates and
authorises a job.

What a user can count on:

- `--output json` prints exactly one JSON document on stdout; progress goes to stderr.
- Errors are one `error: …` line (plus one line per invalid field), never a traceback.
  Exit codes: 0 ok, 1 the job did not succeed (or `up` lost a child), 2 the request
  or the configuration is wrong (4xx, bad settings, bad options), 3 the API failed or
  could not be reached (5xx, connection problems), 130 stopped following with Ctrl-C.
- Where the API is and which token to send: `--api-url`/`--token`, else
  `PYSTOL_API_URL`/`PYSTOL_TOKEN`, else the file named by `--config`/`PYSTOL_CONFIG`
  (default `~/.config/pystol/cli.env`), lines `PYSTOL_API_URL=…` and `PYSTOL_TOKEN=…`.

Start-up stays fast: kubernetes, celery, flask, gunicorn, requests and pydantic are
imported inside the commands that need them, never here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pystol_api.cli.api_client import (
    DEFAULT_API_URL,
    DEFAULT_CONFIG_PATH,
    ApiClient,
    ApiError,
    ApiUnreachable,
    ClientEnvironment,
    ConfigFileError,
    EventStreamUnavailable,
    read_cli_env,
)
from pystol_api.cli.job_spec import build_job_spec, check_duration, parse_params
from pystol_api.cli.output import (
    ACTION_HEADERS,
    JOB_HEADERS,
    TERMINAL_STATUSES,
    CliError,
    ProgressLine,
    action_rows,
    describe_target,
    dump_json,
    format_event,
    format_job_detail,
    format_seconds,
    format_summary,
    format_table,
    job_colour,
    job_rows,
    now_utc,
    parse_time,
    problem_lines,
    styled_status,
)

if TYPE_CHECKING:
    from pystol_worker.core.settings import Settings

MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")
STATUSES = ("queued", "running", "succeeded", "failed", "aborted", "cancelled", "skipped")
POLL_INTERVAL = 0.5
RETRY_SECONDS = 15.0
EXIT_STOPPED_FOLLOWING = 130


@dataclass
class Runtime:
    """What every command shares: global options, terminal facts, settings once loaded.

    Click keeps one per invocation as `ctx.obj`; tests pass their own (a short poll
    interval, a pretend terminal, a sleep that raises KeyboardInterrupt).
    """

    api_url: str | None = None
    token: str | None = None
    config_path: Path | None = None
    poll_interval: float = POLL_INTERVAL
    tty: bool | None = None
    sleep: Callable[[float], None] = time.sleep
    loaded_settings: Settings | None = field(default=None, repr=False)

    def is_tty(self, stream: str) -> bool:
        if self.tty is not None:
            return self.tty
        handle = {"stdin": sys.stdin, "stdout": sys.stdout, "stderr": sys.stderr}[stream]
        return bool(handle is not None and handle.isatty())

    def colour(self) -> bool:
        return self.is_tty("stdout") and not os.environ.get("NO_COLOR")

    def settings(self) -> Settings:
        if self.loaded_settings is None:
            from pystol_worker.core.settings import SettingsError, load_settings

            try:
                self.loaded_settings = load_settings()
            except SettingsError as error:
                raise CliError(str(error)) from None
        return self.loaded_settings

    def config_values(self, explicit: bool) -> dict[str, str]:
        path = (self.config_path or DEFAULT_CONFIG_PATH).expanduser()
        if not path.is_file():
            if explicit:
                raise CliError(f"config file {path} does not exist (PYSTOL_CONFIG / --config)")
            return {}
        try:
            return read_cli_env(path)
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"cannot read config file {path}: {error}") from None
        except ConfigFileError as error:
            raise CliError(str(error)) from None

    def client(self) -> ApiClient:
        """A client for the API: options, then PYSTOL_* variables, then the config file.

        The variables are read by `ClientEnvironment`, not the server `Settings`: a client
        needs two of them, and the settings model costs a third of the command's start."""
        try:
            environment = ClientEnvironment.read(os.environ)
        except ConfigFileError as error:
            raise CliError(str(error)) from None
        explicit_config = self.config_path is not None
        url = self.api_url or environment.api_url
        token = self.token or environment.token or None
        if url is None or token is None or explicit_config:
            values = self.config_values(explicit_config)
            url = url or values.get("PYSTOL_API_URL") or DEFAULT_API_URL
            token = token or values.get("PYSTOL_TOKEN") or None
        if not url.startswith(("http://", "https://")):
            raise CliError(f"the API URL must start with http:// or https://, got {url!r}")
        if not token:
            path = (self.config_path or DEFAULT_CONFIG_PATH).expanduser()
            raise CliError("no API token: pass --token, set PYSTOL_TOKEN, or write "
                           f"PYSTOL_TOKEN=… into {path}",
                           ["  (`pystol up` prints a token when it starts the stack)"])
        return ApiClient(url, token)


#: Command groups in modules of their own, imported only when named (or listed by
#: `pystol --help`): `pystol run` is timed against one-shot tools and pays for no module
#: it does not use.
LAZY_COMMANDS = {"schedules": "pystol_api.cli.schedules", "tokens": "pystol_api.cli.tokens",
                 "audit": "pystol_api.cli.audit", "experiments": "pystol_api.cli.experiments",
                 "rehearse": "pystol_api.cli.rehearse"}


class PystolGroup(click.Group):
    """Turns the API client's and the configuration's failures into `error:` lines, and
    loads the LAZY_COMMANDS when they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            import importlib

            module = importlib.import_module(LAZY_COMMANDS[cmd_name])
            self.add_command(getattr(module, cmd_name))
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as error:
            message = f"{error.title}: {error.detail}" if error.detail else error.title
            raise CliError(message, problem_lines(error.errors), error.exit_code) from None
        except ApiUnreachable as error:
            raise CliError(str(error), exit_code=error.exit_code) from None


def output_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--output", "-o", type=click.Choice(["table", "json"]),
                        default="table", show_default=True,
                        help="json: one machine-readable document on stdout.")(function)


@click.group(cls=PystolGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                "max_content_width": 100})
@click.option("--api-url", metavar="URL",
              help="Pystol API to talk to [default: PYSTOL_API_URL, the config file, "
                   "http://127.0.0.1:8080].")
@click.option("--token", metavar="TOKEN",
              help="Bearer token [default: PYSTOL_TOKEN, the config file]. Other local users "
                   "can see options in `ps`: prefer the variable or the file.")
@click.option("--config", "config_path", metavar="FILE", envvar="PYSTOL_CONFIG",
              type=click.Path(dir_okay=False, path_type=Path),
              help="KEY=VALUE file with PYSTOL_API_URL and PYSTOL_TOKEN "
                   "[env: PYSTOL_CONFIG; default: ~/.config/pystol/cli.env].")
@click.version_option(package_name="pystol", prog_name="pystol")
@click.pass_context
def cli(ctx: click.Context, api_url: str | None, token: str | None,
        config_path: Path | None) -> None:
    """Pystol: chaos engineering for Kubernetes.

    \b
    Start everything on this machine:  pystol up --sim
    Break something:                   pystol run pod-kill -n shop -l app=web --wait
    """
    runtime = ctx.ensure_object(Runtime)
    runtime.api_url = api_url.rstrip("/") if api_url else runtime.api_url
    runtime.token = token or runtime.token
    runtime.config_path = config_path or runtime.config_path


# -- processes ---------------------------------------------------------------------------


def _configure_logging(process_name: str, level: str = "INFO") -> None:
    """JSON log lines (readable text on a terminal) for a long-running process."""
    from pystol_worker.core.logging_setup import configure_logging

    configure_logging(process_name, level.upper())


def _server_settings(runtime: Runtime) -> Settings:
    """The settings of a process that seals or checks grants (api, worker, beat, watch):
    it refuses to start without PYSTOL_SIGNING_KEY or with a policy file it cannot use,
    rather than failing every job later."""
    from pystol_worker.core.policy import PolicyError, load_policy
    from pystol_worker.core.settings import SettingsError
    from pystol_worker.store.redis_connection import RedisUrlError, redis_endpoint

    settings = runtime.settings()
    try:
        settings.signing_key_bytes  # noqa: B018
        load_policy(settings.policy_file)
        redis_endpoint(settings)  # a bad URL or a missing Sentinel master name, said once
    except (SettingsError, PolicyError, RedisUrlError) as error:
        raise CliError(str(error)) from None
    return settings


@cli.command()
@click.pass_obj
def api(runtime: Runtime) -> None:
    """Serve the Pystol API (PYSTOL_API_BIND; needs PYSTOL_API_TOKENS)."""
    settings = _server_settings(runtime)
    _configure_logging("api")
    from pystol_worker.core.settings import SettingsError

    serve = _import_or_explain("pystol_api.http.wsgi_server", "serve", "the API server")
    try:
        serve(settings)
    except SettingsError as error:
        raise CliError(str(error)) from None
    except SystemExit as refused:
        if isinstance(refused.code, str):  # a refusal to start, e.g. no PYSTOL_API_TOKENS
            raise CliError(refused.code) from None
        raise


@cli.command()
@click.option("--concurrency", "-c", type=click.IntRange(1, 256), default=None,
              help="Jobs run at once [default: PYSTOL_WORKER_CONCURRENCY].")
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork",
              show_default=True, help="Celery execution pool.")
@click.option("--loglevel", "-l", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False), help="Log level.")
@click.pass_obj
def worker(runtime: Runtime, concurrency: int | None, pool: str, loglevel: str) -> None:
    """Run a Celery worker that executes chaos jobs from PYSTOL_QUEUE."""
    settings = _server_settings(runtime)
    _configure_logging("worker", loglevel)
    from pystol_worker.core.settings import SettingsError

    run_worker = _import_or_explain("pystol_worker.process.worker_main", "run_worker", "the worker")
    try:
        run_worker(settings, concurrency=concurrency, pool=pool, loglevel=loglevel.upper())
    except SettingsError as error:
        raise CliError(str(error)) from None


@cli.command()
@click.option("--namespace", "-n", metavar="NS", help="Watch one namespace [default: all].")
@click.option("--peering", default="pystol", show_default=True, metavar="NAME",
              help="kopf peering object shared by the watcher replicas; only one acts.")
@click.option("--standalone", is_flag=True, help="No peering: run only one such watcher.")
@click.option("--priority", type=int, default=None,
              help="Peering priority, the highest acts [default: random].")
@click.option("--liveness", default="http://0.0.0.0:8081/healthz", show_default=True,
              metavar="URL", help="kopf liveness endpoint; empty: none.")
@click.pass_obj
def watch(runtime: Runtime, namespace: str | None, peering: str, standalone: bool,
          priority: int | None, liveness: str) -> None:
    """Run PystolAction and PystolSchedule custom resources (the CR watcher)."""
    settings = _server_settings(runtime)
    _configure_logging("watch")
    run_watcher = _import_or_explain("pystol_api.watcher.operator", "run_watcher", "the CR watcher")
    run_watcher(settings, namespace=namespace, peering=None if standalone else peering,
                liveness=liveness or None, priority=priority)


@cli.command()
@click.option("--loglevel", "-l", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False), help="Log level.")
@click.pass_obj
def beat(runtime: Runtime, loglevel: str) -> None:
    """Run celery beat (redbeat): fires the schedules kept in Redis (`pystol schedules`)."""
    settings = _server_settings(runtime)
    _configure_logging("beat", loglevel)
    run_beat = _import_or_explain("pystol_worker.process.beat_main", "run_beat", "beat")
    run_beat(settings, loglevel=loglevel.upper())


@cli.command()
@click.option("--install", is_flag=True,
              help="Create or update them in the cluster of PYSTOL_KUBECONFIG.")
@click.pass_obj
def crds(runtime: Runtime, install: bool) -> None:
    """Print Pystol's CustomResourceDefinitions (`pystol crds | kubectl apply -f -`)."""
    from pystol_api.crds import crd_yaml, install_crds

    if not install:
        click.echo(crd_yaml(), nl=False)
        return
    for name in install_crds(runtime.settings().kubeconfig):
        click.echo(f"customresourcedefinition {name} installed")


@cli.command()
@click.option("--file", "path", required=True, metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The process's health file: <PYSTOL_HEALTH_DIR>/pystol-worker.health or "
                   "pystol-beat.health.")
@click.option("--max-age", required=True, metavar="SECONDS",
              type=click.FloatRange(min=0, min_open=True),
              help="Oldest the file may be; several times PYSTOL_HEALTH_INTERVAL_SECONDS.")
def health(path: Path, max_age: float) -> None:
    """Exit 0 if a worker's or beat's health file is fresh, else 1 (a liveness probe).

    \b
    pystol health --file /tmp/pystol-worker.health --max-age 60
    """
    # Runs every few seconds in each pod: no settings, no Redis, only the file's age.
    from pystol_worker.process.health_file import check_health_file

    problem = check_health_file(path, max_age)
    if problem is not None:
        raise CliError(problem, exit_code=1)
    click.echo(f"ok: {path} is fresh")


def _import_or_explain(module: str, name: str, what: str) -> Callable[..., Any]:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise CliError(f"{what} is not part of this installation ({module} is missing)",
                       exit_code=1) from None


@cli.command()
@click.option("--sim", is_flag=True, help="Start a simulated cluster (pystol-sim) and use it.")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Scenario YAML for the simulated cluster (implies --sim).")
@click.option("--snapshot", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A copy of a real cluster (`kubectl get … -A -o yaml`) for the simulated "
                   "cluster, instead of a scenario (implies --sim).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="API port on 127.0.0.1; 0 picks a free one.")
@click.option("--workers", type=click.IntRange(1, 32), default=1, show_default=True,
              help="Worker processes (2 concurrent jobs each).")
@click.option("--redis", "redis_choice", type=click.Choice(["auto", "server", "fake"]),
              default="auto", show_default=True,
              help="auto: PYSTOL_REDIS_URL if it answers, else redis-server, else fakeredis.")
@click.pass_context
def up(ctx: click.Context, sim: bool, scenario: Path | None, snapshot: Path | None, port: int,
       workers: int, redis_choice: str) -> None:
    """Run the whole stack on this machine: Redis, [cluster,] worker and API.

    Stops everything with Ctrl-C. Without --sim the worker uses PYSTOL_KUBECONFIG,
    in-cluster config or ~/.kube/config, i.e. a real cluster.
    """
    runtime: Runtime = ctx.obj
    settings = runtime.settings()
    from pystol_api.cli import stack

    if scenario is not None and snapshot is not None:
        raise click.UsageError("--scenario and --snapshot are alternatives: give one")
    options = stack.UpOptions(sim=sim or scenario is not None or snapshot is not None,
                              scenario=scenario, snapshot=snapshot, port=port,
                              workers=workers, redis=redis_choice)  # type: ignore[arg-type]
    ctx.exit(stack.run_up(options, settings, colour=runtime.colour(),
                          stdout=sys.stdout, stderr=sys.stderr))


# -- run ---------------------------------------------------------------------------------


@cli.command()
@click.argument("action", required=False)
@click.option("--file", "-f", "file_path", metavar="FILE",
              help="Run a file instead: a Pystol experiment, a Chaos Toolkit experiment or a "
                   "job spec (JSON or YAML, at most 128 KiB; - reads standard input).")
@click.option("--format", "declared", type=click.Choice(["pystol", "chaostoolkit"]),
              help="With -f: the file's format [default: detected].")
@click.option("--namespace", "-n", "namespaces", multiple=True, metavar="NS",
              help="Namespace to select from (repeatable).")
@click.option("--selector", "-l", metavar="SEL", help="Label selector, e.g. app=web.")
@click.option("--field-selector", metavar="SEL", help="Field selector, e.g. status.phase=Running.")
@click.option("--mode", type=click.Choice(MODES), help="How many of the matches to hit "
                                                       "[API default: one].")
@click.option("--value", type=float, metavar="V", help="Count (fixed) or percent (*-percent).")
@click.option("--node", "nodes", multiple=True, metavar="NAME",
              help="Node name, for node actions (repeatable).")
@click.option("--amount", type=click.IntRange(min=1), metavar="N",
              help="Number of nodes (the original Pystol's way to say --mode fixed --value N).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Action parameter (repeatable); VALUE is JSON when it parses, else text.")
@click.option("--duration", callback=check_duration, metavar="DURATION",
              help="How long the fault is held, e.g. 60s, 5m.")
@click.option("--recovery-timeout", callback=check_duration, metavar="DURATION",
              help="How long workloads get to recover [default: the API's setting].")
@click.option("--dry-run", is_flag=True, help="Select and report; change nothing.")
@click.option("--idempotency-key", metavar="KEY",
              help="Submitting the same key again returns the first job.")
@click.option("--wait", "-w", is_flag=True,
              help="Follow the job (or experiment run) until it ends; exit 0 only if it "
                   "succeeded (an experiment: 0 passed, 1 failed/deviated, 3 skipped, "
                   "4 aborted).")
@output_option
@click.pass_obj
def run(runtime: Runtime, action: str | None, file_path: str | None, declared: str | None,
        namespaces: tuple[str, ...], selector: str | None,
        field_selector: str | None, mode: str | None, value: float | None,
        nodes: tuple[str, ...], amount: int | None, params: tuple[str, ...],
        duration: str | None, recovery_timeout: str | None, dry_run: bool,
        idempotency_key: str | None, wait: bool, output: str) -> None:
    """Submit a chaos job running ACTION (see `pystol actions`), or run a file (-f).

    \b
    pystol run pod-kill -n shop -l app=web --mode fixed --value 2 --wait
    pystol run pod-kill -n shop -l app=web --dry-run -p grace_period_seconds=0
    pystol run -f experiment.yaml --wait
    pystol run -f chaostoolkit-experiment.json --wait -o json
    """
    if file_path is not None:
        flags = [name for name, given in (
            ("ACTION", action), ("--namespace", namespaces), ("--selector", selector),
            ("--field-selector", field_selector), ("--mode", mode),
            ("--value", value is not None), ("--node", nodes), ("--amount", amount),
            ("--param", params), ("--duration", duration),
            ("--recovery-timeout", recovery_timeout)) if given]
        if flags:
            raise click.UsageError(f"-f runs the file as it is; {', '.join(flags)} cannot "
                                   "be combined with it (put them in the file)")
        from pystol_api.cli.experiments import run_file

        code = run_file(runtime, file_path, declared=declared, wait=wait, dry_run=dry_run,
                        idempotency_key=idempotency_key, output=output, follow_job=watch_job)
        if code:
            sys.exit(code)
        return
    if declared is not None:
        raise click.UsageError("--format only applies to -f FILE")
    if action is None:
        raise click.UsageError("give an ACTION (see `pystol actions`) or -f FILE")
    spec = build_job_spec(action, namespaces=namespaces, selector=selector,
                          field_selector=field_selector, mode=mode, value=value, nodes=nodes,
                          amount=amount, params=parse_params(params), duration=duration,
                          recovery_timeout=recovery_timeout, dry_run=dry_run,
                          idempotency_key=idempotency_key)
    with runtime.client() as client:
        record = client.submit_job(spec)
        job_id = str(record.get("id"))
        if not wait:
            if output == "json":
                click.echo(dump_json(record))
                return
            dry = " (dry run)" if record.get("spec", {}).get("dry_run") else ""
            click.echo(f"job {job_id} {styled_status(str(record.get('status', '?')))}{dry}: "
                       f"{action} · {describe_target(record.get('spec') or spec)}",
                       color=runtime.colour())
            click.echo(f"follow it: pystol jobs show {job_id} --follow")
            return
        if output != "json":
            click.echo(f"job {job_id}: {action} · {describe_target(record.get('spec') or spec)}",
                       color=runtime.colour())
        code = watch_job(runtime, client, job_id, output)
    if code:
        sys.exit(code)


# -- following a job ---------------------------------------------------------------------


class JobFollower:
    """Follows a job and prints each new timeline event once, until a terminal status:
    by the API's server-sent event stream, or by polling when the API does not stream
    (406) or the stream breaks.

    The position in the timeline survives a second `follow()` (after a cancel request),
    so no event is printed twice.
    """

    def __init__(self, runtime: Runtime, client: ApiClient, job_id: str,
                 events_to_stderr: bool) -> None:
        self.runtime = runtime
        self.client = client
        self.job_id = job_id
        self.events_to_stderr = events_to_stderr
        self.seen = 0
        self.started = time.monotonic()
        self.progress = ProgressLine(sys.stderr,
                                     enabled=runtime.is_tty("stderr"))
        self.stream = hasattr(client, "job_events_stream")

    def follow(self) -> dict[str, Any]:
        if self.stream:
            try:
                record = self._follow_stream()
            except (EventStreamUnavailable, ApiUnreachable):
                record = None
            if record is not None:
                return record
            self.stream = False  # poll from here on (with its own retries)
        return self._poll()

    def _follow_stream(self) -> dict[str, Any] | None:
        """Print events as the stream brings them; reconnect (from the last event seen) when
        the API closes a stream before the end. None when the stream stopped working."""
        while True:
            got_any = False
            opened = time.monotonic()
            last = self.seen - 1 if self.seen else None
            for message in self.client.job_events_stream(self.job_id, last_event_id=last):
                got_any = True
                if message.event == "end":
                    record = self.client.get_job(self.job_id)
                    self._print_new_events(record.get("timeline") or [])
                    if str(record.get("status", "?")) in TERMINAL_STATUSES:
                        self.progress.clear()
                        return record
                    return None
                if message.id is None or not message.id.isdigit():
                    continue
                index = int(message.id)
                if index < self.seen:
                    continue
                try:
                    event = json.loads(message.data)
                except ValueError:
                    return None
                self.seen = index + 1
                self.progress.clear()
                click.echo(format_event(event), err=self.events_to_stderr,
                           color=self.runtime.colour() and not self.events_to_stderr)
            if not got_any and time.monotonic() - opened < 1.0:
                return None  # closed at once, nothing said: do not reconnect in a loop

    def _poll(self) -> dict[str, Any]:
        failing_since: float | None = None
        while True:
            try:
                record = self.client.get_job(self.job_id)
            except (ApiError, ApiUnreachable) as error:
                if isinstance(error, ApiError) and error.exit_code == 2:
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > RETRY_SECONDS:
                    raise
                self._pause(f"{error}; retrying")
                continue
            failing_since = None
            self._print_new_events(record.get("timeline") or [])
            status = str(record.get("status", "?"))
            if status in TERMINAL_STATUSES:
                self.progress.clear()
                return record
            self._pause(f"{status}  {format_seconds(self._elapsed(record))}")

    def _print_new_events(self, timeline: list[Mapping[str, Any]]) -> None:
        if len(timeline) < self.seen:  # the API trimmed its timeline: start over quietly
            self.seen = len(timeline)
        fresh = timeline[self.seen:]
        self.seen = len(timeline)
        if fresh:
            self.progress.clear()
        for event in fresh:
            click.echo(format_event(event), err=self.events_to_stderr,
                       color=self.runtime.colour() and not self.events_to_stderr)

    def _elapsed(self, record: Mapping[str, Any]) -> float:
        since = parse_time(record.get("started_at")) or parse_time(record.get("created_at"))
        if since is not None:
            seconds = (now_utc() - since.astimezone(UTC)).total_seconds()
            if seconds >= 0:
                return seconds
        return time.monotonic() - self.started

    def _pause(self, text: str) -> None:
        """Sleep one poll interval, turning the spinner meanwhile when there is one."""
        interval = self.runtime.poll_interval
        if not self.progress.enabled:
            self.runtime.sleep(interval)
            return
        end = time.monotonic() + interval
        while (left := end - time.monotonic()) > 0:
            self.progress.update(text)
            self.runtime.sleep(min(0.1, left))


def watch_job(runtime: Runtime, client: ApiClient, job_id: str, output: str) -> int:
    """Follow a job to its end and print the outcome; the exit code (0 only if it succeeded)."""
    follower = JobFollower(runtime, client, job_id, events_to_stderr=output == "json")
    hint = f"follow it again: pystol jobs show {job_id} --follow"
    try:
        record = follower.follow()
    except KeyboardInterrupt:
        follower.progress.clear()
        click.echo(err=True)
        if not (runtime.is_tty("stdin") and runtime.is_tty("stderr")) \
                or not _ask_cancel(job_id):
            click.echo(f"stopped following job {job_id}; it goes on ({hint})", err=True)
            return EXIT_STOPPED_FOLLOWING
        cancelled = client.cancel_job(job_id)
        click.echo(f"cancel requested; job {job_id} is {cancelled.get('status', '?')}, "
                   "following it until it has reverted (Ctrl-C stops following)", err=True)
        try:
            record = follower.follow()
        except KeyboardInterrupt:
            follower.progress.clear()
            click.echo(f"\nstopped following job {job_id} ({hint})", err=True)
            return EXIT_STOPPED_FOLLOWING
    if output == "json":
        click.echo(dump_json(record))
    else:
        for line in format_summary(record):
            click.echo(line, color=runtime.colour())
    return 0 if record.get("status") == "succeeded" else 1


def _ask_cancel(job_id: str) -> bool:
    try:
        return click.confirm(f"cancel job {job_id}? (it reverts what it changed)",
                             default=False, err=True)
    except (click.Abort, KeyboardInterrupt, EOFError):
        return False


# -- jobs --------------------------------------------------------------------------------


@cli.group()
def jobs() -> None:
    """List, show and cancel chaos jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only jobs in this state.")
@click.option("--action", metavar="NAME", help="Only jobs of this action.")
@click.option("--namespace", "-n", metavar="NS", help="Only jobs targeting this namespace.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Jobs per page [default: the API's].")
@click.option("--all", "all_pages", is_flag=True, help="Follow the pages to the last job.")
@output_option
@click.pass_obj
def jobs_list(runtime: Runtime, status: str | None, action: str | None, namespace: str | None,
              limit: int | None, all_pages: bool, output: str) -> None:
    """List jobs, newest first."""
    items: list[dict[str, Any]] = []
    next_cursor: str | None = None
    with runtime.client() as client:
        if all_pages:
            for page in client.iter_job_pages(status=status, action=action,
                                              namespace=namespace, limit=limit):
                items += page.get("items") or []
        else:
            page = client.list_jobs(status=status, action=action, namespace=namespace,
                                    limit=limit)
            items, next_cursor = list(page.get("items") or []), page.get("next_cursor")
    if output == "json":
        click.echo(dump_json({"items": items, "next_cursor": next_cursor}))
        return
    if not items:
        click.echo("no jobs", err=True)
        return
    colour = runtime.colour()
    for line in format_table(JOB_HEADERS, job_rows(items), job_colour if colour else None):
        click.echo(line, color=colour)
    if next_cursor:
        click.echo(f"(first {len(items)} jobs; --all lists every page)", err=True)


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True,
              help="Print events as they happen until the job ends; exit 0 only if it "
                   "succeeded.")
@click.option("--journal", metavar="PATH", is_flag=False, flag_value="-", default=None,
              help="Write the Chaos Toolkit journal of the job, or of an experiment run "
                   "(an x-… id), to PATH (- or no value: standard output).")
@output_option
@click.pass_obj
def jobs_show(runtime: Runtime, job_id: str, follow: bool, journal: str | None,
              output: str) -> None:
    """Show one job: its spec, targets, result and timeline."""
    if journal is not None:
        if follow:
            raise click.UsageError("--journal and --follow exclude each other")
        from pystol_api.cli.experiments import write_journal

        write_journal(runtime, job_id, journal)
        return
    with runtime.client() as client:
        if not follow:
            record = client.get_job(job_id)
        else:
            if output != "json":
                first = client.get_job(job_id)
                click.echo(f"job {job_id}: {(first.get('spec') or {}).get('action', '?')} · "
                           f"{describe_target(first.get('spec') or {})}")
            code = watch_job(runtime, client, job_id, output)
            if code:
                sys.exit(code)
            return
    if output == "json":
        click.echo(dump_json(record))
        return
    colour = runtime.colour()
    for line in format_job_detail(record):
        click.echo(line, color=colour)


@jobs.command("cancel")
@click.argument("job_id", metavar="ID")
@output_option
@click.pass_obj
def jobs_cancel(runtime: Runtime, job_id: str, output: str) -> None:
    """Cancel a queued job, or abort a running one (it reverts what it changed)."""
    with runtime.client() as client:
        record = client.cancel_job(job_id)
    if output == "json":
        click.echo(dump_json(record))
        return
    click.echo(f"job {job_id}: cancel requested (status now "
               f"{styled_status(str(record.get('status', '?')))})", color=runtime.colour())
    if str(record.get("status")) not in TERMINAL_STATUSES:
        click.echo(f"watch it end: pystol jobs show {job_id} --follow")


# -- halt --------------------------------------------------------------------------------


@cli.command()
@click.option("--reason", metavar="TEXT", help="Why (shown to whoever lifts it).")
@click.option("--off", "lift", is_flag=True, help="Lift the halt: chaos may run again.")
@click.option("--status", "show", is_flag=True, help="Only tell whether chaos is halted.")
@output_option
@click.pass_obj
def halt(runtime: Runtime, reason: str | None, lift: bool, show: bool, output: str) -> None:
    """Halt all chaos now: running jobs abort and revert, queued ones are cancelled, and new
    jobs are refused until `pystol halt --off`."""
    if lift and show:
        raise click.UsageError("--off and --status exclude each other")
    with runtime.client() as client:
        if show:
            state = client.halt_state()
        elif lift:
            state = client.lift_halt()
        else:
            state = client.halt(reason)
    if output == "json":
        click.echo(dump_json(state))
        return
    if not state.get("halted"):
        click.echo("chaos is not halted: jobs may run")
        return
    click.echo(f"chaos is HALTED (by {state.get('by')} since {state.get('since')}"
               + (f": {state['reason']}" if state.get("reason") else "") + ")",
               color=runtime.colour())
    if not show:
        click.echo(f"cancelled {state.get('cancelled_jobs', 0)} queued job(s), asked "
                   f"{state.get('aborted_jobs', 0)} running job(s) to abort and revert"
                   + (f"; cancelling {state['stopping_jobs']} more queued job(s) in the "
                      "background" if state.get("stopping_jobs") else ""))
    click.echo("lift it with: pystol halt --off")


# -- actions -----------------------------------------------------------------------------


@cli.command()
@output_option
@click.pass_obj
def actions(runtime: Runtime, output: str) -> None:
    """List the chaos actions the API offers (json: with their params schemas)."""
    with runtime.client() as client:
        catalogue = client.actions()
    if output == "json":
        click.echo(dump_json(catalogue))
        return
    colour = runtime.colour()
    for line in format_table(ACTION_HEADERS, action_rows(catalogue),
                             (lambda column, text: None) if colour else None):
        click.echo(line, color=colour)


def main() -> None:
    """Console script entry point (`pystol`)."""
    cli(prog_name="pystol")


if __name__ == "__main__":
    main()
