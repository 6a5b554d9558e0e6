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
    url: str = Field(
        description="a `data:image/...;base64,...` URL (JPEG, PNG, WebP, GIF; PDFs as "
        "`data:application/pdf;base64,...`), or an http(s) URL when the server allows remote images"
    )
    detail: Literal["auto", "low", "high"] | None = Field(
        None, description="`low` caps the image at 1,024 visual tokens; `auto`/`high` use the server's budget"
    )


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class FileData(_Lenient):
    file_data: str | None = Field(None, description="the PDF as a `data:application/pdf;base64,...` URL (or an image)")
    file_id: str | None = Field(None, description="refused: this server has no Files API; send `file_data`")
    filename: str | None = None


class FilePart(_Lenient):
    """OpenAI's way to send a PDF in a chat: its pages are read like a PDF sent as an `image_url`."""

    type: Literal["file"]
    file: FileData


class OtherPart(_Lenient):
    """Any other part type (audio, ...), or a known one its model refused: accepted by the schema so the answer can
    be a clear 400 (messages.py)."""

    type: str


ContentPart = Annotated[Union[TextPart, ImagePart, FilePart, OtherPart], Field(union_mode="left_to_right")]


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


class JSONSchemaFormat(_Lenient):
    name: str = Field("response", description="the schema's name")
    description: str | None = None
    schema_: dict | bool | None = Field(
        None, alias="schema", description="a JSON Schema the answer must validate against"
    )
    strict: bool | None = Field(
        None, description="accepted; the answer always follows the schema (constrained decoding)"
    )


class ResponseFormat(_Lenient):
    """`{"type": "json_object"}`, `{"type": "json_schema", "json_schema": {...}}` or `{"type": "text"}`;
    enforced token by token (after the reasoning when thinking is on)."""

    type: str = Field(description="text, json_object or json_schema")
    json_schema: JSONSchemaFormat | None = None


class StructuredOutputs(_Lenient):
    """Extension (vLLM's `structured_outputs`): exactly one of json, regex, choice, grammar, json_object."""

    json_: dict | str | None = Field(None, alias="json", description="a JSON Schema (object or JSON text)")
    regex: str | None = Field(None, description="the answer matches this regular expression")
    choice: list[str] | None = Field(None, description="the answer is exactly one of these strings")
    grammar: str | None = Field(None, description="an EBNF grammar (GBNF / xgrammar notation) the answer follows")
    json_object: bool | None = Field(None, description="the answer is a JSON object")
    disable_any_whitespace: bool | None = Field(None, description="accepted: JSON is always written compactly here")
    disable_fallback: bool | None = None
    disable_additional_properties: bool | None = None
    whitespace_pattern: str | None = Field(None, description="not supported")
    structural_tag: str | dict | None = Field(None, description="not supported")


class ChatCompletionRequest(_Lenient):
    model: str | None = Field(None, description="any name is accepted; the response names the served model")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, description="most tokens to generate (thinking included)")
    max_completion_tokens: int | None = Field(None, description="same as max_tokens; wins when both are given")
    temperature: float | None = Field(None, description="0 to 2; 0 is greedy. Default: the model's 0.8")
    top_p: float | None = Field(None, description="(0, 1]. Default: the model's 0.6")
    top_k: int | None = Field(None, description="extension: 0 or -1 is off. Default: the model's 2")
    repetition_penalty: float | None = Field(None, description="extension: (0, 10]. Default: the model's 1.1")
    min_tokens: int | None = Field(
        None, description="extension (as vLLM): the answer is not ended before this many tokens"
    )
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the answer (not included)")
    seed: int | None = Field(
        None, description="makes sampling reproducible on the same server; choice i of n samples with seed + i"
    )
    n: int | None = Field(None, description="1 to 8 choices; the prompt is prefilled once for all of them")
    stream: bool = False
    stream_options: StreamOptions | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    presence_penalty: float | None = Field(None, description="only 0 is supported; use repetition_penalty")
    frequency_penalty: float | None = Field(None, description="only 0 is supported; use repetition_penalty")
    logprobs: bool | None = Field(
        None,
        description="log probability of each generated token (reasoning included), "
        "from the model's raw logits: before the constraint, penalty, temperature, top-k, top-p",
    )
    top_logprobs: int | None = Field(None, description="0 to 20 most likely tokens at each step (needs logprobs)")
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = Field(
        None, description="extension (vLLM): choice, regex, grammar or json; see README"
    )
    thinking_budget: int | None = Field(
        None, description="extension: most reasoning tokens; then `</think>` is written and the answer follows"
    )
    thinking_token_budget: int | None = Field(None, description="extension: vLLM's name for thinking_budget")
    tools: list[dict] | None = Field(
        None,
        description="OpenAI function tools; the model calls them in GLM's native "
        "format, returned as `message.tool_calls`",
    )
    tool_choice: str | dict | None = Field(
        None,
        description="auto (default with tools), none, required, or "
        '{"type": "function", "function": {"name": NAME}}; required and a named '
        "function are enforced by constrained decoding (exactly one call)",
    )
    parallel_tool_calls: bool | None = Field(None, description="false: only the first call of an answer is returned")
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


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="a JSON object in a string, typed by the tool's parameter schema")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class GroundingItem(BaseModel):
    """Extension: a box or point the answer gives (GLM writes them in thousandths of the image)."""

    type: Literal["box", "point"]
    label: str = Field(description="the JSON `label` GLM wrote, or the words before `:` on its line; may be empty")
    image_index: int = Field(
        description="the image it is on: 0-based position among all images of the request's "
        "messages, in order (a PDF counts one image per page)"
    )
    coords: list[int | float] = Field(
        description="as the model wrote them, 0-1000 of the width (x) and height (y), "
        "clamped: [x1, y1, x2, y2] for a box, [x, y] for a point"
    )
    pixels: list[int] = Field(
        description="the same in pixels of the original image (as sent, after EXIF rotation): "
        "box edges in [0, width] x [0, height], a point in [0, width-1] x [0, height-1]"
    )
    image_size: list[int] = Field(description="[width, height] of that image in pixels")
    span: list[int] = Field(description="[start, end) of its text in `content`")
    text: str = Field(description="the text of `content` at `span`")


GROUNDING_DESCRIPTION = (
    "extension: the boxes and points of the answer, with pixel coordinates of the image they are "
    "on (only when there are some; in a stream, once, in each choice's final chunk)"
)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = Field(None, description="the model's thinking, apart from the answer")
    tool_calls: list[ToolCallOut] | None = Field(
        None,
        exclude_if=lambda calls: calls is None,
        description="the answer's function calls (only when there are some)",
    )
    grounding: list[GroundingItem] | None = Field(
        None, exclude_if=lambda items: not items, description=GROUNDING_DESCRIPTION
    )


class TopLogprobEntry(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobEntry(TopLogprobEntry):
    top_logprobs: list[TopLogprobEntry]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobEntry] | None = None
    refusal: list[TokenLogprobEntry] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    timings: Timings | None = None


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    grounding: list[GroundingItem] | None = Field(
        None, exclude_if=lambda items: not items, description=GROUNDING_DESCRIPTION
    )


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None
    logprobs: ChoiceLogprobs | None = None


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
