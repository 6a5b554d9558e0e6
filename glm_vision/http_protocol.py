"""The HTTP/1.1 protocol uvicorn serves the app with: httptools (C), which costs the event loop a fraction of
h11's pure Python for every streamed chunk, with the bound on a request's head that h11 has and httptools
lacks: a request line and headers over `MAX_HEAD_BYTES` get 431 and the connection is closed, so a client
cannot make the server buffer megabytes of headers before the app (and the API key check) sees them."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; cookies and keys use a few KB
LINGER_S = 2.0  # how long a refused connection stays open for the client to read the answer
HEAD_TOO_LARGE = f"request line and headers larger than {MAX_HEAD_BYTES} bytes".encode()


def http_protocol():
    """What `uvicorn.Config(http=...)` takes: the bounded httptools protocol, or h11 where httptools is missing."""
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:  # httptools is pinned; a hand-made environment without it still serves, through h11
        return "h11"

    class BoundedHeadProtocol(HttpToolsProtocol):
        """httptools with a request's head capped at `MAX_HEAD_BYTES`: 431, then the connection closes."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True  # between a message's first byte and the end of its headers
            self._head_bytes = 0
            self._refused = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # what the client still sends after the 431 is dropped until the connection closes
            super().data_received(data)  # the parser ends the head within `data` when it can
            if not self._in_head or self.transport.is_closing():
                return
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()

        def _refuse(self) -> None:
            log.warning("refusing a request whose line and headers passed %d bytes", MAX_HEAD_BYTES)
            self._refused = True
            self.transport.write(
                STATUS_LINE[431]
                + b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
                + str(len(HEAD_TOO_LARGE)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + HEAD_TOO_LARGE
            )
            # Closing now, with the client's bytes unread, would reset the connection and could destroy the
            # answer before the client reads it: end our side after it, then close a moment later.
            if not self.transport.can_write_eof():  # TLS: no half-close
                self.transport.close()
                return
            self.transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    return BoundedHeadProtocol
