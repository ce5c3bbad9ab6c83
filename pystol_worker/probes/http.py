"""HTTP calls made for probes: a URL, or a Service through the Kubernetes API server's proxy.

One implementation for both users: the `http-probe` action (N calls, percentiles) and
the steady-state `http` probe (one call judged by its tolerance). Both forms are safe for
the same reasons as before:

- a URL goes through `safety.outbound_http` (`DestinationGuard` judges it against the
  admin policy, `ProbeClient` connects to the judged address, caps time and body, and a
  cancel or a halt ends it at once);
- a Service is called with the worker's own Kubernetes client through
  `/api/v1/namespaces/NS/services/NAME[:PORT]/proxy/PATH` (`..` refused by the model),
  in a thread of its own so that a cancel, a halt or the deadline end it at once; the
  API server's own 401/403 (the worker lacks `services/proxy`) is an error of the
  installation, never a probe result.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from pystol_worker.core.errors import ActionError
from pystol_worker.core.model import HttpProbe
from pystol_worker.probes.evaluation import Attempt, ProbeEnv
from pystol_worker.safety.outbound_http import (
    STOP_POLL_SECONDS,
    DestinationGuard,
    DestinationRefused,
    ProbeAnswer,
    ProbeClient,
    ProbeStopped,
)


class ServiceProxyRefused(ActionError):
    """The API server itself refused the worker's proxy call (401, or 403 on
    `services/proxy`): the installation lacks a permission; no probe result."""


@runtime_checkable
class ServiceProxy(Protocol):
    """A cluster client that can GET through the API server's service proxy
    (`ClusterAccess.service_proxy_get`)."""

    def service_proxy_get(self, namespace: str, service: str, path: str, timeout: float,
                          max_body: int, on_response: Callable[[Any], None] | None = None
                          ) -> tuple[int, int, bool, bytes]: ...


def close_response(response: Any) -> None:
    """Close an HTTP response another thread may be reading (shutdown() interrupts a
    blocked read; close() where it is missing). Never raises."""
    if response is None:
        return
    try:
        closing = getattr(response, "shutdown", None) or response.close
        closing()
    except Exception:  # closing is best effort: the reader ends either way
        pass


def api_server_refusal(status: int, head: bytes) -> str | None:
    """The message of the API server's own 401, or its 403 for `services/proxy` (a
    Service's backend answering 401 or 403 itself is a probe result, not a refusal)."""
    if status not in (401, 403):
        return None
    try:
        body = json.loads(head)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("kind") != "Status":
        return None
    message = str(body.get("message", ""))
    if status == 401 or '"services/proxy"' in message:
        return message or "Unauthorized"
    return None


def call_service(proxy: ServiceProxy, namespace: str, service: str, path: str,
                 timeout: float, max_body: int, should_stop: Callable[[], bool], *,
                 keep_body: bool = False) -> ProbeAnswer:
    """One GET of `path` on Service `service` (`name[:port]`) through the API server's
    proxy, in a thread of its own so that `should_stop()` (a cancel, a halt, a probe's
    stop) ends it at once (ProbeStopped) even while the API server holds the call.
    `timeout` is the whole call's: at the deadline (or on a stop) this side closes the
    response, which ends the thread's read. The answer's `body` holds the first 4 KiB, or
    up to `max_body` with `keep_body`. ServiceProxyRefused when the API server refuses
    the worker itself."""
    box: dict[str, Any] = {}
    started = time.monotonic()
    extra: dict[str, Any] = {"head_bytes": max_body} if keep_body else {}

    def call() -> None:
        try:
            box["answer"] = proxy.service_proxy_get(
                namespace, service, path, timeout, max_body,
                on_response=lambda response: box.__setitem__("response", response), **extra)
        except Exception as error:  # the call's error, as for a URL that fails
            box["error"] = error

    thread = threading.Thread(target=call, name="probe-service-call", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(STOP_POLL_SECONDS)
        if not thread.is_alive():
            break
        if should_stop():
            close_response(box.get("response"))
            raise ProbeStopped()
        if time.monotonic() - started > timeout:
            close_response(box.get("response"))
            return ProbeAnswer(None, round(time.monotonic() - started, 6),
                               error=f"timed out after {timeout:g}s")
    seconds = round(time.monotonic() - started, 6)
    if "error" in box:
        error = box["error"]
        if "timed out" in str(error).lower() or "timeout" in str(error).lower():
            return ProbeAnswer(None, seconds, error=f"timed out after {timeout:g}s")
        return ProbeAnswer(None, seconds, error=f"{type(error).__name__}: {error}")
    status, size, cut, head = box["answer"]
    refusal = api_server_refusal(status, head)
    if refusal is not None:
        raise ServiceProxyRefused(f"the Kubernetes API server refused the worker's call to "
                                  f"service {namespace}/{service}{path}: {refusal}")
    return ProbeAnswer(status, seconds, body_bytes=size, body_cut=cut, body=bytes(head))


def check_http(probe: HttpProbe, env: ProbeEnv, timeout: float) -> Attempt:
    """One call of an http probe, judged: status (`status_ok`), `max_latency`,
    `body_contains` (a substring of the capped body, never a pattern)."""
    if probe.url is not None and probe.body_contains is not None and \
            not env.policy.probes.url_body_checks:
        # checked at submission too; the policy may have changed since
        return Attempt(False, error="body_contains on a URL probe needs the admin "
                                    "policy's probes.url_body_checks")
    cap = env.policy.probes.max_body_bytes
    timeout = min(timeout, env.policy.probes.max_seconds)
    keep = probe.body_contains is not None
    if probe.service is not None:
        if not isinstance(env.cluster, ServiceProxy):
            return Attempt(False, error="this worker's cluster client cannot call the "
                                        "Kubernetes API server's service proxy")
        service = probe.service
        name = service.name if service.port is None else f"{service.name}:{service.port}"
        answer = call_service(env.cluster, service.namespace, name, service.path, timeout,
                              cap, env.should_stop, keep_body=keep)
    else:
        assert probe.url is not None
        client = ProbeClient(DestinationGuard.for_settings(env.policy.probes, env.settings),
                             should_stop=env.should_stop)
        try:
            answer = client.request("GET", probe.url, timeout=timeout,
                                    follow_redirects=env.policy.probes.follow_redirects,
                                    keep_body=keep)
        except DestinationRefused as refused:
            return Attempt(False, error=f"refused by the admin policy: {refused}")
    where = probe.describe
    if answer.status is None:
        return Attempt(False, seconds=answer.seconds, error=answer.error,
                       output=f"{where}: {answer.error}")
    problems = []
    if not probe.status_ok(answer.status):
        problems.append(f"answered {answer.status}")
    if probe.max_latency is not None and answer.seconds > probe.max_latency:
        problems.append(f"took {answer.seconds:.3f}s, more than max_latency "
                        f"{probe.max_latency:g}s")
    if probe.body_contains is not None and \
            probe.body_contains.encode() not in answer.body:
        problems.append(f"body does not contain {probe.body_contains!r}"
                        + (" (in the part read)" if answer.body_cut else ""))
    text = f"{where} " + ("; ".join(problems) if problems else f"answered {answer.status} "
                          f"in {answer.seconds:.3f}s")
    return Attempt(not problems, value=answer.status, status=answer.status,
                   seconds=answer.seconds, output=text)
