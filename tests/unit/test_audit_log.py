"""The audit trail in (fake) Redis and on logger `pystol.audit`: filters, paging, the cap,
retention with an injected clock, the JSON log line, and Redis failures."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
import redis

from pystol_worker.core.access import Actor, ActorKind, Role
from pystol_worker.core.logging_setup import configure_logging
from pystol_worker.store import audit_log
from pystol_worker.store.audit_log import STREAM_KEY, AuditLog
from tests.support.manual_clock import ManualClock

T0 = 1_750_000_000.0
ADMIN = Actor(kind=ActorKind.SETTINGS_TOKEN, name="token-1234abcd", role=Role.ADMIN)
CI = Actor(kind=ActorKind.TOKEN, name="ci", role=Role.OPERATOR, namespaces=["shop"])
SCHEDULE = Actor(kind=ActorKind.SCHEDULE, name="nightly", on_behalf_of="token:ci")



@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def make_log(fake: redis.Redis, clock: ManualClock, max_records: int = 1000,
             retention: float = 86400) -> AuditLog:
    return AuditLog(fake, max_records=max_records, retention_seconds=retention, clock=clock,
                    approximate=False)


@pytest.fixture
def trail(fake: fakeredis.FakeRedis, clock: ManualClock) -> AuditLog:
    return make_log(fake, clock)


def fill(trail: AuditLog, clock: ManualClock) -> None:
    """Six records, one second apart."""
    trail.record(ADMIN, "token.create", targets=["ci"])
    clock.now += 1
    trail.record(CI, "job.submit", targets=["shop"], namespaces=["shop"], job_id="j-1")
    clock.now += 1
    trail.record(CI, "job.submit", outcome="refused", targets=["payments"],
                 namespaces=["payments"], detail="token:ci may not jobs.submit in payments")
    clock.now += 1
    trail.record(SCHEDULE, "job.submit", targets=["shop"], namespaces=["shop"], job_id="j-2",
                 schedule_id="nightly")
    clock.now += 1
    trail.record(ADMIN, "schedule.pause", targets=["nightly"], schedule_id="nightly")
    clock.now += 1
    trail.record(ADMIN, "halt.engage", detail="incident")


def test_record_returns_the_stored_record(trail: AuditLog) -> None:
    record = trail.record(CI, "job.submit", targets=["shop"], namespaces=["shop", "shop"],
                          job_id="j-1")
    assert record.id.startswith(f"{int(T0 * 1000)}-")
    assert record.at == datetime.fromtimestamp(T0, UTC)
    assert record.namespaces == ["shop"] and record.outcome == "ok"
    [read], cursor = trail.read()
    assert read == record and cursor is None


def test_newest_first_and_filters(trail: AuditLog, clock: ManualClock) -> None:
    fill(trail, clock)

    def ops(**filters: object) -> list[str]:
        items, _ = trail.read(**filters)  # type: ignore[arg-type]
        return [f"{item.operation}/{item.outcome}" for item in items]

    assert ops() == ["halt.engage/ok", "schedule.pause/ok", "job.submit/ok",
                     "job.submit/refused", "job.submit/ok", "token.create/ok"]
    assert ops(operation="job.submit", outcome="ok") == ["job.submit/ok"] * 2
    assert ops(operation="job") == ["job.submit/ok", "job.submit/refused", "job.submit/ok"]
    assert ops(operation="jo") == []
    assert ops(namespace="payments") == ["job.submit/refused"]
    assert ops(actor="ci") == ["job.submit/refused", "job.submit/ok"]
    assert ops(actor="token:ci") == ["job.submit/ok", "job.submit/refused", "job.submit/ok"]
    assert ops(actor="nightly") == ["job.submit/ok"]
    start = datetime.fromtimestamp(T0, UTC)
    assert ops(since=start + timedelta(seconds=4)) == ["halt.engage/ok", "schedule.pause/ok"]
    assert ops(until=start + timedelta(seconds=1)) == ["job.submit/ok", "token.create/ok"]
    assert ops(since=start + timedelta(seconds=1), until=start + timedelta(seconds=2)) == [
        "job.submit/refused", "job.submit/ok"]
    naive = datetime(2025, 6, 15, 15, 6, 41)  # T0 + 1 s, taken as UTC
    assert naive.replace(tzinfo=UTC) == start + timedelta(seconds=1)
    assert ops(until=naive) == ["job.submit/ok", "token.create/ok"]


def test_paging_with_cursors(trail: AuditLog, clock: ManualClock) -> None:
    fill(trail, clock)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        items, cursor = trail.read(limit=4, cursor=cursor)
        seen += [item.id for item in items]
        pages += 1
        if cursor is None:
            break
    assert pages == 2 and len(seen) == 6 == len(set(seen))
    assert seen == sorted(seen, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
    # a cursor with filters: the next page continues below it
    first, cursor = trail.read(operation="job.submit", limit=1)
    second, _ = trail.read(operation="job.submit", limit=1, cursor=cursor)
    assert first[0].job_id == "j-2" and second[0].outcome == "refused"
    for bad in ("", "abc", "1-2-3", "(1-0", "1" * 30 + "-0"):
        with pytest.raises(ValueError, match="cursor"):
            trail.read(cursor=bad)


def test_work_per_read_is_bounded(trail: AuditLog, clock: ManualClock,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_log, "SCAN_LIMIT", 10)
    monkeypatch.setattr(audit_log, "BATCH", 4)
    trail.record(ADMIN, "halt.engage")
    for _ in range(25):
        clock.now += 0.01
        trail.record(CI, "job.submit", namespaces=["shop"])
    items, cursor = trail.read(operation="halt")
    assert items == [] and cursor is not None  # ten scanned, nothing matched yet
    items, cursor = trail.read(operation="halt", cursor=cursor)
    assert items == [] and cursor is not None
    items, cursor = trail.read(operation="halt", cursor=cursor)
    assert [item.operation for item in items] == ["halt.engage"] and cursor is None


def test_the_cap(fake: fakeredis.FakeRedis, clock: ManualClock) -> None:
    trail = make_log(fake, clock, max_records=5)
    for index in range(12):
        clock.now += 1
        trail.record(ADMIN, "job.cancel", job_id=f"j-{index}")
    assert fake.xlen(STREAM_KEY) == 5
    items, _ = trail.read()
    assert [item.job_id for item in items] == [f"j-{index}" for index in range(11, 6, -1)]


def test_retention(fake: fakeredis.FakeRedis, clock: ManualClock) -> None:
    trail = make_log(fake, clock, retention=3600)
    trail.record(ADMIN, "token.create", targets=["old"])
    clock.now += 1800
    trail.record(ADMIN, "token.create", targets=["middle"])
    clock.now += 1800 + 1  # the first is past the retention: not read, even before a trim
    assert [item.targets for item in trail.read()[0]] == [["middle"]]
    assert fake.xlen(STREAM_KEY) == 2
    trail.record(ADMIN, "token.create", targets=["new"])  # trims it
    assert fake.xlen(STREAM_KEY) == 2
    assert [item.targets for item in trail.read()[0]] == [["new"], ["middle"]]


def test_a_clock_behind_the_stream_still_records(trail: AuditLog, clock: ManualClock) -> None:
    trail.record(ADMIN, "halt.engage")
    clock.now -= 5  # another process's clock, a little behind
    record = trail.record(ADMIN, "halt.lift")
    assert record.id and record.id > f"{int(T0 * 1000)}-0"
    assert [item.operation for item in trail.read()[0]] == ["halt.lift", "halt.engage"]


def test_big_inputs_are_bounded(trail: AuditLog) -> None:
    record = trail.record(ADMIN, "job.submit", targets=[f"node-{i}" for i in range(1000)],
                          detail="x" * 10_000)
    assert len(record.targets) == 201 and record.targets[-1] == "…and 800 more"
    assert record.detail is not None and len(record.detail) == 2000


def test_the_log_line(trail: AuditLog) -> None:
    stream = io.StringIO()
    handler = configure_logging("api", stream=stream, json_lines=True)
    try:
        trail.record(CI, "job.submit", outcome="refused", targets=["payments"],
                     namespaces=["payments"], detail="not in scope")
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()
              if '"pystol.audit"' in text]
    assert line["logger"] == "pystol.audit" and line["level"] == "info"
    assert "job.submit refused by token:ci" in line["message"]
    audit = line["audit"]
    assert audit["operation"] == "job.submit" and audit["outcome"] == "refused"
    assert audit["actor"]["kind"] == "token" and audit["actor"]["name"] == "ci"
    assert audit["targets"] == ["payments"] and audit["detail"] == "not in scope"


class BrokenRedis(fakeredis.FakeRedis):
    def pipeline(self, *args: object, **kwargs: object) -> redis.client.Pipeline:
        raise redis.ConnectionError("Redis is down")


def test_a_redis_failure_is_logged_not_raised(clock: ManualClock,
                                              caplog: pytest.LogCaptureFixture) -> None:
    trail = make_log(BrokenRedis(), clock)
    with caplog.at_level(logging.INFO):
        record = trail.record(ADMIN, "halt.engage", detail="incident")
    assert record.id == "" and record.operation == "halt.engage"
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("pystol.audit", "halt.engage ok by token-1234abcd") in messages
    assert any(name == "pystol.store" and "not stored" in text for name, text in messages)


def test_garbage_in_the_stream_is_skipped(trail: AuditLog, fake: fakeredis.FakeRedis) -> None:
    trail.record(ADMIN, "halt.engage")
    fake.xadd(STREAM_KEY, {"r": "{broken"})
    fake.xadd(STREAM_KEY, {"other": "field"})
    assert [item.operation for item in trail.read()[0]] == ["halt.engage"]
