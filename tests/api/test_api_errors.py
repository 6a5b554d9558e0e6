"""Every error the API answers: OpenAI's error JSON with the right status (400, 401, 404, 413, 429
with Retry-After, 503), a client disconnect that stops the generation, and remote image URLs."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import socket
import threading
from dataclasses import replace

import httpx
import openai
import pytest
from PIL import Image

from glm_vision.backend import GpuOutOfMemoryError
from glm_vision.engine import Engine
from glm_vision.server import AppState
from tests.api_helpers import RecordingBackend, ScriptedBackend, data_url, image_part, serve, wait_until
from tests.conftest import make_picture


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"])
    assert body["error"]["message"]
    return body["error"]


def post(server, body, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60, **kwargs)


def user(content) -> list[dict]:
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def server(settings, engine):
    small = replace(settings, max_upload_mb=0.05)
    live = serve(AppState(small, backend=engine))
    yield live
    live.__exit__()


# ---------------------------------------------------------------------------------- 400
@pytest.mark.parametrize(
    "body, expected, param",
    [
        ({"messages": user("hi"), "n": 9}, "n must be between 1 and 8", "n"),
        (
            {"messages": [{"role": "system", "content": "be brief"}]},
            "the last message must come from the user",
            "messages.0.role",
        ),
        ({"messages": user("hi"), "temperature": 5}, "temperature must be between 0 and 2", "temperature"),
        ({"messages": user("hi"), "top_p": 0}, "top_p must be in (0, 1]", "top_p"),
        ({"messages": user("hi"), "top_k": -5}, "top_k must be 0 or -1 (off) or positive", "top_k"),
        (
            {"messages": user("hi"), "repetition_penalty": 0},
            "repetition_penalty must be in (0, 10]",
            "repetition_penalty",
        ),
        ({"messages": user("hi"), "max_tokens": 0}, "max_tokens must be at least 1", "max_tokens"),
        (
            {"messages": user("hi"), "max_tokens": 5, "min_tokens": 9},
            "min_tokens must be between 0 and max_tokens (5)",
            "min_tokens",
        ),
        ({"messages": user("hi"), "seed": 2**70}, "seed must be a 64-bit integer", "seed"),
        ({"messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}, "stop takes at most 4 strings, got 5", "stop"),
        ({"messages": user(["hi"])}, "a content part must be an object such as", "messages.0.content.0"),
        ({"messages": user("hi"), "presence_penalty": 0.5}, "use repetition_penalty", "presence_penalty"),
        (
            {"messages": user("hi"), "logprobs": True, "top_logprobs": 21},
            "top_logprobs must be between 0 and 20",
            "top_logprobs",
        ),
        (
            {"messages": user("hi"), "tools": [{"type": "function", "function": {"description": "no name"}}]},
            "a tool needs a name",
            "tools.0.function.name",
        ),
        (
            {
                "messages": user("hi"),
                "tools": [{"type": "function", "function": {"name": "f", "parameters": "a string"}}],
            },
            "parameters must be a JSON Schema object",
            "tools.0.function.parameters",
        ),
        (
            {
                "messages": user("hi"),
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
            },
            "JSON Schema of type 'object'",
            "tools.0.function.parameters",
        ),
        (
            {
                "messages": user("hi"),
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "names 'g', which is not one of",
            "tool_choice",
        ),
        ({"messages": user("hi"), "tool_choice": "required"}, "'required' needs tools", "tool_choice"),
        (
            {
                "messages": user("hi"),
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": "sometimes",
            },
            "tool_choice must be one of",
            "tool_choice",
        ),
        (
            {
                "messages": user("hi"),
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            "cannot be combined with response_format",
            "tool_choice",
        ),
        ({"messages": user("hi"), "functions": [{"name": "f"}]}, "send tools", "functions"),
        ({"messages": []}, "messages", "messages"),
        ({}, "messages: Field required", "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "messages.0.role"),
        (
            {"messages": user(5)},
            "messages.0.content: a message's content must be a string or a list of content parts",
            "messages.0.content",
        ),
        ({"messages": user("hi"), "temperature": "hot"}, "temperature", "temperature"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "the last message must come from the user (or be a tool's result); this one's role is 'assistant'",
            "messages.1.role",
        ),
        (
            {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
            "'1' matches no tool call",
            "messages.0.tool_call_id",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "needs the id of the call it answers",
            "messages.0.tool_call_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
                        ],
                    },
                    {"role": "tool", "content": "x", "tool_call_id": "c1"},
                ]
            },
            "must be a JSON object in a string",
            "messages.0.tool_calls.0.function.arguments",
        ),
        (
            {"messages": user([{"type": "input_audio", "input_audio": {}}])},
            "'input_audio' are not supported",
            "messages.0.content.0",
        ),
        ({"messages": user([{"type": "image_url"}])}, "needs its 'image_url' field", "messages.0.content.0"),
        (
            {
                "messages": user(
                    [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "ultra"}}]
                )
            },
            "Input should be 'auto', 'low' or 'high'",
            "messages.0.content.0.image_url.detail",
        ),
        (
            {"messages": user([{"type": "image_url", "image_url": {"detail": "low"}}])},
            "Field required",
            "messages.0.content.0.image_url.url",
        ),
        (
            {"messages": user([{"type": "text", "text": 7}])},
            "Input should be a valid string",
            "messages.0.content.0.text",
        ),
        (
            {
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
                    },
                    {"role": "user", "content": "x"},
                ]
            },
            "only user and tool messages can carry images",
            "messages.0.content.0",
        ),
        (
            {"messages": user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!not base64!!!"}}])},
            "not valid base64",
            "messages.0.content.0",
        ),
        (
            {"messages": user([{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}])},
            "must be base64-encoded",
            "messages.0.content.0",
        ),
        (
            {
                "messages": user(
                    [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not an image").decode()},
                        }
                    ]
                )
            },
            "not a readable image",
            "messages.0.content.0",
        ),
        (
            {"messages": user([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}])},
            "must be data: URLs",
            "messages.0.content.0",
        ),
        (
            {"messages": user([{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}])},
            "remote image URLs are disabled",
            "messages.0.content.0",
        ),
    ],
)
def test_bad_requests_are_400_with_openai_error_json(server, body, expected, param):
    response = post(server, body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert expected in error["message"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_no_error_names_an_internal_field(server):
    for body in ({"messages": user("hi"), "max_tokens": 5, "min_tokens": 9}, {"messages": user("hi"), "max_tokens": 0}):
        assert "new_tokens" not in error_of(post(server, body))["message"]


def test_compressed_body_is_refused_with_a_clear_code(server):
    import gzip

    body = gzip.compress(json.dumps({"messages": user("hi")}).encode())
    response = httpx.post(
        server.url + "/v1/chat/completions",
        content=body,
        timeout=30,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 415
    error = error_of(response)
    assert error["code"] == "unsupported_content_encoding" and "uncompressed" in error["message"]


def test_malformed_json_and_wrong_content_type_are_400(server):
    response = httpx.post(
        server.url + "/v1/chat/completions",
        content=b"{not json",
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in error_of(response)["message"]
    for content, kind in (
        (b"hello", "text/plain"),
        (b'{"messages": []}', "text/plain"),
        (b"[1, 2]", "application/json"),
    ):
        response = httpx.post(
            server.url + "/v1/chat/completions", content=content, timeout=30, headers={"content-type": kind}
        )
        assert response.status_code == 400
        message = error_of(response)["message"]
        assert "must be a JSON object" in message and "Content-Type: application/json" in message, message


def test_truncated_image_is_400_and_server_keeps_serving(server):
    buffer = io.BytesIO()
    make_picture(21).save(buffer, format="PNG")
    truncated = base64.b64encode(buffer.getvalue()[:200]).decode()
    response = post(
        server, {"messages": user([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + truncated}}])}
    )
    assert response.status_code == 400
    assert "damaged or truncated" in error_of(response)["message"]
    assert post(server, {"messages": user("still there?"), "max_tokens": 1}).status_code == 200


def test_context_overflow_is_400_stream_or_not(server):
    long_text = "word " * 5000  # the tiny model's context is 4,096 tokens
    for stream in (False, True):
        response = post(server, {"messages": user(long_text), "stream": stream})
        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
        assert "context limit" in error["message"]


def test_openai_client_raises_bad_request(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="x", messages=user("hi"), n=12)
    assert caught.value.status_code == 400 and "n must be between 1 and 8" in caught.value.message


def test_unknown_endpoint_is_404_json(server):
    response = httpx.post(server.url + "/v1/completions", json={"prompt": "x"}, timeout=30)
    assert response.status_code == 404
    assert "POST /v1/chat/completions" in error_of(response)["message"]


# ---------------------------------------------------------------------------------- 413
def noisy_picture(size=(220, 220)) -> Image.Image:
    return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def test_image_over_upload_limit_is_413(server):
    response = post(server, {"messages": user([image_part(noisy_picture()), {"type": "text", "text": "x"}])})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "image_too_large" and "0.1 MB are accepted" in error["message"]


def test_body_over_limit_is_413_before_reading(server):
    body = json.dumps({"messages": user("x" * 9_000_000)}).encode()
    response = httpx.post(
        server.url + "/v1/chat/completions", content=body, timeout=60, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_chunked_body_over_limit_is_413(server):
    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(90):
            yield b"y" * 100_000
        yield b'"}]}'

    response = httpx.post(
        server.url + "/v1/chat/completions", content=chunks(), timeout=60, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


# ---------------------------------------------------------------------------------- 401
@pytest.fixture(scope="module")
def keyed_server(settings, engine):
    live = serve(AppState(replace(settings, api_key="s3cret-key"), backend=engine))
    yield live
    live.__exit__()


def test_api_key_is_required(keyed_server):
    body = {"messages": user("hi"), "max_tokens": 1}
    missing = post(keyed_server, body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert error_of(missing)["type"] == "authentication_error"
    wrong = post(keyed_server, body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and error_of(wrong)["code"] == "invalid_api_key"
    assert httpx.get(keyed_server.url + "/v1/models", timeout=30).status_code == 401
    # Refused before the body is even parsed: a bad body without a key is still a 401.
    assert post(keyed_server, {"nonsense": True}).status_code == 401
    assert httpx.get(keyed_server.url + "/health", timeout=30).status_code == 200

    with openai.OpenAI(base_url=keyed_server.url + "/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="x", messages=user("hi"), max_tokens=1)
    with openai.OpenAI(base_url=keyed_server.url + "/v1", api_key="s3cret-key", max_retries=0) as good:
        reply = good.chat.completions.create(model="x", messages=user("hi"), max_tokens=1)
        assert reply.usage.completion_tokens == 1
        assert [m.id for m in good.models.list().data]


# ---------------------------------------------------------------------------------- 503
def test_not_ready_is_503(settings):
    state = AppState(settings)
    live = serve(state)
    try:
        response = post(live, {"messages": user("hi")})
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert "still loading" in error_of(response)["message"]
        assert httpx.get(live.url + "/v1/models", timeout=30).status_code == 503
        assert httpx.get(live.url + "/health", timeout=30).status_code == 503
        state.load_error = "no GPU"
        assert "failed to load: no GPU" in error_of(post(live, {"messages": user("hi")}))["message"]
    finally:
        live.__exit__()


class FailingBackend(ScriptedBackend):
    def _run(self, request, cancel, emit):
        raise GpuOutOfMemoryError("the GPU ran out of memory for this request")


def test_gpu_out_of_memory_is_503_stream_or_not(settings):
    backend = FailingBackend("")
    live = serve(AppState(settings, backend=backend))
    try:
        for stream in (False, True):
            response = post(live, {"messages": user("hi"), "stream": stream})
            assert response.status_code == 503
            assert error_of(response)["code"] == "out_of_memory"
            assert response.headers["retry-after"]
    finally:
        live.__exit__()
        backend.shutdown()


# ---------------------------------------------------------------------------------- 429, disconnect
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


@pytest.fixture
def small_engine(settings):
    eng = Engine.load(replace(settings, queue_size=1, max_batch=1))  # one decode slot, one waiting place
    eng.ready = True
    yield eng
    eng.shutdown()


def test_queue_full_is_429_with_retry_after(settings, small_engine):
    gate = Gate(small_engine)
    live = serve(AppState(settings, backend=small_engine))
    results = {}
    try:

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
    finally:
        gate.release.set()
        live.__exit__()


def test_disconnect_mid_stream_cancels_generation(settings, small_engine):
    gate = Gate(small_engine, after_deltas=2)
    recorded = RecordingBackend(small_engine)
    live = serve(AppState(settings, backend=recorded))
    try:
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
    finally:
        gate.release.set()
        live.__exit__()


def test_disconnect_while_queued_never_runs(settings, small_engine):
    gate = Gate(small_engine)
    recorded = RecordingBackend(small_engine)
    live = serve(AppState(settings, backend=recorded))
    try:
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
    finally:
        gate.release.set()
        live.__exit__()


def test_non_stream_disconnect_cancels_generation(settings, small_engine):
    gate = Gate(small_engine, after_deltas=2)
    recorded = RecordingBackend(small_engine)
    live = serve(AppState(settings, backend=recorded))
    try:

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
    finally:
        gate.release.set()
        live.__exit__()


# ---------------------------------------------------------------------------------- remote images
class _ImageHandler(http.server.BaseHTTPRequestHandler):
    png = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/cat.png":
            payload = self.png
        elif self.path == "/big.png":
            payload = b"\x89PNG" + b"0" * 300_000
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_host():
    buffer = io.BytesIO()
    make_picture(31).save(buffer, format="PNG")
    _ImageHandler.png = buffer.getvalue()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_remote_images_with_allowlist_size_cap_and_errors(settings, engine, image_host):
    remote = replace(settings, allow_remote_images=True, remote_image_hosts="127.0.0.1", remote_image_max_mb=0.1)
    live = serve(AppState(remote, backend=engine))
    try:

        def ask(url):
            return post(
                live,
                {
                    "messages": user(
                        [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what?"}]
                    ),
                    "max_tokens": 1,
                },
            )

        ok = ask(image_host + "/cat.png")
        assert ok.status_code == 200, ok.text
        inline = post(
            live, {"messages": user([image_part(make_picture(31)), {"type": "text", "text": "what?"}]), "max_tokens": 1}
        )
        assert ok.json()["usage"]["prompt_tokens"] == inline.json()["usage"]["prompt_tokens"]

        missing = ask(image_host + "/nope.png")
        assert missing.status_code == 400 and "HTTP 404" in error_of(missing)["message"]
        big = ask(image_host + "/big.png")
        assert big.status_code == 400 and error_of(big)["code"] == "image_too_large"
        other = ask("http://localhost" + image_host[len("http://127.0.0.1") :] + "/cat.png")
        assert other.status_code == 400 and "not allowed" in error_of(other)["message"]
    finally:
        live.__exit__()


def test_data_url_variants_decode(server):
    picture = make_picture(41)
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        response = post(
            server,
            {
                "messages": user(
                    [{"type": "image_url", "image_url": {"url": data_url(picture, fmt)}}, {"type": "text", "text": fmt}]
                ),
                "max_tokens": 1,
            },
        )
        assert response.status_code == 200, (fmt, response.text)


def test_unroutable_v1_paths_get_openai_404(settings):
    """Paths no /v1 route can match (a line break in a model id) still answer OpenAI's error JSON."""
    from fastapi.testclient import TestClient

    from glm_vision.server import create_app

    with TestClient(create_app(AppState(settings))) as client:
        response = client.get("/v1/models/a%0Ab")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
        assert client.get("/not-the-api").json() == {"detail": "Not Found"}  # the UI's own 404 is untouched
