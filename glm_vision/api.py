"""The OpenAI-compatible REST API: /v1/chat/completions (stream and non-stream) and /v1/models.

A thin adapter: it turns OpenAI requests into `GenerationRequest`s for the backend (the local
engine or a remote OpenAI-compatible server, same interface) and the backend's events into OpenAI
responses or server-sent events. Every error, ours or the engine's, is OpenAI's error JSON with a
fitting status; nothing a client sends can cause a 500.

Cached state is scoped per API key: requests presenting the same key share image features (a
repeated image is not re-encoded) and each conversation keeps its KV (a follow-up turn prefills only
its new tokens); requests with different keys never share anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_schemas import (
    ERROR_RESPONSES,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ImagePart,
    Model,
    ModelList,
    TextPart,
)
from .conversation import Message, StreamSplitter, split_output
from .engine.types import EngineError, GenerationRequest, GenerationResult, QueueFullError, SamplingParams, TextDelta
from .images import ImageError, InputImage, load_media

log = logging.getLogger(__name__)

LOW_DETAIL_IMAGE_TOKENS = 1024
MIN_BODY_LIMIT = 8_000_000
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


# ---------------------------------------------------------------------------------- errors
class APIError(HTTPException):
    """An error answered as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message, self.code, self.param = message, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status_code, self.message, code=self.code, param=self.param, headers=self.headers)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}}


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code=code, param=param), status_code=status, headers=headers)


def engine_error(exc: EngineError) -> APIError:
    headers = None
    if isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    elif exc.status == 503:
        headers = {"Retry-After": "5"}
    return APIError(exc.status, exc.message, code=exc.code, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "the request body is not valid", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    # Union members name themselves in the location (e.g. 'TextPart'); they mean nothing to a client.
    loc = [part for part in loc if not part[:1].isupper()]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param


# ---------------------------------------------------------------------------------- route class
class OpenAIRoute(APIRoute):
    """Checks the API key and the body size before the body is read, and answers every error as
    OpenAI's error JSON (validation errors as 400, never FastAPI's 422)."""

    state: Any = None  # the AppState, set by build_api_router

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        state = self.state

        async def guarded(request: Request):
            try:
                check_api_key(request, state.settings.api_key)
                limit = body_limit(state.settings)
                declared = request.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise APIError(413, f"the request body is {int(declared) / 1e6:.1f} MB; at most {limit / 1e6:.1f} MB "
                                   "are accepted", code="request_too_large")
                request = Request(request.scope, _limited_receive(request.receive, limit))
                return await handler(request)
            except APIError as exc:
                return exc.response()
            except RequestValidationError as exc:
                message, param = _validation_message(exc)
                return error_response(400, message, code="invalid_request", param=param)
            except EngineError as exc:
                return engine_error(exc).response()
            except StarletteHTTPException as exc:  # FastAPI's own (e.g. a body it could not parse, not UTF-8)
                status = exc.status_code if 400 <= exc.status_code < 500 else 400
                return error_response(status, str(exc.detail), headers=exc.headers)

        return guarded


def _limited_receive(receive, limit: int):
    received = 0

    async def limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise APIError(413, f"the request body is larger than {limit / 1e6:.1f} MB", code="request_too_large")
        return message

    return limited


def body_limit(settings) -> int:
    """Room for the most images one message may carry, base64-encoded, plus text."""
    per_image = settings.max_upload_mb * 1e6 * 4 / 3
    return int(max(MIN_BODY_LIMIT, per_image * settings.max_images_per_message + 1_000_000))


def check_api_key(request: Request, api_key: str | None) -> None:
    if not api_key:
        return
    presented = bearer_token(request)
    if presented is None:
        raise APIError(401, "this server requires an API key: send the header 'Authorization: Bearer KEY'",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(presented.encode(), api_key.encode()):
        raise APIError(401, "incorrect API key provided", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def cache_scope(request: Request) -> str:
    """The tenant's cache scope: its image features are shared by all its conversations, never
    with another key."""
    token = bearer_token(request)
    if token is None:
        return "api:anonymous"
    return "api:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def conversation_session(scope: str, messages: list[Message]) -> str:
    """The engine session (one live KV cache) of a conversation: named by its opening (everything up
    to the first user message), so each follow-up turn continues the KV of the turns before it and
    a tenant's parallel conversations do not evict each other's KV. Sessions are bounded by the
    engine's --max-sessions and --kv-cache-mb, least recently used first."""
    h = hashlib.sha256()
    for message in messages:
        h.update(f"{message.role}\0{message.text}\0".encode())
        for image in message.images:
            h.update(image.digest.encode())
        if message.role == "user":
            break
    return f"{scope}:{h.hexdigest()[:16]}"


# ---------------------------------------------------------------------------------- messages
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Lone UTF-16 surrogates (legal as JSON escapes, not as Unicode) become U+FFFD; valid pairs were
    already joined by the JSON parser."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _text_of(content, where: str, *, allow_images: bool) -> tuple[str, list[tuple[str, ImagePart]]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for index, part in enumerate(content):
        param = f"{where}.content.{index}"
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            if not allow_images:
                raise APIError(400, f"{param}: only user messages can carry images", param=param)
            images.append((param, part))
        elif part.type in {"text", "image_url"}:
            raise APIError(400, f"{param}: a '{part.type}' part needs its '{'text' if part.type == 'text' else 'image_url'}' field",
                           param=param)
        else:
            raise APIError(400, f"{param}: content parts of type '{part.type}' are not supported; "
                           "send 'text' and 'image_url' parts", param=param)
    return "\n".join(texts), images


async def convert_messages(messages: list[ChatMessage], settings) -> tuple[list[Message], bool]:
    """OpenAI messages -> engine messages (images decoded); also whether any image asked for low detail."""
    converted: list[Message] = []
    low_detail = False
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        role = message.role
        if role in {"tool", "function"}:
            raise APIError(400, f"{where}: '{role}' messages are not supported (this server has no tool calling)",
                           param=f"{where}.role")
        if getattr(message, "tool_calls", None):
            raise APIError(400, f"{where}: tool_calls are not supported (this server has no tool calling)",
                           param=f"{where}.tool_calls")
        text, parts = _text_of(message.content, where, allow_images=role == "user")
        text = clean_text(text)
        if role in {"system", "developer"}:
            converted.append(Message("system", text))
        elif role == "assistant":
            # Reasoning is never sent back to the model, whatever the client kept.
            converted.append(Message("assistant", split_output(text).raw_answer))
        else:
            images: list[InputImage] = []
            limit = settings.max_images_per_message
            if len(parts) > limit:  # refused before decoding any of them
                raise APIError(400, f"{where}: {len(parts)} images in one message; at most {limit} images (PDF pages "
                               "included) per message are accepted", param=f"{where}.content", code="too_many_images")
            for param, part in parts:
                low_detail = low_detail or part.image_url.detail == "low"
                images.extend(await load_image_part(part.image_url.url, param, settings))
            if len(images) > limit:
                raise APIError(400, f"{where}: {len(images)} images in one message (PDF pages included); at most {limit} "
                               "are accepted", param=f"{where}.content", code="too_many_images")
            if not text.strip() and not images:
                raise APIError(400, f"{where}: the user message is empty; send text, an image or both",
                               param=f"{where}.content", code="empty_message")
            converted.append(Message("user", text, images))
    return converted, low_detail


async def load_image_part(url: str, param: str, settings) -> list[InputImage]:
    max_bytes = int(settings.max_upload_mb * 1e6)
    if url.startswith("data:"):
        data = decode_data_url(url, param, max_bytes)
    elif url.startswith(("http://", "https://")):
        data = await fetch_remote_image(url, param, settings)
    else:
        raise APIError(400, f"{param}: image URLs must be data: URLs (data:image/png;base64,...) or http(s) URLs",
                       param=param, code="invalid_image_url")
    try:
        return await run_in_threadpool(
            load_media, data, max_bytes=None, max_pages=settings.pdf_max_pages, pdf_dpi=settings.pdf_dpi
        )
    except ImageError as exc:
        raise APIError(400, f"{param}: {exc}", param=param, code="invalid_image") from None


def decode_data_url(url: str, param: str, max_bytes: int) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise APIError(400, f"{param}: malformed data: URL (no comma before the data)", param=param, code="invalid_image_url")
    if not header.endswith(";base64"):
        raise APIError(400, f"{param}: data: URLs must be base64-encoded (data:image/png;base64,...)", param=param,
                       code="invalid_image_url")
    payload = payload.strip()
    estimated = len(payload) * 3 // 4
    if estimated > max_bytes + 3:
        raise APIError(413, f"{param}: the image is {estimated / 1e6:.1f} MB; images up to {max_bytes / 1e6:.1f} MB are "
                       "accepted", param=param, code="image_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        try:  # tolerate URL-safe alphabets and missing padding
            data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            raise APIError(400, f"{param}: the data: URL is not valid base64", param=param, code="invalid_image_url") from None
    if len(data) > max_bytes:
        raise APIError(413, f"{param}: the image is {len(data) / 1e6:.1f} MB; images up to {max_bytes / 1e6:.1f} MB are "
                       "accepted", param=param, code="image_too_large")
    return data


def _host_allowed(host: str, allowlist: list[str]) -> bool:
    for allowed in allowlist:
        if allowed.startswith("*.") and host.endswith(allowed[1:]):
            return True
        if host == allowed:
            return True
    return False


async def fetch_remote_image(url: str, param: str, settings) -> bytes:
    if not settings.allow_remote_images:
        raise APIError(400, f"{param}: remote image URLs are disabled on this server; send the image inline as a "
                       "base64 data: URL (data:image/png;base64,...), or start the server with --allow-remote-images "
                       "--remote-image-hosts HOST[,HOST]", param=param, code="remote_images_disabled")
    import httpx

    host = (urlsplit(url).hostname or "").lower()
    allowlist = [h.strip().lower() for h in settings.remote_image_hosts.split(",") if h.strip()]
    if not _host_allowed(host, allowlist):
        listed = ", ".join(allowlist) or "none (set --remote-image-hosts)"
        raise APIError(400, f"{param}: images from host '{host}' are not allowed; allowed hosts: {listed}",
                       param=param, code="remote_host_not_allowed")
    limit = int(settings.remote_image_max_mb * 1e6)
    timeout = settings.remote_image_timeout_s

    async def fetch() -> bytes:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise APIError(400, f"{param}: fetching the image failed: HTTP {response.status_code} from {host}"
                                   + (" (redirects are not followed)" if 300 <= response.status_code < 400 else ""),
                                   param=param, code="remote_image_failed")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise APIError(400, f"{param}: the remote image is {int(declared) / 1e6:.1f} MB; at most "
                                   f"{limit / 1e6:.1f} MB are fetched", param=param, code="image_too_large")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise APIError(400, f"{param}: the remote image is larger than {limit / 1e6:.1f} MB",
                                       param=param, code="image_too_large")
                    chunks.append(chunk)
                return b"".join(chunks)

    try:
        return await asyncio.wait_for(fetch(), timeout)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        raise APIError(400, f"{param}: fetching the image from {host} took longer than {timeout:g} s", param=param,
                       code="remote_image_failed") from None
    except httpx.HTTPError as exc:
        raise APIError(400, f"{param}: fetching the image from {host} failed: {type(exc).__name__}", param=param,
                       code="remote_image_failed") from None


# ---------------------------------------------------------------------------------- request -> engine
def build_sampling(body: ChatCompletionRequest, settings) -> SamplingParams:
    if body.n not in (None, 1):
        raise APIError(400, "n must be 1: this server generates one choice per request", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) not in (None, 0, 0.0):
            raise APIError(400, f"{name} is not supported; use repetition_penalty (e.g. 1.1)", param=name)
    if body.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    if body.tools:
        raise APIError(400, "tools are not supported: this server has no tool calling", param="tools")
    kwargs: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed"):
        value = getattr(body, name)
        if value is not None:
            kwargs[name] = value
    if body.min_tokens is not None:
        kwargs["min_new_tokens"] = body.min_tokens
    if kwargs.get("top_k") == -1:  # vLLM's and SGLang's spelling of "off"
        kwargs["top_k"] = 0
    max_new = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_new is not None and max_new < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_new}", param="max_tokens")
    if max_new is not None and max_new > settings.max_context_tokens:
        raise APIError(400, f"max_tokens is {max_new}, past the context limit of {settings.max_context_tokens} tokens "
                       "(prompt and answer together)", param="max_tokens", code="context_length_exceeded")
    kwargs["max_new_tokens"] = max_new if max_new is not None else settings.max_new_tokens
    if body.stop is not None:
        kwargs["stop"] = tuple(clean_text(s) for s in ((body.stop,) if isinstance(body.stop, str) else body.stop))
    return SamplingParams(**kwargs)  # raises EngineError (400) on out-of-range values


def _usage(result: GenerationResult) -> dict:
    u = result.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def _timings(result: GenerationResult) -> dict:
    u = result.usage
    return {
        "queue_ms": round(u.queue_s * 1000, 2),
        "ttft_ms": round(u.ttft_s * 1000, 2),
        "decode_tokens_per_s": round(u.decode_tokens_per_s, 2),
        "images": u.images,
        "image_cache_hits": u.image_cache_hits,
    }


def _finish_reason(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


async def _watch_disconnect(request: Request, handle) -> None:
    """Cancel the generation when the client goes away (the worker stops within one decode step)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handle.cancel()
            return


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


def _inline_schema(model) -> dict:
    """A model's JSON schema with its $defs resolved in place (valid anywhere in the OpenAPI document)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.split("/")[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


# ---------------------------------------------------------------------------------- router
def build_api_router(state) -> APIRouter:
    route_class = type("BoundOpenAIRoute", (OpenAIRoute,), {"state": state})
    security = HTTPBearer(auto_error=False, description="the server's --api-key, when it has one")
    router = APIRouter(route_class=route_class, dependencies=[Depends(security)], responses=ERROR_RESPONSES)

    def backend_or_503():
        backend = state.backend
        if backend is None:
            if state.load_error:
                raise APIError(503, f"the model failed to load: {state.load_error}", code="model_not_loaded")
            raise APIError(503, "the model is still loading; try again in a few seconds", code="model_loading",
                           headers={"Retry-After": "5"})
        return backend

    def served_model(backend) -> str:
        return backend.info.model

    @router.get("/v1/models", response_model=ModelList, tags=["openai"], summary="List models")
    def list_models():
        backend = backend_or_503()
        return ModelList(data=[Model(id=served_model(backend), created=int(state_created))])

    @router.get("/v1/models/{model_id:path}", response_model=Model, tags=["openai"], summary="Retrieve a model")
    def get_model(model_id: str):
        backend = backend_or_503()
        name = served_model(backend)
        if model_id != name:
            raise APIError(404, f"the model '{model_id}' does not exist; this server serves '{name}'",
                           code="model_not_found", param="model")
        return Model(id=name, created=int(state_created))

    @router.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        tags=["openai"],
        summary="Create a chat completion",
        responses={200: {"content": {"text/event-stream": {"schema": _inline_schema(ChatCompletionChunk)}},
                         "description": "a chat.completion, or with stream=true server-sent chat.completion.chunk "
                         "events ending with `data: [DONE]`"}},
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        """OpenAI Chat Completions with images (`image_url` parts), thinking split into `reasoning_content`,
        and the extensions `top_k`, `repetition_penalty` and `chat_template_kwargs.enable_thinking`."""
        settings = state.settings
        backend = backend_or_503()
        sampling = build_sampling(body, settings)
        messages, low_detail = await convert_messages(body.messages, settings)
        enable_thinking = body.chat_template_kwargs.enable_thinking if body.chat_template_kwargs else True
        scope = cache_scope(request)
        generation = GenerationRequest(
            messages=messages,
            sampling=sampling,
            session_id=conversation_session(scope, messages),
            cache_scope=scope,
            enable_thinking=enable_thinking,
            max_image_tokens=LOW_DETAIL_IMAGE_TOKENS if low_detail else None,
        )
        handle = backend.submit(generation)  # QueueFullError -> 429 with Retry-After
        watcher = asyncio.create_task(_watch_disconnect(request, handle))
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        model = served_model(backend)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await _stream(handle, watcher, completion_id, created, model, include_usage)
        try:
            result = None
            async for item in handle:
                if isinstance(item, GenerationResult):
                    result = item
        except EngineError as exc:
            raise engine_error(exc) from None
        finally:
            watcher.cancel()
            handle.cancel()
        parsed = split_output(result.text)
        return ChatCompletion.model_validate({
            "id": completion_id,
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": parsed.answer, "reasoning_content": parsed.reasoning or None},
                "finish_reason": _finish_reason(result),
            }],
            "usage": _usage(result),
            "timings": _timings(result),
        })

    async def _stream(handle, watcher, completion_id, created, model, include_usage) -> StreamingResponse:
        events = handle.__aiter__()
        # Wait for the first event before answering 200, so that errors found while preparing the
        # prompt (too long, out of memory) still get their own status instead of an error event.
        try:
            first = await events.__anext__()
        except EngineError as exc:
            watcher.cancel()
            raise engine_error(exc) from None
        except BaseException:
            watcher.cancel()
            handle.cancel()
            raise

        def chunk(delta: dict, finish_reason: str | None = None) -> str:
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                payload["usage"] = None
            return _sse(payload)

        def split_chunks(splitter_output: tuple[str, str]):
            reasoning, answer = splitter_output
            if reasoning:
                yield chunk({"reasoning_content": reasoning})
            if answer:
                yield chunk({"content": answer})

        async def sse():
            splitter = StreamSplitter()
            try:
                yield chunk({"role": "assistant", "content": ""})
                item = first
                while True:
                    if isinstance(item, TextDelta):
                        for text in split_chunks(splitter.feed(item.text)):
                            yield text
                    else:
                        result: GenerationResult = item
                        for text in split_chunks(splitter.flush()):
                            yield text
                        yield chunk({}, _finish_reason(result))
                        if include_usage:
                            yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                        "model": model, "choices": [], "usage": _usage(result)})
                        break
                    try:
                        item = await events.__anext__()
                    except StopAsyncIteration:
                        break
                yield _sse("[DONE]")
            except EngineError as exc:  # after the 200 has gone out: an error event, as OpenAI sends
                status = engine_error(exc).status_code
                yield _sse(error_body(status, exc.message, code=exc.code))
                yield _sse("[DONE]")
            finally:
                watcher.cancel()
                handle.cancel()  # no-op when finished; stops the GPU work when the client went away
                await events.aclose()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)

    @router.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown_endpoint(path: str, request: Request):
        raise APIError(404, f"unknown endpoint {request.method} /v1/{path}; this server offers POST /v1/chat/completions "
                       "and GET /v1/models", code="unknown_url")

    state_created = time.time()
    return router
