"""`recovery_seconds` checked against the simulated cluster's ground truth (`/_sim/truth`).

The sim stamps, per pod, when it was deleted, when a container restarted and when it
(last) became ready. A workload is whole again when the last of its live pods became
ready, so the true recovery runs from the moment the fault hit (a truth stamp: the first
deletion, the first restart) or, for a held fault, from the revert (the job's own
`reverted_at`, since the sim has no stamp for an image or a replica count put back) to
that last `ready`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# How far Pystol's number may be from the truth. Both sides read the same machine clock
# (time.time()), so what remains is how each measures: the worker stamps the start just
# before its kill/eviction/exec request reaches the sim (or a few ms after the revert, once
# the revert's Event was posted), and the end when the watch event of the last ready pod
# reaches it, after the sim stamped it. That came to 1-6 ms in these tests; 0.2 s leaves
# room for a busy 2-core machine while still failing a recovery counted from the wrong
# moment (from the injection instead of the revert: the 1-2 s hold) or off by 0.2 s or
# more (2 simulated seconds at --speed 10).
TOLERANCE = 0.2


def unix(text: str) -> float:
    """A job record's ISO timestamp as unix seconds, the unit of `/_sim/truth`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def workload_pods(truth: list[dict[str, Any]], kind: str, namespace: str, name: str
                  ) -> list[dict[str, Any]]:
    """Every pod the sim ever ran for one workload (Deployment pods are counted under the
    Deployment, not their ReplicaSet)."""
    return [p for p in truth if p["namespace"] == namespace and p["owner_kind"] == kind
            and p["owner_name"] == name]


def whole_again_at(truth: list[dict[str, Any]], kind: str, namespace: str, name: str
                   ) -> float:
    """When the last live pod of the workload became ready."""
    live = [p for p in workload_pods(truth, kind, namespace, name) if p["deleted"] is None]
    assert live and all(p["ready"] for p in live), (kind, namespace, name, live)
    return max(p["ready"] for p in live)


def assert_matches_truth(measured: float | None, started: float, whole_again: float,
                         what: str = "") -> float:
    """`measured` is within TOLERANCE of `whole_again - started`; returns the truth."""
    true_seconds = whole_again - started
    assert true_seconds > 0, (what, started, whole_again)
    assert measured is not None, what
    assert abs(measured - true_seconds) < TOLERANCE, \
        f"{what}: recovery_seconds {measured} but the sim says {true_seconds:.3f}"
    return true_seconds
