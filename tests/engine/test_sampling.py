"""The batched sampler: every row follows its own SamplingParams exactly as the per-row sampler did
(seeded rows with their counter-based noise, engine/noise.py, in place of a torch.Generator)."""

from __future__ import annotations

import pytest
import torch

from glm_vision.backend import SamplingParams
from glm_vision.engine.noise import SeededNoise
from glm_vision.engine.sampling import BatchSampler, SamplerState

VOCAB = 500
STOPS = {3, 7}


class ReferenceSampler:
    """The per-row sampler the engine used before batching, kept as the reference; a seeded row
    draws with its own noise stream where it had its own torch.Generator."""

    def __init__(self, params, vocab_size, device, prompt_ids, stop_ids=frozenset()):
        self.params = params
        self.steps = 0
        self.stop_ids = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        if prompt_ids:
            self.seen[torch.tensor(sorted(set(prompt_ids)), device=device)] = True
        self.noise = None if params.seed is None else SeededNoise([params.seed], [0], torch.device(device))

    def multinomial(self, probs, ids):
        """One index into `probs` (1-D) over token `ids`: torch's own draw, or the seeded noise's."""
        if self.noise is None:
            return torch.multinomial(probs, 1)[0]
        return (probs / self.noise.exponential(ids[None])[0]).argmax()

    def __call__(self, logits):
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
            values, indices = torch.topk(scores / p.temperature, p.top_k)
            probs = values.softmax(-1)
            if p.top_p < 1.0:
                before = probs.cumsum(-1) - probs
                probs = probs.masked_fill(before >= p.top_p, 0.0)
            token = indices[self.multinomial(probs, indices)]
        else:
            scores = scores / p.temperature
            if p.top_p < 1.0:
                sorted_scores, order = torch.sort(scores, descending=False)
                cumulative = sorted_scores.softmax(-1).cumsum(-1)
                drop_sorted = cumulative <= (1 - p.top_p)
                drop_sorted[-1] = False
                drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
                scores = scores.masked_fill(drop, float("-inf"))
            token = self.multinomial(scores.softmax(-1), torch.arange(scores.numel(), device=scores.device))
        self.seen[token] = True
        return token

    def distribution(self, logits):
        """What __call__ draws from next, over the vocabulary (state untouched); a one-hot for greedy."""
        p = self.params
        scores = logits.float()
        if self.steps < p.min_new_tokens and self.stop_ids.numel():
            scores = scores.index_fill(0, self.stop_ids, float("-inf"))
        if p.repetition_penalty != 1.0:
            penalised = torch.where(scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty)
            scores = torch.where(self.seen, penalised, scores)
        if p.temperature == 0:
            return torch.nn.functional.one_hot(scores.argmax(), scores.numel()).float()
        if 0 < p.top_k < scores.numel():
            values, indices = torch.topk(scores / p.temperature, p.top_k)
            probs = values.softmax(-1)
            if p.top_p < 1.0:
                before = probs.cumsum(-1) - probs
                probs = probs.masked_fill(before >= p.top_p, 0.0)
            return torch.zeros_like(scores).scatter(0, indices, probs / probs.sum())
        scores = scores / p.temperature
        if p.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=False)
            drop_sorted = sorted_scores.softmax(-1).cumsum(-1) <= (1 - p.top_p)
            drop_sorted[-1] = False
            scores = scores.masked_fill(torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted), float("-inf"))
        return scores.softmax(-1)


def mixed_params(seed_base: int | None = 100) -> list[SamplingParams]:
    """Every path and combination: greedy, GLM's defaults, other k, no top-k, k past the vocabulary,
    top-p on and off, penalties, min_new_tokens."""
    rows = [
        dict(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0),
        dict(temperature=0.0, repetition_penalty=1.3, min_new_tokens=3),
        dict(),  # GLM's defaults: 0.8, top_p 0.6, top_k 2, penalty 1.1
        dict(temperature=1.0, top_k=5, top_p=1.0, repetition_penalty=1.0),
        dict(temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.2, min_new_tokens=2),
        dict(temperature=1.3, top_k=0, top_p=1.0, repetition_penalty=1.0),
        dict(temperature=0.9, top_k=0, top_p=0.8, repetition_penalty=1.05),
        dict(temperature=1.0, top_k=VOCAB + 10, top_p=0.5, repetition_penalty=0.9, min_new_tokens=4),
        dict(temperature=1.5, top_k=1, top_p=0.3),
        dict(temperature=0.5, top_k=3, top_p=0.95, repetition_penalty=2.0),
    ]
    return [
        SamplingParams(max_new_tokens=50, seed=None if seed_base is None else seed_base + i, **row)
        for i, row in enumerate(rows)
    ]


def make_logits(batch: int, seed: int, stops_first: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, VOCAB, generator=g) * 3
    if stops_first:  # the stop ids would win everywhere if nothing held them back
        logits[:, sorted(STOPS)] = 30.0
    return logits


def prompts(count: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (20,), generator=g).tolist() for _ in range(count)]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # the GPU's own division and RNG where there is one


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_the_per_row_sampler_for_mixed_params(device):
    """Seeded rows draw the same noise as a per-row sampler with the row's own stream: every token is equal."""
    params = mixed_params()
    ids = prompts(len(params))
    reference = [ReferenceSampler(p, VOCAB, device, ids[i], STOPS) for i, p in enumerate(params)]
    states = [SamplerState(p, VOCAB, device, ids[i], STOPS) for i, p in enumerate(params)]
    sampler = BatchSampler(device)
    for step in range(8):
        logits = make_logits(len(params), seed=step, stops_first=step < 5).to(device)
        before = logits.clone()
        batched = sampler(logits, states).tolist()
        assert torch.equal(logits, before)  # the logits buffer is left alone
        assert batched == [int(r(logits[i])) for i, r in enumerate(reference)], f"step {step}"
        for state, ref in zip(states, reference, strict=False):
            assert torch.equal(state.seen, ref.seen)


def test_unseeded_rows_share_one_draw_with_each_rows_own_distribution():
    """Many copies of each mixed row in one batch: each row's token frequencies match the per-row
    sampler's distribution (padding to the batch's largest k, top-p, penalty, temperature, stop ids)."""
    vocab, copies = 40, 3000
    params = [SamplingParams(**{**p.__dict__, "top_k": min(p.top_k, 50)}) for p in mixed_params(None)]
    ids = [row[:6] for row in prompts(len(params))]
    ids = [[i % vocab for i in row] for row in ids]
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(len(params), vocab, generator=g) * 1.5
    logits[:, sorted(STOPS)] = 3.0
    states = [SamplerState(p, vocab, "cpu", ids[i], STOPS) for i, p in enumerate(params) for _ in range(copies)]
    torch.manual_seed(0)
    tokens = BatchSampler("cpu")(logits.repeat_interleave(copies, 0), states).view(len(params), copies)
    for i, p in enumerate(params):
        expected = ReferenceSampler(p, vocab, "cpu", ids[i], STOPS).distribution(logits[i])
        counts = torch.bincount(tokens[i], minlength=vocab).float() / copies
        assert set((counts > 0).nonzero().flatten().tolist()) <= set((expected > 0).nonzero().flatten().tolist()), i
        tolerance = 5 * (expected * (1 - expected) / copies).sqrt() + 1e-3
        assert ((counts - expected).abs() <= tolerance).all(), f"row {i}: {p}"


def test_greedy_rows_are_the_argmax_of_the_penalised_scores():
    params = [
        SamplingParams(temperature=0.0, top_k=p.top_k, top_p=p.top_p, repetition_penalty=p.repetition_penalty)
        for p in mixed_params(None)
    ]
    ids = prompts(len(params))
    states = [SamplerState(p, VOCAB, "cpu", ids[i], STOPS) for i, p in enumerate(params)]
    logits = make_logits(len(params), seed=5, stops_first=False)
    tokens = BatchSampler("cpu")(logits, states).tolist()
    for i, p in enumerate(params):
        seen = torch.zeros(VOCAB, dtype=torch.bool)
        seen[ids[i]] = True
        r = p.repetition_penalty
        expected = torch.where(seen, torch.where(logits[i] < 0, logits[i] * r, logits[i] / r), logits[i]).argmax()
        assert tokens[i] == int(expected)


def test_sampled_tokens_stay_inside_the_top_k_and_top_p_sets():
    """Unseeded rows share one draw; over many draws each row's support is exactly its allowed set."""
    logits = torch.tensor([0.0, 5.0, 4.9, 1.0, 4.8, -2.0, 4.7, 0.5])
    rows = [
        SamplingParams(temperature=1.0, top_k=3, top_p=1.0, repetition_penalty=1.0),  # {1, 2, 4}
        SamplingParams(temperature=1.0, top_k=3, top_p=0.3, repetition_penalty=1.0),  # {1}: it holds > 30 %
        SamplingParams(temperature=1.0, top_k=5, top_p=0.5, repetition_penalty=1.0),  # {1, 2}
        SamplingParams(temperature=1.0, top_k=0, top_p=0.6, repetition_penalty=1.0),  # {1, 2, 4}
        SamplingParams(temperature=2.0, top_k=0, top_p=1.0, repetition_penalty=1.0),  # everything
        SamplingParams(temperature=0.0, repetition_penalty=1.0),  # {1}
    ]
    allowed = [{1, 2, 4}, {1}, {1, 2}, {1, 2, 4}, set(range(8)), {1}]
    copies = 50  # each row's parameters on many rows of one batch
    params = [p for p in rows for _ in range(copies)]
    sampler = BatchSampler("cpu")
    picks = [set() for _ in rows]
    torch.manual_seed(0)
    for _ in range(20):
        states = [SamplerState(p, 8, "cpu", []) for p in params]  # fresh: no penalty history
        tokens = sampler(logits.expand(len(params), -1), states).tolist()
        for i, token in enumerate(tokens):
            picks[i // copies].add(token)
    assert picks == allowed


def test_seeded_rows_give_the_same_tokens_alone_or_in_any_batch():
    params = mixed_params()
    ids = prompts(len(params))
    steps = [make_logits(len(params), seed=50 + s, stops_first=False) for s in range(6)]

    def run(rows: list[int], others: list[SamplingParams]) -> list[list[int]]:
        states = [SamplerState(params[r], VOCAB, "cpu", ids[r], STOPS) for r in rows]
        states += [SamplerState(p, VOCAB, "cpu", [], STOPS) for p in others]
        sampler = BatchSampler("cpu")
        out = []
        for logits in steps:
            batch = torch.cat([logits[rows], torch.randn(len(others), VOCAB)])
            out.append(sampler(batch, states).tolist()[: len(rows)])
        return [list(col) for col in zip(*out, strict=False)]

    alone = {r: run([r], [])[0] for r in range(len(params))}
    unseeded = mixed_params(None) + [SamplingParams(top_k=300, top_p=1.0)]  # a much larger k in the batch
    seeded = mixed_params(500)  # other seeded rows: the same groups (path and k) as the rows under test
    for order, others in (
        (list(range(len(params))), unseeded),
        (list(reversed(range(len(params)))), unseeded + seeded),
        ([4, 9, 2], seeded),
    ):
        together = run(order, others)
        for r, tokens in zip(order, together, strict=False):
            assert tokens == alone[r], f"row {r} changed in a batch"


def test_rows_keep_their_history_when_the_batch_changes():
    """Joining, leaving, reordering and a B = 1 first token: each row's seen set and noise stream
    follow the row (the last layout is one the B = 1 sampler saw before, two steps ago)."""
    params = mixed_params()[:6]
    ids = prompts(len(params))
    reference = [ReferenceSampler(p, VOCAB, "cpu", ids[i], STOPS) for i, p in enumerate(params)]
    states = [SamplerState(p, VOCAB, "cpu", ids[i], STOPS) for i, p in enumerate(params)]
    first, decode = BatchSampler("cpu"), BatchSampler("cpu")
    layouts = [
        [0],
        [0],
        [0, 1],
        [0, 1],
        [2],
        [0, 1, 2],
        [1, 2],
        [2, 1, 3],
        [3, 4, 5, 2],
        [5, 4, 3, 2],
        [5],
        [2, 5],
        [5],
    ]
    for step, layout in enumerate(layouts):
        logits = make_logits(len(layout), seed=200 + step, stops_first=step % 2 == 0)
        sampler = first if len(layout) == 1 else decode
        tokens = sampler(logits, [states[r] for r in layout]).tolist()
        assert tokens == [int(reference[r](logits[i])) for i, r in enumerate(layout)], f"step {step}"
    for state, ref in zip(states, reference, strict=False):
        assert torch.equal(state.seen, ref.seen) and state.steps == ref.steps


def test_min_new_tokens_holds_back_stop_ids():
    logits = torch.full((2, 10), -1.0)
    logits[:, 3] = 10.0  # a stop id is the clear favourite
    logits[:, 5] = 5.0
    held = SamplerState(SamplingParams.greedy(10, min_new_tokens=2), 10, "cpu", [], {3})
    free = SamplerState(SamplingParams.greedy(10), 10, "cpu", [], {3})
    sampler = BatchSampler("cpu")
    assert [sampler(logits, [held, free]).tolist() for _ in range(3)] == [[5, 3], [5, 3], [3, 3]]
    sampled = SamplerState(SamplingParams(temperature=1.0, top_k=2, top_p=1.0, min_new_tokens=5), 10, "cpu", [], {3})
    assert all(int(sampler(logits[:1], [sampled])[0]) != 3 for _ in range(5))


def test_repetition_penalty_moves_the_argmax():
    logits = torch.tensor([[0.0, 5.0, 4.9, 1.0, -2.0, -1.9]] * 2)
    penalised = SamplerState(SamplingParams(temperature=0, repetition_penalty=1.5), 6, "cpu", [1])
    plain = SamplerState(SamplingParams(temperature=0, repetition_penalty=1.0), 6, "cpu", [1])
    sampler = BatchSampler("cpu")
    assert sampler(logits, [penalised, plain]).tolist() == [2, 1]  # 5.0 / 1.5 < 4.9
    assert sampler(logits, [penalised, plain]).tolist() == [1, 1]  # 2 is seen now too: 4.9 / 1.5 < 5.0 / 1.5
    negative = torch.tensor([[-1.0, -1.1, -5.0]])
    state = SamplerState(SamplingParams(temperature=0, repetition_penalty=1.2), 3, "cpu", [0])
    assert int(sampler(negative, [state])[0]) == 1  # -1.0 * 1.2 < -1.1: a penalty pushes negatives down


def test_a_batch_of_one_row_equals_the_per_row_sampler():
    """The prompt's first token is sampled as a batch of one (the runner's prefill sampler)."""
    params = SamplingParams(seed=3)
    state = SamplerState(params, VOCAB, "cpu", [1, 2], STOPS)
    sampler = BatchSampler("cpu")
    reference = ReferenceSampler(params, VOCAB, "cpu", [1, 2], STOPS)
    for step in range(5):
        logits = make_logits(1, seed=step, stops_first=False)
        token = sampler(logits, [state])
        assert token.shape == (1,) and int(token[0]) == int(reference(logits[0]))


def test_seeded_requests_decoded_in_a_batch_match_their_single_stream_tokens(settings):
    """Through the scheduler: seeded sampled requests keep their tokens next to unseeded ones."""
    from dataclasses import replace

    from glm_vision.backend import GenerationRequest
    from glm_vision.conversation import Message
    from glm_vision.engine import Engine

    seeded = [
        GenerationRequest([Message("user", "hello")], SamplingParams(max_new_tokens=40, seed=1)),
        GenerationRequest(
            [Message("user", "tell me more")],
            SamplingParams(
                temperature=1.2,
                top_k=0,
                top_p=0.9,
                repetition_penalty=1.3,
                max_new_tokens=30,
                min_new_tokens=10,
                seed=2,
            ),
        ),
        GenerationRequest(
            [Message("user", "go on")], SamplingParams(temperature=0.0, repetition_penalty=1.2, max_new_tokens=25)
        ),
    ]
    unseeded = [
        GenerationRequest([Message("user", "anything")], SamplingParams(max_new_tokens=35)),
        GenerationRequest(
            [Message("user", "more")], SamplingParams(temperature=1.0, top_k=50, top_p=1.0, max_new_tokens=20)
        ),
    ]
    single = Engine.load(replace(settings, max_batch=1))
    try:
        alone = [single.generate(r).token_ids for r in seeded]
    finally:
        single.shutdown()
    batched = Engine.load(replace(settings, max_batch=4, prefill_chunk_tokens=16))
    try:
        handles = [batched.submit(r) for r in (seeded[0], unseeded[0], seeded[1], unseeded[1], seeded[2])]
        results = [h.wait() for h in handles]
        assert batched.stats()["peak_batch"] >= 3
    finally:
        batched.shutdown()
    assert [results[0].token_ids, results[2].token_ids, results[4].token_ids] == alone
    assert len(results[2].token_ids) >= 10  # min_new_tokens held the stop ids back
