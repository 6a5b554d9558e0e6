"""The request's generation options -> `SamplingParams`; options this server cannot honour are a
400 that names them (never silently ignored)."""

from __future__ import annotations

from typing import Any

from ..backend import SamplingParams
from .errors import APIError
from .messages import clean_text
from .schemas import ChatCompletionRequest

PASSED_THROUGH = ("temperature", "top_p", "top_k", "repetition_penalty", "seed")


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    if body.n not in (None, 1):
        raise APIError(400, "n must be 1: this server generates one choice per request", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) not in (None, 0, 0.0):
            raise APIError(400, f"{name} is not supported; use repetition_penalty (e.g. 1.1)", param=name)
    if body.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    if body.tools:
        raise APIError(400, "tools are not supported: this server has no tool calling", param="tools")


def max_new_tokens(body: ChatCompletionRequest, settings) -> int:
    max_new = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_new is None:
        return settings.max_new_tokens
    if max_new < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_new}", param="max_tokens")
    if max_new > settings.max_context_tokens:
        raise APIError(400, f"max_tokens is {max_new}, past the context limit of {settings.max_context_tokens} tokens "
                       "(prompt and answer together)", param="max_tokens", code="context_length_exceeded")
    return max_new


def build_sampling(body: ChatCompletionRequest, settings) -> SamplingParams:
    refuse_unsupported(body)
    kwargs: dict[str, Any] = {name: getattr(body, name) for name in PASSED_THROUGH if getattr(body, name) is not None}
    if body.min_tokens is not None:
        kwargs["min_new_tokens"] = body.min_tokens
    if kwargs.get("top_k") == -1:  # vLLM's and SGLang's spelling of "off"
        kwargs["top_k"] = 0
    kwargs["max_new_tokens"] = max_new_tokens(body, settings)
    if body.stop is not None:
        kwargs["stop"] = tuple(clean_text(s) for s in ((body.stop,) if isinstance(body.stop, str) else body.stop))
    return SamplingParams(**kwargs)  # raises EngineError (400) on out-of-range values
