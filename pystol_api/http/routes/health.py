"""Liveness and readiness probes, outside `/api/v1` and without authentication.

`/healthz` only says the process answers (a restart would not fix a Redis outage, so
liveness must not depend on it); `/readyz` says whether this instance can do its job,
which needs Redis, so a load balancer stops sending it requests while Redis is gone.
"""

from __future__ import annotations

import logging

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel
from redis.exceptions import RedisError

from pystol_api.http.problems import problem_doc, problem_response
from pystol_api.http.routes.common import Services, json_response

log = logging.getLogger("pystol.api")

TAG = Tag(name="health", description="Probes for Kubernetes and load balancers.")


class HealthStatus(BaseModel):
    status: str = "ok"


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("health", __name__, abp_tags=[TAG])

    @bp.get("/healthz", summary="Liveness", responses={200: HealthStatus})
    def healthz() -> Response:
        return json_response(HealthStatus())

    @bp.get("/readyz", summary="Readiness: Redis answers",
            responses={200: HealthStatus, 503: problem_doc("Redis cannot be reached.")})
    def readyz() -> Response:
        try:
            services.redis.ping()
        except (RedisError, OSError) as error:
            # The probe is unauthenticated: the reason goes to the log, not to the caller.
            log.warning("not ready: Redis does not answer: %s", error)
            return problem_response(503, "not-ready", "Not ready",
                                    "Redis (PYSTOL_REDIS_URL) does not answer",
                                    headers={"Retry-After": "5"})
        return json_response(HealthStatus())

    return bp
