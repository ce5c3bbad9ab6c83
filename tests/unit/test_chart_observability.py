"""What the chart gives monitoring: the Grafana dashboard's ConfigMap for Grafana's sidecar,
every metric the dashboard queries being one that `/metrics` really exports, and the
liveness probes of workers and beat pointing at the health files those processes write.

Rendered with the real `helm template` (no cluster needed); the metrics come from the real
exporter (`pystol_api.http.metrics_endpoint` over `pystol_worker.store.metrics`) on fakeredis.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pystol_api.http.app import create_app
from pystol_worker.actions import default_registry
from pystol_worker.core.model import JobSpec, Source
from pystol_worker.core.settings import Settings
from pystol_worker.process.health_file import health_file_path
from pystol_worker.schedules.store import BEAT_MAX_LOOP_INTERVAL
from pystol_worker.store import metrics
from pystol_worker.store.job_store import JobStore
from tests.support.chart_render import CHART, RELEASE, render

DASHBOARD = CHART / "dashboards" / "pystol.json"


def dashboard_configmaps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "ConfigMap"
            and d["metadata"]["name"] == f"{RELEASE}-pystol-grafana-dashboard"]


# -- the dashboard's ConfigMap ------------------------------------------------------------


def test_no_dashboard_configmap_by_default() -> None:
    assert dashboard_configmaps(render()) == []


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar() -> None:
    [configmap] = dashboard_configmaps(render("grafanaDashboard.enabled=true"))
    metadata = configmap["metadata"]
    assert metadata["labels"]["grafana_dashboard"] == "1"  # kube-prometheus-stack's default
    assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert "namespace" not in metadata and "annotations" not in metadata  # release namespace
    assert list(configmap["data"]) == ["pystol.json"]
    assert json.loads(configmap["data"]["pystol.json"]) == json.loads(DASHBOARD.read_text())


def test_dashboard_configmap_follows_other_sidecar_setups() -> None:
    [configmap] = dashboard_configmaps(render(
        "grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring",
        "grafanaDashboard.labels.grafana_dashboard=null",
        "grafanaDashboard.labels.dashboards=pystol",
        "grafanaDashboard.annotations.grafana_folder=Chaos"))
    metadata = configmap["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["dashboards"] == "pystol"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "Chaos"}


# -- every metric the dashboard queries exists ----------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "and", "or", "unless", "inf", "nan"}
STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<expr>.*),)?\s*\w+\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed).

    Strings, label matchers `{…}`, ranges and subqueries `[…]` and grouping label lists
    (`by (…)`, `on (…)`, …) hold label names and values, not metrics: drop them. What is
    left is functions and aggregations (a name followed by `(`), keywords, numbers and
    the metric names.
    """
    text = STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isalnum() or before in "_.$":  # part of a number (1e3) or a $variable
            continue
        if text[match.end():].lstrip().startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_reads_promql_as_grafana_writes_it() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, action) (rate(max without (instance, pod) '
        '(pystol_job_duration_seconds_bucket{action=~"$action"})[$__rate_interval:])))'
    ) == {"pystol_job_duration_seconds_bucket"}
    assert metric_names('sum(rate(a_total{x="by (y) rate(z)"}[5m] offset 1h)) / on (job) '
                        'group_left (v) b * 1e3 > bool 0.5 unless c') == {"a_total", "b", "c"}
    assert metric_names("max(pystol_halted)") == {"pystol_halted"}


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target (rows' panels too) and query variable."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        label_values = LABEL_VALUES.match(query)
        if label_values:
            if label_values["expr"]:
                yield f"variable ${variable['name']}", label_values["expr"]
        else:
            yield f"variable ${variable['name']}", query


def exported_metric_names() -> set[str]:
    """Sample names `/metrics` serves once every family has a value: counters' `_total`,
    histograms' `_bucket`, `_sum` and `_count`, gauges."""
    client = fakeredis.FakeRedis()
    for metric in metrics.COUNTERS:
        metrics.Recorder().inc(metric, dict.fromkeys(metric.labels, "x")).flush(client)
    for metric in metrics.HISTOGRAMS:
        metrics.Recorder().observe(metric, dict.fromkeys(metric.labels, "x"), 1.5).flush(client)
    store = JobStore(client)
    running, _ = store.create(JobSpec.model_validate({"action": "pod-kill", "target": {
        "namespaces": ["shop"], "label_selector": "app=web", "mode": "one"}}), Source.API, "a")
    store.claim(running.id, "w1")  # pystol_jobs_running has a sample only while one runs

    class NoQueue:
        def send(self, job_id: str) -> None:
            pass

    app = create_app(Settings(api_tokens=["t"]), redis_client=client, queue=NoQueue(),
                     registry=default_registry())
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    names = {sample.name
             for family in text_string_to_metric_families(response.get_data(as_text=True))
             for sample in family.samples}
    for metric in (*metrics.COUNTERS, *metrics.GAUGES):
        assert metric.name in names, f"{metric.name} was recorded but not exported"
    for metric in metrics.HISTOGRAMS:
        assert {f"{metric.name}_{part}" for part in ("bucket", "sum", "count")} <= names
    return names


def test_every_dashboard_query_names_a_metric_that_metrics_exports() -> None:
    exported = exported_metric_names()
    queries = list(dashboard_queries(json.loads(DASHBOARD.read_text())))
    used: set[str] = set()
    unknown = []
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        used |= names
        unknown += [f"{where}: {name}" for name in sorted(names - exported)]
    assert unknown == []
    # The dashboard covers what the README promises: jobs, recovery, queue, dispatch,
    # reverts, Kubernetes API requests.
    assert {"pystol_jobs_finished_total", "pystol_recovery_seconds_bucket",
            "pystol_queue_depth", "pystol_dispatch_latency_seconds_bucket",
            "pystol_reverts_total", "pystol_kube_api_requests_total"} <= used


# -- liveness probes of workers and beat ----------------------------------------------------


def workload_containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]:
            d["spec"]["template"]["spec"]["containers"][0]
            for d in docs if d["kind"] == "Deployment"}


@pytest.mark.parametrize("component", ["worker", "beat"])
def test_worker_and_beat_are_probed_on_their_health_file(component: str) -> None:
    docs = render()
    config = next(d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == f"{RELEASE}-pystol-config")["data"]
    container = workload_containers(docs)[component]
    probe = container["livenessProbe"]
    command = probe["exec"]["command"]
    assert command[:3] == ["pystol", "health", "--file"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    # the file the process writes, given the PYSTOL_HEALTH_DIR the chart sets ...
    path = health_file_path(config["PYSTOL_HEALTH_DIR"], component)
    assert options["--file"] == str(path)
    # ... on the writable emptyDir (the root filesystem is read-only)
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(Path(mount) in path.parents for mount in mounts), mounts
    # and --max-age leaves room for several touches before a restart
    touches_every = (float(config["PYSTOL_HEALTH_INTERVAL_SECONDS"]) if component == "worker"
                     else BEAT_MAX_LOOP_INTERVAL)
    assert float(options["--max-age"]) >= 3 * touches_every
    assert probe["timeoutSeconds"] >= 5 and probe["failureThreshold"] >= 2


def test_liveness_probes_can_be_turned_off() -> None:
    containers = workload_containers(render("worker.livenessProbe=null",
                                            "beat.livenessProbe=null"))
    assert "livenessProbe" not in containers["worker"]
    assert "livenessProbe" not in containers["beat"]
