"""Continuous batching: requests decoded together give exactly what each gives alone."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from glm_vision.backend import GenerationRequest, SamplingParams, TextDelta
from glm_vision.conversation import Message
from glm_vision.engine import Engine
from glm_vision.images import load_image
from tests.conftest import make_picture
from tests.reference import history_text


@pytest.fixture(scope="module")
def batch_engine(settings):
    engine = Engine.load(replace(settings, max_batch=4, prefill_chunk_tokens=32))
    engine.warmup()
    yield engine
    engine.shutdown()


def requests_of_all_kinds():
    """Different images, prompt lengths, answer lengths, a stop string; two turns of one session."""
    pics = [
        load_image(make_picture(seed, size))
        for seed, size in [(11, (168, 112)), (12, (112, 224)), (13, (280, 140)), (14, (140, 140)), (15, (196, 112))]
    ]
    return [
        GenerationRequest([Message("user", "Describe.", [pics[0]])], SamplingParams.greedy(60), session_id="b0"),
        GenerationRequest([Message("user", "hello")], SamplingParams.greedy(120)),
        GenerationRequest([Message("user", "Two of them.", pics[1:3])], SamplingParams.greedy(15), session_id="b2"),
        GenerationRequest([Message("user", "What is this? " * 20, [pics[3]])], SamplingParams.greedy(80)),
        GenerationRequest([Message("user", "Tell me everything.", [pics[4]])], SamplingParams.greedy(40)),
        GenerationRequest([Message("user", "go")], SamplingParams.greedy(100)),
    ]


def test_batched_greedy_equals_single_stream(settings, batch_engine):
    single = Engine.load(replace(settings, max_batch=1))
    try:
        alone = [single.generate(r) for r in requests_of_all_kinds()]
    finally:
        single.shutdown()
    # All at once: they join and leave the batch at different steps.
    handles = [batch_engine.submit(r) for r in requests_of_all_kinds()]
    together = [h.wait() for h in handles]
    assert batch_engine.stats()["peak_batch"] >= 3
    for index, (a, b) in enumerate(zip(alone, together, strict=False)):
        assert b.token_ids == a.token_ids, f"request {index} differs when batched"
        assert b.finish_reason == a.finish_reason and b.text == a.text
    assert len({r.usage.completion_tokens for r in together}) >= 4  # they really left at different times


def test_stopping_one_stream_leaves_the_others_intact(settings, batch_engine):
    requests = requests_of_all_kinds()[:4]
    single = Engine.load(replace(settings, max_batch=1))
    try:
        alone = [single.generate(r) for r in requests]
    finally:
        single.shutdown()
    from tests.engine.test_engine import cancel_after_deltas

    tokens_at_stop, restore = cancel_after_deltas(batch_engine, 5)  # a stream stopped at its 5th delta...
    try:
        victim_result = batch_engine.generate(requests[1])
    finally:
        restore()
    assert victim_result.finish_reason == "cancelled"
    assert victim_result.usage.completion_tokens == tokens_at_stop[0]
    handles = [batch_engine.submit(r) for r in requests]  # ...then a fresh batch where one is stopped mid-way
    victim = handles[1]
    for item in victim:
        if isinstance(item, TextDelta):
            victim.cancel()
    assert victim.result.finish_reason == "cancelled"
    for index in (0, 2, 3):
        assert handles[index].wait().token_ids == alone[index].token_ids


def test_a_session_turn_waits_for_its_previous_turn(batch_engine):
    pic = load_image(make_picture(21))
    first = [Message("user", "What is this?", [pic])]
    h1 = batch_engine.submit(GenerationRequest(first, SamplingParams.greedy(40), session_id="serial"))
    r1 = h1.wait()
    second = first + [Message("assistant", history_text(r1.text)), Message("user", "More.")]
    h2 = batch_engine.submit(GenerationRequest(second, SamplingParams.greedy(10), session_id="serial"))
    h3 = batch_engine.submit(GenerationRequest(second, SamplingParams.greedy(10), session_id="serial"))
    r2, r3 = h2.wait(), h3.wait()
    assert r2.usage.cached_tokens > 0 and r3.usage.cached_tokens > 0
    assert r2.token_ids == r3.token_ids


def test_many_concurrent_streams_from_threads(batch_engine):
    results, errors = [], []

    def client(i):
        try:
            request = GenerationRequest([Message("user", f"stream {i}")], SamplingParams.greedy(20), session_id=f"t{i}")
            results.append(batch_engine.generate(request))
        except Exception as exc:  # noqa: BLE001 - the thread records any failure for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 12
    assert all(r.usage.completion_tokens > 0 for r in results)


def test_captured_batch_sizes_never_exceed_the_slots(settings):
    """Batches run padded to a captured size, but never to more rows than there are slots."""
    engine = Engine.load(replace(settings, max_batch=3))
    try:
        forward = engine.runner.forward
        assert [forward.graph_batch(b) for b in (1, 2, 3)] == [1, 2, 3]
        assert forward.slab.slots == 3
    finally:
        engine.shutdown()
    engine = Engine.load(replace(settings, max_batch=40))
    try:
        assert [engine.runner.forward.graph_batch(b) for b in (3, 17, 33, 40)] == [4, 32, 40, 40]
    finally:
        engine.shutdown()


def test_warmup_captures_the_last_bucket_of_a_context_not_a_multiple_of_1024(settings, monkeypatch):
    """Every bucket a decode step can run in is captured at warm-up, the context's own length among them
    (a 5,024-token context ends in a bucket of 5,024: left out, its graph was captured, and its attention
    variants compiled, in a user's step at ~4k tokens)."""
    engine = Engine.load(replace(settings, max_batch=2, max_context_tokens=5024))
    try:
        forward = engine.runner.forward
        captured = []
        monkeypatch.setattr(forward, "use_graphs", True)
        monkeypatch.setattr(forward, "capture", lambda batch, bucket: captured.append((batch, bucket)))
        monkeypatch.setattr(forward.passes.pieces, "graphs", {"captured": None})  # no prefill pieces on the CPU
        forward.warmup(max_batch=2)
        used = {forward.bucket(length) for length in range(forward.slab.max_len)}
        assert used == {1024, 2048, 3072, 4096, 5024}
        assert set(captured) == {(batch, bucket) for batch in (1, 2) for bucket in used}
    finally:
        engine.shutdown()


def test_stop_during_prefill_ends_without_decoding(settings):
    """A request stopped while its prompt is still being prefilled stops there, keeps the prefix KV."""
    engine = Engine.load(replace(settings, max_batch=2, prefill_chunk_tokens=8))
    engine.runner.solo_pass_tokens = 8  # chunks of 8 tokens even with nothing else decoding
    try:
        original = engine.runner.prefill_chunk
        chunks = []

        def counting(seq, limit=None):
            before = seq.cursor
            done = original(seq, limit)
            if seq.cursor > before:  # a text chunk (the calls before it run the encoder)
                chunks.append(seq.cursor)
                if len(chunks) == 2:
                    seq.handle.cancel()  # Stop pressed between two chunks
            return done

        engine.runner.prefill_chunk = counting
        pic = load_image(make_picture(31))
        result = engine.generate(
            GenerationRequest(
                [Message("user", "Describe this. " * 10, [pic])], SamplingParams.greedy(20), session_id="cut"
            )
        )
        assert result.finish_reason == "cancelled" and result.usage.completion_tokens == 0
        assert len(chunks) == 2  # no chunk after the stop
        kept = engine.sessions.get("cut").kv
        assert kept is not None and len(kept.keys) == 16  # the two prefilled chunks stay reusable
    finally:
        engine.shutdown()
