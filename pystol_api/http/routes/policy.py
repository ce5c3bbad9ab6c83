"""The admin policy in force, for anyone signed in: people should be able to read the
rules they are held to (which actions where, images, signals, caps, chaos windows)."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from pystol_api.http.routes.common import (
    API_PREFIX,
    BEARER_SECURITY,
    UNAUTHORIZED_DOC,
    Services,
    json_response,
)
from pystol_worker.core.policy import Policy

TAG = Tag(name="policy", description="The admin policy every job is held to.")


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("policy", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses={401: UNAUTHORIZED_DOC})

    @bp.get("/policy", summary="The admin policy in force", responses={200: Policy})
    def get_policy() -> Response:
        """The policy file (PYSTOL_POLICY_FILE) as the API read it at start, with every
        default filled in; the submission service and the workers enforce it."""
        return json_response(services.policy)

    return bp
