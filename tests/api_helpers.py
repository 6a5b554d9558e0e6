"""Helpers for the API, remote-backend and MCP tests: the real app on a free loopback port, image
data URLs, and a recording wrapper around a backend."""

from __future__ import annotations

import base64
import io
import time

from PIL import Image

from bench.api_server import LiveServer, free_port  # noqa: F401 - re-exported for the tests
from glm_vision.server import AppState
from tests.doubles import ScriptedBackend  # noqa: F401 - re-exported for the API tests


def make_app(state: AppState):
    """The product's app (health, /v1 API, UI) for this state."""
    from glm_vision.server import create_app

    return create_app(state)


def serve(state: AppState) -> LiveServer:
    return LiveServer(make_app(state)).__enter__()


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}[fmt]
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def image_part(image: Image.Image, fmt: str = "PNG", **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(image, fmt), **extra}}


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
