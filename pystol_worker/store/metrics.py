"""Pystol's metrics, recording side: counters and histograms kept in Redis.

Workers, beat, the watcher and the API run in many processes, possibly on many machines,
so no process keeps metrics of its own: each records into two Redis hashes, one pipeline
per job event, and the API's `/metrics` endpoint (`pystol_api.http.metrics_endpoint`) reads
them at scrape time. Counters and histogram buckets only ever grow (HINCRBY /
HINCRBYFLOAT), so any number of processes can record at once.

Layout:
- `pystol:metrics:counters`  field `["name", {labels}]` -> count
- `pystol:metrics:hist`      field `["name", {labels}, part]` -> value, where part is a
  bucket's upper bound (non-cumulative count of observations in that bucket), `"sum"` or
  `"count"`.
- `pystol:metrics:namespaces`  the namespaces that may appear as a label value.

Counters are never reset, so every label value ever recorded is a field for ever: each
label's values must come from a bounded set. Actions are the registered ones (a job
naming another is refused before it is stored), statuses, verdicts, outcomes, verbs and
codes are fixed sets. Namespaces are not: they come and go with the cluster (one per CI
run, say), so the first MAX_NAMESPACE_LABELS distinct ones keep their name and any other
is recorded as `_other` (no namespace can be called that). Job and schedule ids are
never labels.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from pystol_worker.core.model import ChangeStatus, JobRecord, JobStatus

log = logging.getLogger("pystol.metrics")

PREFIX = "pystol:"
COUNTERS_KEY = PREFIX + "metrics:counters"
HISTOGRAMS_KEY = PREFIX + "metrics:hist"
NAMESPACE_LABELS_KEY = PREFIX + "metrics:namespaces"
MAX_NAMESPACE_LABELS = 100
OTHER_NAMESPACE = "_other"
# Admits namespaces as label values, atomically, while fewer than ARGV[1] are admitted;
# returns 1 (admitted) or 0 (over the bound) per namespace in ARGV[2..].
ADMIT_NAMESPACES = """
local bound = tonumber(ARGV[1])
local admitted = {}
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    admitted[i - 1] = 1
  elseif redis.call('SCARD', KEYS[1]) < bound then
    redis.call('SADD', KEYS[1], ARGV[i])
    admitted[i - 1] = 1
  else
    admitted[i - 1] = 0
  end
end
return admitted
"""

SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                   1800.0, 3600.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # counter | histogram | gauge
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


JOBS_SUBMITTED = MetricDef("pystol_jobs_submitted_total", "counter",
                           "Jobs stored for running, by action and where they came from.",
                           ("action", "source"))
JOBS_FINISHED = MetricDef("pystol_jobs_finished_total", "counter",
                          "Jobs that reached a terminal status.",
                          ("action", "status", "verdict"))
TARGETS_AFFECTED = MetricDef("pystol_targets_affected_total", "counter",
                             "Targets a job changed (faults injected).",
                             ("action", "namespace"))
REVERTS = MetricDef("pystol_reverts_total", "counter",
                    "Reverts of injected faults, by outcome (reverted, failed).",
                    ("action", "outcome"))
JOURNAL_REFUSED = MetricDef("pystol_revert_journal_refused_total", "counter",
                            "Revert-journal entries refused and never undone, by reason "
                            "(unsigned, altered, unreadable, protected): something other "
                            "than Pystol wrote to Redis.", ("reason",))
KUBE_REQUESTS = MetricDef("pystol_kube_api_requests_total", "counter",
                          "Requests to the Kubernetes API by verb and HTTP status "
                          "(0: no answer).", ("verb", "code"))
JOB_DURATION = MetricDef("pystol_job_duration_seconds", "histogram",
                         "From start to terminal status, for jobs that started.",
                         ("action",), SECONDS_BUCKETS)
DISPATCH_LATENCY = MetricDef("pystol_dispatch_latency_seconds", "histogram",
                             "From submission (created_at) to a worker starting the job.",
                             (), LATENCY_BUCKETS)
RECOVERY = MetricDef("pystol_recovery_seconds", "histogram",
                     "From first injection to the workload being back at its desired ready "
                     "replicas.", ("action", "namespace", "workload_kind"), SECONDS_BUCKETS)
# Gauges: computed by the API at scrape time from the job store, the queue and the journal.
JOBS_RUNNING = MetricDef("pystol_jobs_running", "gauge", "Jobs running now.", ("action",))
QUEUE_DEPTH = MetricDef("pystol_queue_depth", "gauge", "Jobs waiting in the Celery queue.",
                        ("queue",))
JOURNAL_ENTRIES = MetricDef("pystol_revert_journal_entries", "gauge",
                            "Changes in the revert journal not reverted yet.")
HALTED = MetricDef("pystol_halted", "gauge", "1 while the global chaos halt is engaged.")

EXPERIMENT_RUNS = MetricDef("pystol_experiment_runs_total", "counter",
                            "Experiment runs that ended, by experiment and verdict.",
                            ("experiment", "verdict"))
EXPERIMENT_LABELS_KEY = PREFIX + "metrics:experiments"

COUNTERS = (JOBS_SUBMITTED, JOBS_FINISHED, TARGETS_AFFECTED, REVERTS, KUBE_REQUESTS,
            JOURNAL_REFUSED, EXPERIMENT_RUNS)
HISTOGRAMS = (JOB_DURATION, DISPATCH_LATENCY, RECOVERY)
GAUGES = (JOBS_RUNNING, QUEUE_DEPTH, JOURNAL_ENTRIES, HALTED)


def field_key(metric: MetricDef, labels: dict[str, str], part: str | None = None) -> str:
    values = {name: str(labels.get(name, "")) for name in metric.labels}
    item: list[Any] = [metric.name, values]
    if part is not None:
        item.append(part)
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


def bound_text(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class Recorder:
    """Collects increments and writes them in one pipeline (`flush`)."""

    def __init__(self) -> None:
        self.counters: dict[str, float] = {}
        self.hist: dict[str, float] = {}

    def inc(self, metric: MetricDef, labels: dict[str, str], amount: float = 1) -> Recorder:
        key = field_key(metric, labels)
        self.counters[key] = self.counters.get(key, 0) + amount
        return self

    def observe(self, metric: MetricDef, labels: dict[str, str], value: float) -> Recorder:
        value = max(0.0, float(value))
        bound = next((b for b in metric.buckets if value <= b), math.inf)
        for part, amount in ((bound_text(bound), 1.0), ("count", 1.0), ("sum", value)):
            key = field_key(metric, labels, part)
            self.hist[key] = self.hist.get(key, 0) + amount
        return self

    def commands(self) -> list[tuple[str, str, str, str]]:
        """The increments as Redis commands (HINCRBY or HINCRBYFLOAT), for a caller that
        writes them inside its own transaction (the job store's claim and finish), so that
        a job's metrics cost no round trip of their own."""
        found = []
        for hash_key, items in ((COUNTERS_KEY, self.counters), (HISTOGRAMS_KEY, self.hist)):
            for key, amount in items.items():
                if float(amount).is_integer():
                    found.append(("HINCRBY", hash_key, key, str(int(amount))))
                else:
                    found.append(("HINCRBYFLOAT", hash_key, key, repr(float(amount))))
        return found

    def flush(self, client: redis.Redis) -> None:
        if not self.counters and not self.hist:
            return
        try:
            with client.pipeline(transaction=False) as pipe:
                for key, amount in self.counters.items():
                    _incr(pipe, COUNTERS_KEY, key, amount)
                for key, amount in self.hist.items():
                    _incr(pipe, HISTOGRAMS_KEY, key, amount)
                pipe.execute()
        except redis.RedisError as error:  # metrics never fail a job
            log.warning("could not record metrics: %s", error)
        self.counters.clear()
        self.hist.clear()


def _incr(pipe: Any, key: str, field: str, amount: float) -> None:
    if float(amount).is_integer():
        pipe.hincrby(key, field, int(amount))
    else:
        pipe.hincrbyfloat(key, field, amount)


# -- what the job store and the runner call --------------------------------------------------


def verdict_of(record: JobRecord) -> str:
    """The record's verdict (`passed`, `failed`, `deviated`, `aborted`, `skipped`: the
    runner stores it). A record finished before verdicts were stored (or by a path that
    sets none) is judged by its status: an error that is not a probe's is `aborted`."""
    if record.verdict is not None:
        return record.verdict.value
    if record.status == JobStatus.SUCCEEDED:
        return "passed"
    if record.status == JobStatus.SKIPPED:
        return "skipped"
    if record.status == JobStatus.FAILED and (record.reason or "").startswith("steady state"):
        return "failed"
    return "aborted"


def record_submitted(client: redis.Redis, record: JobRecord) -> None:
    Recorder().inc(JOBS_SUBMITTED, {"action": record.spec.action,
                                    "source": record.source.value}).flush(client)


def submitted_field(record: JobRecord) -> str:
    """The COUNTERS_KEY field `record_submitted` increments; the submit script
    (`store/submit_script.py`) increments it in the same round trip that stores the job."""
    return field_key(JOBS_SUBMITTED, {"action": record.spec.action,
                                      "source": record.source.value})


def namespace_labels(client: redis.Redis, namespaces: set[str]) -> dict[str, str]:
    """The label value of each namespace: itself, or OTHER_NAMESPACE once
    MAX_NAMESPACE_LABELS others have been admitted (and when Redis cannot say: metrics
    never fail a job). The empty namespace (a node) is left as it is."""
    wanted = sorted(namespace for namespace in namespaces if namespace)
    labels: dict[str, str] = {namespace: namespace for namespace in namespaces
                              if not namespace}
    if not wanted:
        return labels
    try:
        admitted = cast(list[int], client.eval(ADMIT_NAMESPACES, 1, NAMESPACE_LABELS_KEY,
                                               MAX_NAMESPACE_LABELS, *wanted))
    except redis.RedisError as error:
        log.warning("could not admit namespace labels: %s", error)
        admitted = [0] * len(wanted)
    for namespace, ok in zip(wanted, admitted, strict=True):
        labels[namespace] = namespace if int(ok) else OTHER_NAMESPACE
    return labels


def record_finished(client: redis.Redis, record: JobRecord) -> None:
    """Everything a terminal job contributes, in one pipeline (two when it changed
    something in a namespace: the namespaces' label values are looked up first)."""
    finished_recorder(client, record).flush(client)


def finished_commands(client: redis.Redis, record: JobRecord) -> list[tuple[str, str, str, str]]:
    """`record_finished` as commands, for the job store's finish to write with the record
    (the namespaces' label values are still looked up first when it changed something)."""
    return finished_recorder(client, record).commands()


def finished_recorder(client: redis.Redis, record: JobRecord) -> Recorder:
    action = record.spec.action
    namespaces = namespace_labels(
        client, {change.target.namespace or "" for change in record.result.changes}
        | {recovery.workload.namespace for recovery in record.result.recovery})
    rec = Recorder()
    rec.inc(JOBS_FINISHED, {"action": action, "status": record.status.value,
                            "verdict": verdict_of(record)})
    if record.duration_seconds is not None:
        rec.observe(JOB_DURATION, {"action": action}, record.duration_seconds)
    for change in record.result.changes:
        rec.inc(TARGETS_AFFECTED, {"action": action,
                                   "namespace": namespaces[change.target.namespace or ""]})
        if change.status == ChangeStatus.REVERTED:
            rec.inc(REVERTS, {"action": action, "outcome": "reverted"})
        elif change.status == ChangeStatus.FAILED:
            rec.inc(REVERTS, {"action": action, "outcome": "failed"})
    for recovery in record.result.recovery:
        if recovery.recovery_seconds is not None:
            rec.observe(RECOVERY, {"action": action,
                                   "namespace": namespaces[recovery.workload.namespace],
                                   "workload_kind": recovery.workload.kind},
                        recovery.recovery_seconds)
    return rec


def record_started(client: redis.Redis, record: JobRecord) -> None:
    started_recorder(record).flush(client)


def started_commands(record: JobRecord) -> list[tuple[str, str, str, str]]:
    """`record_started` as commands, for the job store's claim to write with the record."""
    return [] if record.started_at is None else started_recorder(record).commands()


def started_recorder(record: JobRecord) -> Recorder:
    rec = Recorder()
    if record.started_at is not None:
        rec.observe(DISPATCH_LATENCY, {}, (record.started_at - record.created_at).total_seconds())
    return rec


def record_orphan_reverts(client: redis.Redis, undone: list[Any], failed: list[Any]) -> None:
    """Reverts of journal entries a job left (the reaper, a redelivered job): each attempt
    counts, so a revert that keeps failing keeps counting."""
    rec = Recorder()
    for outcome, entries in (("reverted", undone), ("failed", failed)):
        for entry in entries:
            rec.inc(REVERTS, {"action": entry.action, "outcome": outcome})
    rec.flush(client)


def record_journal_refused(client: redis.Redis, reasons: list[str]) -> None:
    """Journal entries refused (see pystol_worker/safety/revert_journal.py), by reason."""
    rec = Recorder()
    for reason in reasons:
        rec.inc(JOURNAL_REFUSED, {"reason": reason})
    rec.flush(client)


class KubeRequestCounter:
    """`ClusterAccess(on_request=...)`: counts in memory, writes to Redis at most every
    `interval` seconds (and on `flush`), so a Kubernetes request never waits for Redis."""

    def __init__(self, client: redis.Redis, interval: float = 5.0) -> None:
        self.client = client
        self.interval = interval
        self._lock = threading.Lock()
        self._pending = Recorder()
        self._last = time.monotonic()

    def __call__(self, verb: str, code: int) -> None:
        with self._lock:
            self._pending.inc(KUBE_REQUESTS, {"verb": verb, "code": str(code)})
            due = time.monotonic() - self._last >= self.interval
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Recorder()
            self._last = time.monotonic()
        pending.flush(self.client)


def record_experiment_finished(client: redis.Redis, experiment: str, verdict: str) -> None:
    """One ended experiment run. The `experiment` label is bounded like `namespace`: the
    first MAX_NAMESPACE_LABELS names are admitted, the rest are counted as `_other`, so
    nobody can grow the scrape without bound by naming experiments. The engine calls this
    once, in the write that makes a run terminal. Metrics never fail a run."""
    try:
        admitted = cast(list[int], client.eval(ADMIT_NAMESPACES, 1, EXPERIMENT_LABELS_KEY,
                                               MAX_NAMESPACE_LABELS, experiment))
        label = experiment if int(admitted[0]) else OTHER_NAMESPACE
        Recorder().inc(EXPERIMENT_RUNS, {"experiment": label, "verdict": verdict}
                       ).flush(client)
    except redis.RedisError as error:
        log.warning("could not count the experiment run: %s", error)
