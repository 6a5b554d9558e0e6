"""Helpers for the API, remote-backend and MCP tests: the real app on a free loopback port, image
data URLs, and a scripted backend (real GpuWorker and handles, a script instead of a model)."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import uvicorn
from PIL import Image

from glm_vision.engine import EngineInfo
from glm_vision.engine.types import GenerationRequest, GenerationResult, Usage
from glm_vision.engine.worker import GpuWorker
from glm_vision.server import AppState


def make_app(state: AppState):
    """The product's app (health, /v1 API, UI) for this state."""
    from glm_vision.server import create_app

    return create_app(state)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a background thread."""

    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(state: AppState) -> LiveServer:
    return LiveServer(make_app(state)).__enter__()


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}[fmt]
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def image_part(image: Image.Image, fmt: str = "PNG", **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(image, fmt), **extra}}


class ScriptedBackend:
    """The engine interface on the real GpuWorker, answering a fixed text in small deltas.

    It stands in for the model where the tiny checkpoint cannot show a behaviour (it never writes
    `<think>`): everything between the backend and the client is the production code."""

    def __init__(self, text: str, *, chunk: int = 3, prompt_tokens: int = 11, cached_tokens: int = 4) -> None:
        self.text = text
        self.chunk = chunk
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.requests: list[GenerationRequest] = []
        self.worker = GpuWorker(self._run, queue_size=8, name="scripted")
        self.worker.start()
        self.info = EngineInfo(model="scripted-glm", device="script", dtype="none", attn="none", is_demo=False)
        self.healthy = True

    def _run(self, request: GenerationRequest, cancel, emit) -> GenerationResult:
        self.requests.append(request)
        text = self.text
        stop_at = len(text)
        for stop in request.sampling.stop:
            index = text.find(stop)
            if index != -1:
                stop_at = min(stop_at, index)
        text = text[:stop_at]
        pieces = [text[i:i + self.chunk] for i in range(0, len(text), self.chunk)]
        budget = request.sampling.max_new_tokens
        finish = "stop"
        if len(pieces) > budget:
            pieces, finish = pieces[:budget], "length"
        for piece in pieces:
            if cancel.is_set():
                finish = "cancelled"
                break
            emit(piece)
        usage = Usage(prompt_tokens=self.prompt_tokens, cached_tokens=self.cached_tokens, completion_tokens=len(pieces))
        return GenerationResult(text="".join(pieces), finish_reason=finish, usage=usage, token_ids=tuple(range(len(pieces))))

    def submit(self, request: GenerationRequest):
        return self.worker.submit(request)

    def close_session(self, session_id: str) -> bool:
        return False

    def stats(self) -> dict:
        return {"served": self.worker.served}

    def shutdown(self) -> None:
        self.worker.stop()


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
