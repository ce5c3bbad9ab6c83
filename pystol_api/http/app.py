"""The Flask application factory of the Pystol API.

`create_app(settings, ...)` builds one self-contained application: every dependency
(Redis, the job queue, the action registry, the cluster client) is passed in or built
from the settings here, and the views reach them through closures, never through
module globals. Tests inject fakes (fakeredis, a recording queue) instead of patching,
and each gunicorn worker builds its own app after forking, so no Redis connection is
shared between processes.

The app is a flask-openapi3 `OpenAPI` app: the request models that validate input are
the ones the OpenAPI 3.1 document at `/api/v1/openapi.json` is generated from, and the
Swagger UI (bundled by flask-openapi3-swagger, no CDN) is served at `/api/v1/docs`.

Request processing, in order:
1. routing (unknown path 404, wrong method 405, as problem+json);
2. the per-identity rate limit (429; `rate_limits`: the halt switch has its own, the
   probes none);
3. bearer authentication (every endpoint except the probes and the documentation);
4. for endpoints with a JSON body: content type (415), size (413), JSON syntax (400) and
   a top-level object (422), so that flask-openapi3 only ever validates a JSON object;
5. pydantic validation of path, query, headers and body (422 with field paths);
6. the view, which runs `validate_job` (422) and answers;
7. on the way out: an event stream takes one of the process's stream slots or becomes a
   503 (`stream_limits`), and every response gets the browser protections
   (`security_headers`: CSP, nosniff, no framing, no referrer).
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
from collections.abc import Callable, Iterable
from importlib import metadata

import redis
from flask import Flask, request
from flask_openapi3 import Info, OpenAPI

from pystol_api.http import (
    auth,
    dashboard,
    metrics_endpoint,
    rate_limits,
    security_headers,
    stream_limits,
    swagger_page,
)
from pystol_api.http.kube_identity import KubernetesIdentities
from pystol_api.http.problems import (
    BODY_LOC,
    PROBLEM_JSON,
    ApiProblem,
    FieldError,
    Problem,
    problem_doc,
    register_error_handlers,
    validation_error_callback,
)
from pystol_api.http.routes import (
    actions,
    audit,
    cluster,
    experiment_runs,
    experiments,
    halt,
    health,
    identity,
    jobs,
    policy,
    preview,
    rehearsals,
    schedules,
    tokens,
)
from pystol_api.http.routes.common import API_PREFIX, BEARER_SCHEME, LazyCluster, Services
from pystol_worker.actions import ActionRegistry, default_registry
from pystol_worker.core.access import Identity
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.service import ExperimentService
from pystol_worker.jobs.submission import JobQueue, SubmissionService
from pystol_worker.kube.cluster_access import ClusterAccess
from pystol_worker.process.celery_app import CeleryAdvances, CeleryJobQueue, CeleryRehearsals
from pystol_worker.store.audit_log import AuditLog
from pystol_worker.store.job_store import JobStore
from pystol_worker.store.redis_connection import redis_client as connect_redis
from pystol_worker.store.token_store import TokenStore

DOCS_PATH = API_PREFIX + "/docs"
OPENAPI_PATH = API_PREFIX + "/openapi.json"
SWAGGER_ENDPOINT = "swagger.swagger"  # registered by the flask-openapi3-swagger plug-in
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
EXTENSION_KEY = "pystol"


def _version() -> str:
    try:
        return metadata.version("pystol")
    except metadata.PackageNotFoundError:
        return "0.0.0"


RATE_LIMITED_DOC = problem_doc("Too many requests from this identity "
                               "(PYSTOL_API_RATE_LIMIT, or PYSTOL_HALT_RATE_LIMIT for the "
                               "halt switch); retry after `Retry-After` seconds.")


class PystolOpenAPI(OpenAPI):
    """flask-openapi3's application, with its generated 422 entries kept truthful.

    flask-openapi3 adds a 422 "array of validation errors" response to every operation
    that declares none. Ours answer one problem document, and only operations with
    input can fail validation: those declare their 422 themselves, so any generated
    entry is dropped. Every operation but the probes may answer 429 (`rate_limits`),
    which is declared here once rather than in every route.
    """

    def generate_spec_json(self) -> None:
        super().generate_spec_json()
        status = self.validation_error_status
        for path, path_item in self.spec_json.get("paths", {}).items():
            for operation in path_item.values():
                if not isinstance(operation, dict):
                    continue
                responses = operation.setdefault("responses", {})
                generated = responses.get(status)
                if generated is not None and PROBLEM_JSON not in generated.get("content", {}):
                    del responses[status]
                if path not in rate_limits.UNLIMITED_PATHS:
                    responses.setdefault("429", RATE_LIMITED_DOC)


def create_app(settings: Settings, *, redis_client: redis.Redis | None = None,
               queue: JobQueue | None = None, registry: ActionRegistry | None = None,
               cluster_factory: Callable[[], ClusterAccess] | None = None,
               send_advance: Callable[[str], None] | None = None,
               send_rehearsal: Callable[[str], None] | None = None) -> Flask:
    """The API application for `settings`; unset dependencies are built from the settings
    (Redis from `redis_url`, a Celery queue, the default action registry, and a cluster
    client built on the first preview). `send_advance(run_id)` moves an experiment run on
    (the `pystol.advance_experiment` task, sent through the queue); `send_rehearsal(run_id)`
    queues a server-side rehearsal (the `pystol.rehearse` task)."""
    app = PystolOpenAPI(
        __name__,
        info=Info(title="Pystol API", version=_version(),
                  description="Chaos engineering jobs for Kubernetes. Errors are RFC 9457 "
                              "`application/problem+json` documents."),
        security_schemes={BEARER_SCHEME: {"type": "http", "scheme": "bearer",
                                          "description": "A token from PYSTOL_API_TOKENS."}},
        doc_prefix=API_PREFIX,
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_model=Problem,
        validation_error_callback=validation_error_callback,
        static_folder=None,
    )
    # First of the after_request hooks, so the last to run: it covers every response.
    security_headers.install(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes

    # Whatever flask-openapi3 registered so far is documentation: public, like the probes.
    public = set(app.view_functions)
    swagger = app.view_functions.get(SWAGGER_ENDPOINT)
    if swagger is not None:
        # The plug-in serves the UI at {prefix}/swagger; /api/v1/docs shows the same page
        # (its asset and document URLs are relative, so they resolve from either path).
        app.add_url_rule(DOCS_PATH, endpoint="docs", view_func=swagger)
        public.add("docs")
    swagger_page.install(app)  # the documentation pages without inline code (CSP)

    if redis_client is None:
        # Timeouts: a hung Redis must fail a request, not hang a worker forever.
        redis_client = connect_redis(settings, socket_connect_timeout=5, socket_timeout=10,
                                     health_check_interval=30)
    store = JobStore(redis_client, retention_seconds=settings.job_retention_seconds)
    if queue is None:
        queue = CeleryJobQueue(settings)
    if registry is None:
        registry = default_registry()
    submissions = SubmissionService.from_settings(settings, redis_client, queue, registry,
                                                  store=store)
    lazy_cluster = LazyCluster(cluster_factory
                               or functools.partial(ClusterAccess.from_settings, settings))
    services = Services(
        settings=settings,
        redis=redis_client,
        store=store,
        queue=queue,
        registry=registry,
        cluster=lazy_cluster,
        submissions=submissions,
        policy=submissions.policy,
        tokens=TokenStore(redis_client, settings.signing_key_bytes),
        audit=submissions.audit or AuditLog(redis_client,
                                            max_records=settings.audit_max_records,
                                            retention_seconds=settings.audit_retention_seconds),
    )
    experiment_service = _lazy_experiments(services, send_advance or _advance_sender(settings))
    health_bp = health.blueprint(services)
    for blueprint in (jobs.blueprint(services), actions.blueprint(services),
                      preview.blueprint(services), halt.blueprint(services),
                      schedules.blueprint(services), cluster.blueprint(services),
                      tokens.blueprint(services), audit.blueprint(services),
                      policy.blueprint(services), identity.blueprint(services),
                      experiments.blueprint(services, experiment_service),
                      experiment_runs.blueprint(services, experiment_service),
                      rehearsals.blueprint(services, experiment_service,
                                           send_rehearsal or _rehearsal_sender(settings)),
                      health_bp):
        app.register_api(blueprint)
    public.update(name for name in app.view_functions if name.startswith(health_bp.name + "."))
    # Outside the API's authentication (like /healthz); it checks its own token, if set.
    public.add(metrics_endpoint.install(app, redis_client, settings.queue,
                                        settings.metrics_token.get_secret_value()))
    public.update(dashboard.install(app))  # the page is public; its data calls carry the token
    stream_limits.install(app, settings.stream_max_clients, settings.stream_max_seconds)
    # Before authentication, so that its check runs first (before_request hooks run in
    # the order they were registered).
    rate_limits.install(app, settings, redis_client)

    def named_token(secret: str) -> Identity | None:
        token = services.tokens.lookup(secret)
        return None if token is None else Identity(token.actor(), token.authority())

    kubernetes = KubernetesIdentities(lazy_cluster.get).identify if settings.kubernetes_auth \
        else None
    auth.install(app, auth.Authenticator(settings.api_tokens, named=named_token,
                                         kubernetes=kubernetes), public)
    _require_json_bodies(app, _json_body_endpoints(app))
    register_error_handlers(app)
    app.extensions[EXTENSION_KEY] = services
    return app


def _advance_sender(settings: Settings) -> Callable[[str], None]:
    """How the API sends `pystol.advance_experiment` to the workers: the engine's Celery
    sender (it connects on the first send)."""
    return CeleryAdvances(settings).send


def _rehearsal_sender(settings: Settings) -> Callable[[str], None]:
    """How the API sends `pystol.rehearse` to the workers (connects on the first send)."""
    sender: list[CeleryRehearsals] = []

    def send(run_id: str) -> None:
        if not sender:
            sender.append(CeleryRehearsals(settings))
        sender[0].send(run_id)
    return send


def _lazy_experiments(services: Services, send_advance: Callable[[str], None]
                      ) -> Callable[[], ExperimentService]:
    """The experiment service, built on first use (one per application, like the rest)."""
    built: list[ExperimentService] = []
    lock = threading.Lock()

    def get() -> ExperimentService:
        with lock:
            if not built:
                built.append(ExperimentService(
                    services.redis, services.settings, services.policy, services.submissions,
                    send_advance, audit=services.audit))
            return built[0]
    return get


def services_of(app: Flask) -> Services:
    """The dependencies an app was built with (for tests and later blueprints)."""
    services: Services = app.extensions[EXTENSION_KEY]
    return services


def _json_body_endpoints(app: Flask) -> frozenset[str]:
    """Endpoints whose view declares a `body` model (flask-openapi3's convention)."""
    return frozenset(endpoint for endpoint, view in app.view_functions.items()
                     if "body" in getattr(inspect.unwrap(view), "__annotations__", {}))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _require_json_bodies(app: Flask, endpoints: Iterable[str]) -> None:
    """415 for a body that is not JSON, 400 for malformed JSON (413 comes from reading a
    body over MAX_CONTENT_LENGTH), before flask-openapi3 validates it."""
    with_body = frozenset(endpoints)

    @app.before_request
    def _json_body() -> None:
        if request.endpoint not in with_body or request.method not in BODY_METHODS:
            return
        if not request.is_json:
            raise ApiProblem(415, "unsupported-media-type", "Unsupported media type",
                             "send the body as application/json (got "
                             f"{request.mimetype or 'no Content-Type'})")
        try:
            document = json.loads(request.get_data(cache=True), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            raise ApiProblem(400, "malformed-json", "Malformed JSON",
                             f"the request body is not valid JSON: {error}") from None
        if not isinstance(document, dict):
            # flask-openapi3 would parse a JSON *string* body a second time as JSON.
            raise ApiProblem(422, "validation-error", "Invalid request",
                             f"{BODY_LOC}: expected a JSON object",
                             errors=[FieldError(loc=BODY_LOC, msg="expected a JSON object")])
