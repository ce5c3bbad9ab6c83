"""Durations as people write them (`90`, `"60s"`, `"1h30m"`, `"250ms"`), stored as
seconds and written back in the short form; every model with a time in it uses these."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds from `90`, `1.5`, `"60s"`, `"5m"`, `"1h30m"` or `"250ms"`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 60s, 5m or 1h30m")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"duration {value!r} is out of range") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                amount, unit = float(match[1]), match[2]
                seconds += amount * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(f"invalid duration {value!r}: expected a number of seconds "
                                 "or a Go-style duration such as 60s, 5m or 1h30m") from None
    else:
        raise ValueError("expected a duration such as 60s, 5m or 1h30m")
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds == int(seconds):
        whole = int(seconds)
        if whole and whole % 3600 == 0:
            return f"{whole // 3600}h"
        if whole and whole % 60 == 0:
            return f"{whole // 60}m"
        return f"{whole}s"
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    Field(json_schema_extra={"type": "string", "examples": ["60s", "5m", "1h30m"]}),
]


def at_most(seconds: float | None, limit: float) -> float | None:
    """`seconds` when it is no longer than `limit`; a ValueError naming the limit if not
    (the caller's field validator puts it at the field's path)."""
    if seconds is not None and seconds > limit:
        raise ValueError(f"at most {format_duration(limit)} ({limit:g}s)")
    return seconds
