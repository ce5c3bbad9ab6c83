"""Rehearsals asked of the server: the dashboard's "Rehearse" next to "Run".

`POST /api/v1/experiments/{name}/rehearse` checks the caller exactly as `…/run` would
(`jobs.submit` in every namespace the experiment's steps target or its probes read,
`cluster.chaos` for node steps, the admin policy), because the worker copies those
namespaces into a private simulator and the report shows what is in them. Nothing real
changes: the worker only lists objects (read-only RBAC), then runs the experiment on the
copy (`pystol_worker.rehearsal.service`). The answer is 202 with the run to poll at
`Location`, `GET /api/v1/rehearsals/{id}`; the report there is the one `pystol rehearse
-o json` prints.

A rehearsal is visible to whoever asked for it and to whoever may read jobs in every
namespace it copies; to anyone else it does not exist (404, ids are not confirmed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from pystol_api.http.auth import current_identity
from pystol_api.http.problems import ApiProblem, problem_doc
from pystol_api.http.routes.common import (
    API_PREFIX,
    AUTH_RESPONSES,
    BEARER_SECURITY,
    INVALID_DOC,
    JSON_BODY_RESPONSES,
    Services,
)
from pystol_api.http.routes.experiments import (
    EXPERIMENT_NOT_FOUND,
    LOCATION_DOC,
    ExperimentPath,
    map_service_errors,
)
from pystol_worker.experiments.service import ExperimentNotFound, ExperimentService
from pystol_worker.rehearsal.service import RehearsalNotFound, RehearsalRun, RehearsalService

TAG = Tag(name="rehearsals", description="Rehearsals: an experiment run on a private "
                                         "simulated copy of the cluster, before the real run.")
REHEARSAL_NOT_FOUND = problem_doc("No such rehearsal (or one the caller may not read).")
MIN_SPEED, MAX_SPEED = 1, 100

#: The simulator's speed: a number of simulated seconds per real second, 1..100.
Speed = Annotated[float, Field(ge=MIN_SPEED, le=MAX_SPEED, strict=True, allow_inf_nan=False)]


class RehearseRequest(BaseModel):
    """How fast the copy runs: `speed` 1..100 (simulated seconds per real second), or
    `"auto"` / absent (as fast as the experiment's probes and timings allow)."""

    model_config = ConfigDict(extra="forbid")

    speed: Speed | Literal["auto"] | None = Field(
        None, description='1..100, or "auto" (the default).', examples=[10, "auto"])


class RehearsalPath(BaseModel):
    id: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9._-]+$",
                    description="A rehearsal id, e.g. r-20261206T120000-1a2b3c4d.")


def rehearsal_url(run_id: str) -> str:
    return f"{API_PREFIX}/rehearsals/{run_id}"


def rehearsal_response(run: RehearsalRun, status: int = 200,
                       location: bool = False) -> Response:
    """The run as JSON, without the grant's seal (the worker's business, not the
    caller's)."""
    body = run.model_dump_json(exclude={"grant": {"signature"}})
    response = Response(body, status=status, mimetype="application/json")
    if location:
        response.headers["Location"] = rehearsal_url(run.id)
    return response


def blueprint(services: Services, experiments: Callable[[], ExperimentService],
              send: Callable[[str], None]) -> APIBlueprint:
    """`send(run_id)` queues `pystol.rehearse` for a worker (`CeleryRehearsals.send`)."""
    bp = APIBlueprint("rehearsals", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses=AUTH_RESPONSES)

    def rehearsals() -> RehearsalService:
        return RehearsalService(services.redis, services.settings,
                                check=experiments().check_steps, send=send)

    @bp.post("/experiments/<name>/rehearse", summary="Rehearse a stored experiment",
             responses={202: {"description": "Checked, queued for a worker; follow it at "
                                             "the Location.",
                              "headers": LOCATION_DOC,
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/RehearsalRun"}}}},
                        404: EXPERIMENT_NOT_FOUND,
                        422: INVALID_DOC,
                        **JSON_BODY_RESPONSES})
    def rehearse_experiment(path: ExperimentPath, body: RehearseRequest) -> Response:
        """Run the experiment on a private simulated copy of the namespaces it touches:
        predicted targets, blast radius (ready pods lost per workload, PodDisruptionBudgets
        that block), recovery times and the verdict, before anything touches the cluster.
        Permissions as `…/run`: `jobs.submit` in every namespace of the experiment, its
        probes' included."""
        identity = current_identity()
        try:
            stored = experiments().get(path.name, identity)
        except ExperimentNotFound as error:
            problem = map_service_errors(error)
            assert problem is not None
            raise problem from None
        speed = None if body.speed in (None, "auto") else float(body.speed)
        run = rehearsals().start(stored.spec, identity, speed=speed)
        return rehearsal_response(run, 202, location=True)

    @bp.get("/rehearsals/<id>", summary="One rehearsal and its report",
            responses={200: RehearsalRun, 404: REHEARSAL_NOT_FOUND, 422: INVALID_DOC})
    def get_rehearsal(path: RehearsalPath) -> Response:
        """`queued` (with `reason` while it waits for a slot), `running`, then `completed`
        with the `report`, or `failed` with the `error`."""
        try:
            run = rehearsals().get(path.id, current_identity())
        except RehearsalNotFound:
            raise ApiProblem(404, "rehearsal-not-found", "Rehearsal not found",
                             f"there is no rehearsal {path.id}") from None
        return rehearsal_response(run)

    return bp
