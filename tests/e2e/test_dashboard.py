"""The web dashboard in a real (headless Debian) Chromium against the whole stack:
redis-server, pystol-sim (demo scenario, 10x speed), a worker, beat and the API.

The tests run in order on one browser page, like a user's session: sign in, look at the
cluster, run a pod-kill and follow it, schedules, halt, validation errors, sign-out and a
wrong token; then other identities (issue 12): an operator token scoped to `shop`, a
viewer token, and a Kubernetes service-account token whose RBAC allows chaos in `shop`,
each seeing only `shop` and offered only what it may do. Screenshots for
docs/dashboard.md are written into docs/screenshots/.

The whole session runs under the API's Content-Security-Policy (issue 13): any violation
Chromium reports (inline script or style, a foreign source) fails it; the last test opens
the Swagger UI and the documentation index the same way.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import playwright.sync_api as playwright_sync
import pytest
import requests

from tests.conftest import ROOT
from tests.support.pystol_processes import Process, api, start_beat, worker
from tests.support.redis_server import RedisServer, free_port
from tests.support.sim_process import SimProcess

expect = playwright_sync.expect

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "dashboard-token"
SCREENSHOTS = ROOT / "docs" / "screenshots"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

if not CHROMIUM.exists():
    pytest.fail("Debian chromium is not installed: run the tests through "
                "`bash scripts/dev.sh test`, which installs it", pytrace=False)


@dataclass
class Stack:
    sim: SimProcess
    worker: Process
    beat: Process
    api: Process
    url: str

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.url + path, timeout=30,
                                headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)

    def pods(self) -> list[dict[str, Any]]:
        status, body = self.sim.request("GET", "/api/v1/pods")
        assert status == 200, body
        items: list[dict[str, Any]] = body["items"]
        return items


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("dashboard")
    (workdir / "redis").mkdir()
    with RedisServer.start(workdir / "redis") as redis_server, \
            SimProcess.start(workdir, speed=10.0) as sim:
        env = {"PYSTOL_REDIS_URL": redis_server.url, "PYSTOL_KUBECONFIG": str(sim.kubeconfig)}
        port = free_port()
        with worker(env, concurrency=2) as worker_process, api(env, port, TOKEN) as api_process:
            beat = start_beat(env)
            try:
                yield Stack(sim, worker_process, beat, api_process, f"http://127.0.0.1:{port}")
            finally:
                beat.stop()


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(viewport=LAPTOP)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # Chromium reports each CSP violation as a console error naming the policy.
        page.on("console", lambda message: errors.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()
        assert not errors, errors


# Records CSP violations in the page itself (injected by the browser, so the policy does
# not apply to it), for a test to read with `csp_violations(page)`.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective}: ${event.blockedURI}`);
});
"""


def csp_violations(page: Any) -> list[str]:
    found: list[str] = page.evaluate("window.__cspViolations || ['recorder missing']")
    return found


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def sign_in(page: Any, stack: Stack, token: str = TOKEN) -> None:
    page.goto(stack.url + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_and_cluster_topology(page: Any, stack: Stack) -> None:
    sign_in(page, stack)
    expect(page.get_by_role("link", name="Cluster")).to_have_attribute("aria-current", "page")
    expect(page.locator("section.node")).to_have_count(4)
    stack.sim.wait_for(lambda: all(any(c.get("type") == "Ready" and c.get("status") == "True"
                                       for c in (p.get("status") or {}).get("conditions") or ())
                                   for p in stack.pods()), timeout=30)
    count = len(stack.pods())
    expect(page.locator("#cluster-summary")).to_contain_text(f"{count} pods shown")
    expect(page.locator("#nodes span.pod")).to_have_count(count)
    # the token lives in sessionStorage only
    assert page.evaluate("sessionStorage.getItem('pystol.token')") == TOKEN
    assert page.evaluate("localStorage.length") == 0
    # filter by namespace, then by workload
    page.get_by_label("Namespace").select_option("shop")
    shop = [p for p in stack.pods() if p["metadata"]["namespace"] == "shop"]
    expect(page.locator("#nodes span.pod")).to_have_count(len(shop))
    page.get_by_label("Workload").select_option("shop/Deployment/web")
    expect(page.locator("#nodes span.pod")).to_have_count(3)
    page.get_by_label("Namespace").select_option("")
    shot(page, "cluster.png")


#: The page asks again one second after it drew the last answer, and the API reads the
#: cluster at most every 0.8 s for all its viewers: about 2 s in the worst case on an idle
#: machine, more while CI runs Chromium, the sim and a worker on two cores.
CLUSTER_VIEW_DEADLINE_MS = 5_000


def test_a_cordoned_node_is_marked_at_the_next_refreshes(page: Any, stack: Stack) -> None:
    def cordon(on: bool) -> None:
        sim = stack.sim
        request = urllib.request.Request(
            sim.url + "/api/v1/nodes/worker-c", method="PATCH",
            data=json.dumps({"spec": {"unschedulable": on}}).encode(),
            headers={"Authorization": f"Bearer {sim.token}",
                     "Content-Type": "application/merge-patch+json"})
        with urllib.request.urlopen(request, timeout=10, context=sim.ssl_context) as answer:
            assert answer.status == 200

    cordon(True)
    try:
        marked = page.locator("section.node.cordoned")
        expect(marked).to_have_count(1, timeout=CLUSTER_VIEW_DEADLINE_MS)
        expect(marked).to_contain_text("worker-c")
        expect(marked.locator(".tag")).to_have_text("cordoned")
    finally:
        cordon(False)
    expect(page.locator("section.node.cordoned")).to_have_count(0,
                                                                timeout=CLUSTER_VIEW_DEADLINE_MS)


def test_validation_errors_appear_beside_their_fields(page: Any, stack: Stack) -> None:
    page.get_by_role("link", name="Run").click()
    page.get_by_label("Action").select_option("pod-kill")
    page.get_by_label("Namespaces").fill("shop")
    page.get_by_label("Label selector").fill("app=web")
    page.get_by_label("Mode").select_option("fixed")
    page.get_by_role("button", name="Run job").click()
    error = page.locator("#run-value-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("needs a value")
    expect(page.locator("#run-value")).to_have_attribute("aria-invalid", "true")
    # a protected namespace: the error sits beside the namespaces field
    page.get_by_label("Namespaces").fill("kube-system")
    page.get_by_label("Value").fill("1")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#run-namespaces-error")).to_contain_text("protected")
    expect(page.locator("#run-value-error")).to_be_hidden()


def test_preview_and_run_a_pod_kill(page: Any, stack: Stack) -> None:
    page.get_by_label("Namespaces").fill("shop")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview")).to_contain_text("1 would be hit now")
    expect(page.locator("#run-namespaces-error")).to_be_hidden()
    shot(page, "run.png")
    before = {p["metadata"]["name"] for p in stack.pods()
              if p["metadata"]["namespace"] == "shop"
              and p["metadata"].get("labels", {}).get("app") == "web"}
    page.get_by_role("button", name="Run job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/j-"))
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#recovery-chart rect")).to_have_count(1)
    expect(page.locator("#timeline li").first).to_be_visible()
    expect(page.locator("#timeline")).to_contain_text("recovered")
    expect(page.locator("#cancel-job")).to_have_count(0)
    job_id = page.url.rsplit("/", 1)[1]
    record = stack.call("GET", f"/api/v1/jobs/{job_id}").json()
    killed = record["targets"][0]["name"]
    assert killed in before
    expect(page.locator("#targets")).to_contain_text(killed)
    expect(page.locator("#changes")).to_contain_text(killed)
    shot(page, "job.png")

    # the topology shows the pod gone and a replacement in its place
    page.get_by_role("link", name="Cluster").click()
    page.get_by_label("Namespace").select_option("shop")
    page.get_by_label("Workload").select_option("shop/Deployment/web")
    expect(page.locator(f'#nodes span.pod[data-pod="shop/{killed}"]')).to_have_count(0)
    expect(page.locator("#nodes span.pod.ready")).to_have_count(3, timeout=20_000)

    # the jobs list shows it, filtered
    page.get_by_role("link", name="Jobs").click()
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_label("Action").select_option("pod-kill")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs-table")).to_contain_text(job_id)
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs-table")).to_contain_text("No jobs match")


def test_a_running_job_is_highlighted_and_followed_live(page: Any, stack: Stack) -> None:
    answer = stack.call("POST", "/api/v1/jobs", json={
        "action": "pod-failure", "duration": "5s",
        "target": {"namespaces": ["shop"], "label_selector": "app=cart", "mode": "fixed",
                   "value": 1}})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    page.get_by_role("link", name="Cluster").click()
    hit = page.locator("#nodes span.pod.hit")
    expect(hit).to_have_count(1, timeout=10_000)
    expect(page.locator("#cluster-summary")).to_contain_text("1 hit by 1 running job")
    page.get_by_role("link", name="Jobs").click()
    page.locator(f'a[href="#/jobs/{job_id}"]').click()
    expect(page.locator("#live-mode")).to_contain_text("server-sent events")
    expect(page.locator("#cancel-job")).to_be_visible()
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
    timeline = stack.call("GET", f"/api/v1/jobs/{job_id}/events").json()["items"]
    expect(page.locator("#timeline li")).to_have_count(len(timeline))
    expect(page.locator("#changes")).not_to_contain_text("pending")
    expect(page.locator("#live-mode")).to_have_attribute("data-transport", "sse")
    page.get_by_role("link", name="Cluster").click()
    expect(page.locator("#nodes span.pod.hit")).to_have_count(0)


def test_cancel_a_running_job_from_its_page(page: Any, stack: Stack) -> None:
    answer = stack.call("POST", "/api/v1/jobs", json={
        "action": "pod-failure", "duration": "60s",
        "target": {"namespaces": ["payments"], "label_selector": "app=checkout",
                   "mode": "fixed", "value": 1}})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    page.goto(f"{stack.url}/#/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("running", timeout=20_000)
    page.locator("#cancel-job").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#job-status")).to_have_text("aborted", timeout=30_000)
    expect(page.locator("#cancel-job")).to_have_count(0)


def test_create_and_pause_a_schedule(page: Any, stack: Stack) -> None:
    page.get_by_role("link", name="Schedules").click()
    page.get_by_label("Repeat").select_option("interval")
    page.get_by_label("Interval or cron expression").fill("1h")
    page.get_by_label("Schedule id").fill("hourly-web")
    page.get_by_label("Action").select_option("pod-kill")
    page.get_by_label("Namespaces").fill("shop")
    page.get_by_label("Label selector").fill("app=web")
    page.get_by_label("Dry run (change nothing)").check()
    page.get_by_role("button", name="Create schedule").click()
    row = page.locator('tr[data-schedule="hourly-web"]')
    expect(row.locator(".sched-state")).to_have_text("active")
    page.get_by_role("button", name="Pause schedule hourly-web").click()
    expect(row.locator(".sched-state")).to_have_text("paused")
    assert stack.call("GET", "/api/v1/schedules/hourly-web").json()["spec"]["paused"] is True
    page.get_by_role("button", name="Resume schedule hourly-web").click()
    expect(row.locator(".sched-state")).to_have_text("active")
    expect(row).to_contain_text("every 1h")
    expect(row).to_contain_text("pod-kill shop app=web")
    shot(page, "schedules.png")
    # a bad cron expression is told beside the field
    page.get_by_label("Repeat").select_option("cron")
    page.get_by_label("Interval or cron expression").fill("not a cron")
    page.get_by_label("Schedule id").fill("bad-cron")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#sched-when-error")).to_be_visible()
    page.get_by_role("button", name="Delete schedule hourly-web").click()
    page.locator("#confirm-ok").click()
    expect(row).to_have_count(0)


def test_run_an_experiment_and_read_its_run_page(page: Any, stack: Stack) -> None:
    # Issue 15: an experiment stored over the API, run from the dashboard, followed to its
    # verdict on the run page (step graph, downloads).
    stored = stack.call("POST", "/api/v1/experiments", json={
        "name": "web-survives", "title": "web survives losing a pod", "method": [
            {"type": "action", "name": "kill-one", "job": {
                "action": "pod-kill", "dry_run": True,
                "target": {"namespaces": ["shop"], "label_selector": "app=web"}}},
            {"type": "wait", "name": "settle", "duration": "1s"}]})
    assert stored.status_code == 201, stored.text
    page.get_by_role("link", name="Experiments").click()
    row = page.locator('#experiments-table tr[data-name="web-survives"]')
    expect(row).to_contain_text("never run")
    row.get_by_role("button", name="Run").click()
    page.locator("#confirm-ok").click()
    expect(page).to_have_url(re.compile(r"#/experiment-run/x-"))
    expect(page.locator("#run-header .verdict")).to_have_text(
        re.compile(r"^(passed|failed|deviated|aborted|skipped)$"), timeout=60_000)
    expect(page.locator('#step-graph g.step[data-path="method[0]"]')).to_have_class(
        re.compile(r"\bsucceeded\b"))
    with page.expect_download() as download:
        page.locator("#download-journal").click()
    assert download.value.suggested_filename.startswith("journal-x-")
    shot(page, "experiment-run.png")
    page.get_by_role("link", name="Experiments").click()
    expect(row.locator(".verdict")).to_be_visible()


def test_halt_with_confirmation_and_resume(page: Any, stack: Stack) -> None:
    halt = page.locator("#halt-button")
    halt.click()
    page.locator("#confirm-cancel").click()         # changed my mind: nothing happens
    assert stack.call("GET", "/api/v1/halt").json()["halted"] is False
    halt.click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#halt-banner")).to_contain_text("HALTED")
    assert stack.call("GET", "/api/v1/halt").json()["halted"] is True
    expect(halt).to_have_text("Resume chaos")
    halt.click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#halt-banner")).to_be_hidden()
    assert stack.call("GET", "/api/v1/halt").json()["halted"] is False


def test_phone_width_and_sign_out(page: Any, stack: Stack) -> None:
    page.set_viewport_size(PHONE)
    page.get_by_role("link", name="Cluster").click()
    expect(page.locator("section.node")).to_have_count(4)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, width
    page.set_viewport_size(LAPTOP)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('pystol.token')") is None


def test_a_wrong_token_is_refused(page: Any, stack: Stack) -> None:
    sign_in(page, stack, "not-the-token")
    expect(page.locator("#signin-error")).to_have_text("That token was refused by the API.")
    expect(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('pystol.token')") is None


# -- identities and scopes (issue 12) ------------------------------------------------------

OTHER_NAMESPACES = {"payments", "monitoring"}  # the demo scenario's other namespaces with pods


def create_token(stack: Stack, name: str, role: str, namespaces: list[str]) -> str:
    """A named Pystol token, created through the API as the admin."""
    answer = stack.call("POST", "/api/v1/tokens",
                        json={"name": name, "role": role, "namespaces": namespaces})
    assert answer.status_code == 201, answer.text
    secret: str = answer.json()["token"]
    return secret


def submit(stack: Stack, namespaces: list[str], duration: str | None = None,
           dry_run: bool = False, app: str = "cart") -> str:
    """A pod-failure (or, dry, a pod-kill) submitted by the admin; its job id."""
    spec: dict[str, Any] = {
        "action": "pod-kill" if dry_run else "pod-failure", "dry_run": dry_run,
        "target": {"namespaces": namespaces, "label_selector": f"app={app}", "mode": "one"}}
    if duration:
        spec["duration"] = duration
    answer = stack.call("POST", "/api/v1/jobs", json=spec)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def settled_pods(stack: Stack) -> list[dict[str, Any]]:
    """The sim's pods once none is pending, terminating or unready (after earlier tests)."""
    def ready() -> list[dict[str, Any]] | None:
        pods = stack.pods()
        fine = all(not p["metadata"].get("deletionTimestamp")
                   and any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in (p.get("status") or {}).get("conditions") or ())
                   for p in pods)
        return pods if fine else None
    pods: list[dict[str, Any]] = stack.sim.wait_for(ready, timeout=40)
    return pods


def expect_only_shop(page: Any, stack: Stack) -> None:
    """The cluster view shows every pod of `shop` and none of another namespace."""
    page.get_by_role("link", name="Cluster").click()
    pods = settled_pods(stack)
    assert {p["metadata"]["namespace"] for p in pods} >= OTHER_NAMESPACES  # a filter matters
    shop = sorted(f"shop/{p['metadata']['name']}" for p in pods
                  if p["metadata"]["namespace"] == "shop")
    expect(page.locator("#nodes span.pod")).to_have_count(len(shop), timeout=20_000)
    expect(page.locator('#nodes span.pod:not([data-pod^="shop/"])')).to_have_count(0)
    shown = page.locator("#nodes span.pod").evaluate_all(
        "pods => pods.map(p => p.dataset.pod).sort()")
    assert shown == shop
    expect(page.locator("#cluster-summary")).to_contain_text(
        f"{len(shop)} pods shown ({len(shop)} in all)")
    assert page.locator("#filter-namespace option").evaluate_all(
        "options => options.map(o => o.value)") == ["", "shop"]
    expect(page.locator("table.workloads tbody tr")).to_have_count(2)  # web and cart
    expect(page.locator("table.workloads")).not_to_contain_text("payments")


def expect_refused_elsewhere(page: Any) -> None:
    """On Run: naming a namespace other than shop disables Preview and Run job, saying why;
    node-level actions are not offered."""
    page.get_by_role("link", name="Run").click()
    expect(page.locator("#run-action option")).not_to_have_count(0)
    for node_action in ("node-drain", "node-cordon"):
        expect(page.locator(f'#run-action option[value="{node_action}"]')).to_have_count(0)
    expect(page.locator("#run-param-node")).to_have_count(0)  # no stress pinned to a node
    page.get_by_label("Action").select_option("pod-kill")
    page.get_by_label("Namespaces").fill("shop, payments")
    expect(page.locator("#run-scope")).to_contain_text("may not run chaos in namespace payments")
    expect(page.locator("#run-scope")).to_contain_text("you may in: shop")
    expect(page.get_by_role("button", name="Preview")).to_be_disabled()
    expect(page.get_by_role("button", name="Run job")).to_be_disabled()


def test_sign_in_says_either_token_kind_works(page: Any, stack: Stack) -> None:
    page.goto(stack.url + "/")
    hint = page.locator("#token-hint")
    expect(hint).to_contain_text("Pystol token")
    expect(hint).to_contain_text("Kubernetes token")
    expect(hint).to_contain_text("kubectl create token NAME")


def test_an_operator_of_shop_sees_and_acts_on_shop_only(page: Any, stack: Stack) -> None:
    secret = create_token(stack, "ops-shop", "operator", ["shop"])
    elsewhere = submit(stack, ["payments"], dry_run=True, app="checkout")
    sign_in(page, stack, secret)
    expect(page.locator("#whoami")).to_have_text("Pystol token ops-shop · operator in shop")
    expect_only_shop(page, stack)
    halt = page.locator("#halt-button")
    expect(halt).to_have_text("Halt chaos")          # an operator may halt chaos...

    # ...and act on shop, but not elsewhere
    expect_refused_elsewhere(page)
    page.get_by_label("Namespaces").fill("shop")
    page.get_by_label("Label selector").fill("app=web")
    expect(page.locator("#run-scope")).to_be_hidden()
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview")).to_contain_text("1 would be hit now")
    page.get_by_label("Dry run (change nothing)").check()
    page.get_by_role("button", name="Run job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/j-"))
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
    job_id = page.url.rsplit("/", 1)[1]
    record = stack.call("GET", f"/api/v1/jobs/{job_id}").json()
    assert record["submitter"] == "token:ops-shop"
    assert record["spec"]["dry_run"] is True
    assert record["spec"]["target"]["namespaces"] == ["shop"]

    # the jobs list holds shop's jobs, not another namespace's; nor is that job's page
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("#jobs-table")).to_contain_text(job_id)
    expect(page.locator("#jobs-table")).not_to_contain_text(elsewhere)
    expect(page.locator("#jobs-table")).not_to_contain_text("payments")
    page.goto(f"{stack.url}/#/jobs/{elsewhere}")
    expect(page.locator("main .error")).to_contain_text(f"there is no job {elsewhere}")

    # the admin's running job in shop: the operator may cancel it
    running = submit(stack, ["shop"], duration="60s")
    page.goto(f"{stack.url}/#/jobs/{running}")
    expect(page.locator("#job-status")).to_have_text("running", timeout=20_000)
    page.locator("#cancel-job").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#job-status")).to_have_text("aborted", timeout=30_000)

    # a halt set by the admin: the operator is not offered to lift it
    page.get_by_role("link", name="Cluster").click()
    assert stack.call("POST", "/api/v1/halt", json={"reason": "e2e"}).status_code == 200
    try:
        expect(page.locator("#halt-banner")).to_contain_text("HALTED", timeout=10_000)
        expect(page.locator("#halt-banner")).to_contain_text("someone who may lift the halt")
        expect(halt).to_be_hidden()
        expect(page.get_by_role("button", name="Resume chaos")).to_have_count(0)

        # Were the page to offer it anyway (here: a forged /whoami), the API refuses, and
        # the page shows the problem's detail, then asks /whoami again and hides it.
        page.get_by_role("link", name="Jobs", exact=True).click()
        real = requests.get(stack.url + "/api/v1/whoami", timeout=10,
                            headers={"Authorization": f"Bearer {secret}"}).json()
        forged = {**real, "cluster": {**real["cluster"], "halt.lift": True}}
        page.route("**/api/v1/whoami*", lambda route: route.fulfill(json=forged), times=1)
        page.reload()
        expect(halt).to_have_text("Resume chaos")
        halt.click()
        page.locator("#confirm-ok").click()
        expect(page.locator("#notice")).to_contain_text(
            "Refused: token:ops-shop may not halt.lift at cluster scope")
        expect(halt).to_be_hidden()
        assert stack.call("GET", "/api/v1/halt").json()["halted"] is True
    finally:
        page.unroute("**/api/v1/whoami*")
        assert stack.call("DELETE", "/api/v1/halt").status_code == 200
    expect(page.locator("#halt-banner")).to_be_hidden(timeout=10_000)
    expect(halt).to_have_text("Halt chaos")
    page.get_by_role("button", name="Sign out").click()


def test_a_viewer_of_shop_is_offered_nothing_to_change(page: Any, stack: Stack) -> None:
    secret = create_token(stack, "view-shop", "viewer", ["shop"])
    answer = stack.call("POST", "/api/v1/schedules", json={
        "id": "viewer-sees", "interval": "1h", "paused": True,
        "template": {"action": "pod-kill", "dry_run": True,
                     "target": {"namespaces": ["shop"], "label_selector": "app=web"}}})
    assert answer.status_code == 201, answer.text
    running = None
    try:
        sign_in(page, stack, secret)
        expect(page.locator("#whoami")).to_have_text("Pystol token view-shop · viewer in shop")
        expect_only_shop(page, stack)
        running = submit(stack, ["shop"], duration="60s")
        # no Run section, no halt switch
        expect(page.locator('nav a[data-view="run"]')).to_be_hidden()
        expect(page.locator("#halt-button")).to_be_hidden()
        page.goto(f"{stack.url}/#/run")
        expect(page.locator("#not-allowed")).to_contain_text("may not submit jobs")
        expect(page.locator("#run-button")).to_have_count(0)
        expect(page.locator("#preview-button")).to_have_count(0)
        # a running job in shop: no cancel button
        page.goto(f"{stack.url}/#/jobs/{running}")
        expect(page.locator("#job-status")).to_have_text("running", timeout=20_000)
        expect(page.locator("#targets")).to_contain_text("shop")
        expect(page.locator("#cancel-job")).to_have_count(0)
        # schedules: listed, but no create form, pause or delete
        page.get_by_role("link", name="Schedules").click()
        row = page.locator('tr[data-schedule="viewer-sees"]')
        expect(row.locator(".sched-state")).to_have_text("paused")
        expect(row.locator("button")).to_have_count(0)
        expect(page.locator("#sched-create")).to_have_count(0)
        expect(page.locator("#not-allowed")).to_contain_text("may not create schedules")
        page.get_by_role("button", name="Sign out").click()
    finally:
        if running:
            stack.call("POST", f"/api/v1/jobs/{running}/cancel")
        stack.call("DELETE", "/api/v1/schedules/viewer-sees")


def test_a_kubernetes_token_signs_in_and_rbac_decides(page: Any, stack: Stack) -> None:
    sim = stack.sim
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/shop"
    for path, body in [
        ("/api/v1/namespaces/shop/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "chaos-robot"}}),
        (f"{rbac}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "chaos-in-shop"}, "rules": [{
            "apiGroups": ["pystol.org"], "resources": ["pystolactions"],
            "verbs": ["list", "create", "delete"]}]}),
        (f"{rbac}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "chaos-robot"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "chaos-in-shop"},
            "subjects": [{"kind": "ServiceAccount", "name": "chaos-robot",
                          "namespace": "shop"}]}),
    ]:
        status, answer = sim.request("POST", path, body)
        assert status == 201, answer
    secret = sim.kubectl("create", "token", "chaos-robot", "-n", "shop").stdout.strip()
    sign_in(page, stack, secret)
    expect(page.locator("#whoami")).to_have_text(
        "Kubernetes system:serviceaccount:shop:chaos-robot · Kubernetes RBAC")
    expect_only_shop(page, stack)
    expect(page.locator("#halt-button")).to_be_hidden()  # the Role grants no `create halts`
    expect_refused_elsewhere(page)
    page.get_by_label("Namespaces").fill("shop")
    page.get_by_label("Label selector").fill("app=web")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview")).to_contain_text("1 would be hit now")
    page.get_by_role("button", name="Sign out").click()


def test_the_dashboard_and_the_api_docs_work_under_the_csp(page: Any, stack: Stack) -> None:
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    answer = page.goto(stack.url + "/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    sign_in(page, stack)
    expect(page.locator("section.node")).to_have_count(4)
    page.get_by_role("link", name="Run").click()  # the form's buttons had an inline style
    expect(page.get_by_role("button", name="Preview")).to_be_visible()
    assert csp_violations(page) == []

    # The Swagger UI, at both of its addresses: the whole document is rendered and usable.
    for path in ("/api/v1/docs", "/api/v1/swagger"):
        answer = page.goto(stack.url + path)
        assert answer.headers["content-security-policy"] == policy
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Pystol API")
        expect(page.locator(".opblock-summary-path", has_text="/api/v1/halt").first
               ).to_be_visible()
        assert page.locator(".opblock").count() > 20
        assert csp_violations(page) == [], path
    page.locator(".opblock-summary", has_text="/api/v1/whoami").first.click()
    expect(page.get_by_role("button", name="Try it out")).to_be_visible()

    page.goto(stack.url + "/api/v1/")
    expect(page.get_by_role("link", name="Swagger")).to_be_visible()
    assert csp_violations(page) == []
    page.goto(stack.url + "/")  # leave the page as the session found it
