"""An ASGI app served by uvicorn on a free loopback port in a background thread of this process: the
benchmarks' in-process server (bench_http.py, load.py) and the tests' live server (tests/api_helpers.py)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from glm_vision.http_protocol import http_protocol


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a background thread (a context manager)."""

    def __init__(self, app, port: int | None = None, **options) -> None:
        """`options`: more of uvicorn's `Config` (`http=`, `loop=`); the HTTP protocol is the server's unless named."""
        self.port = port or free_port()
        options.setdefault("http", http_protocol())
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2, **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
