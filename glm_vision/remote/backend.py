"""A backend that fronts any OpenAI-compatible server (vLLM, SGLang, another glm-vision) instead of
loading a model here. It implements the backend contract, so the UI, the API and the batch CLI work
unchanged: the handle yields `TextDelta`s and one `GenerationResult`, `cancel()` closes the upstream
stream (the server stops generating), and upstream errors become the same `EngineError`s the local
engine raises. Never imports torch.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time

from ..backend import (
    BackendInfo,
    EngineUnavailableError,
    GenerationRequest,
    GenerationResult,
    ModelLoadError,
    QueueFullError,
)
from ..settings import Settings
from .errors import error_text, translate_error
from .handle import RemoteHandle
from .request import ImageURLs, completion_kwargs
from .stream import Relay

log = logging.getLogger(__name__)

HEALTH_PROBE_EVERY_S = 5.0


class RemoteBackend:
    def __init__(self, settings: Settings, client, model: str, upstream: dict | None = None) -> None:
        self.settings = settings
        self.client = client
        self.model = model
        self.api_base = settings.api_base or ""
        self._info = BackendInfo(
            model=model,
            device=f"remote {self.api_base}",
            is_demo=bool((upstream or {}).get("demo")),
            max_image_tokens=(upstream or {}).get("max_image_tokens"),
        )
        self._probed_at = time.monotonic()
        self._slots = threading.BoundedSemaphore(settings.queue_size)
        self._lock = threading.Lock()
        self._in_flight: set[RemoteHandle] = set()
        self._image_urls = ImageURLs()
        self._ids = itertools.count(1)
        self._healthy = True
        self.served = 0
        self.failed = 0

    @classmethod
    def connect(cls, settings: Settings, *, wait_s: float = 30.0) -> RemoteBackend:
        """Check the server answers and pick the model; waits up to `wait_s` for a server still starting."""
        import openai

        client = openai.OpenAI(
            base_url=settings.api_base,
            api_key=remote_api_key(settings),
            max_retries=0,
            timeout=openai.Timeout(300.0, connect=10.0),
        )
        model = pick_model(settings, list_models(client, settings, wait_s))
        upstream = upstream_health(settings)
        log.info("fronting %s at %s%s", model, settings.api_base, " (a demo model)" if upstream.get("demo") else "")
        return cls(settings, client, model, upstream)

    # ------------------------------------------------------------------ the backend contract
    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def healthy(self) -> bool:
        """Whether the upstream answers: what the last request saw, re-checked every few seconds
        (GET /models) so /health turns 503 when the upstream goes down between requests."""
        if time.monotonic() - self._probed_at >= HEALTH_PROBE_EVERY_S:
            self._probed_at = time.monotonic()
            self._healthy = self._probe()
        return self._healthy

    def _probe(self) -> bool:
        try:
            self.client.with_options(timeout=2.0).models.list()
            return True
        except Exception as exc:  # noqa: BLE001 - any failure to answer means unhealthy; the reason is logged
            log.warning(
                "the remote server at %s does not answer: %s",
                self.api_base,
                translate_error(exc, self.api_base).message,
            )
            return False

    def submit(self, request: GenerationRequest) -> RemoteHandle:
        request.check(self.settings.max_images_per_message)
        if not self._slots.acquire(blocking=False):
            raise QueueFullError(
                f"the server is busy: {self.settings.queue_size} requests are already in flight to the remote server; "
                "try again in a few seconds",
                retry_after_s=2.0,
            )
        handle = RemoteHandle(request)
        with self._lock:
            self._in_flight.add(handle)
        thread = threading.Thread(
            target=self._run, args=(handle,), name=f"glm-vision-remote-{next(self._ids)}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:
            self._release(handle)
            raise EngineUnavailableError("cannot start another request right now; try again") from None
        return handle

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return self.submit(request).wait()

    def close_session(self, session_id: str) -> bool:
        return False  # the remote server keeps its own (prefix) caches

    def stats(self) -> dict:
        return {
            "backend": "openai",
            "api_base": self.api_base,
            "model": self.model,
            "in_flight": len(self._in_flight),
            "served": self.served,
            "failed": self.failed,
        }

    def shutdown(self) -> None:
        with self._lock:
            handles = list(self._in_flight)
        for handle in handles:
            handle.cancel()
        self.client.close()

    # ------------------------------------------------------------------ one request
    def _run(self, handle: RemoteHandle) -> None:
        relay = Relay(handle)
        try:
            stream = self.client.chat.completions.create(
                **completion_kwargs(handle.request, self.model, self._image_urls)
            )
            handle.attach(stream)
            relay.read(stream)
            self._healthy = True
            self.served += 1
            handle._finish(relay.result(), None)
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the caller as an EngineError
            if handle.cancelled.is_set():
                handle._finish(relay.result(), None)
            else:
                handle._finish(None, self._failure(exc))
        finally:
            self._release(handle)

    def _failure(self, exc: BaseException):
        import openai

        self.failed += 1
        if isinstance(exc, openai.APIConnectionError):
            self._healthy = False
        error = translate_error(exc, self.api_base)
        log.warning("remote request failed: %s", error.message)
        return error

    def _release(self, handle: RemoteHandle) -> None:
        with self._lock:
            self._in_flight.discard(handle)
        self._slots.release()


def list_models(client, settings: Settings, wait_s: float) -> list[str]:
    """The upstream's model names, retrying while it is still starting."""
    import openai

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return [m.id for m in client.models.list()]
        except (openai.APIConnectionError, openai.InternalServerError) as exc:
            if time.monotonic() >= deadline:
                raise ModelLoadError(
                    f"cannot reach the OpenAI-compatible server at {settings.api_base} ({type(exc).__name__}); "
                    "check --api-base (it usually ends in /v1) and that the server is running"
                ) from None
            time.sleep(1.0)
        except openai.APIStatusError as exc:
            raise ModelLoadError(
                f"the server at {settings.api_base} answered GET /models with HTTP {exc.status_code}: "
                f"{error_text(exc)}" + status_hint(exc.status_code, settings)
            ) from None


def upstream_health(settings: Settings) -> dict:
    """What a glm-vision upstream says about itself at /health (demo model, image token cap); {} for
    servers that say nothing (vLLM and SGLang answer /health with an empty body)."""
    import httpx

    root = (settings.api_base or "").rstrip("/").removesuffix("/v1")
    try:
        body = httpx.get(
            root + "/health", timeout=5.0, headers={"Authorization": f"Bearer {remote_api_key(settings)}"}
        ).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def pick_model(settings: Settings, names: list[str]) -> str:
    if settings.remote_model:
        if names and settings.remote_model not in names:
            log.warning(
                "the remote server lists %s, not %s; asking for %s anyway",
                ", ".join(names),
                settings.remote_model,
                settings.remote_model,
            )
        return settings.remote_model
    if names:
        return names[0]
    raise ModelLoadError(f"the server at {settings.api_base} lists no models; name one with --remote-model")


def remote_api_key(settings: Settings) -> str:
    """The key for the remote server: --remote-api-key, else OPENAI_API_KEY, else a placeholder
    (vLLM and SGLang without --api-key accept anything)."""
    return settings.remote_api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"


def status_hint(status: int, settings: Settings) -> str:
    if status in (401, 403):
        return "; set --remote-api-key"
    if status == 404 and not (settings.api_base or "").rstrip("/").endswith("/v1"):
        return (
            "; OpenAI-compatible servers serve their API under /v1: try --api-base "
            + (settings.api_base or "").rstrip("/")
            + "/v1"
        )
    return ""
