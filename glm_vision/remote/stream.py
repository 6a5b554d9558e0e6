"""The upstream's streamed chunks relayed to a handle as text deltas.

Reasoning that the upstream returns apart (`reasoning_content`, or `reasoning` in newer vLLM) is
put back between `<think>` and `</think>` in the text, so the thinking split downstream is the same
as for the local model; servers that return the raw `<think>` text work as well.
"""

from __future__ import annotations

import time

from ..backend import GenerationResult, RequestHandle, Usage
from ..conversation import THINK_CLOSE, THINK_OPEN


class Relay:
    """Collects what one request's stream wrote and forwards it to the handle as it comes."""

    def __init__(self, handle: RequestHandle) -> None:
        self.handle = handle
        self.started = time.perf_counter()
        self.usage = Usage(images=sum(len(m.images) for m in handle.request.messages))
        self.parts: list[str] = []
        self.finish_reason = "stop"
        self.first_at: float | None = None
        self.in_reasoning = False

    def emit(self, text: str) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
            self.usage.ttft_s = self.first_at - self.started
        self.parts.append(text)
        self.handle._emit(text)

    def read(self, stream) -> None:
        for chunk in stream:
            if self.handle.cancelled.is_set():
                break
            if chunk.usage is not None:
                self.take_usage(chunk.usage)
            for choice in chunk.choices:
                self.take_delta(choice.delta)
                if choice.finish_reason:
                    self.finish_reason = "length" if choice.finish_reason == "length" else "stop"
        if self.in_reasoning and self.finish_reason == "stop":
            self.emit(THINK_CLOSE)

    def take_usage(self, usage) -> None:
        self.usage.prompt_tokens = usage.prompt_tokens or 0
        self.usage.completion_tokens = usage.completion_tokens or 0
        details = usage.prompt_tokens_details
        self.usage.cached_tokens = (details.cached_tokens or 0) if details is not None else 0

    def take_delta(self, delta) -> None:
        extra = delta.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        if reasoning:
            if not self.in_reasoning:
                self.emit(THINK_OPEN)
                self.in_reasoning = True
            self.emit(reasoning)
        if delta.content:
            if self.in_reasoning:
                self.emit(THINK_CLOSE + "\n")
                self.in_reasoning = False
            self.emit(delta.content)

    def result(self) -> GenerationResult:
        """What was written so far: the whole answer, or the part before a cancel."""
        finish = "cancelled" if self.handle.cancelled.is_set() else self.finish_reason
        if self.first_at is not None:
            self.usage.decode_s = time.perf_counter() - self.first_at
        if not self.usage.completion_tokens:
            self.usage.completion_tokens = len(self.parts)  # a server that sent no usage: count the chunks
        return GenerationResult(text="".join(self.parts), finish_reason=finish, usage=self.usage, token_ids=())
