"""`GET /api/v1/whoami`: who the caller is and what they may do, so that the dashboard and
scripts can hide or skip what would be refused (the API still checks every request).

Answers for every cluster-scoped permission, and for the namespaced ones in each namespace
asked (`?namespace=shop&namespace=cart`) and each namespace the caller's role is scoped
to. For a Kubernetes identity every answer is a (cached) SubjectAccessReview, so ask only
for the namespaces a page shows.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from pystol_api.http.auth import current_actor, current_authority
from pystol_api.http.problems import ApiProblem, FieldError
from pystol_api.http.routes.common import (
    API_PREFIX,
    BEARER_SECURITY,
    INVALID_DOC,
    UNAUTHORIZED_DOC,
    Services,
    json_response,
)
from pystol_worker.core.access import NAMESPACED, Actor, ActorKind, Permission, Role
from pystol_worker.core.model import NamespaceName

TAG = Tag(name="identity", description="Who the caller is and what they may do.")
MAX_NAMESPACES = 100  # 100 names of 63 characters fit gunicorn's 8190-byte request line
#: Each namespace asked for a Kubernetes identity is 7 SubjectAccessReviews on first ask:
#: fewer namespaces per request, so that one request cannot send the cluster thousands.
MAX_KUBERNETES_NAMESPACES = 30
CLUSTER_PERMISSIONS = tuple(p for p in Permission if p not in NAMESPACED)
NAMESPACED_PERMISSIONS = tuple(p for p in Permission if p in NAMESPACED)


class WhoAmIQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: list[NamespaceName] = Field(
        default_factory=list, max_length=MAX_NAMESPACES,
        description="Namespaces to answer for (repeat the parameter), besides the caller's "
                    "own.")


class WhoAmI(BaseModel):
    actor: Actor
    role: Role | None = Field(description="None for a Kubernetes identity: RBAC decides.")
    namespaces: list[str] | None = Field(description="Where the role applies; None: every "
                                                     "namespace (or RBAC decides).")
    cluster: dict[Permission, bool] = Field(description="Every cluster-scoped permission, "
                                                        "and whether the caller has it.")
    namespace_permissions: dict[str, list[Permission]] = Field(
        description="For each namespace asked and each of the caller's own: the namespaced "
                    "permissions the caller has there.",
        examples=[{"shop": ["jobs.read", "jobs.submit"]}])


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("identity", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses={401: UNAUTHORIZED_DOC})

    @bp.get("/whoami", summary="Who am I, and what may I do?",
            responses={200: WhoAmI, 422: INVALID_DOC})
    def whoami(query: WhoAmIQuery) -> Response:
        actor = current_actor()
        authority = current_authority()
        if actor.kind == ActorKind.KUBERNETES and \
                len(set(query.namespace)) > MAX_KUBERNETES_NAMESPACES:
            detail = (f"namespace: at most {MAX_KUBERNETES_NAMESPACES} namespaces per request "
                      "for a Kubernetes identity (each is asked of the cluster's RBAC)")
            raise ApiProblem(422, "validation-error", "Invalid request", detail,
                             errors=[FieldError(loc="namespace", msg=detail)])
        namespaces = sorted(set(query.namespace) | set(actor.namespaces or []))
        return json_response(WhoAmI(
            actor=actor, role=actor.role, namespaces=actor.namespaces,
            cluster={permission: authority.allows(permission, None)
                     for permission in CLUSTER_PERMISSIONS},
            namespace_permissions={
                namespace: [permission for permission in NAMESPACED_PERMISSIONS
                            if authority.allows(permission, namespace)]
                for namespace in namespaces}))

    return bp
