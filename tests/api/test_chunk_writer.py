"""The streamed chunks as `ChunkWriter` writes them: the text chunk's shortcut (head and tail encoded once,
the text through the JSON string encoder) writes what encoding the whole chunk would, for any text; and
`events` turns a backend's events into the chunks a client reads. The paced-backend bench that times this
path streams every token to its clients."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from glm_vision.api.responses import ChunkWriter
from glm_vision.backend import GenerationResult, TextDelta, Usage

HEAD = {
    "id": 'chatcmpl-"odd\\id\u2028',
    "object": "chat.completion.chunk",
    "created": 17,
    "model": "glm-\u00e9\U0001f600",
}


def parse(stream: str) -> list[dict]:
    events = stream.split("\n\n")
    assert events[-1] == "" and all(event.startswith("data: ") for event in events[:-1]), stream
    return [json.loads(event.removeprefix("data: ")) for event in events[:-1]]


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(),
    field=st.sampled_from(["content", "reasoning_content", "role"]),
    index=st.integers(0, 7),
    usage=st.booleans(),
)
def test_a_text_chunk_is_the_whole_chunk_encoded(text, field, index, usage):
    writer = ChunkWriter(HEAD["id"], HEAD["created"], HEAD["model"], include_usage=usage)
    chunk = writer.delta({field: text}, index=index)
    expected = dict(HEAD, choices=[{"index": index, "delta": {field: text}, "logprobs": None, "finish_reason": None}])
    if usage:
        expected["usage"] = None
    assert parse(chunk) == [expected]
    # byte for byte what json.dumps writes for the whole chunk (compact, non-ASCII kept)
    assert chunk == "data: " + json.dumps(expected, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def test_events_split_reasoning_from_the_answer_and_end_with_the_finish_and_usage():
    writer = ChunkWriter("chatcmpl-1", 1, "m", include_usage=True)
    result = GenerationResult("", "length", Usage(prompt_tokens=5, completion_tokens=4), ())
    stream = "".join(
        writer.events(event)
        for event in [TextDelta("<think>why"), TextDelta(" so</thi"), TextDelta('nk>\nIt "is"'), result]
    )
    chunks = parse(stream)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "why so"
    assert "".join(d.get("content", "") for d in deltas) == 'It "is"'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert all(c["usage"] is None for c in chunks[:-1])


def test_the_stream_cost_bench_streams_every_token_to_its_clients():
    from bench.stream_cost import measure

    row = measure(streams=4, tokens=20, step_s=0.002, worker_s=0.0005)  # raises when a client misses a token
    assert row["loop_us"] > 0 and row["host_ms"] >= 0.5
