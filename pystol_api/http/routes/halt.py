"""The global kill switch over HTTP: `POST` halts all chaos, `DELETE` lifts it, `GET` tells.

Halting sets the switch before anything else, so no worker injects again after
its next check (they check before every injecting call); then queued jobs are
cancelled and running ones asked to abort, which makes them revert.
"""

from __future__ import annotations

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pystol_api.http.auth import allows, current_actor, current_submitter, require
from pystol_api.http.problems import problem_doc, validation_error_callback
from pystol_api.http.routes.common import (
    API_PREFIX,
    AUTH_RESPONSES,
    BEARER_SECURITY,
    INVALID_DOC,
    Services,
    json_response,
)
from pystol_worker.core.access import Permission
from pystol_worker.store.halt import HaltState, HaltSwitch

TAG = Tag(name="halt", description="The global kill switch.")


class HaltRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, examples=["incident INC-1234"])


# The view reads the body itself (an empty POST must halt, whatever its content type), so
# flask-openapi3 does not document it: the optional body is declared here, so that clients
# and the API fuzzer know it.
HALT_BODY_DOC = {"required": False, "content": {"application/json": {
    "schema": HaltRequest.model_json_schema()}}}


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("halt", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses=AUTH_RESPONSES)
    switch = HaltSwitch(services.redis)

    @bp.get("/halt", summary="Is chaos halted?", responses={200: HaltState})
    def halt_state() -> Response:
        return json_response(switch.state())

    @bp.post("/halt", summary="Halt all chaos now",
             responses={200: HaltState, 422: INVALID_DOC,
                        413: problem_doc("The body is larger than PYSTOL_MAX_REQUEST_BYTES.")},
             openapi_extensions={"requestBody": HALT_BODY_DOC})
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
        _require_audited(Permission.HALT_ENGAGE, "halt.engage")
        state = switch.engage(services.store, current_submitter(), body.reason)
        services.audit.record(current_actor(), "halt.engage", detail=body.reason)
        return json_response(state)

    @bp.delete("/halt", summary="Lift the halt (admins)", responses={200: HaltState})
    def lift() -> Response:
        """Anyone who may run chaos may stop it; only an admin may let it start again."""
        _require_audited(Permission.HALT_LIFT, "halt.lift")
        state = switch.release()
        services.audit.record(current_actor(), "halt.lift")
        return json_response(state)

    def _require_audited(permission: Permission, operation: str) -> None:
        if not allows(permission):
            services.audit.record(current_actor(), operation, outcome="refused",
                                  detail=f"may not {permission.value}")
            require(permission)

    return bp
