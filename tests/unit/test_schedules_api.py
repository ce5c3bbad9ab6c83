"""`/api/v1/schedules` and `pystol schedules …` against the real app on fakeredis.

The CLI tests serve the very application `create_app` builds (fakeredis, a recording queue)
from a werkzeug server in a thread, so the command line, the HTTP client, the routes and
the store are exercised together without any process or real Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

from pystol_api.cli.commands import Runtime, cli
from pystol_api.http.app import create_app, services_of
from pystol_api.http.auth import submitter_name
from pystol_api.http.routes.schedules import merge_patch
from pystol_worker.core.access import Role
from pystol_worker.core.settings import Settings
from pystol_worker.schedules.store import REDBEAT_SCHEDULE_KEY, entry_key
from tests.support.recording_queue import RecordingQueue
from tests.support.served_app import serving

TOKEN = "schedule-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEMPLATE: dict[str, Any] = {"action": "pod-kill",
                            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def app(redis_client: fakeredis.FakeRedis) -> Flask:
    return create_app(Settings(api_tokens=[TOKEN]), redis_client=redis_client,
                      queue=RecordingQueue())


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/schedules", json=body, headers=AUTH)


# -- HTTP ----------------------------------------------------------------------------------


def test_create_read_list_delete(client: FlaskClient,
                                 redis_client: fakeredis.FakeRedis) -> None:
    created = post(client, {"id": "web-daily", "cron": "0 9 * * mon-fri",
                            "time_zone": "Europe/Berlin", "windows": ["mon-fri 09:00-17:00"],
                            "concurrency_policy": "Forbid", "template": TEMPLATE})
    assert created.status_code == 201, created.json
    assert created.headers["Location"] == "/api/v1/schedules/web-daily"
    record = created.json
    assert record["source"] == "api" and record["submitter"] == submitter_name(TOKEN)
    assert record["spec"]["windows"] == [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                          "start": "09:00", "end": "17:00"}]
    assert record["next_run_at"] and record["last_runs"] == []
    assert redis_client.zscore(REDBEAT_SCHEDULE_KEY, entry_key("web-daily")) is not None
    generated = post(client, {"interval": "10m", "template": TEMPLATE}).json
    assert generated["id"].startswith("s-")
    got = client.get("/api/v1/schedules/web-daily", headers=AUTH)
    assert got.status_code == 200 and got.json["spec"]["cron"] == "0 9 * * mon-fri"
    listed = client.get("/api/v1/schedules", headers=AUTH).json["items"]
    assert [item["id"] for item in listed] == ["web-daily", generated["id"]]
    assert client.delete("/api/v1/schedules/web-daily", headers=AUTH).status_code == 204
    assert redis_client.zscore(REDBEAT_SCHEDULE_KEY, entry_key("web-daily")) is None
    missing = client.get("/api/v1/schedules/web-daily", headers=AUTH)
    assert missing.status_code == 404 and missing.content_type == "application/problem+json"
    assert missing.json["detail"] == "there is no schedule web-daily"
    assert client.delete("/api/v1/schedules/web-daily", headers=AUTH).status_code == 404


def test_the_cli_source_header_is_recorded(client: FlaskClient) -> None:
    record = client.post("/api/v1/schedules", json={"interval": "1h", "template": TEMPLATE},
                         headers={**AUTH, "X-Pystol-Source": "cli"}).json
    assert record["source"] == "cli"


def test_an_existing_id_is_a_conflict(client: FlaskClient) -> None:
    assert post(client, {"id": "x", "interval": "1h", "template": TEMPLATE}).status_code == 201
    conflict = post(client, {"id": "x", "interval": "2h", "template": TEMPLATE})
    assert conflict.status_code == 409 and "PATCH /api/v1/schedules/x" in conflict.json["detail"]


@pytest.mark.parametrize(("body", "loc", "fragment"), [
    ({"cron": "0 25 * * *"}, "cron", "hour field: 25 is out of range 0-23"),
    ({"cron": "0 9 * * *", "time_zone": "Europe/Atlantis"}, "time_zone",
     "unknown time zone 'Europe/Atlantis'"),
    ({"interval": "1h", "windows": ["mon-fri 18:00-08:00"]}, "windows[0]", "empty window"),
    ({"interval": "1h", "windows": [{"days": []}]}, "windows[0].days", "empty window"),
    ({"interval": "1h", "mtbf": "1h"}, "body", "exactly one of cron, interval or mtbf"),
    ({"interval": "1h", "id": "no spaces"}, "id", "String should match pattern"),
    ({"interval": "1h", "template": {**TEMPLATE, "target": {"namespaces": ["kube-system"]}}},
     "template.target.namespaces[0]", "is protected"),
    ({"interval": "1h", "template": {**TEMPLATE, "params": {"bogus": 1}}},
     "template.params.bogus", "Extra inputs"),
    ({"cron": "0 3 * * *", "windows": ["10:00-11:00"]}, "windows", "would never run"),
    ({"interval": "1h", "template": {**TEMPLATE, "experiment": {
        "run_id": "x-20261206T120000-abcdef", "path": "method[0]",
        "hold_until_released": True}}}, "template.experiment", "experiment engine"),
])
def test_invalid_schedules_are_422_with_field_paths(client: FlaskClient, body: dict[str, Any],
                                                    loc: str, fragment: str) -> None:
    answer = post(client, {"template": TEMPLATE, **body})
    assert answer.status_code == 422, answer.json
    assert answer.content_type == "application/problem+json"
    assert any(error["loc"] == loc and fragment in error["msg"]
               for error in answer.json["errors"]), answer.json


@pytest.mark.parametrize("schedule_id", ["cr.payments.nightly", "cr-cluster.x"])
def test_the_id_of_a_custom_resources_schedule_cannot_be_taken(
        client: FlaskClient, redis_client: fakeredis.FakeRedis, schedule_id: str) -> None:
    """A PystolSchedule `nightly` in `payments` is stored as `cr.payments.nightly` (a
    PystolClusterSchedule as `cr-cluster.<name>`): taken first over the API, that
    resource's schedule could never be created."""
    answer = post(client, {"id": schedule_id, "interval": "1h", "template": TEMPLATE})
    assert answer.status_code == 422, answer.json
    assert answer.content_type == "application/problem+json"
    assert [error["loc"] for error in answer.json["errors"]] == ["id"]
    assert "PystolSchedule" in answer.json["errors"][0]["msg"]
    assert client.get("/api/v1/schedules", headers=AUTH).json["items"] == []
    assert redis_client.zscore(REDBEAT_SCHEDULE_KEY, entry_key(schedule_id)) is None
    # Ids that merely look alike are anyone's.
    for lookalike in ("crm.nightly", "cr-nightly", "x.cr.payments"):
        created = post(client, {"id": lookalike, "interval": "1h", "template": TEMPLATE})
        assert created.status_code == 201, created.json


def test_a_schedule_spanning_two_namespaces_is_hidden_from_a_reader_of_one(
        app: Flask, client: FlaskClient) -> None:
    tokens = services_of(app).tokens
    _, shop = tokens.create("dash", Role.VIEWER, ["shop"], None, "test")
    _, both = tokens.create("auditor", Role.VIEWER, ["shop", "payments"], None, "test")
    spanning = post(client, {"id": "both", "interval": "1h", "template": {
        **TEMPLATE, "target": {**TEMPLATE["target"], "namespaces": ["shop", "payments"]}}})
    assert spanning.status_code == 201, spanning.json
    assert post(client, {"id": "shop-only", "interval": "1h",
                         "template": TEMPLATE}).status_code == 201

    viewer = {"Authorization": f"Bearer {shop}"}
    assert client.get("/api/v1/schedules/both", headers=viewer).status_code == 404
    listed = client.get("/api/v1/schedules", headers=viewer).json["items"]
    assert [item["id"] for item in listed] == ["shop-only"]
    auditor = {"Authorization": f"Bearer {both}"}
    assert client.get("/api/v1/schedules/both", headers=auditor).status_code == 200


def test_patch_merges_pauses_and_validates(client: FlaskClient,
                                           redis_client: fakeredis.FakeRedis) -> None:
    post(client, {"id": "p", "interval": "10m", "template": {**TEMPLATE, "duration": "5s"}})
    paused = client.patch("/api/v1/schedules/p", json={"paused": True}, headers=AUTH)
    assert paused.status_code == 200 and paused.json["spec"]["paused"] is True
    assert paused.json["next_run_at"] is None
    assert redis_client.zscore(REDBEAT_SCHEDULE_KEY, entry_key("p")) == -1
    changed = client.patch("/api/v1/schedules/p", headers=AUTH, json={
        "paused": False, "template": {"params": {"grace_period_seconds": 0}, "duration": None}})
    assert changed.status_code == 200
    template = changed.json["spec"]["template"]
    assert template["params"] == {"grace_period_seconds": 0} and template["duration"] is None
    assert template["target"] == {**TEMPLATE["target"], "field_selector": None, "names": [],
                                  "amount": None, "max_targets": None, "min_available": None,
                                  "mode": "one", "value": None}
    switched = client.patch("/api/v1/schedules/p", json={"cron": "*/5 * * * *"}, headers=AUTH)
    assert switched.status_code == 422 and "set the old one to null" in switched.json["detail"]
    switched = client.patch("/api/v1/schedules/p", headers=AUTH,
                            json={"cron": "*/5 * * * *", "interval": None})
    assert switched.status_code == 200 and switched.json["spec"]["interval"] is None
    bad = client.patch("/api/v1/schedules/p", json={"time_zone": "Nowhere"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json["errors"][0]["loc"] == "time_zone"
    unknown = client.patch("/api/v1/schedules/p", json={"colour": "red"}, headers=AUTH)
    assert unknown.status_code == 422 and unknown.json["errors"][0]["loc"] == "colour"
    missing = client.patch("/api/v1/schedules/nope", json={"paused": True}, headers=AUTH)
    assert missing.status_code == 404


def test_schedules_need_a_token(client: FlaskClient) -> None:
    assert client.get("/api/v1/schedules").status_code == 401


def test_openapi_documents_the_schedule_routes(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").json
    paths = document["paths"]
    assert set(paths["/api/v1/schedules"]) == {"get", "post"}
    assert set(paths["/api/v1/schedules/{id}"]) == {"get", "patch", "delete"}
    schemas = document["components"]["schemas"]
    assert {"ScheduleRecord", "ScheduleRun", "TimeWindow", "SchedulePatch"} <= set(schemas)


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": 5}) \
        == {"a": 1, "b": {"d": 3, "e": 4}, "f": 5}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


# -- the command line against the real app ------------------------------------------------


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    with serving(app) as url:
        yield url


def invoke(url: str, args: list[str]) -> Result:
    env = {"PYSTOL_API_URL": url, "PYSTOL_TOKEN": TOKEN, "PYSTOL_CONFIG": None,
           "NO_COLOR": None}
    return CliRunner().invoke(cli, args, env=env, obj=Runtime(tty=False))


def test_cli_schedules_lifecycle(served: str) -> None:
    added = invoke(served, ["schedules", "add", "pod-kill", "-n", "shop", "-l", "app=web",
                            "--every", "30m", "--window", "mon-fri 09:00-17:00",
                            "--exclude-date", "2025-12-24", "--policy", "forbid",
                            "--tz", "Europe/Berlin", "--starting-deadline", "60",
                            "--id", "office", "-p", "grace_period_seconds=0"])
    assert added.exit_code == 0, added.output
    assert added.output.startswith("schedule office: every 30m (Europe/Berlin) in windows, "
                                   "next run ")
    listed = invoke(served, ["schedules", "list"])
    assert listed.exit_code == 0
    header, row = listed.output.splitlines()
    assert header.split() == ["ID", "WHEN", "ACTION", "TARGET", "POLICY", "STATE", "NEXT",
                              "RUN", "LAST", "RUN"]
    assert row.startswith("office  every 30m (Europe/Berlin) in windows  pod-kill  in shop")
    assert "Forbid  active" in row
    assert header.index("POLICY") == row.index("Forbid")  # aligned
    shown = invoke(served, ["schedules", "show", "office"])
    assert shown.exit_code == 0
    assert "window:    mon,tue,wed,thu,fri 09:00-17:00" in shown.output
    assert "policy:    Forbid, starting deadline 60s" in shown.output
    assert "excluded:  2025-12-24" in shown.output and "none yet" in shown.output
    paused = invoke(served, ["schedules", "pause", "office"])
    assert paused.output == "schedule office paused: it fires nothing until resumed\n"
    as_json = json.loads(invoke(served, ["schedules", "show", "office", "-o", "json"]).output)
    assert as_json["spec"]["paused"] is True and as_json["next_run_at"] is None
    resumed = invoke(served, ["schedules", "resume", "office", "-o", "json"])
    assert json.loads(resumed.output)["spec"]["paused"] is False
    everything = json.loads(invoke(served, ["schedules", "list", "-o", "json"]).output)
    assert [item["id"] for item in everything["items"]] == ["office"]
    removed = invoke(served, ["schedules", "rm", "office"])
    assert removed.output == "schedule office deleted\n"
    assert invoke(served, ["schedules", "list"]).output == "no schedules\n"


def test_cli_schedule_errors(served: str, tmp_path: Any) -> None:
    bad = invoke(served, ["schedules", "add", "pod-kill", "-n", "shop", "--cron", "0 9 * *"])
    assert bad.exit_code == 2
    assert bad.output.splitlines()[0].startswith("error: Invalid request: cron: invalid cron")
    assert "  cron: invalid cron expression '0 9 * *': expected 5 fields" in bad.output
    unsaid = invoke(served, ["schedules", "add", "pod-kill", "-n", "shop"])
    assert unsaid.exit_code == 2 and "--cron, --every or --mtbf" in unsaid.output
    missing = invoke(served, ["schedules", "show", "nope"])
    assert missing.exit_code == 2 and "there is no schedule nope" in missing.output
    spec_file = tmp_path / "nightly.yaml"
    spec_file.write_text("cron: '0 3 * * *'\ntime_zone: Europe/Berlin\n"
                         "template:\n  action: pod-kill\n  target:\n    namespaces: [shop]\n")
    from_file = invoke(served, ["schedules", "add", "-f", str(spec_file), "--id", "nightly"])
    assert from_file.exit_code == 0, from_file.output
    assert "schedule nightly: cron 0 3 * * * (Europe/Berlin)" in from_file.output
