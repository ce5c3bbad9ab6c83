"""`configure_logging`: JSON lines with the job id while a job runs, text on a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pystol_worker.core.logging_setup import configure_logging, job_context


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_job_id() -> None:
    out = io.StringIO()
    configure_logging("worker", stream=out)
    log = logging.getLogger("pystol.test")
    log.info("before")
    with job_context("j-1"):
        log.warning("inside %s", "the job", extra={"target": "web-1"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("crashed")
    log.info("after")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["before", "inside the job", "crashed",
                                                   "after"]
    assert [line.get("job_id") for line in lines] == [None, "j-1", "j-1", None]
    assert lines[1]["level"] == "warning" and lines[1]["logger"] == "pystol.test"
    assert lines[1]["process"] == "worker" and lines[1]["target"] == "web-1"
    assert "RuntimeError: boom" in lines[2]["exc_info"]
    assert lines[0]["ts"].endswith("+00:00")


def test_text_on_a_terminal() -> None:
    out = Tty()
    configure_logging("api", stream=out)
    with job_context("j-2"):
        logging.getLogger("pystol.api").info("hello")
    text = out.getvalue()
    assert "[j-2]" in text and "hello" in text
    with pytest.raises(ValueError):
        json.loads(text)
