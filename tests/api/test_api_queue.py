"""A busy server and a client that goes away: 429 with Retry-After when the queue is full, and a client
disconnect (streaming, non-streaming, or still queued) that stops its generation."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import replace

import httpx
import openai
import pytest

from glm_vision.engine import Engine
from glm_vision.server import AppState
from tests.api_helpers import Gate, RecordingBackend, error_of, post, serve, user, wait_until


@pytest.fixture
def small_engine(settings):
    eng = Engine.load(replace(settings, queue_size=1, max_batch=1))  # one decode slot, one waiting place
    eng.ready = True
    yield eng
    eng.shutdown()


@contextlib.contextmanager
def gated_server(settings, engine: Engine, after_deltas: int | None = None):
    """The app on `engine`, every request it submits recorded, the engine's worker held by a `Gate`;
    the gate released and the server stopped on the way out, whatever the test did."""
    gate = Gate(engine, after_deltas=after_deltas)
    recorded = RecordingBackend(engine)
    live = serve(AppState(settings, backend=recorded))
    try:
        yield live, recorded, gate
    finally:
        gate.release.set()
        live.__exit__()


def test_queue_full_is_429_with_retry_after(settings, small_engine):
    results = {}
    with gated_server(settings, small_engine) as (live, _, gate):

        def call(name):
            results[name] = post(live, {"messages": user(name), "max_tokens": 2})

        running = threading.Thread(target=call, args=("running",))
        running.start()
        assert gate.reached.wait(30)  # the worker holds the first request
        queued = threading.Thread(target=call, args=("queued",))
        queued.start()
        wait_until(lambda: small_engine.worker.queued == 1, what="the second request to queue")
        busy = post(live, {"messages": user("third"), "max_tokens": 2})
        assert busy.status_code == 429
        assert int(busy.headers["retry-after"]) >= 1
        error = error_of(busy)
        assert error["code"] == "server_busy" and "busy" in error["message"]
        assert f"try again in {busy.headers['retry-after']} seconds" in error["message"]
        with openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0) as client:
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="x", messages=user("fourth"), max_tokens=1)
        gate.release.set()
        running.join(60)
        queued.join(60)
        assert results["running"].status_code == 200 and results["queued"].status_code == 200


def test_disconnect_mid_stream_cancels_generation(settings, small_engine):
    with gated_server(settings, small_engine, after_deltas=2) as (live, recorded, gate):
        body = {"messages": user("hello"), "stream": True, "max_tokens": 400, "temperature": 0}
        with httpx.Client(timeout=60) as http:
            with http.stream("POST", live.url + "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")  # the role chunk
                assert gate.reached.wait(30)  # the model has written 2 pieces and is held there
            # leaving the block closes the connection mid-stream
        handle = recorded.handles[-1]
        wait_until(handle.cancelled.is_set, what="the server to cancel the generation")
        gate.release.set()
        wait_until(lambda: handle.result is not None, what="the generation to end")
        assert handle.result.finish_reason == "cancelled"
        assert handle.result.usage.completion_tokens <= 3


def test_disconnect_while_queued_never_runs(settings, small_engine):
    with gated_server(settings, small_engine) as (live, recorded, gate):
        blocker = threading.Thread(target=post, args=(live, {"messages": user("first"), "max_tokens": 1}))
        blocker.start()
        assert gate.reached.wait(30)
        # A raw connection: the server sends no headers until the first event, so the client
        # sends its request, sees it queued, and hangs up.
        payload = json.dumps({"messages": user("queued"), "stream": True, "max_tokens": 50}).encode()
        with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            wait_until(lambda: small_engine.worker.queued == 1, what="the stream request to queue")
        queued = recorded.handles[-1]
        wait_until(queued.cancelled.is_set, what="the server to cancel the queued request")
        gate.release.set()
        blocker.join(60)
        wait_until(lambda: queued.error is not None, what="the queued request to be dropped")
        assert "cancelled before it started" in str(queued.error)


def test_non_stream_disconnect_cancels_generation(settings, small_engine):
    with gated_server(settings, small_engine, after_deltas=2) as (live, recorded, gate):

        def call():
            try:
                httpx.post(
                    live.url + "/v1/chat/completions",
                    json={"messages": user("hello"), "max_tokens": 400, "temperature": 0},
                    timeout=httpx.Timeout(60, read=1),
                )
            except httpx.ReadTimeout:
                pass  # the client gives up while the model is held at the gate

        caller = threading.Thread(target=call)
        caller.start()
        assert gate.reached.wait(30)
        caller.join(60)
        handle = recorded.handles[-1]
        wait_until(handle.cancelled.is_set, what="the server to cancel the generation")
        gate.release.set()
        wait_until(lambda: handle.result is not None, what="the generation to end")
        assert handle.result.finish_reason == "cancelled"
