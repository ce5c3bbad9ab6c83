"""Logging for every Pystol process: one JSON object per line, or readable text on a terminal.

`configure_logging("worker")` at the start of `pystol api|worker|beat|watch` replaces the
root logger's handlers with one on stderr. Each JSON line carries `ts`, `level`, `logger`,
`process` (the Pystol process name), `pid`, `message`, `job_id` when the line was logged
while a job runs (`job_context(job_id)`, set by the runner) and `exc_info` for exceptions;
`extra={...}` fields are added as they are.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pystol_job_id", default=None)

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "job_id", "process_name"}


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every log line inside carries `job_id`."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


class ContextFilter(logging.Filter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job_id.get()
        record.process_name = self.process_name
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": getattr(record, "process_name", None),
            "pid": record.process,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or current_job_id.get()
        if job_id:
            line["job_id"] = job_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(job)s: %(message)s",
                         "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None) or current_job_id.get()
        record.job = f" [{job_id}]" if job_id else ""
        return super().format(record)


def configure_logging(process_name: str, level: str | int = "INFO",
                      stream: TextIO | None = None, json_lines: bool | None = None
                      ) -> logging.Handler:
    """JSON lines unless `stream` (stderr by default) is a terminal; returns the handler."""
    stream = stream or sys.stderr
    if json_lines is None:
        isatty = getattr(stream, "isatty", None)
        json_lines = not (isatty is not None and isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(ContextFilter(process_name))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    logging.captureWarnings(True)
    return handler
