"""Watching the copy while the experiment runs: the blast radius, as it happens.

One watch per namespace the experiment touches follows every pod (list, then watch from
the list's resourceVersion, as `faults.recovery.RecoveryObserver` does for one workload).
Each event updates:

- per workload (a pod's top controller, `kube.objects.resolve_workload`): how many of its
  pods are ready now, and the fewest seen since the watch started — `lost` in the report
  is desired - that minimum;
- per PodDisruptionBudget (listed once at the start): how many of the pods its selector
  matches are ready now, and the fewest seen. Kubernetes only enforces a budget on
  evictions; a pod-kill deletes, so it can take a workload below `minAvailable` — that is
  what "violated" means in the report, and what the rehearsal is there to show.

Readiness is `kube.objects.is_ready` (a terminating pod is not ready), the rule the
recovery observers and the blast-radius guard use.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from pystol_worker.core.model import WorkloadRef
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.objects import Workload, is_ready, resolve_workload

log = logging.getLogger("pystol.rehearsal")
WATCH_SLICE_SECONDS = 5


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector object against a pod's labels (an empty selector matches all,
    as a PodDisruptionBudget's `{}` does in policy/v1; a missing one matches none)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or ())
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def resolve_count(value: int | str | None, total: int, round_up: bool) -> int | None:
    """An IntOrString of a budget (`2` or `"50%"`) against `total` pods."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1]) / 100 * total
        except ValueError:
            return None
        return math.ceil(share) if round_up else math.floor(share)
    try:
        return int(text)
    except ValueError:
        return None


@dataclass
class PodState:
    name: str
    labels: dict[str, str]
    workload: tuple[str, str, str] | None
    ready: bool


@dataclass
class WorkloadState:
    ref: WorkloadRef
    desired: int
    ready: int = 0
    min_ready: int | None = None


@dataclass
class BudgetState:
    namespace: str
    name: str
    selector: dict[str, Any] | None
    min_available_spec: int | str | None
    max_unavailable_spec: int | str | None
    expected: int = 0
    healthy: int = 0
    min_healthy: int | None = None
    pods: set[str] = field(default_factory=set)  # names of the pods it covered

    @property
    def min_available(self) -> int:
        """The healthy pods it asks for, as the disruption controller resolves it
        (minAvailable rounds up; maxUnavailable rounds up too, so fewer must stay)."""
        wanted = resolve_count(self.min_available_spec, self.expected, round_up=True)
        if wanted is not None:
            return wanted
        unavailable = resolve_count(self.max_unavailable_spec, self.expected, round_up=True)
        return max(0, self.expected - (unavailable or 0))


class ClusterObserver:
    """Follows the pods of some namespaces; see the module docstring."""

    def __init__(self, cluster: Cluster, namespaces: list[str]) -> None:
        self.cluster = cluster
        self.namespaces = sorted(set(namespaces))
        self.pods: dict[str, PodState] = {}
        self.workloads: dict[tuple[str, str, str], WorkloadState] = {}
        self.budgets: list[BudgetState] = []
        self.errors: list[str] = []
        self._cache: dict[tuple[str, str, str], Workload | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Counts during the initial lists are the starting point; minima are taken over
        # what happens once the watches run.
        self._watching = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """List every namespace's pods and budgets, then follow the pods by watch."""
        for namespace in self.namespaces:
            for pdb in self.cluster.list_pdbs(namespace):
                spec = pdb.get("spec") or {}
                self.budgets.append(BudgetState(
                    namespace, pdb["metadata"]["name"], spec.get("selector"),
                    spec.get("minAvailable"), spec.get("maxUnavailable")))
            pods, version = self.cluster.list_pods(namespace)
            with self._lock:
                for pod in pods:
                    self._note(pod)
                for budget in self.budgets:
                    if budget.namespace == namespace:
                        budget.expected = len(budget.pods)
            thread = threading.Thread(target=self._follow, args=(namespace, version),
                                      name=f"rehearsal-watch-{namespace}", daemon=True)
            self._threads.append(thread)
        with self._lock:
            for workload in self.workloads.values():
                workload.min_ready = workload.ready
            for budget in self.budgets:
                budget.min_healthy = budget.healthy
            self._watching = True
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(WATCH_SLICE_SECONDS + 5)

    # -- what the report reads ---------------------------------------------------------------

    def workload_states(self) -> list[WorkloadState]:
        with self._lock:
            return [WorkloadState(s.ref, s.desired, s.ready,
                                  s.ready if s.min_ready is None else s.min_ready)
                    for s in self.workloads.values()]

    def budget_states(self) -> list[BudgetState]:
        with self._lock:
            return list(self.budgets)

    # -- events ------------------------------------------------------------------------------

    def _note(self, pod: dict[str, Any], deleted: bool = False) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        previous = self.pods.get(uid)
        if deleted:
            self.pods.pop(uid, None)
            state = None
        else:
            key = previous.workload if previous else self._workload_key(pod)
            state = self.pods[uid] = PodState(meta.get("name", ""), dict(meta.get("labels")
                                                                         or {}),
                                              key, is_ready(pod))
        namespace = meta.get("namespace", "")
        touched = state or previous
        if touched is None:
            return
        if touched.workload is not None:
            self._recount_workload(touched.workload)
        for budget in self.budgets:
            if budget.namespace == namespace and selector_matches(budget.selector,
                                                                  touched.labels):
                budget.pods.add(touched.name)
                self._recount_budget(budget)

    def _workload_key(self, pod: dict[str, Any]) -> tuple[str, str, str] | None:
        try:
            workload = resolve_workload(self.cluster, pod, self._cache)
        except Exception as error:  # a read that failed: the pod counts under no workload
            self.errors.append(f"resolving the owner of pod {pod['metadata'].get('name')}: "
                               f"{error}")
            return None
        if workload is None:
            return None
        key = (workload.ref.kind, workload.ref.namespace, workload.ref.name)
        if key not in self.workloads:
            self.workloads[key] = WorkloadState(workload.ref, workload.desired)
        return key

    def _recount_workload(self, key: tuple[str, str, str]) -> None:
        state = self.workloads[key]
        state.ready = sum(1 for pod in self.pods.values() if pod.workload == key and pod.ready)
        if self._watching:
            state.min_ready = state.ready if state.min_ready is None else min(state.min_ready,
                                                                               state.ready)

    def _recount_budget(self, budget: BudgetState) -> None:
        budget.healthy = sum(1 for pod in self.pods.values()
                             if pod.ready and pod.name in budget.pods)
        if self._watching:
            budget.min_healthy = budget.healthy if budget.min_healthy is None else min(
                budget.min_healthy, budget.healthy)

    def _follow(self, namespace: str, version: str) -> None:
        while not self._stop.is_set():
            try:
                for kind, obj in self.cluster.watch_pods(namespace, "", version,
                                                         WATCH_SLICE_SECONDS):
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            pods, version = self.cluster.list_pods(namespace)
                            with self._lock:
                                for pod in pods:
                                    self._note(pod)
                            break
                        raise RuntimeError(str(obj.get("message", obj)))
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if kind == "BOOKMARK":
                        continue
                    with self._lock:
                        self._note(obj, deleted=kind == "DELETED")
                    if self._stop.is_set():
                        return
            except Exception as error:
                log.warning("rehearsal: watching pods in %s failed: %s", namespace, error)
                self.errors.append(f"watching pods in {namespace}: {error}")
                return
