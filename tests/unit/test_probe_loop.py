"""Continuous and on-chaos probes while a fault is held (design §3.4), on the fake
cluster: a stop-on-failure probe ends the hold at once and everything is reverted; a
failure without it is recorded and the job goes on; on-chaos probes wait for the fault;
a released fault ends early; a step of an experiment stops its run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pystol_worker.core.model import JobSpec, JobStatus, Source, Verdict
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.kube.fake_cluster import PASS, FakeCluster
from pystol_worker.probes.loop import ProbeLoop, next_due
from pystol_worker.safety.job_context import JobAborted, RunContext
from pystol_worker.store import run_signals
from tests.support.fake_jobs import LOOPBACK_PROBES, FakeJobs
from tests.support.grants import ADMIN, store_job
from tests.support.manual_clock import ManualClock


class Switch:
    """An HTTP server answering `status` (the test flips it) to any GET."""

    def __init__(self) -> None:
        self.status = 200
        self.url = ""
        self.calls = 0


@contextmanager
def switch_server() -> Iterator[Switch]:
    switch = Switch()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            switch.calls += 1
            self.send_response(switch.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    switch.url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield switch
    finally:
        server.shutdown()
        server.server_close()


def cordon(probe: dict[str, Any], duration: str = "60s") -> dict[str, Any]:
    return {"action": "node-cordon", "target": {"names": ["n1"]}, "duration": duration,
            "probes": [probe]}


def continuous(url: str, **run: Any) -> dict[str, Any]:
    return {"name": "web-ok", "url": url, "mode": "continuous",
            "run": {"interval": "0.5s", "timeout": "0.4s", **run}}


def cordoned(jobs: FakeJobs) -> bool:
    node = jobs.fake.get("Node", None, "n1") or {}
    return bool(node.get("spec", {}).get("unschedulable"))


def flip_when_injected(jobs: FakeJobs, switch: Switch, after: float = 0.8) -> None:
    injected = jobs.when_injected()

    def flip() -> None:
        if injected.wait(10):
            time.sleep(after)
            switch.status = 503
    threading.Thread(target=flip, daemon=True).start()


def test_a_stop_on_failure_probe_aborts_the_hold_and_reverts_within_one_interval() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    jobs.fake.add_node("n1")
    with switch_server() as switch:
        flip_when_injected(jobs, switch)
        started = time.monotonic()
        record = jobs.run(cordon(continuous(switch.url, stop_on_failure=True)), within=20)
    assert time.monotonic() - started < 10  # not the 60 s hold

    assert record.status == JobStatus.ABORTED
    assert record.verdict == Verdict.DEVIATED
    assert (record.reason or "").startswith("stopped by probe web-ok (continuous): ")
    assert "answered 503" in (record.reason or "")
    assert not cordoned(jobs) and jobs.journal_entries() == []
    failing = [o for o in record.result.probes if not o.ok]
    assert failing and all(o.phase == "during" for o in record.result.probes)
    first_failure = failing[0]
    assert first_failure.ended_at is not None
    [change] = record.result.changes
    assert change.reverted_at is not None
    assert (change.reverted_at - first_failure.ended_at).total_seconds() < 0.5  # interval
    [summary] = record.result.probe_summary
    assert summary.name == "web-ok" and summary.failed == 1 and summary.passed >= 1
    kinds = [event.kind for event in record.timeline]
    assert "probe-failed" in kinds and "probe-stopped" in kinds
    assert kinds.index("probe-stopped") < kinds.index("reverted")
    assert record.score is not None and record.score < 100


def test_a_failure_without_stop_on_failure_is_recorded_and_the_hold_goes_on() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    jobs.fake.add_node("n1")
    with switch_server() as switch:
        flip_when_injected(jobs, switch, after=0.3)
        record = jobs.run(cordon(continuous(switch.url), duration="2s"), within=20)
    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert record.verdict == Verdict.DEVIATED  # it held, and the system deviated
    assert "probes failed during the fault: web-ok" in (record.reason or "")
    [summary] = record.result.probe_summary
    assert summary.failed >= 2 and summary.runs == summary.passed + summary.failed
    assert not cordoned(jobs)


def test_on_chaos_probes_wait_for_the_injection() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    jobs.fake.add_node("n1")
    seen_cordoned = []
    with switch_server() as switch:
        probe = {**continuous(switch.url), "mode": "on-chaos"}

        def watch() -> None:
            while switch.calls == 0:
                time.sleep(0.01)
            seen_cordoned.append(cordoned(jobs))
        threading.Thread(target=watch, daemon=True).start()
        record = jobs.run(cordon(probe, duration="1.2s"), within=20)
    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert seen_cordoned == [True]  # its first call came after the injection
    assert record.verdict == Verdict.PASSED and record.score == 100.0


def test_a_released_fault_ends_early_and_is_reverted() -> None:
    jobs = FakeJobs()
    jobs.fake.add_node("n1")
    injected = jobs.when_injected()
    started = time.monotonic()
    with jobs.running(cordon({}, duration="60s") | {"probes": []}) as job_id:
        assert injected.wait(10)
        run_signals.release_job(jobs.redis, job_id)
    record = jobs.store.get(job_id)
    assert time.monotonic() - started < 10
    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert "released" in [event.kind for event in record.timeline]
    assert not cordoned(jobs)


def test_a_probe_of_an_experiment_step_stops_the_run() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    jobs.fake.add_node("n1")
    with switch_server() as switch:
        flip_when_injected(jobs, switch, after=0.3)
        spec = cordon(continuous(switch.url, stop_on_failure=True)) | {
            "experiment": {"run_id": "x-1", "path": "method[0]"}}
        job_id = store_job(jobs.store, JobSpec.model_validate(spec), identity=ADMIN,
                           source=Source.EXPERIMENT, settings=jobs.settings,
                           registry=jobs.runner.registry).id
        record = jobs.run_stored(job_id, within=20)
    assert record.status == JobStatus.ABORTED and record.verdict == Verdict.DEVIATED
    assert (record.experiment_run_id, record.step) == ("x-1", "method[0]")
    stop = run_signals.run_stopped(jobs.redis, "x-1")
    assert stop is not None and stop.cause == "probe" and stop.by == job_id
    assert "web-ok" in stop.reason


def test_a_sibling_stopped_by_a_probe_of_its_run_is_deviated_too() -> None:
    jobs = FakeJobs()
    jobs.fake.add_node("n1")
    spec = cordon({}) | {"probes": [],
                                           "experiment": {"run_id": "x-2", "path": "m[1]"}}
    job_id = store_job(jobs.store, JobSpec.model_validate(spec), identity=ADMIN,
                       source=Source.EXPERIMENT, settings=jobs.settings,
                       registry=jobs.runner.registry).id
    injected = jobs.when_injected()
    thread = threading.Thread(target=jobs.runner.run, args=(job_id, "w"), daemon=True)
    thread.start()
    assert injected.wait(10)
    run_signals.stop_run(jobs.redis, "x-2", "probe", "stopped by probe web-ok", by="j-other")
    thread.join(10)
    record = jobs.store.get(job_id)
    assert record.status == JobStatus.ABORTED and record.verdict == Verdict.DEVIATED
    assert "experiment run x-2 stopped: stopped by probe web-ok" in (record.reason or "")
    assert not cordoned(jobs)


# -- the schedule, the cap, hold and sleep --------------------------------------------------


class LoopContext:
    """What ProbeLoop reads of a job's RunContext, with the timeline kept in a list."""

    def __init__(self, fake: FakeCluster) -> None:
        self.settings, self.policy, self.cluster = Settings(), Policy(), fake
        self.stop, self.injected = threading.Event(), threading.Event()
        self.job_id, self.run_id, self.events = "j-1", None, []
        self.abort_reason: str | None = None

    def cancelled(self) -> bool:
        return self.stop.is_set()

    def event(self, kind: str, message: str, **data: Any) -> None:
        self.events.append((kind, message))

    def stop_for_probe(self, reason: str) -> None:
        self.abort_reason = reason
        self.stop.set()


def pod_present(interval: str = "0.5s") -> Any:
    return JobSpec.model_validate({"action": "node-cordon", "target": {"names": ["n1"]},
                                   "probes": [{"type": "k8s", "name": "web-1",
                                               "namespace": "shop", "mode": "continuous",
                                               "run": {"interval": interval,
                                                       "timeout": "0.4s"},
                                               "object": {"kind": "Pod", "name": "web-1"}}]
                                   }).probes[0]


def wait_until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_looping_probes_run_on_a_fixed_grid_and_skip_missed_ticks() -> None:
    fake = FakeCluster()
    fake.add_pod("shop", "web-1")
    clock = ManualClock(100.0)
    loop = ProbeLoop(LoopContext(fake), [pod_present()], clock=clock).start()
    try:
        wait_until(lambda: len(loop.outcomes) == 1)  # at start: due at 100.0
        clock.now = 100.49
        time.sleep(0.3)
        assert len(loop.outcomes) == 1  # not due before 100.5
        clock.now = 100.5
        wait_until(lambda: len(loop.outcomes) == 2)
        clock.now = 102.7  # late: 101.0 .. 102.5 were missed
        wait_until(lambda: len(loop.outcomes) == 3)
        time.sleep(0.3)
        assert len(loop.outcomes) == 3  # one run for the missed ticks, not five
        clock.now = 102.99
        time.sleep(0.3)
        assert len(loop.outcomes) == 3  # the next is due at 103.0, on the grid
        clock.now = 103.0
        wait_until(lambda: len(loop.outcomes) == 4)
    finally:
        loop.stop()
    assert [o.iteration for o in loop.outcomes] == [0, 1, 2, 3]
    assert next_due(100.0, 102.7, 0.5) == 103.0 and next_due(100.0, 100.1, 0.5) == 100.5


def test_outcomes_are_capped_and_then_only_failures_kept_but_all_counted() -> None:
    fake = FakeCluster()
    fake.add_pod("shop", "web-1")
    clock = ManualClock(0.0)
    ctx = LoopContext(fake)
    loop = ProbeLoop(ctx, [pod_present()], clock=clock, keep_per_probe=2).start()
    try:
        for tick in range(6):
            if tick == 3:
                fake.delete("Pod", "shop", "web-1")  # from the 4th run on, it fails
            clock.now = tick * 0.5
            wait_until(lambda tick=tick: loop.summaries[0].runs == tick + 1)
    finally:
        loop.stop()
    assert [o.ok for o in loop.outcomes] == [True, True, False, False]
    [summary] = loop.summaries
    assert (summary.runs, summary.passed, summary.failed) == (6, 3, 3)
    assert summary.first_failure_at is not None
    assert [kind for kind, _ in ctx.events] == ["probing", "probe-failed"]  # first failure only
    assert not ctx.stop.is_set()


def test_hold_ends_early_on_release_and_sleep_does_not() -> None:
    jobs = FakeJobs()
    job_id = jobs.submit({"action": "node-cordon", "target": {"names": ["n1"]}})
    ctx = RunContext(settings=jobs.settings, cluster=jobs.fake, store=jobs.store,
                     job_id=job_id, journal=jobs.journal, locks=jobs.runner.locks,
                     undo_functions=jobs.runner.registry.undo_registry())
    run_signals.release_job(jobs.redis, job_id)
    started = time.monotonic()
    ctx.sleep(0.6)  # a pause is not a hold: a release does not shorten it
    assert time.monotonic() - started >= 0.6
    assert ctx.hold(30) is True and time.monotonic() - started < 2
    ctx.stop_for_probe("stopped by probe p (continuous): failed")
    with pytest.raises(JobAborted, match="stopped by probe p"):
        ctx.hold(30)
    assert ctx.stopped_by_probe


def test_a_probe_that_stops_the_job_before_any_injection_skips_it() -> None:
    jobs = FakeJobs(policy=LOOPBACK_PROBES)
    jobs.fake.add_node("n1")
    with switch_server() as switch:
        switch.status = 503  # unhealthy from the start

        def after_the_probe(request: Any) -> Any:
            # execute reads the node before cordoning it: let the loop's first call fail first
            deadline = time.monotonic() + 2
            while switch.calls == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)
            return PASS
        jobs.fake.prepend_reactor("get", "nodes", after_the_probe)
        record = jobs.run(cordon(continuous(switch.url, stop_on_failure=True)), within=20)
    assert record.status == JobStatus.SKIPPED and record.verdict == Verdict.SKIPPED
    assert (record.reason or "").startswith("steady state not met before injection: stopped "
                                            "by probe web-ok")
    assert record.result.changes == [] and not cordoned(jobs)
    assert jobs.fake.called("patch", "nodes") == []
