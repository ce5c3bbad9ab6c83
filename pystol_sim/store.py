"""The simulated cluster's object store: what etcd plus the apiserver's registry do.

Objects are kept as serialised JSON bytes with a small index (labels and the
few fields that field selectors use) beside them. That is what lets one
process hold 100,000 pods in well under a gigabyte and answer a list by
joining stored bytes instead of re-serialising dicts.

Every write bumps one global resourceVersion, lands in a per-type history (the
watch cache) and is pushed, in order, to every matching watcher's unbounded
queue: a slow watcher delays itself, never drops an event. History older than
the retained window counts as compacted, and a watch from before it gets 410.

The store runs on the server's event loop and is never touched from another
thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pystol_sim.errors import ApiError, already_exists, conflict, invalid, not_found
from pystol_sim.resources import ResourceType
from pystol_sim.selectors import FieldSelector, LabelSelector

ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects

SUPPORTED_FIELDS: dict[str, tuple[str, ...]] = {
    "/pods": ("spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName",
              "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName"),
    "/events": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                "involvedObject.uid", "involvedObject.apiVersion",
                "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                "reportingComponent", "source", "type"),
    "/nodes": ("spec.unschedulable",),
    "/namespaces": ("status.phase",),
    "/secrets": ("type",),
    "apps/replicasets": ("status.replicas",),
}


NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated names


def random_suffix(length: int = 5) -> str:
    return "".join(random.choices(NAME_ALPHABET, k=length))


def json_copy(obj: Any) -> Any:
    """A deep copy of a JSON value, several times faster than copy.deepcopy."""
    return orjson.loads(orjson.dumps(obj))


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dig(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_values(rtype_key: str, obj: dict[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata", {})
    fields = {"metadata.name": meta.get("name", ""),
              "metadata.namespace": meta.get("namespace", "")}
    for path in SUPPORTED_FIELDS.get(rtype_key, ()):
        fields[path] = _dig(obj, path)
    return fields


class StoredObject:
    __slots__ = ("fields", "labels", "raw", "rv")

    def __init__(self, raw: bytes, labels: dict[str, str], fields: dict[str, str], rv: int):
        self.raw = raw
        self.labels = labels
        self.fields = fields
        self.rv = rv

    def load(self) -> dict[str, Any]:
        return orjson.loads(self.raw)


@dataclass(slots=True)
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    namespace: str
    raw: bytes
    labels: dict[str, str]
    fields: dict[str, str]
    old_labels: dict[str, str] | None
    old_fields: dict[str, str] | None


@dataclass(slots=True)
class WatchFilter:
    namespace: str | None
    labels: LabelSelector | None
    fields: FieldSelector | None

    def _matches(self, labels: dict[str, str] | None, fields: dict[str, str] | None) -> bool:
        if labels is None or fields is None:
            return False
        if self.labels is not None and not self.labels.matches(labels):
            return False
        return self.fields is None or self.fields.matches(fields)

    def translate(self, event: WatchEvent) -> str | None:
        """The event type this watcher sees, or None; moving across a selector is ADDED/DELETED."""
        if self.namespace and event.namespace != self.namespace:
            return None
        now = self._matches(event.labels, event.fields)
        if event.type == "ADDED":
            return "ADDED" if now else None
        if event.type == "DELETED":
            return "DELETED" if now else None
        before = self._matches(event.old_labels, event.old_fields)
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        if before:
            return "DELETED"
        return None


class Watcher:
    def __init__(self, rtype_key: str, flt: WatchFilter) -> None:
        self.rtype_key = rtype_key
        self.filter = flt
        self.queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()

    def offer(self, event: WatchEvent) -> None:
        kind = self.filter.translate(event)
        if kind is not None:
            self.queue.put_nowait((kind, event.raw))


class TypeTable:
    """All objects of one resource type plus its watch history."""

    def __init__(self, history_size: int) -> None:
        self.objects: dict[ObjectKey, StoredObject] = {}
        self.history: deque[WatchEvent] = deque()
        self.history_size = history_size
        self.compacted_rv = 0
        self.watchers: set[Watcher] = set()
        self._sorted_keys: list[ObjectKey] | None = None

    def sorted_keys(self) -> list[ObjectKey]:
        if self._sorted_keys is None:
            self._sorted_keys = sorted(self.objects)
        return self._sorted_keys

    def remember_key(self, key: ObjectKey) -> None:
        if self._sorted_keys is not None:
            bisect.insort(self._sorted_keys, key)

    def forget_key(self, key: ObjectKey) -> None:
        if self._sorted_keys is not None:
            index = bisect.bisect_left(self._sorted_keys, key)
            if index < len(self._sorted_keys) and self._sorted_keys[index] == key:
                del self._sorted_keys[index]

    def record(self, event: WatchEvent) -> None:
        if len(self.history) >= self.history_size:
            self.compacted_rv = self.history.popleft().rv
        self.history.append(event)
        for watcher in self.watchers:
            watcher.offer(event)


Listener = Callable[[ResourceType, str, dict[str, Any], dict[str, Any] | None], None]


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    def __init__(self, history_size: int = 50_000) -> None:
        self.rv = 1
        self.history_size = history_size
        self._tables: dict[str, TypeTable] = {}
        self._types: dict[str, ResourceType] = {}
        self._listeners: list[Listener] = []
        # owner uid -> {(type key, namespace, name)} for garbage collection and controllers
        self.dependents: dict[str, set[tuple[str, str, str]]] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def table(self, rtype: ResourceType) -> TypeTable:
        table = self._tables.get(rtype.key)
        if table is None:
            table = self._tables[rtype.key] = TypeTable(self.history_size)
            self._types[rtype.key] = rtype
        return table

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def compact(self) -> int:
        """Forget every watch history (like etcd compaction); returns the compacted revision."""
        for table in self._tables.values():
            table.history.clear()
            table.compacted_rv = self.rv
        return self.rv

    def _write(self, rtype: ResourceType, event_type: str, obj: dict[str, Any],
               old: StoredObject | None, old_obj: dict[str, Any] | None) -> dict[str, Any]:
        table = self.table(rtype)
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        # orjson's buffer is over-allocated; an exact-size copy halves the memory per object.
        raw = memoryview(orjson.dumps(obj)).tobytes()
        labels = dict(meta.get("labels") or {})
        fields = field_values(rtype.key, obj)
        if event_type == "DELETED":
            if table.objects.pop(key, None) is not None:
                table.forget_key(key)
        else:
            if key not in table.objects:
                table.remember_key(key)
            table.objects[key] = StoredObject(raw, labels, fields, rv)
        self._index_owners(rtype, key, old_obj, obj if event_type != "DELETED" else None)
        table.record(WatchEvent(rv, event_type, key[0], raw, labels, fields,
                                old.labels if old else None, old.fields if old else None))
        for listener in self._listeners:
            listener(rtype, event_type, obj, old_obj)
        return obj

    def _index_owners(self, rtype: ResourceType, key: ObjectKey,
                      before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        ref = (rtype.key, key[0], key[1])
        for obj, add in ((before, False), (after, True)):
            if obj is None:
                continue
            for owner in obj["metadata"].get("ownerReferences") or ():
                uid = owner.get("uid")
                if not uid:
                    continue
                if add:
                    self.dependents.setdefault(uid, set()).add(ref)
                else:
                    deps = self.dependents.get(uid)
                    if deps is not None:
                        deps.discard(ref)
                        if not deps:
                            del self.dependents[uid]

    # -- reads --------------------------------------------------------------------------------

    def stored(self, rtype: ResourceType, namespace: str, name: str) -> StoredObject | None:
        return self.table(rtype).objects.get((namespace if rtype.namespaced else "", name))

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        item = self.stored(rtype, namespace, name)
        if item is None:
            raise not_found(rtype.plural, name, rtype.group)
        return item.load()

    def find(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        item = self.stored(rtype, namespace, name)
        return item.load() if item else None

    def select(self, rtype: ResourceType, namespace: str | None = None,
               labels: LabelSelector | None = None, fields: FieldSelector | None = None,
               after: ObjectKey | None = None) -> Iterable[tuple[ObjectKey, StoredObject]]:
        """Matching objects in key order, starting after `after` (for paging)."""
        table = self.table(rtype)
        keys = table.sorted_keys()
        start = 0
        if after is not None:
            start = bisect.bisect_right(keys, after)
        if namespace:
            start = max(start, bisect.bisect_left(keys, (namespace, "")))
        objects = table.objects
        for index in range(start, len(keys)):
            key = keys[index]
            if namespace and key[0] != namespace:
                break
            item = objects.get(key)
            if item is None:
                continue
            if labels is not None and not labels.matches(item.labels):
                continue
            if fields is not None and not fields.matches(item.fields):
                continue
            yield key, item

    def list_objects(self, rtype: ResourceType, namespace: str | None = None,
                     labels: LabelSelector | None = None) -> list[dict[str, Any]]:
        return [item.load() for _, item in self.select(rtype, namespace, labels)]

    def count_from(self, rtype: ResourceType, namespace: str | None, key: ObjectKey) -> int:
        """How many objects sort at or after `key` (within `namespace`), by bisection."""
        keys = self.table(rtype).sorted_keys()
        end = bisect.bisect_right(keys, (namespace, "\U0010ffff")) if namespace else len(keys)
        return max(0, end - bisect.bisect_left(keys, key))

    def count(self, rtype: ResourceType) -> int:
        return len(self.table(rtype).objects)

    # -- writes -------------------------------------------------------------------------------

    def create(self, rtype: ResourceType, obj: dict[str, Any], namespace: str = "",
               dry_run: bool = False) -> dict[str, Any]:
        obj = json_copy(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise invalid(rtype.kind, "", [("metadata", "must be an object")], rtype.group)
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(rtype.kind, "", [("metadata.name",
                              "Required value: name or generateName is required")], rtype.group)
            meta["name"] = prefix + random_suffix()
        if rtype.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(400, "the namespace of the provided object does not match "
                                    "the namespace sent on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        key = (meta.get("namespace", ""), meta["name"])
        if key in self.table(rtype).objects:
            raise already_exists(rtype.plural, meta["name"], rtype.group)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rtype.key == "/namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        meta["generation"] = 1
        if dry_run:
            meta["resourceVersion"] = str(self.rv)
            return obj
        return self._write(rtype, "ADDED", obj, None, None)

    def update(self, rtype: ResourceType, obj: dict[str, Any], *, status_only: bool = False,
               check_rv: bool = True, dry_run: bool = False) -> dict[str, Any]:
        """Replace an object. With status_only only `.status` changes (the status subresource);
        on the main resource of a type with a status subresource, `.status` is kept."""
        obj = json_copy(obj)
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        ns = meta.get("namespace", "") if rtype.namespaced else ""
        current_item = self.table(rtype).objects.get((ns, name))
        if current_item is None:
            raise not_found(rtype.plural, name, rtype.group)
        current = current_item.load()
        wanted_rv = meta.get("resourceVersion")
        if check_rv and wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rtype.plural, name, "the object has been modified; please apply your "
                           "changes to the latest version and try again", rtype.group)
        if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
            raise conflict(rtype.plural, name, "Precondition failed: UID in precondition: "
                           f"{meta['uid']}, UID in object meta: {current['metadata']['uid']}",
                           rtype.group)
        if status_only:
            new = json_copy(current)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            new["apiVersion"] = rtype.api_version
            new["kind"] = rtype.kind
            new_meta = new.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                          "deletionGracePeriodSeconds"):
                if field in current["metadata"]:
                    new_meta[field] = current["metadata"][field]
                else:
                    new_meta.pop(field, None)
            new_meta["generation"] = current["metadata"].get("generation", 1)
            if "status" in rtype.subresources:
                if "status" in current:
                    new["status"] = current["status"]
                else:
                    new.pop("status", None)
            if _spec_part(new) != _spec_part(current):
                new_meta["generation"] += 1
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") \
                and not self._awaits_kubelet(rtype, new):
            return self._write(rtype, "DELETED", new, current_item, current)
        return self._write(rtype, "MODIFIED", new, current_item, current)

    def put(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Controller write: replace object and status together, no concurrency check."""
        meta = obj["metadata"]
        key = (meta.get("namespace", "") if rtype.namespaced else "", meta["name"])
        current_item = self.table(rtype).objects.get(key)
        if current_item is None:
            raise not_found(rtype.plural, meta["name"], rtype.group)
        current = current_item.load()
        if _spec_part(obj) != _spec_part(current):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        if meta.get("deletionTimestamp") and not meta.get("finalizers") \
                and not self._awaits_kubelet(rtype, obj):
            return self._write(rtype, "DELETED", obj, current_item, current)
        return self._write(rtype, "MODIFIED", obj, current_item, current)

    @staticmethod
    def _awaits_kubelet(rtype: ResourceType, obj: dict[str, Any]) -> bool:
        """Objects whose deletion a controller finishes: a terminating pod with a grace period
        stays until its kubelet confirms it gone; a namespace until its contents are gone."""
        if rtype.key == "/namespaces":
            return True
        return (rtype.key == "/pods" and bool(obj.get("spec", {}).get("nodeName"))
                and (obj["metadata"].get("deletionGracePeriodSeconds") or 0) > 0)

    def delete(self, rtype: ResourceType, namespace: str, name: str, *,
               grace_period: int | None = None, preconditions: dict[str, Any] | None = None,
               dry_run: bool = False, orphan: bool = False,
               foreground: bool = False) -> dict[str, Any]:
        """Delete or start deleting an object; returns its last state."""
        key = (namespace if rtype.namespaced else "", name)
        current_item = self.table(rtype).objects.get(key)
        if current_item is None:
            raise not_found(rtype.plural, name, rtype.group)
        current = current_item.load()
        meta = current["metadata"]
        if preconditions:
            if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
                raise conflict(rtype.plural, name, "Precondition failed: UID in precondition: "
                               f"{preconditions['uid']}, UID in object meta: {meta['uid']}",
                               rtype.group)
            wanted_rv = preconditions.get("resourceVersion")
            if wanted_rv and wanted_rv != meta["resourceVersion"]:
                raise conflict(rtype.plural, name, "Precondition failed: ResourceVersion in "
                               f"precondition: {wanted_rv}, ResourceVersion in object meta: "
                               f"{meta['resourceVersion']}", rtype.group)
        if dry_run:
            return current
        new = json_copy(current)
        new_meta = new["metadata"]
        finalizers = list(new_meta.get("finalizers") or [])
        if orphan and "orphan" not in finalizers:
            finalizers.append("orphan")
        if foreground and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        new_meta["finalizers"] = finalizers
        if not finalizers:
            new_meta.pop("finalizers")
        if rtype.key == "/pods" and new.get("spec", {}).get("nodeName"):
            if grace_period is None:
                grace_period = new["spec"].get("terminationGracePeriodSeconds", 30)
            if meta.get("deletionTimestamp"):
                # Already terminating: a shorter grace period may still speed it up.
                previous = meta.get("deletionGracePeriodSeconds") or 0
                grace_period = min(grace_period, previous)
            new_meta["deletionGracePeriodSeconds"] = grace_period
        elif finalizers:
            new_meta["deletionGracePeriodSeconds"] = 0
        if not new_meta.get("deletionTimestamp"):
            new_meta["deletionTimestamp"] = now_rfc3339()
        if not finalizers and not self._awaits_kubelet(rtype, new):
            return self._write(rtype, "DELETED", new, current_item, current)
        if new == current:
            return current
        return self._write(rtype, "MODIFIED", new, current_item, current)

    def remove(self, rtype: ResourceType, namespace: str, name: str) -> None:
        """Final removal (the kubelet confirmed a pod gone); no-op when absent."""
        key = (namespace if rtype.namespaced else "", name)
        item = self.table(rtype).objects.get(key)
        if item is not None:
            obj = item.load()
            self._write(rtype, "DELETED", obj, item, obj)

    def watch(self, rtype: ResourceType, flt: WatchFilter) -> Watcher:
        watcher = Watcher(rtype.key, flt)
        self.table(rtype).watchers.add(watcher)
        return watcher

    def unwatch(self, rtype: ResourceType, watcher: Watcher) -> None:
        self.table(rtype).watchers.discard(watcher)

    def replay(self, rtype: ResourceType, since_rv: int, watcher: Watcher) -> None:
        """Queue the history after since_rv to a watcher; 410 when it is compacted away."""
        table = self.table(rtype)
        if since_rv < table.compacted_rv:
            raise ApiError(410, f"too old resource version: {since_rv} ({table.compacted_rv})",
                           reason="Expired")
        for event in table.history:
            if event.rv > since_rv:
                watcher.offer(event)

    def drop_type(self, rtype: ResourceType) -> None:
        """A CRD went away: its objects go with it and its watchers end."""
        table = self._tables.pop(rtype.key, None)
        self._types.pop(rtype.key, None)
        if table is not None:
            for watcher in table.watchers:
                watcher.queue.put_nowait(None)
