"""Next-token choice on the device for a whole decode batch at once, each row with its own
SamplingParams: the constraint mask (constraints.py) first, then repetition penalty, temperature,
top-k, top-p (transformers' order). A row the mask allows everything is left bit for bit as it was.

The draw is `torch.multinomial`'s own one-sample algorithm (argmax of probs / Exp(1) noise) without
its checks, which read values back to the host; nothing here does. Unseeded rows share one draw
from torch's default generator. Seeded rows are sampled together too, a group per path and top-k,
with noise hashed from (seed, step, token id) on the device (noise.py), so a seeded row gets the
same tokens whatever else is in the batch, and on every run.
"""

from __future__ import annotations

import torch

from ..backend import SamplingParams
from .noise import SeededNoise
from .transfer import to_device

NEG_INF = float("-inf")


class SamplerState:
    """One request's sampling state: its parameters, steps taken and which token ids it has seen,
    a row of a (rows, vocab) bool tensor shared with the last batch it was sampled in."""

    def __init__(
        self,
        params: SamplingParams,
        vocab_size: int,
        device: torch.device | str,
        prompt_ids: list[int],
        stop_ids: set[int] = frozenset(),
    ) -> None:
        device = torch.device(device)
        self.params = params
        self.steps = 0
        self.stop_ids = tuple(sorted(stop_ids))
        seen = torch.zeros(1, vocab_size, dtype=torch.bool, device=device)
        if prompt_ids:
            seen[0, to_device(sorted(set(prompt_ids)), torch.long, device)] = True
        self.home = (seen, 0)  # (buffer, row)

    @property
    def seen(self) -> torch.Tensor:
        buffer, row = self.home
        return buffer[row]


class _Group:
    """Rows of the batch that take one path, "greedy", "top_k" or "full" (the whole vocabulary),
    with their parameters as device columns."""

    def __init__(self, plan: _Plan, rows: list[int], path: str, seeded: bool = False) -> None:
        self.path = path
        self.index = None if len(rows) == plan.batch else plan.tensor(rows, torch.long)
        params = [plan.states[r].params for r in rows]
        self.noise = self.vocab_ids = None  # no noise: the default generator
        if seeded:
            self.noise = SeededNoise([p.seed for p in params], [plan.steps[r] for r in rows], plan.device)
            if path == "full":
                self.vocab_ids = torch.arange(plan.vocab, device=plan.device)[None, :]
        self.divide = plan.divide
        self.temperature = self.k = self.padding = self.top_p = None
        if path == "greedy":
            return
        if any(p.temperature != 1.0 for p in params):
            self.temperature = plan.divisor([p.temperature for p in params])
        if path == "top_k":
            ks = [p.top_k for p in params]
            self.k = max(ks)
            if min(ks) < self.k:  # rows with a smaller k ignore the tail of the batch's top-k
                self.padding = torch.arange(self.k, device=plan.device)[None, :] >= plan.tensor(ks, torch.long)[:, None]
            self.top_p = plan.top_p(params, lambda p: p, float("inf"))
        else:  # sorted ascending, a token is dropped while the mass up to it stays <= 1 - top_p
            self.top_p = plan.top_p(params, lambda p: 1 - p, NEG_INF)

    def take(self, scores: torch.Tensor) -> torch.Tensor:
        return scores if self.index is None else scores.index_select(0, self.index)

    def scaled(self, scores: torch.Tensor) -> torch.Tensor:
        scores = self.take(scores)
        return scores if self.temperature is None else self.divide(scores, self.temperature)

    def draw(self, probs: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """One index per row, as `torch.multinomial(probs, 1)` picks it: argmax(probs / Exp(1)).
        `ids`: the token ids of the columns (default: the whole vocabulary), which keys seeded noise."""
        if self.noise is None:
            return (probs / torch.empty_like(probs).exponential_()).argmax(-1)
        return (probs / self.noise.exponential(self.vocab_ids if ids is None else ids)).argmax(-1)


class _Plan:
    """Everything about a batch that only changes when rows join or leave, built once per layout.

    Seeded rows that sample are grouped by path and top-k, apart from unseeded rows, so that neither
    their random numbers nor their top-k width (which decides which tied logits make the cut)
    depend on the other rows. Their noise streams count steps on the device: the plan also holds
    each row's step count and is rebuilt if a row was sampled elsewhere in between."""

    def __init__(self, states: list[SamplerState], vocab: int, device: torch.device) -> None:
        self.states = tuple(states)
        self.batch = len(states)
        self.vocab = vocab
        self.device = device
        self.steps = [s.steps for s in states]
        self._stop_index: dict[tuple[int, ...], torch.Tensor] = {}
        params = [s.params for s in states]
        penalties = [p.repetition_penalty for p in params]
        self.penalty = self.penalty_divisor = None
        if any(x != 1.0 for x in penalties):
            self.penalty = self.tensor(penalties, torch.float32)[:, None]
            self.penalty_divisor = self.divisor(penalties)
        paths = ["greedy" if p.temperature == 0 else "top_k" if 0 < p.top_k < vocab else "full" for p in params]
        shared = {
            path: [i for i, q in enumerate(paths) if q == path and (path == "greedy" or params[i].seed is None)]
            for path in ("greedy", "top_k", "full")
        }
        seeded: dict[tuple[str, int], list[int]] = {}
        for i, path in enumerate(paths):
            if path != "greedy" and params[i].seed is not None:
                seeded.setdefault((path, params[i].top_k if path == "top_k" else 0), []).append(i)
        self.groups = [_Group(self, rows, path) for path, rows in shared.items() if rows]
        self.groups += [_Group(self, rows, path, seeded=True) for (path, _), rows in seeded.items()]

    def top_p(self, params: list[SamplingParams], threshold, off: float) -> torch.Tensor | None:
        """A (rows, 1) top-p threshold column; `off` for rows without top-p (1.0), None if no row has one."""
        values = [p.top_p for p in params]
        if all(p >= 1.0 for p in values):
            return None
        return self.tensor([threshold(p) if p < 1.0 else off for p in values], torch.float32)[:, None]

    def matches(self, states: list[SamplerState], vocab: int) -> bool:
        return (
            vocab == self.vocab
            and len(states) == self.batch
            and all(a is b and a.steps == n for a, b, n in zip(states, self.states, self.steps, strict=False))
        )

    def tensor(self, values, dtype: torch.dtype) -> torch.Tensor:
        return to_device(values, dtype, self.device)

    # `tensor / python_float` multiplies by the float32 reciprocal on CUDA and divides on the CPU;
    # the per-row columns do the same, so every row's scores are bit for bit what a lone row's were.
    def divisor(self, values: list[float]) -> torch.Tensor:
        column = torch.tensor(values, dtype=torch.float32)[:, None]
        if self.device.type == "cuda":
            column = 1.0 / column
        return self.tensor(column, torch.float32)

    def divide(self, scores: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
        return scores * divisor if self.device.type == "cuda" else scores / divisor

    def stop_index(self, blocked: tuple[int, ...]) -> torch.Tensor:
        """Flat (row * vocab + id) positions of the stop ids of the rows still held back by min_new_tokens."""
        index = self._stop_index.get(blocked)
        if index is None:
            flat = [row * self.vocab + t for row in blocked for t in self.states[row].stop_ids if 0 <= t < self.vocab]
            index = self._stop_index[blocked] = self.tensor(flat, torch.long)
        return index


class BatchSampler:
    """Samples one token for each row of a (B, vocab) logits tensor, row i with `states[i]`."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._plan: _Plan | None = None

    def __call__(self, logits: torch.Tensor, states: list[SamplerState], mask=None) -> torch.Tensor:
        """logits (B, vocab) -> (B,) chosen ids on the device; each state's seen set and steps move on.
        `mask` (a `constraints.TokenMask`) sets disallowed tokens to -inf before anything else."""
        batch, vocab = logits.shape
        plan = self._plan
        if plan is None or not plan.matches(states, vocab):
            plan = self._plan = _Plan(states, vocab, self.device)
        seen = self._seen(states)
        scores = logits.float()
        if mask is not None:  # before the penalty and top-k: with GLM's top_k 2 both survivors could be illegal
            scores = mask.apply(scores.clone() if scores is logits else scores)  # logprobs read the raw logits
        guided = mask.rows if mask is not None else ()  # a finished grammar allows only stop ids: never block them
        blocked = tuple(
            i for i, s in enumerate(states) if s.steps < s.params.min_new_tokens and s.stop_ids and i not in guided
        )
        if blocked:
            scores = scores.reshape(-1).index_fill(0, plan.stop_index(blocked), NEG_INF).view(batch, vocab)
        for state in states:
            state.steps += 1
        plan.steps = [s.steps for s in states]
        if plan.penalty is not None:
            penalised = torch.where(scores < 0, scores * plan.penalty, plan.divide(scores, plan.penalty_divisor))
            scores = torch.where(seen, penalised, scores)
        paths = {"greedy": self._greedy, "top_k": self._top_k, "full": self._full}
        parts = [(group, paths[group.path](group, scores)) for group in plan.groups]
        if len(parts) == 1:
            tokens = parts[0][1]
        else:
            tokens = torch.empty(batch, dtype=torch.long, device=logits.device)
            for group, chosen in parts:
                tokens.index_copy_(0, group.index, chosen)
        seen.scatter_(1, tokens[:, None], True)
        return tokens

    @staticmethod
    def _seen(states: list[SamplerState]) -> torch.Tensor:
        """The batch's (B, vocab) seen mask: a view when the rows already sit in order in one buffer
        (the same batch as last step), else stacked into a new buffer that the states then point at."""
        buffer, start = states[0].home
        if all(s.home[0] is buffer and s.home[1] == start + i for i, s in enumerate(states)):
            return buffer[start : start + len(states)]
        buffer = torch.stack([s.seen for s in states])
        for i, state in enumerate(states):
            state.home = (buffer, i)
        return buffer

    @staticmethod
    def _greedy(group: _Group, scores: torch.Tensor) -> torch.Tensor:
        return group.take(scores).argmax(-1)

    @staticmethod
    def _top_k(group: _Group, scores: torch.Tensor) -> torch.Tensor:
        values, indices = torch.topk(group.scaled(scores), group.k)  # sorted, largest first
        if group.padding is not None:
            values = values.masked_fill(group.padding, NEG_INF)
        probs = values.softmax(-1)
        if group.top_p is not None:
            before = probs.cumsum(-1) - probs  # mass of the better candidates; the first always stays
            probs = probs.masked_fill(before >= group.top_p, 0.0)
        choice = group.draw(probs, indices)
        return indices.gather(-1, choice[:, None])[:, 0]

    @staticmethod
    def _full(group: _Group, scores: torch.Tensor) -> torch.Tensor:
        scores = group.scaled(scores)
        if group.top_p is not None:
            ordered, order = torch.sort(scores, dim=-1, descending=False)
            drop_sorted = ordered.softmax(-1).cumsum(-1) <= group.top_p
            drop_sorted[:, -1] = False  # always keep the most likely token
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, NEG_INF)
        return group.draw(scores.softmax(-1))
