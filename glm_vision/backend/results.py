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
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log probability and the most likely alternatives (OpenAI's shape)."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top: tuple[TopLogprob, ...] = ()

    def to_openai(self) -> dict:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": _bytes(self.bytes),
            "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": _bytes(t.bytes)} for t in self.top],
        }

    @classmethod
    def from_openai(cls, entry) -> TokenLogprob:
        """From an OpenAI logprobs entry (a dict or the openai client's object)."""
        get = entry.get if isinstance(entry, dict) else lambda key, default=None: getattr(entry, key, default)

        def one(item):
            read = item.get if isinstance(item, dict) else lambda key, default=None: getattr(item, key, default)
            raw = read("bytes")
            return read("token"), float(read("logprob")), tuple(raw) if raw is not None else None

        token, logprob, raw = one(entry)
        top = tuple(TopLogprob(*one(t)) for t in (get("top_logprobs") or ()))
        return cls(token, logprob, raw, top)


def _bytes(raw: tuple[int, ...] | None) -> list[int] | None:
    return list(raw) if raw is not None else None


@dataclass(frozen=True)
class TextDelta:
    text: str
    index: int = 0  # which choice (n > 1) wrote it
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens whose text this delta completes (when asked for)


@dataclass(frozen=True)
class Choice:
    """One of a request's n answers."""

    index: int
    text: str
    finish_reason: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None  # None: not asked for


@dataclass(frozen=True)
class ChoiceEnd:
    """One of n choices is done while others still run (streamed before the final result, so that a
    stream can close that choice at once, as OpenAI's does)."""

    choice: Choice


@dataclass(frozen=True)
class GenerationResult:
    """The answer (choice 0's text, finish reason, tokens, logprobs) and, for n > 1, every choice.
    Usage counts the prompt once and the tokens of all choices."""

    text: str  # everything the model wrote (reasoning included), stop strings and stop ids removed
    finish_reason: str  # "stop" | "length" | "cancelled"
    usage: Usage
    token_ids: tuple[int, ...]
    first_logits: object = None  # a (vocab,) float tensor on the CPU when the request asked for it
    logprobs: tuple[TokenLogprob, ...] | None = None  # one per generated token (reasoning included); None: not asked
    extra_choices: tuple[Choice, ...] = ()  # choices 1..n-1

    @property
    def choices(self) -> tuple[Choice, ...]:
        first = Choice(0, self.text, self.finish_reason, self.token_ids, self.logprobs)
        return (first, *self.extra_choices)
