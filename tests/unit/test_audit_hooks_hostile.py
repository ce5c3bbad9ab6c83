"""The hooks that audit a refused create (schedules, tokens) read the request body again to
name what was asked. A hostile body must still get its 4xx, never a 500, and still leave
exactly one `invalid` record: deep nesting (a RecursionError in the JSON parser) and a body
over the size limit (413) are the two ways to trip a second read."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from pystol_api.http.app import create_app, services_of
from pystol_worker.actions import default_registry
from tests.unit.test_api_tokens_audit import ADMIN, RecordingQueue, make_settings

JSON = {**ADMIN, "Content-Type": "application/json"}


@pytest.fixture
def app() -> Flask:
    return create_app(make_settings(), redis_client=fakeredis.FakeRedis(),
                      queue=RecordingQueue(), registry=default_registry())


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/api/v1/schedules", "/api/v1/tokens"])
@pytest.mark.parametrize(("body", "status"), [
    (b"[" * 2000, 400),                                   # nesting deeper than the parser
    (b'{"id": "' + b"x" * (70 * 1024) + b'"}', 413),      # over max_request_bytes (64 KiB)
], ids=["deep", "huge"])
def test_a_hostile_body_gets_its_4xx_and_one_invalid_record(
        app: Flask, client: FlaskClient, path: str, body: bytes, status: int) -> None:
    response = client.post(path, data=body, headers=JSON)
    assert response.status_code == status, response.get_data()[:300]
    records, _ = services_of(app).audit.read()
    assert [record.outcome for record in records] == ["invalid"]
