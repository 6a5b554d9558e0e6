"""The upstream's streamed chunks relayed to a handle as text deltas, choice by choice.

Reasoning that the upstream returns apart (`reasoning_content`, or `reasoning` in newer vLLM) is
put back between `<think>` and `</think>` in the text, so the thinking split downstream is the same
as for the local model; servers that return the raw `<think>` text work as well. Token logprobs
(`choices[i].logprobs.content`) and the choice index (n > 1) are passed on unchanged.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..backend import Choice, GenerationResult, RequestHandle, TokenLogprob, Usage
from ..conversation import THINK_CLOSE, THINK_OPEN
from ..tool_calls import call_text


@dataclass
class _ChoiceState:
    parts: list[str] = field(default_factory=list)
    finish_reason: str = "stop"
    in_reasoning: bool = False
    logprobs: list[TokenLogprob] | None = None
    calls: dict[int, list] = field(default_factory=dict)  # call index -> [name, argument fragments]
    closed: bool = False  # its finish reason came: everything of it has been emitted


class Relay:
    """Collects what one request's stream wrote and forwards it to the handle as it comes."""

    def __init__(self, handle: RequestHandle) -> None:
        self.handle = handle
        self.started = time.perf_counter()
        self.usage = Usage(images=sum(len(m.images) for m in handle.request.messages))
        wants_logprobs = handle.request.sampling.logprobs
        self.choices = [_ChoiceState(logprobs=[] if wants_logprobs else None) for _ in range(handle.request.n)]
        self.first_at: float | None = None
        self.chunks = 0

    def emit(self, index: int, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
            self.usage.ttft_s = self.first_at - self.started
        self.choices[index].parts.append(text)
        self.handle._emit(text, index, logprobs)

    def read(self, stream) -> None:
        for chunk in stream:
            if self.handle.cancelled.is_set():
                break
            if chunk.usage is not None:
                self.take_usage(chunk.usage)
            for choice in chunk.choices:
                index = choice.index or 0
                if not 0 <= index < len(self.choices):
                    continue  # more choices than asked for: not ours to report
                self.chunks += 1
                self.take_delta(index, choice.delta, _logprobs(choice))
                if choice.finish_reason:
                    self.close(index, "length" if choice.finish_reason == "length" else "stop")
        for index, state in enumerate(self.choices):
            if not state.closed:  # a stream that ended without a finish reason
                self.close(index, state.finish_reason)

    def close(self, index: int, finish_reason: str) -> None:
        """A choice is done: its pending calls and closing tag are written; with others still running
        (n > 1) it is announced at once."""
        state = self.choices[index]
        if state.closed:
            return
        self.emit_calls(index)
        if state.in_reasoning and finish_reason == "stop":
            self.emit(index, THINK_CLOSE)
            state.in_reasoning = False
        state.finish_reason, state.closed = finish_reason, True
        if not all(other.closed for other in self.choices):
            self.handle._choice_end(self.choice(index))

    def take_usage(self, usage) -> None:
        self.usage.prompt_tokens = usage.prompt_tokens or 0
        self.usage.completion_tokens = usage.completion_tokens or 0
        details = usage.prompt_tokens_details
        self.usage.cached_tokens = (details.cached_tokens or 0) if details is not None else 0

    def take_delta(self, index: int, delta, logprobs: tuple[TokenLogprob, ...]) -> None:
        state = self.choices[index]
        if state.logprobs is not None:
            state.logprobs.extend(logprobs)
        pieces = []
        extra = (delta.model_extra or {}) if delta is not None else {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        if reasoning:
            if not state.in_reasoning:
                pieces.append(THINK_OPEN)
                state.in_reasoning = True
            pieces.append(reasoning)
        if delta is not None and delta.content:
            if state.in_reasoning:
                pieces.append(THINK_CLOSE + "\n")
                state.in_reasoning = False
            pieces.append(delta.content)
        if pieces or logprobs:
            self.emit(index, "".join(pieces), logprobs)
        for call in (delta.tool_calls or []) if delta is not None else []:
            entry = state.calls.setdefault(call.index or 0, [None, []])
            if call.function is not None and call.function.name:
                entry[0] = call.function.name
            if call.function is not None and call.function.arguments:
                entry[1].append(call.function.arguments)

    def emit_calls(self, index: int) -> None:
        """The upstream's structured calls (vLLM's / SGLang's glm45 parser), written back in GLM's
        format, so the answer is read the same way as the local model's."""
        state = self.choices[index]
        if state.in_reasoning and state.calls:
            self.emit(index, THINK_CLOSE + "\n")
            state.in_reasoning = False
        for number in sorted(state.calls):
            name, fragments = state.calls[number]
            try:
                arguments = json.loads("".join(fragments) or "{}")
            except ValueError:
                arguments = {}
            self.emit(index, call_text(name or "", arguments if isinstance(arguments, dict) else {}))
        state.calls.clear()

    def result(self) -> GenerationResult:
        """What was written so far: the whole answer, or the part before a cancel."""
        cancelled = self.handle.cancelled.is_set()
        if self.first_at is not None:
            self.usage.decode_s = time.perf_counter() - self.first_at
        if not self.usage.completion_tokens:
            self.usage.completion_tokens = self.chunks  # a server that sent no usage: count the chunks
        choices = [self.choice(i, cancelled) for i in range(len(self.choices))]
        first = choices[0]
        return GenerationResult(
            text=first.text,
            finish_reason=first.finish_reason,
            usage=self.usage,
            token_ids=(),
            logprobs=first.logprobs,
            extra_choices=tuple(choices[1:]),
        )

    def choice(self, index: int, cancelled: bool = False) -> Choice:
        state = self.choices[index]
        logprobs = tuple(state.logprobs) if state.logprobs is not None else None
        return Choice(index, "".join(state.parts), "cancelled" if cancelled else state.finish_reason, (), logprobs)


def _logprobs(choice) -> tuple[TokenLogprob, ...]:
    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    return tuple(TokenLogprob.from_openai(entry) for entry in content or ())
