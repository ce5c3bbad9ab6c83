"""The simulation: a facade over the controllers of a cluster with no real nodes.

The controllers (scheduler, kubelets, node lifecycle, namespaces, service
accounts, ReplicaSets, Deployments, StatefulSets, DaemonSets, Jobs, CronJobs,
disruption budgets, endpoints, CRDs, garbage collection) live one per module in
`pystol_sim.controllers`, around the shared store and a controller manager that
owns the dirty set and the timers. This class wires them together and keeps
the small surface the rest of the sim uses (server, pod exec, CLI, scenarios),
so none of them needs to know how the controllers are split.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pystol_sim.controllers.crd import CrdController
from pystol_sim.controllers.cronjob import CronJobController
from pystol_sim.controllers.daemonset import DaemonSetController
from pystol_sim.controllers.deployment import DeploymentController
from pystol_sim.controllers.disruption import DisruptionController
from pystol_sim.controllers.endpoints import EndpointsController
from pystol_sim.controllers.garbage_collector import GarbageCollector
from pystol_sim.controllers.job import JobController
from pystol_sim.controllers.kubelet import (
    ANNOTATION_EXIT_CODE,
    ANNOTATION_READY,
    ANNOTATION_RUN,
    ANNOTATION_START,
    ANNOTATION_TERMINATE,
    KUBELET_VERSION,
    Kubelet,
    PodTruth,
)
from pystol_sim.controllers.manager import ControllerManager, Timings
from pystol_sim.controllers.namespace import NamespaceController
from pystol_sim.controllers.node import NODE_EVICTION_SECONDS, NodeController, NodeInfo
from pystol_sim.controllers.objects import controller_of, pod_is_active, pod_is_ready
from pystol_sim.controllers.replicaset import ReplicaSetController
from pystol_sim.controllers.scheduler import Scheduler
from pystol_sim.controllers.serviceaccount import ServiceAccountController
from pystol_sim.controllers.statefulset import StatefulSetController
from pystol_sim.resources import Catalogue, ResourceType
from pystol_sim.store import Store

__all__ = [
    "ANNOTATION_EXIT_CODE", "ANNOTATION_READY", "ANNOTATION_RUN", "ANNOTATION_START",
    "ANNOTATION_TERMINATE", "KUBELET_VERSION", "NODE_EVICTION_SECONDS", "Cluster", "NodeInfo",
    "PodTruth", "Timings", "controller_of", "pod_is_active", "pod_is_ready",
]


class Cluster:
    """Owns the store and runs every controller against it."""

    def __init__(self, store: Store, catalogue: Catalogue, timings: Timings | None = None,
                 speed: float = 1.0) -> None:
        self.store = store
        self.catalogue = catalogue
        self.manager = manager = ControllerManager(store, catalogue, timings, speed)
        # Registration order is the order writes are shown to controllers: what others
        # read (node facts, pod truth) is updated first, the garbage collector goes last.
        self._nodes = manager.add(NodeController(manager))
        self._scheduler = manager.add(Scheduler(manager))
        self._kubelet = manager.add(Kubelet(manager))
        manager.add(NamespaceController(manager))
        manager.add(ServiceAccountController(manager))
        manager.add(ReplicaSetController(manager))
        manager.add(DeploymentController(manager))
        manager.add(StatefulSetController(manager))
        manager.add(DaemonSetController(manager))
        manager.add(JobController(manager))
        self._cronjobs = manager.add(CronJobController(manager))
        self._disruption = manager.add(DisruptionController(manager))
        manager.add(EndpointsController(manager))
        manager.add(CrdController(manager))
        manager.add(GarbageCollector(manager))
        self.pods = manager.type("", "v1", "pods")

    # -- what the rest of the sim reads --------------------------------------------------------

    @property
    def timings(self) -> Timings:
        return self.manager.timings

    @property
    def speed(self) -> float:
        return self.manager.speed

    @property
    def truth(self) -> dict[str, PodTruth]:
        return self._kubelet.truth

    @property
    def nodes(self) -> dict[str, NodeInfo]:
        return self._nodes.nodes

    @property
    def pods_per_node(self) -> dict[str, int]:
        return self._scheduler.pods_per_node

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.manager.start()

    async def stop(self) -> None:
        await self.manager.stop()

    def load(self, manifests: Iterable[dict[str, Any]]) -> None:
        """Create a scenario's objects and settle the cluster at once (no simulated delays)."""
        self.manager.settling = True
        try:
            for manifest in manifests:
                rtype = self.catalogue.by_kind(manifest["apiVersion"], manifest["kind"])
                if rtype is None:
                    raise ValueError(f"unknown kind {manifest['apiVersion']}/{manifest['kind']}")
                self.store.create(rtype, manifest, manifest["metadata"].get("namespace", ""))
            self.manager.reconcile_all()
            # While settling, pod writes do not wake the endpoints controller (a mark per
            # Service per pod write would make loading 100,000 pods quadratic), so a Service
            # reconciled before its pods settled (one that came with its clusterIP, as a
            # snapshot's do) gets one last pass that sees them.
            services = self.manager.type("", "v1", "services")
            for namespace, name in list(self.store.table(services).objects):
                self.manager.mark(services, namespace, name)
            self.manager.reconcile_all()
        finally:
            self.manager.settling = False

    def reconcile_all(self) -> None:
        self.manager.reconcile_all()

    def mark(self, rtype: ResourceType, namespace: str, name: str) -> None:
        self.manager.mark(rtype, namespace, name)

    # -- what the API server and the /_sim/ endpoints ask of the controllers ------------------

    def evict(self, namespace: str, name: str, delete_options: dict[str, Any]) -> None:
        """The Eviction API: refuse with 429 when a PodDisruptionBudget would be violated."""
        self._disruption.evict(namespace, name, delete_options)

    def pdb_numbers(self, pdb: dict[str, Any]) -> dict[str, int]:
        return self._disruption.numbers(pdb)

    def restart_container(self, namespace: str, pod_name: str, container: str, exit_code: int
                          ) -> None:
        self._kubelet.restart_container(namespace, pod_name, container, exit_code)

    def set_node_ready(self, name: str, ready: bool) -> None:
        self._nodes.set_ready(name, ready)

    def bind(self, pod: dict[str, Any]) -> bool:
        return self._scheduler.bind(pod)

    def fire_cronjob(self, namespace: str, name: str) -> dict[str, Any]:
        """Make now a scheduled time of a CronJob (`POST /_sim/cronjobs/fire`)."""
        return self._cronjobs.fire(namespace, name)

    def record_event(self, obj: dict[str, Any], reason: str, message: str,
                     type_: str = "Normal", component: str = "pystol-sim") -> None:
        self.manager.record_event(obj, reason, message, type_, component)
