"""`pystol run` imports only what an HTTP client needs.

A one-shot `pystol run pod-kill …` is what a user times against `chaos run` (bench/launch.py):
its start is mostly imports, so the client path must not load the Kubernetes client, Celery,
Flask, pydantic (the server settings model and the job model), or the command groups it
does not run. Each case runs the real
console-script entry point in a fresh interpreter against a tiny HTTP server standing in
for the API, and reads `sys.modules` when the command exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# Server libraries, and the CLI's own command groups `run` does not use (loaded by name).
HEAVY = ("kubernetes", "celery", "flask", "pydantic", "pydantic_settings", "redis", "yaml",
         "pystol_api.cli.experiments", "pystol_api.cli.rehearse", "pystol_api.cli.schedules",
         "pystol_api.cli.tokens", "pystol_api.cli.audit")
JOB = {"id": "job-1", "status": "queued", "spec": {"action": "pod-kill"}}
PROBE = """
import atexit, json, sys
heavy = {heavy!r}
atexit.register(lambda: print("LOADED " + json.dumps(sorted(m for m in heavy if m in sys.modules)),
                              file=sys.__stderr__))
sys.argv = ["pystol", *{args!r}]
from pystol_api.cli.commands import main
main()
"""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.posts.append(self.path)  # type: ignore[attr-defined]
        body = json.dumps(JOB).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def api() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.posts = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def loaded_by(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str],
                                                             list[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, args=args)],
                          env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert lines, done.stderr
    return done, json.loads(lines[-1].removeprefix("LOADED "))


def client_env(api: ThreadingHTTPServer) -> dict[str, str]:
    import os

    env = {key: value for key, value in os.environ.items() if not key.startswith("PYSTOL_")}
    return {**env, "PYSTOL_API_URL": f"http://127.0.0.1:{api.server_address[1]}",
            "PYSTOL_TOKEN": "t0k", "HOME": "/nonexistent"}


def test_run_submits_a_job_without_server_libraries(api: ThreadingHTTPServer) -> None:
    done, loaded = loaded_by(["run", "pod-kill", "-n", "shop", "-l", "app=web", "--mode",
                              "fixed", "--value", "2", "-p", "grace_period_seconds=0",
                              "-o", "json"], client_env(api))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == "job-1"
    assert api.posts == ["/api/v1/jobs"]  # type: ignore[attr-defined]
    assert loaded == []


def test_help_loads_no_server_library(api: ThreadingHTTPServer) -> None:
    done, loaded = loaded_by(["run", "--help"], client_env(api))
    assert done.returncode == 0, done.stderr
    assert loaded == []


def test_a_bad_api_url_is_refused_without_the_settings_model(api: ThreadingHTTPServer
                                                             ) -> None:
    env = {**client_env(api), "PYSTOL_API_URL": "ftp://user:pw@example.org"}
    done, loaded = loaded_by(["actions"], env)
    assert done.returncode == 2
    assert ("PYSTOL_API_URL: Value error, expected an http:// or https:// URL "
            "(got 'ftp://***@example.org')") in done.stderr
    assert loaded == []


def test_the_client_default_api_url_is_the_settings_default() -> None:
    from pystol_api.cli.api_client import DEFAULT_API_URL
    from pystol_worker.core.settings import Settings

    assert Settings.model_fields["api_url"].default == DEFAULT_API_URL


def test_a_lazy_command_group_still_runs(api: ThreadingHTTPServer) -> None:
    done, loaded = loaded_by(["schedules", "--help"], client_env(api))
    assert done.returncode == 0, done.stderr
    assert "Scheduled chaos" in done.stdout
    assert "pystol_api.cli.schedules" in loaded
