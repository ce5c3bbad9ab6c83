"""The schedule resource: create, list, read, change (merge patch), pause, delete.

A schedule is validated like a job (its template goes through `validate_job`, paths under
`template.`) plus its own rules (cron syntax, time zone, windows), all answered as 422
problems with field paths. Every change is written to Redis together with the
celery-redbeat entry that `pystol beat` fires, so it takes effect without a restart.
PATCH is a JSON merge patch (RFC 7386) of the spec: `{"paused": true}` pauses,
`{"template": {"duration": "30s"}}` changes one template field, `null` resets a field.

Every create, change, pause, resume and delete writes one audit record, whatever its
outcome: `ok`, `refused` (403) or `invalid` (422 and the other answers to a body that
cannot be used), like a job submission.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flask import Response, g, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)

from pystol_api.http.auth import current_actor, current_identity
from pystol_api.http.problems import ApiProblem, problem_doc, validation_error_callback
from pystol_api.http.routes.common import (
    API_PREFIX,
    AUTH_RESPONSES,
    BEARER_SECURITY,
    INVALID_DOC,
    JSON_BODY_RESPONSES,
    Services,
    body_for_audit,
    first_non_finite,
    json_response,
    may_see,
    namespaces_for_audit,
    problem_detail,
    revalidated,
)
from pystol_api.http.routes.jobs import SubmitHeaders
from pystol_worker.core.access import AccessDenied, Permission
from pystol_worker.core.model import Duration, Source
from pystol_worker.core.schedule_model import (
    ID_PATTERN,
    ConcurrencyPolicy,
    ScheduleRecord,
    ScheduleSpec,
    TimeWindow,
)
from pystol_worker.jobs.authorization import PolicyRefused
from pystol_worker.jobs.validation import JobInvalid
from pystol_worker.schedules.store import ScheduleExists, ScheduleNotFound, ScheduleStore
from pystol_worker.store.audit_log import Outcome

TAG = Tag(name="schedules", description="Scheduled chaos: cron, interval or mtbf, with "
                                        "time windows and a concurrency policy.")
LOCATION_DOC = {"Location": {"description": "The schedule's URL.",
                             "schema": {"type": "string"}}}


def _finite(data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
    try:
        model = handler(data)
    except ArithmeticError as error:
        raise ValueError(f"a number is out of range ({error})") from None
    where = first_non_finite(model.model_dump())
    if where is not None:
        raise ValueError(f"{where or 'a number'} must be a finite number")
    return model


class ScheduleCreate(ScheduleSpec):
    """A new schedule: the spec, and optionally its id (generated when absent)."""

    id: str | None = Field(None, pattern=ID_PATTERN, examples=["nightly-web"],
                           description="The schedule's id; generated when absent. Ids "
                                       "starting with `cr.` or `cr-cluster.` are the custom "
                                       "resources' own.")

    @field_validator("id")
    @classmethod
    def _not_a_custom_resources_id(cls, value: str | None) -> str | None:
        # Otherwise someone could take the id a PystolSchedule in another namespace will
        # be stored under, and that schedule could then never be created.
        if value is not None and value.startswith(("cr.", "cr-cluster.")):
            raise ValueError("ids starting with `cr.` or `cr-cluster.` belong to "
                             "PystolSchedule and PystolClusterSchedule resources")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _finite_numbers(cls, data: Any, handler: ModelWrapValidatorHandler[ScheduleCreate]
                        ) -> ScheduleCreate:
        created: ScheduleCreate = _finite(data, handler)
        return created

    def as_spec(self) -> ScheduleSpec:
        """The plain ScheduleSpec (a 422, not a crash, should it not re-validate)."""
        return revalidated(ScheduleSpec, self.model_dump(exclude={"id"}))


class SchedulePatch(BaseModel):
    """A JSON merge patch of a ScheduleSpec: fields given replace (objects merge), `null`
    resets a field to its default."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = None
    interval: Duration | None = None
    mtbf: Duration | None = None
    time_zone: str | None = None
    windows: list[TimeWindow] | None = None
    excluded_dates: list[str] | None = None
    concurrency_policy: ConcurrencyPolicy | None = None
    starting_deadline_seconds: float | None = Field(None, allow_inf_nan=False)
    history_limit: int | None = None
    paused: bool | None = None
    template: dict[str, Any] | None = Field(None, description="Merged into the template.")

    @model_validator(mode="wrap")
    @classmethod
    def _finite_numbers(cls, data: Any, handler: ModelWrapValidatorHandler[SchedulePatch]
                        ) -> SchedulePatch:
        patch: SchedulePatch = _finite(data, handler)
        return patch


class SchedulePath(BaseModel):
    id: str = Field(min_length=1, max_length=150, description="A schedule id.")


class ScheduleList(BaseModel):
    items: list[ScheduleRecord]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, `null` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def schedule_url(schedule_id: str) -> str:
    return f"{API_PREFIX}/schedules/{schedule_id}"


#: Endpoints whose refused input is audited, and the operation each records.
AUDITED_WHEN_INVALID = {"schedules.create_schedule": "schedule.create",
                        "schedules.patch_schedule": "schedule.update"}
INVALID_STATUSES = frozenset({400, 413, 415, 422})
MAX_AUDITED_ID = 150


def _requested(store: ScheduleStore, response: Response) -> tuple[str | None, list[str]]:
    """The schedule id and namespaces an invalid request named, as far as they can be
    read: a PATCH's stored schedule (so the trail's namespace filter finds the attempt),
    or a create body's id and template namespaces."""
    if request.view_args and isinstance(request.view_args.get("id"), str):
        schedule_id = request.view_args["id"][:MAX_AUDITED_ID]
        try:
            return schedule_id, store.get(schedule_id).namespaces
        except ScheduleNotFound:
            return schedule_id, []
    body = body_for_audit(response)
    schedule_id = body.get("id")
    template = body.get("template")
    target = template.get("target") if isinstance(template, dict) else None
    namespaces = target.get("namespaces") if isinstance(target, dict) else None
    return (schedule_id[:MAX_AUDITED_ID] if isinstance(schedule_id, str) else None,
            namespaces_for_audit(namespaces))


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("schedules", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses=AUTH_RESPONSES)
    store = ScheduleStore(services.redis, services.settings, registry=services.registry,
                          policy=services.policy)
    not_found_doc = problem_doc("No such schedule.")

    def not_found(schedule_id: str) -> ApiProblem:
        return ApiProblem(404, "schedule-not-found", "Schedule not found",
                          f"there is no schedule {schedule_id}")

    def visible(record: ScheduleRecord) -> bool:
        return may_see(record.namespaces, Permission.SCHEDULES_READ)

    def visible_or_404(schedule_id: str) -> ScheduleRecord:
        try:
            record = store.get(schedule_id)
        except ScheduleNotFound:
            raise not_found(schedule_id) from None
        if not visible(record):
            raise not_found(schedule_id)
        return record

    @contextlib.contextmanager
    def audited(operation: str, schedule_id: str | None,
                namespaces: list[str]) -> Iterator[None]:
        """One audit record for a schedule change: refused, invalid (the template fails
        `validate_job`, as a job submission's would) or done. Other errors (404, 409)
        record nothing."""

        def record(outcome: Outcome, detail: str | None) -> None:
            services.audit.record(current_actor(), operation, outcome=outcome,
                                  targets=[schedule_id or "(new)"], namespaces=namespaces,
                                  schedule_id=schedule_id, detail=detail)
            g.audited = True

        try:
            yield
        except (AccessDenied, PolicyRefused) as refused:
            record("refused", str(refused))
            raise
        except JobInvalid as invalid:
            record("invalid", str(invalid))
            raise
        record("ok", None)

    @bp.after_request
    def _audit_invalid_requests(response: Response) -> Response:
        """A create or change whose body never reached the view (the request models and
        the JSON checks answer 400/413/415/422 first) is audited `invalid` here, like a
        job submission or a token creation, so that every attempt is in the trail once."""
        operation = AUDITED_WHEN_INVALID.get(request.endpoint or "")
        if operation is None or response.status_code not in INVALID_STATUSES \
                or "identity" not in g or getattr(g, "audited", False):
            return response
        schedule_id, namespaces = _requested(store, response)
        services.audit.record(current_actor(), operation, outcome="invalid",
                              targets=[schedule_id or "(new)"], namespaces=namespaces,
                              schedule_id=schedule_id, detail=problem_detail(response))
        return response

    @bp.post("/schedules", summary="Create a schedule",
             responses={201: {"description": "Validated and stored; beat fires it from now on.",
                              "headers": LOCATION_DOC,
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/ScheduleRecord"}}}},
                        409: problem_doc("A schedule with this id exists."),
                        422: INVALID_DOC, **JSON_BODY_RESPONSES})
    def create_schedule(body: ScheduleCreate, header: SubmitHeaders) -> Response:
        """Validate (the template as a job, the cron expression, time zone and windows)
        and store; the first run is at the first slot after now (interval: one interval
        from now)."""
        spec = body.as_spec()
        try:
            with audited("schedule.create", body.id, spec.namespaces()):
                record = store.create(spec, Source(header.source), current_identity(),
                                      schedule_id=body.id, replace=False)
        except ScheduleExists:
            raise ApiProblem(409, "schedule-exists", "Schedule exists",
                             f"there is already a schedule {body.id}; change it with PATCH "
                             f"{schedule_url(body.id or '')}") from None
        return json_response(record, 201, {"Location": schedule_url(record.id)})

    @bp.get("/schedules", summary="List schedules", responses={200: ScheduleList})
    def list_schedules() -> Response:
        """The schedules the caller may see, oldest first, with next and latest runs."""
        return json_response(ScheduleList(items=[record for record in store.list()
                                                 if visible(record)]))

    @bp.get("/schedules/<id>", summary="One schedule, with its next run and latest runs",
            responses={200: ScheduleRecord, 404: not_found_doc, 422: INVALID_DOC})
    def get_schedule(path: SchedulePath) -> Response:
        return json_response(visible_or_404(path.id))

    @bp.patch("/schedules/<id>", summary="Change, pause or resume a schedule",
              responses={200: ScheduleRecord, 404: not_found_doc, 422: INVALID_DOC,
                         **JSON_BODY_RESPONSES})
    def patch_schedule(path: SchedulePath, body: SchedulePatch) -> Response:
        """A JSON merge patch of the spec (`{"paused": true}` pauses). A change of `cron`,
        `interval`, `mtbf` or `time_zone` re-anchors the slots at now."""
        current = visible_or_404(path.id)
        patch = request.get_json(silent=True) or {}
        merged = merge_patch(current.spec.model_dump(mode="json"), patch)
        try:
            spec = ScheduleSpec.model_validate(merged)
        except ValidationError as error:
            # Audited by `_audit_invalid_requests`, with the schedule's namespaces.
            return validation_error_callback(error)
        namespaces = sorted(set(current.namespaces) | set(spec.namespaces()))
        try:
            if set(patch) == {"paused"} and isinstance(patch["paused"], bool):
                operation = "schedule.pause" if patch["paused"] else "schedule.resume"
                with audited(operation, path.id, namespaces):
                    return json_response(store.set_paused(path.id, patch["paused"],
                                                          current_identity()))
            with audited("schedule.update", path.id, namespaces):
                return json_response(store.update(path.id, spec, current_identity()))
        except ScheduleNotFound:
            raise not_found(path.id) from None

    @bp.delete("/schedules/<id>", summary="Delete a schedule",
               responses={204: {"description": "Deleted; running jobs it started go on."},
                          404: not_found_doc, 422: INVALID_DOC})
    def delete_schedule(path: SchedulePath) -> Response:
        """Stops firing at once; jobs already started run to their end."""
        current = visible_or_404(path.id)
        try:
            with audited("schedule.delete", path.id, current.namespaces):
                store.delete(path.id, current_identity())
        except ScheduleNotFound:
            raise not_found(path.id) from None
        return Response(status=204)

    return bp
