"""The inference engine: model loading, prompt building, prefill/decode and the GPU worker."""

from .engine import Engine, EngineInfo
from .loader import LoadedModel, ModelLoadError, load_model
from .types import (
    ContextOverflowError,
    EngineError,
    EngineUnavailableError,
    GenerationRequest,
    GenerationResult,
    GpuOutOfMemoryError,
    QueueFullError,
    SamplingParams,
    TextDelta,
    Usage,
)

__all__ = [
    "ContextOverflowError",
    "Engine",
    "EngineError",
    "EngineInfo",
    "EngineUnavailableError",
    "GenerationRequest",
    "GenerationResult",
    "GpuOutOfMemoryError",
    "LoadedModel",
    "ModelLoadError",
    "QueueFullError",
    "SamplingParams",
    "TextDelta",
    "Usage",
    "load_model",
]
