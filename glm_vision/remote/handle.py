"""A request in flight to the remote server: cancelling it closes the upstream stream."""

from __future__ import annotations

import socket
import threading

from ..backend import GenerationRequest, RequestHandle


class RemoteHandle(RequestHandle):
    def __init__(self, request: GenerationRequest) -> None:
        super().__init__(request)  # nothing waits here: requests go straight to the remote server
        self._stream = None
        self._stream_lock = threading.Lock()

    def attach(self, stream) -> None:
        """Remember the upstream stream so `cancel()` can close it (at once, if already cancelled)."""
        with self._stream_lock:
            self._stream = stream
        if self.cancelled.is_set():
            stream.close()

    def cancel(self) -> None:
        super().cancel()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            _shut_down_socket(stream)
            try:
                stream.close()  # drops the connection: the upstream server stops generating
            except Exception:  # noqa: BLE001 - closing twice or a connection already gone
                pass


def _shut_down_socket(stream) -> None:
    """Shut the stream's socket down. Another thread may be blocked reading it, holding the
    connection, and `close()` from here does not always wake that read; a shutdown does (the read
    sees the end of the stream), and the upstream server sees the disconnect at once."""
    try:
        network = stream.response.extensions["network_stream"]
        sock = network.get_extra_info("socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - no socket (another transport) or already closed
        pass
