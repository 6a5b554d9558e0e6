"""The engine's cached paths produce what plain transformers produces on the whole conversation."""

from __future__ import annotations

import itertools

import pytest
import torch

from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import Engine
from tests.reference import history_text, reference_generate

NEW_TOKENS = 24
# float32 rounding only: the engine embeds patches by a matrix product where transformers convolves
# (features ~5e-5 apart), which this random tiny model grows to ~3e-4 in the logits; wrong math moves them by >0.1
LOGITS_ATOL = 1e-3
_session_ids = itertools.count()


def three_turns(pictures):
    """Turn 1: images A and B. Turn 2: A again. Turn 3: a new image C."""
    a, b, c = pictures
    return [
        Message("user", "Describe both pictures.", [a, b]),
        Message("user", "Look at the first one again.", [a]),
        Message("user", "And what about this one?", [c]),
    ]


def run_conversation(
    engine: Engine,
    model,
    processor,
    user_turns,
    *,
    session_id: str | None,
    before_turn=None,
    new_tokens: int = NEW_TOKENS,
    min_tokens: int = 0,
):
    """Run each turn through the engine and the reference; return per-turn (engine, reference) pairs."""
    history: list[Message] = []
    turns = []
    for index, user in enumerate(user_turns):
        history.append(user)
        if before_turn is not None:
            before_turn(index)
        request = GenerationRequest(
            list(history),
            SamplingParams.greedy(new_tokens, min_new_tokens=min_tokens),
            session_id=session_id,
            capture_logits=True,
        )
        result = engine.generate(request)
        ref_tokens, ref_logits = reference_generate(model, processor, history, new_tokens, min_new_tokens=min_tokens)
        turns.append((result, ref_tokens, ref_logits))
        history.append(Message("assistant", history_text(result.text)))
    return turns


def assert_equivalent(turns):
    for index, (result, ref_tokens, ref_logits) in enumerate(turns):
        assert list(result.token_ids) == ref_tokens, f"turn {index + 1}: greedy tokens differ"
        torch.testing.assert_close(result.first_logits, ref_logits, atol=LOGITS_ATOL, rtol=1e-4)


def test_cached_engine_matches_full_recompute(engine, reference, pictures):
    model, processor = reference
    turns = run_conversation(engine, model, processor, three_turns(pictures), session_id=f"eq-{next(_session_ids)}")
    assert_equivalent(turns)
    # The caches really were used: later turns reused KV, turn 2's repeated image came from the feature cache.
    (r1, *_), (r2, *_), (r3, *_) = turns
    assert r1.usage.cached_tokens == 0 and r1.usage.images_encoded == 2
    assert r2.usage.cached_tokens > r1.usage.prompt_tokens // 2
    assert r2.usage.image_cache_hits == 1 and r2.usage.images_encoded == 0
    assert r3.usage.cached_tokens > r2.usage.prompt_tokens // 2
    assert r3.usage.images_encoded == 1
    # Different images really lead to different answers, so the comparison above has teeth.
    assert len({r.token_ids for r in (r1, r2, r3)}) == 3


@pytest.fixture(scope="module")
def slab_engine(settings):
    """Small prefill chunks, so that every prompt is prefilled over several steps."""
    from dataclasses import replace

    engine = Engine.load(replace(settings, prefill_chunk_tokens=16))
    yield engine
    engine.shutdown()


def test_chunked_prefill_and_decode_match_generate_for_hundreds_of_tokens(slab_engine, reference, pictures):
    model, processor = reference
    # min_tokens (HF's min_new_tokens in the reference) keeps the random model from stopping early
    turns = run_conversation(
        slab_engine, model, processor, three_turns(pictures), session_id="slab", new_tokens=100, min_tokens=90
    )
    assert_equivalent(turns)
    assert sum(r.usage.completion_tokens for r, *_ in turns) >= 256
    assert turns[2][0].usage.cached_tokens > 0


def test_seeded_sampling_is_reproducible_across_engines(slab_engine, engine, pictures):
    messages = [Message("user", "Describe it.", [pictures[0]])]
    params = SamplingParams(temperature=0.9, top_p=0.8, top_k=20, repetition_penalty=1.1, max_new_tokens=30, seed=7)
    fast = [slab_engine.generate(GenerationRequest(messages, params)).token_ids for _ in range(2)]
    assert fast[0] == fast[1]
    assert engine.generate(GenerationRequest(messages, params)).token_ids == fast[0]  # same sampler, same tokens


def test_engine_without_caches_matches_full_recompute(settings, reference, pictures):
    model, processor = reference
    engine = Engine.load(settings, use_caches=False)
    try:
        turns = run_conversation(engine, model, processor, three_turns(pictures), session_id="no-cache")
        assert_equivalent(turns)
        assert all(r.usage.cached_tokens == 0 and r.usage.image_cache_hits == 0 for r, *_ in turns)
    finally:
        engine.shutdown()


def test_swapped_cache_entries_are_caught(engine, reference, pictures):
    """If the feature cache handed back another image's features, the comparison must fail."""
    from glm_vision.images import load_image
    from tests.conftest import make_picture

    model, processor = reference
    session_id = f"swap-{next(_session_ids)}"
    # Same size, so the swapped entries also have matching grids (a grid mismatch is refused anyway).
    same_size = [load_image(make_picture(seed, (168, 112))) for seed in (1, 4)] + [pictures[2]]

    def swap_a_and_b(turn_index):
        if turn_index != 1:
            return
        store = engine.features._entries
        keys = [k for k in store if k[0] == session_id]
        assert len(keys) == 2, "turn 1 should have cached A and B"
        store[keys[0]], store[keys[1]] = store[keys[1]], store[keys[0]]

    turns = run_conversation(
        engine, model, processor, three_turns(same_size), session_id=session_id, before_turn=swap_a_and_b
    )
    result, ref_tokens, ref_logits = turns[1]
    assert result.usage.image_cache_hits == 1
    with pytest.raises(AssertionError):
        assert_equivalent([turns[1]])


def test_edit_and_retry_reuse_prefix_and_stay_correct(engine, reference, pictures):
    """Regenerating or editing the last turn crops the KV at the divergence, never inside an image."""
    model, processor = reference
    session_id = f"edit-{next(_session_ids)}"
    a, b, c = pictures
    first = [Message("user", "What is shown?", [a])]
    r1 = engine.generate(GenerationRequest(first, SamplingParams.greedy(NEW_TOKENS), session_id=session_id))
    conversation = first + [Message("assistant", history_text(r1.text)), Message("user", "Compare with this.", [b])]
    engine.generate(GenerationRequest(conversation, SamplingParams.greedy(NEW_TOKENS), session_id=session_id))
    # Edit turn 2: a different image and text. Only turn 1 can be reused.
    edited = first + [Message("assistant", history_text(r1.text)), Message("user", "Compare with that.", [c])]
    result = engine.generate(
        GenerationRequest(edited, SamplingParams.greedy(NEW_TOKENS), session_id=session_id, capture_logits=True)
    )
    ref_tokens, ref_logits = reference_generate(model, processor, edited, NEW_TOKENS)
    assert list(result.token_ids) == ref_tokens
    torch.testing.assert_close(result.first_logits, ref_logits, atol=LOGITS_ATOL, rtol=1e-4)
    assert 0 < result.usage.cached_tokens < result.usage.prompt_tokens
    # Retry the same prompt: everything but the last token is reused, the answer is the same.
    again = engine.generate(
        GenerationRequest(edited, SamplingParams.greedy(NEW_TOKENS), session_id=session_id, capture_logits=True)
    )
    assert again.token_ids == result.token_ids
    assert again.usage.cached_tokens == again.usage.prompt_tokens - 1


def test_sessions_are_isolated(engine, reference, pictures):
    model, processor = reference
    a, b, _ = pictures
    x, y = f"iso-x-{next(_session_ids)}", f"iso-y-{next(_session_ids)}"
    rx = engine.generate(
        GenerationRequest([Message("user", "What is this?", [a])], SamplingParams.greedy(8), session_id=x)
    )
    # Session y sends the very same image and text: it must not get x's features or x's KV.
    ry = engine.generate(
        GenerationRequest(
            [Message("user", "What is this?", [a])], SamplingParams.greedy(8), session_id=y, capture_logits=True
        )
    )
    assert ry.usage.image_cache_hits == 0 and ry.usage.images_encoded == 1
    assert ry.usage.cached_tokens == 0
    assert ry.token_ids == rx.token_ids  # same input, same answer: nothing of x leaked in or out
    ry2 = engine.generate(
        GenerationRequest(
            [Message("user", "And this?", [b])], SamplingParams.greedy(8), session_id=y, capture_logits=True
        )
    )
    ref_tokens, ref_logits = reference_generate(model, processor, [Message("user", "And this?", [b])], 8)
    assert list(ry2.token_ids) == ref_tokens
    torch.testing.assert_close(ry2.first_logits, ref_logits, atol=LOGITS_ATOL, rtol=1e-4)
    assert engine.features.scope_bytes(x) > 0 and engine.features.scope_bytes(y) > 0
    engine.close_session(x)
    assert engine.features.scope_bytes(x) == 0 and engine.sessions.get(x) is None
    assert engine.features.scope_bytes(y) > 0


def test_seeded_sampling_is_reproducible(engine, pictures):
    a, *_ = pictures
    messages = [Message("user", "Describe it.", [a])]
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=20, seed=1234)
    runs = [engine.generate(GenerationRequest(messages, params)).token_ids for _ in range(2)]
    assert runs[0] == runs[1]
    other = engine.generate(GenerationRequest(messages, SamplingParams(**{**params.__dict__, "seed": 99}))).token_ids
    assert other != runs[0]


def test_shared_scope_reuses_features_across_sessions_of_one_tenant(engine, reference, pictures):
    """A new session of the same tenant that opens like an earlier one (same image, another question)
    starts from that session's KV prefix, image included: no encoder, and still the reference's answer."""
    model, processor = reference
    a = pictures[0]
    first = [Message("user", "What is this?", [a])]
    engine.generate(GenerationRequest(first, SamplingParams.greedy(4), session_id="t1-chat1", cache_scope="tenant-1"))
    second = [Message("user", "Describe the colours.", [a])]
    result = engine.generate(
        GenerationRequest(
            second, SamplingParams.greedy(8), session_id="t1-chat2", cache_scope="tenant-1", capture_logits=True
        )
    )
    assert result.usage.images_encoded == 0 and result.usage.cached_tokens >= 16
    ref_tokens, ref_logits = reference_generate(model, processor, second, 8)
    assert list(result.token_ids) == ref_tokens
    torch.testing.assert_close(result.first_logits, ref_logits, atol=LOGITS_ATOL, rtol=1e-4)
    other = engine.generate(
        GenerationRequest(second, SamplingParams.greedy(2), session_id="t2-chat1", cache_scope="tenant-2")
    )
    assert other.usage.image_cache_hits == 0 and other.usage.images_encoded == 1  # tenants never share
    assert other.usage.cached_tokens == 0
