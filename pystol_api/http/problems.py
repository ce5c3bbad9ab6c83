"""Every error the API answers is an RFC 9457 `application/problem+json` document.

One shape for every failure lets the CLI, the dashboard and curl users handle
errors the same way: a stable `type` URL to switch on, a human `detail`, the
request path as `instance`, and, for validation failures only, `errors` with the
field paths (`target.namespaces[0]`, `params.bogus`) that a form can highlight.

The rules this module enforces:
- bad input is a 4xx, whichever layer noticed it (werkzeug's routing, flask-openapi3's
  pydantic validation, `validate_job`, a route);
- anything unexpected is logged with its traceback and answered with a 500 that
  names an error id for the logs and nothing of the internals;
- a failing dependency (Redis, the Kubernetes API) is a 502/503 that says which one,
  because the user did nothing wrong and may simply retry.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import redis
from flask import Flask, Response, current_app, request
from pydantic import BaseModel, Field, ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from pystol_worker.core.access import AccessDenied
from pystol_worker.jobs.authorization import PolicyRefused
from pystol_worker.jobs.validation import JobInvalid
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.store.job_store import JobNotFound

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://pystol.org/problems/"
BODY_LOC = "body"

log = logging.getLogger("pystol.api")

# Slugs for statuses werkzeug raises itself; others are derived from the status phrase.
HTTP_SLUGS: dict[int, tuple[str, str]] = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("request-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}
# pydantic prefixes messages of ValueErrors raised in validators; the field path already
# says where the problem is, so the prefix is noise.
MESSAGE_PREFIXES = ("Value error, ", "Assertion failed, ")


class FieldError(BaseModel):
    """One invalid input: where (`loc`, a dotted path with `[i]` list indexes) and why."""

    loc: str = Field(examples=["target.namespaces[0]"])
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of the API is answered."""

    type: str = Field(examples=[PROBLEM_TYPE_BASE + "validation-error"])
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request path.")
    errors: list[FieldError] | None = Field(None, description="Field problems; validation "
                                                               "errors only.")


class ApiProblem(Exception):
    """Raised by routes (and request hooks) to answer with a problem document."""

    def __init__(self, status: int, slug: str, title: str, detail: str, *,
                 errors: Sequence[FieldError] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return problem_response(self.status, self.slug, self.title, self.detail,
                                errors=self.errors, headers=self.headers)


def problem_response(status: int, slug: str, title: str, detail: str, *,
                     errors: Sequence[FieldError] | None = None,
                     headers: Mapping[str, str] | None = None) -> Response:
    problem = Problem(type=PROBLEM_TYPE_BASE + slug, title=title, status=status, detail=detail,
                      instance=request.path, errors=list(errors) if errors is not None else None)
    response = Response(problem.model_dump_json(exclude_none=True), status=status,
                        mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def validation_problem(errors: Sequence[FieldError]) -> Response:
    """422 listing every field problem; the detail repeats the first for one-line clients."""
    first = errors[0] if errors else FieldError(loc=BODY_LOC, msg="invalid request")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return problem_response(422, "validation-error", "Invalid request",
                            f"{first.loc}: {first.msg}{more}", errors=errors)


def loc_path(loc: Iterable[int | str]) -> str:
    """`("target", "namespaces", 0)` -> `target.namespaces[0]`; flask-openapi3's `body`
    prefix (when a version adds one) is dropped; an empty path means the body itself."""
    parts = list(loc)
    if parts and parts[0] == BODY_LOC:
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or BODY_LOC


def _clean_message(message: str) -> str:
    for prefix in MESSAGE_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def pydantic_field_errors(error: ValidationError) -> list[FieldError]:
    # Only loc and msg: the offending input is never echoed (it may hold a bearer token,
    # since flask-openapi3 validates header models against every request header).
    return [FieldError(loc=loc_path(item["loc"]), msg=_clean_message(item["msg"]))
            for item in error.errors(include_url=False, include_input=False)]


def validation_error_callback(error: ValidationError) -> Response:
    """flask-openapi3's `validation_error_callback`: request validation -> 422 problem."""
    return validation_problem(pydantic_field_errors(error))


def _http_problem(error: HTTPException) -> Response:
    status = error.code or 500
    slug, title = HTTP_SLUGS.get(status, ("", ""))
    if not slug:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        slug, title = phrase.lower().replace(" ", "-"), phrase
    detail = error.description or title
    if isinstance(error, RequestEntityTooLarge):
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        detail = f"the request body is larger than the {limit} bytes this API accepts " \
                 "(PYSTOL_MAX_REQUEST_BYTES)"
    elif isinstance(error, MethodNotAllowed) and error.valid_methods:
        allowed = ", ".join(sorted(error.valid_methods))
        detail = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    elif status == 404:
        detail = f"there is no route {request.path}"
    headers = {name: value for name, value in error.get_headers()
               if name.lower() != "content-type"}
    return problem_response(status, slug, title, detail, headers=headers)


def register_error_handlers(app: Flask) -> None:
    """Turn every exception a request can raise into a problem document."""

    @app.errorhandler(ApiProblem)
    def _api_problem(error: ApiProblem) -> Response:
        return error.response()

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response | HTTPException:
        if error.response is not None:  # abort(response): already a complete answer
            return error
        return _http_problem(error)

    @app.errorhandler(JobInvalid)
    def _job_invalid(error: JobInvalid) -> Response:
        return validation_problem([FieldError(loc=p.loc, msg=p.msg) for p in error.problems])

    @app.errorhandler(AccessDenied)
    def _access_denied(error: AccessDenied) -> Response:
        errors = [FieldError(loc=error.loc, msg=error.detail)] if error.loc else None
        return problem_response(403, "forbidden", "Forbidden", error.detail, errors=errors)

    @app.errorhandler(PolicyRefused)
    def _policy_refused(error: PolicyRefused) -> Response:
        return problem_response(403, "policy-refused", "Refused by the admin policy",
                                str(error), errors=[FieldError(loc=p.loc, msg=p.msg)
                                                    for p in error.problems])

    @app.errorhandler(JobNotFound)
    def _job_not_found(error: JobNotFound) -> Response:
        job_id = error.args[0] if error.args else "?"
        return problem_response(404, "job-not-found", "Job not found",
                                f"there is no job {job_id}")

    @app.errorhandler(ClusterError)
    def _cluster(error: ClusterError) -> Response:
        # The cluster failed, not the user: 502 with what the Kubernetes API said.
        return problem_response(502, "cluster-error", "Kubernetes API error", str(error))

    @app.errorhandler(redis.exceptions.OutOfMemoryError)
    def _redis_full(error: redis.exceptions.OutOfMemoryError) -> Response:
        # Redis reached its maxmemory and, with the `noeviction` policy Pystol's chart and
        # compose file set, refuses writes instead of evicting the halt switch or revert
        # journal entries. Say so: "unavailable" would send the admin looking for a network
        # problem, and the fix is memory.
        log.error("Redis is full (maxmemory reached) on %s %s: %s", request.method,
                  request.path, error)
        return problem_response(503, "store-full", "Job store full",
                                "Redis is full: it reached its maxmemory and refuses writes "
                                "(OOM command not allowed; policy noeviction). Nothing already "
                                "stored, the halt switch and the revert journal included, was "
                                "evicted. Raise Redis's maxmemory or free memory, then retry.",
                                headers={"Retry-After": "30"})

    @app.errorhandler(redis.RedisError)
    def _redis(error: redis.RedisError) -> Response:
        log.warning("Redis error on %s %s: %s", request.method, request.path, error)
        return problem_response(503, "store-unavailable", "Job store unavailable",
                                "Redis (PYSTOL_REDIS_URL) cannot be reached or failed; "
                                "retry later", headers={"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        error_id = secrets.token_hex(6)
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.path)
        return problem_response(500, "internal-error", "Internal server error",
                                f"an unexpected error occurred; it was logged as {error_id}")


def problem_doc(description: str) -> dict[str, Any]:
    """An OpenAPI response object for a problem+json answer."""
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
