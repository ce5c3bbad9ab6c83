"""Experiment runs: list, read, cancel, resume a suspended step, and the Chaos Toolkit
journal of a run or of a single job.

A run is visible to whoever may read jobs (`jobs.read`) in every namespace of its grant
(what it was allowed to touch, probes included), and to its submitter; to anyone else it
does not exist (404, so another tenant's run ids are not even confirmed). Cancel needs
`jobs.cancel` there, resume `jobs.submit`: the experiment service checks both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from pystol_api.http.auth import current_identity
from pystol_api.http.problems import ApiProblem, problem_doc
from pystol_api.http.routes.common import (
    API_PREFIX,
    AUTH_RESPONSES,
    BEARER_SECURITY,
    INVALID_DOC,
    JSON_BODY_RESPONSES,
    Services,
    json_response,
    require_job_access,
)
from pystol_api.http.routes.experiments import map_service_errors
from pystol_api.http.routes.jobs import (
    EVENT_STREAM,
    SSE_RETRY_MS,
    JobPath,
    Timeline,
    _last_event_id,
    _wants_event_stream,
)
from pystol_worker.core.access import Permission
from pystol_worker.core.experiment_model import ExperimentRun, ExperimentRunPage
from pystol_worker.experiments.service import (
    ExperimentService,
    NotSuspended,
    RunEnded,
    RunNotFound,
)

TAG = Tag(name="experiment-runs", description="Runs of experiments: steps, verdict, score.")
RUN_NOT_FOUND = problem_doc("No such run (or one the caller may not read).")
JOURNAL_DOC = {"description": "The Chaos Toolkit journal (chaostoolkit-lib 1.44 shape, with "
                              "a `pystol` section: verdict, score, job ids).",
               "content": {"application/json": {"schema": {"type": "object"}}}}


class RunPath(BaseModel):
    id: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9._-]+$",
                    description="A run id, e.g. x-20261206T120000-1a2b3c.")


class RunsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: str | None = Field(None, min_length=1, max_length=63,
                                   pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    cursor: str | None = Field(None, pattern=r"^[A-Za-z0-9:._-]{1,200}$")
    limit: int = Field(50, ge=1, le=100)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500)


class ResumeRequest(BaseModel):
    """Which suspend step to resume, by its path (`method[2]`, `method[1].steps[0]`)."""

    model_config = ConfigDict(extra="forbid")

    step: str = Field(min_length=1, max_length=500, pattern=r"^[A-Za-z0-9_.\[\]-]+$",
                      examples=["method[2]"])


def blueprint(services: Services, experiments: Callable[[], ExperimentService]
              ) -> APIBlueprint:
    bp = APIBlueprint("experiment_runs", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY, abp_responses=AUTH_RESPONSES)

    def call(function: Callable[[], Any]) -> Any:
        try:
            return function()
        except RunNotFound as error:
            run_id = error.args[0] if error.args else "?"
            raise ApiProblem(404, "run-not-found", "Run not found",
                             f"there is no experiment run {run_id}") from None
        except RunEnded as error:
            raise ApiProblem(409, "run-ended", "Run already ended", str(error)) from None
        except NotSuspended as error:
            raise ApiProblem(409, "not-suspended", "Step not suspended", str(error)) from None
        except Exception as error:
            problem = map_service_errors(error)
            if problem is None:
                raise
            raise problem from None

    @bp.get("/experiment-runs", summary="List experiment runs, newest first",
            responses={200: ExperimentRunPage, 422: INVALID_DOC})
    def list_runs(query: RunsQuery) -> Response:
        page = call(lambda: experiments().runs(current_identity(), experiment=query.experiment,
                                               cursor=query.cursor, limit=query.limit))
        return json_response(page)

    @bp.get("/experiment-runs/<id>", summary="One run: steps, probes, verdict, score",
            responses={200: ExperimentRun, 404: RUN_NOT_FOUND, 422: INVALID_DOC})
    def get_run(path: RunPath) -> Response:
        return json_response(call(lambda: experiments().run(path.id, current_identity())))

    @bp.get("/experiment-runs/<id>/journal", summary="A run's Chaos Toolkit journal",
            responses={200: JOURNAL_DOC, 404: RUN_NOT_FOUND, 422: INVALID_DOC})
    def run_journal(path: RunPath) -> Response:
        """What `chaos run --journal-path` writes, for this run (`pystol jobs show ID
        --journal`): tools that read Chaos Toolkit journals read Pystol's runs."""
        from pystol_worker.experiments import ctk_journal

        run = call(lambda: experiments().run(path.id, current_identity()))
        return _json(ctk_journal.render(run))

    @bp.get("/experiment-runs/<id>/events", summary="A run's timeline",
            responses={200: Timeline, 404: RUN_NOT_FOUND, 422: INVALID_DOC,
                       503: problem_doc("As many event streams as this API process serves "
                                        "are open (PYSTOL_STREAM_MAX_CLIENTS).")})
    def run_events(path: RunPath) -> Response:
        """The run's timeline (steps started and ended, waits, rollbacks, the end) as JSON;
        with `Accept: text/event-stream`, server-sent events until the run ends, as a
        job's events (`id` is the index in the timeline; reconnect with
        `Last-Event-ID`; the last event is `end` with the run's status)."""
        service = experiments()
        call(lambda: service.run(path.id, current_identity()))
        if _wants_event_stream():
            response = Response(_stream_run(service, path.id, _last_event_id(),
                                            services.settings.stream_max_seconds),
                                mimetype=EVENT_STREAM)
            response.headers["Cache-Control"] = "no-cache"
            response.headers["X-Accel-Buffering"] = "no"
            return response
        return json_response(Timeline(items=service.store.timeline(path.id)))

    @bp.post("/experiment-runs/<id>/cancel", summary="Stop a run",
             responses={202: {"description": "Asked to stop: running steps abort and "
                                             "revert, then the rollbacks run.",
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/ExperimentRun"}}}},
                        404: RUN_NOT_FOUND, 409: problem_doc("The run already ended."),
                        422: INVALID_DOC, **JSON_BODY_RESPONSES})
    def cancel_run(path: RunPath, body: CancelRequest) -> Response:
        run = call(lambda: experiments().cancel(path.id, current_identity(), body.reason))
        return json_response(run, 202)

    @bp.post("/experiment-runs/<id>/resume", summary="Resume a suspended step",
             responses={200: ExperimentRun, 404: RUN_NOT_FOUND,
                        409: problem_doc("The run ended, or that step is not suspended now."),
                        422: INVALID_DOC, **JSON_BODY_RESPONSES})
    def resume_run(path: RunPath, body: ResumeRequest) -> Response:
        return json_response(call(lambda: experiments().resume(path.id, body.step,
                                                               current_identity())))

    @bp.get("/jobs/<id>/journal", summary="A job's Chaos Toolkit journal",
            responses={200: JOURNAL_DOC, 404: problem_doc("No such job."),
                       422: INVALID_DOC})
    def job_journal(path: JobPath) -> Response:
        from pystol_worker.experiments import ctk_journal

        record = services.store.get(path.id)
        require_job_access(record, Permission.JOBS_READ)
        return _json(ctk_journal.render(record))

    return bp


def _stream_run(service: ExperimentService, run_id: str, start: int, max_seconds: float,
                poll_seconds: float = 1.0) -> Iterator[str]:
    """Server-sent events of a run's timeline from `start`, polled (a run changes on the
    scale of its steps: seconds), until the run ends or `max_seconds` pass."""
    sent = start
    deadline = time.monotonic() + max_seconds
    yield f"retry: {SSE_RETRY_MS}\n\n"
    while True:
        try:
            events = service.store.timeline(run_id, sent)
            run = service.run(run_id)
        except RunNotFound:
            return
        for event in events:
            yield f"id: {sent}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
            sent += 1
        if run.status.terminal:
            for event in service.store.timeline(run_id, sent):
                yield f"id: {sent}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
                sent += 1
            yield f"event: end\ndata: {json.dumps({'status': run.status.value})}\n\n"
            return
        if time.monotonic() >= deadline:
            return
        yield ": keep-alive\n\n"
        time.sleep(poll_seconds)


def _json(document: dict[str, Any]) -> Response:
    return Response(json.dumps(document, default=str), status=200,
                    mimetype="application/json")
