"""The OpenAI-compatible REST API: /v1/chat/completions (stream and non-stream) and /v1/models.

Thin routes: the work is in `ChatService`; every error, ours or the backend's, is OpenAI's error JSON
with a fitting status, and nothing a client sends can cause a 500.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .chat_service import ChatService
from .errors import APIError, error_response
from .openapi import inline_schema
from .route import route_class_for
from .schemas import ERROR_RESPONSES, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, ModelList

STREAM_RESPONSE = {
    200: {
        "content": {"text/event-stream": {"schema": inline_schema(ChatCompletionChunk)}},
        "description": "a chat.completion, or with stream=true server-sent chat.completion.chunk "
        "events ending with `data: [DONE]`",
    }
}


def build_api_router(state) -> APIRouter:
    security = HTTPBearer(auto_error=False, description="the server's --api-key, when it has one")
    router = APIRouter(route_class=route_class_for(state), dependencies=[Depends(security)], responses=ERROR_RESPONSES)
    chat = ChatService(state)
    created = int(time.time())

    @router.get("/v1/models", response_model=ModelList, tags=["openai"], summary="List models")
    def list_models():
        return ModelList(data=[Model(id=chat.backend().info.model, created=created)])

    @router.get("/v1/models/{model_id:path}", response_model=Model, tags=["openai"], summary="Retrieve a model")
    def get_model(model_id: str):
        name = chat.backend().info.model
        if model_id != name:
            raise APIError(
                404,
                f"the model '{model_id}' does not exist; this server serves '{name}'",
                code="model_not_found",
                param="model",
            )
        return Model(id=name, created=created)

    @router.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        tags=["openai"],
        summary="Create a chat completion",
        responses=STREAM_RESPONSE,
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        """OpenAI Chat Completions with images (`image_url` parts), thinking split into `reasoning_content`,
        and the extensions `top_k`, `repetition_penalty` and `chat_template_kwargs.enable_thinking`."""
        return await chat.create(body, request)

    @router.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown_endpoint(path: str, request: Request):
        raise APIError(
            404,
            f"unknown endpoint {request.method} /v1/{path}; this server offers POST /v1/chat/completions "
            "and GET /v1/models",
            code="unknown_url",
        )

    return router


def openai_not_found(request: Request, exc: StarletteHTTPException):
    """404s that no /v1 route could even match (e.g. a path with a line break) in OpenAI's error JSON."""
    if request.url.path.startswith("/v1/"):
        return error_response(404, f"unknown endpoint {request.method} {request.url.path!r}", code="unknown_url")
    return JSONResponse({"detail": exc.detail}, status_code=404, headers=getattr(exc, "headers", None))
