"""Logprobs against the reference model, n choices sharing one prefill."""

from __future__ import annotations

import math

import torch

from glm_vision.backend import ChoiceEnd, GenerationRequest, GenerationResult, SamplingParams, TextDelta
from glm_vision.conversation import Message
from tests.reference import reference_inputs

LOGPROB_TOLERANCE = 2e-3  # the engine's own forward pass against transformers', float32 on the CPU


def test_logprobs_equal_log_softmax_of_the_reference_logits(engine, reference, pictures):
    model, processor = reference
    messages = [Message("user", "What is in this image?", [pictures[0]])]
    result = engine.generate(
        GenerationRequest(messages, SamplingParams.greedy(max_new_tokens=12, logprobs=True, top_logprobs=5))
    )
    assert len(result.logprobs) == len(result.token_ids) > 3
    inputs = reference_inputs(processor, messages)
    prompt_len = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([result.token_ids])], dim=1)
    full = dict(
        inputs,
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        mm_token_type_ids=torch.nn.functional.pad(inputs["mm_token_type_ids"], (0, len(result.token_ids))),
    )
    with torch.inference_mode():
        logits = model(**full).logits[0, prompt_len - 1 : -1].float()
    reference_logprobs = logits.log_softmax(-1)
    texts = engine.runner.outputs.texts
    for step, (token, entry) in enumerate(zip(result.token_ids, result.logprobs, strict=False)):
        expected = reference_logprobs[step]
        assert math.isclose(entry.logprob, expected[token].item(), abs_tol=LOGPROB_TOLERANCE)
        assert entry.token == texts(token)[0] and bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        values = [t.logprob for t in entry.top]
        assert len(entry.top) == 5 and values == sorted(values, reverse=True)
        top_values, top_ids = expected.topk(5)
        assert torch.allclose(torch.tensor(values), top_values, atol=LOGPROB_TOLERANCE)
        assert entry.top[0].token == entry.token  # greedy: the chosen token is the most likely one
        assert [texts(i)[0] for i in top_ids.tolist()][:1] == [entry.top[0].token]


def test_streamed_logprobs_cover_every_token_once(engine):
    request = GenerationRequest(
        [Message("user", "Count the shapes")], SamplingParams(seed=5, max_new_tokens=24, logprobs=True, top_logprobs=2)
    )
    streamed, result = [], None
    for item in engine.submit(request):
        if isinstance(item, TextDelta):
            streamed.extend(item.logprobs)
        else:
            result = item
    assert streamed == list(result.logprobs) and len(streamed) == len(result.token_ids)


def test_no_logprobs_unless_asked(engine):
    result = engine.generate(GenerationRequest([Message("user", "Hi")], SamplingParams(seed=1, max_new_tokens=4)))
    assert result.logprobs is None


def test_n_choices_are_reproducible_and_prefill_once(engine):
    def ask(n: int, seed: int = 11):
        request = GenerationRequest(
            [Message("user", "Name three colours and shapes")],
            SamplingParams(seed=seed, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16),
            n=n,
        )
        before = engine.stats()["prefill_tokens"]
        result = engine.generate(request)
        return result, engine.stats()["prefill_tokens"] - before

    first, prefilled = ask(3)
    again, _ = ask(3)
    single, single_prefilled = ask(1)
    assert prefilled == single_prefilled == first.usage.prompt_tokens  # the prompt ran once for 3 choices
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.token_ids for c in first.choices] == [c.token_ids for c in again.choices]
    assert len({c.token_ids for c in first.choices}) == 3  # each choice samples on its own
    assert first.choices[0].token_ids == single.token_ids  # choice 0 is the n=1 answer; choice i uses seed + i
    second_alone, _ = ask(1, seed=12)
    assert first.choices[1].token_ids == second_alone.token_ids
    assert first.usage.completion_tokens == sum(len(c.token_ids) for c in first.choices)


def test_n_choices_stream_with_their_index(engine):
    request = GenerationRequest([Message("user", "Hello")], SamplingParams(seed=3, max_new_tokens=8), n=2)
    texts = {0: "", 1: ""}
    events = list(engine.submit(request))
    for item in events:
        if isinstance(item, TextDelta):
            texts[item.index] += item.text
    result = events[-1]
    assert isinstance(result, GenerationResult)
    assert [texts[0], texts[1]] == [c.text for c in result.choices]


def test_a_choice_that_ends_first_is_announced_at_once(engine):
    """n = 3 choices stopping at different steps (a stop string each meets in its own place): every
    choice but the last to finish gets a `ChoiceEnd` when it is done, equal to its final form, and
    nothing of it is streamed after that."""
    for seed in range(40):
        sampling = SamplingParams(seed=seed, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=24, stop=("e",))
        events = list(engine.submit(GenerationRequest([Message("user", "Hello")], sampling, n=3)))
        lengths = {len(c.token_ids) for c in events[-1].choices}
        if len(lengths) > 1:
            break
    else:
        raise AssertionError("no seed gave choices of different lengths")
    result = events[-1]
    ends = [(i, item.choice) for i, item in enumerate(events) if isinstance(item, ChoiceEnd)]
    assert len(ends) == 2  # all but the choice that finishes last (it ends with the result)
    for position, choice in ends:
        assert choice == result.choices[choice.index]
        later = [e for e in events[position:] if isinstance(e, TextDelta) and e.index == choice.index]
        assert not later
    shortest = min(result.choices, key=lambda c: len(c.token_ids))
    end_of_shortest = next(i for i, c in ends if c.index == shortest.index)
    assert any(isinstance(e, TextDelta) for e in events[end_of_shortest:])  # others still streaming
