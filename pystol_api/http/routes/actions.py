"""The action catalogue: what can be injected, what it targets, and its params' JSON Schema.

Clients (the CLI's `pystol actions`, the dashboard's job form) build their inputs
from this answer, so it is generated from the same params models that validate jobs.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from pystol_api.http.routes.common import (
    API_PREFIX,
    BEARER_SECURITY,
    UNAUTHORIZED_DOC,
    Services,
    json_response,
)
from pystol_worker.core.model import TargetKind

TAG = Tag(name="actions", description="The catalogue of faults Pystol can inject.")


class ActionEntry(BaseModel):
    name: str = Field(examples=["pod-kill"])
    description: str
    targets: TargetKind
    params_schema: dict[str, Any] = Field(description="JSON Schema of the action's `params`.")


class ActionCatalogue(BaseModel):
    items: list[ActionEntry]


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("actions", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses={401: UNAUTHORIZED_DOC})

    @bp.get("/actions", summary="The action catalogue", responses={200: ActionCatalogue})
    def list_actions() -> Response:
        entries = [ActionEntry.model_validate(cls.catalogue_entry())
                   for cls in services.registry.classes()]
        return json_response(ActionCatalogue(items=entries))

    return bp
