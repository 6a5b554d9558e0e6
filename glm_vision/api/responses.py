"""A finished or streaming generation in OpenAI's response shapes."""

from __future__ import annotations

import json

from ..backend import GenerationResult
from ..conversation import split_output
from .schemas import ChatCompletion


def finish_reason(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def usage_body(result: GenerationResult) -> dict:
    u = result.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def timings_body(result: GenerationResult) -> dict:
    u = result.usage
    return {
        "queue_ms": round(u.queue_s * 1000, 2),
        "ttft_ms": round(u.ttft_s * 1000, 2),
        "decode_tokens_per_s": round(u.decode_tokens_per_s, 2),
        "images": u.images,
        "image_cache_hits": u.image_cache_hits,
    }


def completion(result: GenerationResult, completion_id: str, created: int, model: str) -> ChatCompletion:
    parsed = split_output(result.text)
    message = {"role": "assistant", "content": parsed.answer, "reasoning_content": parsed.reasoning or None}
    return ChatCompletion.model_validate({
        "id": completion_id,
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(result)}],
        "usage": usage_body(result),
        "timings": timings_body(result),
    })


def sse(payload: dict | str) -> str:
    """One server-sent event."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


class ChunkWriter:
    """The chat.completion.chunk events of one streamed answer."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self.include_usage = include_usage

    def delta(self, delta: dict, finish: str | None = None) -> str:
        payload = dict(self.head, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        if self.include_usage:
            payload["usage"] = None
        return sse(payload)

    def usage(self, result: GenerationResult) -> str:
        return sse(dict(self.head, choices=[], usage=usage_body(result)))
