"""The simulated cluster's object store: what etcd plus the apiserver's registry do.

Objects are kept as serialised JSON bytes with a small index (labels and the
few fields that field selectors use) beside them. That is what lets one
process hold 100,000 pods in well under a gigabyte and answer a list by
joining stored bytes instead of re-serialising dicts.

Every write bumps one global resourceVersion, lands in a per-type history (the
watch cache) and is pushed, in order, to every matching watcher's unbounded
queue: a slow watcher delays itself, never drops an event. History older than
the retained window counts as compacted, and a watch from before it gets 410.

Each history event also keeps the object's previous bytes, so the same window
answers "what did this type look like at resourceVersion N": that is what makes
a paged list consistent (every page is served as of the first page's
resourceVersion, as kube-apiserver does from etcd's MVCC) and what
`resourceVersionMatch=Exact` lists read. A revision older than the window gets
410, as a compacted etcd revision does.

A label index per type (label key -> value -> object keys) answers equality,
`in` and `exists` requirements without scanning: a list of the 1,000 pods of one
app among 100,000 touches about 1,000 objects, not 100,000. Identical label maps
are shared between objects (a ReplicaSet's pods all carry the same one), which
pays for the index's memory.

The store runs on the server's event loop and is never touched from another
thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pystol_sim import quota
from pystol_sim.errors import ApiError, already_exists, conflict, invalid, not_found
from pystol_sim.resources import ResourceType
from pystol_sim.selectors import (
    EQUALS,
    EXISTS,
    GREATER_THAN,
    IN,
    LESS_THAN,
    FieldSelector,
    LabelSelector,
)

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


# Field values that repeat across objects (namespaces, node names, phases) are interned:
# 100,000 pods then hold a few hundred distinct strings, not 100,000 copies of each.
_UNIQUE_FIELDS = frozenset({"metadata.name", "status.podIP", "involvedObject.uid",
                            "involvedObject.name", "involvedObject.resourceVersion"})


def field_values(rtype_key: str, obj: dict[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata", {})
    fields = {"metadata.name": meta.get("name", ""),
              "metadata.namespace": _intern(meta.get("namespace", ""))}
    for path in SUPPORTED_FIELDS.get(rtype_key, ()):
        value = _dig(obj, path)
        fields[path] = value if path in _UNIQUE_FIELDS else _intern(value)
    return fields


def _intern(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


# Label maps shared between objects, by content. Bounded: when it is full it starts over
# (objects keep the maps they have; only later writes stop sharing with earlier ones).
SHARED_LABEL_MAPS = 20_000
_NO_LABELS: dict[str, str] = {}


class LabelMaps:
    """One read-only dict per distinct label map: stored objects and watch events share them.

    Pods of one ReplicaSet carry identical labels, so at 100,000 pods this keeps about a
    hundred small dicts instead of 100,000, and equal maps are the same object, which lets
    the label index skip re-indexing an update that did not touch labels."""

    def __init__(self) -> None:
        self._maps: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}

    def canonical(self, labels: Any) -> dict[str, str]:
        if not labels or not isinstance(labels, dict):
            return _NO_LABELS
        try:
            signature = tuple(sorted(labels.items()))
            shared = self._maps.get(signature)
        except TypeError:  # not a map of strings (validation refuses these from clients):
            return {k: v for k, v in labels.items() if type(k) is str and type(v) is str}
        if shared is None:
            if len(self._maps) >= SHARED_LABEL_MAPS:
                self._maps.clear()
            shared = {_intern(k): _intern(v) for k, v in signature}
            self._maps[signature] = shared
        return shared


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
    """One write, as watchers see it; `old_*` is the object before it (None if created),
    which is what a list at an earlier resourceVersion is rebuilt from."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    namespace: str
    raw: bytes
    labels: dict[str, str]
    fields: dict[str, str]
    old_labels: dict[str, str] | None
    old_fields: dict[str, str] | None
    name: str = ""
    old_raw: bytes | None = None


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
    """All objects of one resource type, their label index and the watch history."""

    def __init__(self, history_size: int) -> None:
        self.objects: dict[ObjectKey, StoredObject] = {}
        self.history: deque[WatchEvent] = deque()
        self.history_size = history_size
        self.compacted_rv = 0
        self.watchers: set[Watcher] = set()
        self._sorted_keys: list[ObjectKey] | None = None
        # label key -> label value -> keys of the objects carrying it
        self.label_index: dict[str, dict[str, set[ObjectKey]]] = {}
        # label key -> how many objects carry it (what an `exists` requirement selects)
        self.label_key_counts: dict[str, int] = {}

    def index_labels(self, key: ObjectKey, labels: dict[str, str]) -> None:
        index, counts = self.label_index, self.label_key_counts
        for label, value in labels.items():
            values = index.get(label)
            if values is None:
                values = index[label] = {}
            keys = values.get(value)
            if keys is None:
                values[value] = {key}
            else:
                keys.add(key)
            counts[label] = counts.get(label, 0) + 1

    def unindex_labels(self, key: ObjectKey, labels: dict[str, str]) -> None:
        index, counts = self.label_index, self.label_key_counts
        for label, value in labels.items():
            values = index.get(label)
            if values is None:
                continue
            keys = values.get(value)
            if keys is None or key not in keys:
                continue
            keys.discard(key)
            if not keys:
                del values[value]
                if not values:
                    del index[label]
            remaining = counts.get(label, 1) - 1
            if remaining:
                counts[label] = remaining
            else:
                counts.pop(label, None)

    def changes_since(self, rv: int) -> dict[ObjectKey, WatchEvent]:
        """For every object written after `rv`, its first event after `rv`: whose `old_*`
        is the object as it was at `rv` (None: it did not exist then)."""
        changed: dict[ObjectKey, WatchEvent] = {}
        for event in reversed(self.history):
            if event.rv <= rv:
                break
            changed[(event.namespace, event.name)] = event
        return changed

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

PODS = "/pods"
QUOTAS = "/resourcequotas"
QUOTA_WATCHED = frozenset({PODS, QUOTAS})
# Use the label index only when it leaves fewer than this share of what a scan touches:
# indexed candidates must be sorted, a scan walks keys already in order.
INDEX_SHARE = 0.5


def _first(pair: tuple[ObjectKey, bytes]) -> ObjectKey:
    return pair[0]


def _indexed_candidates(table: TypeTable, labels: LabelSelector,
                        scanned: int) -> Iterable[ObjectKey] | None:
    """Keys that may match `labels` (a superset, still to be matched), taken from the
    requirement the index narrows most; None when a scan of `scanned` keys is cheaper or
    no requirement can use the index (only `!=`, `notin`, `!key`)."""
    index = table.label_index
    best: list[set[ObjectKey]] | None = None
    best_size = int(scanned * INDEX_SHARE)
    for requirement in labels.requirements:
        operator = requirement.operator
        values = index.get(requirement.key)
        if operator == EQUALS:
            found = values.get(requirement.values[0]) if values else None
            sets = [found] if found else []
        elif operator == IN:
            sets = [found for value in requirement.values
                    if values and (found := values.get(value))]
        elif operator in (EXISTS, GREATER_THAN, LESS_THAN):
            if values and table.label_key_counts.get(requirement.key, 0) > best_size:
                continue  # too many to be worth it; skip building the union
            sets = list(values.values()) if values else []
        else:
            continue
        size = sum(len(keys) for keys in sets)
        if size == 0:
            return ()
        if size <= best_size and (best is None or size < best_size):
            best, best_size = sets, size
    if best is None:
        return None
    if len(best) == 1:
        return best[0]
    return set().union(*best)


def _check_phase_transition(current: dict[str, Any], new: dict[str, Any]) -> None:
    """A pod that has finished (Succeeded or Failed) stays finished, as kube-apiserver's
    pod status validation insists: reviving it would also bring it back into its
    namespace's quota without passing quota admission."""
    old_phase = (current.get("status") or {}).get("phase")
    new_status = new.get("status")
    new_phase = new_status.get("phase") if isinstance(new_status, dict) else None
    if old_phase in quota.TERMINAL_PHASES and new_phase not in quota.TERMINAL_PHASES:
        meta = current["metadata"]
        raise invalid("Pod", meta["name"], [(
            "status.phase", f'Forbidden: may not transition from terminal phase "{old_phase}" '
                            f'to "{new_phase or ""}"')])


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
        self.label_maps = LabelMaps()
        self._refreshing_quotas = False
        # namespace -> summed quota.pod_usage of its pods (pods that count, their requests
        # and limits), kept from each pod write's before and after
        self._quota_usage: dict[str, dict[str, int]] = {}

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
        labels = self.label_maps.canonical(meta.get("labels"))
        fields = field_values(rtype.key, obj)
        previous = table.objects.get(key)
        if event_type == "DELETED":
            if previous is not None:
                del table.objects[key]
                table.forget_key(key)
                table.unindex_labels(key, previous.labels)
        else:
            if previous is None:
                table.remember_key(key)
                table.index_labels(key, labels)
            elif previous.labels is not labels:
                table.unindex_labels(key, previous.labels)
                table.index_labels(key, labels)
            table.objects[key] = StoredObject(raw, labels, fields, rv)
        self._index_owners(rtype, key, old_obj, obj if event_type != "DELETED" else None)
        table.record(WatchEvent(rv, event_type, key[0], raw, labels, fields,
                                old.labels if old else None, old.fields if old else None,
                                key[1], old.raw if old else None))
        for listener in self._listeners:
            listener(rtype, event_type, obj, old_obj)
        if rtype.key in QUOTA_WATCHED and key[0] and not self._refreshing_quotas:
            changed = rtype.key == QUOTAS
            if rtype.key == PODS:
                changed = self._count_usage(key[0], old_obj,
                                            obj if event_type != "DELETED" else None)
            if changed:
                self._refresh_quotas(key[0])
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
               after: ObjectKey | None = None, *, start: ObjectKey | None = None
               ) -> Iterable[tuple[ObjectKey, StoredObject]]:
        """Matching objects in key order, from after `after` or from `start` on (paging).

        A label selector with an equality, `in`, `exists` (or `>`/`<`, which need the key)
        requirement is answered from the label index when that narrows the candidates
        below what a scan of the namespace would touch; other selectors scan."""
        table = self.table(rtype)
        keys = table.sorted_keys()
        first = 0
        if after is not None:
            first = bisect.bisect_right(keys, after)
        if start is not None:
            first = max(first, bisect.bisect_left(keys, start))
        if namespace:
            first = max(first, bisect.bisect_left(keys, (namespace, "")))
        objects = table.objects
        if labels is not None:
            if labels.matches_nothing:
                return
            scanned = (bisect.bisect_right(keys, (namespace, "\U0010ffff")) if namespace
                       else len(keys)) - first
            candidates = _indexed_candidates(table, labels, scanned)
            if candidates is not None:
                if first >= len(keys):
                    return
                lowest = keys[first]
                chosen = sorted(key for key in candidates
                                if key >= lowest and (not namespace or key[0] == namespace))
                # One equality, `in` or `exists` requirement: the index answered it exactly.
                exact = len(labels.requirements) == 1 and labels.requirements[0].operator in (
                    EQUALS, IN, EXISTS)
                for key in chosen:
                    item = objects.get(key)
                    if item is None or not (exact or labels.matches(item.labels)):
                        continue
                    if fields is not None and not fields.matches(item.fields):
                        continue
                    yield key, item
                return
        for index in range(first, len(keys)):
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

    def select_at(self, rtype: ResourceType, rv: int | None, namespace: str | None = None,
                  labels: LabelSelector | None = None, fields: FieldSelector | None = None,
                  *, start: ObjectKey | None = None) -> Iterator[tuple[ObjectKey, bytes]]:
        """Like `select`, but the objects' bytes as they were at resourceVersion `rv`
        (None: now).

        Objects written since `rv` are replaced by their state before that write, taken
        from the watch history; raises 410 Expired when that history no longer reaches
        back to `rv` (compacted, or aged out of the window)."""
        if rv is None:
            return ((key, item.raw) for key, item in self.select(rtype, namespace, labels,
                                                                 fields, start=start))
        table = self.table(rtype)
        if rv < table.compacted_rv:  # checked now, not when the iterator is first pulled
            raise ApiError(410, f"too old resource version: {rv} ({table.compacted_rv})",
                           reason="Expired")
        changed = table.changes_since(rv)
        current = ((key, item.raw) for key, item in self.select(rtype, namespace, labels,
                                                                 fields, start=start)
                   if key not in changed)
        if not changed:
            return current
        restored = sorted(
            (key, event.old_raw) for key, event in changed.items()
            if event.old_raw is not None and (start is None or key >= start)
            and (not namespace or key[0] == namespace)
            and (labels is None or labels.matches(event.old_labels))
            and (fields is None or fields.matches(event.old_fields)))
        return heapq.merge(current, restored, key=_first)

    def count_at(self, rtype: ResourceType, rv: int | None, namespace: str | None,
                 start: ObjectKey) -> int:
        """How many objects (of `namespace`) sort at or after `start`, at resourceVersion
        `rv` (None: now): the current count by bisection, corrected by the writes since."""
        current = self.count_from(rtype, namespace, start)
        if rv is None:
            return current
        table = self.table(rtype)
        for key, event in table.changes_since(rv).items():
            if key < start or (namespace and key[0] != namespace):
                continue
            current += (event.old_raw is not None) - (key in table.objects)
        return current

    def list_objects(self, rtype: ResourceType, namespace: str | None = None,
                     labels: LabelSelector | None = None) -> list[dict[str, Any]]:
        return [item.load() for _, item in self.select(rtype, namespace, labels)]

    def count_from(self, rtype: ResourceType, namespace: str | None, key: ObjectKey) -> int:
        """How many objects sort at or after `key` (within `namespace`), by bisection."""
        keys = self.table(rtype).sorted_keys()
        end = bisect.bisect_right(keys, (namespace, "\U0010ffff")) if namespace else len(keys)
        if namespace:
            key = max(key, (namespace, ""))
        return max(0, end - bisect.bisect_left(keys, key))

    def count(self, rtype: ResourceType) -> int:
        return len(self.table(rtype).objects)

    # -- writes -------------------------------------------------------------------------------

    def _free_generated_name(self, rtype: ResourceType, prefix: str, namespace: str) -> str:
        """`generateName` + a random suffix, drawn again while it names an object that
        exists: kube-apiserver retries a colliding generated name too (RetryGenerateName,
        GA in 1.32), so a controller creating 500 pods does not lose one to a 1-in-14M
        draw. After 8 draws the last one stands and create answers its 409, as kube's does."""
        ns = namespace if rtype.namespaced else ""
        objects = self.table(rtype).objects
        name = prefix + random_suffix()
        for _ in range(7):
            if (ns, name) not in objects:
                break
            name = prefix + random_suffix()
        return name

    def create(self, rtype: ResourceType, obj: dict[str, Any], namespace: str = "",
               dry_run: bool = False, *, from_client: bool = False) -> dict[str, Any]:
        """Store a new object. `from_client` (an API request) gets what kube-apiserver does
        to a created pod: whatever `status` it brought is replaced by `phase: Pending`, so
        a pod cannot arrive already finished (and so uncounted by a quota). Controllers
        and scenario loading, which build settled pods themselves, keep theirs."""
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
            meta["name"] = self._free_generated_name(rtype, prefix, namespace or
                                                     meta.get("namespace") or "default")
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
        if rtype.key == PODS:
            if from_client:
                obj["status"] = {"phase": "Pending"}
            self._admit_pod(obj, key[0])
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
        if rtype.key == PODS:
            _check_phase_transition(current, new)
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

    # -- ResourceQuota ------------------------------------------------------------------------

    def _quotas(self, namespace: str) -> list[tuple[StoredObject, dict[str, Any]]]:
        table = self._tables.get(QUOTAS)
        if table is None or not table.objects:
            return []
        rtype = self._types[QUOTAS]
        return [(item, item.load()) for _, item in self.select(rtype, namespace)]

    def _count_usage(self, namespace: str, before: dict[str, Any] | None,
                     after: dict[str, Any] | None) -> bool:
        """Move one pod write's change into the namespace's usage; True if it changed."""
        old, new = quota.pod_usage(before), quota.pod_usage(after)
        if old == new:
            return False
        usage = self._quota_usage.setdefault(namespace, {})
        for resource in old.keys() | new.keys():
            total = usage.get(resource, 0) + new.get(resource, 0) - old.get(resource, 0)
            if total:
                usage[resource] = total
            else:
                usage.pop(resource, None)
        if not usage:
            del self._quota_usage[namespace]
        return True

    def _admit_pod(self, pod: dict[str, Any], namespace: str) -> None:
        """The quota admission every pod create passes through (API and controllers)."""
        quotas = self._quotas(namespace)
        if quotas:
            quota.check_pod_create(pod, [obj for _, obj in quotas],
                                   self._quota_usage.get(namespace, {}).get("pods", 0))

    def _refresh_quotas(self, namespace: str) -> None:
        """Bring the namespace's quotas' `status` (hard, used) up to date after a write that
        changed usage or a quota; a quota whose status is already right is not written."""
        quotas = self._quotas(namespace)
        if not quotas:
            return
        usage = self._quota_usage.get(namespace, {})
        rtype = self._types[QUOTAS]
        self._refreshing_quotas = True
        try:
            for item, obj in quotas:
                status = quota.quota_status(obj, usage)
                if obj.get("status") == status or obj["metadata"].get("deletionTimestamp"):
                    continue
                current = item.load()
                obj["status"] = status
                self._write(rtype, "MODIFIED", obj, item, current)
        finally:
            self._refreshing_quotas = False

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
