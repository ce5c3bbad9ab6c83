"""What schemathesis found in the live API (tests/integration/test_api_fuzz.py), each as the
request that showed it, so that a regression fails here in a second rather than only when
the fuzzer happens to draw the same request again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel, field_validator

from pystol_api.http.app import OPENAPI_PATH, create_app
from pystol_api.http.problems import PROBLEM_JSON
from pystol_api.http.routes.common import revalidated
from pystol_worker.actions import default_registry
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.validation import JobInvalid
from tests.support.recording_queue import RecordingQueue

TOKEN = "fuzz-findings-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_app(client: redis.Redis) -> Flask:
    settings = Settings(api_tokens=[TOKEN], redis_url="redis://127.0.0.1:6379/0",
                        max_request_bytes=64 * 1024, api_rate_limit="")
    return create_app(settings, redis_client=client, queue=RecordingQueue(),
                      registry=default_registry())


@pytest.fixture(scope="module")
def app() -> Flask:
    return make_app(fakeredis.FakeRedis())


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


def openapi(client: FlaskClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get(OPENAPI_PATH).get_json()
    return document


def job(**target: Any) -> dict[str, Any]:
    return {"action": "pod-kill", "dry_run": True,
            "target": {"namespaces": ["shop"], "label_selector": "app=web", **target}}


# -- a float `amount`: 500 ----------------------------------------------------------------------
# POST /api/v1/jobs {"target": {..., "amount": 526.0}} answered 500: the int field took 526.0
# as 526 but the validator that turns `amount` into mode=fixed only looked at ints, so the
# first validation left mode=one (the amount silently ignored) and the second, of its own
# output, refused amount together with mode=one: a ValidationError out of the view.


def test_a_whole_float_amount_means_mode_fixed(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json=job(amount=2.0), headers=AUTH)
    assert response.status_code == 202, response.get_data(as_text=True)
    target = response.get_json()["spec"]["target"]
    assert (target["mode"], target["value"], target["amount"]) == ("fixed", 2, None)


def test_a_whole_float_amount_in_a_schedule_template(client: FlaskClient) -> None:
    response = client.post("/api/v1/schedules", headers=AUTH,
                           json={"interval": "1h", "paused": True, "template": job(amount=3.0)})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["spec"]["template"]["target"]["mode"] == "fixed"


def test_a_fractional_amount_is_a_422(client: FlaskClient) -> None:
    response = client.post("/api/v1/jobs", json=job(amount=2.5), headers=AUTH)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    assert [error["loc"] for error in response.get_json()["errors"]] == ["target.amount"]


class NotIdempotent(BaseModel):
    """A model whose validated output does not validate again, as Target's once did."""

    count: int

    @field_validator("count")
    @classmethod
    def _odd_then_even(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd")
        return value + 1


def test_a_request_model_that_does_not_revalidate_is_invalid_input() -> None:
    """The guard behind `as_spec`: whatever validator misbehaves next, the client gets a
    422 with a field path (JobInvalid), not a 500."""
    first = NotIdempotent.model_validate({"count": 3})
    with pytest.raises(JobInvalid) as raised:
        revalidated(NotIdempotent, first.model_dump())
    assert [(p.loc, p.msg) for p in raised.value.problems] == [("count", "must be odd")]


# -- bodies that are not JSON: undocumented 400, 413, 415 ----------------------------------------
# POST /api/v1/jobs with `Content-Type: application/json` and the body b"\x91" answered a 400
# problem (right) that the document did not list (status_code_conformance), as did every
# operation with a JSON body; 413 and 415 were missing too.


def test_every_json_body_operation_documents_the_answers_before_validation(
        client: FlaskClient) -> None:
    document = openapi(client)
    with_body = [(method, path, operation)
                 for path, item in document["paths"].items()
                 for method, operation in item.items() if "requestBody" in operation]
    assert len(with_body) >= 6
    for method, path, operation in with_body:
        statuses = {400, 413, 415} if (method, path) != ("post", "/api/v1/halt") else {413}
        for status in statuses:
            answer = operation["responses"].get(str(status))
            assert answer is not None, (method, path, status)
            assert PROBLEM_JSON in answer["content"], (method, path, status)


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/preview", "/api/v1/schedules",
                                  "/api/v1/tokens"])
def test_a_body_that_is_not_utf8_json_is_a_documented_400(client: FlaskClient,
                                                           path: str) -> None:
    response = client.post(path, data=b"\x91\x00", headers=AUTH,
                           content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    assert "400" in openapi(client)["paths"][path]["post"]["responses"]


def test_halt_documents_its_optional_body(client: FlaskClient) -> None:
    """The view reads the body itself, so nothing documented it; the fuzzer (and any
    client generated from the document) could not know `reason`."""
    body = openapi(client)["paths"]["/api/v1/halt"]["post"]["requestBody"]
    assert body["required"] is False
    schema = body["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"reason"}
    assert schema["additionalProperties"] is False
