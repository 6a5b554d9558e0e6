"""Constrained decoding on the tiny random-weight checkpoint: random weights can only produce valid
answers 100 times out of 100 if the constraint is real."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from glm_vision.backend import (
    AnswerDelta,
    GenerationRequest,
    GenerationResult,
    InvalidSchemaError,
    OutputConstraint,
    SamplingParams,
    answer_deltas,
)
from glm_vision.conversation import Message, split_output
from glm_vision.settings import Settings

SEEDS = range(100)
# nested object, enum, array, number bounds (all required, bounded lengths: a random model must finish)
SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["chart", "photo", "screenshot"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 20},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "box": {
            "type": "object",
            "properties": {
                "x": {"type": "integer", "minimum": 0, "maximum": 999},
                "y": {"type": "integer", "minimum": -5, "maximum": 5},
            },
            "required": ["x", "y"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"enum": ["red", "blue", "green"]}, "minItems": 1, "maxItems": 3},
        "title": {"type": "string", "maxLength": 12},
    },
    "required": ["kind", "count", "score", "box", "tags", "title"],
    "additionalProperties": False,
}
QUESTION = "Describe the picture as JSON."


@pytest.fixture(scope="module")
def wide_engine(tiny_model_dir):
    """32 rows: the 100 seeds go through the engine in a few batches."""
    from glm_vision.engine import Engine

    eng = Engine.load(
        Settings(model=str(tiny_model_dir), device="cpu", max_context_tokens=1024, max_batch=32, queue_size=256)
    )
    yield eng
    eng.shutdown()


def run_all(engine, requests: list[GenerationRequest]) -> list[tuple[str, GenerationResult]]:
    """Submit every request at once (they decode together) and collect each one's streamed answer
    (as the API streams it: reasoning split off) and its result."""
    handles = [engine.submit(r) for r in requests]
    out = []
    for handle in handles:
        streamed, result = [], None
        for item in answer_deltas(handle):
            if isinstance(item, AnswerDelta):
                streamed.append(item.answer)
            else:
                result = item
        out.append(("".join(streamed), result))
    return out


def request(constraint, seed, *, thinking: bool, budget: int | None = None, max_tokens: int = 160, **sampling):
    sampling_params = SamplingParams(seed=seed, max_new_tokens=max_tokens, **sampling)
    return GenerationRequest(
        [Message("user", QUESTION)],
        sampling_params,
        constraint=constraint,
        enable_thinking=thinking,
        thinking_budget=budget,
    )


def check_all(outputs, valid) -> None:
    for streamed, result in outputs:
        assert result.finish_reason == "stop", result.text
        answer = split_output(result.text).answer
        assert streamed.strip() == answer
        valid(answer)


# With thinking on, the random model would never close its reasoning by itself: a small budget
# closes it; the answer after `</think>` is constrained, the reasoning before it is free.
@pytest.mark.parametrize("thinking", [False, True], ids=["thinking-off", "thinking-on"])
def test_json_schema_valid_for_100_seeds(wide_engine, thinking):
    constraint = OutputConstraint("json_schema", json.dumps(SCHEMA))
    outputs = run_all(
        wide_engine, [request(constraint, s, thinking=thinking, budget=6 if thinking else None) for s in SEEDS]
    )
    check_all(outputs, lambda text: jsonschema.validate(json.loads(text), SCHEMA))
    if thinking:
        assert all(split_output(r.text).reasoning is not None and "</think>" in r.text for _, r in outputs)
    assert len({r.text for _, r in outputs}) > 5  # sampling still varies within the constraint


@pytest.mark.parametrize("thinking", [False, True], ids=["thinking-off", "thinking-on"])
def test_choice_and_regex_valid_for_100_seeds(wide_engine, thinking):
    budget = 4 if thinking else None
    choices = OutputConstraint("choice", choices=("yes", "no", "not sure"))
    pattern = r"[A-Z]{2}-\d{3}( \(ok\))?"
    regex = OutputConstraint("regex", pattern)
    outputs = run_all(
        wide_engine,
        [request(choices, s, thinking=thinking, budget=budget, max_tokens=40) for s in SEEDS]
        + [request(regex, s, thinking=thinking, budget=budget, max_tokens=40) for s in SEEDS],
    )
    check_all(outputs[:100], lambda text: text in ("yes", "no", "not sure"))
    check_all(outputs[100:], lambda text: re.fullmatch(pattern, text) is not None)


def json_prefix(text: str) -> bool:
    """Whether `text` can still become valid JSON: checked with xgrammar's built-in JSON grammar, not the
    grammar the engine compiled for the request."""
    import xgrammar

    info = xgrammar.TokenizerInfo([b"x"], xgrammar.VocabType.RAW)
    compiled = xgrammar.GrammarCompiler(info).compile_builtin_json_grammar()
    return xgrammar.GrammarMatcher(compiled).accept_string(text)


def test_json_object_and_grammar(wide_engine):
    grammar = 'root ::= "(" item ("," item)* ")"\nitem ::= [0-9] | "x"'
    outputs = run_all(
        wide_engine,
        [request(OutputConstraint("json_object"), s, thinking=False, max_tokens=120) for s in range(8)]
        + [request(OutputConstraint("grammar", grammar), s, thinking=False, max_tokens=60) for s in range(8)],
    )
    # Any object, so a random model may not close it in time: a finished answer is an object, an
    # unfinished one a prefix of one.
    for streamed, result in outputs[:8]:
        answer = split_output(result.text).answer
        assert streamed.strip() == answer
        assert answer.startswith("{"), answer
        if result.finish_reason == "stop":
            assert isinstance(json.loads(answer), dict), answer
        else:
            assert result.finish_reason == "length" and json_prefix(answer), answer
    check_all(outputs[8:], lambda text: re.fullmatch(r"\((?:[0-9x])(?:,[0-9x])*\)", text) is not None)


def test_the_json_prefix_check_itself():
    assert json_prefix('{"ab') and json_prefix('{"a": [1, ') and json_prefix('{"a": 1}')
    assert not json_prefix('{"a" 1') and not json_prefix("{]") and not json_prefix("x")


def test_free_rows_of_a_mixed_batch_equal_their_solo_runs(wide_engine):
    constraint = OutputConstraint("json_schema", json.dumps(SCHEMA))
    free = [request(None, s, thinking=False, max_tokens=40) for s in range(6)]
    solo = [wide_engine.generate(r).token_ids for r in free]
    mixed = [request(constraint, 100 + s, thinking=False) for s in range(6)]
    together = run_all(wide_engine, [r for pair in zip(mixed, free, strict=False) for r in pair])
    assert [result.token_ids for _, result in together[1::2]] == solo


def test_unfinishable_constraint_ends_with_length(wide_engine):
    constraint = OutputConstraint("regex", r"a{50}")
    result = wide_engine.generate(request(constraint, 1, thinking=False, max_tokens=5))
    assert result.finish_reason == "length"
    assert "a" * 5 == result.text or set(result.text) <= {"a"}


@pytest.mark.parametrize(
    "constraint, what",
    [
        (OutputConstraint("json_schema", '{"type": "bogus"}'), "bogus"),
        (OutputConstraint("json_schema", "{not json"), "not valid JSON"),
        (OutputConstraint("json_schema", "[1, 2]"), "must be an object"),
        (OutputConstraint("regex", "(unclosed"), "parenthesis"),
        (OutputConstraint("grammar", "root ::= missing_rule"), "missing_rule"),
    ],
)
def test_invalid_constraint_is_refused_at_submit(wide_engine, constraint, what):
    before = wide_engine.stats()["prefill_tokens"]
    with pytest.raises(InvalidSchemaError) as caught:
        wide_engine.submit(request(constraint, 0, thinking=False))
    assert what in caught.value.message
    assert caught.value.code == "invalid_schema" and caught.value.status == 400
    assert wide_engine.stats()["prefill_tokens"] == before  # no model work


@pytest.mark.parametrize("budget", [0, 3, 9])
def test_thinking_budget_caps_the_reasoning_and_an_answer_follows(wide_engine, budget):
    tokenizer = wide_engine.runner.tokenizer
    close = tokenizer.convert_tokens_to_ids("</think>")
    results = [
        r
        for _, r in run_all(
            wide_engine, [request(None, s, thinking=True, budget=budget, max_tokens=30) for s in range(8)]
        )
    ]
    for result in results:
        ids = list(result.token_ids)
        assert ids[0] == tokenizer.convert_tokens_to_ids("<think>")
        assert close in ids, result.text
        assert ids.index(close) - 1 <= budget  # reasoning tokens between <think> and </think>
        assert len(ids) > ids.index(close) + 1 or result.finish_reason == "stop"  # the answer goes on


def test_thinking_budget_is_ignored_with_thinking_off(wide_engine):
    plain = wide_engine.generate(request(None, 3, thinking=False, max_tokens=20))
    budgeted = wide_engine.generate(request(None, 3, thinking=False, budget=2, max_tokens=20))
    assert plain.token_ids == budgeted.token_ids


def test_min_tokens_never_blocks_a_finished_constraint(wide_engine):
    constraint = OutputConstraint("choice", choices=("yes", "no"))
    result = wide_engine.generate(request(constraint, 2, thinking=False, max_tokens=20, min_new_tokens=10))
    assert result.finish_reason == "stop" and result.text in ("yes", "no")
