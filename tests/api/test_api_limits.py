"""The API's refusals that are about limits and access rather than the request's content: 413 for an upload or
a body over the size limit, 401 without the API key, and 503 while the model is not ready or the GPU runs out
of memory."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import httpx
import openai
import pytest
from PIL import Image

from glm_vision.backend import GpuOutOfMemoryError
from glm_vision.server import AppState
from tests.api_helpers import ScriptedBackend, error_of, image_part, post, serve, user


# ---------------------------------------------------------------------------------- 413
def noisy_picture(size=(220, 220)) -> Image.Image:
    return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def test_image_over_upload_limit_is_413(capped_server):
    response = post(capped_server, {"messages": user([image_part(noisy_picture()), {"type": "text", "text": "x"}])})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "image_too_large" and "0.1 MB are accepted" in error["message"]


def test_body_over_limit_is_413_before_reading(capped_server):
    body = json.dumps({"messages": user("x" * 9_000_000)}).encode()
    response = httpx.post(
        capped_server.url + "/v1/chat/completions",
        content=body,
        timeout=60,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_chunked_body_over_limit_is_413(capped_server):
    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(90):
            yield b"y" * 100_000
        yield b'"}]}'

    response = httpx.post(
        capped_server.url + "/v1/chat/completions",
        content=chunks(),
        timeout=60,
        headers={"content-type": "application/json"},
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
