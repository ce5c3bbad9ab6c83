"""Check Kubernetes label and field selector syntax before a job is queued.

The cluster would refuse a bad selector too, but only when the worker runs the
job; checking at submission gives the user a 422 naming the field instead of a
failed job minutes later.
"""

from __future__ import annotations

import re

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
_KEY = f"({_PREFIX})?{_NAME}"
_VALUE = f"({_NAME})?"
_EXISTS = re.compile(rf"^!?\s*{_KEY}$")
_EQUALITY = re.compile(rf"^{_KEY}\s*(==|=|!=)\s*{_VALUE}$")
_SET = re.compile(rf"^{_KEY}\s+(in|notin)\s+\(\s*{_VALUE}(\s*,\s*{_VALUE})*\s*\)$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9.]*\s*(==|=|!=)\s*[^,]*$")


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


def label_selector_problem(text: str) -> str | None:
    """None when `text` is a valid label selector, else what is wrong."""
    if not text.strip():
        return None
    for requirement in split_requirements(text):
        if not requirement:
            return "empty requirement (a stray comma?)"
        if not (_EXISTS.match(requirement) or _EQUALITY.match(requirement)
                or _SET.match(requirement)):
            return (f"invalid requirement {requirement!r}: expected key=value, key!=value, "
                    "key in (a,b), key notin (a,b), key or !key")
    return None


def field_selector_problem(text: str) -> str | None:
    if not text.strip():
        return None
    for requirement in re.split(r"(?<!\\),", text):
        if not _FIELD.match(requirement.strip()):
            return (f"invalid requirement {requirement.strip()!r}: expected field=value or "
                    "field!=value, e.g. status.phase=Running")
    return None
