"""The contract the UI, the API, the batch CLI and MCP call: the local engine and the remote backend
both implement it, so none of those callers knows which one serves it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .handle import RequestHandle
from .requests import GenerationRequest
from .results import GenerationResult


@dataclass(frozen=True)
class BackendInfo:
    model: str
    device: str
    dtype: str = "remote"
    attn: str = "remote"
    is_demo: bool = False
    max_image_tokens: int | None = None  # per image, the server's --max-pixels or the model's own cap; None: unknown


@runtime_checkable
class Backend(Protocol):
    @property
    def info(self) -> BackendInfo: ...

    @property
    def healthy(self) -> bool:
        """True while requests can be served (the model loaded and warm, or the remote server reachable)."""
        ...

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Queue a request; raises an `EngineError` (e.g. `QueueFullError`) when it cannot be taken."""
        ...

    def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def close_session(self, session_id: str) -> bool:
        """Free what is cached for a session; False when there was nothing (or nothing is kept here)."""
        ...

    def stats(self) -> dict: ...

    def shutdown(self) -> None: ...
