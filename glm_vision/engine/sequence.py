"""One request's state while it is prefilled and decoded (nano-vllm's `sequence.py`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..backend import GenerationRequest, Usage
from .cache import TokenKey
from .prompt import Prompt
from .sampling import SamplerState
from .sessions import Session
from .textstream import IncrementalDetokenizer, StopStrings


@dataclass
class SuffixImages:
    """The image features a prompt's uncached suffix needs, while its encoder call runs."""

    found: dict[int, torch.Tensor] = field(default_factory=dict)  # by the image's start index
    missing: list = field(default_factory=list)  # PromptImages not in the cache (nor encoded yet)
    unique: dict = field(default_factory=dict)  # one PromptImage per image key among the missing
    job: object | None = None  # the EncodeJob (shared with the other requests of its batch) once started
    index: dict = field(default_factory=dict)  # image key -> its picture's place in the job's features
    checked: int = 0  # the scheduler's count of finished encoder calls when the cache was last looked at


@dataclass(eq=False)
class Sequence:
    handle: object  # the RequestHandle it reports to
    request: GenerationRequest
    session: Session | None
    prompt: Prompt
    slot: int
    sampler: SamplerState
    detok: IncrementalDetokenizer
    stops: StopStrings
    max_new: int
    keys: list[TokenKey]  # one per token whose KV sits in the slot
    usage: Usage
    started: float = field(default_factory=time.perf_counter)
    # prefill
    cursor: int = 0  # next prompt index to prefill
    images: SuffixImages | None = None  # gathered before the first text chunk
    embeds: torch.Tensor | None = None  # the uncached suffix's input embeddings
    positions: torch.Tensor | None = None  # (3, len) M-RoPE positions of the whole prompt
    # decode
    next_position: int = 0  # rotary position of the next token fed
    pending: torch.Tensor | None = None  # the sampled, not yet read token (on the device)
    generated: list[int] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    finish_reason: str | None = None
    first_logits: torch.Tensor | None = None
    # structured answers (constraints.py, logprobs.py, choices.py)
    guide: object | None = None  # the constraint / thinking-budget guide, None when unguided
    index: int = 0  # which of the request's n choices
    family: object | None = None  # the `Family` of an n > 1 request
    children: list[Sequence] = field(default_factory=list)  # choices 1..n-1, until they join the batch
    logprobs: list | None = None  # TokenLogprob per generated token, when asked for
    unreleased: list = field(default_factory=list)  # logprobs whose text has not been emitted yet
    pending_logprobs: tuple | None = None  # (StepLogprobs, row) of the pending token
    sampled_logprobs: tuple | None = None  # the same for the token sampled this step

    def release_logprobs(self) -> tuple:
        """The logprobs of the tokens whose text is being emitted now."""
        released, self.unreleased = tuple(self.unreleased), []
        return released

    @property
    def prefilled(self) -> bool:
        return self.cursor >= len(self.prompt)

    @property
    def waiting_for_encoder(self) -> bool:
        """Pictures missing from the cache and no encoder call started for them yet."""
        return self.images is not None and bool(self.images.missing) and self.images.job is None

    @property
    def ready_for_text(self) -> bool:
        """All the suffix's image features are at hand and prompt tokens are left to prefill."""
        return self.images is not None and not self.images.missing and not self.prefilled

    @property
    def length(self) -> int:
        return len(self.keys)
