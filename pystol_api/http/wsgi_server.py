"""`pystol api`: the API under gunicorn, never Flask's development server.

gunicorn is embedded as a `BaseApplication`, so its configuration comes from
`Settings` (the one configuration source) rather than from gunicorn's own command
line or config files. Workers are gthread: most requests are short (a Redis read or
write, or one preview), but a server-sent-event stream holds its thread for as long as
someone follows a job, and with sync workers a few open streams would leave plain
requests, `/halt` included, waiting. Each worker has `PYSTOL_STREAM_MAX_CLIENTS` threads
for streams (the most it serves at once: `stream_limits`) plus `REQUEST_THREADS` that
streams can never take, so open streams never starve plain requests. The application is *not*
preloaded: each worker builds it after the fork, so every worker has its own Redis and
broker connections instead of sharing sockets inherited from the master.

The server refuses to start without at least one bearer token: an API that can
delete pods must never be reachable anonymously, even by mistake. It speaks plain HTTP:
on an address other than loopback, tokens cross the network in clear unless TLS is
terminated in front of it (the chart's Ingress with TLS), and it says so in its log at
start-up.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from pystol_worker.core.settings import Settings

log = logging.getLogger("pystol.api")

# Threads per worker that event streams can never take (they get their own on top).
REQUEST_THREADS = 16
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
NO_TOKENS_MESSAGE = ("refusing to start the Pystol API without a bearer token: set "
                     "PYSTOL_API_TOKENS to one or more comma-separated tokens "
                     "(for example `export PYSTOL_API_TOKENS=$(openssl rand -hex 24)`)")


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """gunicorn settings for the API process."""
    return {
        "bind": [settings.api_bind],
        "workers": settings.api_workers,
        # Threads, so that open server-sent-event streams (`jobs show --follow`, the
        # dashboard) do not occupy every worker while plain requests wait: the streams'
        # own share (at most stream_max_clients, stream_limits) plus REQUEST_THREADS.
        # gthread, with a deadline on reading from a client (gunicorn_worker: a client
        # that sends one byte and stalls must not hold a thread for ever).
        "worker_class": "pystol_api.http.gunicorn_worker.DeadlineThreadWorker",
        "threads": settings.stream_max_clients + REQUEST_THREADS,
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


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def plain_http_warning(settings: Settings) -> str | None:
    """The start-up warning for a bind address other machines can reach, or None."""
    if is_loopback(settings.bind_host):
        return None
    return (f"the API serves plain HTTP on {settings.api_bind}: bearer tokens sent to it "
            "cross the network unencrypted. Expose it only through a TLS-terminating "
            "proxy (the Helm chart's Ingress with TLS) and keep the port itself "
            "unreachable from outside (its NetworkPolicy).")


def serve(settings: Settings) -> None:
    """Run the API until gunicorn is stopped; SystemExit when no token is configured,
    SettingsError when a rate limit is not flask-limiter notation."""
    if not settings.api_tokens:
        raise SystemExit(NO_TOKENS_MESSAGE)
    from pystol_api.http.rate_limits import check_limits

    check_limits(settings)  # here, in the master: a worker failing to boot says less
    warning = plain_http_warning(settings)
    if warning is not None:
        log.warning(warning)
    ApiServer(settings).run()
