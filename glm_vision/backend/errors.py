"""The errors every backend raises: each carries a message meant for the user and an HTTP status."""

from __future__ import annotations


class EngineError(Exception):
    """A request the engine refuses or cannot finish; `message` is meant for the user."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, when one is


class ContextOverflowError(EngineError):
    """The conversation does not fit the context: the messages are at fault (as OpenAI's `param` says)."""

    code = "context_length_exceeded"

    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param)


class InvalidSchemaError(EngineError):
    """A response format (JSON schema, regex, grammar) that cannot be compiled; found before any GPU work."""

    code = "invalid_schema"


class QueueFullError(EngineError):
    status = 429
    code = "server_busy"

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class GpuOutOfMemoryError(EngineError):
    status = 503
    code = "out_of_memory"


class EngineUnavailableError(EngineError):
    status = 503
    code = "engine_unavailable"


class ModelLoadError(RuntimeError):
    """The model (or the remote server) cannot be loaded; the message says why and what to do."""
