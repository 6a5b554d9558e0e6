"""n choices of one request: the prompt is prefilled once, its KV copied on the device into the
slots of the other n-1 continuations, each with its own sampler (seed + i), guide and text stream.
The request's handle is finished once, when the last choice is done (or at the first error); each
choice done before that is announced on its own (`ChoiceEnd`)."""

from __future__ import annotations

from dataclasses import replace

from ..backend import Choice, GenerationResult, SamplingParams
from ..backend.requests import SEED_RANGE


def choice_sampling(params: SamplingParams, index: int) -> SamplingParams:
    """Choice i samples with seed + i (wrapping inside the 64-bit range), so each is reproducible."""
    if params.seed is None or index == 0:
        return params
    low, high = SEED_RANGE
    return replace(params, seed=(params.seed + index - low) % (high - low + 1) + low)


class Family:
    """Collects the results of a request's choices; gives the combined result once all are in."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.results: dict[int, GenerationResult] = {}
        self.failed = False

    def add(self, index: int, result: GenerationResult) -> GenerationResult | None:
        self.results[index] = result
        if len(self.results) < self.n or self.failed:
            return None
        return combine([self.results[i] for i in range(self.n)])

    def claim_failure(self) -> bool:
        """True for the first error only: the handle is finished with it once."""
        first = not self.failed
        self.failed = True
        return first


def combine(results: list[GenerationResult]) -> GenerationResult:
    """Choice 0's result carrying the others; usage counts the prompt once and every choice's tokens."""
    first = results[0]
    usage = first.usage
    usage.completion_tokens = sum(r.usage.completion_tokens for r in results)
    extra = tuple(as_choice(i, r) for i, r in enumerate(results) if i)
    return replace(first, usage=usage, extra_choices=extra)


def as_choice(index: int, result: GenerationResult) -> Choice:
    return Choice(index, result.text, result.finish_reason, result.token_ids, result.logprobs)
