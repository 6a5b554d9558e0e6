"""The API's answers to requests it cannot take: OpenAI's error JSON with status 400 (the field checks, bad
JSON, damaged images, a prompt over the context limit), 415 for a compressed body, and 404 for unknown paths."""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest

from glm_vision.server import AppState
from tests.api_helpers import error_of, post, user
from tests.conftest import make_picture


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
def test_bad_requests_are_400_with_openai_error_json(capped_server, body, expected, param):
    response = post(capped_server, body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert expected in error["message"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_no_error_names_an_internal_field(capped_server):
    for body in ({"messages": user("hi"), "max_tokens": 5, "min_tokens": 9}, {"messages": user("hi"), "max_tokens": 0}):
        assert "new_tokens" not in error_of(post(capped_server, body))["message"]


def test_compressed_body_is_refused_with_a_clear_code(capped_server):
    import gzip

    body = gzip.compress(json.dumps({"messages": user("hi")}).encode())
    response = httpx.post(
        capped_server.url + "/v1/chat/completions",
        content=body,
        timeout=30,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 415
    error = error_of(response)
    assert error["code"] == "unsupported_content_encoding" and "uncompressed" in error["message"]


def test_malformed_json_and_wrong_content_type_are_400(capped_server):
    response = httpx.post(
        capped_server.url + "/v1/chat/completions",
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
            capped_server.url + "/v1/chat/completions", content=content, timeout=30, headers={"content-type": kind}
        )
        assert response.status_code == 400
        message = error_of(response)["message"]
        assert "must be a JSON object" in message and "Content-Type: application/json" in message, message


def test_truncated_image_is_400_and_server_keeps_serving(capped_server):
    buffer = io.BytesIO()
    make_picture(21).save(buffer, format="PNG")
    truncated = base64.b64encode(buffer.getvalue()[:200]).decode()
    response = post(
        capped_server,
        {"messages": user([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + truncated}}])},
    )
    assert response.status_code == 400
    assert "damaged or truncated" in error_of(response)["message"]
    assert post(capped_server, {"messages": user("still there?"), "max_tokens": 1}).status_code == 200


def test_context_overflow_is_400_stream_or_not(capped_server):
    long_text = "word " * 5000  # the tiny model's context is 4,096 tokens
    for stream in (False, True):
        response = post(capped_server, {"messages": user(long_text), "stream": stream})
        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
        assert "context limit" in error["message"]


def test_openai_client_raises_bad_request(capped_server):
    with openai.OpenAI(base_url=capped_server.url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="x", messages=user("hi"), n=12)
    assert caught.value.status_code == 400 and "n must be between 1 and 8" in caught.value.message


# ---------------------------------------------------------------------------------- 404
def test_unknown_endpoint_is_404_json(capped_server):
    response = httpx.post(capped_server.url + "/v1/completions", json={"prompt": "x"}, timeout=30)
    assert response.status_code == 404
    assert "POST /v1/chat/completions" in error_of(response)["message"]


def test_unroutable_v1_paths_get_openai_404(settings):
    """Paths no /v1 route can match (a line break in a model id) still answer OpenAI's error JSON."""
    from fastapi.testclient import TestClient

    from glm_vision.server import create_app

    with TestClient(create_app(AppState(settings))) as client:
        response = client.get("/v1/models/a%0Ab")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
        assert client.get("/not-the-api").json() == {"detail": "Not Found"}  # the UI's own 404 is untouched
