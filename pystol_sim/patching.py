"""The three PATCH body types kube-apiserver accepts, applied to plain JSON objects.

* ``application/merge-patch+json``: RFC 7386 JSON merge patch.
* ``application/json-patch+json``: RFC 6902 JSON patch (JSON-pointer operations).
* ``application/strategic-merge-patch+json``: Kubernetes strategic merge patch,
  which is what kubectl sends for ``patch``, ``edit``, ``label``, ``annotate``,
  ``cordon``, ``taint``, ``set image`` and client-side ``apply`` on built-in types.

Strategic merge differs from merge patch only in how lists are combined: a real
apiserver consults the Go struct tags (``patchStrategy``/``patchMergeKey``) of
the type being patched. We serve the built-in types as plain dicts, so the same
metadata is kept here as a table keyed by list-field name (plus the little
context needed where a name is ambiguous, such as ``ports``), taken from
k8s.io/api and k8s.io/apimachinery. Lists not in the table are replaced
wholesale, exactly as the apiserver does for fields without a patch strategy.

Every function returns a new object and never mutates its inputs: callers keep
the stored object untouched if a patch fails half-way, and the result shares no
containers with either input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "PatchError",
    "json_merge_patch",
    "json_patch",
    "strategic_merge_patch",
]


class PatchError(ValueError):
    """A patch that cannot be applied (the apiserver answers 422 or 400)."""


def _copy(value: Any) -> Any:
    """Deep copy of a JSON value; much faster than copy.deepcopy for dicts and lists."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# RFC 7386 JSON merge patch
# --------------------------------------------------------------------------------------------


def _merge_into(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Apply `patch` to `target` in place; `target` must be owned by the caller."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if not isinstance(current, dict):
                current = {}
                target[key] = current
            _merge_into(current, value)
        else:
            target[key] = _copy(value)


def json_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch: null deletes, objects merge, anything else replaces.

    Lists are replaced as a whole. A non-object `target` is treated as ``{}`` as
    the RFC says. The patch itself must be an object: kube-apiserver rejects
    anything else, and a non-object patch would replace the whole resource.
    """
    if not isinstance(patch, dict):
        raise PatchError(f"a merge patch must be a JSON object, not {_json_type(patch)}")
    result: dict[str, Any] = _copy(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


# --------------------------------------------------------------------------------------------
# RFC 6902 JSON patch
# --------------------------------------------------------------------------------------------

_MISSING: Any = object()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality for `test`: unlike Python ==, true is not 1, but 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_json_equal(v, b[k]) for k, v in a.items())
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_json_equal, a, b))
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and a == b


class _OpError(Exception):
    """Internal: what went wrong in one operation, before index and path are added."""


def _parse_pointer(pointer: Any) -> list[str]:
    """Split an RFC 6901 JSON pointer into unescaped reference tokens."""
    if not isinstance(pointer, str):
        raise _OpError(f"a JSON pointer must be a string, not {_json_type(pointer)}")
    if pointer == "":
        return []
    if pointer[0] != "/":
        raise _OpError('a JSON pointer must be empty or start with "/"')
    tokens = pointer[1:].split("/")
    for i, token in enumerate(tokens):
        if "~" in token:
            rest = token.replace("~0", "").replace("~1", "")
            if "~" in rest:
                raise _OpError(f'invalid escape in "{token}": "~" must be followed by 0 or 1')
            tokens[i] = token.replace("~1", "/").replace("~0", "~")
    return tokens


def _array_index(token: str, size: int, *, allow_end: bool) -> int:
    """Index into an array of `size` items; `allow_end` admits `-` and size (for add)."""
    if token == "-":
        if allow_end:
            return size
        raise _OpError('"-" (past the end of the array) can only be used to add')
    if not (token.isascii() and token.isdigit()) or (len(token) > 1 and token[0] == "0"):
        raise _OpError(f'"{token}" is not a valid array index')
    index = int(token)
    limit = size if allow_end else size - 1
    if index > limit:
        raise _OpError(f"array index {index} is out of bounds (array has {size} items)")
    return index


def _resolve(doc: Any, tokens: list[str]) -> Any:
    """The value `tokens` points at; raises _OpError if it does not exist."""
    current = doc
    for depth, token in enumerate(tokens):
        if isinstance(current, dict):
            if token not in current:
                where = "/" + "/".join(_escape_token(t) for t in tokens[: depth + 1])
                raise _OpError(f'"{where}" does not exist')
            current = current[token]
        elif isinstance(current, list):
            current = current[_array_index(token, len(current), allow_end=False)]
        else:
            where = "/" + "/".join(_escape_token(t) for t in tokens[:depth])
            raise _OpError(f'"{where}" is {_json_type(current)}, which has no members')
    return current


def _escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _op_add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(last, len(parent), allow_end=True), value)
    else:
        raise _OpError(f"the parent is {_json_type(parent)}, which has no members")
    return doc


def _op_remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise _OpError("cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _OpError("the path does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_array_index(last, len(parent), allow_end=False)]
    else:
        raise _OpError(f"the parent is {_json_type(parent)}, which has no members")
    return doc


def _op_replace(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _OpError("the path does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        parent[_array_index(last, len(parent), allow_end=False)] = value
    else:
        raise _OpError(f"the parent is {_json_type(parent)}, which has no members")
    return doc


def _member(operation: Mapping[str, Any], name: str) -> Any:
    if name not in operation:
        raise _OpError(f'the operation has no "{name}" member')
    return operation[name]


def _apply_operation(doc: Any, operation: Mapping[str, Any], op: str) -> Any:
    tokens = _parse_pointer(operation["path"])
    if op == "add":
        return _op_add(doc, tokens, _copy(_member(operation, "value")))
    if op == "remove":
        return _op_remove(doc, tokens)
    if op == "replace":
        return _op_replace(doc, tokens, _copy(_member(operation, "value")))
    if op == "test":
        expected = _member(operation, "value")
        actual = _resolve(doc, tokens)
        if not _json_equal(actual, expected):
            raise _OpError("test failed: the value is not the expected one")
        return doc
    if op in ("move", "copy"):
        source = _member(operation, "from")
        from_tokens = _parse_pointer(source)
        value = _resolve(doc, from_tokens)
        if op == "copy":
            return _op_add(doc, tokens, _copy(value))
        if tokens == from_tokens:
            return doc
        if tokens[: len(from_tokens)] == from_tokens:
            raise _OpError(f'cannot move "{source}" into one of its own children')
        doc = _op_remove(doc, from_tokens)
        return _op_add(doc, tokens, value)
    raise _OpError(f'unknown operation "{op}" (must be add, remove, replace, move, copy or test)')


def json_patch(target: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """Apply an RFC 6902 JSON patch; all operations succeed or none take effect.

    Paths are RFC 6901 JSON pointers (``~1`` is "/", ``~0`` is "~", ``-`` appends
    to an array). A failing ``test``, a missing path, a bad index or a malformed
    operation raises PatchError naming the operation's index and path. The result
    must still be an object, since it becomes a Kubernetes resource.
    """
    if not isinstance(operations, list):
        raise PatchError(
            f"a JSON patch must be an array of operations, not {_json_type(operations)}"
        )
    doc: Any = _copy(target)
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise PatchError(f"operation {index}: must be an object, not {_json_type(operation)}")
        op = operation.get("op")
        path = operation.get("path")
        if not isinstance(op, str):
            raise PatchError(f'operation {index}: missing or invalid "op" member')
        if "path" not in operation:
            raise PatchError(f'operation {index} ({op}): missing "path" member')
        try:
            doc = _apply_operation(doc, operation, op)
        except _OpError as error:
            where = f'"{path}"' if isinstance(path, str) else repr(path)
            raise PatchError(f"operation {index} ({op}) at path {where}: {error}") from None
    if not isinstance(doc, dict):
        raise PatchError(f"the patched document is {_json_type(doc)}, not an object")
    return doc


# --------------------------------------------------------------------------------------------
# Kubernetes strategic merge patch
# --------------------------------------------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVES = "$deleteFromPrimitiveList/"


class _Deleted:
    """Sentinel returned for a map carrying ``$patch: delete``."""


_DELETED = _Deleted()

# Lists of objects merged element-wise, by the name of the list field -> merge key.
# From the patchStrategy:"merge" patchMergeKey:"..." tags of k8s.io/api (core, apps,
# batch, policy, networking) and k8s.io/apimachinery meta/v1.
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "schedulingGates": "name",
    "resourceClaims": "name",
    "resourceClaimStatuses": "name",
    "allocatedResourcesStatus": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "podIPs": "ip",
    "hostIPs": "ip",
    "topologySpreadConstraints": "topologyKey",
}
_CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})
# Map fields whose patch strategy is "replace": (kind, path to the field).
_REPLACED_MAPS = frozenset({("PodDisruptionBudget", ("spec", "selector"))})

_PRIMITIVE = ""  # strategy marker: merge a list of scalars as a set


def _list_strategy(
    field: str, path: tuple[str, ...], kind: str | None, lists: tuple[list[Any], ...]
) -> str | None:
    """Merge key for a list field, `_PRIMITIVE` for a merged set, or None to replace.

    `path` names the maps from the object root down to the one holding `field`
    (list positions omitted); `kind` is the object's kind when known.
    """
    key = _MERGE_KEYS.get(field)
    if key is not None:
        return key
    parent = path[-1] if path else None
    if field == "ports":
        # Container ports merge by containerPort and Service ports by port; other
        # "ports" lists (NetworkPolicy, Endpoints, EndpointSlice) have no strategy.
        if parent in _CONTAINER_LISTS or any(
            isinstance(item, dict) and "containerPort" in item for items in lists for item in items
        ):
            return "containerPort"
        if path == ("spec",) and kind in (None, "Service"):
            return "port"
        return None
    if field == "finalizers":
        # metadata.finalizers merges as a set; Namespace spec.finalizers is replaced.
        return _PRIMITIVE if parent == "metadata" else None
    if field == "addresses" and path == ("status",) and kind in (None, "Node"):
        return "type"
    if field == "secrets" and not path and kind in (None, "ServiceAccount"):
        return "name"
    if field == "podCIDRs" and path == ("spec",) and kind in (None, "Node"):
        return _PRIMITIVE
    # Everything else (tolerations, envFrom, args, taints, rules, ...) is replaced.
    return None


def _where(path: tuple[str, ...], field: str | None = None) -> str:
    parts = [*path, field] if field is not None else list(path)
    return ".".join(parts) if parts else "the object"


class _StrategicMerge:
    """One strategic merge; holds the object's kind for the few kind-specific rules."""

    def __init__(self, kind: str | None):
        self.kind = kind

    # -- maps ------------------------------------------------------------------------------

    def merge_map(
        self, original: dict[str, Any], patch: Mapping[str, Any], path: tuple[str, ...]
    ) -> dict[str, Any] | _Deleted:
        """Merge `patch` into `original` (owned, modified in place) and return it."""
        if _DIRECTIVE in patch:
            directive = patch[_DIRECTIVE]
            if directive == "delete":
                return _DELETED
            if directive == "replace":
                replacement = self.clean_map(patch, path)
                return {} if isinstance(replacement, _Deleted) else replacement
            raise PatchError(
                f'{_where(path)}: unknown $patch directive "{directive}" in a map '
                '(must be "replace" or "delete")'
            )

        if _RETAIN_KEYS in patch:
            self.retain_keys(original, patch, path)

        handled: set[str] = set()
        for key, order in patch.items():
            if key.startswith(_SET_ORDER):
                field = key[len(_SET_ORDER) :]
                if field in patch and patch[field] is None:
                    continue  # the list is being deleted; there is nothing to order
                self.set_element_order(original, patch, field, order, path)
                handled.add(field)

        deletions: list[tuple[str, Any]] = []
        for key, value in patch.items():
            if key in handled:
                continue
            if key.startswith("$"):
                if key.startswith(_DELETE_PRIMITIVES):
                    deletions.append((key[len(_DELETE_PRIMITIVES) :], value))
                elif key != _RETAIN_KEYS and not key.startswith(_SET_ORDER):
                    raise PatchError(
                        f'{_where(path)}: unknown strategic merge patch directive "{key}"'
                    )
                continue
            if value is None:
                original.pop(key, None)
                continue
            current = original.get(key, _MISSING)
            if isinstance(value, dict):
                if isinstance(current, dict) and (self.kind, (*path, key)) not in _REPLACED_MAPS:
                    merged = self.merge_map(current, value, (*path, key))
                else:
                    merged = self.clean_map(value, (*path, key))
                if isinstance(merged, _Deleted):
                    original.pop(key, None)
                else:
                    original[key] = merged
            elif isinstance(value, list):
                if isinstance(current, list):
                    original[key] = self.merge_list(current, value, key, path)
                else:
                    original[key] = self.clean_list(value, (*path, key))
            else:
                original[key] = value

        for field, values in deletions:
            self.delete_from_primitive_list(original, field, values, path)
        return original

    def retain_keys(
        self, original: dict[str, Any], patch: Mapping[str, Any], path: tuple[str, ...]
    ) -> None:
        """``$retainKeys``: drop every key of `original` the list does not name."""
        keep = patch[_RETAIN_KEYS]
        if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
            raise PatchError(f"{_where(path)}: $retainKeys must be a list of field names")
        for key, value in patch.items():
            if value is not None and not key.startswith("$") and key not in keep:
                raise PatchError(
                    f'{_where(path)}: field "{key}" is set by the patch but missing from '
                    "$retainKeys"
                )
        for key in [k for k in original if k not in keep]:
            del original[key]

    def delete_from_primitive_list(
        self, original: dict[str, Any], field: str, values: Any, path: tuple[str, ...]
    ) -> None:
        """``$deleteFromPrimitiveList/<field>``: remove these scalars from the list."""
        if not isinstance(values, list):
            raise PatchError(f"{_where(path, _DELETE_PRIMITIVES + field)}: must be a list")
        if any(isinstance(v, (dict, list)) for v in values):
            raise PatchError(
                f"{_where(path, _DELETE_PRIMITIVES + field)}: can only delete scalar values"
            )
        current = original.get(field)
        if not isinstance(current, list):
            return  # nothing to delete from, as in apimachinery
        remaining = [item for item in current if _index_of(values, item) < 0]
        if remaining:
            original[field] = remaining
        else:
            # The apiserver stores [] and omits it on output (omitempty); so do we.
            del original[field]

    def set_element_order(
        self,
        original: dict[str, Any],
        patch: Mapping[str, Any],
        field: str,
        order: Any,
        path: tuple[str, ...],
    ) -> None:
        """``$setElementOrder/<field>``: merge `field`, then order it like the directive."""
        if not isinstance(order, list):
            raise PatchError(f"{_where(path, _SET_ORDER + field)}: must be a list")
        in_original = isinstance(original.get(field), list)
        in_patch = isinstance(patch.get(field), list)
        server: list[Any] = original[field] if in_original else []
        if field in patch and not in_patch:
            raise PatchError(
                f"{_where(path, field)}: must be a list when $setElementOrder/{field} is given"
            )
        if in_original and in_patch:
            merged = self.merge_list(server, patch[field], field, path)
        elif in_patch:
            merged = self.clean_list(patch[field], (*path, field))
        elif in_original:
            merged = server
        else:
            return
        strategy = _list_strategy(field, path, self.kind, (server, order))
        if strategy is None:
            # A list without merge strategy is replaced by the patch; its order is the patch's.
            ordered = merged
        else:
            key = strategy or None  # primitives are identified by value
            for item in order:
                if key is not None and not (isinstance(item, dict) and key in item):
                    raise PatchError(
                        f"{_where(path, _SET_ORDER + field)}: every item must carry the merge "
                        f'key "{key}"'
                    )
            ordered = _order(merged, order, server, key)
        if ordered:
            original[field] = ordered
        else:
            original.pop(field, None)

    # -- lists -----------------------------------------------------------------------------

    def merge_list(
        self, original: list[Any], patch: list[Any], field: str, path: tuple[str, ...]
    ) -> list[Any]:
        strategy = _list_strategy(field, path, self.kind, (original, patch))
        if strategy is None:
            return self.clean_list(patch, (*path, field))
        if strategy == _PRIMITIVE:
            return self.merge_primitive_list(original, patch, field, path)
        return self.merge_keyed_list(original, patch, field, strategy, path)

    def merge_primitive_list(
        self, original: list[Any], patch: list[Any], field: str, path: tuple[str, ...]
    ) -> list[Any]:
        replace = False
        values: list[Any] = []
        for item in patch:
            if isinstance(item, dict):
                if item.get(_DIRECTIVE) == "replace" and len(item) == 1:
                    replace = True
                    continue
                raise PatchError(f"{_where(path, field)}: expected a list of scalar values")
            if isinstance(item, list):
                raise PatchError(f"{_where(path, field)}: lists of lists cannot be merged")
            values.append(item)
        if replace:
            return values
        merged: list[Any] = []
        for item in (*original, *values):
            if _index_of(merged, item) < 0:
                merged.append(item)
        return _order(merged, values, original, None)

    def merge_keyed_list(
        self,
        original: list[Any],
        patch: list[Any],
        field: str,
        key: str,
        path: tuple[str, ...],
    ) -> list[Any]:
        where = _where(path, field)
        for item in original:
            if not isinstance(item, dict):
                raise PatchError(f"{where}: the current list holds {_json_type(item)}, not objects")
        plain: list[dict[str, Any]] = []
        replace = False
        server = original
        for item in patch:
            if not isinstance(item, dict):
                raise PatchError(
                    f"{where}: expected objects with a {key!r} key, found {_json_type(item)}"
                )
            if _DIRECTIVE not in item:
                if key not in item:
                    raise PatchError(f'{where}: an item has no merge key "{key}"')
                plain.append(item)
                continue
            directive = item[_DIRECTIVE]
            if directive == "delete":
                if key not in item:
                    raise PatchError(
                        f'{where}: a "$patch: delete" item must carry the merge key "{key}"'
                    )
                server = [e for e in server if not _same(e.get(key, _MISSING), item[key])]
            elif directive == "replace":
                replace = True
            elif directive == "merge":
                raise PatchError(f'{where}: "$patch: merge" is not supported for list items')
            else:
                raise PatchError(f'{where}: unknown $patch directive "{directive}"')
        if replace:
            return self.clean_list(plain, (*path, field))
        merged = list(server)
        for item in plain:
            for index, existing in enumerate(merged):
                if _same(existing.get(key, _MISSING), item[key]):
                    result = self.merge_map(existing, item, (*path, field))
                    assert not isinstance(result, _Deleted)
                    merged[index] = result
                    break
            else:
                added = self.clean_map(item, (*path, field))
                assert not isinstance(added, _Deleted)
                merged.append(added)
        return _order(merged, plain, server, key)

    # -- values without a counterpart in the original ---------------------------------------

    def clean_map(
        self, patch: Mapping[str, Any], path: tuple[str, ...]
    ) -> dict[str, Any] | _Deleted:
        """A copy of a patch map with directives applied to nothing and nulls dropped."""
        directive = patch.get(_DIRECTIVE, _MISSING)
        if directive == "delete":
            return _DELETED
        if directive is not _MISSING and directive != "replace":
            raise PatchError(
                f'{_where(path)}: unknown $patch directive "{directive}" in a map '
                '(must be "replace" or "delete")'
            )
        result: dict[str, Any] = {}
        for key, value in patch.items():
            if key.startswith("$"):
                if not (
                    key in (_DIRECTIVE, _RETAIN_KEYS)
                    or key.startswith(_SET_ORDER)
                    or key.startswith(_DELETE_PRIMITIVES)
                ):
                    raise PatchError(
                        f'{_where(path)}: unknown strategic merge patch directive "{key}"'
                    )
            elif isinstance(value, dict):
                cleaned = self.clean_map(value, (*path, key))
                if not isinstance(cleaned, _Deleted):
                    result[key] = cleaned
            elif isinstance(value, list):
                result[key] = self.clean_list(value, (*path, key))
            elif value is not None:
                result[key] = value
        return result

    def clean_list(self, items: list[Any], path: tuple[str, ...]) -> list[Any]:
        result: list[Any] = []
        for item in items:
            if isinstance(item, dict):
                if len(item) == 1 and item.get(_DIRECTIVE) in ("replace", "delete"):
                    continue  # a bare list directive; nothing to keep
                cleaned = self.clean_map(item, path)
                if not isinstance(cleaned, _Deleted):
                    result.append(cleaned)
            elif isinstance(item, list):
                result.append(self.clean_list(item, path))
            else:
                result.append(item)
        return result


def _same(a: Any, b: Any) -> bool:
    """Merge-key / list-value equality: JSON-like, so true is not 1 but 80 is 80.0."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _index_of(values: list[Any], value: Any) -> int:
    for index, candidate in enumerate(values):
        if _same(candidate, value):
            return index
    return -1


def _order(merged: list[Any], order: list[Any], server: list[Any], key: str | None) -> list[Any]:
    """apimachinery's element order for a merged list.

    Items named in `order` (the patch list, or a ``$setElementOrder`` list) come in
    that order; the remaining, server-only items keep their live order and are
    interleaved with the others by their live positions. A new item therefore
    lands before server-only items that follow it, as with the real apiserver
    (a container added by ``kubectl patch`` appears first).
    """
    ident: Callable[[Any], Any] = (
        (lambda item: item.get(key)) if key is not None else (lambda item: item)
    )
    wanted = [ident(item) for item in order]
    live = [ident(item) for item in server]

    position = _index_of
    patch_items = [item for item in merged if position(wanted, ident(item)) >= 0]
    server_only = [item for item in merged if position(wanted, ident(item)) < 0]
    patch_items.sort(key=lambda item: position(wanted, ident(item)))
    server_only.sort(key=lambda item: position(live, ident(item)) % (len(live) + 1))

    result: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if j >= len(patch_items):
            result.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            result.append(patch_items[j])
            j += 1
        else:
            left = position(live, ident(server_only[i]))
            right = position(live, ident(patch_items[j]))
            if left >= 0 and right >= 0 and left < right:
                result.append(server_only[i])
                i += 1
            else:
                result.append(patch_items[j])
                j += 1
    return result


def strategic_merge_patch(
    target: dict[str, Any], patch: dict[str, Any], *, kind: str | None = None
) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch to a built-in resource.

    Maps merge recursively and null deletes a key, as in a merge patch. Lists
    follow the field's patch strategy: lists of objects with a merge key
    (``containers`` by ``name``, ``volumeMounts`` by ``mountPath``, container
    ``ports`` by ``containerPort``, Service ``ports`` by ``port``, ``conditions``
    by ``type``, ``ownerReferences`` by ``uid``, ...) merge item by item;
    ``metadata.finalizers`` merges as a set; all other lists (``tolerations``,
    ``envFrom``, ``args``, Node ``taints``, ...) are replaced.

    Directives: ``$patch: delete`` (list item: remove the item with that key;
    map: remove the map), ``$patch: replace`` (map: replace it; list item
    ``{"$patch": "replace"}``: replace the list), ``$retainKeys``,
    ``$setElementOrder/<field>`` and ``$deleteFromPrimitiveList/<field>``. No
    directive survives into the result; an unknown one raises PatchError.

    `kind` defaults to ``target["kind"]``; it only matters for the few fields
    whose strategy depends on the type (Service ports, PDB selector, ...).
    """
    if not isinstance(patch, dict):
        raise PatchError(f"a strategic merge patch must be a JSON object, not {_json_type(patch)}")
    if not isinstance(target, dict):
        raise PatchError(f"the patched object must be a JSON object, not {_json_type(target)}")
    if kind is None and isinstance(target.get("kind"), str):
        kind = target["kind"]
    result = _StrategicMerge(kind).merge_map(_copy(target), patch, ())
    return {} if isinstance(result, _Deleted) else result
