"""The route class of every /v1 endpoint: API key and body size checked before the body is read,
and every error answered as OpenAI's error JSON (validation errors as 400, never FastAPI's 422)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backend import EngineError
from .auth import check_api_key
from .errors import APIError, engine_error, error_response, validation_message
from .limits import body_limit, check_declared_length, limited_receive


class OpenAIRoute(APIRoute):
    state: Any = None  # the AppState; bound by `route_class_for`

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        settings = self.state.settings

        async def guarded(request: Request):
            try:
                check_api_key(request.headers.get("authorization", ""), settings.api_key)
                check_content_encoding(request.headers.get("content-encoding"))
                limit = body_limit(settings)
                check_declared_length(request.headers.get("content-length"), limit)
                return await handler(Request(request.scope, limited_receive(request.receive, limit)))
            except Exception as exc:  # noqa: BLE001 - answered by `error_answer` or raised again
                return error_answer(exc)

        return guarded


def check_content_encoding(encoding: str | None) -> None:
    if encoding not in (None, "", "identity"):
        raise APIError(
            415,
            f"Content-Encoding {encoding!r} is not supported; send the JSON body uncompressed",
            code="unsupported_content_encoding",
        )


def error_answer(exc: Exception):
    """Any error a route raised, as OpenAI's error JSON; anything unexpected is raised again."""
    if isinstance(exc, APIError):
        return exc.response()
    if isinstance(exc, RequestValidationError):
        message, param = validation_message(exc)
        return error_response(400, message, code="invalid_request", param=param)
    if isinstance(exc, EngineError):
        return engine_error(exc).response()
    if isinstance(exc, StarletteHTTPException):  # FastAPI's own (e.g. a body it could not parse, not UTF-8)
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        return error_response(status, str(exc.detail), headers=exc.headers)
    raise exc


def route_class_for(state) -> type[OpenAIRoute]:
    return type("BoundOpenAIRoute", (OpenAIRoute,), {"state": state})
