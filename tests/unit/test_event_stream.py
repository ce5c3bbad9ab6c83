"""The CLI's server-sent event parser, fed the way a network delivers: in arbitrary pieces."""

from __future__ import annotations

from pystol_api.cli.api_client import parse_event_stream

STREAM = (b"retry: 1000\n\n"
          b'id: 0\nevent: queued\ndata: {"kind": "queued"}\n\n'
          b": keep-alive\n\n"
          b'id: 1\nevent: started\ndata: {"kind":\ndata: "started"}\n\n'
          b'event: end\ndata: {"status": "succeeded"}\n\n')


def test_events_whatever_the_chunking() -> None:
    for size in (1, 3, 7, len(STREAM)):
        chunks = iter([STREAM[i:i + size] for i in range(0, len(STREAM), size)])
        events = list(parse_event_stream(chunks))
        assert [(e.id, e.event) for e in events] == [("0", "queued"), ("1", "started"),
                                                     (None, "end")]
        assert events[1].data == '{"kind":\n"started"}'
        assert events[2].data == '{"status": "succeeded"}'
