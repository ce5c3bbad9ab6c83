"""The audit trail on a real redis-server, where fakeredis answers differently.

Two behaviours only a real Redis shows: `XADD ... MAXLEN ~` trims whole stream nodes, and
`XREVRANGE` refuses an exclusive end before `0-0` (which once made `GET /api/v1/audit?cursor=0-0`
answer 503, the error handler taking Redis' refusal for an outage). They were unit tests that
skipped without redis-server; here the server is started, never skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pystol_api.http.app import create_app
from pystol_worker.actions import default_registry
from pystol_worker.core.access import Actor, ActorKind, Role
from pystol_worker.core.settings import Settings
from pystol_worker.store.audit_log import STREAM_KEY, AuditLog
from tests.support.manual_clock import ManualClock
from tests.support.recording_queue import RecordingQueue
from tests.support.redis_server import RedisServer

TOKEN = "audit-real-redis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = Actor(kind=ActorKind.SETTINGS_TOKEN, name="token-1234abcd", role=Role.ADMIN)
T0 = 1_750_000_000.0


@pytest.fixture
def real_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    with RedisServer.start(tmp_path) as server:
        yield server.client()


def test_approximate_trimming_keeps_the_stream_within_a_node_of_its_cap(
        real_redis: redis.Redis) -> None:
    """Production trims with `~`: Redis drops whole stream nodes (100 entries by default),
    so the stream stays within one node of the cap, and retention still empties it."""
    clock = ManualClock(T0)
    trail = AuditLog(real_redis, max_records=100, retention_seconds=86400, clock=clock)
    for _ in range(1000):
        clock.now += 0.01
        trail.record(ADMIN, "job.cancel")
    assert 100 <= real_redis.xlen(STREAM_KEY) <= 200
    clock.now += 86400 + 20
    trail.record(ADMIN, "halt.engage")
    assert real_redis.xlen(STREAM_KEY) <= 101
    assert [item.operation for item in trail.read()[0]] == ["halt.engage"]


@pytest.mark.parametrize("cursor", ["0-0", "000-0", "0-000"])
def test_the_first_audit_cursor_is_an_empty_last_page(real_redis: redis.Redis,
                                                      cursor: str) -> None:
    settings = Settings(api_tokens=[TOKEN], redis_url="redis://127.0.0.1:6379/0",
                        max_request_bytes=64 * 1024, api_rate_limit="")
    app = create_app(settings, redis_client=real_redis, queue=RecordingQueue(),
                     registry=default_registry())
    with app.test_client() as client:
        client.post("/api/v1/halt", headers=AUTH)  # something in the trail
        client.delete("/api/v1/halt", headers=AUTH)
        response = client.get(f"/api/v1/audit?cursor={cursor}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert json.loads(response.get_data()) == {"items": [], "next_cursor": None}
        # a cursor just after it still reads what is older than it (nothing) the usual way
        assert client.get("/api/v1/audit?cursor=0-1", headers=AUTH).status_code == 200
