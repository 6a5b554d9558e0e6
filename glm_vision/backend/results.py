"""What comes out of a backend: text deltas while it writes, then one result with its usage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV was reused
    completion_tokens: int = 0
    images: int = 0
    image_cache_hits: int = 0  # images inside the recomputed part served from the feature cache
    images_encoded: int = 0
    encode_s: float = 0.0
    ttft_s: float = 0.0
    decode_s: float = 0.0
    queue_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def computed_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def decode_tokens_per_s(self) -> float:
        steps = self.completion_tokens - 1
        return steps / self.decode_s if self.decode_s > 0 and steps > 0 else 0.0


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class GenerationResult:
    text: str  # everything the model wrote (reasoning included), stop strings and stop ids removed
    finish_reason: str  # "stop" | "length" | "cancelled"
    usage: Usage
    token_ids: tuple[int, ...]
    first_logits: object = None  # a (vocab,) float tensor on the CPU when the request asked for it
