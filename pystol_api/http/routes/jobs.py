"""The job resource: submit, list, read, cancel, and read a job's timeline.

Submitting goes through the submission service every producer uses (validate, halt
check, store, queue); this module only maps its errors to problem documents. The
answer is `202 Accepted` because the work has only been queued. An idempotency key
makes a retried submission safe: the same key with the same spec within 24 h answers
`200` with the earlier job and queues nothing.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import time
from collections.abc import Iterator
from typing import Any, Literal

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from pystol_api.http.auth import current_actor, current_identity, current_submitter
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
    may_see_job,
    require_job_access,
)
from pystol_worker.core.access import Permission
from pystol_worker.core.model import JobRecord, JobStatus, Page, Source, TimelineEvent
from pystol_worker.jobs.submission import ChaosHalted, IdempotencyConflict, QueueUnavailable
from pystol_worker.store.job_store import TIMELINE_CHANNEL, JobNotFound, TransitionRefused

TAG = Tag(name="jobs", description="Chaos jobs: submit, follow, cancel.")
SOURCE_HEADER = "X-Pystol-Source"
EVENT_STREAM = "text/event-stream"
# Server-sent events end after PYSTOL_STREAM_MAX_SECONDS (the client reconnects with
# Last-Event-ID); how many run at once is bounded by PYSTOL_STREAM_MAX_CLIENTS
# (pystol_api/http/stream_limits.py).
SSE_KEEPALIVE_SECONDS = 10.0
SSE_CHECK_SECONDS = 2.0   # re-read the job's status at least this often
SSE_RETRY_MS = 1000
LOCATION_DOC = {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}}


class SubmitHeaders(BaseModel):
    source: Literal["api", "cli"] = Field(
        "api", alias=SOURCE_HEADER,
        description="Where the job comes from; the `pystol` CLI sends `cli`.")

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The schema, built once per argument set: flask-openapi3's `_validate_header`
        asks for it on every request, and building it was ~1 ms of a submission's CPU.
        A copy each time, so that nobody who edits the answer edits the cache."""
        return copy.deepcopy(_header_schema(cls, *args, **kwargs))


@functools.cache
def _header_schema(model: type[BaseModel], *args: Any, **kwargs: Any) -> dict[str, Any]:
    return BaseModel.model_json_schema.__func__(model, *args, **kwargs)  # type: ignore[attr-defined,no-any-return]


class JobPath(BaseModel):
    id: str = Field(min_length=1, max_length=200, description="A job id, e.g. "
                                                              "j-20250101120000-1a2b3c4d.")


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    action: str | None = Field(None, min_length=1, max_length=100)
    namespace: str | None = Field(None, min_length=1, max_length=63)
    cursor: str | None = Field(None, pattern=r"^[0-9]{1,18}$",
                               description="`next_cursor` of the previous page.")
    limit: int = Field(50, ge=1, le=200)


class Timeline(BaseModel):
    items: list[TimelineEvent]


def job_url(job_id: str) -> str:
    return f"{API_PREFIX}/jobs/{job_id}"


def _wants_event_stream() -> bool:
    """True when the client prefers server-sent events to JSON."""
    best = request.accept_mimetypes.best_match(["application/json", EVENT_STREAM])
    return best == EVENT_STREAM


def _last_event_id() -> int:
    """Where a reconnecting client resumes: after the event it saw last."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    return int(raw) + 1 if raw.isdigit() and len(raw) < 10 else 0


def event_stream_response(services: Services, job_id: str, start: int = 0) -> Response:
    response = Response(stream_timeline(services, job_id, start,
                                        max_seconds=services.settings.stream_max_seconds),
                        mimetype=EVENT_STREAM)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def stream_timeline(services: Services, job_id: str, start: int = 0,
                    max_seconds: float = 300.0,
                    keepalive_seconds: float = SSE_KEEPALIVE_SECONDS) -> Iterator[str]:
    """Server-sent events of a job's timeline from index `start` until the job is terminal.

    The Redis list is the source of truth and fixes the order: the pub/sub channel only
    says when to read it again, so an event published between reading the list and
    subscribing is never lost nor sent twice. Bounded by `max_seconds`: a stream holds a
    server thread, so none holds it forever."""
    store = services.store
    pubsub = services.redis.pubsub(ignore_subscribe_messages=True)
    sent = start
    deadline = time.monotonic() + max_seconds
    try:
        pubsub.subscribe(TIMELINE_CHANNEL + ":" + job_id)
        yield f"retry: {SSE_RETRY_MS}\n\n"
        last_output = time.monotonic()
        while True:
            for event in store.timeline(job_id, sent):
                yield (f"id: {sent}\nevent: {event.kind}\n"
                       f"data: {event.model_dump_json()}\n\n")
                sent += 1
                last_output = time.monotonic()
            status = store.get(job_id, with_timeline=False).status
            if status.terminal:
                # Events appended with the terminal one (none today) are read once more.
                for event in store.timeline(job_id, sent):
                    yield (f"id: {sent}\nevent: {event.kind}\n"
                           f"data: {event.model_dump_json()}\n\n")
                    sent += 1
                yield f"event: end\ndata: {json.dumps({'status': status.value})}\n\n"
                return
            now = time.monotonic()
            if now >= deadline:
                return  # the client reconnects with Last-Event-ID
            if now - last_output >= keepalive_seconds:
                yield ": keep-alive\n\n"
                last_output = now
            pubsub.get_message(timeout=min(keepalive_seconds, SSE_CHECK_SECONDS,
                                           max(0.0, deadline - now)))
            # Drain the rest: one read of the list covers every message.
            while pubsub.get_message(timeout=0) is not None:
                pass
    except JobNotFound:
        return
    finally:
        with contextlib.suppress(Exception):
            pubsub.close()


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("jobs", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses=AUTH_RESPONSES)
    store = services.store

    def key_reused(key: str | None, job_id: str | None) -> ApiProblem:
        """409 for an idempotency key used before; the earlier job is named only to a
        caller who may see it."""
        earlier = None
        if job_id is not None:
            with contextlib.suppress(JobNotFound):
                earlier = job_id if may_see_job(store.get(job_id)) else None
        which = f" (job {earlier})" if earlier else ""
        return ApiProblem(409, "idempotency-conflict", "Idempotency key reused",
                          f"idempotency key {key!r} was used in the last 24 h for a "
                          f"different job spec{which}; use a new key for a new job")

    @bp.post("/jobs", summary="Submit a chaos job",
             responses={202: {"description": "Validated, stored and queued.",
                              "headers": LOCATION_DOC,
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/JobRecord"}}}},
                        200: JobRecord,
                        409: problem_doc("The idempotency key was used for a different spec, "
                                         "or chaos is halted."),
                        422: INVALID_DOC,
                        503: problem_doc("The job store or the queue is unavailable."),
                        **JSON_BODY_RESPONSES})
    def submit_job(body: JobSubmission, header: SubmitHeaders) -> Response:
        """Validate, store and queue a job. With an `idempotency_key` already used in the
        last 24 h for the same spec, answers 200 with that job and queues nothing."""
        spec = body.as_spec()
        # JobInvalid goes to the app's error handler: 422 with the field paths.
        try:
            # AccessDenied and PolicyRefused go to the app's error handlers: 403.
            record, created = services.submissions.submit(spec, Source(header.source),
                                                          current_identity())
        except ChaosHalted as halted:
            raise ApiProblem(409, "chaos-halted", "Chaos is halted", str(halted)) from None
        except IdempotencyConflict as conflict:
            raise key_reused(spec.idempotency_key, conflict.job_id) from None
        except QueueUnavailable as refused:
            raise ApiProblem(503, "queue-unavailable", "Job could not be queued",
                             f"job {refused.job_id} was stored but the queue "
                             "(PYSTOL_REDIS_URL) refused it; it was marked failed. Retry "
                             "later.", headers={"Retry-After": "5"}) from None
        if not created and not may_see_job(record):
            # The key's earlier job was submitted under this name by someone the caller
            # is not (a token re-created after a revoke): neither it nor its id is theirs.
            raise key_reused(spec.idempotency_key, None)
        return json_response(record, 202 if created else 200,
                             {"Location": job_url(record.id)})

    @bp.get("/jobs", summary="List jobs, newest first",
            responses={200: Page, 422: INVALID_DOC})
    def list_jobs(query: ListQuery) -> Response:
        """Filter by status, action and namespace; page with `next_cursor`. Jobs submitted
        while paging never shift or repeat the pages that follow."""
        page = store.list(status=query.status, action=query.action, namespace=query.namespace,
                          cursor=query.cursor, limit=query.limit)
        # Only the jobs the caller may see; the cursor still walks every job.
        page.items = [record for record in page.items
                      if may_see_job(record)]
        return json_response(page)

    @bp.get("/jobs/<id>", summary="One job, with its timeline",
            responses={200: JobRecord, 404: problem_doc("No such job."), 422: INVALID_DOC})
    def get_job(path: JobPath) -> Response:
        record = store.get(path.id)
        require_job_access(record, Permission.JOBS_READ)
        return json_response(record)

    @bp.post("/jobs/<id>/cancel", summary="Cancel a queued job or abort a running one",
             responses={200: JobRecord,
                        202: {"description": "The running job was asked to abort; it "
                                             "reverts what it changed, then ends aborted.",
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/JobRecord"}}}},
                        404: problem_doc("No such job."),
                        409: problem_doc("The job already ended."),
                        422: INVALID_DOC})
    def cancel_job(path: JobPath) -> Response:
        """200 when a queued job was cancelled; 202 when a running job was asked to abort.
        Operators cancel jobs in their namespaces (and their own); node-level jobs, admins."""
        target = store.get(path.id, with_timeline=False)
        try:
            require_job_access(target, Permission.JOBS_CANCEL)
        except ApiProblem as refused:
            if refused.status == 403:
                services.audit.record(current_actor(), "job.cancel", outcome="refused",
                                      targets=[path.id], job_id=path.id,
                                      namespaces=target.spec.target.namespaces,
                                      detail=refused.detail)
            raise
        try:
            store.request_cancel(path.id, by=current_submitter())
        except TransitionRefused:
            ended = store.get(path.id, with_timeline=False)
            how = f"{ended.status.value}: {ended.reason}" if ended.reason else ended.status.value
            raise ApiProblem(409, "job-ended", "Job already ended",
                             f"job {path.id} already ended {how}") from None
        services.audit.record(current_actor(), "job.cancel", targets=[path.id], job_id=path.id,
                              namespaces=target.spec.target.namespaces)
        record = store.get(path.id)
        return json_response(record, 200 if record.status == JobStatus.CANCELLED else 202)

    @bp.get("/jobs/<id>/events", summary="A job's timeline",
            responses={200: Timeline, 404: problem_doc("No such job."), 422: INVALID_DOC,
                       503: problem_doc("As many event streams as this API process serves "
                                        "are open (PYSTOL_STREAM_MAX_CLIENTS); retry after "
                                        "Retry-After, or read the timeline as JSON.")})
    def job_events(path: JobPath) -> Response:
        """The timeline as JSON. With `Accept: text/event-stream`, server-sent events: the
        timeline so far, then each new event as it happens, until the job ends (or after
        PYSTOL_STREAM_MAX_SECONDS; reconnect with `Last-Event-ID` to go on). Each event
        is `event: <kind>`, `id: <index in the timeline>`, `data: <the event as JSON>`; the
        stream ends with an `end` event carrying the job's status."""
        if not store.exists(path.id):
            raise ApiProblem(404, "job-not-found", "Job not found", f"there is no job {path.id}")
        require_job_access(store.get(path.id, with_timeline=False), Permission.JOBS_READ)
        if _wants_event_stream():
            return event_stream_response(services, path.id, _last_event_id())
        return json_response(Timeline(items=store.timeline(path.id)))

    return bp
