"""Issue 8, bad input through the API: every file of the corpus and every malformed request gets a
4xx in OpenAI's error format (or, for odd-but-valid files, an answer), the server stays up, and a
conversation in progress keeps its cached prefix (other sessions are unaffected)."""

from __future__ import annotations

import base64
import json
import mimetypes
from dataclasses import replace

import httpx
import pytest

from glm_vision.images import DEFAULT_MAX_DECODED_PIXELS, load_media
from glm_vision.server import AppState
from tests.api_helpers import RecordingBackend, image_part, serve
from tests.conftest import make_picture
from tests.hardening_corpus import corpus

LIMITS = dict(max_upload_bytes=2_000_000, max_pixels=DEFAULT_MAX_DECODED_PIXELS, pdf_max_pages=3)
CASES = corpus(**LIMITS)


@pytest.fixture(scope="module")
def recorded(engine):
    return RecordingBackend(engine)


@pytest.fixture(scope="module")
def server(settings, recorded):
    live = serve(
        AppState(
            replace(settings, max_upload_mb=2.0, pdf_max_pages=3, pdf_dpi=36, max_images_per_message=3),
            backend=recorded,
        )
    )
    yield live
    live.__exit__()


def post(server, body, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120, **kwargs)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


def file_url(name: str, data: bytes) -> str:
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def conversation(server):
    """A conversation started before the bad inputs: its next turn must still reuse its KV prefix."""
    messages = [{"role": "user", "content": [image_part(make_picture(41)), {"type": "text", "text": "What is this?"}]}]
    first = post(server, {"messages": messages, "max_tokens": 3, "temperature": 0})
    assert first.status_code == 200, first.text
    messages.append({"role": "assistant", "content": first.json()["choices"][0]["message"]["content"] or "ok"})
    return messages


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_file_case_through_the_api(server, recorded, conversation, case):
    before = len(recorded.handles)
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": file_url(case.filename, case.data)}},
                    {"type": "text", "text": "Describe it."},
                ],
            }
        ],
        "max_tokens": 2,
    }
    response = post(server, body)
    if case.ok:
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] > 0
        return
    assert response.status_code == case.status, response.text
    error = error_of(response)
    assert case.phrase in error["message"], error
    assert error["param"] == "messages.0.content.0"
    assert error["type"] == "invalid_request_error"
    assert len(recorded.handles) == before  # refused before anything reached the engine


def test_file_cases_decode_as_documented():
    """What the accepted files turn into: first frames and pages said so, EXIF applied, all RGB."""
    by_name = {c.name: c for c in CASES}
    for case in CASES:
        if case.ok:
            pages = load_media(case.data, max_pages=3)
            assert all(p.image.mode == "RGB" for p in pages), case.name
            if case.phrase:
                assert any(case.phrase in n for n in pages[0].notes), (case.name, pages[0].notes)
    assert load_media(by_name["EXIF-rotated JPEG"].data)[0].size == (30, 90)
    assert load_media(by_name["1x1"].data)[0].size == (1, 1)


def test_conversation_survives_the_corpus(server, conversation):
    """After every bad file above, the conversation started before still continues from its cache."""
    messages = conversation + [{"role": "user", "content": "And now?"}]
    response = post(server, {"messages": messages, "max_tokens": 2})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200


def user(content) -> list[dict]:
    return [{"role": "user", "content": content}]


def tiny_png_part() -> dict:
    return image_part(make_picture(42, (40, 40)))


REQUEST_CASES = [
    # wrong types
    ({"messages": "hi"}, "messages: Input should be a valid list", "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", None),
    ({"messages": user("hi"), "max_tokens": "ten"}, "max_tokens", "max_tokens"),
    ({"messages": user("hi"), "max_tokens": 1.5}, "valid integer", "max_tokens"),
    ({"messages": user("hi"), "stream": {"on": True}}, "stream", "stream"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, "messages.0.content", None),
    ({"messages": [["user", "hi"]]}, "messages.0", None),
    # unknown roles, empty messages
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "messages.0.role"),
    ({"messages": [{"content": "x"}]}, "messages.0.role: Field required", "messages.0.role"),
    ({"messages": []}, "messages", "messages"),
    ({"messages": [{"role": "user"}]}, "the user message is empty", "messages.0.content"),
    ({"messages": user("   ")}, "the user message is empty", "messages.0.content"),
    ({"messages": user([])}, "the user message is empty", "messages.0.content"),
    # bad data URLs and base64
    (
        {"messages": user([{"type": "image_url", "image_url": {"url": "data:,"}}])},
        "must be base64-encoded",
        "messages.0.content.0",
    ),
    (
        {"messages": user([{"type": "image_url", "image_url": {"url": "data:image/png;base64"}}])},
        "malformed data: URL",
        "messages.0.content.0",
    ),
    (
        {"messages": user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,===="}}])},
        "empty (0 bytes)",
        "messages.0.content.0",
    ),
    (
        {"messages": user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}])},
        "empty (0 bytes)",
        "messages.0.content.0",
    ),
    (
        {"messages": user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA*A\u00e9"}}])},
        "not valid base64",
        "messages.0.content.0",
    ),
    (
        {"messages": user([{"type": "image_url", "image_url": {"url": "ftp://host/x.png"}}])},
        "must be data: URLs",
        "messages.0.content.0",
    ),
    ({"messages": user([{"type": "image_url", "image_url": {"url": 12}}])}, "url", None),
    # too many images (the limit is 3 here): refused before any is decoded
    ({"messages": user([tiny_png_part()] * 4)}, "at most 3 images", "messages.0.content"),
    # parameters out of range
    ({"messages": user("hi"), "temperature": -0.1}, "temperature must be between 0 and 2", "temperature"),
    ({"messages": user("hi"), "temperature": 2.5}, "temperature must be between 0 and 2", "temperature"),
    ({"messages": user("hi"), "top_p": 0}, "top_p must be in (0, 1]", "top_p"),
    ({"messages": user("hi"), "top_p": 1.01}, "top_p must be in (0, 1]", "top_p"),
    ({"messages": user("hi"), "top_k": -3}, "top_k", "top_k"),
    ({"messages": user("hi"), "repetition_penalty": 0}, "repetition_penalty", "repetition_penalty"),
    ({"messages": user("hi"), "max_tokens": 0}, "max_tokens must be at least 1", "max_tokens"),
    ({"messages": user("hi"), "max_tokens": -5}, "max_tokens must be at least 1", "max_tokens"),
    ({"messages": user("hi"), "max_completion_tokens": 0}, "max_tokens must be at least 1", "max_tokens"),
    ({"messages": user("hi"), "max_tokens": 4097}, "past the context limit of 4096 tokens", "max_tokens"),
    ({"messages": user("hi"), "max_tokens": 10**30}, "past the context limit", "max_tokens"),
    (
        {"messages": user("hi"), "min_tokens": 50, "max_tokens": 2},
        "min_tokens must be between 0 and max_tokens",
        "min_tokens",
    ),
    ({"messages": user("hi"), "stop": [""]}, "a stop string must not be empty", "stop"),
    ({"messages": user("hi"), "stop": ["a", ""]}, "a stop string must not be empty", "stop"),
]


@pytest.mark.parametrize("body, phrase, param", REQUEST_CASES, ids=[f"request{i}" for i in range(len(REQUEST_CASES))])
def test_every_bad_request_is_400(server, recorded, body, phrase, param):
    before = len(recorded.handles)
    response = post(server, body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert phrase in error["message"], error
    if param is not None:
        assert error["param"] == param
    assert len(recorded.handles) == before  # nothing reached the engine


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"[]", b"null", b'"x"', b"\xff\xfe\x00", b'{"messages": [' * 2000],
    ids=["broken", "empty", "array", "null", "string", "not-utf8", "deep"],
)
def test_invalid_json_is_400(server, raw):
    response = httpx.post(
        server.url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == 400, response.text
    error_of(response)


def test_prompt_longer_than_context_is_refused_before_gpu_work(server, recorded, engine):
    prefill = engine.runner.prefill_chunk
    calls = []
    engine.runner.prefill_chunk = lambda seq: (calls.append(seq), prefill(seq))[1]
    try:
        for stream in (False, True):
            response = post(server, {"messages": user("word " * 5000), "stream": stream})
            assert response.status_code == 400
            error = error_of(response)
            assert error["code"] == "context_length_exceeded"
            assert "4096" in error["message"].replace(",", "")  # says the limit
    finally:
        engine.runner.prefill_chunk = prefill
    assert calls == []  # no prefill (and so no encoder or decoder work) ran


UNICODE = {
    "emoji": "What is 😀👩‍👩‍👧‍👦🏳️‍🌈 here?",
    "cjk": "这张图片里有什么？日本語のテキスト、한국어",
    "rtl": "מה יש בתמונה? ما هذا؟ \u202eevil\u202c",
    "zero width": "a\u200bb\u200cc\u200dd\ufeffe\u2060",
    "combining": "e\u0301" * 50 + "Z\u0336\u0337\u0338" * 20,
    "nul and controls": "a\x00b\x01c\x1b[31m",
}


@pytest.mark.parametrize("name", list(UNICODE))
def test_unicode_edge_cases_are_answered(server, name):
    for stream in (False, True):
        response = post(
            server,
            {
                "messages": [{"role": "system", "content": UNICODE[name]}, *user(UNICODE[name])],
                "max_tokens": 2,
                "stream": stream,
                "stop": [UNICODE[name][:3]],
            },
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "escaped", ["a\\ud800b", "\\udc00", "\\udfff\\ud800", "x\\ud83d"], ids=["high", "low", "reversed", "cut pair"]
)
def test_lone_surrogates_escaped_in_json_are_served(server, escaped):
    """Legal JSON, not legal Unicode: replaced by U+FFFD instead of failing (they used to be a 500)."""
    for stream in (False, True):
        raw = (
            '{"messages": [{"role": "system", "content": "%s"}, {"role": "user", "content": [{"type": "text", "text": "%s"}]}],'  # noqa: UP031 - raw JSON text: the escapes must reach the server as written
            ' "max_tokens": 2, "stream": %s, "stop": ["%s"]}' % (escaped, escaped, json.dumps(stream), escaped)
        )
        response = httpx.post(
            server.url + "/v1/chat/completions",
            content=raw.encode(),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert response.status_code == 200, response.text


def test_valid_surrogate_pair_is_joined_not_replaced(server, recorded):
    raw = b'{"messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}], "max_tokens": 1}'
    response = httpx.post(
        server.url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == 200
    assert recorded.handles[-1].request.messages[-1].text == "smile 😀"


def test_server_still_serves_after_all_of_it(server):
    assert post(server, {"messages": user("still there?"), "max_tokens": 1}).status_code == 200
    assert httpx.get(server.url + "/health", timeout=30).json()["status"] == "ok"
