"""`pystol run -f`, `pystol experiments …` and `pystol jobs show --journal` against the tiny
HTTP API of test_cli.py (real server in a thread, canned answers built with the real
models, every request recorded).

Hostile files first: a billion-laughs YAML, a file over 128 KiB, YAML that JSON cannot
hold; each is refused before anything is sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pystol_api import experiment_documents
from pystol_api.experiment_documents import DocumentInvalid, kind_of, load_document
from pystol_worker.core import experiment_model
from pystol_worker.core.experiment_model import ExperimentRun
from tests.unit.test_cli import Answer, FakeApi, Handler, invoke

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
RUN_ID = "x-20261206T120000-1a2b3c"

EXPERIMENT_YAML = """\
name: web-survives
title: web survives losing a pod
hypothesis:
  title: web answers
  probes:
    - type: http
      name: web-ok
      service: {namespace: shop, name: web, port: 80, path: /healthz}
method:
  - type: action
    name: kill-one
    job:
      action: pod-kill
      target: {namespaces: [shop], label_selector: app=web}
"""

BILLION_LAUGHS = "\n".join(
    ["name: lol", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]"
       for i in range(1, 9)])


class WritingHandler(Handler):
    """test_cli's handler, also answering PUT and DELETE (experiments are replaced)."""

    do_PUT = do_DELETE = Handler._handle


@pytest.fixture
def api() -> Iterator[FakeApi]:
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), WritingHandler)
    fake = FakeApi(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.api = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def spec() -> dict[str, Any]:
    return load_document(EXPERIMENT_YAML)


def run_record(status: str = "queued", verdict: str | None = None,
               score: float | None = None, step_status: str = "pending") -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": RUN_ID, "experiment": "web-survives", "spec": spec(), "status": status,
        "verdict": verdict, "score": score, "source": "cli", "submitter": "token:cli",
        "created_at": T0, "started_at": T0,
        "steps": [{"path": "method[0]", "type": "action", "name": "kill-one",
                   "status": step_status, "job_id": "j-1" if step_status != "pending"
                   else None, "weight": 10}]}
    if status in ("completed", "aborted", "cancelled", "skipped"):
        data["finished_at"] = T0 + timedelta(seconds=42)
    return ExperimentRun.model_validate(data).model_dump(mode="json")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def stored(version: int = 1) -> dict[str, Any]:
    return {"name": "web-survives", "spec": spec(), "namespaces": ["shop"], "version": version,
            "source": "cli", "created_at": T0.isoformat(), "updated_at": T0.isoformat()}


# -- hostile files -----------------------------------------------------------------------------


def test_billion_laughs_file_is_refused_before_anything_is_sent(api: FakeApi,
                                                               tmp_path: Path) -> None:
    path = write(tmp_path, "lol.yaml", BILLION_LAUGHS)
    result = invoke(["run", "-f", str(path)], url=api.url)
    assert result.exit_code == 2, result.output
    assert "alias" in result.output
    assert api.seen == []


def test_a_file_over_128_kib_is_refused(api: FakeApi, tmp_path: Path) -> None:
    path = write(tmp_path, "big.json", json.dumps({"name": "big", "description": "x" * 140_000}))
    result = invoke(["run", "-f", str(path)], url=api.url)
    assert result.exit_code == 2, result.output
    assert "131,072" in result.output
    assert api.seen == []


def test_yaml_that_json_cannot_hold_names_its_path(api: FakeApi, tmp_path: Path) -> None:
    path = write(tmp_path, "date.yaml", "name: x\nmethod:\n  - when: 2020-01-01\n")
    result = invoke(["run", "-f", str(path)], url=api.url)
    assert result.exit_code == 2, result.output
    assert "method[0].when" in result.output and "date" in result.output
    assert api.seen == []


def test_a_self_containing_alias_is_refused() -> None:
    with pytest.raises(DocumentInvalid, match="contains itself"):
        load_document("a: &a [*a]\n")


def test_two_yaml_documents_are_refused() -> None:
    with pytest.raises(DocumentInvalid, match="one YAML document"):
        load_document("name: a\n---\nname: b\n")


def test_the_cli_and_the_model_share_the_size_cap() -> None:
    assert experiment_documents.MAX_EXPERIMENT_BYTES == experiment_model.MAX_EXPERIMENT_BYTES


def test_kinds_are_told_apart() -> None:
    assert kind_of({"action": "pod-kill"}) == "job"
    assert kind_of(spec()) == "experiment"
    ctk = {"title": "t", "description": "d", "method": [
        {"type": "action", "name": "a", "provider": {"type": "python", "module": "m",
                                                     "func": "f"}}]}
    assert kind_of(ctk) == "chaostoolkit"
    assert kind_of(spec(), "chaostoolkit") == "chaostoolkit"


def test_action_and_file_exclude_each_other(api: FakeApi, tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", EXPERIMENT_YAML)
    result = invoke(["run", "pod-kill", "-f", str(path)], url=api.url)
    assert result.exit_code == 2
    assert "ACTION" in result.output
    assert api.seen == []


# -- pystol run -f -----------------------------------------------------------------------------


def test_run_file_stores_runs_and_follows_to_passed_exit_0(api: FakeApi,
                                                          tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", EXPERIMENT_YAML)
    api.on("PUT", "/api/v1/experiments/web-survives", (200, stored()))
    api.on("POST", "/api/v1/experiments/web-survives/run", (202, run_record()))
    api.on("GET", f"/api/v1/experiment-runs/{RUN_ID}",
           (200, run_record("running", step_status="running")),
           (200, run_record("completed", "passed", 100.0, "succeeded")))
    result = invoke(["run", "-f", str(path), "--wait"], url=api.url)
    assert result.exit_code == 0, result.output
    put = api.requests_to("PUT", "/api/v1/experiments/web-survives")[0]
    assert put.body["method"][0]["job"]["target"]["namespaces"] == ["shop"]
    assert api.requests_to("POST", "/api/v1/experiments/web-survives/run")[0].body == {
        "dry_run": False}
    assert "passed" in result.output and "100.00" in result.output
    assert "method[0] kill-one" in result.output


@pytest.mark.parametrize(("status", "verdict", "code"), [
    ("completed", "failed", 1), ("completed", "deviated", 1), ("skipped", "skipped", 3),
    ("aborted", "aborted", 4), ("cancelled", "aborted", 4)])
def test_run_file_wait_exit_code_follows_the_verdict(api: FakeApi, tmp_path: Path,
                                                      status: str, verdict: str,
                                                      code: int) -> None:
    path = write(tmp_path, "e.yaml", EXPERIMENT_YAML)
    api.on("PUT", "/api/v1/experiments/web-survives", (200, stored()))
    api.on("POST", "/api/v1/experiments/web-survives/run", (202, run_record()))
    api.on("GET", f"/api/v1/experiment-runs/{RUN_ID}",
           (200, run_record(status, verdict, 0.0, "failed")))
    result = invoke(["run", "-f", str(path), "--wait", "-o", "json"], url=api.url)
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["verdict"] == verdict


def test_run_file_dry_run_asks_for_a_dry_run(api: FakeApi, tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", EXPERIMENT_YAML)
    api.on("PUT", "/api/v1/experiments/web-survives", (200, stored()))
    api.on("POST", "/api/v1/experiments/web-survives/run", (202, run_record()))
    result = invoke(["run", "-f", str(path), "--dry-run"], url=api.url)
    assert result.exit_code == 0, result.output
    assert api.requests_to("POST", "/api/v1/experiments/web-survives/run")[0].body == {
        "dry_run": True}
    assert RUN_ID in result.output


def test_run_file_with_a_job_spec_submits_a_job(api: FakeApi, tmp_path: Path) -> None:
    from tests.unit.test_cli import record

    path = write(tmp_path, "job.json", json.dumps({
        "action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app=web"}}))
    api.on("POST", "/api/v1/jobs", (202, record("job-1")))
    result = invoke(["run", "-f", str(path)], url=api.url)
    assert result.exit_code == 0, result.output
    assert api.requests_to("POST", "/api/v1/jobs")[0].body["action"] == "pod-kill"
    assert api.requests_to("PUT", "/api/v1/experiments/web-survives") == []


def test_run_file_refusal_is_printed_with_field_paths_exit_2(api: FakeApi,
                                                            tmp_path: Path) -> None:
    path = write(tmp_path, "e.yaml", EXPERIMENT_YAML.replace("[shop]", "[payments]"))
    api.on("PUT", "/api/v1/experiments/web-survives", Answer(403, {
        "type": "https://pystol.org/problems/forbidden", "title": "Forbidden", "status": 403,
        "detail": "token:op may not experiments.write in namespace 'payments'",
        "errors": [{"loc": "method[0].job.target.namespaces[0]", "msg": "may not"}]},
        "application/problem+json"))
    result = invoke(["run", "-f", str(path)], url=api.url)
    assert result.exit_code == 2, result.output
    assert "method[0].job.target.namespaces[0]" in result.output
    assert api.requests_to("POST", "/api/v1/experiments/web-survives/run") == []


def test_chaos_toolkit_file_is_converted_locally_then_run(api: FakeApi,
                                                         tmp_path: Path) -> None:
    document = {
        "title": "web survives", "description": "kill a pod",
        "method": [{"type": "action", "name": "terminate-one",
                    "provider": {"type": "python", "module": "chaosk8s.pod.actions",
                                 "func": "terminate_pods",
                                 "arguments": {"label_selector": "app=web", "ns": "shop",
                                               "qty": 1}}}]}
    path = write(tmp_path, "ctk.json", json.dumps(document))
    api.on("POST", "/api/v1/experiments/web-survives/run", (202, run_record()))
    # The converted experiment's name comes from its title; answer whatever PUT comes.
    result = invoke(["run", "-f", str(path)], url=api.url)
    puts = [seen for seen in api.seen if seen.method == "PUT"]
    assert len(puts) == 1, result.output
    assert puts[0].body["source_format"] == "chaostoolkit"
    step = puts[0].body["method"][0]
    assert step["job"]["action"] == "pod-kill"


def test_chaos_toolkit_file_with_a_process_provider_is_refused_locally(
        api: FakeApi, tmp_path: Path) -> None:
    document = {"title": "t", "description": "d", "method": [
        {"type": "action", "name": "rm", "provider": {"type": "process", "path": "rm",
                                                     "arguments": "-rf /"}}]}
    path = write(tmp_path, "ctk.json", json.dumps(document))
    result = invoke(["run", "-f", str(path)], url=api.url)
    assert result.exit_code == 2, result.output
    assert "method[0]" in result.output
    assert api.seen == []


# -- experiments and the journal ---------------------------------------------------------------


def test_experiments_runs_lists_the_trend(api: FakeApi) -> None:
    api.on("GET", "/api/v1/experiments/web-survives/runs", (200, {
        "items": [run_record("completed", "passed", 87.5, "succeeded")], "next_cursor": None}))
    result = invoke(["experiments", "runs", "web-survives"], url=api.url)
    assert result.exit_code == 0, result.output
    assert RUN_ID in result.output and "87.50" in result.output and "passed" in result.output


def test_experiments_cancel_and_resume_send_what_they_say(api: FakeApi) -> None:
    api.on("POST", f"/api/v1/experiment-runs/{RUN_ID}/cancel", (202, run_record("running")))
    api.on("POST", f"/api/v1/experiment-runs/{RUN_ID}/resume", (200, run_record("running")))
    assert invoke(["experiments", "cancel", RUN_ID, "--reason", "enough"],
                  url=api.url).exit_code == 0
    assert invoke(["experiments", "resume", RUN_ID, "method[1]"], url=api.url).exit_code == 0
    assert api.requests_to("POST", f"/api/v1/experiment-runs/{RUN_ID}/cancel")[0].body == {
        "reason": "enough"}
    assert api.requests_to("POST", f"/api/v1/experiment-runs/{RUN_ID}/resume")[0].body == {
        "step": "method[1]"}


def test_jobs_show_journal_of_a_run_goes_to_the_file(api: FakeApi, tmp_path: Path) -> None:
    journal = {"chaoslib-version": "1.44.0", "status": "completed", "deviated": False}
    api.on("GET", f"/api/v1/experiment-runs/{RUN_ID}/journal", (200, journal))
    target = tmp_path / "journal.json"
    result = invoke(["jobs", "show", RUN_ID, "--journal", str(target)], url=api.url)
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text()) == journal


def test_jobs_show_journal_of_a_job_to_stdout(api: FakeApi) -> None:
    journal = {"chaoslib-version": "1.44.0", "status": "failed", "deviated": True}
    api.on("GET", "/api/v1/jobs/j-1/journal", (200, journal))
    result = invoke(["jobs", "show", "j-1", "--journal"], url=api.url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == journal


def test_a_jobs_summary_shows_its_verdict_and_score() -> None:
    import click

    from pystol_api.cli.output import format_summary as styled

    def format_summary(record: dict[str, Any]) -> list[str]:
        return [click.unstyle(line) for line in styled(record)]

    lines = format_summary({"id": "j-1", "status": "skipped", "verdict": "skipped",
                            "reason": "error budget guard: 2.5 > max 1", "spec": {}})
    assert "  verdict:   skipped" in lines
    scored = format_summary({"id": "j-2", "status": "succeeded", "verdict": "passed",
                             "score": 100.0, "spec": {}})
    assert "  verdict:   passed, resilience score 100.00" in scored


# -- the user's environment (security review H3) ------------------------------------------------


def ctk_with_env(key: str) -> dict[str, Any]:
    return {"title": "web survives", "description": "kill a pod",
            "configuration": {"t": {"type": "env", "key": key}},
            "method": [{"type": "action", "name": "terminate-one",
                        "provider": {"type": "python", "module": "chaosk8s.pod.actions",
                                     "func": "terminate_pods",
                                     "arguments": {"label_selector": "app=${t}",
                                                   "ns": "shop"}}}]}


def test_a_file_naming_pystol_token_is_refused_and_the_token_never_sent(
        api: FakeApi, tmp_path: Path) -> None:
    """Review H3: a handed-over file whose configuration names PYSTOL_TOKEN copied the
    user's token into the uploaded experiment."""
    path = write(tmp_path, "ctk.json", json.dumps(ctk_with_env("PYSTOL_TOKEN")))
    result = invoke(["run", "-f", str(path)], url=api.url, token="pst_SECRET_TOKEN")
    assert result.exit_code == 2, result.output
    assert "configuration.t.key" in result.output and "PYSTOL_TOKEN" in result.output
    assert [seen for seen in api.seen if seen.method in ("PUT", "POST")] == []
    assert "pst_SECRET_TOKEN" not in json.dumps([seen.body for seen in api.seen])


def test_only_the_variables_the_file_names_are_read_and_they_are_named(
        api: FakeApi, tmp_path: Path) -> None:
    path = write(tmp_path, "ctk.json", json.dumps(ctk_with_env("CTK_APP")))
    api.on("POST", "/api/v1/experiments/web-survives/run", (202, run_record()))
    result = invoke(["run", "-f", str(path)], url=api.url,
                    env={"CTK_APP": "web", "OTHER_SECRET": "nope"})
    assert "read environment variables CTK_APP" in result.output, result.output
    assert "OTHER_SECRET" not in result.output
    [put] = [seen for seen in api.seen if seen.method == "PUT"]
    assert put.body["method"][0]["job"]["target"]["label_selector"] == "app=web"
