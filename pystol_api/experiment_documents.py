"""Reading an experiment document (JSON or YAML) someone hands in, with bounds.

Shared by the HTTP API (`POST /api/v1/experiments` with `application/yaml`) and the
command line (`pystol run -f FILE`), which must refuse the same files the same way; it
sits beside the API's three faces because they may not import each other.

YAML is read with the safe loader only, and a YAML file is small text that can still
become a huge tree: aliases repeating each other ("billion laughs") expand 1 KiB into
billions of values once anything copies or serialises the tree. PyYAML builds aliases
as shared Python objects, so loading is cheap; the expansion is counted right after,
memoised per shared node, and a document over `MAX_VALUES` values, or whose expansion
is over `max_bytes` bytes as JSON (a long string an alias repeats counts its length each
time), or whose alias contains itself, is refused before anything walks or serialises
it. The same pass refuses what JSON cannot hold (YAML dates, sets, binary, non-string
keys, NaN, integers of 2**63 or more) and a key given twice in one mapping (JSON or
YAML: a reviewed file must not hold a first value that is not the one that runs), so
the document that goes on is plain, bounded JSON data.

Which kind of document it is (`kind_of`): a Pystol experiment (`method` of typed steps,
or `hypothesis`), a job spec (`action`), or a Chaos Toolkit experiment (`method` whose
activities have a `provider`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

#: The experiment model's MAX_EXPERIMENT_BYTES (not imported: `pystol --help` loads this
#: module and must not pay for pydantic; tests/unit/test_cli_experiments.py keeps the two
#: equal).
MAX_EXPERIMENT_BYTES = 128 * 1024
#: Values (scalars, lists, mappings) once every YAML alias is expanded. A 128 KiB
#: document without aliases holds at most about 65,000.
MAX_VALUES = 100_000
#: Nesting of the raw document; the experiment model bounds it much lower with a field
#: path, this only keeps the walk of a hostile file short.
MAX_DEPTH = 64
#: Integers JSON tools and Kubernetes hold (int64); a longer one is refused, not a 500.
MAX_INT = 2**63

DocumentKind = Literal["experiment", "job", "chaostoolkit"]


class DocumentInvalid(ValueError):
    """The text is not a document Pystol reads; `loc` is the path inside it ("" = all)."""

    def __init__(self, message: str, loc: str = "", status: int = 422) -> None:
        super().__init__(f"{loc}: {message}" if loc else message)
        self.message = message
        self.loc = loc
        self.status = status  # 413 for "too large", 422 otherwise


def load_document(text: bytes | str, *, yaml_allowed: bool = True,
                  max_bytes: int = MAX_EXPERIMENT_BYTES) -> dict[str, Any]:
    """The one JSON object or YAML mapping in `text`, as plain JSON data."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise DocumentInvalid(f"the document is {len(raw):,} bytes; at most {max_bytes:,}",
                              status=413)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DocumentInvalid(f"not UTF-8 text ({error.reason} at byte {error.start})") \
            from None
    stripped = decoded.lstrip()
    if stripped.startswith(("{", "[")) or not yaml_allowed:
        try:
            document = json.loads(decoded, parse_constant=_no_constant,
                                  object_pairs_hook=_unique_pairs)
        except _DuplicateKey as error:
            raise DocumentInvalid(f"the key {error.key!r} is given twice in one object",
                                  error.key) from None
        except (ValueError, RecursionError) as error:
            raise DocumentInvalid(f"not valid JSON: {error}") from None
    else:
        document = _load_yaml(decoded)
    _check_tree(document, max_bytes)
    if not isinstance(document, dict):
        raise DocumentInvalid("expected one object (a JSON object or a YAML mapping), "
                              f"got {_type_name(document)}")
    return document


def kind_of(document: dict[str, Any], declared: str | None = None) -> DocumentKind:
    """What the document is: `declared` "chaostoolkit" (or "pystol") wins; else a job
    spec has `action`, a Chaos Toolkit experiment has activities with a `provider`."""
    if declared == "chaostoolkit":
        return "chaostoolkit"
    if declared == "pystol":
        return "experiment"
    if "action" in document and "method" not in document:
        return "job"
    from pystol_worker.experiments.ctk_import import is_chaostoolkit

    if is_chaostoolkit(document):
        return "chaostoolkit"
    return "experiment"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys; refuse them instead."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


_LOADERS: dict[str, Any] = {}


def _unique_key_loader() -> Any:
    """The safe loader (libyaml's parser when present) whose mappings refuse a key given
    twice; only the constructor is overridden, so parsing stays in C."""
    if "loader" not in _LOADERS:
        import yaml

        base = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader

        class UniqueKeyLoader(base):  # type: ignore[valid-type,misc]
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                if isinstance(node, yaml.MappingNode):
                    seen: set[Any] = set()
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge":
                            continue  # `<<` merges; an explicit key may override those
                        key = self.construct_object(key_node, deep=deep)
                        try:
                            repeated = key in seen
                            seen.add(key)
                        except TypeError:  # an unhashable key: refused as such later
                            continue
                        if repeated:
                            raise DocumentInvalid(
                                f"the key {key!r} is given twice in one mapping (line "
                                f"{key_node.start_mark.line + 1})", str(key))
                return super().construct_mapping(node, deep=deep)

        _LOADERS["loader"] = UniqueKeyLoader
    return _LOADERS["loader"]


def _load_yaml(text: str) -> Any:
    import yaml

    loader = _unique_key_loader()
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DocumentInvalid(f"invalid YAML{where}: {error.problem or error.context or ''}"
                              .rstrip(": ")) from None
    except yaml.YAMLError as error:
        raise DocumentInvalid(f"invalid YAML: {error}") from None
    except RecursionError:
        raise DocumentInvalid(f"nested more than {MAX_DEPTH} levels deep") from None
    except DocumentInvalid:
        raise
    except ValueError as error:
        # Python's int-digit limit, raised from the constructor for a decimal integer
        # of more than 4,300 digits.
        raise DocumentInvalid(f"a number too long ({error})") from None
    if len(documents) != 1:
        raise DocumentInvalid(f"expected one YAML document, found {len(documents)}")
    return documents[0]


def _check_tree(document: Any, max_bytes: int = MAX_EXPERIMENT_BYTES) -> None:
    """Depth, expanded size (values and JSON bytes), cycles and JSON types, without
    recursion: one pass that counts each shared node once (memoised), so a billion laughs
    costs its text size, and a long string an alias repeats costs its length each time."""
    if not isinstance(document, dict | list):
        _check_scalar(document, "")
        return
    size: dict[int, tuple[int, int]] = {}  # id -> (values, JSON bytes)
    on_path: set[int] = set()
    # (node, path, depth, children done?)
    stack: list[tuple[Any, str, int, bool]] = [(document, "", 0, False)]
    while stack:
        node, path, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            values, length = 1, 2  # the brackets
            if isinstance(node, dict):
                for name, child in node.items():
                    child_values, child_length = _size_of(child, size)
                    values += child_values
                    length += _json_length(name) + 1 + child_length
            else:
                for child in node:
                    child_values, child_length = _size_of(child, size)
                    values += child_values
                    length += child_length
            length += max(len(node) - 1, 0)  # the commas
            if values > MAX_VALUES:
                raise DocumentInvalid(f"expands to more than {MAX_VALUES:,} values (YAML "
                                      "aliases repeating each other?)", path, status=413)
            if length > max_bytes:
                raise DocumentInvalid(f"expands to at least {length:,} bytes as JSON; at "
                                      f"most {max_bytes:,} (YAML aliases repeating a long "
                                      "value?)", path, status=413)
            size[key] = (values, length)
            continue
        if key in size:
            continue
        if key in on_path:
            raise DocumentInvalid("a YAML alias that contains itself", path)
        if depth > MAX_DEPTH:
            raise DocumentInvalid(f"nested more than {MAX_DEPTH} levels deep", path)
        on_path.add(key)
        stack.append((node, path, depth, True))
        if isinstance(node, dict):
            pairs: Any = node.items()
        else:
            pairs = enumerate(node)
        for name, child in pairs:
            if isinstance(node, dict):
                if not isinstance(name, str):
                    raise DocumentInvalid(f"key {name!r} is not a string", path)
                child_path = f"{path}.{name}" if path else name
            else:
                child_path = f"{path}[{name}]"
            if isinstance(child, dict | list):
                stack.append((child, child_path, depth + 1, False))
            else:
                _check_scalar(child, child_path)


def _size_of(child: Any, size: dict[int, tuple[int, int]]) -> tuple[int, int]:
    if isinstance(child, dict | list):
        return size[id(child)]
    return 1, _json_length(child)


def _json_length(value: Any) -> int:
    """A lower bound of the value's length as JSON (escapes only add), computed without
    serialising it: a checked scalar (`_check_scalar`) has a short `str`."""
    if isinstance(value, str):
        return len(value) + 2
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    return len(repr(value))


def _check_scalar(value: Any, path: str) -> None:
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if -MAX_INT <= value < MAX_INT:
            return
        raise DocumentInvalid("an integer too large (at most 2**63 - 1)", path)
    if isinstance(value, float):
        if math.isfinite(value):
            return
        raise DocumentInvalid("must be a finite number", path)
    what = ("a date (YAML reads an unquoted timestamp as one: quote it)"
            if type(value).__name__ in ("date", "datetime") else _type_name(value))
    raise DocumentInvalid(f"{what}, which JSON cannot hold", path)


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, set):
        return "a set (!!set)"
    if isinstance(value, bytes):
        return "binary data (!!binary)"
    return f"a {type(value).__name__}"
