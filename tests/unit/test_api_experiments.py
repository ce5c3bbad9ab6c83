"""The experiment routes over HTTP: hostile documents first, then who may do what.

Real app (`create_app`) on fakeredis with named tokens, as `test_api_roles.py` does: an
admin, an operator and a viewer of `shop`; `payments` is another tenant. The experiment
service is the real one (the engine helper's); `send_advance` records what would reach
the workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from pystol_api.http.app import create_app, services_of
from pystol_worker.actions import default_registry
from pystol_worker.core.access import Role
from pystol_worker.core.settings import Settings
from pystol_worker.kube.fake_cluster import FakeCluster
from tests.support.recording_queue import RecordingQueue

ADMIN_TOKEN = "admin-token-0123456789"
FAST = 1.0  # seconds: a refusal of a hostile body must not take longer than this


@dataclass
class World:
    app: Flask
    client: FlaskClient
    tokens: dict[str, str]
    advanced: list[str] = field(default_factory=list)

    def call(self, who: str, method: str, path: str, body: Any = None, *,
             raw: bytes | None = None, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> Any:
        sent = {"Authorization": f"Bearer {self.tokens[who]}", **(headers or {})}
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        return self.client.open(path, method=method, data=raw, headers=sent,
                                content_type=content_type if raw is not None else None)


class CountingRedis(fakeredis.FakeRedis):
    """fakeredis that counts the full records a request reads: runs (`pystol:xrun:<id>`)
    and documents (`pystol:experiment:<name>`)."""

    records_read = 0

    @staticmethod
    def _record(key: Any) -> bool:
        text = key.decode() if isinstance(key, bytes) else str(key)
        return (text.startswith("pystol:xrun:") and text.count(":") == 2) \
            or text.startswith("pystol:experiment:")

    def get(self, name: Any) -> Any:
        self.records_read += self._record(name)
        return super().get(name)

    def mget(self, keys: Any, *args: Any) -> Any:
        self.records_read += sum(self._record(key) for key in [*keys, *args]) \
            if isinstance(keys, list) else self._record(keys) + sum(map(self._record, args))
        return super().mget(keys, *args)


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def world(redis_client: fakeredis.FakeRedis) -> Iterator[World]:
    cluster = FakeCluster()
    for namespace in ("shop", "payments"):
        cluster.add_pod(namespace, "web-1", labels={"app": "web"})
    advanced: list[str] = []
    app = create_app(Settings(api_tokens=[ADMIN_TOKEN], kubernetes_auth=False),
                     redis_client=redis_client, queue=RecordingQueue(),
                     registry=default_registry(), cluster_factory=lambda: cluster,  # type: ignore[arg-type,return-value]
                     send_advance=advanced.append)
    store = services_of(app).tokens
    tokens = {"admin": ADMIN_TOKEN}
    for role in (Role.OPERATOR, Role.VIEWER):
        _, tokens[role.value] = store.create(f"{role.value}-shop", role, ["shop"], None,
                                             created_by="test")
    _, tokens["payments-operator"] = store.create("operator-payments", Role.OPERATOR,
                                                  ["payments"], None, created_by="test")
    with app.test_client() as client:
        yield World(app, client, tokens, advanced)


def pod_kill(namespace: str) -> dict[str, Any]:
    return {"action": "pod-kill", "dry_run": True,
            "target": {"namespaces": [namespace], "label_selector": "app=web"}}


def experiment(name: str = "web-survives", namespace: str = "shop",
               probe_namespace: str | None = None) -> dict[str, Any]:
    probes = [] if probe_namespace is None else [{
        "type": "http", "name": "web-ok", "mode": "edge",
        "service": {"namespace": probe_namespace, "name": "web", "port": 80,
                    "path": "/healthz"}}]
    return {"name": name, "title": "web survives losing a pod",
            "hypothesis": {"title": "web answers", "probes": probes},
            "method": [{"type": "action", "name": "kill-one", "job": pod_kill(namespace)}]}


def stored_names(world: World) -> list[str]:
    answer = world.call("admin", "GET", "/api/v1/experiments")
    assert answer.status_code == 200, answer.json
    return [item["name"] for item in answer.json["items"]]


def timed(function: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = function()
    return result, time.monotonic() - start


# -- hostile documents ---------------------------------------------------------------------


def test_operator_cannot_store_a_step_in_another_tenants_namespace(world: World) -> None:
    answer = world.call("operator", "POST", "/api/v1/experiments",
                        experiment(namespace="payments"))
    assert answer.status_code == 403, answer.json
    locs = [error["loc"] for error in answer.json.get("errors") or []]
    assert any(loc.startswith("method[0].job.target.namespaces") for loc in locs), answer.json
    assert stored_names(world) == []


def test_operator_cannot_store_a_probe_in_another_tenants_namespace(world: World) -> None:
    answer = world.call("operator", "POST", "/api/v1/experiments",
                        experiment(probe_namespace="payments"))
    assert answer.status_code == 403, answer.json
    locs = [error["loc"] for error in answer.json.get("errors") or []]
    # The probe the user wrote, not the steady-state job the hypothesis runs as.
    assert any(loc.startswith("hypothesis.probes[0]") for loc in locs), (locs, answer.json)
    assert stored_names(world) == []


def test_ten_thousand_steps_are_refused_fast_with_a_path(world: World) -> None:
    steps = [{"type": "wait", "name": f"w{index}", "duration": "1s"} for index in range(10_000)]
    document = {"name": "many", "method": steps}
    answer, seconds = timed(lambda: world.call("admin", "POST", "/api/v1/experiments",
                                               document))
    assert answer.status_code in (413, 422), answer.json
    assert seconds < FAST
    assert stored_names(world) == []


def test_a_thousand_deep_groups_are_refused_without_recursion(world: World) -> None:
    # Written as text: json.dumps itself would recurse too deep.
    raw = ('{"name": "deep", "method": [' + '{"type": "serial", "name": "g", "steps": [' * 1000
           + '{"type": "wait", "name": "w", "duration": "1s"}' + "]}" * 1000 + "]}").encode()
    answer, seconds = timed(lambda: world.call("admin", "POST", "/api/v1/experiments",
                                               raw=raw))
    assert answer.status_code == 422, answer.json
    assert seconds < FAST


def test_groups_seven_deep_are_refused_naming_the_group(world: World) -> None:
    step: dict[str, Any] = {"type": "wait", "name": "w", "duration": "1s"}
    for depth in range(7):
        step = {"type": "serial", "name": f"g{depth}", "steps": [step]}
    answer = world.call("admin", "POST", "/api/v1/experiments", {"name": "deep", "method": [step]})
    assert answer.status_code == 422, answer.json
    assert answer.json["errors"][0]["loc"].startswith("method[0]")


def test_a_megabyte_body_is_413(world: World) -> None:
    document = {"name": "big", "description": "x" * (1024 * 1024)}
    answer, seconds = timed(lambda: world.call("admin", "POST", "/api/v1/experiments",
                                               document))
    assert answer.status_code == 413, answer.json
    assert seconds < FAST


def test_a_document_over_64_kib_but_under_128_kib_is_read(world: World) -> None:
    """The experiment routes have their own cap (128 KiB), above the API's 64 KiB."""
    document = experiment()
    document["tags"] = ["t" * 60] * 20
    document["method"] += [{"type": "wait", "name": f"w{index}", "duration": "1s"}
                           for index in range(90)]
    document["description"] = "d" * 3999
    raw = json.dumps(document, indent=60).encode()
    assert 64 * 1024 < len(raw) < 128 * 1024
    answer = world.call("admin", "POST", "/api/v1/experiments", raw=raw)
    assert answer.status_code != 413, answer.json


BILLION_LAUGHS = "\n".join(
    ["name: lol", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]"
       for i in range(1, 9)])


def test_yaml_billion_laughs_is_refused_fast(world: World) -> None:
    answer, seconds = timed(lambda: world.call(
        "admin", "POST", "/api/v1/experiments", raw=BILLION_LAUGHS.encode(),
        content_type="application/yaml"))
    assert answer.status_code in (413, 422), answer.json
    assert "alias" in answer.json["detail"]
    assert seconds < FAST


def test_yaml_that_json_cannot_hold_is_422_with_its_path(world: World) -> None:
    answer = world.call("admin", "POST", "/api/v1/experiments",
                        raw=b"name: x\ntitle: 2020-01-01\n", content_type="application/yaml")
    assert answer.status_code == 422, answer.json
    assert answer.json["errors"][0]["loc"] == "title"


def test_a_body_that_is_neither_json_nor_yaml_is_415(world: World) -> None:
    answer = world.call("admin", "POST", "/api/v1/experiments", raw=b"name=x",
                        content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 415, answer.json


def test_a_path_name_that_differs_from_the_documents_is_422(world: World) -> None:
    answer = world.call("admin", "PUT", "/api/v1/experiments/other", experiment())
    assert answer.status_code == 422, answer.json
    assert answer.json["errors"][0]["loc"] == "name"


def test_a_resume_step_with_odd_characters_is_422(world: World) -> None:
    answer = world.call("admin", "POST", "/api/v1/experiment-runs/x-20260101T000000-abcdef/resume",
                        {"step": "method[0]; rm -rf /"})
    assert answer.status_code == 422, answer.json


# -- documents: store, read, replace, delete -------------------------------------------------


def test_yaml_document_is_stored_and_read_back_with_its_version(world: World) -> None:
    text = ("name: web-survives\n"
            "method:\n"
            "  - type: action\n"
            "    name: kill-one\n"
            "    job:\n"
            "      action: pod-kill\n"
            "      dry_run: true\n"
            "      target: {namespaces: [shop], label_selector: app=web}\n")
    created = world.call("operator", "POST", "/api/v1/experiments", raw=text.encode(),
                         content_type="application/yaml")
    assert created.status_code == 201, created.json
    assert created.headers["Location"] == "/api/v1/experiments/web-survives"
    read = world.call("viewer", "GET", "/api/v1/experiments/web-survives")
    assert read.status_code == 200, read.json
    assert read.json["spec"]["method"][0]["job"]["target"]["namespaces"] == ["shop"]
    assert read.headers["ETag"] == created.headers["ETag"]


def test_put_with_a_stale_if_match_is_412_and_changes_nothing(world: World) -> None:
    created = world.call("admin", "POST", "/api/v1/experiments", experiment())
    assert created.status_code == 201, created.json
    etag = created.headers["ETag"]
    changed = experiment()
    changed["title"] = "second"
    first = world.call("admin", "PUT", "/api/v1/experiments/web-survives", changed,
                       headers={"If-Match": etag})
    assert first.status_code == 200, first.json
    stale = experiment()
    stale["title"] = "third"
    second = world.call("admin", "PUT", "/api/v1/experiments/web-survives", stale,
                        headers={"If-Match": etag})
    assert second.status_code == 412, second.json
    read = world.call("admin", "GET", "/api/v1/experiments/web-survives")
    assert read.json["spec"]["title"] == "second"


def test_another_tenants_experiment_is_hidden(world: World) -> None:
    created = world.call("admin", "POST", "/api/v1/experiments",
                         experiment(name="pay", namespace="payments"))
    assert created.status_code == 201, created.json
    assert world.call("operator", "GET", "/api/v1/experiments/pay").status_code == 404
    listed = world.call("operator", "GET", "/api/v1/experiments")
    assert [item["name"] for item in listed.json["items"]] == []
    assert world.call("operator", "DELETE", "/api/v1/experiments/pay").status_code in (403, 404)
    assert stored_names(world) == ["pay"]


def test_viewer_cannot_store(world: World) -> None:
    answer = world.call("viewer", "POST", "/api/v1/experiments", experiment())
    assert answer.status_code == 403, answer.json
    assert stored_names(world) == []


def test_delete_removes_the_document(world: World) -> None:
    assert world.call("operator", "POST", "/api/v1/experiments",
                      experiment()).status_code == 201
    assert world.call("operator", "DELETE",
                      "/api/v1/experiments/web-survives").status_code == 204
    assert world.call("operator", "GET",
                      "/api/v1/experiments/web-survives").status_code == 404


# -- runs ----------------------------------------------------------------------------------


def start_run(world: World, who: str = "admin", name: str = "web-survives",
              namespace: str = "shop") -> Any:
    created = world.call("admin", "POST", "/api/v1/experiments",
                         experiment(name=name, namespace=namespace))
    assert created.status_code == 201, created.json
    return world.call(who, "POST", f"/api/v1/experiments/{name}/run", {"dry_run": True})


def test_run_answers_202_with_the_runs_location_and_advances_it(world: World) -> None:
    answer = start_run(world, "operator")
    assert answer.status_code == 202, answer.json
    run_id = answer.json["id"]
    assert answer.headers["Location"] == f"/api/v1/experiment-runs/{run_id}"
    assert world.advanced == [run_id]
    read = world.call("viewer", "GET", f"/api/v1/experiment-runs/{run_id}")
    assert read.status_code == 200, read.json
    assert read.json["experiment"] == "web-survives"
    trend = world.call("viewer", "GET", "/api/v1/experiments/web-survives/runs")
    assert [item["id"] for item in trend.json["items"]] == [run_id]
    timeline = world.call("viewer", "GET", f"/api/v1/experiment-runs/{run_id}/events")
    assert timeline.status_code == 200 and isinstance(timeline.json["items"], list)


def test_viewer_cannot_run(world: World) -> None:
    answer = start_run(world, "viewer")
    assert answer.status_code == 403, answer.json
    assert world.advanced == []


def test_another_tenants_run_is_404_for_read_cancel_and_journal(world: World) -> None:
    answer = start_run(world, "admin", name="pay", namespace="payments")
    assert answer.status_code == 202, answer.json
    run_id = answer.json["id"]
    for method, path, body in (
            ("GET", f"/api/v1/experiment-runs/{run_id}", None),
            ("GET", f"/api/v1/experiment-runs/{run_id}/journal", None),
            ("GET", f"/api/v1/experiment-runs/{run_id}/events", None),
            ("POST", f"/api/v1/experiment-runs/{run_id}/cancel", {})):
        refused = world.call("operator", method, path, body)
        assert refused.status_code == 404, (path, refused.json)
    listed = world.call("operator", "GET", "/api/v1/experiment-runs")
    assert listed.json["items"] == []


def test_unknown_run_is_404(world: World) -> None:
    answer = world.call("admin", "GET", "/api/v1/experiment-runs/x-20260101T000000-abcdef")
    assert answer.status_code == 404, answer.json


def test_cancel_of_an_own_run_is_202_and_a_second_cancel_after_the_end_is_409(
        world: World) -> None:
    run_id = start_run(world, "operator").json["id"]
    cancelled = world.call("operator", "POST", f"/api/v1/experiment-runs/{run_id}/cancel",
                           {"reason": "enough"})
    assert cancelled.status_code == 202, cancelled.json
    assert world.call("viewer", "POST", f"/api/v1/experiment-runs/{run_id}/cancel",
                      {}).status_code == 403


def test_resume_of_a_step_that_is_not_suspended_is_409(world: World) -> None:
    run_id = start_run(world, "operator").json["id"]
    answer = world.call("operator", "POST", f"/api/v1/experiment-runs/{run_id}/resume",
                        {"step": "method[0]"})
    assert answer.status_code == 409, answer.json


def test_journal_of_a_run_has_the_chaos_toolkit_keys(world: World) -> None:
    run_id = start_run(world, "operator").json["id"]
    answer = world.call("viewer", "GET", f"/api/v1/experiment-runs/{run_id}/journal")
    assert answer.status_code == 200, answer.json
    for key in ("chaoslib-version", "experiment", "status", "deviated", "steady_states",
                "run", "rollbacks"):
        assert key in answer.json, key
    pystol = [item for item in answer.json["experiment"].get("extensions") or []
              if item.get("name") == "pystol"]
    assert pystol and pystol[0]["id"] == run_id


def test_journal_of_a_job_and_of_another_tenants_job(world: World) -> None:
    submitted = world.call("admin", "POST", "/api/v1/jobs", pod_kill("payments"))
    assert submitted.status_code == 202, submitted.json
    job_id = submitted.json["id"]
    own = world.call("admin", "GET", f"/api/v1/jobs/{job_id}/journal")
    assert own.status_code == 200, own.json
    assert "chaoslib-version" in own.json
    assert world.call("operator", "GET", f"/api/v1/jobs/{job_id}/journal").status_code == 404


def test_chaos_toolkit_body_is_converted_and_its_refusals_name_the_ctk_path(
        world: World) -> None:
    document = {"title": "web survives", "description": "kill a pod", "method": [
        {"type": "action", "name": "terminate-one",
         "provider": {"type": "python", "module": "chaosk8s.pod.actions",
                      "func": "terminate_pods",
                      "arguments": {"label_selector": "app=web", "ns": "shop", "qty": 1}}}]}
    created = world.call("operator", "POST", "/api/v1/experiments", document)
    assert created.status_code == 201, created.json
    assert created.json["spec"]["source_format"] == "chaostoolkit"
    refused = world.call("operator", "POST", "/api/v1/experiments", {
        "title": "t", "description": "d", "method": [
            {"type": "action", "name": "rm", "provider": {"type": "process", "path": "rm"}}]})
    assert refused.status_code == 422, refused.json
    assert refused.json["errors"][0]["loc"].startswith("method[0]")


def ended(client: Any, run_id: str, experiment: str, score: float | None,
          at: float) -> None:
    """A run that ended at `at`, as the store's `write_run` indexes it."""
    client.zadd("pystol:xruns:ended",
                {json.dumps([run_id, experiment, ["shop"], "someone", score]): at})


def test_metrics_show_each_experiments_latest_score_only_with_the_metrics_token() -> None:
    from pystol_api.http.metrics_endpoint import render

    client = fakeredis.FakeRedis()
    for at, (run_id, name, score) in enumerate([("x-1", "web", 40.0), ("x-2", "web", 87.5),
                                                ("x-3", "db", None)]):
        ended(client, run_id, name, score, at)
    text = render(client, "celery").decode()
    assert 'pystol_experiment_resilience_score{experiment="web"} 87.5' in text
    assert 'experiment="db"' not in text  # no run with a score yet
    public = render(client, "celery", named=False).decode()
    assert "pystol_experiment_resilience_score{" not in public


def test_the_score_gauge_keeps_recently_run_experiments_not_the_first_names() -> None:
    """Review L4: the gauge kept the alphabetically first 100 experiments, so a tenant
    creating `0-a`, `0-b`, ... pushed every other experiment's series out."""
    from pystol_api.http.metrics_endpoint import MAX_EXPERIMENT_LABELS, render

    client = fakeredis.FakeRedis()
    for index in range(MAX_EXPERIMENT_LABELS):
        ended(client, f"x-squat-{index}", f"0-{index:03d}", 100.0, 1000 + index)
    ended(client, "x-web", "web", 87.5, 5000)  # ran after them
    text = render(client, "celery").decode()
    assert 'pystol_experiment_resilience_score{experiment="web"} 87.5' in text
    assert text.count("pystol_experiment_resilience_score{") == MAX_EXPERIMENT_LABELS
    assert 'experiment="0-000"' not in text  # the oldest one left to make room


def test_put_of_a_chaos_toolkit_document_takes_the_urls_name(world: World) -> None:
    document = {"title": "Web Survives!", "description": "kill a pod", "method": [
        {"type": "action", "name": "terminate-one",
         "provider": {"type": "python", "module": "chaosk8s.pod.actions",
                      "func": "terminate_pods",
                      "arguments": {"label_selector": "app=web", "ns": "shop", "qty": 1}}}]}
    answer = world.call("operator", "PUT", "/api/v1/experiments/ctk-web", document)
    assert answer.status_code == 201, answer.json
    assert answer.json["name"] == "ctk-web"


# -- hostile documents of the security review (H1, L1, L2) -------------------------------------


def long_string_aliases(nested: bool) -> bytes:
    """Review H1: 122 KB of YAML whose aliases repeat a 62,000-character string; it
    expanded to 930 MB (or 5.6 GB nested) the moment anything serialised it."""
    head = "name: e1\ntitle: &s " + "x" * 62_000 + "\nmethod: []\n"
    if nested:
        return (head + "l: &l [" + ", ".join(["*s"] * 15_000) + "]\ntags: ["
                + ", ".join(["*l"] * 6) + "]\n").encode()
    return (head + "tags: [" + ", ".join(["*s"] * 15_000) + "]\n").encode()


@pytest.mark.parametrize("nested", [False, True])
def test_yaml_aliases_of_a_long_string_are_refused_before_they_expand(
        world: World, nested: bool) -> None:
    import tracemalloc

    body = long_string_aliases(nested)
    tracemalloc.start()
    try:
        answer, seconds = timed(lambda: world.call(
            "viewer", "POST", "/api/v1/experiments", raw=body,
            content_type="application/yaml"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer.status_code in (413, 422), answer.json
    assert "bytes as JSON" in answer.json["detail"]
    assert peak < 50 * 1024 * 1024
    assert seconds < FAST * 3  # tracemalloc slows every allocation down
    assert stored_names(world) == []


@pytest.mark.parametrize("body, content_type, loc", [
    (b"name: e1\ntitle: " + b"1" * 5000 + b"\nmethod: []\n", "application/yaml", ""),
    (b"name: e1\nweight: 0x" + b"f" * 5000 + b"\nmethod: []\n", "application/yaml",
     "weight"),
    (b'{"name": "e1", "title": ' + b"1" * 5000 + b', "method": []}', "application/json",
     ""),
])
def test_numbers_json_cannot_hold_are_422_not_500(world: World, body: bytes,
                                                   content_type: str, loc: str) -> None:
    """Review L1: a 5,000-digit decimal or hex integer in YAML was a 500."""
    answer = world.call("operator", "POST", "/api/v1/experiments", raw=body,
                        content_type=content_type)
    assert answer.status_code in (400, 422), answer.json
    if loc:
        assert answer.json["errors"][0]["loc"] == loc


def test_a_non_string_env_var_type_in_a_chaos_toolkit_document_is_422(world: World) -> None:
    document = {"title": "t", "description": "d",
                "configuration": {"x": {"type": "env", "key": "HOME",
                                        "env_var_type": ["str"]}},
                "method": [{"type": "action", "name": "k", "provider": {
                    "type": "python", "module": "chaosk8s.pod.actions",
                    "func": "terminate_pods",
                    "arguments": {"label_selector": "app=web", "ns": "shop"}}}]}
    answer = world.call("operator", "POST", "/api/v1/experiments?format=chaostoolkit",
                        document)
    assert answer.status_code == 422, answer.json
    assert "configuration.x.env_var_type" in json.dumps(answer.json)


@pytest.mark.parametrize("body, content_type", [
    (b"name: e1\nname: e2\nmethod: []\n", "application/yaml"),
    (b'{"name": "e1", "name": "e2", "method": []}', "application/json"),
])
def test_a_key_given_twice_is_422_naming_the_key(world: World, body: bytes,
                                                 content_type: str) -> None:
    """Review L2: the last of two equal keys silently won (a reviewed file could hold a
    first `namespaces` that is not the one that runs)."""
    answer = world.call("admin", "POST", "/api/v1/experiments", raw=body,
                        content_type=content_type)
    assert answer.status_code == 422, answer.json
    assert answer.json["errors"][0]["loc"] == "name"
    assert "twice" in answer.json["detail"]
    assert stored_names(world) == []


# -- who may own a name (security review L3) ---------------------------------------------------


def test_an_operator_cannot_store_an_experiment_that_touches_no_namespace(
        world: World) -> None:
    """Review L3: `operator-shop` stored `squat` (a wait only), which then only an admin
    could see, replace or delete."""
    squat = {"name": "squat", "method": [{"type": "wait", "name": "w", "duration": 1}]}
    answer = world.call("operator", "POST", "/api/v1/experiments", squat)
    assert answer.status_code == 403, answer.json
    assert "touches no namespace" in answer.json["detail"]
    assert stored_names(world) == []
    # A cluster-wide writer may (and sees it).
    assert world.call("admin", "POST", "/api/v1/experiments", squat).status_code == 201


def test_writing_over_a_hidden_name_answers_as_reading_it_does(world: World) -> None:
    """Review L3: POST of payments' `secret-exp` by operator-shop answered 403 "may not
    replace", confirming a name GET hides with 404."""
    assert world.call("payments-operator", "POST", "/api/v1/experiments",
                      experiment("secret-exp", "payments")).status_code == 201
    read = world.call("operator", "GET", "/api/v1/experiments/secret-exp")
    for method, path in (("POST", "/api/v1/experiments"),
                         ("PUT", "/api/v1/experiments/secret-exp")):
        answer = world.call("operator", method, path, experiment("secret-exp", "shop"))
        assert answer.status_code == read.status_code == 404, answer.json
        assert answer.json["detail"] == read.json["detail"]


# -- listing reads only what the caller may see (security review M1) ---------------------------


def clone_runs(redis_client: Any, run_id: str, count: int) -> None:
    """`count` more stored runs like `run_id` (through the store, so indexed as runs are)."""
    from pystol_worker.experiments.store import ExperimentStore

    store = ExperimentStore(redis_client)
    run = store.get_run(run_id)
    for index in range(count):
        store.create_run(run.model_copy(update={"id": f"x-20261206T120000-{index:08x}"}))


@pytest.mark.parametrize("redis_client", [CountingRedis()], ids=["counting"])
def test_listing_runs_reads_only_the_runs_the_caller_may_see(
        world: World, redis_client: CountingRedis) -> None:
    """Review M1: a viewer of `shop` listing runs on an installation whose runs are all in
    `payments` parsed every stored run (40 s, 590 MB for 3,000 runs) to return none."""
    answer = start_run(world, "payments-operator", name="ledger", namespace="payments")
    assert answer.status_code == 202, answer.json
    clone_runs(redis_client, answer.json["id"], 700)

    redis_client.records_read = 0
    page = world.call("viewer", "GET", "/api/v1/experiment-runs?limit=100")
    assert page.status_code == 200 and page.json["items"] == []
    assert redis_client.records_read == 0

    # The tenant's own listing: at most 100 per request, then a cursor.
    redis_client.records_read = 0
    page = world.call("payments-operator", "GET", "/api/v1/experiment-runs?limit=100")
    assert len(page.json["items"]) == 100 and page.json["next_cursor"]
    assert redis_client.records_read <= 100
    cursor = page.json["next_cursor"]
    following = world.call("payments-operator", "GET",
                           f"/api/v1/experiment-runs?limit=100&cursor={cursor}")
    assert not {item["id"] for item in following.json["items"]} & \
        {item["id"] for item in page.json["items"]}
    assert world.call("payments-operator", "GET",
                      "/api/v1/experiment-runs?limit=101").status_code == 422

    # One experiment's trend asked by someone who may read none of it: bounded too.
    redis_client.records_read = 0
    trend = world.call("viewer", "GET", "/api/v1/experiment-runs?experiment=ledger")
    assert trend.json["items"] == [] and redis_client.records_read == 0


@pytest.mark.parametrize("redis_client", [CountingRedis()], ids=["counting"])
def test_listing_documents_reads_only_the_documents_the_caller_may_see(
        world: World, redis_client: CountingRedis) -> None:
    from pystol_worker.experiments.store import ExperimentStore

    created = world.call("admin", "POST", "/api/v1/experiments",
                         experiment(name="pay-000", namespace="payments"))
    assert created.status_code == 201
    store = ExperimentStore(redis_client)
    stored = json.loads(store.get_document("pay-000") or b"{}")
    for index in range(1, 150):  # more of them, stored as the service stores them
        name = f"pay-{index:03d}"
        store.put_document(name, json.dumps({**stored, "name": name,
                                             "spec": {**stored["spec"], "name": name}}),
                           ["payments"], [], None, check=False)
    assert world.call("admin", "POST", "/api/v1/experiments",
                      experiment(name="zz-shop", namespace="shop")).status_code == 201
    redis_client.records_read = 0
    page = world.call("viewer", "GET", "/api/v1/experiments")
    assert [item["name"] for item in page.json["items"]] == ["zz-shop"]
    assert redis_client.records_read == 1
    page = world.call("admin", "GET", "/api/v1/experiments?limit=100")
    assert len(page.json["items"]) == 100 and page.json["next_cursor"] == "pay-099"
