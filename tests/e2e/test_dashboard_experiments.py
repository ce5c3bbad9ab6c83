"""The dashboard's experiment pages in a real headless Chromium, under the API's CSP.

The API application (fakeredis, no worker: a run stays queued) serves the dashboard.
First the pictures: the page imports `experiments.js` and draws a run with a serial chain
and a parallel group, and its probe results; the test reads the SVG the way a person looks
at it (steps left to right, parallel branches stacked between a fork and a join, each
coloured by its status, one dot per probe result, red when it failed, one verdict mark per
run in the trend). Then the pages: an admin sees the stored experiment, runs it and lands
on its run page; a viewer of the same namespace sees it without Run. Any CSP violation
fails it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import playwright.sync_api as playwright_sync
import pytest

from pystol_api.http.app import create_app, services_of
from pystol_worker.core.access import Role
from pystol_worker.core.settings import Settings
from tests.support.served_app import serving

pytestmark = pytest.mark.e2e
expect = playwright_sync.expect
CHROMIUM = Path("/usr/bin/chromium")

RUN: dict[str, Any] = {
    "id": "x-20261206T120000-1a2b3c", "experiment": "web-survives", "status": "running",
    "verdict": None, "score": None, "started_at": "2026-12-06T12:00:00Z",
    "spec": {"name": "web-survives", "method": [
        {"type": "action", "name": "kill-one", "job": {}},
        {"type": "parallel", "name": "both", "steps": [
            {"type": "action", "name": "kill-web", "job": {}},
            {"type": "action", "name": "kill-cart", "job": {}}]},
        {"type": "wait", "name": "settle", "duration": 5}],
        "rollbacks": [{"type": "release", "name": "undo", "step": "kill-one"}]},
    "steps": [
        {"path": "before", "type": "probe", "name": "before", "status": "succeeded",
         "probes": [{"name": "web-ok", "ok": True, "phase": "before",
                     "ended_at": "2026-12-06T12:00:01Z"}]},
        {"path": "method[0]", "type": "action", "name": "kill-one", "status": "succeeded",
         "job_id": "j-1", "probes": [{"name": "web-ok", "ok": False, "phase": "during",
                                      "ended_at": "2026-12-06T12:00:20Z"}]},
        {"path": "method[1].steps[0]", "type": "action", "name": "kill-web",
         "status": "running", "job_id": "j-2",
         "probes": [{"name": "cart-ok", "ok": True, "phase": "during",
                     "ended_at": "2026-12-06T12:00:30Z"}]},
        {"path": "method[1].steps[1]", "type": "action", "name": "kill-cart",
         "status": "failed", "job_id": "j-3", "probes": []}],
    "rollbacks": [{"path": "rollbacks[0]", "type": "release", "name": "undo",
                   "status": "pending", "probes": []}],
}
EXPERIMENT = {"name": "web-survives", "title": "web survives losing a pod", "method": [
    {"type": "action", "name": "kill-one", "job": {
        "action": "pod-kill", "dry_run": True,
        "target": {"namespaces": ["shop"], "label_selector": "app=web"}}},
    {"type": "parallel", "name": "both", "steps": [
        {"type": "wait", "name": "a", "duration": "1s"},
        {"type": "wait", "name": "b", "duration": "2s"}]}]}
RUNS = [{"id": "x-3", "status": "completed", "verdict": "passed", "score": 100.0},
        {"id": "x-2", "status": "completed", "verdict": "deviated", "score": 40.0},
        {"id": "x-1", "status": "skipped", "verdict": "skipped", "score": None}]


ADMIN_TOKEN = "dashboard-experiments-token"
TOKENS: dict[str, str] = {}
#: Rehearsals the API sent to "the workers" (no worker here: the test plays its part).
REHEARSALS: list[str] = []
APPS: list[Any] = []


@pytest.fixture(scope="module")
def dashboard_url() -> Iterator[str]:
    os.environ.setdefault("PYSTOL_SIGNING_KEY", "experiments-dashboard-key-0123")

    class Queue:
        def send(self, job_id: str) -> None:
            pass

    app = create_app(Settings(api_tokens=[ADMIN_TOKEN], kubernetes_auth=False),
                     redis_client=fakeredis.FakeRedis(), queue=Queue(),
                     send_advance=lambda run_id: None, send_rehearsal=REHEARSALS.append)
    APPS.append(app)
    _, TOKENS["viewer"] = services_of(app).tokens.create("viewer-shop", Role.VIEWER, ["shop"],
                                                         None, created_by="test")
    with app.test_client() as client:
        stored = client.post("/api/v1/experiments", json=EXPERIMENT,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert stored.status_code == 201, stored.json
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def page(dashboard_url: str) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is not installed: run the tests through "
                    "`bash scripts/dev.sh test`, which installs it", pytrace=False)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.goto(dashboard_url + "/")
        yield page
        browser.close()
        assert not errors, errors


def draw(page: Any, script: str, data: Any) -> Any:
    """Run `script` in the page with `m` (the module), `box` (a fresh element) and `data`.
    (A function Playwright calls, not a string the page evaluates: the CSP forbids eval.)"""
    return page.evaluate("""async (data) => {
        const m = await import("/dashboard/experiments.js");
        document.getElementById("drawn")?.remove();
        const box = document.createElement("div");
        box.id = "drawn";
        document.body.append(box);
        """ + script + """
    }""", data)


def test_step_graph_shows_order_parallel_branches_and_status(page: Any) -> None:
    steps = draw(page, """
        box.append(m.stepGraph(data));
        return [...box.querySelectorAll("g.step")].map((g) => {
            const r = g.querySelector("rect");
            return {path: g.dataset.path, cls: g.getAttribute("class"),
                    x: +r.getAttribute("x"), y: +r.getAttribute("y")};
        });""", RUN)
    by_path = {step["path"]: step for step in steps}
    assert list(by_path) == ["before", "method[0]", "method[1].steps[0]",
                             "method[1].steps[1]", "method[2]", "rollbacks[0]"]
    # Serial: left to right.
    assert by_path["before"]["x"] < by_path["method[0]"]["x"] < \
        by_path["method[1].steps[0]"]["x"] < by_path["method[2]"]["x"]
    # Parallel: the branches side by side in time (same x), stacked (different y).
    web, cart = by_path["method[1].steps[0]"], by_path["method[1].steps[1]"]
    assert web["x"] == cart["x"] and web["y"] != cart["y"]
    # Rollbacks below the method.
    assert by_path["rollbacks[0]"]["y"] > max(web["y"], cart["y"])
    assert "succeeded" in by_path["method[0]"]["cls"]
    assert "running" in web["cls"] and "failed" in cart["cls"]
    assert "pending" in by_path["method[2]"]["cls"]
    forks = draw(page, "box.append(m.stepGraph(data)); return box.querySelectorAll("
                       "'path.fork').length + ',' + box.querySelectorAll('path.join').length",
                 RUN)
    assert forks == "2,2"


def test_probe_results_are_dots_on_one_time_axis(page: Any) -> None:
    dots = draw(page, """
        box.append(m.probeTimeline(data));
        return [...box.querySelectorAll("circle.probe-dot")].map((c) => ({
            cls: c.getAttribute("class"), x: +c.getAttribute("cx"), y: +c.getAttribute("cy")}));
        """, RUN)
    assert len(dots) == 3
    assert [("failed" in dot["cls"]) for dot in dots] == [False, True, False]
    xs = [dot["x"] for dot in dots]
    assert xs == sorted(xs)  # later results further right
    assert dots[0]["y"] == dots[1]["y"] != dots[2]["y"]  # one lane per probe


def test_recovery_bars_are_as_long_as_each_workload_took(page: Any) -> None:
    run = {**RUN, "recovery": [
        {"workload": {"kind": "Deployment", "namespace": "shop", "name": "web"},
         "desired_replicas": 3, "first_injection_at": "2026-12-06T12:00:02Z",
         "recovered": True, "recovery_seconds": 6.0, "ready_replicas": 3},
        {"workload": {"kind": "Deployment", "namespace": "shop", "name": "slow"},
         "desired_replicas": 3, "first_injection_at": "2026-12-06T12:00:02Z",
         "recovered": True, "recovery_seconds": 15.0, "ready_replicas": 3},
        {"workload": {"kind": "StatefulSet", "namespace": "shop", "name": "db"},
         "desired_replicas": 1, "first_injection_at": "2026-12-06T12:00:02Z",
         "recovered": False, "ready_replicas": 0}]}
    bars = draw(page, """
        box.append(m.recoveryBars(data));
        return [...box.querySelectorAll("rect.recovery-bar")].map((r) => ({
            cls: r.getAttribute("class"), w: +r.getAttribute("width"),
            title: r.querySelector("title").textContent}));
        """, run)
    assert [("failed" in bar["cls"]) for bar in bars] == [False, False, True]
    assert round(bars[1]["w"] / bars[0]["w"], 2) == 2.5  # 15 s is 2.5 times 6 s
    assert bars[2]["w"] >= bars[1]["w"]  # not recovered: to the end of the scale
    assert bars[2]["title"].endswith("not recovered (0/1 ready)")


def test_trend_marks_each_runs_verdict_and_draws_the_scores(page: Any) -> None:
    marks = draw(page, """
        box.append(m.trendChart(data));
        return {marks: [...box.querySelectorAll("rect.mark")].map((r) => r.getAttribute("class")),
                dots: box.querySelectorAll("circle.trend-dot").length,
                line: !!box.querySelector("path.trend-line")};""", RUNS)
    # Oldest first.
    assert marks["marks"] == ["mark skipped", "mark deviated", "mark passed"]
    assert marks["dots"] == 2 and marks["line"]


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(url + "/#/experiments")
    page.evaluate("() => sessionStorage.clear()")
    page.reload()
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_admin_runs_the_experiment_and_lands_on_its_run_page(page: Any,
                                                             dashboard_url: str) -> None:
    sign_in(page, dashboard_url, ADMIN_TOKEN)
    row = page.locator('#experiments-table tr[data-name="web-survives"]')
    expect(row).to_contain_text("never run")
    expect(row).to_contain_text("shop")
    row.get_by_role("button", name="Run").click()
    page.locator("#confirm-ok").click()
    expect(page).to_have_url(re.compile(r"#/experiment-run/x-"))
    expect(page.locator("#run-header")).to_contain_text("queued")
    expect(page.locator("#step-graph g.step")).to_have_count(3)
    expect(page.locator('#step-graph g.step[data-path="method[1].steps[1]"]')).to_have_class(
        re.compile(r"\bpending\b"))
    expect(page.locator("#download-journal")).to_be_visible()


def test_a_viewer_sees_the_experiment_but_no_run_button(page: Any,
                                                        dashboard_url: str) -> None:
    sign_in(page, dashboard_url, TOKENS["viewer"])
    row = page.locator('#experiments-table tr[data-name="web-survives"]')
    expect(row).to_be_visible()
    expect(row.get_by_role("button", name="Run")).to_have_count(0)
    expect(row.get_by_role("button", name="Rehearse")).to_have_count(0)


HOSTILE = '<img src=x onerror="document.body.dataset.owned=1">'


def complete_rehearsal(run_id: str) -> None:
    """What the worker's `pystol.rehearse` stores when it is done (the report of
    `pystol rehearse -o json`), with a server string that is HTML on purpose."""
    from pystol_worker.rehearsal.report import RehearsalReport
    from pystol_worker.rehearsal.service import RehearsalService, RehearsalStatus

    services = services_of(APPS[0])
    rehearsals = RehearsalService(services.redis, services.settings,
                                  check=lambda spec, identity: None,  # type: ignore[arg-type,return-value]
                                  send=lambda rid: None)
    run = rehearsals.get(run_id)
    run.status = RehearsalStatus.COMPLETED
    web = {"kind": "Deployment", "namespace": "shop", "name": "web"}
    run.report = RehearsalReport.model_validate({
        "experiment": "web-survives", "snapshot": "14 objects of namespaces shop",
        "speed": 10.0, "verdict": "deviated", "score": 40.0,
        "predicted": [{"path": "method[0]", "name": "kill-one", "action": "pod-kill",
                       "matched": 3, "chosen": 1, "targets": ["Pod shop/web-7d9-abc"]}],
        "blast_radius": [{"workload": web, "desired": 3, "min_ready": 1}],
        "budgets": [{"namespace": "shop", "name": "web-pdb", "expected_pods": 3,
                     "min_available": 2, "min_healthy": 1, "blocked_evictions": 0}],
        "recovery": [{"workload": web, "step": "method[0]", "recovered": True,
                      "measured_seconds": 1.5, "simulated_seconds": 15.0}],
        "not_rehearsed": [f"hypothesis.probes[0]: probe {HOSTILE}: reads Prometheus"]})
    rehearsals._save(run)


def test_an_operator_rehearses_and_reads_the_report(page: Any, dashboard_url: str) -> None:
    sign_in(page, dashboard_url, ADMIN_TOKEN)
    row = page.locator('#experiments-table tr[data-name="web-survives"]')
    before = len(REHEARSALS)
    row.get_by_role("button", name="Rehearse").click()
    expect(page).to_have_url(re.compile(r"#/rehearsal/r-"))
    expect(page.locator("#rehearsal-status")).to_have_text("queued")
    assert len(REHEARSALS) == before + 1  # sent to the workers, once
    run_id = page.url.rsplit("/", 1)[1]
    assert run_id == REHEARSALS[-1]
    complete_rehearsal(run_id)
    # The page polls: the report appears without a reload.
    expect(page.locator("#rehearsal-status")).to_have_text("completed", timeout=10000)
    expect(page.locator("#rehearsal-verdict")).to_contain_text("deviated")
    expect(page.locator("#rehearsal-verdict")).to_contain_text("40.00")
    expect(page.locator("#predicted-table")).to_contain_text("Pod shop/web-7d9-abc")
    blast = page.locator("#blast-table tbody tr")
    expect(blast).to_have_count(1)
    expect(blast.locator("td")).to_have_text(["Deployment shop/web", "3", "1", "2"])
    expect(page.locator("#budgets-table tbody tr")).to_contain_text("violated")
    expect(page.locator("#recovery-table tbody tr")).to_contain_text("15.0 s")
    # Server text is text: the hostile name is shown as written, never run as HTML.
    expect(page.locator("#not-rehearsed li")).to_contain_text(HOSTILE)
    expect(page.locator("#not-rehearsed img")).to_have_count(0)
    assert page.evaluate("() => document.body.dataset.owned") is None
