"""`pystol api`: the API under gunicorn, never Flask's development server.

gunicorn is embedded as a `BaseApplication`, so its configuration comes from
`Settings` (the one configuration source) rather than from gunicorn's own command
line or config files. Workers are gthread (8 threads each): most requests are short
(a Redis read or write, or one preview), but a server-sent-event stream holds its
thread for as long as someone follows a job, and with sync workers a few open streams
would leave plain requests, `/halt` included, waiting. The application is *not*
preloaded: each worker builds it after the fork, so every worker has its own Redis and
broker connections instead of sharing sockets inherited from the master.

The server refuses to start without at least one bearer token: an API that can
delete pods must never be reachable anonymously, even by mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from pystol_worker.core.settings import Settings

NO_TOKENS_MESSAGE = ("refusing to start the Pystol API without a bearer token: set "
                     "PYSTOL_API_TOKENS to one or more comma-separated tokens "
                     "(for example `export PYSTOL_API_TOKENS=$(openssl rand -hex 24)`)")


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """gunicorn settings for the API process."""
    return {
        "bind": [settings.api_bind],
        "workers": settings.api_workers,
        # Threads, so that a few open server-sent-event streams (`jobs show --follow`, the
        # dashboard) do not occupy every worker while plain requests wait.
        "worker_class": "gthread",
        "threads": 8,
        "preload_app": False,  # build the app (and its Redis connections) in each worker
        "accesslog": "-",      # access log to stdout
        "errorlog": "-",       # gunicorn's own log to stderr
        "proc_name": "pystol-api",
        # A request body larger than the API accepts is refused by the app with a 413;
        # these only bound the request line and headers.
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        # gunicorn 24+ opens a control socket under $HOME by default: two API processes on
        # one host would contend for it, and containers often have no writable home.
        "control_socket_disable": True,
    }


def _default_factory(settings: Settings) -> Flask:
    from pystol_api.http.app import create_app

    return create_app(settings)


class ApiServer(BaseApplication):
    """gunicorn with the Pystol API as its application, configured from Settings."""

    def __init__(self, settings: Settings,
                 app_factory: Callable[[Settings], Flask] = _default_factory) -> None:
        self.settings = settings
        self.app_factory = app_factory
        super().__init__()

    def load_config(self) -> None:
        assert self.cfg is not None
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:  # options newer than the installed gunicorn: skip
                self.cfg.set(key, value)

    def load(self) -> Flask:
        # Called by each worker after the fork (preload_app is off).
        return self.app_factory(self.settings)


def serve(settings: Settings) -> None:
    """Run the API until gunicorn is stopped; SystemExit when no token is configured."""
    if not settings.api_tokens:
        raise SystemExit(NO_TOKENS_MESSAGE)
    ApiServer(settings).run()
