"""gunicorn's gthread worker, with a deadline on reading a request from a client.

gthread waits for a new connection's first byte without taking a thread, but once a
byte has arrived the thread reads the rest of the request with a blocking socket and no
deadline. A client that sends `G` and then nothing holds that thread for ever, and a few
dozen such clients (any pod that reaches the API's port) hold every thread: `/halt`
included. Here every client socket gets a timeout whenever gunicorn makes it blocking,
so a stalled request costs a thread for at most `CLIENT_READ_SECONDS`. (Behind an
Ingress, the proxy buffers requests and the API never sees a slow client at all.)
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

#: Longest one socket operation with a client may take: reading the request line and
#: headers, a body, or sending an answer (a slow reader of a server-sent event stream is
#: dropped after as long, and its browser reconnects).
CLIENT_READ_SECONDS = 5.0


class DeadlineSocket(socket.socket):
    """A client socket that is never blocking without a deadline."""

    __slots__ = ()

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(CLIENT_READ_SECONDS)
        else:
            super().setblocking(False)

    # A stalled client is a client gone, not a server error: as a reset, gunicorn drops the
    # connection quietly instead of logging a traceback per slow client.
    def recv(self, *args: Any) -> bytes:
        try:
            return super().recv(*args)
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, "the client stalled") from None

    def recv_into(self, *args: Any) -> int:
        try:
            return super().recv_into(*args)
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, "the client stalled") from None


class DeadlineThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, with every client socket a DeadlineSocket (`gunicorn_options` names it)."""

    def enqueue_req(self, conn: Any) -> None:
        if type(conn.sock) is socket.socket:  # what gthread accepted (TLS is not served)
            conn.sock.__class__ = DeadlineSocket
        super().enqueue_req(conn)
