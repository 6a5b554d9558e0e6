"""The backend contract and its vocabulary: requests in, text deltas and a result out, the errors.

Torch-free: the web layer, the batch CLI and the remote backend import only this, never the engine."""

from .answers import AnswerDelta, answer_deltas, answer_deltas_async
from .contract import Backend, BackendInfo
from .errors import (
    ContextOverflowError,
    EngineError,
    EngineUnavailableError,
    GpuOutOfMemoryError,
    ModelLoadError,
    QueueFullError,
)
from .handle import RequestHandle
from .requests import (
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    GenerationRequest,
    SamplingParams,
)
from .results import GenerationResult, TextDelta, Usage

__all__ = [
    "DEFAULT_REPETITION_PENALTY",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_K",
    "DEFAULT_TOP_P",
    "AnswerDelta",
    "Backend",
    "BackendInfo",
    "ContextOverflowError",
    "EngineError",
    "EngineUnavailableError",
    "GenerationRequest",
    "GenerationResult",
    "GpuOutOfMemoryError",
    "ModelLoadError",
    "QueueFullError",
    "RequestHandle",
    "SamplingParams",
    "TextDelta",
    "Usage",
    "answer_deltas",
    "answer_deltas_async",
]
