"""A backend that fronts any OpenAI-compatible server (vLLM, SGLang, another glm-vision) instead of
loading a model here.

It offers the engine's interface (`submit(request) -> handle`, `info`, `healthy`, `close_session`,
`stats`), so the UI, the API and the batch CLI work unchanged: the handle yields `TextDelta`s and
one `GenerationResult`, `cancel()` closes the upstream stream (the server stops generating), and
upstream errors become the same `EngineError`s the local engine raises.

Reasoning that the upstream returns apart (`reasoning_content`, or `reasoning` in newer vLLM) is
put back between `<think>` and `</think>` in the text, so the thinking split downstream is the
same as for the local model; servers that return the raw `<think>` text work as well.
"""

from __future__ import annotations

import base64
import io
import itertools
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from .conversation import THINK_CLOSE, THINK_OPEN, Message
from .engine.loader import ModelLoadError
from .engine.types import (
    ContextOverflowError,
    EngineError,
    EngineUnavailableError,
    GenerationRequest,
    GenerationResult,
    QueueFullError,
    Usage,
)
from .engine.worker import RequestHandle
from .images import InputImage
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteInfo:
    model: str
    device: str
    dtype: str = "remote"
    attn: str = "remote"
    is_demo: bool = False
    max_image_tokens: int | None = None  # the remote server's cap is not known here


class _NoLocalQueue:
    """Requests go straight to the remote server: nothing waits here."""

    def position_of(self, handle) -> int:
        return 0


class RemoteHandle(RequestHandle):
    def __init__(self, request: GenerationRequest) -> None:
        super().__init__(request, _NoLocalQueue())
        self._stream = None
        self._stream_lock = threading.Lock()

    def cancel(self) -> None:
        super().cancel()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            _shut_down_socket(stream)
            try:
                stream.close()  # drops the connection: the upstream server stops generating
            except Exception:  # noqa: BLE001 - closing twice or a connection already gone
                pass


def _shut_down_socket(stream) -> None:
    """Shut the stream's socket down. Another thread may be blocked reading it, holding the
    connection, and `close()` from here does not always wake that read; a shutdown does (the read
    sees the end of the stream), and the upstream server sees the disconnect at once."""
    try:
        network = stream.response.extensions["network_stream"]
        sock = network.get_extra_info("socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - no socket (another transport) or already closed
        pass


def _error_text(exc) -> str:
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
        return QueueFullError(f"the remote server is busy: {_error_text(exc)}", retry_after_s=retry_s)
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
        message = _error_text(exc)
        status = exc.status_code
        if status >= 500:
            error: EngineError = EngineUnavailableError(f"the remote server failed (HTTP {status}): {message}")
        else:
            lowered = message.lower()
            body = exc.body if isinstance(exc.body, dict) else {}
            code = (body.get("error") if isinstance(body.get("error"), dict) else body).get("code")
            if code == "context_length_exceeded" or ("context" in lowered and any(
                    word in lowered for word in ("length", "maximum", "too long", "limit"))):
                error = ContextOverflowError(message)
            else:
                error = EngineError(message)
                if status in (404, 413):
                    error.status = status
        return error
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return EngineError(f"the remote server reported an error: {_error_text(exc)}")
    return EngineUnavailableError(f"talking to the remote server failed: {type(exc).__name__}: {exc}")


class RemoteBackend:
    def __init__(self, settings: Settings, client, model: str) -> None:
        self.settings = settings
        self.client = client
        self.model = model
        self.api_base = settings.api_base or ""
        self._slots = threading.BoundedSemaphore(settings.queue_size)
        self._lock = threading.Lock()
        self._in_flight: set[RemoteHandle] = set()
        self._png_cache: OrderedDict[str, str] = OrderedDict()
        self._ids = itertools.count(1)
        self._healthy = True
        self.served = 0
        self.failed = 0

    # ------------------------------------------------------------------ connecting
    @classmethod
    def connect(cls, settings: Settings, *, wait_s: float = 30.0) -> "RemoteBackend":
        """Check the server answers and pick the model; waits up to `wait_s` for a server still starting."""
        import openai

        client = openai.OpenAI(
            base_url=settings.api_base,
            api_key=remote_api_key(settings),
            max_retries=0,
            timeout=openai.Timeout(300.0, connect=10.0),
        )
        deadline = time.monotonic() + wait_s
        while True:
            try:
                names = [m.id for m in client.models.list()]
                break
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
                    f"{_error_text(exc)}" + ("; set --remote-api-key" if exc.status_code in (401, 403) else "")
                ) from None
        if settings.remote_model:
            if names and settings.remote_model not in names:
                log.warning("the remote server lists %s, not %s; asking for %s anyway",
                            ", ".join(names), settings.remote_model, settings.remote_model)
            model = settings.remote_model
        elif names:
            model = names[0]
        else:
            raise ModelLoadError(f"the server at {settings.api_base} lists no models; name one with --remote-model")
        log.info("fronting %s at %s", model, settings.api_base)
        return cls(settings, client, model)

    # ------------------------------------------------------------------ the engine interface
    @property
    def info(self) -> RemoteInfo:
        return RemoteInfo(model=self.model, device=f"remote {self.api_base}")

    @property
    def healthy(self) -> bool:
        return self._healthy

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
        thread = threading.Thread(target=self._run, args=(handle,), name=f"glm-vision-remote-{next(self._ids)}", daemon=True)
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
    def _release(self, handle: RemoteHandle) -> None:
        with self._lock:
            self._in_flight.discard(handle)
        self._slots.release()

    def _image_url(self, image: InputImage) -> str:
        with self._lock:
            cached = self._png_cache.get(image.digest)
            if cached is not None:
                self._png_cache.move_to_end(image.digest)
                return cached
        buffer = io.BytesIO()
        image.image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        with self._lock:
            self._png_cache[image.digest] = url
            while len(self._png_cache) > 32:
                self._png_cache.popitem(last=False)
        return url

    def _messages(self, messages: list[Message]) -> list[dict]:
        converted = []
        for message in messages:
            if message.role == "user" and message.images:
                parts = [{"type": "image_url", "image_url": {"url": self._image_url(image)}} for image in message.images]
                parts.append({"type": "text", "text": message.text})
                converted.append({"role": "user", "content": parts})
            else:
                converted.append({"role": message.role, "content": message.text})
        return converted

    def _create_stream(self, request: GenerationRequest):
        sampling = request.sampling
        extra_body = {
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "repetition_penalty": sampling.repetition_penalty,
            "chat_template_kwargs": {"enable_thinking": request.enable_thinking},
        }
        kwargs = dict(
            model=self.model,
            messages=self._messages(request.messages),
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra_body,
        )
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        return self.client.chat.completions.create(**kwargs)

    def _run(self, handle: RemoteHandle) -> None:
        request = handle.request
        started = time.perf_counter()
        usage = Usage(images=sum(len(m.images) for m in request.messages))
        parts: list[str] = []
        finish_reason = "stop"
        first_at = None
        in_reasoning = False

        def emit(text: str) -> None:
            nonlocal first_at
            if first_at is None:
                first_at = time.perf_counter()
                usage.ttft_s = first_at - started
            parts.append(text)
            handle._emit(text)

        try:
            stream = self._create_stream(request)
            with handle._stream_lock:
                handle._stream = stream
            if handle.cancelled.is_set():
                stream.close()
            for chunk in stream:
                if handle.cancelled.is_set():
                    break
                if chunk.usage is not None:
                    usage.prompt_tokens = chunk.usage.prompt_tokens or 0
                    usage.completion_tokens = chunk.usage.completion_tokens or 0
                    details = chunk.usage.prompt_tokens_details
                    usage.cached_tokens = (details.cached_tokens or 0) if details is not None else 0
                for choice in chunk.choices:
                    delta = choice.delta
                    extra = delta.model_extra or {}
                    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
                    if reasoning:
                        if not in_reasoning:
                            emit(THINK_OPEN)
                            in_reasoning = True
                        emit(reasoning)
                    if delta.content:
                        if in_reasoning:
                            emit(THINK_CLOSE + "\n")
                            in_reasoning = False
                        emit(delta.content)
                    if choice.finish_reason:
                        finish_reason = "length" if choice.finish_reason == "length" else "stop"
            if in_reasoning and finish_reason == "stop":
                emit(THINK_CLOSE)
            if handle.cancelled.is_set():
                finish_reason = "cancelled"
            self._healthy = True
            self.served += 1
            if first_at is not None:
                usage.decode_s = time.perf_counter() - first_at
            if not usage.completion_tokens:
                usage.completion_tokens = len(parts)  # a server that sent no usage: count the chunks
            result = GenerationResult(text="".join(parts), finish_reason=finish_reason, usage=usage, token_ids=())
            handle._finish(result, None)
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the caller as an EngineError
            if handle.cancelled.is_set():
                result = GenerationResult(text="".join(parts), finish_reason="cancelled", usage=usage, token_ids=())
                handle._finish(result, None)
            else:
                import openai

                self.failed += 1
                if isinstance(exc, openai.APIConnectionError):
                    self._healthy = False
                error = translate_error(exc, self.api_base)
                log.warning("remote request failed: %s", error.message)
                handle._finish(None, error)
        finally:
            self._release(handle)


def remote_api_key(settings: Settings) -> str:
    """The key for the remote server: --remote-api-key, else OPENAI_API_KEY, else a placeholder
    (vLLM and SGLang without --api-key accept anything)."""
    return getattr(settings, "remote_api_key", None) or os.environ.get("OPENAI_API_KEY") or "EMPTY"
