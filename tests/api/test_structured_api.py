"""Structured answers through the OpenAI-compatible API: response_format and structured_outputs
(streamed and not), logprobs in OpenAI's shape, n choices with indexed chunks, thinking budget,
the official client's `parse` on the demo model, and a 400 for every field that is not honoured."""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from glm_vision.api.options import NOT_HONOURED
from glm_vision.server import AppState
from glm_vision.settings import Settings
from tests.api_helpers import image_part, serve
from tests.conftest import make_picture
from tests.engine.test_structured import SCHEMA

# The 100-seed runs are in tests/engine/test_structured.py (engine batches, streamed deltas and results);
# here one batch of seeds goes over HTTP, streamed and not.
SEEDS = range(32)


@pytest.fixture(scope="module")
def wide_server(tiny_model_dir):
    from glm_vision.engine import Engine

    settings = Settings(model=str(tiny_model_dir), device="cpu", max_context_tokens=1024, max_batch=32, queue_size=256)
    engine = Engine.load(settings)
    engine.warmup()
    live = serve(AppState(settings, backend=engine))
    yield live
    live.__exit__()
    engine.shutdown()


def post(server, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


def chat(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "Describe the picture as JSON."}], **fields}


def streamed(server, body: dict) -> tuple[dict, dict, list[dict]]:
    """(content by index, finish reason by index, every chunk) of a streamed answer."""
    content, finish, chunks = {}, {}, []
    url = server.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=dict(body, stream=True), timeout=120) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            chunks.append(chunk)
            for choice in chunk["choices"]:
                content[choice["index"]] = content.get(choice["index"], "") + (choice["delta"].get("content") or "")
                if choice["finish_reason"]:
                    finish[choice["index"]] = choice["finish_reason"]
    return content, finish, chunks


JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "picture", "schema": SCHEMA, "strict": True}}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_json_schema_answers_validate_over_http(wide_server, stream):
    def one(seed: int) -> str:
        body = chat(
            response_format=JSON_FORMAT,
            seed=seed,
            max_tokens=160,
            chat_template_kwargs={"enable_thinking": bool(seed % 2)},
            thinking_budget=6,
        )
        if stream:
            content, finish, _ = streamed(wide_server, body)
            assert finish == {0: "stop"}
            return content[0]
        answer = post(wide_server, body).json()["choices"][0]
        assert answer["finish_reason"] == "stop"
        return answer["message"]["content"]

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, SEEDS))
    for answer in answers:
        jsonschema.validate(json.loads(answer), SCHEMA)


def test_choice_and_regex_through_structured_outputs(wide_server):
    # A small thinking budget: the random model would not end its reasoning by itself.
    choice = post(wide_server, chat(structured_outputs={"choice": ["cat", "dog"]}, seed=1, thinking_budget=4)).json()
    assert choice["choices"][0]["message"]["content"] in ("cat", "dog")
    content, _, _ = streamed(
        wide_server, chat(structured_outputs={"regex": r"\d{3}-[a-z]{2}"}, seed=2, thinking_budget=4)
    )
    assert re.fullmatch(r"\d{3}-[a-z]{2}", content[0])


def test_logprobs_in_openais_shape_streamed_and_not(wide_server):
    body = chat(logprobs=True, top_logprobs=3, seed=4, max_tokens=12, chat_template_kwargs={"enable_thinking": False})
    whole = post(wide_server, body).json()
    entries = whole["choices"][0]["logprobs"]["content"]
    assert len(entries) == whole["usage"]["completion_tokens"]
    for entry in entries:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"} and entry["logprob"] <= 0
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and entry["logprob"] <= tops[0] + 1e-6
    _, _, chunks = streamed(wide_server, body)
    streamed_entries = [e for c in chunks for ch in c["choices"] if ch["logprobs"] for e in ch["logprobs"]["content"]]
    # same seed, same tokens, every token once (the second run reuses the cached prompt KV: last bits may differ)
    assert [e["token"] for e in streamed_entries] == [e["token"] for e in entries]
    assert [e["logprob"] for e in streamed_entries] == pytest.approx([e["logprob"] for e in entries], abs=1e-4)
    plain = post(wide_server, chat(seed=4, max_tokens=4)).json()
    assert plain["choices"][0]["logprobs"] is None


def test_n_choices_streamed_with_their_index(wide_server):
    body = chat(n=3, seed=9, max_tokens=10, temperature=1.0, top_k=0, top_p=1.0)
    whole = post(wide_server, body).json()
    assert [c["index"] for c in whole["choices"]] == [0, 1, 2]
    content, finish, _ = streamed(wide_server, body)
    assert content == {c["index"]: c["message"]["content"] for c in whole["choices"]}
    assert set(finish) == {0, 1, 2}


def test_each_streamed_choice_finishes_when_it_ends(wide_server):
    """With the official client, n = 3 choices that stop at different points: a choice's finish chunk
    comes as soon as it is done (others still streaming), and nothing of it follows."""
    client = openai.OpenAI(base_url=wide_server.url + "/v1", api_key="none")

    def events(seed: int) -> list[tuple[int, str | None, str | None]]:
        stream = client.chat.completions.create(
            model="glm-vision", messages=chat()["messages"], n=3, seed=seed, max_tokens=24, temperature=1.0,
            top_p=1.0, stop=["e"], stream=True, extra_body={"top_k": 0},
        )  # fmt: skip
        return [(c.index, c.delta.content, c.finish_reason) for chunk in stream for c in chunk.choices]

    for seed in range(40):
        seen = events(seed)
        lengths = {i: sum(len(text or "") for j, text, _ in seen if j == i) for i in range(3)}
        if len(set(lengths.values())) > 1:
            break
    else:
        raise AssertionError("no seed gave choices of different lengths")
    finished_at = {i: n for n, (i, _, finish) in enumerate(seen) if finish}
    assert set(finished_at) == {0, 1, 2}
    for index, position in finished_at.items():
        assert not any(i == index and text for i, text, _ in seen[position + 1 :])
    first = min(finished_at.values())
    assert any(text for _, text, _ in seen[first + 1 :])  # the other choices went on after it


def test_thinking_budget_reaches_the_engine(wide_server):
    answer = post(wide_server, chat(thinking_token_budget=2, seed=3, max_tokens=20)).json()
    message = answer["choices"][0]["message"]
    assert message["reasoning_content"] is not None or message["content"]
    assert answer["usage"]["completion_tokens"] >= 3


REMOTE_REF = {"type": "object", "properties": {"invoice": {"$ref": "https://example.com/invoice.schema.json"}}}
DEEP = {"type": "object", "properties": {}}
for _ in range(80):
    DEEP = {"type": "object", "properties": {"a": DEEP}}


@pytest.mark.parametrize(
    "body, param",
    [
        (
            chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}),
            "response_format.json_schema.schema",
        ),
        (chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), "response_format.json_schema"),
        (chat(structured_outputs={"regex": "(unclosed"}), "structured_outputs.regex"),
        (chat(structured_outputs={"grammar": "root ::= nowhere"}), "structured_outputs.grammar"),
        (chat(structured_outputs={"json": "{not json"}), "structured_outputs.json"),
        (  # xgrammar would let it match any JSON: refused, not silently loosened
            chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": REMOTE_REF}}),
            "response_format.json_schema.schema",
        ),
        (chat(structured_outputs={"json": REMOTE_REF}), "structured_outputs.json"),
        (
            chat(
                tools=[{"type": "function", "function": {"name": "f", "parameters": REMOTE_REF}}],
                tool_choice="required",
            ),
            "tools.0.function.parameters",
        ),
        (
            chat(tools=[{"type": "function", "function": {"name": "f", "parameters": DEEP}}], tool_choice="required"),
            "tools.0.function.parameters",
        ),
    ],
)
def test_invalid_schema_is_400_invalid_schema(wide_server, body, param):
    error = post(wide_server, body).json()["error"]
    assert error["code"] == "invalid_schema" and error["param"] == param and error["message"]
    assert "recursion" not in error["message"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("logit_bias", {"42": 5}),
        ("min_p", 0.1),
        ("guided_json", {"type": "object"}),
        ("guided_choice", ["a"]),
        ("reasoning_effort", "low"),
        ("function_call", "auto"),
        ("audio", {"voice": "x"}),
        ("best_of", 3),
        ("ignore_eos", True),
        ("structural_tag", "x"),
        ("prompt_logprobs", 2),
        ("frequency_penalty", 0.5),
    ],
)
def test_fields_that_would_change_the_answer_and_are_not_honoured_are_400(wide_server, name, value):
    assert name in NOT_HONOURED
    response = post(wide_server, chat(**{name: value}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == name and error["message"].startswith(f"{name} is not supported here: ")
    assert error["message"].count("not supported") == 1 and "leave it out" in error["message"]  # what is allowed


@pytest.mark.parametrize(
    "body, param",
    [
        (chat(response_format={"type": "structural_tag"}), "response_format.type"),
        (chat(structured_outputs={"regex": "a", "choice": ["b"]}), "structured_outputs"),
        (chat(structured_outputs={"whitespace_pattern": " "}), "structured_outputs.whitespace_pattern"),
        (chat(response_format={"type": "json_object"}, structured_outputs={"regex": "a"}), "structured_outputs"),
        (chat(thinking_budget=3, thinking_token_budget=4), "thinking_token_budget"),
        (chat(thinking_budget=-1), "thinking_budget"),
        (chat(top_logprobs=2), "top_logprobs"),
    ],
)
def test_conflicting_or_unsupported_structured_options_are_400(wide_server, body, param):
    response = post(wide_server, body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_harmless_values_and_unknown_fields_are_accepted_and_unknown_ones_logged_once(wide_server, caplog):
    harmless = dict(
        logit_bias={},
        min_p=0,
        best_of=1,
        ignore_eos=False,
        tool_choice="none",
        skip_special_tokens=True,
        store=False,
        metadata={"a": "b"},
        max_tokens=2,
    )
    with caplog.at_level(logging.WARNING, logger="glm_vision.api.options"):
        for _ in range(2):
            assert post(wide_server, chat(my_client_field=1, **harmless)).status_code == 200
    logged = [r for r in caplog.records if "my_client_field" in r.getMessage()]
    assert len(logged) == 1


# ---------------------------------------------------------------------------------- demo model + openai.parse
class Shape(BaseModel):
    color: str = Field(max_length=12)
    shape: str = Field(max_length=12)
    count: int = Field(ge=0, le=9)


@pytest.fixture(scope="module")
def demo_server():
    from glm_vision.server import load_backend

    settings = Settings(model="auto", device="cpu", max_context_tokens=4096)
    backend = load_backend(settings)
    assert backend.info.is_demo
    live = serve(AppState(settings, backend=backend))
    yield live
    live.__exit__()
    backend.shutdown()


@pytest.mark.parametrize("thinking", [False, True], ids=["thinking-off", "thinking-on"])
def test_openai_client_parse_returns_the_pydantic_object_on_the_demo_model(demo_server, thinking):
    with openai.OpenAI(base_url=demo_server.url + "/v1", api_key="x", max_retries=0, timeout=120) as client:
        completion = client.chat.completions.parse(
            model="demo",
            messages=[
                {"role": "user", "content": [image_part(make_picture(4)), {"type": "text", "text": "What shape?"}]}
            ],
            response_format=Shape,
            max_tokens=200,
            seed=1,
            extra_body={"chat_template_kwargs": {"enable_thinking": thinking}, "thinking_budget": 16},
        )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Shape) and 0 <= parsed.count <= 9
