"""Bounds on server-sent event streams, so that followers cannot take every API thread.

A `text/event-stream` answer (`GET /api/v1/jobs/{id}/events` with `Accept:
text/event-stream`) holds a gunicorn thread for as long as it is open. Without a bound,
as many followers as there are threads (a dashboard tab left open per job, a script
following in a loop) leave nothing for plain requests, `/halt` included. So, per API
process:

- at most `PYSTOL_STREAM_MAX_CLIENTS` streams are open at once; one more is answered
  503 (problem document, `Retry-After`) before it starts: the dashboard falls back to
  polling, the CLI retries. gunicorn gets that many threads *more* than it needs for
  plain requests (`wsgi_server`), so streams can never use the threads the rest needs;
- a stream ends after `PYSTOL_STREAM_MAX_SECONDS` (at the first event or keep-alive past
  it), and the client reconnects with `Last-Event-ID`, so no stream holds its slot
  forever and slots turn over between followers.

This works on the response, whichever route produced it: a slot is taken when a view
answers with an event stream, and given back when the server closes the response (the
client went away, or the stream ended).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response

from pystol_api.http.problems import problem_response

EVENT_STREAM = "text/event-stream"
RETRY_AFTER_SECONDS = 5


class StreamSlots:
    """A non-blocking count of the streams open in this process."""

    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self._slots = threading.BoundedSemaphore(max_clients)

    def take(self) -> Callable[[], None] | None:
        """A function that gives the slot back (once, however often it is called), or
        None when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            return None
        lock = threading.Lock()
        held = [True]

        def give_back() -> None:
            with lock:
                if held[0]:
                    held[0] = False
                    self._slots.release()
        return give_back


def ending_at(chunks: Iterable[Any], deadline: float,
              clock: Callable[[], float] = time.monotonic) -> Iterator[Any]:
    """The chunks of a stream until `deadline` (checked after each chunk); the stream's
    own generator is closed either way (it unsubscribes from Redis)."""
    iterator = iter(chunks)
    try:
        for chunk in iterator:
            yield chunk
            if clock() >= deadline:
                return
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def install(app: Flask, max_clients: int, max_seconds: float) -> StreamSlots:
    """Bound the event streams `app` answers; the slots, for tests to inspect."""
    slots = StreamSlots(max_clients)

    @app.after_request
    def _bound_event_stream(response: Response) -> Response:
        if response.mimetype != EVENT_STREAM or not response.is_streamed:
            return response
        give_back = slots.take()
        if give_back is None:
            response.close()  # its generator never started: nothing to undo
            return problem_response(
                503, "too-many-streams", "Too many event streams",
                f"this API process already serves {slots.max_clients} event streams "
                "(PYSTOL_STREAM_MAX_CLIENTS); poll the JSON form of this resource or "
                f"retry in {RETRY_AFTER_SECONDS} s",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        response.response = ending_at(response.response, time.monotonic() + max_seconds)
        response.call_on_close(give_back)
        return response

    return slots
