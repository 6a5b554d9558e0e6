"""Request and response shapes of the OpenAI-compatible API, as pydantic models.

They follow OpenAI's Chat Completions schema (what the official clients send and expect) plus the
extensions vLLM and SGLang offer for GLM: `top_k`, `repetition_penalty`, `chat_template_kwargs`
and `reasoning_content`. Because the routes declare these models, /openapi.json documents them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    """Unknown fields are accepted and ignored, as vLLM does: clients add fields of their own."""

    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------- request
class ImageURL(_Lenient):
    url: str = Field(description="a `data:image/...;base64,...` URL (JPEG, PNG, WebP, GIF; PDFs as "
                     "`data:application/pdf;base64,...`), or an http(s) URL when the server allows remote images")
    detail: Literal["auto", "low", "high"] | None = Field(
        None, description="`low` caps the image at 1,024 visual tokens; `auto`/`high` use the server's budget")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class OtherPart(_Lenient):
    """Any other part type (audio, files, ...): accepted by the schema so the answer can be a clear 400."""

    type: str


ContentPart = Annotated[Union[TextPart, ImagePart, OtherPart], Field(union_mode="left_to_right")]


class FunctionCall(_Lenient):
    name: str
    arguments: str = Field(description="the arguments as a JSON object in a string")


class ToolCallIn(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    reasoning_content: str | None = Field(None, description="ignored: reasoning is never sent back to the model")
    tool_calls: list[ToolCallIn] | None = Field(None, description="an assistant turn's function calls")
    tool_call_id: str | None = Field(None, description="a tool result: the id of the call it answers")


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatTemplateKwargs(_Lenient):
    enable_thinking: bool = Field(True, description="false switches GLM's thinking off (answers come faster)")


class ChatCompletionRequest(_Lenient):
    model: str | None = Field(None, description="any name is accepted; the response names the served model")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, description="most tokens to generate (thinking included)")
    max_completion_tokens: int | None = Field(None, description="same as max_tokens; wins when both are given")
    temperature: float | None = Field(None, description="0 to 2; 0 is greedy. Default: the model's 0.8")
    top_p: float | None = Field(None, description="(0, 1]. Default: the model's 0.6")
    top_k: int | None = Field(None, description="extension: 0 or -1 is off. Default: the model's 2")
    repetition_penalty: float | None = Field(None, description="extension: (0, 10]. Default: the model's 1.1")
    min_tokens: int | None = Field(None, description="extension (as vLLM): the answer is not ended before this many tokens")
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the answer (not included)")
    seed: int | None = Field(None, description="makes sampling reproducible on the same server")
    n: int | None = Field(None, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    presence_penalty: float | None = Field(None, description="only 0 is supported; use repetition_penalty")
    frequency_penalty: float | None = Field(None, description="only 0 is supported; use repetition_penalty")
    logprobs: bool | None = Field(None, description="not supported (only false)")
    tools: list[dict] | None = Field(None, description="not supported: GLM-4.6V-Flash is served here without tool calling")
    user: str | None = None


# ---------------------------------------------------------------------------------- response
class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="prompt tokens whose KV cache was reused from an earlier request")


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class Timings(BaseModel):
    """Extension: where the time went (not in OpenAI's schema; clients ignore it)."""

    queue_ms: float
    ttft_ms: float = Field(description="from the start of GPU work to the first generated token")
    decode_tokens_per_s: float
    images: int
    image_cache_hits: int = Field(description="images whose visual features came from the cache")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = Field(None, description="the model's thinking, apart from the answer")


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    timings: Timings | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer (`data: {...}`), the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "glm-vision"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "bad request (validation, unsupported option, bad image)"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
    413: {"model": ErrorResponse, "description": "request body or an image too large"},
    429: {"model": ErrorResponse, "description": "busy: the queue is full; see the Retry-After header"},
    503: {"model": ErrorResponse, "description": "the model is not loaded yet, or the GPU is unavailable"},
}
