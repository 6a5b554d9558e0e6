"""What a request asks of its output beyond free text — a constraint or thinking budget (guides),
logprobs, n choices — as hooks the runner calls around its sampling steps.

Unguided rows without logprobs cost nothing here: no mask is built, no logprob is computed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

import torch

from ..backend import GenerationRequest
from .choices import Family, choice_sampling
from .constraints import BatchGuides, Grammars
from .logprobs import StepLogprobs, TokenTexts, token_logprob
from .sampling import SamplerState
from .sequence import Sequence
from .textstream import IncrementalDetokenizer, StopStrings

COMPILED_KEPT = 64


class OutputControls:
    def __init__(self, tokenizer, vocab_size: int, stop_ids: set[int], device: torch.device) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_ids = stop_ids
        self.device = device
        self._grammars: Grammars | None = None
        self._texts: TokenTexts | None = None
        self._compiled: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._guides: dict[str, BatchGuides] = {}  # one host buffer for prefill, one for decode steps

    # ------------------------------------------------------------------ lazily built tables
    @property
    def grammars(self) -> Grammars:
        with self._lock:
            if self._grammars is None:
                self._grammars = Grammars(self.tokenizer, self.vocab_size, self.stop_ids)
            return self._grammars

    @property
    def texts(self) -> TokenTexts:
        if self._texts is None:
            self._texts = TokenTexts(self.tokenizer)
        return self._texts

    def _batch_guides(self, purpose: str) -> BatchGuides:
        guides = self._guides.get(purpose)
        if guides is None:
            guides = self._guides[purpose] = BatchGuides(self.grammars.vocab, self.device)
        return guides

    # ------------------------------------------------------------------ admission
    def check(self, request: GenerationRequest) -> None:
        """Compile the request's constraint now (the caller's thread, before any GPU work): an invalid
        schema, regex or grammar is an `InvalidSchemaError` (400 invalid_schema)."""
        if request.constraint is not None:
            self.compiled(request)

    def compiled(self, request: GenerationRequest):
        key = (request.constraint, request.enable_thinking)
        with self._lock:
            found = self._compiled.get(key)
            if found is not None:
                self._compiled.move_to_end(key)
                return found
        grammars = self.grammars
        compiled = grammars.compile(
            request.constraint, after_thinking=request.enable_thinking and grammars.vocab.think_close is not None
        )
        with self._lock:
            self._compiled[key] = compiled
            while len(self._compiled) > COMPILED_KEPT:
                self._compiled.popitem(last=False)
        return compiled

    def prepare(self, seq: Sequence) -> None:
        """Give a new sequence its guide and logprob list."""
        request = seq.request
        if request.constraint is not None or request.thinking_budget is not None:
            compiled = self.compiled(request) if request.constraint is not None else None
            seq.guide = self.grammars.guide(request, compiled)
        if request.sampling.logprobs:
            seq.logprobs = []

    # ------------------------------------------------------------------ sampling steps
    def prefill_mask(self, seqs: list[Sequence]):
        if all(s.guide is None for s in seqs):
            return None
        return self._batch_guides("prefill").mask([s.guide for s in seqs])

    def decode_mask(self, seqs: list[Sequence], pending_ids):
        """The decode step's mask. Guided rows first take their pending token (read from the host copy
        already under way: the GPU keeps running the forward pass meanwhile)."""
        if all(s.guide is None for s in seqs):
            return None
        for seq, token_id in zip(seqs, pending_ids(), strict=False):
            if seq.guide is not None:
                seq.guide.advance(token_id)
        return self._batch_guides("decode").mask([s.guide for s in seqs])

    def note_logprobs(self, seqs: list[Sequence], logits: torch.Tensor, tokens: torch.Tensor) -> list:
        """(StepLogprobs, row) for every sequence that asked for logprobs, None for the others."""
        wanted = [s.request.sampling.top_logprobs for s in seqs if s.logprobs is not None]
        if not wanted:
            return [None] * len(seqs)
        step = StepLogprobs(logits, tokens, max(wanted))
        return [(step, i) if s.logprobs is not None else None for i, s in enumerate(seqs)]

    def take_token(self, seq: Sequence, token_id: int) -> None:
        """A generated (non-stop) token was accepted: record its logprob, released with its text."""
        if seq.logprobs is None or seq.pending_logprobs is None:
            return
        step, row = seq.pending_logprobs
        entry = token_logprob(self.texts, token_id, step, row, seq.request.sampling.top_logprobs)
        seq.logprobs.append(entry)
        seq.unreleased.append(entry)

    # ------------------------------------------------------------------ n choices
    def fork(self, parent: Sequence, runner) -> list[Sequence]:
        """Choices 1..n-1 of a prefilled parent: same prompt and KV (copied when they join), own
        sampler, guide, text streams; no session (the parent keeps it)."""
        n = parent.request.n
        if n == 1:
            return []
        parent.family = Family(n)
        children = []
        for index in range(1, n):
            sampling = choice_sampling(parent.request.sampling, index)
            child = replace(
                parent,
                session=None,
                slot=-1,
                sampler=SamplerState(sampling, runner.vocab_size, runner.device, parent.prompt.ids, runner.stop_ids),
                detok=IncrementalDetokenizer(runner.tokenizer),
                stops=StopStrings(sampling.stop),
                keys=list(parent.keys),
                usage=replace(parent.usage),
                generated=[],
                text_parts=[],
                children=[],
                unreleased=[],
                logprobs=[] if parent.logprobs is not None else None,
                guide=None,
                index=index,
            )
            self.prepare(child)
            children.append(child)
        return children
