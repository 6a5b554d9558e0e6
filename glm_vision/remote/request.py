"""A `GenerationRequest` as the keyword arguments of an OpenAI chat-completions call."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections import OrderedDict

from ..backend import GenerationRequest, OutputConstraint
from ..conversation import Message
from ..images import InputImage

PNG_CACHE_SIZE = 32


class ImageURLs:
    """Pictures as PNG data URLs, the last few kept so a conversation's images are encoded once."""

    def __init__(self, size: int = PNG_CACHE_SIZE) -> None:
        self._urls: OrderedDict[str, str] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def url(self, image: InputImage) -> str:
        with self._lock:
            cached = self._urls.get(image.digest)
            if cached is not None:
                self._urls.move_to_end(image.digest)
                return cached
        buffer = io.BytesIO()
        image.image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        with self._lock:
            self._urls[image.digest] = url
            while len(self._urls) > self._size:
                self._urls.popitem(last=False)
        return url


def openai_message(message: Message, urls: ImageURLs) -> dict:
    """One message in OpenAI's shape: images as data URLs, tool calls with JSON-string arguments."""
    content: str | list = message.text
    if message.images:
        content = [{"type": "image_url", "image_url": {"url": urls.url(image)}} for image in message.images]
        content.append({"type": "text", "text": message.text})
    converted = {"role": message.role, "content": content}
    if message.tool_calls:
        converted["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
            for call in message.tool_calls
        ]
    if message.role == "tool":
        converted["tool_call_id"] = message.tool_call_id
    return converted


def openai_messages(messages: list[Message], urls: ImageURLs) -> list[dict]:
    return [openai_message(message, urls) for message in messages]


def completion_kwargs(request: GenerationRequest, model: str, urls: ImageURLs) -> dict:
    """A streamed call; top_k, repetition_penalty, thinking, its budget and the choice / regex / grammar
    constraints go in vLLM's extension fields (SGLang reads the same names or ignores them)."""
    sampling = request.sampling
    kwargs = dict(
        model=model,
        messages=openai_messages(request.messages, urls),
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "repetition_penalty": sampling.repetition_penalty,
            "chat_template_kwargs": {"enable_thinking": request.enable_thinking},
        },
    )
    if sampling.seed is not None:
        kwargs["seed"] = sampling.seed
    if sampling.stop:
        kwargs["stop"] = list(sampling.stop)
    if sampling.logprobs:
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = sampling.top_logprobs
    if request.n != 1:
        kwargs["n"] = request.n
    if request.thinking_budget is not None:
        kwargs["extra_body"]["thinking_token_budget"] = request.thinking_budget
    if request.constraint is not None:
        kwargs.update(constraint_kwargs(request.constraint, kwargs["extra_body"]))
    if request.tools:
        kwargs["tools"] = request.tools
        kwargs["tool_choice"] = request.tool_choice
    return kwargs


def constraint_kwargs(constraint: OutputConstraint, extra_body: dict) -> dict:
    """JSON as OpenAI's response_format; choice, regex and grammar as vLLM's `structured_outputs`. An enforced
    tool call is the upstream's to enforce: `tools` and `tool_choice` go as they are (`completion_kwargs`)."""
    if constraint.kind == "tool_call":
        return {}
    if constraint.kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if constraint.kind == "json_schema":
        schema = {"name": constraint.name or "response", "schema": json.loads(constraint.spec), "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    value = list(constraint.choices) if constraint.kind == "choice" else constraint.spec
    extra_body["structured_outputs"] = {constraint.kind: value}
    return {}
