"""Check Kubernetes label and field selector syntax before a job is queued.

The cluster would refuse a bad selector too, but only when the worker runs the
job; checking at submission gives the user a 422 naming the field instead of a
failed job minutes later.

Linear time, whatever the input: anyone who may submit a job (or create a custom
resource) sends these strings, and a check that backtracks lets 79 characters hold an API
thread for seconds. So a requirement is split by hand (at the set's parentheses, at its
commas) and only short, fixed pieces — one key, one value, each bounded in length — meet
a regular expression, with `fullmatch` and patterns without nested ambiguity.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_OPERATOR = re.compile(r"==|!=|=")  # the first one in the text splits key from value
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9.]*")


def split_requirements(text: str) -> list[str]:
    """A selector's requirements: split at the commas outside a set's parentheses, empty
    parts kept (a stray comma is an error the validator reports)."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


def _is_key(text: str) -> bool:
    """A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63."""
    prefix, slash, name = text.rpartition("/")
    if slash and (not prefix or len(prefix) > 253
                  or not all(_DNS_LABEL.fullmatch(label) for label in prefix.split("."))):
        return False
    return len(name) <= 63 and _NAME.fullmatch(name) is not None


def _is_value(text: str) -> bool:
    return text == "" or (len(text) <= 63 and _NAME.fullmatch(text) is not None)


def _is_requirement(requirement: str) -> bool:
    """One requirement of a label selector: key, !key, key=v, key==v, key!=v,
    key in (a,b), key notin (a,b)."""
    if "(" in requirement:
        head, _, rest = requirement.partition("(")
        words = head.split()
        if len(words) != 2 or words[1] not in ("in", "notin") or not head[-1:].isspace() \
                or not rest.endswith(")") or "(" in rest or ")" in rest[:-1]:
            return False
        return _is_key(words[0]) and all(_is_value(value.strip())
                                         for value in rest[:-1].split(","))
    if (operator := _OPERATOR.search(requirement)) is not None:
        return _is_key(requirement[:operator.start()].strip()) and \
            _is_value(requirement[operator.end():].strip())
    key = requirement[1:].lstrip() if requirement.startswith("!") else requirement
    return _is_key(key)


def label_selector_problem(text: str) -> str | None:
    """None when `text` is a valid label selector, else what is wrong."""
    if not text.strip():
        return None
    for requirement in split_requirements(text):
        if not requirement:
            return "empty requirement (a stray comma?)"
        if not _is_requirement(requirement):
            return (f"invalid requirement {requirement!r}: expected key=value, key!=value, "
                    "key in (a,b), key notin (a,b), key or !key")
    return None


def field_selector_problem(text: str) -> str | None:
    if not text.strip():
        return None
    for requirement in re.split(r"(?<!\\),", text):
        requirement = requirement.strip()
        operator = _OPERATOR.search(requirement)
        if operator is None or _FIELD.fullmatch(requirement[:operator.start()].strip()) is None:
            return (f"invalid requirement {requirement!r}: expected field=value or "
                    "field!=value, e.g. status.phase=Running")
    return None
