"""The `grounding` extension of the assistant message: a scripted answer with two labelled boxes on a
1920x1080 screenshot (and a point on a 1080x2400 phone screenshot) comes back with the pixel
coordinates of the images as sent, whatever max_pixels; once in a stream's final chunk; absent when
there is nothing; the same through the remote backend; invisible to the openai client."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import openai
import pytest
from PIL import Image

from glm_vision.server import AppState
from tests.api.test_remote import front
from tests.api_helpers import ScriptedBackend, image_part, serve

B, E = "<|begin_of_box|>", "<|end_of_box|>"
TWO_BOXES = (
    f"<think>The dialog has two buttons.</think>\nSubmit: {B}[[100,200,300,400]]{E}\nCancel: {B}[[333,667,999,1000]]{E}"
)
# x * 1920 / 1000, y * 1080 / 1000, rounded half up (639.36, 720.36, 1918.08)
EXPECTED = [
    ("Submit", [100, 200, 300, 400], [192, 216, 576, 432]),
    ("Cancel", [333, 667, 999, 1000], [639, 720, 1918, 1080]),
]
SCREEN, PHONE = Image.new("RGB", (1920, 1080), "white"), Image.new("RGB", (1080, 2400), "gray")


def ask(*images: Image.Image, text: str = "Where are the buttons?") -> list[dict]:
    return [{"role": "user", "content": [*(image_part(i) for i in images), {"type": "text", "text": text}]}]


@pytest.fixture(scope="module", params=[None, 1_003_520, 200_704], ids=["max_pixels=default", "1M", "200k"])
def scripted_server(request, settings):
    backend = ScriptedBackend(TWO_BOXES)
    live = serve(AppState(replace(settings, max_pixels=request.param or settings.max_pixels), backend=backend))
    yield live
    live.__exit__()
    backend.shutdown()


def post(live, body: dict) -> httpx.Response:
    return httpx.post(live.url + "/v1/chat/completions", json={"model": "m", **body}, timeout=60)


def check(grounding: list[dict], content: str, image_index: int = 0) -> None:
    assert [(g["label"], g["coords"], g["pixels"]) for g in grounding] == EXPECTED
    for g in grounding:
        assert g["type"] == "box" and g["image_index"] == image_index and g["image_size"] == [1920, 1080]
        assert content[g["span"][0] : g["span"][1]] == g["text"]


def test_pixel_coordinates_of_the_original_screenshot(scripted_server):
    message = post(scripted_server, {"messages": ask(SCREEN)}).json()["choices"][0]["message"]
    assert message["content"] == "Submit: [[100,200,300,400]]\nCancel: [[333,667,999,1000]]"
    check(message["grounding"], message["content"])


def test_the_last_image_of_the_turn_unless_named(scripted_server):
    # the phone screenshot of the last turn is the default: same 0-1000 boxes, its own pixels
    messages = ask(SCREEN, text="first") + [{"role": "assistant", "content": "ok"}] + ask(SCREEN, PHONE)
    grounding = post(scripted_server, {"messages": messages}).json()["choices"][0]["message"]["grounding"]
    assert [(g["image_index"], g["image_size"], g["pixels"]) for g in grounding] == [
        (2, [1080, 2400], [108, 480, 324, 960]),
        (2, [1080, 2400], [360, 1601, 1079, 2400]),
    ]


def test_streaming_sends_the_grounding_once_in_the_final_chunk(scripted_server):
    with httpx.stream(
        "POST",
        scripted_server.url + "/v1/chat/completions",
        timeout=60,
        json={"model": "m", "messages": ask(SCREEN), "stream": True},
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    chunks = [c["choices"][0] for c in events if c["choices"]]
    with_grounding = [c for c in chunks if "grounding" in c["delta"]]
    assert len(with_grounding) == 1 and with_grounding[0] is chunks[-1] and chunks[-1]["finish_reason"] == "stop"
    content = "".join(c["delta"].get("content") or "" for c in chunks)
    check(with_grounding[0]["delta"]["grounding"], content)


def test_no_field_without_boxes_or_images(settings):
    backend = ScriptedBackend("A plain answer about [1, 2, 3] things.")
    live = serve(AppState(settings, backend=backend))
    try:
        message = post(live, {"messages": ask(SCREEN)}).json()["choices"][0]["message"]
        assert "grounding" not in message
        backend.answer = TWO_BOXES
        text_only = post(live, {"messages": [{"role": "user", "content": "no picture"}]}).json()
        assert "grounding" not in text_only["choices"][0]["message"]  # nothing to point at
        with httpx.stream(
            "POST",
            live.url + "/v1/chat/completions",
            timeout=60,
            json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
        ) as r:
            assert "grounding" not in "".join(r.iter_lines())
    finally:
        live.__exit__()
        backend.shutdown()


def test_openai_client_is_unaffected_and_can_read_it(scripted_server):
    with openai.OpenAI(base_url=scripted_server.url + "/v1", api_key="k", max_retries=0, timeout=60) as client:
        completion = client.chat.completions.create(model="m", messages=ask(SCREEN))
        message = completion.choices[0].message
        assert message.content.startswith("Submit:") and message.annotations is None  # OpenAI's own field untouched
        check(message.model_extra["grounding"], message.content)
        stream = client.chat.completions.create(model="m", messages=ask(SCREEN), stream=True)
        finals = [chunk.choices[0].delta.model_extra.get("grounding") for chunk in stream if chunk.choices]
        assert [g is not None for g in finals].count(True) == 1 and finals[-1] is not None


def test_openapi_documents_the_field(scripted_server):
    schema = httpx.get(scripted_server.url + "/openapi.json", timeout=30).json()
    assert "grounding" in schema["components"]["schemas"]["AssistantMessage"]["properties"]
    assert {"pixels", "coords", "image_index", "label"} <= set(
        schema["components"]["schemas"]["GroundingItem"]["properties"]
    )


def test_remote_backend_gives_the_same_grounding(settings):
    """An upstream (here glm-vision itself: box markers removed from its content, as a vLLM that skips
    special tokens does) returns the text; the front parses it against its own copy of the images."""
    backend = ScriptedBackend(TWO_BOXES)
    upstream = serve(AppState(settings, backend=backend))
    proxy, remote = front(upstream.url)
    try:
        direct = post(upstream, {"messages": ask(SCREEN)}).json()["choices"][0]["message"]
        fronted = post(proxy, {"messages": ask(SCREEN)}).json()["choices"][0]["message"]
        assert fronted["content"] == direct["content"] and fronted["grounding"] == direct["grounding"]
        check(fronted["grounding"], fronted["content"])
    finally:
        proxy.__exit__()
        remote.shutdown()
        upstream.__exit__()
        backend.shutdown()
