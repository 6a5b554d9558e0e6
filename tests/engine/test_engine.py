"""Engine behaviour: streaming, stop, limits, loading errors, cache budgets and session lifetimes."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from glm_vision.backend import (
    ContextOverflowError,
    EngineError,
    GenerationRequest,
    GenerationResult,
    ModelLoadError,
    QueueFullError,
    SamplingParams,
    TextDelta,
)
from glm_vision.conversation import Message
from glm_vision.engine import Engine
from glm_vision.engine.cache import FeatureCache, ImageFeatures, reusable_prefix
from glm_vision.engine.loader import load_model
from glm_vision.engine.sessions import KVState, SessionStore
from glm_vision.settings import Settings


def test_stream_deltas_add_up_to_the_result(engine, pictures):
    handle = engine.submit(
        GenerationRequest([Message("user", "Describe 图片", [pictures[0]])], SamplingParams.greedy(40))
    )
    deltas, result = [], None
    for item in handle:
        if isinstance(item, TextDelta):
            deltas.append(item.text)
        else:
            result = item
    assert isinstance(result, GenerationResult)
    assert "".join(deltas) == result.text
    tokenizer = engine.runner.tokenizer
    assert result.text == tokenizer.decode(list(result.token_ids), skip_special_tokens=False)
    assert result.usage.completion_tokens == len(result.token_ids)
    assert result.usage.ttft_s > 0 and result.usage.prompt_tokens > 0


def cancel_after_deltas(engine, count: int):
    """Press Stop from the worker thread itself right after a request's `count`-th delta, so the test
    measures the engine's reaction (within one step), not how fast the consuming thread runs."""
    original = engine.scheduler.emit
    seen = {}
    tokens_at_stop = []

    def emit(seq, text):
        original(seq, text)
        seen[id(seq)] = seen.get(id(seq), 0) + 1
        if seen[id(seq)] == count:
            seq.handle.cancel()
            tokens_at_stop.append(len(seq.generated))

    engine.scheduler.emit = emit
    return tokens_at_stop, lambda: setattr(engine.scheduler, "emit", original)


def test_stop_halts_generation_within_a_step(engine, pictures):
    messages = [Message("user", "Describe.", [pictures[1]])]
    long = SamplingParams.greedy(300, min_new_tokens=300)  # stop ids held back: it runs long unless stopped
    full = engine.generate(GenerationRequest(messages, long))
    assert full.finish_reason == "length" and full.usage.completion_tokens == 300
    tokens_at_stop, restore = cancel_after_deltas(engine, 3)
    try:
        result = engine.generate(GenerationRequest(messages, long))
    finally:
        restore()
    assert result.finish_reason == "cancelled"
    assert result.usage.completion_tokens == tokens_at_stop[0]  # no token after the one being shown when Stop came
    assert full.text.startswith(result.text)  # what was written is kept


def test_stop_strings_end_the_answer(engine, pictures):
    messages = [Message("user", "Describe.", [pictures[0]])]
    full = engine.generate(GenerationRequest(messages, SamplingParams.greedy(30)))
    stop = full.text[10:13]
    assert stop.strip(), "the tiny model's output should have text to stop on"
    result = engine.generate(GenerationRequest(messages, SamplingParams.greedy(30, stop=(stop,))))
    assert result.finish_reason == "stop"
    assert result.text == full.text[: full.text.index(stop)]


def test_context_overflow_is_refused_before_gpu_work(settings, pictures):
    engine = Engine.load(replace(settings, max_context_tokens=64))
    try:
        lookups_before = engine.features.stats.misses + engine.features.stats.hits
        with pytest.raises(ContextOverflowError, match="context limit is 64"):
            engine.generate(GenerationRequest([Message("user", "x " * 100, [pictures[0]])], session_id="s"))
        assert engine.features.stats.misses + engine.features.stats.hits == lookups_before  # nothing encoded
        ok = engine.generate(GenerationRequest([Message("user", "hi")], SamplingParams.greedy(200)))
        assert ok.usage.prompt_tokens + ok.usage.completion_tokens <= 64  # the answer is clamped to the context
    finally:
        engine.shutdown()


def test_bad_requests_are_refused_with_messages(engine, pictures):
    with pytest.raises(EngineError, match="empty"):
        engine.submit(GenerationRequest([]))
    with pytest.raises(EngineError, match="last message must come from the user"):
        engine.submit(GenerationRequest([Message("user", "a"), Message("assistant", "b")]))
    with pytest.raises(EngineError, match="at most 8 images"):
        engine.submit(GenerationRequest([Message("user", "many", [pictures[0]] * 9)]))
    with pytest.raises(EngineError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(EngineError, match="temperature"):
        SamplingParams(temperature=-1)


def test_queue_limit_answers_busy_and_the_worker_survives(settings):
    engine = Engine.load(replace(settings, queue_size=1, max_batch=1))
    try:
        long = GenerationRequest([Message("user", "hello")], SamplingParams.greedy(400))  # runs to the limit
        first = engine.submit(long)
        deadline = time.monotonic() + 30
        while first.queue_position != 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until the worker has taken it
        second = engine.submit(long)  # waits in the queue
        assert second.queue_position == 1
        with pytest.raises(QueueFullError) as exc:
            engine.submit(long)
        assert exc.value.retry_after_s >= 1 and exc.value.status == 429
        second.cancel()
        first.cancel()
        assert first.wait().finish_reason == "cancelled"
        with pytest.raises(EngineError, match="cancelled before it started"):
            second.wait()
        assert (
            engine.generate(
                GenerationRequest([Message("user", "hi")], SamplingParams.greedy(3))
            ).usage.completion_tokens
            > 0
        )
    finally:
        engine.shutdown()


def test_a_failing_request_does_not_kill_the_worker(engine, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(engine.runner, "prefill_chunk", boom)
    with pytest.raises(EngineError, match="simulated fault"):
        engine.generate(GenerationRequest([Message("user", "hi")], SamplingParams.greedy(3)))
    monkeypatch.undo()
    assert engine.worker.alive
    assert (
        engine.generate(GenerationRequest([Message("user", "hi")], SamplingParams.greedy(3))).usage.completion_tokens
        > 0
    )


def test_a_dead_worker_is_restarted(settings):
    engine = Engine.load(settings)
    try:
        engine.worker.stop()
        assert not engine.worker.alive and not engine.healthy
        result = engine.generate(GenerationRequest([Message("user", "hi")], SamplingParams.greedy(3)))
        assert result.usage.completion_tokens > 0 and engine.worker.alive
    finally:
        engine.shutdown()


def test_async_iteration(engine):
    import asyncio

    async def collect():
        return [
            item
            async for item in engine.submit(GenerationRequest([Message("user", "hello")], SamplingParams.greedy(10)))
        ]

    items = asyncio.run(collect())
    assert isinstance(items[-1], GenerationResult)
    assert "".join(i.text for i in items[:-1]) == items[-1].text


# ---------------------------------------------------------------- loading errors
def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist.*huggingface-cli download"):
        load_model(Settings(model=str(tmp_path / "nope"), device="cpu"))


def test_non_model_directory_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a model directory: it has no config.json"):
        load_model(Settings(model=str(tmp_path), device="cpu"))


def test_other_architectures_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelLoadError, match="GLM-4.6V / GLM-4.1V family"):
        load_model(Settings(model=str(tmp_path), device="cpu"))


def test_cli_reports_load_errors_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "app.py", "--model", str(tmp_path), "--prompt", "hi"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 3
    assert "not a model directory" in out.stderr and "Traceback" not in out.stderr


def test_cli_answers_one_prompt(tiny_model_dir, tmp_path):
    from tests.conftest import make_picture

    make_picture(5).save(tmp_path / "shot.png")
    out = subprocess.run(
        [
            sys.executable,
            "app.py",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--prompt",
            "What is this?",
            "--image",
            str(tmp_path / "shot.png"),
            "--max-new-tokens",
            "8",
            "--no-thinking",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "8 new tokens" in out.stderr


# ---------------------------------------------------------------- caches and sessions
def features(n_tokens: int, hidden: int = 16) -> ImageFeatures:
    return ImageFeatures(embeds=torch.zeros(n_tokens, hidden), grid_thw=(1, 2, 2 * n_tokens))


def test_feature_cache_is_lru_bounded_in_bytes():
    one = features(4).nbytes
    cache = FeatureCache(budget_bytes=3 * one)
    for key in "abc":
        cache.put("s", key, features(4))
    assert cache.get("s", "a") is not None  # a is now the most recent
    cache.put("s", "d", features(4))
    assert cache.get("s", "b") is None and cache.get("s", "a") is not None
    assert cache.bytes_used <= 3 * one and cache.stats.evictions == 1
    assert cache.get("other", "a") is None  # scopes never share
    cache.put("s", "huge", features(100))  # bigger than the whole budget: not stored
    assert cache.get("s", "huge") is None and cache.bytes_used <= 3 * one


def test_reusable_prefix_never_ends_inside_an_image():
    cached = [1, 2, "img", "img", "img", 3, 9]
    assert reusable_prefix(cached, [1, 2, "img", "img", "img", 3, 4, 5]) == 6
    assert reusable_prefix(cached, [1, 2, "IMG", "IMG", "IMG", 3, 4]) == 2  # another image: back to its start
    assert reusable_prefix([1, 2, "img", "img"], [1, 2, "img", "img", "img", 3]) == 2  # cache ends mid-image
    assert reusable_prefix([1, 2, 3, 4], [1, 2, 3]) == 2  # all cached: one token still computed for its logits
    assert reusable_prefix([], [1, 2]) == 0


def test_sessions_idle_timeout_count_limit_and_kv_budget():
    cache = FeatureCache(budget_bytes=1 << 20)
    store = SessionStore(cache, kv_budget_bytes=1000, idle_s=60, max_sessions=2)
    a = store.acquire("a")
    a.kv = KVState(saved=None, keys=list(range(60)), bytes_per_token=10)  # 600 bytes
    cache.put("a", "k", features(2))
    store.release(a)
    b = store.acquire("b")
    b.kv = KVState(saved=None, keys=list(range(60)), bytes_per_token=10)
    store.release(b)  # 1200 > 1000: the older session's KV goes, b keeps its own
    assert a.kv is None and b.kv is not None and store.kv_evictions == 1
    store.acquire("c")  # a third session over max_sessions=2: the least recently used is freed
    assert store.get("a") is None and cache.scope_bytes("a") == 0
    assert store.sweep_idle(now=time.monotonic() + 3600) == ["b"]  # c is busy, b idles out
    assert store.get("b") is None and store.get("c") is not None


def test_evicted_kv_is_recomputed_correctly(settings, reference, pictures):
    """After its KV was evicted for the budget, a session's next turn recomputes and stays correct."""
    from tests.reference import history_text, reference_generate

    model, processor = reference
    engine = Engine.load(replace(settings, kv_cache_mb=0))  # every KV is over budget: always evicted
    try:
        history = [Message("user", "What is this?", [pictures[0]])]
        first = engine.generate(GenerationRequest(history, SamplingParams.greedy(8), session_id="tight"))
        history += [Message("assistant", history_text(first.text)), Message("user", "Again?", [pictures[1]])]
        second = engine.generate(GenerationRequest(history, SamplingParams.greedy(8), session_id="tight"))
        assert second.usage.cached_tokens == 0
        assert list(second.token_ids) == reference_generate(model, processor, history, 8)[0]
    finally:
        engine.shutdown()


def test_min_new_tokens_suppresses_stop_tokens(engine, pictures):
    # A conversation on which the random tiny model stops by itself (which one depends on the random
    # weights): greedy, so the forced run must repeat it and then go on past the stop.
    candidates = [[Message("user", "Describe.", [picture])] for picture in pictures] + [[Message("user", "1 2 3")]]
    for messages in candidates:
        natural = engine.generate(GenerationRequest(messages, SamplingParams.greedy(300)))
        if natural.finish_reason == "stop":
            break
    assert natural.finish_reason == "stop" and natural.usage.completion_tokens < 300
    forced = engine.generate(GenerationRequest(messages, SamplingParams.greedy(300, min_new_tokens=300)))
    assert forced.finish_reason == "length" and forced.usage.completion_tokens == 300
    assert forced.token_ids[: natural.usage.completion_tokens] == natural.token_ids


def test_no_autograd_history_is_kept(engine, pictures):
    """Cached features and saved KV must not hold an autograd graph (it would keep every activation alive)."""
    engine.generate(
        GenerationRequest([Message("user", "Describe.", [pictures[2]])], SamplingParams.greedy(4), session_id="grad")
    )
    session = engine.sessions.get("grad")
    assert session.kv.saved.keys.grad_fn is None and not session.kv.saved.keys.requires_grad
    entries = [f for (scope, _), f in engine.features._entries.items() if scope == "grad"]
    assert entries and all(f.embeds.grad_fn is None and not f.embeds.requires_grad for f in entries)
    assert not any(p.requires_grad for p in engine.loaded.model.parameters())


def test_sampler_follows_top_k_and_top_p():
    """The draw only ever picks among the top-k tokens, and top-p cuts that set further."""
    from glm_vision.engine.sampling import BatchSampler, SamplerState

    def sampler(params, prompt_ids):
        state, batch = SamplerState(params, 6, "cpu", prompt_ids), BatchSampler("cpu")
        return lambda logits: int(batch(logits[None], [state])[0])

    logits = torch.tensor([0.0, 5.0, 4.9, 1.0, 4.8, -2.0])
    picks = set()
    top_k = sampler(SamplingParams(temperature=1.0, top_k=3, top_p=1.0, repetition_penalty=1.0, seed=0), [])
    for _ in range(200):
        picks.add(top_k(logits))
    assert picks == {1, 2, 4}
    nucleus = sampler(SamplingParams(temperature=1.0, top_k=3, top_p=0.3, repetition_penalty=1.0, seed=0), [])
    assert {nucleus(logits) for _ in range(100)} == {1}  # token 1 alone holds more than 30 % of the mass
    greedy = sampler(SamplingParams(temperature=0, repetition_penalty=1.5, max_new_tokens=5), [1])
    assert greedy(logits) == 2  # token 1 was seen: 5.0 / 1.5 < 4.9


def test_planless_prefill_attention_equals_grouped_sdpa():
    """The GPU's prefill attention (flash / memory-efficient backends, key and value heads copied per
    query head under a prefix mask; or the lower-right causal bias) computes what grouped-query SDPA
    with an explicit mask does, with and without a prefix."""
    from glm_vision.engine.prefill_attention import lower_right_works, prefill_attention

    g = torch.Generator().manual_seed(0)
    heads, kv, d, T, start = 8, 2, 16, 5, 7
    end = start + T
    q = torch.randn(heads, T, d, generator=g)
    keys, values = torch.randn(kv, end, d, generator=g), torch.randn(kv, end, d, generator=g)
    causal = torch.arange(end)[None, :] <= (start + torch.arange(T))[:, None]
    explicit = torch.nn.functional.scaled_dot_product_attention(
        q[None], keys[None], values[None], attn_mask=causal, scale=0.25, enable_gqa=True
    )[0]
    for first, k, v in ((start, keys, values), (0, keys[:, :T], values[:, :T])):
        grouped = prefill_attention(q, k, v, first, 0.25, planless=False)
        for lower_right in (False, True):
            planless = prefill_attention(q, k, v, first, 0.25, planless=True, lower_right=lower_right)
            assert planless.shape == (heads, T, d)
            torch.testing.assert_close(planless, grouped, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prefill_attention(q, keys, values, start, 0.25, planless=False), explicit)
    assert lower_right_works(torch.device("cpu"), torch.float32)
    # the copies pair query head h with key head h // (heads // kv): a wrong pairing is caught
    swapped = prefill_attention(q, keys.flip(0), values.flip(0), start, 0.25, planless=True)
    assert not torch.allclose(swapped, prefill_attention(q, keys, values, start, 0.25, planless=False), atol=1e-3)


def test_warm_up_covers_a_pass_longer_than_the_captured_ones(engine, monkeypatch):
    """Where passes are CUDA graphs, warm-up also serves a prompt longer than the longest captured pass
    (its pass runs eagerly on buffers of its own), so its first use is not in a user's request; the
    prompt fits the context."""
    pieces = engine.runner.forward.passes.pieces
    assert engine._longer_than_a_graph_pass() == []  # the CPU runs no graphs: nothing extra to warm
    monkeypatch.setattr(pieces, "use_graphs", True)
    monkeypatch.setattr(pieces, "capacity", 1024)
    (message,) = engine._longer_than_a_graph_pass()
    tokens = len(engine.runner.build_prompt(GenerationRequest([message])))
    assert 1024 < tokens <= min(engine.runner.solo_pass_tokens, engine.settings.max_context_tokens)  # one pass
    monkeypatch.setattr(pieces, "capacity", engine.settings.max_context_tokens)
    assert engine._longer_than_a_graph_pass() == []  # no room in the context: left out


def test_warm_up_encodes_pictures_of_typical_sizes_and_the_largest_the_context_holds(settings):
    """On a GPU the warm-up encodes a picture of each typical size and one of the largest area allowed (the
    first picture of a size paid its matrix products' first use in a user's request): sizes the context
    cannot hold are left out, and nothing is kept in the caches."""
    from dataclasses import replace

    from glm_vision.engine import Engine

    engine = Engine.load(replace(settings, max_context_tokens=1024))  # room for (1024 - 512) image tokens
    try:
        encoded = engine.warm_picture_sizes([(320, 240), (1920, 1080)])
        assert encoded[0] == (320, 240) and (1920, 1080) not in encoded
        (largest,) = encoded[1:]
        assert 0.95 * 512 * 28 * 28 < largest[0] * largest[1] <= 512 * 28 * 28
        assert engine.features.bytes_used == 0 and len(engine.sessions) == 0
    finally:
        engine.shutdown()
    engine = Engine.load(replace(settings, max_context_tokens=514))  # room for 2 image tokens, 4 the least
    try:
        assert engine.warm_picture_sizes([(320, 240)]) == []  # no room for a picture: none tried
    finally:
        engine.shutdown()
