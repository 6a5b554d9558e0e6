"""Next-token choice on the device: repetition penalty, temperature, top-k, top-p (transformers' order)."""

from __future__ import annotations

import torch

from .types import SamplingParams


class Sampler:
    """One request's sampler; remembers which token ids were already seen for the repetition penalty."""

    def __init__(
        self,
        params: SamplingParams,
        vocab_size: int,
        device: torch.device | str,
        prompt_ids: list[int],
        stop_ids: set[int] = frozenset(),
    ) -> None:
        self.params = params
        self.steps = 0
        self.stop_ids = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        if prompt_ids:
            self.seen[torch.tensor(sorted(set(prompt_ids)), device=device)] = True
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(params.seed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: (vocab,) -> a 0-d tensor holding the chosen id (still on the device)."""
        p = self.params
        scores = logits.float()
        if self.steps < p.min_new_tokens and self.stop_ids.numel():
            scores = scores.index_fill(0, self.stop_ids, float("-inf"))
        self.steps += 1
        if p.repetition_penalty != 1.0:
            penalised = torch.where(scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty)
            scores = torch.where(self.seen, penalised, scores)
        if p.temperature == 0:
            token = scores.argmax()
        elif 0 < p.top_k < scores.numel():
            # Top-k first (GLM's default is 2): top-p and the draw then work on k values, not the vocabulary.
            values, indices = torch.topk(scores / p.temperature, p.top_k)  # sorted, largest first
            probs = values.softmax(-1)
            if p.top_p < 1.0:
                before = probs.cumsum(-1) - probs  # mass of the better candidates
                probs = probs.masked_fill(before >= p.top_p, 0.0)  # the first always stays
            token = indices[torch.multinomial(probs, 1, generator=self.generator)[0]]
        else:
            scores = scores / p.temperature
            if p.top_p < 1.0:
                sorted_scores, order = torch.sort(scores, descending=False)
                cumulative = sorted_scores.softmax(-1).cumsum(-1)
                drop_sorted = cumulative <= (1 - p.top_p)
                drop_sorted[-1] = False  # always keep the most likely token
                drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
                scores = scores.masked_fill(drop, float("-inf"))
            token = torch.multinomial(scores.softmax(-1), 1, generator=self.generator)[0]
        self.seen[token] = True
        return token
