"""A clock a test moves by hand, for code that takes its clock as a dependency."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class ManualClock(Generic[T]):
    """`clock()` answers `clock.now` (epoch seconds, a datetime, whatever the code reads);
    the test sets `now` to move time."""

    def __init__(self, now: T) -> None:
        self.now = now

    def __call__(self) -> T:
        return self.now
