"""A JobQueue that remembers what it was asked to queue, for tests that submit through the
real submission service (or app) and check what reached the broker."""

from __future__ import annotations


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)
