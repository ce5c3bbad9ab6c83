"""The worker's Redis round trips: how many a job costs, and what each write keeps safe.

A claim is one compare-and-set (read, then a script that writes only if the record is
still what was read) carrying the status, its indexes, the `started` event, the dispatch
metric and the heartbeat; a finish is one more, a selection one more. The counts are
exact (a connection class that counts what it sends, injected into the client), so a
change that adds a round trip to a job fails here. The safety half: a redelivered task is
refused, a running job always has a heartbeat, and a cancel requested while the job
writes its selection is kept.
"""

from __future__ import annotations

from typing import Any

import fakeredis
from fakeredis import FakeServer
from fakeredis._clients._sync import FakeRedisConnection

from pystol_worker.core.model import EventKind, JobRecord, JobStatus
from pystol_worker.kube.fake_cluster import PASS, Request
from pystol_worker.safety.job_context import JobAborted, RunContext
from pystol_worker.store.job_store import TransitionRefused
from pystol_worker.store.metrics import DISPATCH_LATENCY, HISTOGRAMS_KEY, field_key
from tests.support.fake_jobs import FakeJobs, app_deployment

DRY_RUN = {"action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                            "mode": "one"}, "dry_run": True}


class Counting(FakeRedisConnection):
    """Records the command name of every round trip (a pipeline counts once, by its
    first command); `on_send` is called before each one is sent."""

    sent: list[str] = []
    on_send: Any = None

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if Counting.on_send is not None:
            Counting.on_send()
        packed = b"".join(command) if isinstance(command, list) else command
        Counting.sent.append(packed.split(b"\r\n")[2].decode().upper())
        super().send_packed_command(command, check_health)


def counted_jobs() -> tuple[FakeJobs, fakeredis.FakeRedis]:
    """FakeJobs on a counting client, plus an uncounted client of the same server."""
    Counting.sent, Counting.on_send = [], None
    server = FakeServer()
    jobs = FakeJobs(redis=fakeredis.FakeRedis(server=server, connection_class=Counting))
    app_deployment(jobs.fake, replicas=3)
    jobs.run(DRY_RUN)  # loads the scripts and opens the connection: not what is counted
    return jobs, fakeredis.FakeRedis(server=server)


def test_a_claim_is_two_round_trips_that_also_start_the_heartbeat_and_the_timeline() -> None:
    jobs, look = counted_jobs()
    job_id = jobs.submit(DRY_RUN)
    Counting.sent.clear()

    record = jobs.store.claim(job_id, "worker-1", also=[jobs.journal.beat_command(job_id)])

    assert Counting.sent == ["GET", "EVALSHA"]
    assert record.status == JobStatus.RUNNING and record.worker == "worker-1"
    assert jobs.journal.alive(job_id)
    stored = jobs.store.get(job_id)
    assert stored.started_at == record.started_at
    assert [event.kind for event in stored.timeline] == [EventKind.QUEUED, EventKind.STARTED]
    assert stored.timeline[-1].at == record.started_at
    assert look.zscore("pystol:jobs:status:running", job_id) == look.zscore("pystol:jobs",
                                                                             job_id)
    assert look.zscore("pystol:jobs:status:queued", job_id) is None
    # the warm-up job's dispatch, and this one's
    assert look.hget(HISTOGRAMS_KEY, field_key(DISPATCH_LATENCY, {}, "count")) == b"2"


def test_a_redelivered_claim_is_refused_and_changes_nothing() -> None:
    jobs, look = counted_jobs()
    job_id = jobs.submit(DRY_RUN)
    first = jobs.store.claim(job_id, "worker-1")
    before = look.get(f"pystol:job:{job_id}")

    try:
        jobs.store.claim(job_id, "worker-2", also=[jobs.journal.beat_command(job_id)])
    except TransitionRefused as refused:
        assert "job is running, not queued" in str(refused)
    else:
        raise AssertionError("a second claim of a running job was not refused")

    assert look.get(f"pystol:job:{job_id}") == before
    assert jobs.store.get(job_id).worker == first.worker == "worker-1"
    assert not jobs.journal.alive(job_id)  # the refused claim's heartbeat was not written
    assert [e.kind for e in jobs.store.timeline(job_id)].count(EventKind.STARTED) == 1


def test_a_dry_run_job_costs_five_round_trips_in_the_worker() -> None:
    jobs, _ = counted_jobs()
    job_id = jobs.submit(DRY_RUN)
    Counting.sent.clear()

    status = jobs.runner.run(job_id, "worker-1")
    sent = list(Counting.sent)
    record = jobs.store.get(job_id)

    assert status == record.status == JobStatus.SUCCEEDED, record.reason
    # claim (read, compare-and-set), the stop signals before anything reads the cluster,
    # the selection with its event, the finish with its event, metrics and heartbeat
    assert sent == ["GET", "EVALSHA", "MGET", "EVALSHA", "EVALSHA"]
    assert [e.kind for e in record.timeline] == [EventKind.QUEUED, EventKind.STARTED,
                                                 EventKind.SELECTED, EventKind.SUCCEEDED]
    assert len(record.targets) == 1 and record.metrics.targets_selected == 1
    assert not jobs.journal.alive(job_id)


def test_a_running_job_is_never_seen_without_its_heartbeat() -> None:
    jobs, look = counted_jobs()
    job_id = jobs.submit(DRY_RUN)
    seen: list[tuple[str, bool]] = []

    def observe() -> None:  # before every round trip of the job, from another client
        raw = look.get(f"pystol:job:{job_id}")
        status = JobRecord.model_validate_json(raw).status.value if raw else "?"
        seen.append((status, bool(look.exists(f"pystol:heartbeat:{job_id}"))))
    Counting.on_send = observe
    record = jobs.run_stored(job_id)
    Counting.on_send = None
    observe()

    assert record.status == JobStatus.SUCCEEDED
    assert ("running", True) in seen
    assert ("running", False) not in seen, seen
    assert seen[-1] == ("succeeded", False)  # ended and its heartbeat gone in one write


def test_a_cancel_requested_while_the_job_records_its_selection_is_kept() -> None:
    jobs, _ = counted_jobs()
    job_id = jobs.submit({**DRY_RUN, "dry_run": False})

    def cancel_during_selection(request: Request) -> Any:
        # Between the claim and the selection's write, someone asks to cancel: the write
        # that follows must not put back the record the job read before.
        if not jobs.store.get(job_id, with_timeline=False).cancel_requested:
            jobs.store.request_cancel(job_id, "alice")
        return PASS
    jobs.fake.prepend_reactor("list", "pods", cancel_during_selection)

    record = jobs.run_stored(job_id)

    assert record.cancel_requested
    assert record.status == JobStatus.ABORTED, record.reason
    assert record.reason == "aborted: cancelled by alice"
    assert len(record.targets) == 1  # and the selection was written too
    kinds = [e.kind for e in record.timeline]
    assert kinds.index(EventKind.CANCEL_REQUESTED) < kinds.index(EventKind.SELECTED)
    assert not [r for r in jobs.fake.requests if r.verb == "delete"]


def test_a_pause_of_no_length_reads_nothing_and_a_real_one_checks_the_stop_signals() -> None:
    jobs, _ = counted_jobs()
    job_id = jobs.submit(DRY_RUN)
    ctx = RunContext(settings=jobs.settings, cluster=jobs.fake, store=jobs.store,
                     job_id=job_id, journal=jobs.journal, locks=jobs.runner.locks,
                     undo_functions=jobs.runner.registry.undo_registry())
    Counting.sent.clear()

    ctx.sleep(0)
    assert Counting.sent == []
    ctx.sleep(0.01)
    assert Counting.sent[0] == "MGET"

    jobs.store.redis.set(f"pystol:job:{job_id}:cancel", "alice")
    try:
        ctx.sleep(0.01)
    except JobAborted as aborted:
        assert str(aborted) == "aborted: cancelled by alice"
    else:
        raise AssertionError("a sleep did not wake on a cancel")
