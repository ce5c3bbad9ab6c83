"""Label and field selectors, parsed the way kube-apiserver parses them.

Clients (kubectl, the Python client, kopf, controllers) send `labelSelector` and
`fieldSelector` query strings and expect the apiserver's grammar, its rejections
and its matching rules, so this module reproduces apimachinery's
`labels.Parse`, `metav1.LabelSelectorAsSelector` and `fields.ParseSelector`
rather than inventing a friendlier dialect.

Selectors are parsed once and matched many times (a list call may filter
100,000 pods with one selector), so parsing compiles every requirement into a
plain tuple and `matches` is a short loop over those tuples with no regular
expressions and no allocation. Parsed selectors are immutable, which also lets
`parse_label_selector` and `parse_field_selector` cache recent results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = [
    "DOES_NOT_EXIST",
    "EQUALS",
    "EVERYTHING",
    "EXISTS",
    "GREATER_THAN",
    "IN",
    "LESS_THAN",
    "NOTHING",
    "NOT_EQUALS",
    "NOT_IN",
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "label_selector_from_set",
    "label_selector_from_spec",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(ValueError):
    """A selector that kube-apiserver would reject with 400 Bad Request.

    `str(error)` is the whole message, e.g.
    ``invalid label selector "app in (web": missing closing parenthesis ...``;
    `selector` is the offending text, `reason` the part after the colon and
    `position` the 0-based character offset of the problem when there is one.
    """

    def __init__(self, kind: str, selector: str, reason: str, position: int | None = None):
        super().__init__(f'invalid {kind} selector "{selector}": {reason}')
        self.selector = selector
        self.reason = reason
        self.position = position


# --------------------------------------------------------------------------------------------
# Label selectors
# --------------------------------------------------------------------------------------------

# Operator names are apimachinery's `selection.Operator` values. `==` is accepted
# by the parser as a synonym of `=` and normalised to it.
EQUALS = "="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
EXISTS = "exists"
DOES_NOT_EXIST = "!"
GREATER_THAN = "gt"
LESS_THAN = "lt"

_OPERATORS = frozenset(
    {EQUALS, NOT_EQUALS, IN, NOT_IN, EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN}
)

# Compiled operator codes: small ints so the hot loop compares cheaply.
_OP_EQ, _OP_NE, _OP_IN, _OP_NOTIN, _OP_EXISTS, _OP_DNE, _OP_GT, _OP_LT = range(8)
_OP_CODES = {
    EQUALS: _OP_EQ,
    NOT_EQUALS: _OP_NE,
    IN: _OP_IN,
    NOT_IN: _OP_NOTIN,
    EXISTS: _OP_EXISTS,
    DOES_NOT_EXIST: _OP_DNE,
    GREATER_THAN: _OP_GT,
    LESS_THAN: _OP_LT,
}

_EMPTY_LABELS: Mapping[str, str] = {}

_NAME_MAX = 63
_PREFIX_MAX = 253
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_DNS1123_SUBDOMAIN_RE = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z"
)
_NAME_CHARS = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)


def _key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key (a Kubernetes qualified name), or None."""
    parts = key.split("/")
    if len(parts) == 1:
        name = key
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return "prefix part must be non-empty"
        if len(prefix) > _PREFIX_MAX:
            return f"prefix part must be no more than {_PREFIX_MAX} characters"
        if not _DNS1123_SUBDOMAIN_RE.match(prefix):
            return (
                "prefix part must be a lowercase RFC 1123 subdomain: lower case alphanumeric "
                "characters, '-' or '.', starting and ending with an alphanumeric character"
            )
    else:
        return "a qualified name may contain at most one '/' (an optional DNS subdomain prefix)"
    if not name:
        return "name part must be non-empty"
    if len(name) > _NAME_MAX:
        return f"name part must be no more than {_NAME_MAX} characters"
    if not _NAME_RE.match(name):
        return f"name part {_NAME_CHARS}"
    return None


def _value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None (the empty string is valid)."""
    if not value:
        return None
    if len(value) > _NAME_MAX:
        return f"must be no more than {_NAME_MAX} characters"
    if not _NAME_RE.match(value):
        return f"a label value must be empty or {_NAME_CHARS.removeprefix('must ')}"
    return None


def _parse_int(text: str) -> int | None:
    """Strict base-10 integer like Go's strconv.ParseInt (no spaces or underscores)."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not (digits.isascii() and digits.isdigit()):
        return None
    return int(text)


class Requirement(NamedTuple):
    """One label requirement: `key`, an operator constant, and the values it names.

    `values` is sorted and de-duplicated for set operators, holds exactly one item
    for `=`, `!=`, `gt` and `lt`, and is empty for `exists` and `!`.
    """

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        op, key, values = self.operator, self.key, self.values
        if op == EXISTS:
            return key
        if op == DOES_NOT_EXIST:
            return f"!{key}"
        if op == IN:
            return f"{key} in ({','.join(values)})"
        if op == NOT_IN:
            return f"{key} notin ({','.join(values)})"
        if op == GREATER_THAN:
            return f"{key}>{values[0]}"
        if op == LESS_THAN:
            return f"{key}<{values[0]}"
        return f"{key}{op}{values[0]}"


def _compile(req: Requirement) -> tuple[int, str, Any]:
    """Turn a requirement into the (opcode, key, argument) tuple `matches` walks."""
    op = _OP_CODES.get(req.operator)
    if op is None:
        raise ValueError(f"unknown label selector operator {req.operator!r}")
    if op in (_OP_EXISTS, _OP_DNE):
        if req.values:
            raise ValueError(f"operator {req.operator!r} takes no values")
        return (op, req.key, None)
    if op in (_OP_IN, _OP_NOTIN):
        if not req.values:
            raise ValueError(f"operator {req.operator!r} needs at least one value")
        return (op, req.key, frozenset(req.values))
    if len(req.values) != 1:
        raise ValueError(f"operator {req.operator!r} takes exactly one value")
    if op in (_OP_GT, _OP_LT):
        number = _parse_int(req.values[0])
        if number is None:
            raise ValueError(f"operator {req.operator!r} needs an integer value")
        return (op, req.key, number)
    return (op, req.key, req.values[0])


class LabelSelector:
    """An immutable, precompiled label selector.

    A selector with no requirements matches everything (`empty` is True). The
    special `NOTHING` selector (what a `None` structured selector means) matches
    nothing; its string form is "" like apimachinery's `labels.Nothing()`.
    """

    __slots__ = ("_compiled", "_match_nothing", "_requirements", "_text")

    def __init__(self, requirements: Iterable[Requirement] = (), *, match_nothing: bool = False):
        reqs = []
        for req in requirements:
            req = Requirement(*req)
            if req.operator in (IN, NOT_IN):
                req = req._replace(values=tuple(sorted(set(req.values))))
            reqs.append(req)
        # apimachinery keeps requirements sorted by key (stable) for its String().
        reqs.sort(key=lambda r: r.key)
        self._requirements: tuple[Requirement, ...] = tuple(reqs)
        self._compiled: tuple[tuple[int, str, Any], ...] = tuple(_compile(r) for r in reqs)
        self._match_nothing = bool(match_nothing)
        self._text = ",".join(str(r) for r in reqs)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str] | None) -> LabelSelector:
        """Equality selector for a plain label map (a Service's or RC's `spec.selector`).

        Like apimachinery's `SelectorFromSet`, an empty or missing map gives a
        selector that matches everything; callers that want "no selector selects
        nothing" (the endpoints controller does) must check for that themselves.
        """
        return label_selector_from_set(labels)

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        return self._requirements

    @property
    def empty(self) -> bool:
        """True if this selector has no requirements and so matches every object."""
        return not self._compiled and not self._match_nothing

    @property
    def matches_nothing(self) -> bool:
        return self._match_nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels (None means no labels) is selected."""
        if self._match_nothing:
            return False
        if labels is None:
            labels = _EMPTY_LABELS
        get = labels.get
        for op, key, arg in self._compiled:
            if op == _OP_EQ:
                if get(key) != arg:
                    return False
            elif op == _OP_IN:
                if get(key) not in arg:
                    return False
            elif op == _OP_NE:
                if get(key) == arg:
                    return False
            elif op == _OP_NOTIN:
                if get(key) in arg:
                    return False
            elif op == _OP_EXISTS:
                if key not in labels:
                    return False
            elif op == _OP_DNE:
                if key in labels:
                    return False
            else:  # gt / lt: the label must be present and parse as an integer
                value = get(key)
                number = None if value is None else _parse_int(value)
                if number is None:
                    return False
                if op == _OP_GT:
                    if not number > arg:
                        return False
                elif not number < arg:
                    return False
        return True

    def __iter__(self) -> Iterator[Requirement]:
        return iter(self._requirements)

    def __len__(self) -> int:
        return len(self._requirements)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        if self._match_nothing:
            return "LabelSelector(<nothing>)"
        return f"LabelSelector({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return (self._match_nothing, self._requirements) == (
            other._match_nothing,
            other._requirements,
        )

    def __hash__(self) -> int:
        return hash((self._match_nothing, self._requirements))


EVERYTHING = LabelSelector()
NOTHING = LabelSelector(match_nothing=True)


# Tokens of the label selector grammar (apimachinery's lexer, minus its quirks).
_T_IDENT = "identifier"
_T_END = "end of selector"
_SYMBOLS = {
    "==": "==",
    "!=": "!=",
    "=": "=",
    "!": "!",
    "(": "(",
    ")": ")",
    ",": ",",
    "<": "<",
    ">": ">",
}
_SPECIAL_CHARS = frozenset("=!(),<>")


class _Token(NamedTuple):
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _SPECIAL_CHARS:
            pair = text[i : i + 2]
            if pair in ("==", "!="):
                tokens.append(_Token(pair, pair, i))
                i += 2
            else:
                tokens.append(_Token(_SYMBOLS[ch], ch, i))
                i += 1
        else:
            j = i + 1
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL_CHARS:
                j += 1
            tokens.append(_Token(_T_IDENT, text[i:j], i))
            i = j
    tokens.append(_Token(_T_END, "", n))
    return tokens


def _describe(tok: _Token) -> str:
    if tok.kind == _T_END:
        return "the end of the selector"
    return f'"{tok.text}" at position {tok.pos}'


class _LabelParser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def fail(self, reason: str, position: int | None = None) -> SelectorError:
        return SelectorError("label", self.text, reason, position)

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != _T_END:
            self.i += 1
        return tok

    def parse(self) -> list[Requirement]:
        if self.peek().kind == _T_END:
            return []
        requirements = [self.requirement()]
        while True:
            tok = self.take()
            if tok.kind == _T_END:
                return requirements
            if tok.kind != ",":
                raise self.fail(
                    f'unexpected {_describe(tok)}; expected "," or the end of the selector',
                    tok.pos,
                )
            if self.peek().kind == _T_END:
                raise self.fail(f"trailing comma at position {tok.pos}", tok.pos)
            requirements.append(self.requirement())

    def key(self, tok: _Token) -> str:
        if tok.kind != _T_IDENT:
            if tok.kind in (",", _T_END):
                raise self.fail(f"empty requirement at position {tok.pos}", tok.pos)
            raise self.fail(f"expected a label key, found {_describe(tok)}", tok.pos)
        problem = _key_problem(tok.text)
        if problem:
            raise self.fail(f'invalid key "{tok.text}" at position {tok.pos}: {problem}', tok.pos)
        return tok.text

    def value(self, tok: _Token, key: str) -> str:
        problem = _value_problem(tok.text)
        if problem:
            raise self.fail(
                f'invalid value "{tok.text}" for key "{key}" at position {tok.pos}: {problem}',
                tok.pos,
            )
        return tok.text

    def requirement(self) -> Requirement:
        first = self.take()
        if first.kind == "!":
            tok = self.take()
            if tok.kind != _T_IDENT:
                raise self.fail(f'expected a label key after "!", found {_describe(tok)}', tok.pos)
            key = self.key(tok)
            after = self.peek()
            if after.kind not in (",", _T_END):
                raise self.fail(
                    f'unexpected {_describe(after)}: a "!{key}" (does not exist) requirement '
                    "takes no operator or values",
                    after.pos,
                )
            return Requirement(key, DOES_NOT_EXIST)
        key = self.key(first)
        if self.peek().kind in (",", _T_END):
            return Requirement(key, EXISTS)
        op = self.take()
        if op.kind in ("=", "==", "!="):
            nxt = self.peek()
            if nxt.kind == _T_IDENT:
                value = self.value(self.take(), key)
            elif nxt.kind in (",", _T_END):
                value = ""
            else:
                raise self.fail(
                    f'expected a value after "{op.text}" for key "{key}", found {_describe(nxt)}',
                    nxt.pos,
                )
            return Requirement(key, NOT_EQUALS if op.kind == "!=" else EQUALS, (value,))
        if op.kind == _T_IDENT and op.text in ("in", "notin"):
            return Requirement(key, IN if op.text == "in" else NOT_IN, self.value_set(op, key))
        if op.kind in ("<", ">"):
            nxt = self.take()
            number = _parse_int(nxt.text) if nxt.kind == _T_IDENT else None
            if number is None:
                raise self.fail(
                    f'the value after "{op.text}" for key "{key}" must be an integer, found '
                    f"{_describe(nxt)}",
                    nxt.pos,
                )
            return Requirement(key, GREATER_THAN if op.kind == ">" else LESS_THAN, (nxt.text,))
        raise self.fail(
            f'unexpected {_describe(op)} after key "{key}"; expected one of "=", "==", "!=", '
            '"in", "notin", ">", "<", "," or the end of the selector',
            op.pos,
        )

    def value_set(self, op: _Token, key: str) -> tuple[str, ...]:
        opening = self.take()
        if opening.kind != "(":
            raise self.fail(
                f'expected "(" after "{op.text}" for key "{key}", found {_describe(opening)}',
                opening.pos,
            )
        values: list[str] = []
        current: str | None = None  # the value since the last separator, if any
        while True:
            tok = self.take()
            if tok.kind == _T_END:
                raise self.fail(
                    f"missing closing parenthesis for the value list opened at position "
                    f"{opening.pos}",
                    tok.pos,
                )
            if tok.kind == ")":
                values.append(current or "")
                return tuple(values)
            if tok.kind == ",":
                values.append(current or "")
                current = None
            elif tok.kind == _T_IDENT:
                if current is not None:
                    raise self.fail(
                        f'expected "," or ")" between values, found {_describe(tok)}', tok.pos
                    )
                current = self.value(tok, key)
            else:
                raise self.fail(f"unexpected {_describe(tok)} inside a value list", tok.pos)


@lru_cache(maxsize=512)
def _parse_label_selector_cached(text: str) -> LabelSelector:
    requirements = _LabelParser(text).parse()
    return LabelSelector(requirements) if requirements else EVERYTHING


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a `labelSelector` query string such as ``app=web,tier in (a,b),!canary``.

    Grammar (comma-separated requirements, whitespace ignored): ``k=v``, ``k==v``,
    ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists), ``!k`` (does not
    exist) and apimachinery's ``k>N`` / ``k<N`` integer comparisons. ``k=`` means
    "label present with an empty value" and ``k in ()`` means ``k in ("")``, as in
    apimachinery. An empty (or all-whitespace, or None) selector matches everything.
    Raises SelectorError naming the problem and its position.
    """
    if text is None:
        return EVERYTHING
    if not isinstance(text, str):
        raise SelectorError("label", str(text), "a label selector must be a string")
    return _parse_label_selector_cached(text)


def label_selector_from_set(labels: Mapping[str, str] | None) -> LabelSelector:
    """Equality selector for every pair of a label map; empty or None matches everything."""
    if not labels:
        return EVERYTHING
    return label_selector_from_spec({"matchLabels": dict(labels)})


_SPEC_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def label_selector_from_spec(spec: Mapping[str, Any] | None) -> LabelSelector:
    """Convert a structured `metav1.LabelSelector` (matchLabels / matchExpressions).

    Following `metav1.LabelSelectorAsSelector`, a missing selector (`None`) matches
    **nothing** while an empty one (`{}`, or both parts empty) matches
    **everything**. That difference is what makes a PodDisruptionBudget or a
    NetworkPolicy without `spec.selector` behave differently from one with
    `selector: {}`, so callers must pass None through rather than `or {}` it
    when they want the "no selector" meaning.
    """
    if spec is None:
        return NOTHING

    def fail(reason: str) -> SelectorError:
        return SelectorError("label", _spec_text(spec), reason)

    if not isinstance(spec, Mapping):
        raise fail("a label selector must be an object with matchLabels and/or matchExpressions")
    match_labels = spec.get("matchLabels") or {}
    expressions = spec.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping):
        raise fail("matchLabels must be an object mapping label keys to values")
    if not isinstance(expressions, list):
        raise fail("matchExpressions must be a list")
    requirements: list[Requirement] = []
    for key, value in match_labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise fail(f"matchLabels[{key!r}]: keys and values must be strings")
        problem = _key_problem(key)
        if problem:
            raise fail(f'matchLabels: invalid key "{key}": {problem}')
        problem = _value_problem(value)
        if problem:
            raise fail(f'matchLabels: invalid value "{value}" for key "{key}": {problem}')
        requirements.append(Requirement(key, EQUALS, (value,)))
    for index, expr in enumerate(expressions):
        where = f"matchExpressions[{index}]"
        if not isinstance(expr, Mapping):
            raise fail(f"{where} must be an object with key, operator and values")
        key = expr.get("key")
        if not isinstance(key, str) or not key:
            raise fail(f"{where}.key is required")
        problem = _key_problem(key)
        if problem:
            raise fail(f'{where}: invalid key "{key}": {problem}')
        operator = expr.get("operator")
        op = _SPEC_OPERATORS.get(operator) if isinstance(operator, str) else None
        if op is None:
            raise fail(
                f'{where}.operator: "{operator}" is not a valid label selector operator '
                "(must be In, NotIn, Exists or DoesNotExist)"
            )
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise fail(f"{where}.values must be a list of strings")
        if op in (IN, NOT_IN):
            if not values:
                raise fail(f"{where}.values: must be non-empty for operator {operator}")
            for value in values:
                problem = _value_problem(value)
                if problem:
                    raise fail(f'{where}.values: invalid value "{value}": {problem}')
        elif values:
            raise fail(f"{where}.values: must be empty for operator {operator}")
        requirements.append(Requirement(key, op, tuple(values)))
    return LabelSelector(requirements) if requirements else EVERYTHING


def _spec_text(spec: Any) -> str:
    try:
        return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return repr(spec)


# --------------------------------------------------------------------------------------------
# Field selectors
# --------------------------------------------------------------------------------------------


class FieldRequirement(NamedTuple):
    """One field requirement; `operator` is "=" (also written "==") or "!="."""

    field: str
    operator: str
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{_escape_field_value(self.value)}"


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


class FieldSelector:
    """An immutable, precompiled field selector; all requirements must hold.

    `matches` takes the object's selectable fields as a flat mapping such as
    ``{"metadata.name": "web-0", "status.phase": "Running"}``; a missing field
    compares as the empty string, so ``spec.nodeName=`` selects unscheduled pods.
    """

    __slots__ = ("_equal", "_fields", "_not_equal", "_requirements")

    def __init__(self, requirements: Iterable[FieldRequirement] = ()):
        reqs = tuple(FieldRequirement(*r) for r in requirements)
        for req in reqs:
            if req.operator not in ("=", "!="):
                raise ValueError(f"unknown field selector operator {req.operator!r}")
        self._requirements = reqs
        self._fields = frozenset(r.field for r in reqs)
        self._equal = tuple((r.field, r.value) for r in reqs if r.operator == "=")
        self._not_equal = tuple((r.field, r.value) for r in reqs if r.operator == "!=")

    @property
    def requirements(self) -> tuple[FieldRequirement, ...]:
        return self._requirements

    @property
    def fields(self) -> frozenset[str]:
        """Names of the fields this selector uses (for "field label not supported")."""
        return self._fields

    @property
    def empty(self) -> bool:
        return not self._requirements

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal, if some requirement pins it (index lookups)."""
        for name, value in self._equal:
            if name == field:
                return value
        return None

    def matches(self, fields: Mapping[str, str] | None) -> bool:
        if fields is None:
            fields = _EMPTY_LABELS
        get = fields.get
        for name, value in self._equal:
            if (get(name) or "") != value:
                return False
        # A plain loop, not all(<generator>): this runs once per object in a list call.
        for name, value in self._not_equal:  # noqa: SIM110
            if (get(name) or "") == value:
                return False
        return True

    def __iter__(self) -> Iterator[FieldRequirement]:
        return iter(self._requirements)

    def __len__(self) -> int:
        return len(self._requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self._requirements)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSelector):
            return NotImplemented
        return self._requirements == other._requirements

    def __hash__(self) -> int:
        return hash(self._requirements)


def _split_unescaped_commas(text: str) -> list[tuple[str, int]]:
    """Split on commas not preceded by a backslash escape; keep each term's offset."""
    terms: list[tuple[str, int]] = []
    start = 0
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append((text[start:i], start))
            start = i + 1
    terms.append((text[start:], start))
    return terms


def _unescape_field_value(value: str, fail: Any, offset: int) -> str:
    if "\\" not in value and "," not in value and "=" not in value:
        return value
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            if ch not in "\\,=":
                raise fail(
                    f'invalid escape sequence "\\{ch}" at position {offset + i - 1} '
                    r'(only "\\", "\," and "\=" are allowed)',
                    offset + i - 1,
                )
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise fail(
                f'unescaped "{ch}" at position {offset + i} in a value (write "\\{ch}")',
                offset + i,
            )
        else:
            out.append(ch)
    if escaped:
        raise fail(
            f"the value ends with a lone backslash at position {offset + len(value) - 1}",
            offset + len(value) - 1,
        )
    return "".join(out)


@lru_cache(maxsize=512)
def _parse_field_selector_cached(text: str) -> FieldSelector:
    def fail(reason: str, position: int | None = None) -> SelectorError:
        return SelectorError("field", text, reason, position)

    requirements: list[FieldRequirement] = []
    for term, start in _split_unescaped_commas(text):
        if not term.strip():
            continue  # apimachinery skips empty terms ("a=b,,c=d", trailing commas)
        for i in range(len(term)):
            if term.startswith("!=", i):
                op, width = "!=", 2
            elif term.startswith("==", i):
                op, width = "=", 2
            elif term[i] == "=":
                op, width = "=", 1
            else:
                continue
            break
        else:
            raise fail(
                f'cannot understand "{term.strip()}" at position {start}: expected field=value, '
                "field==value or field!=value",
                start,
            )
        field = term[:i].strip()
        if not field:
            raise fail(
                f'missing field name before "{term[i : i + width]}" at position {start + i}',
                start + i,
            )
        raw = term[i + width :]
        stripped = raw.lstrip()
        value_start = start + i + width + (len(raw) - len(stripped))
        value = _unescape_field_value(stripped.rstrip(), fail, value_start)
        requirements.append(FieldRequirement(field, op, value))
    return FieldSelector(requirements)


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse a `fieldSelector` query string such as ``status.phase!=Failed,spec.nodeName=n1``.

    Requirements are comma-separated ``field=value``, ``field==value`` or
    ``field!=value``; in values ``\\,``, ``\\=`` and ``\\\\`` stand for a literal
    comma, equals sign and backslash, and any other escape, or an unescaped ``,``
    or ``=``, is an error (as in apimachinery). Empty terms are skipped. Unlike
    apimachinery, whitespace around field names and values is ignored: no
    selectable field value contains leading or trailing spaces, so this only
    forgives sloppy typing. Field names are not checked here; the server rejects
    unsupported ones using `FieldSelector.fields`.
    """
    if text is None:
        return FieldSelector()
    if not isinstance(text, str):
        raise SelectorError("field", str(text), "a field selector must be a string")
    return _parse_field_selector_cached(text)
