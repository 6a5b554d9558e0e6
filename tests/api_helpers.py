"""Helpers for the API, remote-backend and MCP tests: the real app on a free loopback port, image
data URLs, a recording wrapper around a backend, a gate that holds the engine's GPU worker, and a chat
request with its OpenAI error JSON."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from typing import TYPE_CHECKING

import httpx
from PIL import Image

from bench.api_server import LiveServer, free_port  # noqa: F401 - re-exported for the tests
from glm_vision.server import AppState
from tests.doubles import ScriptedBackend  # noqa: F401 - re-exported for the API tests

if TYPE_CHECKING:
    from glm_vision.engine import Engine


def make_app(state: AppState):
    """The product's app (health, /v1 API, UI) for this state."""
    from glm_vision.server import create_app

    return create_app(state)


def serve(state: AppState) -> LiveServer:
    return LiveServer(make_app(state)).__enter__()


def raw_request(port: int, head: bytes, body: bytes = b"", piece: int = 4096) -> bytes:
    """What the server answers to `head` + `body` sent over a plain socket in small pieces (as a slow client would)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        data = head + body
        try:
            for start in range(0, len(data), piece):
                sock.sendall(data[start : start + piece])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before the rest is sent
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}[fmt]
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def image_part(image: Image.Image, fmt: str = "PNG", **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(image, fmt), **extra}}


def user(content) -> list[dict]:
    return [{"role": "user", "content": content}]


def post(server, body, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60, **kwargs)


def error_of(response: httpx.Response) -> dict:
    """The error of an OpenAI error response, checked to have its shape: only `error`, with a message."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"])
    assert body["error"]["message"]
    return body["error"]


class RecordingBackend:
    """Wraps a backend and keeps every handle it gave out, so tests can see what the server did."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.handles = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def submit(self, request):
        handle = self.inner.submit(request)
        self.handles.append(handle)
        return handle


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Gate:
    """Holds the engine's GPU worker at a chosen point until released (no sleeps, no timing):
    before the next request starts, or after a request's `after_deltas`-th text delta."""

    def __init__(self, engine: Engine, *, after_deltas: int | None = None) -> None:
        self.release = threading.Event()
        self.reached = threading.Event()
        scheduler = engine.scheduler
        if after_deltas is None:
            original_admit = scheduler.admit

            def gated_admit(handle):
                self.reached.set()
                self.release.wait(60)
                return original_admit(handle)

            scheduler.admit = gated_admit
            return
        original_emit = scheduler.emit
        counts: dict[int, int] = {}

        def gated_emit(seq, text):
            original_emit(seq, text)
            counts[id(seq)] = counts.get(id(seq), 0) + 1
            if counts[id(seq)] == after_deltas:
                self.reached.set()
                self.release.wait(60)

        scheduler.emit = gated_emit
