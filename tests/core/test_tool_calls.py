"""The GLM tool-call parser: complete text and streamed deltas cut anywhere give the same calls."""

from __future__ import annotations

import json

import pytest

from glm_vision.tool_calls import ArgumentsDelta, CallEnd, CallStart, ContentDelta, ToolCallStream, parse_tool_calls

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "units": {"type": "string"}},
            },
        },
    },
    {"type": "function", "function": {"name": "take_screenshot", "parameters": {"type": "object", "properties": {}}}},
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "filters": {"type": "object"}, "tags": {"type": "array"}},
            },
        },
    },
]

SINGLE = (
    "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n"
    "<arg_value>3</arg_value>\n</tool_call>"
)
PARALLEL = SINGLE + "<tool_call>take_screenshot\n</tool_call>"
NESTED = (
    "Let me look that up.\n<tool_call>search\n<arg_key>query</arg_key>\n<arg_value>a < b && c\nsecond line"
    '</arg_value>\n<arg_key>filters</arg_key>\n<arg_value>{"lang": ["zh", "en"], "n": {"max": 5}}'
    '</arg_value>\n<arg_key>tags</arg_key>\n<arg_value>["报错", "UI"]</arg_value>\n</tool_call>'
)


def test_single_call_typed_by_the_schema():
    parsed = parse_tool_calls(SINGLE, TOOLS)
    assert parsed.content == "" and not parsed.cut_off
    (call,) = parsed.calls
    assert call.name == "get_weather" and call.arguments == {"city": "Paris", "days": 3}
    assert json.loads(call.arguments_json) == {"city": "Paris", "days": 3} and call.id.startswith("call_")


def test_parallel_and_zero_argument_calls():
    parsed = parse_tool_calls(PARALLEL, TOOLS)
    assert [c.name for c in parsed.calls] == ["get_weather", "take_screenshot"]
    assert parsed.calls[1].arguments == {} and parsed.calls[1].arguments_json == "{}"
    assert parsed.calls[0].id != parsed.calls[1].id


def test_text_before_a_call_nested_json_non_ascii_and_values_with_angle_brackets_and_newlines():
    parsed = parse_tool_calls(NESTED, TOOLS)
    assert parsed.content == "Let me look that up.\n"
    (call,) = parsed.calls
    assert call.arguments == {
        "query": "a < b && c\nsecond line",
        "filters": {"lang": ["zh", "en"], "n": {"max": 5}},
        "tags": ["报错", "UI"],
    }


def test_a_string_parameter_that_looks_like_json_stays_text_and_unknown_tools_are_read_as_json():
    text = (
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>123</arg_value>\n</tool_call>"
        "<tool_call>other\n<arg_key>n</arg_key>\n<arg_value>123</arg_value>\n<arg_key>s</arg_key>\n"
        "<arg_value>not json</arg_value>\n</tool_call>"
    )
    first, second = parse_tool_calls(text, TOOLS).calls
    assert first.arguments == {"city": "123"}
    assert second.arguments == {"n": 123, "s": "not json"}


def test_a_call_cut_off_by_max_tokens_is_reported_not_crashed():
    parsed = parse_tool_calls("Checking.<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_val", TOOLS)
    assert parsed.cut_off and parsed.calls == () and parsed.content == "Checking."


def test_plain_text_and_lookalike_tags_are_content():
    assert parse_tool_calls("no calls, just <tool answer>", TOOLS).content == "no calls, just <tool answer>"
    assert parse_tool_calls("ends with <tool_ca", TOOLS).content == "ends with <tool_ca"


def stream_all(text: str, cuts: list[int]):
    stream = ToolCallStream(TOOLS)
    events = []
    for start, end in zip([0] + cuts, cuts + [len(text)], strict=False):
        events += list(stream.feed(text[start:end]))
    return events + list(stream.flush()), stream


@pytest.mark.parametrize(
    "text", [SINGLE, PARALLEL, NESTED, "plain answer <tool", "x<tool_call>get_weather\n<arg_key>c"]
)
def test_streamed_deltas_cut_at_every_character_reassemble_to_the_complete_parse(text):
    expected = parse_tool_calls(text, TOOLS)
    for cut in range(1, len(text)):
        for cuts in ([cut], list(range(1, len(text)))[:: max(1, cut % 7)]):
            events, stream = stream_all(text, sorted(set(cuts)))
            assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == expected.content
            ends = [e.call for e in events if isinstance(e, CallEnd)]
            assert [(c.name, c.arguments) for c in ends] == [(c.name, c.arguments) for c in expected.calls]
            assert stream.cut_off == expected.cut_off
            for call in ends:
                start = next(e for e in events if isinstance(e, CallStart) and e.id == call.id)
                fragments = "".join(
                    e.fragment for e in events if isinstance(e, ArgumentsDelta) and e.index == start.index
                )
                assert start.name == call.name and fragments == call.arguments_json
            assert all(
                "<arg_" not in e.text and "tool_call>" not in e.text for e in events if isinstance(e, ContentDelta)
            )
