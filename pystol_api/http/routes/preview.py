"""Preview: which targets a job would hit right now, answered at once.

It takes the same body and the same validation as `POST /jobs` and runs the action's
own `select()` (the code a run uses) against the cluster, changing nothing: it hands the
action a `SelectContext`, which has no job, journal or locks to change anything with. When the
Kubernetes API fails the answer is 502: the cluster, not the request, is at fault.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from pystol_api.http.auth import current_identity
from pystol_api.http.problems import ApiProblem, problem_doc
from pystol_api.http.routes.common import (
    API_PREFIX,
    AUTH_RESPONSES,
    BEARER_SECURITY,
    INVALID_DOC,
    JSON_BODY_RESPONSES,
    JobSubmission,
    Services,
    json_response,
)
from pystol_worker.actions import ActionError, SelectContext
from pystol_worker.core.model import TargetRef, utcnow
from pystol_worker.jobs.authorization import PolicyRefused, grant_for, policy_problems
from pystol_worker.jobs.validation import validate_job

TAG = Tag(name="preview", description="Dry runs that answer at once.")


class PreviewResult(BaseModel):
    action: str
    matched: int = Field(description="Targets matching the namespaces and selectors.")
    chosen: list[TargetRef] = Field(description="The ones the mode/value would pick now.")
    excluded: list[str] = Field(description="Why some candidates were left out.")


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("preview", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses=AUTH_RESPONSES)

    @bp.post("/preview", summary="Which targets a job would hit now",
             responses={200: PreviewResult, 422: INVALID_DOC,
                        502: problem_doc("The Kubernetes API failed or cannot be reached."),
                        **JSON_BODY_RESPONSES})
    def preview(body: JobSubmission) -> Response:
        spec = body.as_spec()
        action, params = validate_job(spec, services.registry, services.settings)
        # A preview reads other tenants' pods as a run would: the same scope and policy
        # checks as a submission (AccessDenied and PolicyRefused answer 403).
        grant_for(spec, action, params, current_identity(), services.policy)
        problems = policy_problems(spec, action, params, services.policy, utcnow())
        if problems:
            raise PolicyRefused(problems)
        context = SelectContext(settings=services.settings, cluster=services.cluster.get(),
                                policy=services.policy)
        try:
            selection = action.guarded_select(context, spec, params)
        except ActionError as error:
            raise ApiProblem(422, "action-refused", "The action refused the job",
                             str(error)) from None
        summary = selection.summary()
        return json_response(PreviewResult(action=action.name, matched=summary["matched"],
                                           chosen=selection.chosen,
                                           excluded=summary["excluded"]))

    return bp
