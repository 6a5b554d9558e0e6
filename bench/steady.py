"""Steady-state decode through the engine (`bench.load --steady`, `bench.profile_decode`): N text-only
requests of about P prompt tokens decoding together, tokens counted only in the window after the last
prompt's first token and before the first stream ends, so that the decode step is measured apart
from prefill and scheduling."""

from __future__ import annotations

import json
import statistics
import time


def filler_prompt(tokenizer, index: int, tokens: int) -> str:
    """A distinct text of about `tokens` tokens (no two streams share a prefix beyond the template)."""
    from glm_vision.engine.prompt import repeated_to_length

    sentence = f"Document {index} describes window {index} of the desktop, its buttons, labels and icons. "
    return f"Stream {index}. " + repeated_to_length(tokenizer, sentence, tokens)


def steady_level(engine, streams: int, prompt_tokens: int, tokens: int) -> dict:
    """`streams` text-only requests decoding together; the decode rate in the window where all of them
    decode: after the last one's first token, until the first one's last (the engine's per-token
    bookkeeping is timed on its own thread)."""
    from glm_vision.backend import GenerationRequest, SamplingParams
    from glm_vision.conversation import Message

    runner = engine.runner
    seen: list[tuple[float, int]] = []
    original = runner.accept

    def accept(seq, token_id, emit):
        seen.append((time.perf_counter(), id(seq)))
        return original(seq, token_id, emit)

    runner.accept = accept
    try:
        requests = [
            GenerationRequest(
                [Message("user", filler_prompt(runner.tokenizer, i, prompt_tokens))],
                SamplingParams(max_new_tokens=tokens, min_new_tokens=tokens),
            )
            for i in range(streams)
        ]
        handles = [engine.submit(r) for r in requests]
        results = [h.wait() for h in handles]
    finally:
        runner.accept = original
    first, last = {}, {}
    for at, seq in seen:
        first.setdefault(seq, at)
        last[seq] = at
    start, end = max(first.values()), min(last.values())
    window = sum(1 for at, _ in seen if start < at <= end)
    span = end - start
    return {
        "steady_streams": streams,
        "prompt_tokens": statistics.median(r.usage.prompt_tokens for r in results),
        "window_s": span,
        "window_tokens": window,
        "step_ms": 1000 * span / (window / streams) if window else None,
        "aggregate_tok_s": window / span if span > 0 else None,
        "per_stream_tok_s": window / streams / span if span > 0 else None,
    }


def measure_steady(engine, args) -> list[dict]:
    """The steady-state decode levels (`--steady`)."""
    results = []
    for streams in [int(n) for n in args.steady.split(",") if n]:
        result = steady_level(engine, streams, args.steady_prompt, args.steady_tokens)
        result.update(attention=engine.settings.decode_attention)
        results.append(result)
        print(json.dumps(result), flush=True)
    return results
