"""The backend contract and its vocabulary: requests in, text deltas and a result out, the errors.

Torch-free: the web layer, the batch CLI and the remote backend import only this, never the engine."""

from .answers import AnswerDelta, AnswerSplitter, answer_deltas
from .contract import Backend, BackendInfo
from .errors import (
    ContextOverflowError,
    EngineError,
    EngineUnavailableError,
    GpuOutOfMemoryError,
    InvalidSchemaError,
    ModelLoadError,
    QueueFullError,
)
from .handle import RequestHandle
from .requests import (
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    MAX_CHOICES,
    MAX_TOP_LOGPROBS,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
)
from .results import Choice, ChoiceEnd, GenerationResult, TextDelta, TokenLogprob, TopLogprob, Usage

__all__ = [
    "DEFAULT_REPETITION_PENALTY",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_K",
    "DEFAULT_TOP_P",
    "MAX_CHOICES",
    "MAX_TOP_LOGPROBS",
    "AnswerDelta",
    "AnswerSplitter",
    "Backend",
    "BackendInfo",
    "Choice",
    "ChoiceEnd",
    "ContextOverflowError",
    "EngineError",
    "EngineUnavailableError",
    "GenerationRequest",
    "GenerationResult",
    "GpuOutOfMemoryError",
    "InvalidSchemaError",
    "ModelLoadError",
    "OutputConstraint",
    "QueueFullError",
    "RequestHandle",
    "SamplingParams",
    "TextDelta",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "answer_deltas",
]
