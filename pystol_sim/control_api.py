"""The simulation's own control endpoints under `/_sim/`, apart from the Kubernetes API.

These are what tests and benchmarks use to steer the simulation and read its
ground truth: fault injection (`faults`), request counts (`requests`), pod
ground truth (`truth`), watch-cache compaction (`compact`), static users
(`users`), node readiness (`nodes`), running a CronJob's schedule now
(`cronjobs/fire`) and the simulated clock's speed (`speed`, settable until the first pod
is deleted: a rehearsal reads the workloads' delays, then picks it). Only the admin token
reaches them (see the server's auth middleware). Keeping them here leaves `server.py`
the Kubernetes API server only.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from pystol_sim.authn import Authenticator, AuthError
from pystol_sim.cluster import Cluster
from pystol_sim.controllers.manager import MAX_SPEED, MIN_SPEED, SpeedLocked
from pystol_sim.errors import ApiError, bad_request
from pystol_sim.store import Store

JSON = "application/json"


@dataclass
class FaultRule:
    """A `/_sim/faults` rule: answer a share of matching requests with an error or late."""

    verb: str
    resource: str
    rate: float
    code: int
    delay_seconds: float
    until: float

    def applies(self, verb: str, resource: str) -> bool:
        return (self.verb in ("*", verb) and self.resource in ("*", resource)
                and time.monotonic() < self.until)


class ControlledServer(Protocol):
    """What the control endpoints read and change on the API server."""

    cluster: Cluster
    store: Store
    authn: Authenticator
    faults: list[FaultRule]
    request_counts: Counter[tuple[str, str]]
    faults_served: Counter[tuple[str, str, int]]


def _answer(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


async def _json_body(request: web.Request) -> dict[str, Any]:
    text = await request.read()
    try:
        body = orjson.loads(text) if text.strip() else {}
    except orjson.JSONDecodeError as error:
        raise bad_request(f"invalid JSON body: {error}") from error
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


class ControlApi:
    def __init__(self, server: ControlledServer) -> None:
        self.server = server

    async def handle(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        method = request.method
        server = self.server
        if tail == "faults":
            return await self._faults(request, method)
        if tail == "truth" and method == "GET":
            ns = request.query.get("namespace")
            return _answer({"pods": [record.__dict__ for record in
                                     server.cluster.truth.values()
                                     if not ns or record.namespace == ns]})
        if tail == "requests" and method == "GET":
            return _answer({"requests": [
                {"verb": verb, "resource": resource, "count": count}
                for (verb, resource), count in sorted(server.request_counts.items())],
                "faults_served": [
                    {"verb": verb, "resource": resource, "code": code, "count": count}
                    for (verb, resource, code), count in sorted(server.faults_served.items())]})
        if tail == "requests" and method == "DELETE":
            server.request_counts.clear()
            server.faults_served.clear()
            return _answer({"requests": [], "faults_served": []})
        if tail == "compact" and method == "POST":
            return _answer({"compactedRevision": server.store.compact()})
        if tail == "users" or tail.startswith("users/"):
            return await self._users(request, tail, method)
        if tail == "nodes" and method == "POST":
            body = await _json_body(request)
            server.cluster.set_node_ready(str(body.get("name", "")), bool(body.get("ready", True)))
            return _answer({"ok": True})
        if tail == "speed":
            return await self._speed(request, method)
        if tail == "cronjobs/fire" and method == "POST":
            body = await _json_body(request)
            namespace, name = body.get("namespace"), body.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise bad_request("namespace: Required value: the CronJob's namespace")
            if not isinstance(name, str) or not name:
                raise bad_request("name: Required value: the CronJob's name")
            return _answer(server.cluster.fire_cronjob(namespace, name))
        raise ApiError(404, f"unknown simulation control path /_sim/{tail}")

    async def _faults(self, request: web.Request, method: str) -> web.Response:
        faults = self.server.faults
        if method == "POST":
            body = await _json_body(request)
            try:
                rule = FaultRule(
                    verb=str(body.get("verb", "*")), resource=str(body.get("resource", "*")),
                    rate=float(body.get("rate", 1.0)), code=int(body.get("code", 500)),
                    delay_seconds=float(body.get("delay_seconds", 0.0)),
                    until=time.monotonic() + float(body.get("duration_seconds", 60.0)))
            except (TypeError, ValueError) as error:
                raise bad_request(f"invalid fault rule: {error}") from error
            if not 0.0 <= rule.rate <= 1.0 or rule.code not in (0, 429, 500, 503, 504):
                raise bad_request("rate must be within 0..1 and code one of 0, 429, 500, "
                                  "503, 504 (0: delay only)")
            faults.append(rule)
            return _answer({"faults": len(faults)}, 201)
        if method == "DELETE":
            faults.clear()
            return _answer({"faults": 0})
        if method == "GET":
            return _answer({"faults": [rule.__dict__ for rule in faults
                                       if time.monotonic() < rule.until]})
        raise ApiError(404, "unknown simulation control path /_sim/faults")

    async def _speed(self, request: web.Request, method: str) -> web.Response:
        manager = self.server.cluster.manager
        if method == "GET":
            return _answer({"speed": manager.speed,
                            "locked": manager.first_pod_deletion is not None})
        if method != "PUT":
            raise ApiError(405, f"/_sim/speed answers GET and PUT, not {method}")
        body = await _json_body(request)
        speed = body.get("speed")
        # bool is an int in Python; `{"speed": true}` is not a speed.
        if isinstance(speed, bool) or not isinstance(speed, int | float) or \
                not MIN_SPEED <= speed <= MAX_SPEED:
            raise ApiError(422, f"speed: Invalid value: {speed!r}: a number within "
                                f"{MIN_SPEED:g}..{MAX_SPEED:g}", reason="Invalid")
        try:
            manager.change_speed(float(speed))
        except SpeedLocked as error:
            raise ApiError(409, f"speed: {error}") from error
        return _answer({"speed": manager.speed, "locked": False})

    async def _users(self, request: web.Request, tail: str, method: str) -> web.Response:
        authn = self.server.authn
        if tail == "users" and method == "POST":
            body = await _json_body(request)
            try:
                user = authn.add_user(body.get("name"), body.get("token"),
                                      body.get("groups") or (), body.get("uid") or "")
            except AuthError as error:
                raise bad_request(f"invalid user: {error}") from error
            return _answer(user.to_json(), 201)
        if tail == "users" and method == "GET":
            return _answer({"users": [user.to_json() for user in authn.users()]})
        if tail.startswith("users/") and method == "DELETE":
            name = tail.split("/", 1)[1]
            removed = authn.remove_user(name)
            if not removed:
                raise ApiError(404, f"no user {name!r}")
            return _answer({"removed": removed})
        raise ApiError(404, f"unknown simulation control path /_sim/{tail}")
