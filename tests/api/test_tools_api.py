"""Function calling through the OpenAI `tools` API: enforced calls on random weights, a tool loop
whose results carry a screenshot (encoded once), streamed tool-call deltas, and the remote backend."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import openai
import pytest
from PIL import Image

from glm_vision.server import AppState
from tests.api_helpers import RecordingBackend, image_part, serve
from tests.conftest import make_picture
from tests.doubles import ScriptedBackend

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detail": {
                    "type": "object",
                    "properties": {"hourly": {"type": "boolean"}},
                    "required": ["hourly"],
                    "additionalProperties": False,
                },
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
SCREENSHOT = {
    "type": "function",
    "function": {
        "name": "take_screenshot",
        "description": "Capture the screen",
        "parameters": {"type": "object", "properties": {}},
    },
}
FLIGHT = {  # raw string arguments with a pattern, a const and an enum: each enforced, not just shown
    "type": "function",
    "function": {
        "name": "book_flight",
        "parameters": {
            "type": "object",
            "properties": {
                "origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "seat": {"type": "string", "pattern": "[0-9]{1,2}[A-F]"},
                "cabin": {"type": "string", "const": "economy"},
                "meal": {"type": "string", "enum": ["veg", "fish"]},
            },
            "required": ["origin", "seat", "cabin", "meal"],
            "additionalProperties": False,
        },
    },
}
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
SCRIPTED_CALL = (
    "Let me look.<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
    "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"
)


@pytest.fixture(scope="module")
def server(settings, engine):
    recorded = RecordingBackend(engine)
    live = serve(AppState(replace(settings, max_batch=8), backend=recorded))
    yield live, recorded
    live.__exit__()


def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="tools-tenant", max_retries=0, timeout=120)


@pytest.mark.parametrize("thinking", [False, True])
def test_a_named_tool_choice_always_yields_a_valid_call_on_random_weights(server, thinking):
    live, _ = server
    extra = NO_THINKING if not thinking else {"thinking_budget": 3}
    with client(live) as c:
        for seed in range(8):
            reply = c.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "What will the weather be?"}],
                tools=[WEATHER, SCREENSHOT],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                temperature=1.0,
                seed=seed,
                max_tokens=400,
                extra_body=extra,
            )
            choice = reply.choices[0]
            assert choice.finish_reason == "tool_calls", choice.message
            (call,) = choice.message.tool_calls
            assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
            jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
            assert "<tool_call>" not in (choice.message.content or "")


def test_string_arguments_match_their_pattern_and_const_on_random_weights(server):
    live, _ = server
    schema = FLIGHT["function"]["parameters"]
    with client(live) as c:
        for seed in range(6):
            reply = c.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "Book me a flight."}],
                tools=[FLIGHT],
                tool_choice={"type": "function", "function": {"name": "book_flight"}},
                temperature=1.0,
                seed=seed,
                max_tokens=200,
                extra_body=NO_THINKING,
            )
            (call,) = reply.choices[0].message.tool_calls
            jsonschema.validate(json.loads(call.function.arguments), schema)


def test_required_calls_one_of_the_tools(server):
    live, _ = server
    with client(live) as c:
        names = set()
        for seed in range(8):
            reply = c.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "Do something."}],
                tools=[WEATHER, SCREENSHOT],
                tool_choice="required",
                seed=seed,
                temperature=1.0,
                max_tokens=400,
                extra_body=NO_THINKING,
            )
            (call,) = reply.choices[0].message.tool_calls
            names.add(call.function.name)
            schema = {"get_weather": WEATHER, "take_screenshot": SCREENSHOT}[call.function.name]["function"][
                "parameters"
            ]
            jsonschema.validate(json.loads(call.function.arguments), schema)
        assert names <= {"get_weather", "take_screenshot"}


def test_a_tool_loop_with_a_screenshot_result_encodes_the_screenshot_once(server):
    live, recorded = server
    screenshot = make_picture(91, (196, 140))
    messages = [{"role": "user", "content": "What does my screen show?"}]
    force = {"type": "function", "function": {"name": "take_screenshot"}}
    with client(live) as c:
        for round_number in range(2):
            reply = c.chat.completions.create(
                model="x",
                messages=messages,
                tools=[SCREENSHOT],
                tool_choice=force,
                max_tokens=30,
                temperature=0,
                extra_body=NO_THINKING,
            )
            (call,) = reply.choices[0].message.tool_calls
            messages += [
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": [image_part(screenshot), {"type": "text", "text": f"screenshot {round_number}"}],
                },
            ]
        final = c.chat.completions.create(
            model="x", messages=messages, tools=[SCREENSHOT], max_tokens=4, temperature=0, extra_body=NO_THINKING
        )
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls")
    last = recorded.handles[-1]
    tool_images = [m.images for m in last.request.messages if m.role == "tool"]
    assert [len(images) for images in tool_images] == [1, 1]
    # The second copy of the same screenshot is not encoded again, and the first round's prompt is reused.
    assert last.result.usage.images_encoded == 0 and final.usage.prompt_tokens_details.cached_tokens > 0
    assert recorded.handles[-2].result.usage.images_encoded == 1


@pytest.fixture(scope="module")
def scripted_server(settings):
    backend = ScriptedBackend(SCRIPTED_CALL, chunk=2)
    live = serve(AppState(settings, backend=backend))
    yield live, backend
    live.__exit__()
    backend.shutdown()


def test_calls_in_the_answer_become_tool_calls_streamed_and_not(scripted_server):
    live, backend = scripted_server
    with client(live) as c:
        whole = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Paris?"}], tools=[WEATHER])
        stream = c.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "Paris?"}], tools=[WEATHER], stream=True
        )
        chunks = list(stream)
    message = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls" and message.content == "Let me look."
    assert [(t.function.name, json.loads(t.function.arguments)) for t in message.tool_calls] == [
        ("get_weather", {"city": "Paris", "days": 3})
    ]
    assert backend.requests[-1].tools == [WEATHER] and backend.requests[-1].tool_choice == "auto"

    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert content == "Let me look." and "<" not in content
    assert deltas[0].id and deltas[0].function.name == "get_weather" and deltas[0].index == 0
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert arguments == message.tool_calls[0].function.arguments
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
        "tool_calls"
    ]


def test_tool_choice_none_keeps_the_tools_out_of_the_prompt(scripted_server):
    live, backend = scripted_server
    with client(live) as c:
        reply = c.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "Paris?"}], tools=[WEATHER], tool_choice="none"
        )
    assert backend.requests[-1].tools == []
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].finish_reason == "stop"


def test_parallel_tool_calls_false_returns_the_first_call_only(settings):
    backend = ScriptedBackend(SCRIPTED_CALL + "<tool_call>take_screenshot\n</tool_call>")
    live = serve(AppState(settings, backend=backend))
    try:
        with client(live) as c:
            both = c.chat.completions.create(
                model="x", messages=[{"role": "user", "content": "?"}], tools=[WEATHER, SCREENSHOT]
            )
            first = c.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "?"}],
                tools=[WEATHER, SCREENSHOT],
                parallel_tool_calls=False,
            )
        assert [t.function.name for t in both.choices[0].message.tool_calls] == ["get_weather", "take_screenshot"]
        assert [t.function.name for t in first.choices[0].message.tool_calls] == ["get_weather"]
    finally:
        live.__exit__()
        backend.shutdown()


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_the_remote_backend_leaves_an_enforced_tool_choice_to_the_upstream(scripted_server, choice):
    """Forwarded as `tool_choice` (the upstream, vLLM or another glm-vision, enforces it), never as a
    `structured_outputs` field no upstream knows (the upstream refused the request with a 400)."""
    from tests.api.test_remote import front

    upstream, backend = scripted_server
    proxy, remote = front(upstream.url)
    try:
        with client(proxy) as c:
            messages = [{"role": "user", "content": "Weather?"}]
            reply = c.chat.completions.create(
                model="x", messages=messages, tools=[WEATHER, SCREENSHOT], tool_choice=choice
            )
        (call,) = reply.choices[0].message.tool_calls
        assert call.function.name == "get_weather" and reply.choices[0].finish_reason == "tool_calls"
        forwarded = backend.requests[-1]
        assert forwarded.tool_choice == choice and forwarded.constraint.kind == "tool_call"
    finally:
        proxy.__exit__()
        remote.shutdown()


def test_the_remote_backend_forwards_tools_and_maps_streamed_calls_back(settings, scripted_server):
    from tests.api.test_remote import front

    upstream, backend = scripted_server
    proxy, remote = front(upstream.url)
    try:
        with client(proxy) as c:
            messages = [
                {
                    "role": "user",
                    "content": [image_part(Image.new("RGB", (40, 30), "blue")), {"type": "text", "text": "Weather?"}],
                }
            ]
            reply = c.chat.completions.create(model="x", messages=messages, tools=[WEATHER], tool_choice="auto")
            streamed = list(c.chat.completions.create(model="x", messages=messages, tools=[WEATHER], stream=True))
        (call,) = reply.choices[0].message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
            "city": "Paris",
            "days": 3,
        }
        assert reply.choices[0].finish_reason == "tool_calls" and reply.choices[0].message.content == "Let me look."
        assert backend.requests[-1].tools == [WEATHER]  # forwarded upstream, the image too
        assert len(backend.requests[-1].messages[-1].images) == 1
        arguments = "".join(
            tc.function.arguments or ""
            for ch in streamed
            if ch.choices
            for tc in (ch.choices[0].delta.tool_calls or [])
        )
        assert json.loads(arguments) == {"city": "Paris", "days": 3}
    finally:
        proxy.__exit__()
        remote.shutdown()
