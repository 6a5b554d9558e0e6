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
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
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
    Model,
    ModelList,
)
from .api_errors import APIError, _validation_message, engine_error, error_body, error_response
from .api_messages import LOW_DETAIL_IMAGE_TOKENS, clean_text, convert_messages
from .conversation import Message, StreamSplitter, split_output
from .backend import EngineError, GenerationRequest, GenerationResult, SamplingParams, TextDelta

log = logging.getLogger(__name__)

MIN_BODY_LIMIT = 8_000_000

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


def openai_not_found(request: Request, exc: StarletteHTTPException):
    """404s that no /v1 route could even match (e.g. a path with a line break) in OpenAI's error JSON."""
    if request.url.path.startswith("/v1/"):
        return error_response(404, f"unknown endpoint {request.method} {request.url.path!r}", code="unknown_url")
    return JSONResponse({"detail": exc.detail}, status_code=404, headers=getattr(exc, "headers", None))


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
