"""The audit trail over HTTP: `GET /api/v1/audit`, newest first, filtered, paged by cursor.
Admin only (`audit.read`)."""

from __future__ import annotations

from datetime import datetime

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from pystol_api.http.auth import require
from pystol_api.http.problems import ApiProblem, FieldError, problem_doc
from pystol_api.http.routes.common import (
    API_PREFIX,
    BEARER_SECURITY,
    INVALID_DOC,
    UNAUTHORIZED_DOC,
    Services,
    json_response,
)
from pystol_worker.core.access import Permission
from pystol_worker.store.audit_log import (
    CURSOR_PATTERN,
    MAX_LIMIT,
    OPERATIONS,
    AuditRecord,
    Outcome,
)

TAG = Tag(name="audit", description="Who changed what, when and how it ended (admin only).")


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(None, min_length=1, max_length=300,
                              description="An actor's name or submitter name (`token:ci`, "
                                          "`kubernetes:alice`), or whom a schedule fired "
                                          "for.")
    operation: str | None = Field(None, min_length=1, max_length=100,
                                  description="An operation (" + ", ".join(OPERATIONS)
                                              + ") or its family (`schedule`).")
    namespace: str | None = Field(None, min_length=1, max_length=63)
    outcome: Outcome | None = None
    since: datetime | None = Field(None, description="RFC 3339 (`2025-01-01T00:00:00Z`); "
                                                     "records at or after it.")
    until: datetime | None = Field(None, description="RFC 3339; records at or before it.")
    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(None, pattern=CURSOR_PATTERN,
                               description="`next_cursor` of the page before.")


class AuditPage(BaseModel):
    items: list[AuditRecord]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for older records; "
                                    "null: there are none. A page may be short (even empty) "
                                    "and still have a cursor: one request reads a bounded "
                                    "part of the trail.")


def _is_first_id(cursor: str) -> bool:
    """`0-0` (any number of zeros): the smallest id a Redis stream entry can have."""
    ms, _, sequence = cursor.partition("-")
    return int(ms) == 0 and int(sequence or 0) == 0


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("audit", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY,
                      abp_responses={401: UNAUTHORIZED_DOC,
                                     403: problem_doc("The caller may not read the audit "
                                                      "trail (admin only).")})

    @bp.get("/audit", summary="Read the audit trail",
            responses={200: AuditPage, 422: INVALID_DOC})
    def read_audit(query: AuditQuery) -> Response:
        """Records newest first, matching every filter given. Kept for
        PYSTOL_AUDIT_RETENTION_SECONDS, at most PYSTOL_AUDIT_MAX_RECORDS of them; every
        record also went to the log (logger `pystol.audit`)."""
        require(Permission.AUDIT_READ)
        if query.cursor is not None and _is_first_id(query.cursor):
            # Nothing is older than the stream's first possible id; Redis refuses the
            # exclusive range "(0-0" the store would ask for (a 503 before this check).
            return json_response(AuditPage(items=[], next_cursor=None))
        try:
            items, cursor = services.audit.read(
                actor=query.actor, operation=query.operation, namespace=query.namespace,
                outcome=query.outcome, since=query.since, until=query.until,
                limit=query.limit, cursor=query.cursor)
        except ValueError as error:
            raise ApiProblem(422, "validation-error", "Invalid request", f"cursor: {error}",
                             errors=[FieldError(loc="cursor", msg=str(error))]) from None
        return json_response(AuditPage(items=items, next_cursor=cursor))

    return bp
