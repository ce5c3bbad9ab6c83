"""What every route module shares: the injected services, the request-body model and
small helpers for JSON answers and OpenAPI declarations.

`Services` is the whole set of dependencies a view may use, built once per
application by `create_app`; views close over it instead of reading globals.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from flask import Response, request
from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from werkzeug.exceptions import HTTPException

from pystol_api.http.auth import current_authority, current_submitter, forbidden
from pystol_api.http.problems import ApiProblem, problem_doc, pydantic_field_errors
from pystol_worker.actions import ActionRegistry
from pystol_worker.core.access import AccessDenied, Permission
from pystol_worker.core.model import JobRecord, JobSpec
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import job_namespaces
from pystol_worker.jobs.submission import JobQueue, SubmissionService
from pystol_worker.jobs.validation import FieldProblem, JobInvalid
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError
from pystol_worker.store.audit_log import MAX_NAMESPACES as AUDIT_MAX_NAMESPACES
from pystol_worker.store.audit_log import AuditLog
from pystol_worker.store.job_store import JobStore
from pystol_worker.store.token_store import TokenStore

ModelT = TypeVar("ModelT", bound=BaseModel)

API_PREFIX = "/api/v1"
BEARER_SCHEME = "bearer"
BEARER_SECURITY: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]


class LazyCluster:
    """The cluster client, built on first use: the API starts (and serves everything but
    previews) without a kubeconfig and without importing `kubernetes`."""

    def __init__(self, factory: Callable[[], ClusterAccess]) -> None:
        self._factory = factory
        self._cluster: ClusterAccess | None = None
        self._lock = threading.Lock()

    def get(self) -> ClusterAccess:
        with self._lock:
            if self._cluster is None:
                try:
                    self._cluster = self._factory()
                except ClusterError:
                    raise
                except Exception as error:  # a missing kubeconfig, a bad context, ...
                    raise ClusterError(f"cannot set up a Kubernetes client: {error}") from error
            return self._cluster


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    queue: JobQueue
    registry: ActionRegistry
    cluster: LazyCluster
    submissions: SubmissionService  # the one submission path, built on the services above
    policy: Policy
    tokens: TokenStore
    audit: AuditLog


# A JobSpec as it arrives over HTTP, documented under the name JobSpec. It is a guard at
# the edge: bad input must be a 4xx, never a 5xx, whatever the model underneath lets
# through. Numbers the model cannot handle become validation errors: an integer too large
# for a float (an `amount` or `duration` of 400 digits) raises OverflowError inside the
# model's validators, and an infinite or NaN float anywhere in the spec could not be
# stored or serialised. (The class docstring is the schema's public description.)
class JobSubmission(JobSpec):
    """What someone asked for: the job to run, on which targets, for how long."""

    model_config = ConfigDict(title="JobSpec")

    @model_validator(mode="wrap")
    @classmethod
    def _finite_numbers(cls, data: Any, handler: ModelWrapValidatorHandler[JobSubmission]
                        ) -> JobSubmission:
        try:
            spec = handler(data)
        except ArithmeticError as error:
            raise ValueError(f"a number is out of range ({error})") from None
        where = first_non_finite(spec.model_dump())
        if where is not None:
            raise ValueError(f"{where or 'a number'} must be a finite number")
        return spec

    def as_spec(self) -> JobSpec:
        """The plain JobSpec, for the store and the actions. Validated a second time from
        the first validation's output; should a validator of the model not accept its own
        output (it once did not), that is the client's input to fix (422), not a crash."""
        return revalidated(JobSpec, self.model_dump())


def revalidated(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """`model` validated from `data`, the dump of an already validated request model; a
    ValidationError is answered as the 422 a request validation error is."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise JobInvalid([FieldProblem(loc=item.loc, msg=item.msg)
                          for item in pydantic_field_errors(error)]) from None


def first_non_finite(data: Any) -> str | None:
    """The path of the first infinite or NaN float in plain data, or None (iterative:
    a deeply nested `params` must not exhaust the stack)."""
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path
        if isinstance(value, dict):
            pending.extend((f"{path}.{key}" if path else str(key), item)
                           for key, item in value.items())
        elif isinstance(value, list | tuple):
            pending.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None


def json_response(model: BaseModel, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    response = Response(model.model_dump_json(), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


UNAUTHORIZED_DOC = problem_doc("No or an unknown bearer token.")
FORBIDDEN_DOC = problem_doc("The caller may not do this (their role, namespaces or the admin "
                            "policy); `errors` names the field that asked for it.")
INVALID_DOC = problem_doc("The request is invalid; `errors` lists the field paths.")
#: What the application answers before a JSON body is validated (`app._require_json_bodies`
#: and MAX_CONTENT_LENGTH), for every operation that takes one.
JSON_BODY_RESPONSES: dict[Any, Any] = {
    400: problem_doc("The body is not valid JSON."),
    413: problem_doc("The body is larger than PYSTOL_MAX_REQUEST_BYTES."),
    415: problem_doc("The body is not sent as application/json."),
}


# -- bodies larger than the API's default cap ------------------------------------------------


def read_body(max_bytes: int) -> bytes:
    """The request body, with this route's own size cap instead of the application's
    PYSTOL_MAX_REQUEST_BYTES (an experiment document may be 128 KiB, a job 64 KiB).
    The cap is checked on Content-Length before anything is read, and again on what a
    chunked body turns out to hold; over it, 413 naming the cap."""
    request.max_content_length = max_bytes  # werkzeug: refuses longer bodies (413)
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiProblem(413, "request-too-large", "Request body too large",
                         f"the body is {length:,} bytes; this route accepts at most "
                         f"{max_bytes:,}")
    data = request.get_data(cache=True)
    if len(data) > max_bytes:
        raise ApiProblem(413, "request-too-large", "Request body too large",
                         f"the body is over the {max_bytes:,} bytes this route accepts")
    return data


def body_for_audit(response: Response) -> dict[str, Any]:
    """The request's JSON object, for naming what a refused request asked in its audit
    record, or {}. An audit hook runs after the app answered: it never re-reads a body
    refused for its size and never raises (a nesting the JSON parser cannot follow is a
    RecursionError), so a hostile body still gets its 4xx and its one record."""
    if response.status_code == 413:
        return {}
    try:
        body: Any = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, RecursionError, HTTPException):
        return {}
    return body if isinstance(body, dict) else {}


def namespaces_for_audit(value: Any) -> list[str]:
    """A request's `namespaces` list as an audit record can hold it: strings only, at
    most the trail's MAX_NAMESPACES of them, each cut to 100 characters."""
    if not isinstance(value, list):
        return []
    return [ns[:100] for ns in value[:AUDIT_MAX_NAMESPACES] if isinstance(ns, str)]


def problem_detail(response: Response) -> str | None:
    """The `detail` of the problem document a refused request was answered with."""
    try:
        document = json.loads(response.get_data())
    except ValueError:
        return None
    detail = document.get("detail") if isinstance(document, dict) else None
    return str(detail) if detail is not None else None


# -- which jobs and schedules a caller may see and change ------------------------------------


def may_see(namespaces: list[str], permission: Permission, cluster: bool = False) -> bool:
    """Whether the caller may use `permission` (jobs.read, schedules.read) in every one of
    these namespaces (a job spanning `shop` and `payments` tells about both), and at
    cluster scope too when the thing acts at cluster scope (node-level chaos names no
    target namespace, whatever namespaces its probes read).

    What the caller may do *now* decides, never who submitted it: a token name can be
    revoked and created again for someone else, and a Kubernetes user's RoleBinding in a
    namespace can be removed; neither may keep reaching the jobs (and schedules) that the
    name once started there."""
    authority = current_authority()
    if (cluster or not namespaces) and not authority.allows(permission, None):
        return False
    return all(authority.allows(permission, namespace) for namespace in namespaces)


def may_see_job(record: JobRecord) -> bool:
    """`may_see` for a job: every namespace it acts or reads in (its probes' too), and
    cluster scope when it names no target namespace (nodes), whatever its probes read."""
    return may_see(job_namespaces(record.spec), Permission.JOBS_READ,
                   cluster=not record.spec.target.namespaces)


def require_job_access(record: JobRecord, permission: Permission) -> None:
    """404 for a job the caller may not see (so ids of other tenants' jobs are not even
    confirmed); 403 when they see it but may not use `permission` (jobs.cancel) in every
    namespace it touches, its probes' included (and cluster chaos for one that names no
    target namespace)."""
    if not may_see_job(record):
        raise ApiProblem(404, "job-not-found", "Job not found", f"there is no job {record.id}")
    if permission == Permission.JOBS_READ:
        return
    authority = current_authority()
    targets = record.spec.target.namespaces
    for namespace in job_namespaces(record.spec):
        if not authority.allows(permission, namespace):
            loc = (f"target.namespaces[{targets.index(namespace)}]"
                   if namespace in targets else None)
            raise forbidden(AccessDenied(f"{current_submitter()} may not {permission.value} "
                                         f"in namespace {namespace!r}", loc=loc))
    if not targets and not authority.allows(Permission.CLUSTER_CHAOS, None):
        raise forbidden(AccessDenied(f"{current_submitter()} may not {permission.value} "
                                     "node-level or cluster-wide jobs"))


AUTH_RESPONSES: dict[Any, Any] = {401: UNAUTHORIZED_DOC, 403: FORBIDDEN_DOC}
