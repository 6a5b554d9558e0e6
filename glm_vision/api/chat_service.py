"""POST /v1/chat/completions, in named steps: prepare the backend request, submit it, then either
complete it (one JSON answer) or stream it (server-sent chunks)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..backend import Backend, EngineError, GenerationRequest, GenerationResult
from ..grounding import reply_images
from .errors import APIError, engine_error, error_body
from .messages import LOW_DETAIL_IMAGE_TOKENS, convert_messages
from .options import build_answer_options, build_sampling
from .responses import ChunkWriter, completion, sse
from .schemas import ChatCompletion, ChatCompletionRequest
from .tenancy import cache_scope, conversation_session
from .tools import ToolPlan, check_tool_results, plan_tools

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class Reply:
    """The identity every chunk or answer of one completion carries."""

    completion_id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> Reply:
        return cls("chatcmpl-" + uuid.uuid4().hex, int(time.time()), model)


class ChatService:
    def __init__(self, state) -> None:
        self.state = state

    def backend(self) -> Backend:
        """The loaded backend, or a 503 that says whether the model is loading or failed."""
        backend = self.state.backend
        if backend is None:
            if self.state.load_error:
                raise APIError(503, f"the model failed to load: {self.state.load_error}", code="model_not_loaded")
            raise APIError(
                503,
                "the model is still loading; try again in a few seconds",
                code="model_loading",
                headers={"Retry-After": "5"},
            )
        return backend

    async def create(self, body: ChatCompletionRequest, request: Request):
        backend = self.backend()
        plan = plan_tools(body)
        generation = await self.prepare(body, request, plan)
        # In a worker thread: submitting compiles a response_format's grammar (cached after its first
        # use), which must not hold up the other requests on the event loop. QueueFullError -> 429.
        handle = await run_in_threadpool(backend.submit, generation)
        watcher = asyncio.create_task(_cancel_on_disconnect(request, handle))
        reply = Reply.new(backend.info.model)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            writer = ChunkWriter(
                reply.completion_id,
                reply.created,
                reply.model,
                include_usage,
                plan,
                reply_images(generation.messages),
                logprobs=generation.sampling.logprobs,
            )
            return await self.stream(handle, watcher, writer)
        return await self.complete(handle, watcher, reply, plan)

    async def prepare(self, body: ChatCompletionRequest, request: Request, plan: ToolPlan) -> GenerationRequest:
        settings = self.state.settings
        sampling = build_sampling(body, settings)
        options = build_answer_options(body)
        if options.constraint is not None and plan.constraint() is not None:
            raise APIError(
                400,
                "a required or named tool_choice cannot be combined with response_format or structured_outputs",
                param="tool_choice",
            )
        messages, low_detail = await convert_messages(body.messages, settings)
        check_tool_results(messages)
        scope = cache_scope(request.headers.get("authorization", ""))
        return GenerationRequest(
            messages=messages,
            sampling=sampling,
            session_id=conversation_session(scope, messages),
            cache_scope=scope,
            enable_thinking=body.chat_template_kwargs.enable_thinking if body.chat_template_kwargs else True,
            max_image_tokens=LOW_DETAIL_IMAGE_TOKENS if low_detail else None,
            constraint=options.constraint or plan.constraint(),
            n=options.n,
            thinking_budget=options.thinking_budget,
            tools=plan.tools,
            tool_choice=plan.choice,
        )

    async def complete(self, handle, watcher: asyncio.Task, reply: Reply, plan: ToolPlan) -> ChatCompletion:
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
        # the boxes are on the image the question is about: the last image of the turn answered
        return completion(
            result, reply.completion_id, reply.created, reply.model, plan, reply_images(handle.request.messages)
        )

    async def stream(self, handle, watcher: asyncio.Task, writer: ChunkWriter) -> StreamingResponse:
        events = handle.__aiter__()
        # Wait for the first event before answering 200, so that errors found while preparing the
        # prompt (too long, out of memory) still get their own status instead of an error event.
        try:
            first = await anext(events)
        except EngineError as exc:
            watcher.cancel()
            raise engine_error(exc) from None
        except BaseException:
            watcher.cancel()
            handle.cancel()
            raise
        chunks = _chunks(first, events, handle, watcher, writer)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=STREAM_HEADERS)


async def _chunks(first, events, handle, watcher: asyncio.Task, writer: ChunkWriter):
    """The response body: each backend event's chunks as one piece (one write to the client)."""
    try:
        yield "".join(writer.delta({"role": "assistant", "content": ""}, index=i) for i in range(handle.request.n))
        event = first
        while True:
            chunks = writer.events(event)
            if chunks:
                yield chunks
            if isinstance(event, GenerationResult):  # the handle's last event
                break
            event = await anext(events)
        yield sse("[DONE]")
    except EngineError as exc:  # after the 200 has gone out: an error event, as OpenAI sends
        yield sse(error_body(engine_error(exc).status_code, exc.message, code=exc.code))
        yield sse("[DONE]")
    finally:
        watcher.cancel()
        handle.cancel()  # no-op when finished; stops the GPU work when the client went away
        await events.aclose()


async def _cancel_on_disconnect(request: Request, handle) -> None:
    """Cancel the generation when the client goes away (the worker stops within one decode step)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handle.cancel()
            return
