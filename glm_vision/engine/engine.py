"""The engine facade the UI, the API and the batch CLI call: submit a conversation, stream the answer.

engine = Engine.load(settings)
for item in engine.submit(GenerationRequest(messages, session_id="tab-1")):
    ...  # TextDelta(text) ..., then one GenerationResult
"""

from __future__ import annotations

import logging
import threading
import time

from ..backend import BackendInfo, EngineError, GenerationRequest, GenerationResult, RequestHandle
from ..settings import PIXELS_PER_IMAGE_TOKEN, Settings
from . import compile_watch
from .cache import FeatureCache
from .loader import LoadedModel, load_model
from .runner import ModelRunner
from .scheduler import Scheduler
from .sessions import SessionStore
from .slab import KVSlab, kv_geometry
from .transfer import reserve_pinned
from .worker import GpuWorker

log = logging.getLogger(__name__)
MB = 1024 * 1024


GIB = 1024**3
MAX_AUTO_BATCH = 32
# Picture sizes the warm-up encodes on a GPU, besides the largest area the settings allow: after a warm-up on
# one small picture, the first picture of each new size paid 15-45 ms more than its second on the H200, the
# host choosing and loading the encoder's matrix-product kernels for its row count (bench/RESULTS.md,
# twenty-second session).
WARM_PICTURE_SIZES = ((1920, 1080), (1280, 720), (1080, 1920), (1024, 768))
ACTIVATION_RESERVE_BYTES = 4 * GIB  # vision encoder and prefill activations, CUDA graph pools


def decode_slots(settings: Settings, loaded: LoadedModel) -> int:
    """How many sequences decode together: --max-batch, or what free GPU memory holds at full context."""
    if settings.max_batch:
        return settings.max_batch
    if loaded.device != "cuda":
        return 4
    import torch

    per_token = KVSlab.bytes_per_token(**kv_geometry(loaded.model.config.get_text_config()), dtype=loaded.model.dtype)
    free, _ = torch.cuda.mem_get_info()
    budget = free - ACTIVATION_RESERVE_BYTES - settings.kv_cache_mb * MB  # sessions' saved KV lives beside the slab
    slots = int(budget * 0.9) // (settings.max_context_tokens * per_token)
    return max(1, min(MAX_AUTO_BATCH, slots))


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
        on_cuda = loaded.device == "cuda"
        fast = settings.compile == "on" or (settings.compile == "auto" and on_cuda)
        self.runner = ModelRunner(
            loaded,
            self.features,
            max_context_tokens=settings.max_context_tokens,
            default_max_image_tokens=settings.max_image_tokens,
            slots=decode_slots(settings, loaded),
            prefill_chunk_tokens=settings.prefill_chunk_tokens,
            use_graphs=fast and on_cuda,
            compile_math=fast and on_cuda,
            decode_attention=settings.decode_attention,
            decode_matmul=settings.decode_matmul,
            decode_pdl=settings.decode_pdl,
        )
        self.scheduler = Scheduler(
            self.runner,
            self.sessions,
            max_batch=self.runner.slab.slots,
            use_caches=use_caches,
            policy=settings.scheduler_policy,
        )
        self.worker = GpuWorker(self.scheduler, queue_size=settings.queue_size)
        self.worker.start()
        self.ready = False
        self._closing = threading.Event()
        # a function of the sessions, not a method: the thread holds no reference to the engine (see shutdown)
        self._sweeper = threading.Thread(
            target=_sweep_idle_sessions, args=(self.sessions, self._closing), name="glm-vision-sessions", daemon=True
        )
        self._sweeper.start()

    @classmethod
    def load(cls, settings: Settings, **kwargs) -> Engine:
        return cls(settings, load_model(settings), **kwargs)

    @property
    def info(self) -> BackendInfo:
        m = self.loaded
        cap = min(self.settings.max_image_tokens, self.runner.builder.max_tokens_per_image)
        return BackendInfo(
            model=m.name, device=m.device, dtype=m.dtype, attn=m.attn, is_demo=m.is_demo, max_image_tokens=cap
        )

    @property
    def healthy(self) -> bool:
        return self.ready and self.worker.alive

    # ------------------------------------------------------------------ requests
    def submit(self, request: GenerationRequest) -> RequestHandle:
        request.check(self.settings.max_images_per_message)
        if request.n > self.scheduler.max_batch:
            raise EngineError(
                f"n is {request.n}; this server decodes at most {self.scheduler.max_batch} sequences "
                "together (--max-batch)",
                param="n",
            )
        self.runner.outputs.check(request)  # an invalid schema is a 400 here, before any GPU work
        if not self.worker.alive:
            log.error("GPU worker is not running (deaths so far: %d); restarting it", self.worker.deaths)
            self.worker.start()
        return self.worker.submit(request)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return self.submit(request).wait()

    def close_session(self, session_id: str) -> bool:
        """Free a session's KV and the image features of its own scope."""
        return self.sessions.close(session_id)

    def warmup(self) -> None:
        """Capture the decode graphs, then serve throwaway requests of different prompt lengths, one
        with an image, and one prompt prefilled while another request decodes (a pass that carries
        decode rows), so that compilation for new shapes and the encoder's first-call setup happen
        here and not in a user's first request (compile_watch logs and counts those it missed)."""
        started = time.perf_counter()
        with compile_watch.warming_up():
            self._warm(started)
        log.info("engine warm in %.1f s", time.perf_counter() - started)
        self.ready = True

    def _warm(self, started: float) -> None:
        from ..backend import SamplingParams
        from ..conversation import Message

        if self.runner.forward.use_graphs:
            self.runner.forward.warmup(max_batch=self.runner.slab.slots)
        picture = _solid_picture((224, 168), (200, 120, 40))
        messages = [Message("user", "Hi"), Message("user", "Describe this picture. " * 24, [picture])]
        for message in messages + self._longer_than_a_graph_pass():
            self._answer_briefly(message)
        log.info("warm-up requests served %.1f s into the warm-up", time.perf_counter() - started)
        if self.runner.slab.slots > 1:
            streaming = self.submit(
                GenerationRequest([Message("user", "Hello")], SamplingParams.greedy(32, min_new_tokens=32))
            )
            first = next(iter(streaming))  # decoding now: the next prompts' passes carry it
            for repeat in (40, 60):  # two lengths: compiled pieces first seen here become shape-generic now
                self._answer_briefly(Message("user", "What is this? " * repeat, [picture]))
            if not isinstance(first, GenerationResult):
                streaming.wait()
        if self.loaded.device.startswith("cuda"):
            reserve_pinned()
            self.warm_picture_sizes(WARM_PICTURE_SIZES)
            self._warm_constraints()

    def _longer_than_a_graph_pass(self) -> list:
        """Where passes are CUDA graphs, a prompt of about the longest pass a step takes while nothing
        decodes, longer than the captured ones (it runs on buffers of its own, eagerly), if the context
        holds it."""
        from ..conversation import Message
        from .prompt import repeated_to_length

        pieces = self.runner.forward.passes.pieces
        tokens = min(self.runner.solo_pass_tokens, self.settings.max_context_tokens - 512) * 0.95
        if not pieces.use_graphs or tokens <= pieces.capacity:
            return []
        return [Message("user", repeated_to_length(self.runner.tokenizer, "Hello there. ", int(tokens)))]

    def warm_picture_sizes(self, sizes) -> list[tuple[int, int]]:
        """Encode one picture of each of `sizes` (width, height) that fits, and one of the largest area the
        settings and the context allow, each in a throwaway request of two tokens; returns the sizes encoded."""
        from ..conversation import Message

        area = min(self.settings.max_pixels, (self.settings.max_context_tokens - 512) * PIXELS_PER_IMAGE_TOKEN)
        if area < 4 * PIXELS_PER_IMAGE_TOKEN:  # no room in the context for a picture beside a prompt
            return []
        largest = (int((area * 16 / 9) ** 0.5), int((area * 9 / 16) ** 0.5))
        encoded = []
        for width, height in [*sizes, largest]:
            if width * height > area:
                continue
            picture = _solid_picture((width, height), (90, 140, 200))
            result = self._answer_briefly(Message("user", "What is this?", [picture]))
            encoded += [(width, height)] * result.usage.images_encoded
        return encoded

    def _answer_briefly(self, message, **options) -> GenerationResult:
        """A greedy answer of two tokens to `message`, served for what it warms up."""
        from ..backend import SamplingParams

        return self.generate(GenerationRequest([message], SamplingParams.greedy(2), **options))

    def _warm_constraints(self) -> None:
        """The first structured answer would otherwise wait for the tokenizer tables (seconds for a
        150k vocabulary) and the Triton compile of the bitmask kernel."""
        from ..backend import OutputConstraint
        from ..conversation import Message

        try:
            self._answer_briefly(Message("user", "Hi"), constraint=OutputConstraint("json_object"))
        except EngineError as exc:  # no xgrammar: structured requests say so themselves
            log.warning("structured outputs not warmed up: %s", exc)

    def shutdown(self) -> None:
        """Stop the GPU worker and the idle-session sweeper and wait for both, so that no thread of the engine
        ends while the interpreter exits: the last references a thread drops as it ends are freed in it, and a
        tensor freed then aborts the process ("terminate called without an active exception")."""
        self._closing.set()
        self.worker.stop()
        self._sweeper.join(timeout=10)

    def stats(self) -> dict:
        return {
            "sessions": len(self.sessions),
            "kv_cache_bytes": self.sessions.kv_bytes,
            "kv_evictions": self.sessions.kv_evictions,
            "feature_cache": vars(self.features.stats).copy(),
            "queued": self.worker.queued,
            "served": self.scheduler.served,
            "prefill_tokens": self.runner.prefill_tokens,
            "running": len(self.scheduler.rows) + len(self.scheduler.prefilling),
            "peak_batch": self.scheduler.peak_batch,
            "worker_alive": self.worker.alive,
        }


def _sweep_idle_sessions(sessions: SessionStore, closing: threading.Event) -> None:
    while not closing.wait(30.0):
        for session_id in sessions.sweep_idle():
            log.info("freed idle session %s", session_id)


def _solid_picture(size: tuple[int, int], color: tuple[int, int, int]):
    """A one-colour picture of `size` (width, height), loaded as an upload is: warm-up input."""
    from PIL import Image

    from ..images import load_image

    return load_image(Image.new("RGB", size, color))
