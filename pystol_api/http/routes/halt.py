"""The global kill switch over HTTP: `POST` halts all chaos, `DELETE` lifts it, `GET` tells.

Halting sets the switch before anything else, so no worker injects again after
its next check (they check before every injecting call); then queued jobs are
cancelled and running ones asked to abort, which makes them revert.
"""

from __future__ import annotations

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pystol_api.http.auth import current_submitter
from pystol_api.http.problems import validation_error_callback
from pystol_api.http.routes.common import (
    API_PREFIX,
    BEARER_SECURITY,
    INVALID_DOC,
    UNAUTHORIZED_DOC,
    Services,
    json_response,
)
from pystol_worker.store.halt import HaltState, HaltSwitch

TAG = Tag(name="halt", description="The global kill switch.")


class HaltRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, examples=["incident INC-1234"])


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("halt", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses={401: UNAUTHORIZED_DOC})
    switch = HaltSwitch(services.redis)

    @bp.get("/halt", summary="Is chaos halted?", responses={200: HaltState})
    def halt_state() -> Response:
        return json_response(switch.state())

    @bp.post("/halt", summary="Halt all chaos now",
             responses={200: HaltState, 422: INVALID_DOC})
    def halt() -> Response:
        """Stop new injections at once, abort running jobs (they revert), cancel queued
        ones, and refuse new jobs with 409 until the halt is lifted. The body
        (`{"reason": "..."}`) is optional: in an emergency, an empty POST is enough."""
        raw = request.get_data(cache=False)
        body = HaltRequest()
        if raw.strip():
            try:
                body = HaltRequest.model_validate_json(raw)
            except ValidationError as error:
                return validation_error_callback(error)
        return json_response(switch.engage(services.store, current_submitter(), body.reason))

    @bp.delete("/halt", summary="Lift the halt", responses={200: HaltState})
    def lift() -> Response:
        return json_response(switch.release())

    return bp
