"""Named Pystol tokens over HTTP: list, create (the secret is in that answer only) and
revoke. Admin only (`tokens.manage`).

Creating and revoking are audited (`token.create`, `token.revoke`) whatever the outcome:
the view records success; a refusal, invalid input or a conflict is recorded from the
answer, after the request, so that every way a request can end is covered once.
"""

from __future__ import annotations

import re
from typing import Annotated

from flask import Response, g, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pystol_api.http.auth import current_actor, current_submitter, require
from pystol_api.http.problems import ApiProblem, problem_doc, validation_error_callback
from pystol_api.http.routes.common import (
    API_PREFIX,
    BEARER_SECURITY,
    INVALID_DOC,
    JSON_BODY_RESPONSES,
    UNAUTHORIZED_DOC,
    Services,
    body_for_audit,
    json_response,
    namespaces_for_audit,
    problem_detail,
)
from pystol_worker.core.access import Permission, Role
from pystol_worker.core.model import NamespaceName, format_duration, parse_duration
from pystol_worker.store.audit_log import Outcome
from pystol_worker.store.token_store import (
    MAX_EXPIRY_SECONDS,
    MAX_NAMESPACES,
    NAME_PATTERN,
    NamedToken,
    TokenExists,
    TokenNotFound,
    scope_problem,
)

TAG = Tag(name="tokens", description="Named API tokens: a role in some namespaces, until "
                                     "they expire or are revoked (admin only).")
LOCATION_DOC = {"Location": {"description": "The token's URL (for DELETE).",
                             "schema": {"type": "string"}}}
DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)d(.*)$")
FORBIDDEN_DOC = problem_doc("The caller may not manage tokens (admin only).")
NOT_FOUND_DOC = problem_doc("No such token.")
#: The endpoints that change something, and the operation they are audited as.
AUDITED = {"tokens.create_token": "token.create", "tokens.revoke_token": "token.revoke"}


def parse_expiry(value: object) -> float:
    """Seconds from a duration (`90`, `12h`, `1h30m`), also in days (`30d`, `1d12h`)."""
    if isinstance(value, str) and (match := DAYS.match(value)):
        rest = match[2].strip()
        seconds = float(match[1]) * 86400 + (parse_duration(rest) if rest else 0.0)
    else:
        seconds = parse_duration(value)
    if not 0 < seconds <= MAX_EXPIRY_SECONDS:
        raise ValueError("the expiry must be more than 0 and at most 36500d")
    return seconds


def format_expiry(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    return format_duration(seconds)


Expiry = Annotated[
    float,
    BeforeValidator(parse_expiry),
    PlainSerializer(format_expiry, return_type=str, when_used="json"),
    Field(json_schema_extra={"type": "string", "examples": ["30d", "12h", "1d12h"]}),
]


class TokenCreate(BaseModel):
    """A new named token."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN, examples=["ci-shop"],
                      description="Lower-case letters, digits and '-' (a DNS label).")
    role: Role = Field(examples=["operator"])
    namespaces: list[NamespaceName] = Field(
        default_factory=list, max_length=MAX_NAMESPACES, examples=[["shop", "cart"]],
        validate_default=True,
        description="Where the role applies: at least one for a viewer or operator; none "
                    "for an admin (every namespace).")
    expires: Expiry | None = Field(None, description="How long the token is valid (`30d`, "
                                                     "`12h`); null: until revoked.")

    @field_validator("namespaces")
    @classmethod
    def _fits_role(cls, value: list[str], info: ValidationInfo) -> list[str]:
        role = info.data.get("role")
        if role is not None:
            problem = scope_problem(role, value)
            if problem:
                raise ValueError(problem)
        return value


class TokenCreated(NamedToken):
    """The new token, with its secret: shown in this answer only."""

    model_config = ConfigDict(openapi_extra={  # type: ignore[typeddict-unknown-key]
        "description": "Created. The secret is in this answer only.",
        "headers": LOCATION_DOC})
    token: str = Field(description="The secret to send as `Authorization: Bearer …`. It is "
                                   "not stored and cannot be shown again.",
                       examples=["pst_3q2…"])


class TokenList(BaseModel):
    items: list[NamedToken]


class TokenPath(BaseModel):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)


def token_url(name: str) -> str:
    return f"{API_PREFIX}/tokens/{name}"


def _outcome(status: int) -> Outcome:
    if status == 403:
        return "refused"
    if status in (400, 413, 415, 422):
        return "invalid"
    return "failed"


def _requested(response: Response) -> tuple[list[str], list[str]]:
    """The token name and namespaces a request named, as far as they can be read."""
    if request.view_args and isinstance(request.view_args.get("name"), str):
        return [request.view_args["name"][:100]], []
    body = body_for_audit(response)
    name = body.get("name")
    namespaces = body.get("namespaces")
    return ([name[:100]] if isinstance(name, str) else [],
            namespaces_for_audit(namespaces))


def blueprint(services: Services) -> APIBlueprint:
    bp = APIBlueprint("tokens", __name__, url_prefix=API_PREFIX, abp_tags=[TAG],
                      abp_security=BEARER_SECURITY,
                      abp_responses={401: UNAUTHORIZED_DOC, 403: FORBIDDEN_DOC})

    @bp.before_request
    def _admin_only() -> None:
        # Before the body is validated: who may not manage tokens gets 403, whatever sent.
        require(Permission.TOKENS_MANAGE)

    @bp.after_request
    def _audit_failures(response: Response) -> Response:
        operation = AUDITED.get(request.endpoint or "")
        if operation is None or response.status_code < 400 or "identity" not in g \
                or getattr(g, "audited", False):
            return response
        targets, namespaces = _requested(response)
        services.audit.record(current_actor(), operation,
                              outcome=_outcome(response.status_code), targets=targets,
                              namespaces=namespaces, detail=problem_detail(response))
        return response

    @bp.get("/tokens", summary="List named tokens",
            responses={200: TokenList})
    def list_tokens() -> Response:
        """Every named token (never a secret), by name; expired tokens stay listed for a
        week. `intact: false` marks an entry that was written or altered in Redis without
        the signing key: it authenticates nobody, revoke it."""
        return json_response(TokenList(items=services.tokens.list()))

    @bp.post("/tokens", summary="Create a named token",
             responses={201: TokenCreated,
                        409: problem_doc("A token with this name exists."),
                        422: INVALID_DOC, **JSON_BODY_RESPONSES})
    def create_token(body: TokenCreate) -> Response:
        """A token with a role in some namespaces (an admin: in all), valid until it
        expires or is revoked. Store the secret now: only its SHA-256 is kept."""
        try:
            token, secret = services.tokens.create(body.name, body.role, body.namespaces,
                                                   body.expires, current_submitter())
        except ValidationError as error:  # the body model checks the same: a safety net
            return validation_error_callback(error)
        except TokenExists:
            raise ApiProblem(409, "token-exists", "Token exists",
                             f"there is already a token {body.name}; revoke it first (DELETE "
                             f"{token_url(body.name)})") from None
        expiry = token.expires_at.isoformat() if token.expires_at else "never"
        services.audit.record(current_actor(), "token.create", targets=[token.name],
                              namespaces=token.namespaces,
                              detail=f"role {token.role.value}, expires {expiry}")
        g.audited = True
        created = TokenCreated(**token.model_dump(), token=secret)
        return json_response(created, 201, {"Location": token_url(token.name),
                                            "Cache-Control": "no-store"})

    @bp.delete("/tokens/<name>", summary="Revoke a named token",
               responses={204: {"description": "Revoked: the token authenticates nobody "
                                                "from now on."},
                          404: NOT_FOUND_DOC, 422: INVALID_DOC})
    def revoke_token(path: TokenPath) -> Response:
        try:
            token = services.tokens.revoke(path.name)
        except TokenNotFound:
            raise ApiProblem(404, "token-not-found", "Token not found",
                             f"there is no token {path.name}") from None
        services.audit.record(current_actor(), "token.revoke", targets=[token.name],
                              namespaces=token.namespaces, detail=f"role {token.role.value}")
        g.audited = True
        return Response(status=204)

    return bp

