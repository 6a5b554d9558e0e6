"""OpenAI's error JSON: the one shape every API error takes, with a fitting status."""

from __future__ import annotations

import math

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..backend import EngineError, QueueFullError

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(HTTPException):
    """An error answered as OpenAI's error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message, self.code, self.param = message, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status_code, self.message, code=self.code, param=self.param, headers=self.headers)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    return {
        "error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}
    }


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, code=code, param=param), status_code=status, headers=headers)


def engine_error(exc: EngineError) -> APIError:
    headers = None
    if isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    elif exc.status == 503:
        headers = {"Retry-After": "5"}
    return APIError(exc.status, exc.message, code=exc.code, param=exc.param, headers=headers)


def _bad_content_part(errors: list[dict]) -> str | None:
    """'messages.I.content.J' when a content list holds something that is not a part object (a bare
    string, a number): pydantic reports one error per union member, which means nothing to a client."""
    for error in errors:
        loc = [part for part in error.get("loc", ()) if part != "body"]
        if (
            len(loc) >= 5
            and loc[0] == "messages"
            and loc[2] == "content"
            and str(loc[3]).startswith("list[")
            and error.get("type") in ("model_type", "model_attributes_type")
        ):
            return f"messages.{loc[1]}.content.{loc[4]}"
    return None


NOT_AN_OBJECT = (
    'the request body must be a JSON object such as {"model": "...", "messages": [...]}, '
    "sent with Content-Type: application/json"
)
TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _field_path(error: dict) -> list[str]:
    """The error's location in the request, without the union members pydantic names in it ('TextPart', 'str',
    'list[...]'): they mean nothing to a client."""
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    return [part for part in loc if not (part[:1].isupper() or "[" in part or part in TYPE_TAGS)]


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "the request body is not valid", None
    first = errors[0]
    loc = _field_path(first)
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    if not loc and first.get("type") in ("model_type", "model_attributes_type", "dict_type"):
        return NOT_AN_OBJECT, None
    message = first.get("msg", "invalid value")
    part = _bad_content_part(errors)
    if part is not None:
        return (
            f'{part}: a content part must be an object such as {{"type": "text", "text": "..."}} or '
            f'{{"type": "image_url", "image_url": {{"url": "data:..."}}}}'
        ), part
    if len(loc) == 3 and loc[0] == "messages" and loc[2] == "content":  # neither a string nor a list
        return f"{param}: a message's content must be a string or a list of content parts", param
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param
