"""The `pystol` command line against a real tiny HTTP server in a thread (no mocks of requests).

The server answers canned, Pystol-shaped JSON (records built with the real job model,
so the shapes cannot drift) and records every request, so the tests check what the
CLI sends as well as what it prints and its exit codes.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import click
import pytest
from click.testing import CliRunner, Result

from pystol_api.cli import stack
from pystol_api.cli.api_client import ConfigFileError, problem_from_answer, read_cli_env
from pystol_api.cli.commands import Runtime, cli
from pystol_api.cli.job_spec import build_job_spec, parse_param_value, parse_params
from pystol_api.cli.output import format_seconds, format_table
from pystol_worker.core.model import JobRecord, JobSpec

TOKEN = "t0k-secret"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


# -- a tiny Pystol API -------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw_path: str


@dataclass
class Answer:
    status: int
    body: Any
    content_type: str = "application/json"


@dataclass
class FakeApi:
    """Routes (method, path) to answers; a list of answers is served in order, the last repeats."""

    url: str = ""
    routes: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, method: str, path: str, *answers: Answer | tuple[int, Any]) -> None:
        self.routes[(method, path)] = [a if isinstance(a, Answer) else Answer(*a)
                                       for a in answers]

    def answer(self, method: str, path: str) -> Answer:
        with self.lock:
            queue = self.routes.get((method, path))
            if not queue:
                return Answer(404, {"type": "about:blank", "title": "Not Found", "status": 404,
                                    "detail": f"no route {method} {path}"},
                              "application/problem+json")
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        api: FakeApi = self.server.api  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = unquote(parts.path)
        api.seen.append(Seen(self.command, path, parse_qs(parts.query),
                             dict(self.headers.items()), json.loads(raw) if raw else None,
                             parts.path))
        answer = api.answer(self.command, path)
        body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _handle


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake = FakeApi(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.api = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def invoke(args: list[str], *, url: str | None, token: str | None = TOKEN,
           home: Path | None = None, runtime: Runtime | None = None, input: str | None = None,
           env: dict[str, str | None] | None = None) -> Result:
    environment: dict[str, str | None] = {"PYSTOL_API_URL": url, "PYSTOL_TOKEN": token,
                                          "PYSTOL_CONFIG": None, "NO_COLOR": None}
    if home is not None:
        environment["HOME"] = str(home)
    environment.update(env or {})
    return CliRunner().invoke(cli, args, env=environment, input=input,
                              obj=runtime or Runtime(poll_interval=0.01, tty=False))


# -- canned records ----------------------------------------------------------------------


def spec(**target: Any) -> JobSpec:
    return JobSpec(action="pod-kill", target={"namespaces": ["shop"], "label_selector": "app=web",
                                              **target})


def event(seconds: int, kind: str, message: str) -> dict[str, Any]:
    return {"at": (T0 + timedelta(seconds=seconds)).isoformat(), "kind": kind,
            "message": message, "data": {}}


def record(job_id: str = "job-1", status: str = "queued", events: int = 1,
           **extra: Any) -> dict[str, Any]:
    timeline = [event(0, "queued", "queued by cli"), event(1, "started", "worker w1 started"),
                event(2, "selected", "3 pods match, 1 chosen"),
                event(3, "injected", "deleted pod shop/web-1"),
                event(7, "recovered", "deployment shop/web back to 3/3 ready")][:events]
    data: dict[str, Any] = {"id": job_id, "spec": spec(mode="fixed", value=1), "status": status,
                            "source": "cli", "submitter": "token:cli", "created_at": T0,
                            "timeline": timeline}
    data.update(extra)
    return JobRecord.model_validate(data).model_dump(mode="json")


def finished(status: str, reason: str) -> dict[str, Any]:
    return record(status=status, events=5, reason=reason, started_at=T0 + timedelta(seconds=1),
                  finished_at=T0 + timedelta(seconds=8),
                  targets=[{"kind": "Pod", "name": "web-1", "namespace": "shop",
                            "node": "worker-a"}],
                  metrics={"targets_selected": 3, "targets_affected": 1,
                           "recovery_seconds": 3.4},
                  result={"recovery": [{
                      "workload": {"kind": "Deployment", "namespace": "shop", "name": "web"},
                      "desired_replicas": 3, "first_injection_at": T0 + timedelta(seconds=3),
                      "recovered": status == "succeeded", "recovery_seconds": 3.4,
                      "ready_replicas": 3 if status == "succeeded" else 2}]})


PROBLEM = Answer(422, {"type": "https://pystol.org/problems/invalid-job", "title": "Invalid job",
                       "status": 422, "detail": "the job has 2 problems",
                       "errors": [{"loc": "target.mode", "msg": "mode fixed needs a value"},
                                  {"loc": "params.grace_period_seconds",
                                   "msg": "Input should be a valid integer"}]},
                 "application/problem+json")


# -- run ---------------------------------------------------------------------------------


def test_run_posts_the_job_spec_with_source_and_token(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    result = invoke(["run", "pod-kill", "-n", "shop", "--namespace", "cart", "--selector",
                     "app=web", "--field-selector", "status.phase=Running",
                     "--mode", "fixed-percent", "--value", "50",
                     "--param", "grace_period_seconds=0", "-p", "force=true",
                     "-p", "reason=game day", "-p", 'nodes=["a","b"]', "-p", 'extra={"x":1.5}',
                     "-p", "empty=", "--duration", "60s", "--recovery-timeout", "5m",
                     "--dry-run", "--idempotency-key", "k-1"], url=api.url)
    assert result.exit_code == 0, result.output
    [sent] = api.requests_to("POST", "/api/v1/jobs")
    assert sent.headers["X-Pystol-Source"] == "cli"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.body == {
        "action": "pod-kill",
        "target": {"namespaces": ["shop", "cart"], "label_selector": "app=web",
                   "field_selector": "status.phase=Running", "mode": "fixed-percent",
                   "value": 50},
        "params": {"grace_period_seconds": 0, "force": True, "reason": "game day",
                   "nodes": ["a", "b"], "extra": {"x": 1.5}, "empty": ""},
        "duration": "60s", "recovery_timeout": "5m", "dry_run": True, "idempotency_key": "k-1"}
    JobSpec.model_validate(sent.body)  # what the CLI sends is a valid JobSpec
    assert "job job-1 queued" in result.stdout
    assert "pystol jobs show job-1" in result.stdout


def test_run_node_targets_and_amount(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    result = invoke(["run", "node-drain", "--node", "worker-a", "--node", "worker-b",
                     "--amount", "1"], url=api.url)
    assert result.exit_code == 0, result.output
    body = api.requests_to("POST", "/api/v1/jobs")[0].body
    assert body == {"action": "node-drain", "target": {"names": ["worker-a", "worker-b"],
                                                       "amount": 1},
                    "params": {}, "dry_run": False}
    JobSpec.model_validate(body)


def test_run_output_json_is_the_record(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    result = invoke(["run", "pod-kill", "-n", "shop", "-o", "json"], url=api.url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == record()


def test_run_wait_prints_each_event_once_and_exits_0_on_success(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    api.on("GET", "/api/v1/jobs/job-1", (200, record(status="running", events=2)),
           (200, record(status="running", events=3)),
           (200, finished("succeeded", "every affected workload recovered")))
    result = invoke(["run", "pod-kill", "-n", "shop", "-l", "app=web", "--mode", "fixed",
                     "--value", "1", "--wait"], url=api.url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for message in ("queued by cli", "worker w1 started", "3 pods match, 1 chosen",
                    "deleted pod shop/web-1", "deployment shop/web back to 3/3 ready"):
        assert out.count(message) == 1, out
    assert out.index("queued by cli") < out.index("deleted pod shop/web-1")
    assert "job job-1 succeeded in 7.0s" in out
    assert "reason:    every affected workload recovered" in out
    assert "1 affected of 3 selected" in out
    assert "Deployment/shop/web  3.4s" in out
    assert "\x1b[" not in out  # no colour and no spinner off a terminal
    assert "\x1b[" not in result.stderr
    assert api.requests_to("POST", "/api/v1/jobs")[0].body["target"]["value"] == 1


@pytest.mark.parametrize("status", ["failed", "aborted", "cancelled"])
def test_run_wait_exits_1_when_the_job_did_not_succeed(api: FakeApi, status: str) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    api.on("GET", "/api/v1/jobs/job-1", (200, finished(status, "deployment shop/web did not "
                                                               "recover in 5m")))
    result = invoke(["run", "pod-kill", "-n", "shop", "--wait"], url=api.url)
    assert result.exit_code == 1, result.output
    assert f"job job-1 {status}" in result.stdout
    assert "did not recover in 5m" in result.stdout
    assert "not recovered (2/3 ready)" in result.stdout


def test_run_wait_json_keeps_stdout_to_one_document(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    api.on("GET", "/api/v1/jobs/job-1", (200, record(status="running", events=2)),
           (200, finished("succeeded", "ok")))
    result = invoke(["run", "pod-kill", "-n", "shop", "--wait", "--output", "json"], url=api.url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "succeeded"
    assert "worker w1 started" in result.stderr


def test_run_wait_with_a_spinner_on_a_terminal(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    api.on("GET", "/api/v1/jobs/job-1", (200, record(status="running", events=2)),
           (200, finished("succeeded", "ok")))
    result = invoke(["run", "pod-kill", "-n", "shop", "--wait"], url=api.url,
                    runtime=Runtime(poll_interval=0.05, tty=True))
    assert result.exit_code == 0, result.output
    assert "running" in result.stderr and "\r\x1b[2K" in result.stderr


def test_ctrl_c_without_a_terminal_stops_following(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    api.on("GET", "/api/v1/jobs/job-1", (200, record(status="running", events=2)))

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    result = invoke(["run", "pod-kill", "-n", "shop", "--wait"], url=api.url,
                    runtime=Runtime(poll_interval=0.01, tty=False, sleep=interrupt))
    assert result.exit_code == 130, result.output
    assert "stopped following job job-1; it goes on" in result.stderr
    assert not api.requests_to("POST", "/api/v1/jobs/job-1/cancel")


def test_ctrl_c_on_a_terminal_offers_to_cancel(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (202, record()))
    api.on("GET", "/api/v1/jobs/job-1", (200, record(status="running", events=2)),
           (200, finished("cancelled", "cancelled by token:cli")))
    api.on("POST", "/api/v1/jobs/job-1/cancel", (202, record(status="running", events=2,
                                                             cancel_requested=True)))
    calls: list[float] = []

    def interrupt_once(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:
            raise KeyboardInterrupt

    result = invoke(["run", "pod-kill", "-n", "shop", "--wait"], url=api.url, input="y\n",
                    runtime=Runtime(poll_interval=0.01, tty=True, sleep=interrupt_once))
    assert result.exit_code == 1, result.output
    assert "cancel job job-1?" in result.stderr
    assert len(api.requests_to("POST", "/api/v1/jobs/job-1/cancel")) == 1
    assert "job job-1 cancelled" in click.unstyle(result.stdout)
    assert result.stdout.count("worker w1 started") == 1


def test_invalid_job_problem_prints_field_lines_and_exits_2(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", PROBLEM)
    result = invoke(["run", "pod-kill", "-n", "shop", "--mode", "fixed"], url=api.url)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: Invalid job: the job has 2 problems",
        "  target.mode: mode fixed needs a value",
        "  params.grace_period_seconds: Input should be a valid integer"]
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_server_errors_exit_3(api: FakeApi) -> None:
    api.on("GET", "/api/v1/actions", Answer(503, b"<html><body><h1>503 Service Unavailable"
                                                 b"</h1></body></html>", "text/html"))
    result = invoke(["actions"], url=api.url)
    assert result.exit_code == 3
    assert result.stderr.startswith("error: Service Unavailable: 503 Service Unavailable")


def test_connection_refused_exits_3_with_the_url() -> None:
    port = stack.find_free_port()
    url = f"http://127.0.0.1:{port}"
    result = invoke(["jobs", "list"], url=url)
    assert result.exit_code == 3
    assert result.stderr == f"error: cannot reach the Pystol API at {url}: connection refused\n"


def test_bad_options_are_usage_errors() -> None:
    result = invoke(["run", "pod-kill", "--duration", "soon"], url="http://127.0.0.1:9")
    assert result.exit_code == 2 and "invalid duration 'soon'" in result.stderr
    result = invoke(["run", "pod-kill", "--param", "novalue"], url="http://127.0.0.1:9")
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.stderr
    result = invoke(["run", "pod-kill", "--mode", "some"], url="http://127.0.0.1:9")
    assert result.exit_code == 2


# -- configuration -----------------------------------------------------------------------


def test_missing_token_says_where_to_put_one(tmp_path: Path) -> None:
    result = invoke(["actions"], url=None, token=None, home=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no API token: pass --token, set PYSTOL_TOKEN, or "
                                    f"write PYSTOL_TOKEN=… into {tmp_path}/.config/pystol/"
                                    "cli.env")


def test_config_file_then_environment_then_options(api: FakeApi, tmp_path: Path) -> None:
    api.on("GET", "/api/v1/actions", (200, []))
    config = tmp_path / ".config" / "pystol" / "cli.env"
    config.parent.mkdir(parents=True)
    config.write_text(f"# written by hand\nexport PYSTOL_API_URL={api.url}\n"
                      "PYSTOL_TOKEN='from-file'\n")
    assert invoke(["actions"], url=None, token=None, home=tmp_path).exit_code == 0
    assert invoke(["actions"], url=None, token="from-env", home=tmp_path).exit_code == 0
    assert invoke(["--token", "from-option", "actions"], url=None, token="from-env",
                  home=tmp_path).exit_code == 0
    other = tmp_path / "other.env"
    other.write_text(f"PYSTOL_API_URL={api.url}\nPYSTOL_TOKEN=from-other\n")
    assert invoke(["actions"], url=None, token=None, env={"PYSTOL_CONFIG": str(other)}
                  ).exit_code == 0
    tokens = [seen.headers["Authorization"] for seen in api.seen]
    assert tokens == ["Bearer from-file", "Bearer from-env", "Bearer from-option",
                      "Bearer from-other"]


def test_api_url_option_beats_the_environment(api: FakeApi) -> None:
    api.on("GET", "/api/v1/actions", (200, []))
    result = invoke(["--api-url", api.url + "/", "actions"], url="http://127.0.0.1:9")
    assert result.exit_code == 0, result.output


def test_config_file_errors_and_settings_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "cli.env"
    bad.write_text("PYSTOL_TOKN=abc\n")
    result = invoke(["actions"], url=None, token=None, env={"PYSTOL_CONFIG": str(bad)})
    assert result.exit_code == 2 and "unknown key 'PYSTOL_TOKN'" in result.stderr
    result = invoke(["actions"], url=None, env={"PYSTOL_CONFIG": str(tmp_path / "nope")})
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = invoke(["actions"], url="ftp://example.org")
    assert result.exit_code == 2
    assert "PYSTOL_API_URL: Value error, expected an http:// or https:// URL" in result.stderr
    assert "Traceback" not in result.output


def test_read_cli_env(tmp_path: Path) -> None:
    path = tmp_path / "cli.env"
    path.write_text('\n# comment\nPYSTOL_API_URL = "https://pystol.example.org"\n'
                    "export PYSTOL_TOKEN=a=b\n")
    assert read_cli_env(path) == {"PYSTOL_API_URL": "https://pystol.example.org",
                                  "PYSTOL_TOKEN": "a=b"}
    path.write_text("PYSTOL_TOKEN\n")
    with pytest.raises(ConfigFileError, match=r"cli.env:1: expected KEY=VALUE"):
        read_cli_env(path)


# -- jobs and actions --------------------------------------------------------------------


def test_jobs_list_is_an_aligned_table(api: FakeApi) -> None:
    items = [record("job-1", "running", events=2),
             finished("succeeded", "ok") | {"id": "a-much-longer-job-id"},
             record("j3", "failed", events=1)]
    api.on("GET", "/api/v1/jobs", (200, {"items": items, "next_cursor": "next"}))
    result = invoke(["jobs", "list", "--status", "running", "--action", "pod-kill",
                     "--namespace", "shop", "--limit", "3"], url=api.url)
    assert result.exit_code == 0, result.output
    [seen] = api.seen
    assert seen.query == {"status": ["running"], "action": ["pod-kill"],
                          "namespace": ["shop"], "limit": ["3"]}
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "ACTION", "TARGET", "AFFECTED", "CREATED",
                              "SOURCE"]
    assert [row.split()[0] for row in rows] == ["job-1", "a-much-longer-job-id", "j3"]
    for column in ("STATUS", "ACTION", "TARGET", "AFFECTED", "CREATED", "SOURCE"):
        start = header.index(column)
        for row in rows:
            assert row[start - 2:start] == "  " and row[start] != " ", (column, row)
    assert all(line == line.rstrip() for line in result.stdout.splitlines())
    assert "--all" in result.stderr


def test_jobs_list_all_follows_next_cursor(api: FakeApi) -> None:
    api.on("GET", "/api/v1/jobs",
           (200, {"items": [record("job-1"), record("job-2")], "next_cursor": "c2"}),
           (200, {"items": [record("job-3")], "next_cursor": None}))
    result = invoke(["jobs", "list", "--all", "--limit", "2", "-o", "json"], url=api.url)
    assert result.exit_code == 0, result.output
    assert [seen.query.get("cursor") for seen in api.seen] == [None, ["c2"]]
    assert all(seen.query["limit"] == ["2"] for seen in api.seen)
    listed = json.loads(result.stdout)
    assert [item["id"] for item in listed["items"]] == ["job-1", "job-2", "job-3"]
    assert listed["next_cursor"] is None


def test_jobs_show_cancel_and_follow(api: FakeApi) -> None:
    api.on("GET", "/api/v1/jobs/job-1", (200, finished("succeeded", "all recovered")))
    api.on("POST", "/api/v1/jobs/job-1/cancel",
           Answer(409, {"title": "Conflict", "status": 409,
                        "detail": "job job-1 has already finished (succeeded)"},
                  "application/problem+json"))
    shown = invoke(["jobs", "show", "job-1"], url=api.url)
    assert shown.exit_code == 0, shown.output
    assert "status:" in shown.stdout and "succeeded" in shown.stdout
    assert "target:    in shop · app=web · fixed 1" in shown.stdout
    assert "Pod/shop/web-1 (node worker-a)" in shown.stdout
    assert "deployment shop/web back to 3/3 ready" in shown.stdout
    as_json = invoke(["jobs", "show", "job-1", "-o", "json"], url=api.url)
    assert json.loads(as_json.stdout)["id"] == "job-1"
    followed = invoke(["jobs", "show", "job-1", "--follow"], url=api.url)
    assert followed.exit_code == 0 and "job job-1 succeeded" in followed.stdout
    cancelled = invoke(["jobs", "cancel", "job-1"], url=api.url)
    assert cancelled.exit_code == 2
    assert cancelled.stderr == "error: Conflict: job job-1 has already finished (succeeded)\n"


def test_jobs_cancel_running(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs/job 1/cancel", (202, record(status="running",
                                                             cancel_requested=True)))
    result = invoke(["jobs", "cancel", "job 1"], url=api.url)
    assert result.exit_code == 0, result.output
    assert "cancel requested (status now running)" in result.stdout
    assert api.seen[0].raw_path == "/api/v1/jobs/job%201/cancel"  # the id travelled quoted


def test_actions_table_and_json(api: FakeApi) -> None:
    catalogue = [{"name": "pod-kill", "targets": "pods",
                  "description": "Delete pods and measure recovery.\nMore text.",
                  "params_schema": {"type": "object", "properties": {
                      "grace_period_seconds": {"type": "integer"}}}},
                 {"name": "node-cordon", "targets": "nodes", "description": "Cordon nodes.",
                  "params_schema": {"type": "object"}}]
    api.on("GET", "/api/v1/actions", (200, {"items": catalogue}))
    result = invoke(["actions"], url=api.url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME         TARGETS  DESCRIPTION",
        "pod-kill     pods     Delete pods and measure recovery.",
        "node-cordon  nodes    Cordon nodes."]
    as_json = invoke(["actions", "--output", "json"], url=api.url)
    assert json.loads(as_json.stdout) == catalogue


# -- pure helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("1.5", 1.5), ("true", True), ("null", None), ('"7"', "7"), ("[1, 2]", [1, 2]),
    ('{"a": {"b": 1}}', {"a": {"b": 1}}), ("web", "web"), ("", ""), ("NaN", "NaN"),
    ("5m", "5m"), ("app=web", "app=web"),
])
def test_param_values_are_json_when_they_parse(text: str, value: Any) -> None:
    assert parse_param_value(text) == value


def test_parse_params() -> None:
    assert parse_params(["a=1", "b=x=y", "a=2"]) == {"a": 2, "b": "x=y"}
    with pytest.raises(click.BadParameter):
        parse_params(["=1"])


def test_build_job_spec_leaves_unset_options_out() -> None:
    assert build_job_spec("pod-kill", namespaces=["shop"], mode="fixed", value=2.0) == {
        "action": "pod-kill", "target": {"namespaces": ["shop"], "mode": "fixed", "value": 2},
        "params": {}, "dry_run": False}
    assert build_job_spec("pod-kill", mode="fixed-percent", value=12.5)["target"]["value"] == 12.5


def test_format_table_widths_come_from_content() -> None:
    lines = format_table(("A", "LONG HEADER", "C"), [["wide cell", 1, None], ["x", "", "end"]])
    assert lines == ["A          LONG HEADER  C",
                     "wide cell  1            -",
                     "x          -            end"]
    coloured = format_table(("A", "B"), [["red", "x"]], lambda column, text: "red")
    assert click.unstyle("\n".join(coloured)) == "A    B\nred  x"
    with pytest.raises(ValueError):
        format_table(("A",), [["1", "2"]])


@pytest.mark.parametrize(("seconds", "text"), [
    (0.4219, "0.42s"), (3.44, "3.4s"), (42.4, "42s"), (125, "2m05s"), (3725, "1h02m"),
    (None, "-")])
def test_format_seconds(seconds: float | None, text: str) -> None:
    assert format_seconds(seconds) == text


def test_problem_from_answer_reads_problem_json_and_other_bodies() -> None:
    error = problem_from_answer(422, "application/problem+json", json.dumps({
        "title": "Invalid job", "detail": "bad", "errors": [
            {"loc": ["target", "value"], "msg": "too big"}, {"field": "x", "message": "y"},
            "plain"]}).encode(), "Unprocessable Entity", "http://x/api/v1/jobs")
    assert (error.title, error.detail, error.exit_code) == ("Invalid job", "bad", 2)
    assert error.errors == [("target.value", "too big"), ("x", "y"), ("", "plain")]
    text = problem_from_answer(502, "text/plain", b"upstream\n  gone", "Bad Gateway", "u")
    assert (text.title, text.detail, text.exit_code) == ("Bad Gateway", "upstream gone", 3)


def test_cli_module_imports_nothing_heavy() -> None:
    heavy = ("kubernetes", "celery", "flask", "gunicorn", "requests", "pydantic")
    code = ("import sys, pystol_api.cli; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert found == "[]"


# -- pystol up: the decisions, without starting anything ---------------------------------


def test_plan_redis_prefers_a_running_redis_then_redis_server_then_fakeredis(
        tmp_path: Path) -> None:
    configured = "redis://127.0.0.1:6379/0"
    kwargs: dict[str, Any] = {"port": 6400, "workdir": tmp_path}
    existing = stack.plan_redis(configured, choice="auto", answers=True,
                                redis_server="/usr/bin/redis-server", fake_ok=True, **kwargs)
    assert (existing.kind, existing.url, existing.command) == ("existing", configured, ())
    server = stack.plan_redis(configured, choice="auto", answers=False,
                              redis_server="/usr/bin/redis-server", fake_ok=True, **kwargs)
    assert server.kind == "redis-server" and server.url == "redis://127.0.0.1:6400/0"
    assert list(server.command) == ["/usr/bin/redis-server", "--port", "6400", "--bind",
                                    "127.0.0.1", "--save", "", "--appendonly", "no",
                                    "--dir", str(tmp_path), "--loglevel", "warning"]
    assert "nothing answers at redis://127.0.0.1:6379/0" in server.note
    fake = stack.plan_redis(configured, choice="auto", answers=False, redis_server=None,
                            fake_ok=True, **kwargs)
    assert fake.kind == "fakeredis" and "trying things out" in fake.note
    assert list(fake.command) == [sys.executable, "-m", "pystol_api.cli.stack", "fake-redis",
                                  "--port", "6400"]
    forced = stack.plan_redis(configured, choice="server", answers=True,
                              redis_server="/usr/bin/redis-server", fake_ok=True, **kwargs)
    assert forced.kind == "redis-server"
    with pytest.raises(stack.StackError, match="fakeredis\\[lua\\]"):
        stack.plan_redis(configured, choice="auto", answers=False, redis_server=None,
                         fake_ok=False, **kwargs)
    forced_fake = stack.plan_redis(configured, choice="fake", answers=True,
                                   redis_server="/usr/bin/redis-server", fake_ok=True, **kwargs)
    assert forced_fake.kind == "fakeredis" and "not on PATH" not in forced_fake.note
    with pytest.raises(stack.StackError, match="needs Lua"):
        stack.plan_redis(configured, choice="fake", answers=False, redis_server=None,
                         fake_ok=False, **kwargs)
    with pytest.raises(stack.StackError, match="not on PATH"):
        stack.plan_redis(configured, choice="server", answers=False, redis_server=None,
                         fake_ok=True, **kwargs)


def test_child_commands_and_environment(tmp_path: Path) -> None:
    assert stack.sim_command(tmp_path / "k", tmp_path / "s.yaml") == [
        sys.executable, "-m", "pystol_sim", "--port", "0", "--kubeconfig", str(tmp_path / "k"),
        "--scenario", str(tmp_path / "s.yaml")]
    assert stack.sim_command(tmp_path / "k", snapshot=tmp_path / "c.yaml")[-2:] == [
        "--snapshot", str(tmp_path / "c.yaml")]
    assert stack.worker_command() == [sys.executable, "-m", "pystol_api.cli", "worker",
                                      "--concurrency", "2"]
    assert stack.api_command() == [sys.executable, "-m", "pystol_api.cli", "api"]
    where = {"redis_url": "redis://127.0.0.1:1/0", "kubeconfig": "/k", "api_tokens": ["a", "b"],
             "api_bind": "127.0.0.1:8080"}
    env = stack.child_environment({"PATH": "/bin", "PYSTOL_API_TOKENS": "old"}, **where)
    # Every process of the stack seals and checks grants with one key: made for the run.
    key = env.pop("PYSTOL_SIGNING_KEY")
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert env == {"PATH": "/bin", "PYSTOL_REDIS_URL": "redis://127.0.0.1:1/0",
                   "PYSTOL_KUBECONFIG": "/k", "PYSTOL_API_TOKENS": "a,b",
                   "PYSTOL_API_BIND": "127.0.0.1:8080", "PYTHONUNBUFFERED": "1"}
    again = stack.child_environment({"PATH": "/bin"}, **where)
    assert again["PYSTOL_SIGNING_KEY"] != key  # a fresh one per run, never a fixed default
    given = stack.child_environment({"PYSTOL_SIGNING_KEY": "mine-0123456789abcdef"}, **where,
                                    signing_key="unused")
    assert given["PYSTOL_SIGNING_KEY"] == "mine-0123456789abcdef"  # the user's is kept
    assert stack.child_environment({}, **where, signing_key="k" * 32)[
        "PYSTOL_SIGNING_KEY"] == "k" * 32


def test_parse_sim_serving_line() -> None:
    line = "pystol-sim: serving https://127.0.0.1:40123 kubeconfig=/tmp/x y/sim.kubeconfig\n"
    assert stack.parse_sim_serving(line) == ("https://127.0.0.1:40123",
                                             Path("/tmp/x y/sim.kubeconfig"))
    assert stack.parse_sim_serving("pystol-sim: cannot serve on 127.0.0.1:1") is None


def test_example_command_follows_the_scenario(tmp_path: Path) -> None:
    assert stack.example_command(stack.scenario_example(None)) == (
        "pystol run pod-kill --namespace shop --selector app=web --mode fixed --value 1 --wait")
    scenario = tmp_path / "s.yaml"
    scenario.write_text("namespaces: [edge]\ndeployments:\n"
                        "  - {name: gw, namespace: edge, labels: {tier: front}}\n")
    assert stack.scenario_example(scenario) == ("edge", "tier=front")
    scenario.write_text("deployments:\n  - {name_prefix: svc, count: 3}\n")
    assert stack.scenario_example(scenario) == ("default", "app=svc-0")
    scenario.write_text("nodes: []\n")
    assert stack.scenario_example(scenario) is None
    assert "--namespace NAMESPACE --selector app=NAME" in stack.example_command(None)


def test_describe_exit() -> None:
    assert stack.describe_exit(3) == "exited with code 3"
    assert stack.describe_exit(-9) == "was killed by SIGKILL"


def test_ports() -> None:
    port = stack.find_free_port()
    assert stack.port_is_free("127.0.0.1", port)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not stack.port_is_free("127.0.0.1", taken.getsockname()[1])


def test_redis_detection_and_fakeredis_check() -> None:
    assert not stack.redis_answers(f"redis://127.0.0.1:{stack.find_free_port()}/0",
                                   timeout=0.2)
    assert isinstance(stack.fakeredis_serves_celery(), bool)


def test_supervisor_prefixes_output_detects_deaths_and_stops_children() -> None:
    import io

    buffer, errors = io.StringIO(), io.StringIO()
    out = stack.Output(buffer, errors, colour=False)
    supervisor = stack.Supervisor(out)
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(60)")
    calm = supervisor.start(stack.Child("calm", [sys.executable, "-c", stubborn], {}, out,
                                        stop_timeout=0.3))
    supervisor.wait_until(lambda: "up" in calm.last_lines, 10, "calm")
    brief = supervisor.start(stack.Child("brief", [sys.executable, "-c",
                                                   "print('bye'); raise SystemExit(3)"], {}, out))
    with pytest.raises(stack.ChildDied) as died:
        supervisor.wait_until(lambda: False, 10, "nothing")
    assert died.value.child is brief
    supervisor.report_death(brief)
    started = time.monotonic()
    supervisor.stop_all()  # SIGTERM is ignored: SIGKILL after stop_timeout
    assert time.monotonic() - started < 5
    assert calm.exit_code == -signal.SIGKILL
    assert "[calm]   up" in buffer.getvalue().splitlines()
    assert "[brief]  bye" in buffer.getvalue().splitlines()
    assert "stopping calm" in buffer.getvalue()
    assert errors.getvalue().splitlines() == [
        "pystol up: error: brief exited with code 3 unexpectedly; its last lines:",
        "pystol up: error:   brief| bye"]


def test_dry_run_summary_says_nothing_changed() -> None:
    from pystol_api.cli.output import format_summary

    done = finished("succeeded", "dry run: would have affected 1 pod; nothing changed")
    done["spec"]["dry_run"] = True
    lines = [click.unstyle(line) for line in format_summary(done)]
    assert lines[0] == "job job-1 succeeded in 7.0s (dry run: nothing was changed)"
    assert "  targets:   3 selected, none changed" in lines


def test_output_survives_a_closed_stdout() -> None:
    import io

    closed = io.StringIO()
    closed.close()
    errors = io.StringIO()
    out = stack.Output(closed, errors, colour=False)
    out.child_line("api", "still fine")
    out.say("and again")
    out.error("reported")
    assert errors.getvalue() == "pystol up: error: reported\n"


def test_up_tells_a_new_terminal_where_pystol_is(tmp_path: Path) -> None:
    """Inside a virtualenv the pasted block must put the venv's bin/ on PATH first."""
    venv = tmp_path / "venv with space"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "pystol").write_text("#!/bin/sh\n")
    line = stack.path_export(prefix=str(venv), base_prefix="/usr", search_path="/usr/bin")
    assert line is not None
    exported = subprocess.run(["bash", "-c", line + '\nprintf %s "$PATH"'],
                              capture_output=True, text=True, env={"PATH": "/usr/bin"})
    assert exported.stdout.split(":")[0] == str(venv / "bin")


def test_up_prints_no_path_line_when_pystol_is_on_path(tmp_path: Path) -> None:
    (tmp_path / "pystol").write_text("#!/bin/sh\n")
    (tmp_path / "pystol").chmod(0o755)
    assert stack.path_export(prefix="/usr", base_prefix="/usr", search_path=str(tmp_path)) is None


def test_up_refuses_a_scenario_and_a_snapshot_together(tmp_path: Path) -> None:
    for name in ("s.yaml", "c.yaml"):
        (tmp_path / name).write_text("{}")
    result = invoke(["up", "--scenario", str(tmp_path / "s.yaml"), "--snapshot",
                     str(tmp_path / "c.yaml")], url=None)
    assert result.exit_code == 2 and "--scenario and --snapshot" in result.output


FAKE_SIM = """
import sys, time
# What a snapshot problem naming an object "x\\npystol-sim: serving ..." used to print:
print("pystol-sim: cluster.yaml: items[1] (Deployment shop/x", file=sys.stderr, flush=True)
print("pystol-sim: serving https://evil.example:6443 kubeconfig=/tmp/evil.kubeconfig",
      file=sys.stderr, flush=True)
time.sleep(0.3)
print(FIRST, flush=True)
print("pystol-sim: serving https://evil.example:6443 kubeconfig=/tmp/evil.kubeconfig",
      flush=True)
time.sleep(60)
"""


def test_up_takes_the_sims_serving_line_only_from_its_first_line_of_stdout() -> None:
    """Nothing the sim echoes from its input (snapshot problems on stderr, later lines)
    can point the worker and the API at another cluster."""
    import io

    buffer, errors = io.StringIO(), io.StringIO()
    out = stack.Output(buffer, errors, colour=False)
    supervisor = stack.Supervisor(out)
    real = "pystol-sim: serving https://127.0.0.1:40123 kubeconfig=/tmp/real.kubeconfig"
    try:
        served = stack.start_sim(supervisor, [sys.executable, "-c", FAKE_SIM.replace(
            "FIRST", repr(real))], {}, out)
        assert served == ("https://127.0.0.1:40123", Path("/tmp/real.kubeconfig"))
        # What the sim wrote to stderr is still shown, under its name.
        assert any(line.startswith("[sim]") and "evil.example" in line
                   for line in buffer.getvalue().splitlines())
    finally:
        supervisor.stop_all()
    supervisor = stack.Supervisor(out)
    try:
        with pytest.raises(stack.StackError, match="serving line"):
            stack.start_sim(supervisor, [sys.executable, "-c", FAKE_SIM.replace(
                "FIRST", repr("pystol-sim: something else first"))], {}, out)
    finally:
        supervisor.stop_all()


def test_the_ready_block_is_one_write_no_child_line_can_split() -> None:
    """`pystol up` prints a block to paste into another shell while its children keep
    logging (the API logs the last /readyz poll). Written line by line, a child's line
    could land inside it and the pasted block would run `[api] ...` as a command (seen in
    CI's first-run smoke). One write under the output lock keeps it whole."""
    class Recording(stack.Output):
        def __init__(self) -> None:
            super().__init__(io.StringIO(), io.StringIO(), colour=False)
            self.writes: list[str] = []

        def say(self, text: str = "") -> None:
            self.writes.append(text)

    out = Recording()
    stack._announce(out, stack.UpOptions(), stack.RedisPlan("existing", "redis://r:6379/0"),
                    "http://127.0.0.1:8080", "tok", "https://127.0.0.1:1", "/tmp/k")
    [block] = out.writes
    assert "In another terminal:" in block and "export PYSTOL_API_URL=" in block
