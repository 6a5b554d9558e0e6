"""Seeded rows' counter-based noise (engine/noise.py): the right bits, the right distribution, keyed
by token id, and sampled together in one group per top-k without depending on the other rows."""

from __future__ import annotations

import pytest
import torch

from glm_vision.backend import SamplingParams
from glm_vision.engine import noise
from glm_vision.engine.noise import GOLDEN, SeededNoise, as_int64, mix, mix_int
from glm_vision.engine.sampling import BatchSampler, SamplerState

PROBS = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
SEEDS = 2000
CHI2_LIMIT = 20.5  # chi-square, 5 (or 4) degrees of freedom: a correct sampler exceeds it with p < 0.001


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_the_tensor_hash_has_the_bits_of_splitmix64(device):
    """int64 multiplication wraps like uint64 and the shifts are logical, sign bit or not."""
    values = [0, 1, -1, 2**63 - 1, -(2**63), GOLDEN, 0x0123456789ABCDEF, 12345]
    tensor = torch.tensor([as_int64(v) for v in values], device=device)
    assert mix(tensor).tolist() == [as_int64(mix_int(v)) for v in values]


def test_noise_is_keyed_by_token_id_not_by_column():
    """Tied logits listed in another order by top-k get the same draw: each id keeps its noise."""
    ids = torch.tensor([[7, 3, 11, 5], [2, 9, 4, 1]])
    order = torch.tensor([2, 0, 3, 1])
    first = SeededNoise([1, 2], [5, 5], torch.device("cpu")).exponential(ids)
    again = SeededNoise([1, 2], [5, 5], torch.device("cpu")).exponential(ids[:, order])
    assert torch.equal(first[:, order], again)
    assert not torch.equal(first[0], first[1])  # the seeds differ


def chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs.double() * len(tokens)
    counts = torch.bincount(tokens, minlength=len(probs)).double()
    return float(((counts - expected) ** 2 / expected).sum())


def seeded_draws(top_k: int, steps: int = 2) -> list[torch.Tensor]:
    """Each step's tokens of SEEDS seeded rows, all one group, from logits log(PROBS)."""
    params = [
        SamplingParams(temperature=1.0, top_k=top_k, top_p=1.0, repetition_penalty=1.0, seed=s) for s in range(SEEDS)
    ]
    states = [SamplerState(p, len(PROBS), "cpu", []) for p in params]
    sampler = BatchSampler("cpu")
    return [sampler(PROBS.log().expand(SEEDS, -1), states) for _ in range(steps)]


def test_seeded_draws_follow_the_probabilities_on_both_paths_and_every_step(monkeypatch):
    """2,000 seeds, two steps each: the frequencies pass a chi-square test (deterministic given the
    seeds), on the whole-vocabulary path and on the top-k path (the sixth token cut)."""
    kept = PROBS[:5] / PROBS[:5].sum()
    statistics = [chi_square(t, PROBS) for t in seeded_draws(0)] + [chi_square(t, kept) for t in seeded_draws(5)]
    assert all(x < CHI2_LIMIT for x in statistics), statistics
    # the same test catches a skewed sampler: noise Exp(1) squared draws in proportion to sqrt(p)
    monkeypatch.setattr(noise, "exponential", lambda bits, exact=noise.exponential: exact(bits) ** 2)
    skewed = [chi_square(t, PROBS) for t in seeded_draws(0)] + [chi_square(t, kept) for t in seeded_draws(5)]
    assert all(x > 5 * CHI2_LIMIT for x in skewed), skewed


def test_tied_logits_give_a_seeded_row_the_same_tokens_next_to_other_ks():
    """Many exact ties (GLM's top_k 2 on bf16 logits): alone, or sharing its group with seeded rows
    of its k and the batch with seeded and unseeded rows of other ks, a seeded row's tokens match."""
    vocab = 64
    row = SamplingParams(seed=7, repetition_penalty=1.0)  # GLM's defaults: top_k 2, top_p 0.6
    others = [SamplingParams(seed=s, top_k=k, repetition_penalty=1.0) for s, k in ((8, 2), (9, 3), (10, 5))]
    others += [SamplingParams(top_k=k) for k in (1, 2, 40)]
    g = torch.Generator().manual_seed(3)
    steps = [torch.randint(0, 3, (1 + len(others), vocab), generator=g).float() for _ in range(12)]

    def tokens(batch: list[SamplingParams]) -> list[int]:
        states = [SamplerState(p, vocab, "cpu", []) for p in batch]
        sampler = BatchSampler("cpu")
        return [int(sampler(logits[: len(batch)], states)[0]) for logits in steps]

    alone = tokens([row])
    assert len(set(alone)) > 1  # the ties are really drawn between
    assert tokens([row, *others]) == alone == tokens([row, *reversed(others)])


def test_a_row_sampled_by_two_samplers_in_turn_keeps_its_stream():
    """The prefill sampler and the decode sampler take turns: a row's noise still moves on every
    step (a plan whose rows were sampled elsewhere meanwhile is rebuilt, not reused)."""
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=21)
    logits = torch.zeros(1, 64)  # flat: the noise alone decides

    def tokens(samplers: list[BatchSampler]) -> list[int]:
        state = SamplerState(params, 64, "cpu", [])
        return [int(samplers[step % len(samplers)](logits, [state])[0]) for step in range(8)]

    assert tokens([BatchSampler("cpu"), BatchSampler("cpu")]) == tokens([BatchSampler("cpu")])
