"""A finished or streaming generation in OpenAI's response shapes."""

from __future__ import annotations

import json
from json.encoder import encode_basestring as _json_string  # what json.dumps(ensure_ascii=False) writes for a str

from ..backend import AnswerDelta, AnswerSplitter, Choice, ChoiceEnd, GenerationResult
from ..conversation import split_output
from ..grounding import ImageSlot, find_groundings, resolve
from ..tool_calls import parse_tool_calls
from .schemas import ChatCompletion
from .tool_stream import ToolDeltas
from .tools import ToolPlan, answer_with_calls

NO_TOOLS = ToolPlan(tools=[], choice="none", parallel=True)


def finish_reason(result: GenerationResult | Choice) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def logprobs_body(entries) -> dict:
    """OpenAI's `logprobs` object of a choice or a chunk: every generated token, reasoning included."""
    return {"content": [entry.to_openai() for entry in entries], "refusal": None}


def grounding_body(choice: Choice, plan: ToolPlan, images: list[ImageSlot]) -> list[dict]:
    """The `grounding` extension of a choice: its boxes and points on the images they are about, in
    pixels; spans in the message's `content` (the answer without its tool calls)."""
    if not images:
        return []
    answer = split_output(choice.text).raw_answer  # box markers kept: they say what is a box
    if plan.active:
        answer = parse_tool_calls(answer, plan.tools).content
    return [annotation.to_json() for annotation in resolve(find_groundings(answer), images)]


def choice_body(choice: Choice, plan: ToolPlan, images: list[ImageSlot] | None = None) -> dict:
    parsed = split_output(choice.text)
    fields, finish = answer_with_calls(parsed.answer, finish_reason(choice), plan)
    message = {
        "role": "assistant",
        **fields,
        "reasoning_content": parsed.reasoning or None,
        "grounding": grounding_body(choice, plan, images or []) or None,
    }
    logprobs = logprobs_body(choice.logprobs) if choice.logprobs is not None else None
    return {"index": choice.index, "message": message, "finish_reason": finish, "logprobs": logprobs}


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


def completion(
    result: GenerationResult,
    completion_id: str,
    created: int,
    model: str,
    plan: ToolPlan = NO_TOOLS,
    images: list[ImageSlot] | None = None,
) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": completion_id,
            "created": created,
            "model": model,
            "choices": [choice_body(choice, plan, images) for choice in result.choices],
            "usage": usage_body(result),
            "timings": timings_body(result),
        }
    )


def to_json(payload) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def sse(payload: dict | str) -> str:
    """One server-sent event."""
    data = payload if isinstance(payload, str) else to_json(payload)
    return f"data: {data}\n\n"


class ChunkWriter:
    """The chat.completion.chunk events of one streamed answer: `events` turns each of the backend's
    events (text deltas, a choice's end, the result) into the server-sent chunks they make."""

    def __init__(
        self,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool,
        plan: ToolPlan = NO_TOOLS,
        images: list[ImageSlot] | None = None,
        logprobs: bool = False,
    ) -> None:
        self.head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self.include_usage = include_usage
        self.logprobs = logprobs
        self.splitter = AnswerSplitter()
        self.finished: set[int] = set()  # choices closed by their ChoiceEnd (n > 1)
        # every chunk is the same head and tail around its one choice: encoded once (one chunk per token
        # per stream runs on the API's event loop)
        self._before_choice = "data: " + to_json(self.head)[:-1] + ',"choices":['
        self._after_choice = "]" + (',"usage":null' if include_usage else "") + "}\n\n"
        self.plan = plan
        self.images = images or []  # what the answer's boxes can be on (grounding extension)
        self.tool_deltas: dict[int, ToolDeltas] = {}

    def events(self, event) -> str:
        """The chunks one backend event makes, as one string (empty while its text is held back)."""
        return "".join(chunk for item in self.splitter.feed(event) for chunk in self._chunks_of(item))

    def _chunks_of(self, item: AnswerDelta | ChoiceEnd | GenerationResult) -> list[str]:
        if isinstance(item, AnswerDelta):
            return self.answer(item)
        if isinstance(item, ChoiceEnd):
            self.finished.add(item.choice.index)
            return self.finish(item.choice)
        chunks = [
            chunk for choice in item.choices if choice.index not in self.finished for chunk in self.finish(choice)
        ]
        return chunks + ([self.usage(item)] if self.include_usage else [])

    def answer_deltas(self, item: AnswerDelta) -> list[dict]:
        """The answer text of a delta as OpenAI delta fields (tool calls parsed out when there are tools)."""
        if not self.plan.active:
            return [{"content": item.answer}] if item.answer else []
        return self.tool_deltas.setdefault(item.index, ToolDeltas(self.plan)).feed(item.answer)

    def finish(self, choice: Choice) -> list[str]:
        """A choice's last chunks: text its tool parser held back, then the finish reason (with the
        choice's `grounding`, once, when it has boxes or points)."""
        finish = finish_reason(choice)
        grounding = grounding_body(choice, self.plan, self.images)
        last = {"grounding": grounding} if grounding else {}
        tools = self.tool_deltas.get(choice.index)
        if tools is None:
            return [self.delta(last, finish, index=choice.index)]
        chunks = [self.delta(part, index=choice.index) for part in tools.flush()]
        return chunks + [self.delta(last, tools.finish_reason(finish), index=choice.index)]

    def delta(self, delta: dict, finish: str | None = None, *, index: int = 0, logprobs=None) -> str:
        if finish is None and logprobs is None and len(delta) == 1:
            ((field, value),) = delta.items()
            if isinstance(value, str):  # the common chunk, a piece of text, without building and walking dicts
                choice = f'{{"index":{index},"delta":{{"{field}":{_json_string(value)}}},"logprobs":null,"finish_reason":null}}'
                return self._before_choice + choice + self._after_choice
        choice = {
            "index": index,
            "delta": delta,
            "logprobs": logprobs_body(logprobs) if logprobs is not None else None,
            "finish_reason": finish,
        }
        return self._before_choice + to_json(choice) + self._after_choice

    def answer(self, item: AnswerDelta) -> list[str]:
        """The chunks of one answer delta: reasoning, then content; its tokens' logprobs ride on the last."""
        logprobs = self.logprobs
        parts = ([{"reasoning_content": item.reasoning}] if item.reasoning else []) + self.answer_deltas(item)
        if logprobs and item.logprobs and not parts:
            parts = [{"content": ""}]  # tokens that wrote no visible text (`</think>`): their logprobs still go out
        chunks = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            chunks.append(self.delta(part, index=item.index, logprobs=item.logprobs if (logprobs and last) else None))
        return chunks

    def usage(self, result: GenerationResult) -> str:
        return sse(dict(self.head, choices=[], usage=usage_body(result)))
