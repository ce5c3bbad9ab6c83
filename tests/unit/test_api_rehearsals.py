"""The rehearsal routes over HTTP: hostile requests first, then the happy path.

Real app (`create_app`) on fakeredis with named tokens, as `test_api_experiments.py`:
operators and viewers of `shop`, `payments` is another tenant. `send_rehearsal` records
what would reach the workers (`pystol.rehearse`); the worker side (`execute`) is
`tests/unit/test_rehearsal_service.py`'s and the integration test's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from pystol_api.http.app import create_app, services_of
from pystol_worker.actions import default_registry
from pystol_worker.core.access import Role
from pystol_worker.core.settings import Settings
from pystol_worker.kube.fake_cluster import FakeCluster
from pystol_worker.rehearsal.report import RehearsalReport
from pystol_worker.rehearsal.service import RehearsalService, RehearsalStatus
from tests.unit.test_api_experiments import ADMIN_TOKEN, RecordingQueue, World, experiment


class RehearsalWorld(World):
    rehearsals: list[str]


@pytest.fixture
def world() -> Iterator[RehearsalWorld]:
    cluster = FakeCluster()
    sent: list[str] = []
    app = create_app(Settings(api_tokens=[ADMIN_TOKEN], kubernetes_auth=False),
                     redis_client=fakeredis.FakeRedis(), queue=RecordingQueue(),
                     registry=default_registry(), cluster_factory=lambda: cluster,  # type: ignore[arg-type,return-value]
                     send_advance=lambda run_id: None, send_rehearsal=sent.append)
    store = services_of(app).tokens
    tokens = {"admin": ADMIN_TOKEN}
    for role in (Role.OPERATOR, Role.VIEWER):
        _, tokens[role.value] = store.create(f"{role.value}-shop", role, ["shop"], None,
                                             created_by="test")
    _, tokens["payments-operator"] = store.create("operator-payments", Role.OPERATOR,
                                                  ["payments"], None, created_by="test")
    _, tokens["wide-viewer"] = store.create("viewer-both", Role.VIEWER, ["shop", "payments"],
                                            None, created_by="test")
    with app.test_client() as client:
        world = RehearsalWorld(app, client, tokens)
        world.rehearsals = sent
        yield world


def store_experiment(world: World, name: str = "web-survives", namespace: str = "shop",
                     probe_namespace: str | None = None) -> None:
    created = world.call("admin", "POST", "/api/v1/experiments",
                         experiment(name=name, namespace=namespace,
                                    probe_namespace=probe_namespace))
    assert created.status_code == 201, created.json


def rehearse(world: World, who: str, body: Any = None, name: str = "web-survives") -> Any:
    return world.call(who, "POST", f"/api/v1/experiments/{name}/rehearse",
                      {} if body is None else body)


def locs(answer: Any) -> list[str]:
    return [str(error["loc"]) for error in answer.json.get("errors") or []]


# -- hostile requests ----------------------------------------------------------------------


def test_a_caller_who_may_read_but_not_submit_in_payments_is_403_naming_the_probe(
        world: RehearsalWorld) -> None:
    # The steps are in shop; the probe reads payments: rehearsing copies payments too.
    store_experiment(world, probe_namespace="payments")
    answer = rehearse(world, "wide-viewer")
    assert answer.status_code == 403, answer.json
    assert locs(answer) == ["hypothesis.probes[0]"], answer.json
    assert "payments" in answer.json["detail"]
    assert world.rehearsals == []


def test_an_operator_of_shop_cannot_rehearse_an_experiment_whose_probe_reads_payments(
        world: RehearsalWorld) -> None:
    # The step is in shop, the probe reads payments: the shop operator may not read the
    # document (`experiments.read` in payments), so it is hidden, and nothing is queued.
    store_experiment(world, probe_namespace="payments")
    answer = rehearse(world, "operator")
    assert answer.status_code == 404, answer.json
    assert world.rehearsals == []


def test_an_operator_of_shop_cannot_rehearse_a_payments_experiment(
        world: RehearsalWorld) -> None:
    store_experiment(world, name="pay", namespace="payments")
    answer = rehearse(world, "operator", name="pay")
    assert answer.status_code == 404, answer.json  # not even confirmed to exist
    assert world.rehearsals == []


def test_a_viewer_cannot_rehearse(world: RehearsalWorld) -> None:
    store_experiment(world)
    answer = rehearse(world, "viewer")
    assert answer.status_code == 403, answer.json
    assert world.rehearsals == []


@pytest.mark.parametrize("speed", [0, 0.5, 101, 1e9, -1, "fast", "", True, [5], {"x": 1}])
def test_a_speed_outside_1_to_100_or_auto_is_422_naming_speed(
        world: RehearsalWorld, speed: Any) -> None:
    store_experiment(world)
    answer = rehearse(world, "operator", {"speed": speed})
    assert answer.status_code == 422, answer.json
    assert any("speed" in loc for loc in locs(answer)), answer.json
    assert world.rehearsals == []


def test_an_unknown_field_is_422_and_a_non_json_body_is_415(world: RehearsalWorld) -> None:
    store_experiment(world)
    unknown = rehearse(world, "operator", {"sped": 5})
    assert unknown.status_code == 422 and any("sped" in loc for loc in locs(unknown))
    text = world.call("operator", "POST", "/api/v1/experiments/web-survives/rehearse",
                      raw=b"speed=5", content_type="text/plain")
    assert text.status_code == 415, text.json
    assert world.rehearsals == []


def test_an_unknown_experiment_and_a_bad_name_are_4xx(world: RehearsalWorld) -> None:
    assert rehearse(world, "admin", name="nope").status_code == 404
    assert rehearse(world, "admin", name="Bad_Name").status_code == 422


def test_another_tenants_rehearsal_is_404(world: RehearsalWorld) -> None:
    store_experiment(world, name="pay", namespace="payments")
    started = rehearse(world, "payments-operator", name="pay")
    assert started.status_code == 202, started.json
    for who in ("operator", "viewer"):
        answer = world.call(who, "GET", f"/api/v1/rehearsals/{started.json['id']}")
        assert answer.status_code == 404, answer.json
    assert world.call("admin", "GET", "/api/v1/rehearsals/r-unknown").status_code == 404
    assert world.call("admin", "GET", "/api/v1/rehearsals/a%20b").status_code in (404, 422)


# -- the happy path ------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "speed"), [({}, None), ({"speed": "auto"}, None),
                                             ({"speed": 20}, 20.0), ({"speed": 1}, 1.0),
                                             ({"speed": 100}, 100.0)])
def test_rehearse_answers_202_with_the_location_and_queues_it(
        world: RehearsalWorld, body: dict[str, Any], speed: float | None) -> None:
    store_experiment(world)
    answer = rehearse(world, "operator", body)
    assert answer.status_code == 202, answer.json
    run_id = answer.json["id"]
    assert answer.headers["Location"] == f"/api/v1/rehearsals/{run_id}"
    assert world.rehearsals == [run_id]
    assert answer.json["status"] == "queued" and answer.json["speed"] == speed
    assert "signature" not in (answer.json.get("grant") or {})
    read = world.call("viewer", "GET", f"/api/v1/rehearsals/{run_id}")
    assert read.status_code == 200, read.json
    assert (read.json["experiment"], read.json["status"]) == ("web-survives", "queued")


def test_the_report_the_worker_stored_is_served(world: RehearsalWorld) -> None:
    store_experiment(world)
    run_id = rehearse(world, "operator").json["id"]
    services = services_of(world.app)
    rehearsals = RehearsalService(services.redis, services.settings,
                                  check=lambda spec, identity: None,  # type: ignore[arg-type,return-value]
                                  send=lambda rid: None)
    run = rehearsals.get(run_id)
    run.status = RehearsalStatus.COMPLETED
    run.report = RehearsalReport.model_validate({
        "experiment": "web-survives", "snapshot": "12 objects of namespaces shop",
        "speed": 10.0, "verdict": "passed", "score": 100.0,
        "blast_radius": [{"workload": {"kind": "Deployment", "namespace": "shop",
                                       "name": "web"}, "desired": 3, "min_ready": 2}]})
    rehearsals._save(run)
    read = world.call("operator", "GET", f"/api/v1/rehearsals/{run_id}")
    assert read.status_code == 200, read.json
    assert read.json["status"] == "completed"
    report = read.json["report"]
    assert (report["verdict"], report["score"]) == ("passed", 100.0)
    assert report["blast_radius"][0]["lost"] == 1


def test_the_routes_are_documented(world: RehearsalWorld) -> None:
    spec: Any = world.client.get("/api/v1/openapi.json").json
    post = spec["paths"]["/api/v1/experiments/{name}/rehearse"]["post"]
    assert {"202", "400", "403", "404", "413", "415", "422"} <= set(post["responses"])
    get = spec["paths"]["/api/v1/rehearsals/{id}"]["get"]
    assert {"200", "404"} <= set(get["responses"])


@pytest.mark.parametrize(("raw", "content_type"), [
    (b'{"name": ', "application/json"), (b"\x91\x00", "application/json"),
    (b"name: [unclosed", "application/yaml")])
def test_a_document_that_cannot_be_parsed_is_the_documented_400(
        world: RehearsalWorld, raw: bytes, content_type: str) -> None:
    # Every JSON-body operation documents 400 (test_api_fuzz_findings); the document
    # routes answer it too, for text that is not JSON/YAML at all (a parsed document that
    # is not a valid experiment stays a 422 naming the field).
    answer = world.call("admin", "POST", "/api/v1/experiments", raw=raw,
                        content_type=content_type)
    assert answer.status_code == 400, answer.json
    assert answer.json["type"].endswith("/malformed-document")
    wrong = world.call("admin", "POST", "/api/v1/experiments", {"name": "x", "method": 5})
    assert wrong.status_code == 422, wrong.json
