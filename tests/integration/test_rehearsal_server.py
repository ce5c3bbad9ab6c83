"""The dashboard's "Rehearse", through real processes: the API (`POST
/api/v1/experiments/{name}/rehearse`), Redis, a Celery worker running `pystol.rehearse`,
and pystol-sim as the live cluster (loaded from `test_rehearsal.py`'s snapshot).

The worker copies the experiment's namespaces with read-only lists, rehearses on a
private simulator, and stores the report the API then serves; the live cluster loses
nothing. Two rehearsals asked at once on a worker with two slots run one after the
other: never more than PYSTOL_MAX_REHEARSALS (default 1) private simulators at a time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import TOKEN, running_stack
from tests.integration.test_rehearsal import KEPT, _sims, experiment, key, write_snapshot
from tests.support.redis_server import RedisServer

DONE = ("completed", "failed")


def _ancestors(pid: int) -> set[int]:
    """pids of every process above `pid` (from /proc: its parent, theirs, ...)."""
    found: set[int] = set()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        found.add(pid)
    return found


class SimCounter(threading.Thread):
    """The most private simulators under one worker process seen at the same time."""

    def __init__(self, worker_pid: int) -> None:
        super().__init__(daemon=True)
        self.worker_pid = worker_pid
        self.most = 0
        self.seen: set[int] = set()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            mine = {pid for pid in _sims() if self.worker_pid in _ancestors(pid)}
            self.seen |= mine
            self.most = max(self.most, len(mine))
            time.sleep(0.1)


def test_rehearse_from_the_api_runs_on_a_copy_one_at_a_time(
        tmp_path: Path, redis_server: RedisServer) -> None:
    snapshot = write_snapshot(tmp_path)
    with running_stack(tmp_path, redis_server,
                       ("--snapshot", str(snapshot), "--speed", "1")) as stack:
        stored = stack.call("POST", "/api/v1/experiments", json=experiment())
        assert stored.status_code == 201, stored.text
        name = experiment()["name"]
        counter = SimCounter(stack.worker.process.pid)
        counter.start()
        started = [stack.call("POST", f"/api/v1/experiments/{name}/rehearse", json=body)
                   for body in ({}, {"speed": "auto"})]
        for answer in started:
            assert answer.status_code == 202, answer.text
            assert answer.headers["Location"] == f"/api/v1/rehearsals/{answer.json()['id']}"
        runs: dict[str, dict[str, Any]] = {}
        waited: set[str] = set()
        deadline = time.monotonic() + 240
        while len(runs) < len(started) and time.monotonic() < deadline:
            for answer in started:
                location = answer.headers["Location"]
                read = stack.call("GET", location, token=TOKEN)
                assert read.status_code == 200, read.text
                run = read.json()
                if run["status"] == "queued" and run.get("reason"):
                    waited.add(run["id"])  # found the slot taken: it waits, says why
                if run["status"] in DONE:
                    runs[run["id"]] = run
            time.sleep(0.5)
        counter.stopped.set()
        counter.join(5)
        assert len(runs) == len(started), (runs, stack.worker.tail(80))
        live_truth = stack.sim.truth()

    for run in runs.values():
        assert run["status"] == "completed", (run.get("error"), run.get("reason"))
        report = run["report"]
        assert report["verdict"] == "passed", report
        assert {key(r["workload"]) for r in report["recovery"]} == set(KEPT)
        blast = {key(b["workload"]): b["lost"] for b in report["blast_radius"]}
        assert blast == dict.fromkeys(KEPT, 1), report["blast_radius"]
        assert [b["name"] for b in report["budgets"]] == ["slow-0-all"]
        assert "signature" not in (run.get("grant") or {})
    # One private simulator each, never two at once: the second waited for the slot.
    assert len(counter.seen) == 2 and counter.most == 1, (counter.seen, counter.most)
    assert waited, "the second rehearsal should have found the slot taken"
    # The live cluster lost nothing: the rehearsals deleted pods on their copies only.
    assert not [pod for pod in live_truth if pod["deleted"]]
