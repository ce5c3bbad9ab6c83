"""`GET /metrics`: Pystol's metrics in the Prometheus text format, read from Redis at scrape.

The counters and histograms are what every worker, beat, watcher and API process recorded
in Redis (`pystol_worker.store.metrics`); the gauges are computed now from the job store, the
Celery queue, the revert journal and the halt switch. Any API replica answers the same,
so Prometheus may scrape one of them or all (then aggregate with `max`).

Who may read what: the series name namespaces (where chaos ran, where workloads took
long to recover), which tells an outsider what runs in the cluster and where it is weak.
- With `PYSTOL_METRICS_TOKEN` set, `/metrics` needs `Authorization: Bearer <that token>`
  (401 problem document otherwise) and shows every series.
- Without it, `/metrics` stays public (a Prometheus needs no secret to scrape it) and
  names no namespace or object: labels that carry one (`NAME_LABELS`) are dropped and
  the series they told apart summed, so totals stay right.
The API's bearer tokens are not accepted here: a scraper gets a secret that can read
metrics and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from typing import cast

import redis
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pystol_api.http.problems import ApiProblem
from pystol_worker.core.model import JobRecord
from pystol_worker.experiments.store import ENDED_KEY
from pystol_worker.store import metrics as m
from pystol_worker.store.job_store import HALT_KEY, PREFIX

METRICS_PATH = "/metrics"
# kombu's Redis transport keeps priority 0 in the queue's own list and others beside it.
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITIES = (3, 6, 9)
#: Labels whose values are namespaces or object names, dropped without the metrics token.
NAME_LABELS = frozenset({"namespace", "name", "pod", "node", "workload", "target",
                         "experiment"})
#: Experiments the score gauge shows: the most recently ended ones that have a score, as
#: many as namespaces get labels. By recency, not by name: a tenant who creates a hundred
#: experiments named `0-a`, `0-b`, ... does not push everybody else's series out; their
#: runs would have to keep ending more recently than everyone's.
MAX_EXPERIMENT_LABELS = 100
#: Ended runs looked at per scrape (newest first; one ZREVRANGE of small members, no run
#: record is read). An experiment none of whose last SCORE_WINDOW ended runs is its own
#: has no series until it runs again.
SCORE_WINDOW = 5000
EXPERIMENT_SCORE = ("pystol_experiment_resilience_score",
                    "The resilience score (0-100) of each experiment's latest run that has "
                    "one (LitmusChaos's weighted form).")
REALM = "pystol-metrics"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PystolCollector(Collector):
    """Every Pystol metric; with `named=False`, without the labels in NAME_LABELS (the
    series they told apart are summed)."""

    def __init__(self, client: redis.Redis, queue: str, named: bool = True) -> None:
        self.redis = client
        self.queue = queue
        self.named = named

    def _shown(self, labels: tuple[str, ...]) -> list[str]:
        return [name for name in labels if self.named or name not in NAME_LABELS]

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._histograms()
        yield from self._gauges()

    def _counters(self) -> Iterator[Metric]:
        values: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for field, raw in self.redis.hgetall(m.COUNTERS_KEY).items():
            try:
                name, labels = json.loads(field)
            except (ValueError, TypeError):
                continue
            values[name].append((labels, float(raw)))
        for metric in m.COUNTERS:
            shown = self._shown(metric.labels)
            family = CounterMetricFamily(metric.name, metric.help, labels=shown)
            totals: dict[tuple[str, ...], float] = defaultdict(float)
            for labels, value in values.get(metric.name, []):
                totals[tuple(str(labels.get(name, "")) for name in shown)] += value
            for key, value in sorted(totals.items()):
                family.add_metric(list(key), value)
            yield family

    def _histograms(self) -> Iterator[Metric]:
        # name -> labels json -> part -> value
        series: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for field, raw in self.redis.hgetall(m.HISTOGRAMS_KEY).items():
            try:
                name, labels, part = json.loads(field)
            except (ValueError, TypeError):
                continue
            series[name][json.dumps(labels, sort_keys=True)][part] = float(raw)
        for metric in m.HISTOGRAMS:
            shown = self._shown(metric.labels)
            family = HistogramMetricFamily(metric.name, metric.help, labels=shown)
            merged: dict[tuple[str, ...], dict[str, float]] = defaultdict(
                lambda: defaultdict(float))
            for labels_json, series_parts in series.get(metric.name, {}).items():
                labels = json.loads(labels_json)
                key = tuple(str(labels.get(name, "")) for name in shown)
                for part, value in series_parts.items():
                    merged[key][part] += value
            for key, parts in sorted(merged.items()):
                cumulative = 0.0
                buckets: list[tuple[str, float]] = []
                for bound in (*metric.buckets, math.inf):
                    cumulative += parts.get(m.bound_text(bound), 0.0)
                    buckets.append(("+Inf" if math.isinf(bound) else str(bound), cumulative))
                family.add_metric(list(key), buckets, parts.get("sum", 0.0))
            yield family

    def _gauges(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(m.JOBS_RUNNING.name, m.JOBS_RUNNING.help,
                                    labels=m.JOBS_RUNNING.labels)
        by_action: dict[str, int] = defaultdict(int)
        members = cast(list[bytes | str], self.redis.zrange(f"{PREFIX}jobs:status:running", 0, -1))
        ids = [_text(item) for item in members]
        if ids:
            for raw in self.redis.mget([f"{PREFIX}job:{job_id}" for job_id in ids]):
                if raw is None:
                    continue
                try:
                    by_action[JobRecord.model_validate_json(raw).spec.action] += 1
                except ValueError:
                    continue
        for action, count in sorted(by_action.items()):
            running.add_metric([action], count)
        yield running

        depth = GaugeMetricFamily(m.QUEUE_DEPTH.name, m.QUEUE_DEPTH.help,
                                  labels=m.QUEUE_DEPTH.labels)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(self.queue)
            for priority in KOMBU_PRIORITIES:
                pipe.llen(f"{self.queue}{KOMBU_PRIORITY_SEP}{priority}")
            pipe.hlen(PREFIX + "journal")
            pipe.exists(HALT_KEY)
            *lengths, journal, halted = pipe.execute()
        depth.add_metric([self.queue], sum(int(n) for n in lengths))
        yield depth
        yield GaugeMetricFamily(m.JOURNAL_ENTRIES.name, m.JOURNAL_ENTRIES.help,
                                value=int(journal))
        yield GaugeMetricFamily(m.HALTED.name, m.HALTED.help, value=1 if halted else 0)
        yield self._experiment_scores()

    def _experiment_scores(self) -> Metric:
        """The latest score of each of the MAX_EXPERIMENT_LABELS most recently ended,
        scored experiments, read from the ended-runs index (whose members carry the
        score): one bounded read, no SCAN, no run record. Without the metrics token no
        experiment is named, and a score cannot be summed: none."""
        family = GaugeMetricFamily(EXPERIMENT_SCORE[0], EXPERIMENT_SCORE[1],
                                   labels=["experiment"])
        if not self.named:
            return family
        members = cast(list[bytes | str],
                       self.redis.zrevrange(ENDED_KEY, 0, SCORE_WINDOW - 1))
        latest: dict[str, float] = {}
        for member in members:
            name, score = _ended_score(member)
            if name is None or score is None or name in latest:
                continue
            latest[name] = score
            if len(latest) >= MAX_EXPERIMENT_LABELS:
                break
        for name, score in sorted(latest.items()):
            family.add_metric([name], score)
        return family


def _ended_score(member: bytes | str) -> tuple[str | None, float | None]:
    """(experiment, score) of an `xruns:ended` member `[id, experiment, namespaces,
    submitter, score]` (older members without a score: no score)."""
    try:
        fields = json.loads(member)
    except (ValueError, TypeError):
        return None, None
    if not isinstance(fields, list) or len(fields) < 5 or not isinstance(fields[1], str):
        return None, None
    return fields[1], _finite(fields[4])


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def render(client: redis.Redis, queue: str, *, named: bool = True) -> bytes:
    """The metrics in the text format; `named=False` leaves out namespaces and names."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PystolCollector(client, queue, named=named))
    return generate_latest(registry)


def _require_token(expected: str) -> None:
    """401 problem unless the request carries `Authorization: Bearer <expected>` (compared
    as SHA-256 digests in constant time, like the API's tokens)."""
    scheme, _, given = (request.headers.get("Authorization") or "").strip().partition(" ")
    given = given.strip()
    if scheme.lower() == "bearer" and given and hmac.compare_digest(
            hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()):
        return
    raise ApiProblem(401, "unauthorized", "Authentication required",
                     "/metrics needs `Authorization: Bearer <PYSTOL_METRICS_TOKEN>`",
                     headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})


def install(app: Flask, client: redis.Redis, queue: str, token: str = "") -> str:
    """Add the `GET /metrics` route, outside the API's authentication: with `token`, it
    checks that token itself and shows everything; without, it is public and shows no
    names. Returns its endpoint name."""
    endpoint = "metrics"

    def metrics_view() -> Response:
        if token:
            _require_token(token)
        return Response(render(client, queue, named=bool(token)), mimetype=None,
                        headers={"Content-Type": CONTENT_TYPE_LATEST,
                                 "Cache-Control": "no-store"})

    app.add_url_rule(METRICS_PATH, endpoint=endpoint, view_func=metrics_view, methods=["GET"])
    return endpoint
