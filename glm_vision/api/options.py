"""The request's generation options -> `SamplingParams`, the output constraint, n and the thinking
budget. Options this server cannot honour are a 400 that names them (never silently ignored);
fields it does not know at all are accepted (clients add their own) and logged once."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from ..backend import MAX_CHOICES, EngineError, OutputConstraint, SamplingParams
from ..backend.json_schema import schema_problem
from .errors import APIError
from .messages import clean_text
from .schemas import ChatCompletionRequest

log = logging.getLogger(__name__)

PASSED_THROUGH = ("temperature", "top_p", "top_k", "repetition_penalty", "seed")

# Fields (OpenAI's, or extensions vLLM / SGLang clients send) that would change the answer and that this
# server does not honour: a value other than the harmless ones listed is a 400 naming the field.
NOT_HONOURED: dict[str, tuple[tuple, str]] = {
    "frequency_penalty": ((0, 0.0), "use repetition_penalty (e.g. 1.1)"),
    "presence_penalty": ((0, 0.0), "use repetition_penalty (e.g. 1.1)"),
    "logit_bias": (({},), "token logits cannot be biased"),
    "functions": (([],), "functions is OpenAI's old API; send tools (and tool_choice)"),
    "function_call": (("none",), "function_call is OpenAI's old API; send tools and tool_choice"),
    "audio": ((), "this server answers in text only"),
    "modalities": ((["text"],), "this server answers in text only"),
    "reasoning_effort": ((), "use chat_template_kwargs.enable_thinking or thinking_budget"),
    "verbosity": ((), "ask for the length you want in the prompt"),
    "web_search_options": ((), "this server does not search the web"),
    "prediction": ((), "predicted outputs are not supported"),
    "guided_json": ((), "use response_format or structured_outputs.json (vLLM removed guided_json in 0.12)"),
    "guided_regex": ((), "use structured_outputs.regex (vLLM removed guided_regex in 0.12)"),
    "guided_choice": ((), "use structured_outputs.choice (vLLM removed guided_choice in 0.12)"),
    "guided_grammar": ((), "use structured_outputs.grammar (vLLM removed guided_grammar in 0.12)"),
    "guided_whitespace_pattern": ((), "JSON is always written compactly here"),
    "guided_decoding_backend": ((), "the constraint backend is fixed (xgrammar)"),
    "structural_tag": ((), "use response_format or structured_outputs"),
    "min_p": ((0, 0.0), "use top_p / top_k"),
    "typical_p": ((1, 1.0), "use top_p / top_k"),
    "best_of": ((1,), "use n"),
    "use_beam_search": ((False,), "answers are sampled (temperature 0: greedy), never beam-searched"),
    "length_penalty": ((1, 1.0), "it belongs to beam search, which this server does not do"),
    "ignore_eos": ((False,), "use min_tokens"),
    "bad_words": (([],), "use structured_outputs to shape the answer"),
    "allowed_token_ids": ((), "use structured_outputs"),
    "stop_token_ids": (([],), "use stop"),
    "prompt_logprobs": ((0,), "only the answer's tokens get logprobs (logprobs, top_logprobs)"),
    "echo": ((False,), "the prompt is not sent back"),
    "include_stop_str_in_output": ((False,), "the stop string is always left out of the answer"),
    "skip_special_tokens": ((True,), "special tokens are always left out of the answer"),
    "add_generation_prompt": ((True,), "the assistant turn is always opened"),
    "continue_final_message": ((False,), "the last message must come from the user or a tool"),
    "chat_template": ((), "the model's own chat template is used"),
    "logits_processors": ((), "custom logits processors cannot run here"),
    "truncate_prompt_tokens": ((), "prompts are never truncated"),
    "regex": ((), "use structured_outputs.regex"),  # SGLang's spelling
    "ebnf": ((), "use structured_outputs.grammar"),  # SGLang's spelling
    "json_schema": ((), "use response_format"),  # SGLang's spelling
}
# OpenAI fields that do not change the answer: accepted as they are.
ACCEPTED = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "user",
    "store",
    "metadata",
    "service_tier",
    "parallel_tool_calls",
    "safety_identifier",
    "prompt_cache_key",
    "chat_template_kwargs",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "min_tokens",
    "stop",
    "seed",
    "n",
    "logprobs",
    "top_logprobs",
    "response_format",
    "structured_outputs",
    "thinking_budget",
    "tools",
    "tool_choice",
    "thinking_token_budget",
    "request_id",
    "priority",
}


@dataclass(frozen=True)
class AnswerOptions:
    """What the request asks of the answer beyond sampling."""

    constraint: OutputConstraint | None = None
    n: int = 1
    thinking_budget: int | None = None


class _UnknownFields:
    """Fields nobody here knows: logged once per name, never refused."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def note(self, names) -> None:
        with self.lock:
            fresh = sorted(set(names) - self.seen)
            self.seen.update(fresh)
        for name in fresh:
            log.warning("request field %r is not known here and is ignored (logged once)", name)


UNKNOWN_FIELDS = _UnknownFields()


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    fields = dict(body.model_extra or {})
    fields.update({name: getattr(body, name) for name in type(body).model_fields if name in NOT_HONOURED})
    for name, value in fields.items():
        if name in NOT_HONOURED and value is not None:
            harmless, hint = NOT_HONOURED[name]
            if value not in harmless:
                raise APIError(400, f"{name} is not supported here: {hint}; {_allowed(harmless)}", param=name)
    UNKNOWN_FIELDS.note(name for name in fields if name not in NOT_HONOURED and name not in ACCEPTED)


def _allowed(harmless: tuple) -> str:
    """What such a field may be sent as: left out, or one of its harmless values."""
    distinct = [v for i, v in enumerate(harmless) if v not in harmless[:i]]  # 0 and 0.0 are one value
    values = [json.dumps(value) for value in distinct]
    return "leave it out" + (f" or send {' or '.join(values)}" if values else "")


def max_new_tokens(body: ChatCompletionRequest, settings) -> int:
    max_new = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_new is None:
        return settings.max_new_tokens
    if max_new < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_new}", param="max_tokens")
    if max_new > settings.max_context_tokens:
        raise APIError(
            400,
            f"max_tokens is {max_new}, past the context limit of {settings.max_context_tokens} tokens "
            "(prompt and answer together)",
            param="max_tokens",
            code="context_length_exceeded",
        )
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
    if body.logprobs:
        kwargs["logprobs"] = True
    if body.top_logprobs is not None:
        if not body.logprobs and body.top_logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        kwargs["top_logprobs"] = body.top_logprobs
    return SamplingParams(**kwargs)  # raises EngineError (400) on out-of-range values


def build_answer_options(body: ChatCompletionRequest) -> AnswerOptions:
    n = 1 if body.n is None else body.n
    if not 1 <= n <= MAX_CHOICES:
        raise APIError(400, f"n must be between 1 and {MAX_CHOICES}, got {n}", param="n")
    return AnswerOptions(constraint=build_constraint(body), n=n, thinking_budget=thinking_budget(body))


def thinking_budget(body: ChatCompletionRequest) -> int | None:
    ours, vllms = body.thinking_budget, body.thinking_token_budget
    if ours is not None and vllms is not None and ours != vllms:
        raise APIError(400, "thinking_budget and thinking_token_budget differ; send one", param="thinking_token_budget")
    budget = ours if ours is not None else vllms
    if budget is not None and budget < 0:
        param = "thinking_budget" if ours is not None else "thinking_token_budget"
        raise APIError(400, f"{param} must be 0 or more tokens, got {budget}", param=param)
    return budget


def build_constraint(body: ChatCompletionRequest) -> OutputConstraint | None:
    from_format = _from_response_format(body)
    from_extension = _from_structured_outputs(body)
    if from_format is not None and from_extension is not None:
        raise APIError(400, "send either response_format or structured_outputs, not both", param="structured_outputs")
    return from_format or from_extension


def _from_response_format(body: ChatCompletionRequest) -> OutputConstraint | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return OutputConstraint("json_object")
    if fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise APIError(
                400,
                "response_format json_schema needs json_schema.schema",
                param="response_format.json_schema",
                code="invalid_schema",
            )
        return _schema_constraint(fmt.json_schema.schema_, "response_format.json_schema.schema", fmt.json_schema.name)
    raise APIError(
        400,
        f"response_format type {fmt.type!r} is not supported; use text, json_object or json_schema",
        param="response_format.type",
    )


def _from_structured_outputs(body: ChatCompletionRequest) -> OutputConstraint | None:
    extension = body.structured_outputs
    if extension is None:
        return None
    for name in ("whitespace_pattern", "structural_tag"):
        if getattr(extension, name) is not None:
            raise APIError(400, f"structured_outputs.{name} is not supported here", param=f"structured_outputs.{name}")
    given = [name for name in ("json_", "regex", "choice", "grammar") if getattr(extension, name) is not None]
    if extension.json_object:
        given.append("json_object")
    if len(given) != 1:
        raise APIError(
            400,
            "structured_outputs takes exactly one of json, regex, choice, grammar, json_object",
            param="structured_outputs",
        )
    kind = given[0]
    try:
        if kind == "json_":
            return _schema_constraint(extension.json_, "structured_outputs.json", "")
        if kind == "json_object":
            return OutputConstraint("json_object")
        if kind == "choice":
            return OutputConstraint("choice", choices=tuple(extension.choice))
        return OutputConstraint(kind, getattr(extension, kind))
    except EngineError as exc:
        raise APIError(400, exc.message, param=f"structured_outputs.{kind}", code="invalid_schema") from None


def _schema_constraint(schema, param: str, name: str) -> OutputConstraint:
    """A JSON schema, checked here (`json_schema.schema_problem`: torch-free, any backend): a 400
    `invalid_schema` naming what is wrong before any GPU work."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            message = f"the JSON schema is not valid JSON: {exc}"
            raise APIError(400, message, param=param, code="invalid_schema") from None
    if not isinstance(schema, dict):
        raise APIError(400, "the JSON schema must be an object", param=param, code="invalid_schema")
    problem = schema_problem(schema)
    if problem is not None:
        raise APIError(400, problem, param=param, code="invalid_schema")
    return OutputConstraint("json_schema", json.dumps(schema), name=name or "")
