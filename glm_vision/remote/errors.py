"""The remote server's failures as the engine's errors (and so the same HTTP statuses)."""

from __future__ import annotations

from ..backend import ContextOverflowError, EngineError, EngineUnavailableError, QueueFullError


def error_text(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") or inner.get("detail")
        if message:
            return str(message)
    return str(getattr(exc, "message", None) or exc)


def translate_error(exc: BaseException, api_base: str) -> EngineError:
    """openai client exceptions -> the engine's errors (and so the same HTTP statuses)."""
    import openai

    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, openai.RateLimitError):
        retry = exc.response.headers.get("retry-after", "") if exc.response is not None else ""
        try:
            retry_s = float(retry)
        except ValueError:
            retry_s = 5.0
        return QueueFullError(f"the remote server is busy: {error_text(exc)}", retry_after_s=retry_s)
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return EngineUnavailableError(
            f"the remote server at {api_base} refused this server's API key (HTTP {exc.status_code}); "
            "set --remote-api-key (or GLMV_REMOTE_API_KEY)"
        )
    if isinstance(exc, openai.APITimeoutError):
        return EngineUnavailableError(f"the remote server at {api_base} did not answer in time; try again")
    if isinstance(exc, openai.APIConnectionError):
        return EngineUnavailableError(f"cannot reach the remote server at {api_base}; try again shortly")
    if isinstance(exc, openai.APIStatusError):
        message = error_text(exc)
        status = exc.status_code
        if status >= 500:
            error: EngineError = EngineUnavailableError(f"the remote server failed (HTTP {status}): {message}")
        else:
            lowered = message.lower()
            body = exc.body if isinstance(exc.body, dict) else {}
            inner = body.get("error") if isinstance(body.get("error"), dict) else body
            param = inner.get("param") if isinstance(inner.get("param"), str) else None  # the field the upstream named
            if inner.get("code") == "context_length_exceeded" or (
                "context" in lowered and any(word in lowered for word in ("length", "maximum", "too long", "limit"))
            ):
                error = ContextOverflowError(message, param=param or "messages")
            else:
                error = EngineError(message, param=param)
                if status in (404, 413):
                    error.status = status
        return error
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return EngineError(f"the remote server reported an error: {error_text(exc)}")
    return EngineUnavailableError(f"talking to the remote server failed: {type(exc).__name__}: {exc}")
