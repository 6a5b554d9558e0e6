"""The engine facade the UI, the API and the batch CLI call: submit a conversation, stream the answer.

    engine = Engine.load(settings)
    for item in engine.submit(GenerationRequest(messages, session_id="tab-1")):
        ...  # TextDelta(text) ..., then one GenerationResult
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ..cache import FeatureCache
from ..sessions import SessionStore
from ..settings import Settings
from .decode import SlabDecoder
from .loader import LoadedModel, load_model
from .runner import ModelRunner
from .types import EngineError, GenerationRequest, GenerationResult, TextDelta
from .worker import GpuWorker, RequestHandle

log = logging.getLogger(__name__)
MB = 1024 * 1024


def make_decoder(settings: Settings, loaded: LoadedModel) -> SlabDecoder | None:
    """The static-KV decode path: CUDA graphs + compiled math on a GPU ('auto' or 'on'); eager on
    the CPU only when asked for ('on'), where it serves to check the path against transformers."""
    on_cuda = loaded.device == "cuda"
    if settings.compile == "off" or (settings.compile == "auto" and not on_cuda):
        return None
    return SlabDecoder(loaded.model, settings.max_context_tokens, use_graphs=on_cuda, compile_math=on_cuda)


@dataclass(frozen=True)
class EngineInfo:
    model: str
    device: str
    dtype: str
    attn: str
    is_demo: bool


class Engine:
    def __init__(self, settings: Settings, loaded: LoadedModel, *, use_caches: bool = True) -> None:
        self.settings = settings
        self.loaded = loaded
        self.use_caches = use_caches
        self.features = FeatureCache(settings.vision_cache_mb * MB)
        self.sessions = SessionStore(
            self.features,
            kv_budget_bytes=settings.kv_cache_mb * MB,
            idle_s=settings.session_idle_minutes * 60,
            max_sessions=settings.max_sessions,
        )
        self.runner = ModelRunner(
            loaded,
            self.features,
            max_context_tokens=settings.max_context_tokens,
            default_max_image_tokens=settings.max_image_tokens,
            decoder=make_decoder(settings, loaded),
        )
        self.worker = GpuWorker(self._run, queue_size=settings.queue_size)
        self.worker.start()
        self.ready = False
        self._sweeper = threading.Thread(target=self._sweep_loop, name="glm-vision-sessions", daemon=True)
        self._closing = threading.Event()
        self._sweeper.start()

    @classmethod
    def load(cls, settings: Settings, **kwargs) -> "Engine":
        return cls(settings, load_model(settings), **kwargs)

    @property
    def info(self) -> EngineInfo:
        m = self.loaded
        return EngineInfo(model=m.name, device=m.device, dtype=m.dtype, attn=m.attn, is_demo=m.is_demo)

    @property
    def healthy(self) -> bool:
        return self.ready and self.worker.alive

    # ------------------------------------------------------------------ requests
    def submit(self, request: GenerationRequest) -> RequestHandle:
        self._check(request)
        if not self.worker.alive:
            log.error("GPU worker is not running (deaths so far: %d); restarting it", self.worker.deaths)
            self.worker.start()
        return self.worker.submit(request)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return self.submit(request).wait()

    def stream_text(self, request: GenerationRequest):
        """Plain text deltas; the GenerationResult is the generator's return value."""
        for item in self.submit(request):
            if isinstance(item, TextDelta):
                yield item.text
            else:
                return item

    def close_session(self, session_id: str) -> bool:
        """Free a session's KV and the image features of its own scope."""
        return self.sessions.close(session_id)

    def drop_cache_scope(self, scope: str) -> int:
        """Free the image features of a shared scope (e.g. a tenant); returns the bytes freed."""
        return self.features.drop_scope(scope)

    def warmup(self) -> None:
        from ..conversation import Message
        from .types import SamplingParams

        if self.runner.decoder is not None:
            started = time.perf_counter()
            self.runner.decoder.warmup()
            log.info("decode graphs ready in %.1f s", time.perf_counter() - started)
        self.generate(GenerationRequest([Message("user", "Hi")], SamplingParams.greedy(max_new_tokens=2)))
        self.ready = True

    def shutdown(self) -> None:
        self._closing.set()
        self.worker.stop()

    def stats(self) -> dict:
        return {
            "sessions": len(self.sessions),
            "kv_cache_bytes": self.sessions.kv_bytes,
            "kv_evictions": self.sessions.kv_evictions,
            "feature_cache": vars(self.features.stats).copy(),
            "queued": self.worker.queued,
            "served": self.worker.served,
            "worker_alive": self.worker.alive,
        }

    # ------------------------------------------------------------------ internals
    def _check(self, request: GenerationRequest) -> None:
        if not request.messages:
            raise EngineError("the conversation is empty; send at least one user message")
        if request.messages[-1].role != "user":
            raise EngineError("the last message must come from the user")
        limit = self.settings.max_images_per_message
        for message in request.messages:
            if len(message.images) > limit:
                raise EngineError(f"a message has {len(message.images)} images; at most {limit} images per message are accepted")
        if request.max_image_tokens is not None and request.max_image_tokens < 4:
            raise EngineError("the image budget must be at least 4 tokens per image")

    def _run(self, request: GenerationRequest, cancel: threading.Event, emit) -> GenerationResult:
        session = None
        if self.use_caches and request.session_id is not None:
            session = self.sessions.acquire(request.session_id)
        try:
            return self.runner.generate(request, session, cancel, emit)
        finally:
            if session is not None:
                self.sessions.release(session)

    def _sweep_loop(self) -> None:
        while not self._closing.wait(30.0):
            for session_id in self.sessions.sweep_idle():
                log.info("freed idle session %s", session_id)
