"""The controller manager: one dirty set, one loop, many small controllers.

Controllers are level-triggered, as in Kubernetes: every store write is shown to
every controller (`observe`), which marks the objects it may affect as dirty;
one loop then hands each dirty object to the controller that owns its kind
(`reconcile`). Time in the simulation (a pod taking 3 s to start) is a timer
that marks an object dirty again when it is due; `speed` shortens every such
delay, so tests can run a 30-second story in three.

This is how kube-controller-manager and kwok are organised, cut down to one
process and one thread: the store is the shared informer cache, `mark` is the
work queue, and no controller calls another's reconcile directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

from pystol_sim.controllers.objects import controller_of
from pystol_sim.resources import Catalogue, ResourceType
from pystol_sim.store import Store, now_rfc3339

Key = tuple[str, str, str]  # (type key, namespace, name)
MAX_FAILED_KEYS = 10_000  # failing keys remembered (to log each error once)
# Pods one workload controller creates in one reconcile, as kube-controller-manager's
# MaxPodCreateDeletePerSync (500); the object is requeued for the rest.
MAX_PODS_PER_SYNC = 500
MIN_SPEED = 1.0  # what `PUT /_sim/speed` accepts (the command line allows slower)
MAX_SPEED = 100.0


class SpeedLocked(Exception):
    """The speed can no longer change: a pod was already deleted at the old one."""


@dataclass
class Timings:
    start_seconds: float = 1.0
    ready_seconds: float = 1.0
    terminate_seconds: float = 1.0
    schedule_seconds: float = 0.0


class Controller:
    """One kind's controller. `resource` is the type key ("apps/deployments") it
    reconciles, or "" for a controller that only observes writes (the garbage
    collector). The default `observe` marks the written object itself dirty."""

    resource = ""

    def __init__(self, manager: ControllerManager) -> None:
        self.manager = manager
        self.store = manager.store

    def observe(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        if rtype.key == self.resource:
            meta = obj["metadata"]
            self.manager.mark(rtype, meta.get("namespace", ""), meta["name"])

    def reconcile(self, obj: dict[str, Any]) -> None:
        """Bring one object towards its desired state; it was marked dirty."""

    def finalize(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """An object being deleted still has finalizers: remove those this controller owns."""

    def on_start(self) -> None:
        """Called once the loop runs (timers set while a scenario loads would be lost)."""


C = TypeVar("C", bound=Controller)


class ControllerManager:
    """Owns the dirty set and the timers and dispatches reconciles by kind."""

    def __init__(self, store: Store, catalogue: Catalogue, timings: Timings | None = None,
                 speed: float = 1.0) -> None:
        self.store = store
        self.catalogue = catalogue
        self.timings = timings or Timings()
        self.speed = speed
        self.settling = False
        self.controllers: list[Controller] = []
        self._by_resource: dict[str, Controller] = {}
        self._dirty: dict[Key, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._failed: dict[Key, str] = {}  # key -> the last error logged for it
        self.failures = 0  # reconciles that raised (tests and debugging read it)
        # When the first pod was deleted after the cluster settled (chaos, or a scale
        # down): from then on the speed is fixed, see `change_speed`.
        self.first_pod_deletion: float | None = None
        store.add_listener(self._on_write)

    def add(self, controller: C) -> C:
        self.controllers.append(controller)
        if controller.resource:
            self._by_resource[controller.resource] = controller
        return controller

    def get(self, kind: type[C]) -> C:
        for controller in self.controllers:
            if isinstance(controller, kind):
                return controller
        raise LookupError(kind.__name__)

    def type(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self.catalogue.get(group, version, plural)
        assert rtype is not None
        return rtype

    def type_by_key(self, type_key: str) -> ResourceType | None:
        group, plural = type_key.split("/", 1)
        for rtype in self.catalogue.all():
            if rtype.group == group and rtype.plural == plural:
                return rtype
        return None

    def owner_type(self, ref: dict[str, Any]) -> ResourceType | None:
        return self.catalogue.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-controllers")
        for controller in self.controllers:
            controller.on_start()

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # One batch of dirty keys per turn of the event loop: a reconcile that requeues its
        # object (a Job creating its pods 500 at a time) must not keep the API server waiting.
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.reconcile_batch()
            if self._dirty:
                self._wake.set()
            await asyncio.sleep(0)

    # -- speed ----------------------------------------------------------------------------------

    def change_speed(self, speed: float) -> None:
        """Run the simulated clock `speed` times faster from now on.

        A rehearsal loads a snapshot at speed 1, reads how long its workloads take to
        start, then picks the speed. That is only sound before anything happened: once a
        pod was deleted, a recovery is under way on the old clock and changing it would
        make the measurement a mixture of two speeds, so the change is refused
        (`SpeedLocked`). Objects are marked dirty again so that every controller
        recomputes its timers at the new speed (a timer set at the old speed may still
        fire; a reconcile it causes is harmless, the controllers are level-triggered)."""
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be within {MIN_SPEED:g}..{MAX_SPEED:g}")
        if self.first_pod_deletion is not None:
            raise SpeedLocked("a pod was already deleted at speed "
                              f"{self.speed:g}; the speed can only be set before any "
                              "pod is deleted")
        self.speed = speed
        for type_key in self._by_resource:
            rtype = self.type_by_key(type_key)
            if rtype is None:
                continue
            for namespace, name in list(self.store.table(rtype).objects):
                self.mark(rtype, namespace, name)

    # -- the work queue -------------------------------------------------------------------------

    def mark(self, rtype: ResourceType, namespace: str, name: str) -> None:
        self._dirty[(rtype.key, namespace, name)] = None
        self._wake.set()

    def later(self, seconds: float, rtype: ResourceType, namespace: str, name: str) -> None:
        """Mark the object dirty after `seconds` of simulated time (divided by speed)."""
        if self.settling or seconds <= 0:
            self.mark(rtype, namespace, name)
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self.mark(rtype, namespace, name)

        handle = loop.call_later(seconds / self.speed, fire)
        self._timers.add(handle)

    def reconcile_all(self) -> None:
        """Reconcile until nothing is dirty (a scenario settling; the loop goes batch by batch)."""
        while self._dirty:
            self.reconcile_batch()

    def reconcile_batch(self) -> None:
        """Reconcile every key dirty now; one that raises is logged and dropped, not the rest.

        The failing key is not marked again here, so a bad object does not spin the loop:
        its next write (or timer) brings it back. Its traceback is printed once per distinct
        error, not on every retry.
        """
        batch = list(self._dirty)
        self._dirty.clear()
        for key in batch:
            try:
                self._reconcile(key)
            except Exception as error:
                self.failures += 1
                summary = f"{type(error).__name__}: {error}"
                if self._failed.get(key) != summary:
                    self._failed[key] = summary
                    print(f"pystol-sim: reconciling {key[0]} {key[1]}/{key[2]} failed",
                          file=sys.stderr)
                    traceback.print_exc()
                    if len(self._failed) > MAX_FAILED_KEYS:
                        self._failed.pop(next(iter(self._failed)))
            else:
                self._failed.pop(key, None)

    def _on_write(self, rtype: ResourceType, event: str, obj: dict[str, Any],
                  old: dict[str, Any] | None) -> None:
        if rtype.key == "/pods" and self.first_pod_deletion is None and not self.settling \
                and (event == "DELETED" or (obj["metadata"].get("deletionTimestamp")
                                            and not (old or {}).get("metadata", {}).get(
                                                "deletionTimestamp"))):
            self.first_pod_deletion = time.time()
        for controller in self.controllers:
            controller.observe(rtype, event, obj, old)
        # Every controller watches what it owns: a written dependent wakes its owner.
        ref = controller_of(obj)
        if ref is not None:
            owner_type = self.owner_type(ref)
            if owner_type is not None and owner_type.key in self._by_resource:
                self.mark(owner_type, obj["metadata"].get("namespace", ""), ref["name"])

    def _reconcile(self, key: Key) -> None:
        type_key, ns, name = key
        rtype = self.type_by_key(type_key)
        if rtype is None:
            return
        obj = self.store.find(rtype, ns, name)
        if obj is None:
            return
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and meta.get("finalizers"):
            for finalizing in self.controllers:
                finalizing.finalize(rtype, obj)
            obj = self.store.find(rtype, ns, name)
            if obj is None:
                return
        controller = self._by_resource.get(type_key)
        if controller is not None:
            controller.reconcile(obj)

    # -- what controllers share -------------------------------------------------------------------

    def record_event(self, obj: dict[str, Any], reason: str, message: str,
                     type_: str = "Normal", component: str = "pystol-sim") -> None:
        if self.settling:
            return
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        event = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": ns},
            "involvedObject": {"kind": obj.get("kind"), "namespace": meta.get("namespace", ""),
                               "name": meta["name"], "uid": meta.get("uid"),
                               "apiVersion": obj.get("apiVersion"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component}, "reportingComponent": component,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        events = self.type("", "v1", "events")
        if self.store.stored(self.type("", "v1", "namespaces"), "", ns) is not None:
            self.store.create(events, event, ns)

    def owned(self, rtype: ResourceType, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """The objects of `rtype` whose controller reference points at `owner`."""
        uid = owner["metadata"]["uid"]
        result = []
        for type_key, ns, name in self.store.dependents.get(uid, ()):
            if type_key != rtype.key:
                continue
            obj = self.store.find(rtype, ns, name)
            if obj is not None:
                ref = controller_of(obj)
                if ref is not None and ref.get("uid") == uid:
                    result.append(obj)
        return result

    def write_status(self, rtype: ResourceType, obj: dict[str, Any], status: dict[str, Any]
                     ) -> None:
        """Merge `status` into the stored object's status, writing only on a change."""
        current = obj.get("status") or {}
        merged = {**current, **status}
        if merged != current:
            fresh = self.store.find(rtype, obj["metadata"].get("namespace", ""),
                                    obj["metadata"]["name"])
            if fresh is None:
                return
            fresh["status"] = {**(fresh.get("status") or {}), **status}
            self.store.put(rtype, fresh)
