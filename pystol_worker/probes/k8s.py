"""k8s probes: an object's presence, a field or a condition; or how many pods match.

Read-only (`Cluster.get_object`, `Cluster.list_pods`), with the comparison typed when the
probe was written (`probe_model.compare`: a bool never equals 1). A field path that does
not resolve is a failed probe that says where it stopped, never an error of the job; the
API server refusing the worker the read (401/403) is an error of the installation
(ActionError), never a probe result. Each read is bounded by the probe's `run.timeout`
and ends at once on a stop (`bounded_read`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pystol_worker.core.errors import ActionError
from pystol_worker.core.model import K8sProbe
from pystol_worker.core.probe_model import ObjectCheck, PodCount, compare, parse_field_path
from pystol_worker.kube.cluster_access import ClusterError
from pystol_worker.probes.evaluation import Attempt, ProbeEnv
from pystol_worker.safety.outbound_http import STOP_POLL_SECONDS, ProbeStopped

_MISSING = object()
T = TypeVar("T")
MAX_READS = 32  # probe reads of the API server under way at once, per worker process
_READS = threading.BoundedSemaphore(MAX_READS)


def field_value(obj: Any, path: str) -> Any:
    """The value at a dotted path with `[n]` indexes; `_MISSING` when it does not exist."""
    current = obj
    for part in parse_field_path(path):
        if isinstance(part, int):
            if not isinstance(current, list) or part >= len(current):
                return _MISSING
            current = current[part]
        else:
            if not isinstance(current, dict) or part not in current:
                return _MISSING
            current = current[part]
    return current


def _comparable(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _judge_fields(op: str, path: str, value: Any, other_path: str, other: Any,
                  where: str) -> Attempt:
    """A field compared with another field of the same object. A missing field is None,
    which equals only None (chaosk8s: an unset `status.availableReplicas` is not equal to
    `spec.replicas`, even when that is 0)."""
    left = None if value is _MISSING else value
    right = None if other is _MISSING else other
    for name, item in ((path, left), (other_path, right)):
        if item is not None and not _comparable(item):
            return Attempt(False, output=f"{where}: {name} is a {type(item).__name__}, not "
                                         "a value to compare")
    ok = compare(op, left, right)
    return Attempt(ok, value=left, output=f"{where}: {path} = {left!r}, {other_path} = "
                                          f"{right!r}" + ("" if ok else f", expected {op}"))


def judge_object(check: ObjectCheck, obj: dict[str, Any] | None, where: str) -> Attempt:
    if check.check == "absent":
        return Attempt(obj is None, value=obj is None,
                       output=f"{where} is {'absent' if obj is None else 'present'}")
    if obj is None:
        return Attempt(False, value=False, output=f"{where} does not exist")
    if check.check == "present":
        return Attempt(True, value=True, output=f"{where} is present")
    if check.check == "field":
        assert check.field is not None
        wanted = check.field
        value = field_value(obj, wanted.path)
        if wanted.value_from is not None:
            return _judge_fields(wanted.op, wanted.path, value, wanted.value_from,
                                 field_value(obj, wanted.value_from), where)
        if value is _MISSING:
            return Attempt(False, output=f"{where}: {wanted.path} is not set")
        if not _comparable(value):
            return Attempt(False, output=f"{where}: {wanted.path} is a "
                                         f"{type(value).__name__}, not a value to compare")
        ok = compare(wanted.op, value, wanted.value)
        return Attempt(ok, value=value, output=f"{where}: {wanted.path} = {value!r}"
                       + ("" if ok else f", expected {wanted.op} {wanted.value!r}"))
    assert check.condition is not None
    wanted_condition = check.condition
    conditions = (obj.get("status") or {}).get("conditions") or []
    found = next((c for c in conditions if isinstance(c, dict)
                  and c.get("type") == wanted_condition.type), None)
    status = None if found is None else str(found.get("status"))
    ok = status == wanted_condition.status
    return Attempt(ok, value=status, output=f"{where}: condition {wanted_condition.type} is "
                   f"{status or 'not reported'}" + ("" if ok else
                                                    f", expected {wanted_condition.status}"))


def pod_counts(pods: list[dict[str, Any]], count: PodCount) -> tuple[int, int]:
    """(pods that meet the phase/ready/conditions filters, pods matching the selector).
    `total` counts every pod the selector matches (a percent is of them); a terminating
    pod never counts as ready (it is leaving its Service's endpoints)."""
    def has(pod: dict[str, Any], condition: str) -> bool:
        return any(c.get("type") == condition and c.get("status") == "True"
                   for c in (pod.get("status") or {}).get("conditions") or []
                   if isinstance(c, dict))

    matched = 0
    for pod in pods:
        status = pod.get("status") or {}
        if count.phase is not None and status.get("phase") != count.phase:
            continue
        terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        if count.ready is not None and (has(pod, "Ready") and not terminating) != count.ready:
            continue
        if not all(has(pod, condition) for condition in count.conditions):
            continue
        matched += 1
    return matched, len(pods)


class ReadTimedOut(Exception):
    """The read did not end within the probe's `run.timeout`."""


def bounded_read(read: Callable[[], T], timeout: float, should_stop: Callable[[], bool]
                 ) -> T:
    """`read()` in a thread of its own, so that the probe's `run.timeout` bounds it
    (ReadTimedOut) and a stop (the job's, or the probe loop's) ends the wait at once
    (ProbeStopped), like `http.call_service`. The client call cannot be interrupted: it
    ends on its own in the background, and at most `MAX_READS` such calls may be under
    way in a worker, so a slow API server cannot pile up threads."""
    if not _READS.acquire(blocking=False):
        raise ReadTimedOut(f"{MAX_READS} Kubernetes reads of probes are still under way "
                           "in this worker")
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = read()
        except BaseException as error:  # handed to the waiting side
            box["error"] = error
        finally:
            _READS.release()

    thread = threading.Thread(target=call, name="probe-k8s-read", daemon=True)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        thread.join(min(STOP_POLL_SECONDS, max(timeout - (time.monotonic() - started), 0)))
        if not thread.is_alive():
            break
        if should_stop():
            raise ProbeStopped()
        if time.monotonic() - started >= timeout:
            raise ReadTimedOut(f"timed out after {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def check_k8s(probe: K8sProbe, env: ProbeEnv) -> Attempt:
    started = time.monotonic()
    timeout = probe.run.timeout
    try:
        if probe.object is not None:
            check = probe.object
            obj = bounded_read(lambda: env.cluster.get_object(check.kind, probe.namespace,
                                                              check.name),
                               timeout, env.should_stop)
            attempt = judge_object(probe.object, obj, probe.describe)
        else:
            assert probe.pods is not None and probe.namespace is not None
            namespace, selector = probe.namespace, probe.pods.label_selector
            pods, _ = bounded_read(lambda: env.cluster.list_pods(namespace, selector),
                                   timeout, env.should_stop)
            matched, total = pod_counts(pods, probe.pods)
            ok = probe.pods.holds(matched, total)
            attempt = Attempt(ok, value=matched, output=f"{probe.describe}: {matched} of "
                              f"{total} pod(s) qualify" + ("" if ok else
                                                           f", expected {probe.pods.op} "
                                                           f"{probe.pods.value}"))
    except ClusterError as error:
        if error.status in (401, 403):
            # the worker itself may not read it: the installation's RBAC, not the system
            # under test (the chart grants every kind a k8s probe reads)
            raise ActionError(f"the Kubernetes API server refused the worker's read of "
                              f"{probe.describe}: {error}") from None
        attempt = Attempt(False, error=f"{probe.describe}: {error}")
    except ReadTimedOut as timed_out:
        attempt = Attempt(False, error=f"{probe.describe}: {timed_out}")
    attempt.seconds = round(time.monotonic() - started, 6)
    return attempt
