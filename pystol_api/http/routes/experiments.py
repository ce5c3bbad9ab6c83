"""The experiment resource: stored documents (create, list, read, replace, delete), and
starting a run of one.

A document arrives as JSON or as YAML (`application/yaml`): both are read with the same
bounds as `pystol run -f` (`pystol_api.experiment_documents`: 128 KiB, YAML aliases
expanded at most to 100,000 values, JSON types only), then the model's raw-shape check
(`check_shape`: steps, depth, width), then pydantic, then the experiment service's own
checks (every action step validated as a job, permissions in every namespace a step
targets or a probe reads). Each failure is a 4xx problem naming the field
(`method[1].steps[0].job.target.namespaces[0]`); nothing is stored unless all pass.

A Chaos Toolkit experiment (`?format=chaostoolkit`, or a document whose activities have a
`provider`) is converted by `experiments.ctk_import` first; configuration read from the
environment cannot be resolved here (the server's environment is not the caller's), so
such a document is refused with a hint to use `pystol run -f`.

Versions: every stored document has a `version`, sent as the `ETag`; `PUT` with
`If-Match` replaces only that version (412 otherwise), so two people editing the same
experiment do not overwrite each other silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pystol_api.experiment_documents import DocumentInvalid, kind_of, load_document
from pystol_api.http.auth import current_identity
from pystol_api.http.problems import (
    ApiProblem,
    FieldError,
    problem_doc,
    validation_error_callback,
)
from pystol_api.http.routes.common import (
    API_PREFIX,
    AUTH_RESPONSES,
    BEARER_SECURITY,
    INVALID_DOC,
    JSON_BODY_RESPONSES,
    Services,
    json_response,
    read_body,
)
from pystol_api.http.routes.jobs import SubmitHeaders
from pystol_worker.core.experiment_model import (
    MAX_EXPERIMENT_BYTES,
    ExperimentInvalid,
    ExperimentRunPage,
    ExperimentSpec,
    check_shape,
)
from pystol_worker.core.model import Source
from pystol_worker.experiments.service import (
    ChaosHalted,
    ExperimentExists,
    ExperimentNotFound,
    ExperimentPage,
    ExperimentService,
    IdempotencyConflict,
    StoredExperiment,
    VersionConflict,
)
from pystol_worker.jobs.submission import QueueUnavailable

TAG = Tag(name="experiments", description="Experiments: a hypothesis, a method of steps, "
                                          "rollbacks; runs with a verdict and a score.")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
LOCATION_DOC = {"Location": {"description": "The new resource's URL.",
                             "schema": {"type": "string"}}}
ETAG_DOC = {"ETag": {"description": "The stored version (send it back in If-Match).",
                     "schema": {"type": "string"}}}
DOCUMENT_BODY = {"requestBody": {
    "required": True,
    "description": "An experiment document (ExperimentSpec) as JSON or YAML, at most "
                   f"{MAX_EXPERIMENT_BYTES // 1024} KiB; or a Chaos Toolkit experiment "
                   "(`?format=chaostoolkit`).",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ExperimentSpec"}},
        "application/yaml": {"schema": {"type": "string"}},
    }}}
DOCUMENT_RESPONSES: dict[Any, Any] = {
    400: problem_doc("The body is not valid JSON or YAML text."),
    413: problem_doc(f"The document is over {MAX_EXPERIMENT_BYTES // 1024} KiB (or its YAML "
                     "aliases expand to too much)."),
    415: problem_doc("The body is neither JSON nor YAML."),
    422: INVALID_DOC,
}
EXPERIMENT_NOT_FOUND = problem_doc("No such experiment (or one the caller may not read).")


class ExperimentPath(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="An experiment name.")


class DocumentQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["pystol", "chaostoolkit"] | None = Field(
        None, description="The document's format; detected when absent.")


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(None, min_length=1, max_length=63)
    tag: str | None = Field(None, min_length=1, max_length=63)
    cursor: str | None = Field(None, pattern=r"^[A-Za-z0-9:._-]{1,200}$",
                               description="`next_cursor` of the previous page.")
    limit: int = Field(50, ge=1, le=100)


class RunsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: str | None = Field(None, pattern=r"^[A-Za-z0-9:._-]{1,200}$")
    limit: int = Field(50, ge=1, le=100)


class IfMatchHeader(BaseModel):
    if_match: str | None = Field(None, alias="If-Match", max_length=40,
                                 description="The ETag of the version being replaced.")


class RunRequest(BaseModel):
    """How to run: as a dry run (every step selects and reports, nothing changes), and an
    idempotency key (the same key again answers the earlier run)."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = False
    idempotency_key: str | None = Field(None, min_length=1, max_length=200,
                                        pattern=r"^[A-Za-z0-9:._-]+$")


def experiment_url(name: str) -> str:
    return f"{API_PREFIX}/experiments/{name}"


def run_url(run_id: str) -> str:
    return f"{API_PREFIX}/experiment-runs/{run_id}"


def etag(stored: StoredExperiment) -> str:
    return f'"{stored.version}"'


def parse_if_match(header: str | None) -> int | None:
    """`"3"` (or `W/"3"`, or 3) → 3; `*` or nothing → None (no check)."""
    if header is None or header.strip() in ("", "*"):
        return None
    match = re.fullmatch(r'\s*(?:W/)?"?([0-9]{1,15})"?\s*', header)
    if match is None:
        raise ApiProblem(412, "precondition-failed", "Precondition failed",
                         f"If-Match {header!r} is not a version this API sent as ETag")
    return int(match.group(1))


#: How `load_document` says the text could not be parsed at all: a 400, as a malformed
#: JSON body is everywhere else in the API; a document that parses but is not one Pystol
#: reads stays a 422 naming the field.
UNPARSEABLE = ("not valid JSON", "not UTF-8", "invalid YAML")


def _problem_for(error: DocumentInvalid) -> ApiProblem:
    if error.status == 413:
        return ApiProblem(413, "request-too-large", "Document too large", str(error))
    if (not error.loc and error.message.startswith(UNPARSEABLE)
            and "recursion" not in error.message):  # too deep parses: a 422 of its shape
        return ApiProblem(400, "malformed-document", "Malformed document",
                          f"the request body cannot be parsed: {error.message}")
    loc = error.loc or "body"
    return ApiProblem(422, "validation-error", "Invalid request", f"{loc}: {error.message}",
                      errors=[FieldError(loc=loc, msg=error.message)])


def _loc(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def read_experiment(name: str | None = None) -> ExperimentSpec:
    """The experiment in the request body (JSON or YAML; Pystol's or Chaos Toolkit's),
    validated by the model. `name`: the path's name, which the document must carry (or
    gets, when it names none)."""
    mimetype = request.mimetype or ""
    if mimetype not in ("application/json", *YAML_TYPES) and not mimetype.endswith("+json"):
        raise ApiProblem(415, "unsupported-media-type", "Unsupported media type",
                         "send the experiment as application/json or application/yaml (got "
                         f"{mimetype or 'no Content-Type'})")
    raw = read_body(MAX_EXPERIMENT_BYTES)
    try:
        query = DocumentQuery.model_validate(request.args.to_dict())
    except ValidationError as error:
        raise _validation(error) from None
    try:
        document = load_document(raw, yaml_allowed=mimetype in YAML_TYPES)
    except DocumentInvalid as error:
        raise _problem_for(error) from None
    if kind_of(document, query.format) == "chaostoolkit":
        document = _from_chaostoolkit(document, name)
    if name is not None:
        if document.get("name", name) != name:
            raise ApiProblem(422, "validation-error", "Invalid request",
                             f"name: the document is named {document.get('name')!r}, the URL "
                             f"{name!r}", errors=[FieldError(loc="name", msg="must be the "
                                                             "name in the URL")])
        document = {**document, "name": name}
    try:
        check_shape(document)  # first, so its field path is kept (pydantic drops it)
        return ExperimentSpec.model_validate(document)
    except ExperimentInvalid as error:
        raise ApiProblem(422, "validation-error", "Invalid request",
                         f"{_loc(error.loc)}: {error.message}",
                         errors=[FieldError(loc=_loc(error.loc), msg=error.message)]) from None
    except ValidationError as error:
        raise _validation(error) from None
    except (RecursionError, ArithmeticError) as error:  # the model's bounds should stop both
        raise ApiProblem(422, "validation-error", "Invalid request",
                         f"body: the document cannot be read ({type(error).__name__})") \
            from None


def _validation(error: ValidationError) -> ApiProblem:
    response = validation_error_callback(error)
    body = response.get_json(silent=True) or {}
    errors = [FieldError(loc=str(item.get("loc", "body")), msg=str(item.get("msg", "")))
              for item in body.get("errors") or []]
    return ApiProblem(422, "validation-error", "Invalid request",
                      str(body.get("detail", "invalid request")), errors=errors)


def _from_chaostoolkit(document: dict[str, Any], name: str | None) -> dict[str, Any]:
    """A Chaos Toolkit experiment as a Pystol document (`ctk_import`; named `name`, else
    after its title), its refusals as 422s with the Chaos Toolkit paths."""
    from pystol_worker.experiments import ctk_import  # the ctk helper's module

    try:
        spec = ctk_import.import_experiment(document, environ=None, name=name)
    except ExperimentInvalid as error:
        raise ApiProblem(422, "validation-error", "Invalid request",
                         f"{_loc(error.loc)}: {error.message}",
                         errors=[FieldError(loc=_loc(error.loc), msg=error.message)]) from None
    except ValidationError as error:
        raise _validation(error) from None
    except ValueError as error:
        problems = getattr(error, "problems", None) or [("", str(error))]
        errors = [FieldError(loc=_problem_loc(problem), msg=_problem_msg(problem))
                  for problem in problems]
        raise ApiProblem(422, "chaostoolkit-refused", "Chaos Toolkit experiment refused",
                         f"{errors[0].loc}: {errors[0].msg}", errors=errors) from None
    return spec.model_dump(mode="json", exclude_none=True)


def _problem_loc(problem: Any) -> str:
    loc = getattr(problem, "loc", None) if not isinstance(problem, tuple) else problem[0]
    if isinstance(loc, tuple):
        return _loc(loc)
    return str(loc or "body")


def _problem_msg(problem: Any) -> str:
    if isinstance(problem, tuple):
        return str(problem[1])
    return str(getattr(problem, "msg", None) or getattr(problem, "message", None) or problem)


def map_service_errors(error: Exception) -> ApiProblem | None:
    """The answer for the service's own exceptions (AccessDenied, PolicyRefused and
    JobInvalid go to the app's handlers)."""
    if isinstance(error, ExperimentNotFound):
        name = error.args[0] if error.args else "?"
        return ApiProblem(404, "experiment-not-found", "Experiment not found",
                          f"there is no experiment {name}")
    if isinstance(error, ExperimentExists):
        return ApiProblem(409, "experiment-exists", "Experiment exists",
                          f"{error}; replace it with PUT")
    if isinstance(error, VersionConflict):
        return ApiProblem(412, "precondition-failed", "Precondition failed", str(error))
    if isinstance(error, ChaosHalted):
        return ApiProblem(409, "chaos-halted", "Chaos is halted", str(error))
    if isinstance(error, IdempotencyConflict):
        return ApiProblem(409, "idempotency-conflict", "Idempotency key reused",
                          "the idempotency key was used for a different experiment run; "
                          "use a new key for a new run")
    if isinstance(error, QueueUnavailable):
        return ApiProblem(503, "queue-unavailable", "Run could not be queued", str(error),
                          headers={"Retry-After": "5"})
    return None


def blueprint(services: Services, experiments: Callable[[], ExperimentService]
              ) -> APIBlueprint:
    bp = APIBlueprint("experiments", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses=AUTH_RESPONSES)

    def call(function: Callable[[], Any]) -> Any:
        try:
            return function()
        except (ExperimentNotFound, ExperimentExists, VersionConflict, ChaosHalted,
                IdempotencyConflict, QueueUnavailable) as error:
            problem = map_service_errors(error)
            assert problem is not None
            raise problem from None
        except ExperimentInvalid as error:
            raise ApiProblem(422, "validation-error", "Invalid request",
                             f"{_loc(error.loc)}: {error.message}",
                             errors=[FieldError(loc=_loc(error.loc), msg=error.message)]) \
                from None

    def stored_response(stored: StoredExperiment, status: int = 200,
                        location: bool = False) -> Response:
        headers = {"ETag": etag(stored)}
        if location:
            headers["Location"] = experiment_url(stored.name)
        return json_response(stored, status, headers)

    @bp.post("/experiments", summary="Store a new experiment",
             openapi_extensions=DOCUMENT_BODY,
             responses={201: {"description": "Validated and stored.",
                              "headers": {**LOCATION_DOC, **ETAG_DOC},
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/StoredExperiment"}}}},
                        409: problem_doc("An experiment of that name exists."),
                        **DOCUMENT_RESPONSES})
    def create_experiment(query: DocumentQuery, header: SubmitHeaders) -> Response:
        """Validate the document (every action step as a job, every namespace a step
        targets or a probe reads against the caller's `experiments.write`) and store it.
        Running it is a separate request (`POST …/{name}/run`)."""
        spec = read_experiment()
        stored = call(lambda: experiments().put(spec, current_identity(), create_only=True,
                                                source=Source(header.source)))
        return stored_response(stored, 201, location=True)

    @bp.get("/experiments", summary="List experiments",
            responses={200: ExperimentPage, 422: INVALID_DOC})
    def list_experiments(query: ListQuery) -> Response:
        """The documents the caller may read (`experiments.read` in every namespace each
        touches), by name; filter by namespace or tag; page with `next_cursor`."""
        page = call(lambda: experiments().list(current_identity(), namespace=query.namespace,
                                               tag=query.tag, cursor=query.cursor,
                                               limit=query.limit))
        return json_response(page)

    @bp.get("/experiments/<name>", summary="One experiment document",
            responses={200: {"description": "The stored document and its version.",
                             "headers": ETAG_DOC,
                             "content": {"application/json": {"schema": {
                                 "$ref": "#/components/schemas/StoredExperiment"}}}},
                       404: EXPERIMENT_NOT_FOUND, 422: INVALID_DOC})
    def get_experiment(path: ExperimentPath) -> Response:
        return stored_response(call(lambda: experiments().get(path.name, current_identity())))

    @bp.put("/experiments/<name>", summary="Create or replace an experiment",
            openapi_extensions=DOCUMENT_BODY,
            responses={200: StoredExperiment,
                       201: {"description": "Created.", "headers": ETAG_DOC,
                             "content": {"application/json": {"schema": {
                                 "$ref": "#/components/schemas/StoredExperiment"}}}},
                       412: problem_doc("If-Match names another version than the stored "
                                        "one."),
                       **DOCUMENT_RESPONSES})
    def put_experiment(path: ExperimentPath, query: DocumentQuery, header: SubmitHeaders
                       ) -> Response:
        """Replace the document (or create it). With `If-Match: "<version>"` only that
        version is replaced (`"0"`: only if it does not exist yet). Runs already started
        keep the document they started with."""
        if_match = parse_if_match(request.headers.get("If-Match"))
        spec = read_experiment(path.name)
        stored = call(lambda: experiments().put(spec, current_identity(), if_match=if_match,
                                                source=Source(header.source)))
        return stored_response(stored, 201 if stored.version == 1 else 200)

    @bp.delete("/experiments/<name>", summary="Delete an experiment",
               responses={204: {"description": "Deleted; runs already started go on."},
                          404: EXPERIMENT_NOT_FOUND, 422: INVALID_DOC})
    def delete_experiment(path: ExperimentPath) -> Response:
        call(lambda: experiments().delete(path.name, current_identity()))
        return Response(status=204)

    @bp.post("/experiments/<name>/run", summary="Run a stored experiment",
             responses={202: {"description": "Checked, stored and started.",
                              "headers": LOCATION_DOC,
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/ExperimentRun"}}}},
                        404: EXPERIMENT_NOT_FOUND,
                        409: problem_doc("Chaos is halted, or the idempotency key was used "
                                         "for another run."),
                        422: INVALID_DOC,
                        503: problem_doc("The queue is unavailable."),
                        **JSON_BODY_RESPONSES})
    def run_experiment(path: ExperimentPath, body: RunRequest, header: SubmitHeaders
                       ) -> Response:
        """Start a run: every step checked as a job, `jobs.submit` in every namespace the
        experiment touches (its probes' too), the admin policy and the halt switch, all
        before anything runs. Follow it at the `Location`."""
        run = call(lambda: experiments().start(path.name, Source(header.source),
                                               current_identity(), dry_run=body.dry_run,
                                               idempotency_key=body.idempotency_key))
        return json_response(run, 202, {"Location": run_url(run.id)})

    @bp.get("/experiments/<name>/runs", summary="An experiment's runs (its trend)",
            responses={200: ExperimentRunPage, 422: INVALID_DOC})
    def experiment_runs(path: ExperimentPath, query: RunsQuery) -> Response:
        """Its runs the caller may read, newest first: verdict and score over time."""
        page = call(lambda: experiments().runs(current_identity(), experiment=path.name,
                                               cursor=query.cursor, limit=query.limit))
        return json_response(page)

    return bp

