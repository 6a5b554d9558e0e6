"""Constrained decoding: a per-request guide fills a token bitmask each step (xgrammar's grammar
matcher for JSON schema, regex, EBNF grammar or a choice list; the thinking budget), and the sampler
sets the masked logits to -inf before penalty, temperature, top-k and top-p.

A guided row with thinking on opens with `<think>` (as GLM does), reasons freely (only a constrained
row may not stop there: its answer is still owed), and closes with `</think>` on its own or when its
thinking budget is used up; the constraint starts after that. Rows without a guide get no mask.

xgrammar is imported here only, so the torch-free install (remote backend) never needs it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

import torch

from ..backend import EngineError, GenerationRequest, InvalidSchemaError, OutputConstraint
from ..tool_calls import TOOL_TAGS
from .tool_grammar import tool_call_grammar

log = logging.getLogger(__name__)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
JSON_SEPARATORS = (",", ":")  # compact JSON: no runs of whitespace a model could loop in
# xgrammar (0.2.8 and 0.2.9) writes a string with minLength/maxLength as characters `[^"\\\r\n]`, which lets raw
# control characters into it (invalid JSON); its unbounded strings exclude them. Patched in the EBNF.
_LOOSE_CHARS = r"[^\"\\\r\n]"
_JSON_CHARS = r"[^\0-\x1f\"\\\r\n]"


def _xgrammar():
    try:
        import xgrammar
    except ImportError as exc:  # pragma: no cover - the local extra installs it
        raise EngineError("response_format needs the xgrammar package (pip install 'glm-vision[local]')") from exc
    return xgrammar


@dataclass(frozen=True)
class Vocabulary:
    """What the guides need to know about the tokenizer: sizes and the ids they force or forbid."""

    size: int  # the logits' width (the model's vocabulary, padding included)
    stop_ids: tuple[int, ...]
    think_open: int | None
    think_close: int | None

    @property
    def words(self) -> int:
        return (self.size + 31) // 32


class Grammars:
    """Compiles constraints for one tokenizer (compiled grammars are cached by xgrammar)."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids) -> None:
        xgr = _xgrammar()
        self.xgr = xgr
        base = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        added = set(tokenizer.added_tokens_decoder)
        # Added tokens (chat markers, <think>, image slots) never belong inside a constrained answer:
        # an empty text makes xgrammar treat them as special, allowed nowhere; stop ids end an answer.
        self.compiler = _compiler(xgr, base, added, vocab_size, stop_ids)
        # A forced function call is written with the tool-call tags: they keep their text there only.
        self.tool_compiler = _compiler(xgr, base, added - _tool_tag_ids(tokenizer), vocab_size, stop_ids)
        ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (THINK_OPEN, THINK_CLOSE)}
        known = {t: i for t, i in ids.items() if isinstance(i, int) and i != tokenizer.unk_token_id and i in added}
        self.vocab = Vocabulary(vocab_size, tuple(sorted(stop_ids)), known.get(THINK_OPEN), known.get(THINK_CLOSE))

    def grammar(self, constraint: OutputConstraint):
        """The constraint as an xgrammar `Grammar`; `InvalidSchemaError` naming what is wrong."""
        xgr = self.xgr
        try:
            if constraint.kind in ("json_object", "json_schema"):
                schema = _schema_text(constraint) if constraint.kind == "json_schema" else '{"type": "object"}'
                grammar = xgr.Grammar.from_json_schema(
                    schema, any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=True
                )
                text = str(grammar)
                if _LOOSE_CHARS not in text:
                    return grammar
                return xgr.Grammar.from_ebnf(text.replace(_LOOSE_CHARS, _JSON_CHARS))
            if constraint.kind == "regex":
                return xgr.Grammar.from_regex(constraint.spec)
            if constraint.kind == "grammar":
                return xgr.Grammar.from_ebnf(constraint.spec)
            if constraint.kind == "tool_call":
                return tool_call_grammar(xgr, json.loads(constraint.spec))
            return xgr.Grammar.from_regex("|".join(f"({re.escape(choice)})" for choice in constraint.choices))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InvalidSchemaError(_problem(constraint, exc), param=_param(constraint)) from None

    def compile(self, constraint: OutputConstraint, *, after_thinking: bool):
        """Compiled once per (constraint, thinking): after `</think>` GLM may write one newline first."""
        grammar = self.grammar(constraint)
        if after_thinking:
            grammar = self.xgr.Grammar.concat(self.xgr.Grammar.from_regex(r"\n?"), grammar)
        compiler = self.tool_compiler if constraint.kind == "tool_call" else self.compiler
        try:
            return compiler.compile_grammar(grammar)
        except (RuntimeError, ValueError) as exc:
            raise InvalidSchemaError(_problem(constraint, exc), param=_param(constraint)) from None

    def guide(self, request: GenerationRequest, compiled=None) -> Guide | None:
        """A fresh guide for one choice of `request` (None when nothing needs guiding)."""
        thinking = request.enable_thinking and self.vocab.think_close is not None
        budget = request.thinking_budget if thinking else None
        if request.constraint is None and budget is None:
            return None
        matcher = None
        if request.constraint is not None:
            compiled = compiled or self.compile(request.constraint, after_thinking=thinking)
            matcher = self.xgr.GrammarMatcher(compiled)
        return Guide(self.vocab, matcher, thinking=thinking, budget=budget)


def _compiler(xgr, base, masked: set[int], vocab_size: int, stop_ids):
    texts = [b"" if i in masked else text for i, text in enumerate(base.decoded_vocab)]
    info = xgr.TokenizerInfo(texts, xgr.VocabType.RAW, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids))
    return xgr.GrammarCompiler(info, cache_enabled=True)


def _tool_tag_ids(tokenizer) -> set[int]:
    ids = {tokenizer.convert_tokens_to_ids(tag) for tag in TOOL_TAGS}
    return {i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id}


def _schema_text(constraint: OutputConstraint) -> str:
    try:
        schema = json.loads(constraint.spec)
    except json.JSONDecodeError as exc:
        raise InvalidSchemaError(f"the JSON schema is not valid JSON: {exc}", param=_param(constraint)) from None
    if not isinstance(schema, dict):
        raise InvalidSchemaError("the JSON schema must be an object", param=_param(constraint))
    return constraint.spec


def _param(constraint: OutputConstraint) -> str:
    return {
        "json_schema": "response_format.json_schema.schema",
        "regex": "structured_outputs.regex",
        "grammar": "structured_outputs.grammar",
        "choice": "structured_outputs.choice",
        "tool_call": "tool_choice",
    }.get(constraint.kind, "response_format")


def _problem(constraint: OutputConstraint, exc: Exception) -> str:
    """xgrammar's message without its source location prefix ('[time] file.cc:line: ')."""
    text = re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", str(exc).strip()).strip() or type(exc).__name__
    what = {"json_schema": "JSON schema", "json_object": "JSON object format"}.get(constraint.kind, constraint.kind)
    name = f" {constraint.name!r}" if constraint.name else ""
    return f"invalid {what}{name}: {text}"


class Guide:
    """One choice's guide: the reasoning phase (forced `<think>`, budget, forced `</think>`), then
    the grammar matcher. `fill` writes the next step's allowed tokens, `advance` takes the token
    that was chosen."""

    def __init__(self, vocab: Vocabulary, matcher, *, thinking: bool, budget: int | None) -> None:
        self.vocab = vocab
        self.matcher = matcher
        self.budget = budget
        self.phase = "answer" if not thinking else "open" if vocab.think_open is not None else "reasoning"
        self.reasoning_tokens = 0
        self.broken = False

    @property
    def active(self) -> bool:
        """Whether the next step needs a mask at all."""
        if self.phase == "answer":
            return self.matcher is not None and not self.broken
        if self.phase == "open" or self.matcher is not None:
            return True
        return self.budget is not None and self.reasoning_tokens >= self.budget

    def fill(self, bitmask: torch.Tensor, row: int, masks: Masks) -> bool:
        """Write row `row` of the (B, words) int32 host bitmask; False when the grammar matcher has to."""
        if self.phase == "open":
            bitmask[row] = masks.only(self.vocab.think_open)
        elif self.phase == "reasoning":
            if self.budget is not None and self.reasoning_tokens >= self.budget:
                bitmask[row] = masks.only(self.vocab.think_close)
            else:
                bitmask[row] = masks.no_stop  # a constrained answer is still owed
        elif self.matcher.is_terminated():
            bitmask[row] = masks.stops
        else:
            return False
        return True

    def advance(self, token_id: int) -> None:
        if self.phase == "open":
            self.phase = "reasoning"
            if token_id != self.vocab.think_open:  # only when the row was not masked (cannot happen)
                self.reasoning_tokens += 1
        elif self.phase == "reasoning":
            if token_id == self.vocab.think_close:
                self.phase = "answer"
            else:
                self.reasoning_tokens += 1
        elif self.matcher is not None and not self.broken and not self.matcher.is_terminated():
            if not self.matcher.accept_token(token_id):
                log.warning("the grammar matcher refused token %d; the rest of this answer is unconstrained", token_id)
                self.broken = True


class Masks:
    """Host int32 bitmask rows used over and over: all tokens, all but the stop ids, one token."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.all = self._row(range(vocab.size))
        self.no_stop = self._row(t for t in range(vocab.size) if t not in vocab.stop_ids)
        self.stops = self._row(vocab.stop_ids)
        self._only: dict[int, torch.Tensor] = {}

    def only(self, token: int) -> torch.Tensor:
        row = self._only.get(token)
        if row is None:
            row = self._only[token] = self._row([token])
        return row

    def _row(self, tokens) -> torch.Tensor:
        bits = torch.zeros(self.vocab.words * 32, dtype=torch.bool)
        bits[list(tokens)] = True
        weights = torch.tensor([1 << i for i in range(31)] + [-(1 << 31)], dtype=torch.int64)
        return (bits.view(-1, 32).long() * weights).sum(-1).to(torch.int32)


class TokenMask:
    """The allowed tokens of one batch step: xgrammar's packed (B, vocab/32) int32 bitmask on the logits'
    device (free rows all ones); `rows`: the guided rows (their guide, not min_tokens, decides when a
    stop id may come)."""

    def __init__(self, bitmask: torch.Tensor, vocab_size: int, rows: frozenset[int] = frozenset()) -> None:
        self.bitmask = bitmask
        self.vocab_size = vocab_size
        self.rows = rows

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """Sets the disallowed scores to -inf in place (one fused kernel: Triton on CUDA, C++ on CPU)."""
        _xgrammar().apply_token_bitmask_inplace(scores, self.bitmask, vocab_size=self.vocab_size)
        return scores


class BatchGuides:
    """Fills one host bitmask for a decode batch and sends it to the device."""

    def __init__(self, vocab: Vocabulary, device: torch.device) -> None:
        self.vocab = vocab
        self.device = device
        self.masks = Masks(vocab)
        self._host: torch.Tensor | None = None

    def mask(self, guides: list[Guide | None]) -> TokenMask | None:
        """The step's mask, or None when no row needs one (the common, unconstrained case)."""
        guided = {i: g for i, g in enumerate(guides) if g is not None and g.active}
        if not guided:
            return None
        bitmask = self._buffer(len(guides))
        # One row at a time: xgrammar's multi-threaded BatchGrammarMatcher took 4.6 ms a step for 32 rows
        # on a 16-core host (its threads' start-up), 30x the fills themselves.
        for index in range(len(guides)):
            guide = guided.get(index)
            if guide is None:
                bitmask[index] = self.masks.all
            elif not guide.fill(bitmask, index, self.masks):
                guide.matcher.fill_next_token_bitmask(bitmask, index)
        on_device = bitmask.to(self.device, non_blocking=True)
        return TokenMask(on_device, self.vocab.size, frozenset(guided))

    def _buffer(self, batch: int) -> torch.Tensor:
        """A pinned (on CUDA) host buffer, grown as needed. A fresh one each step on CUDA would do too;
        reusing it is safe because the copy is queued before the next fill can run (the next step waits
        for this step's tokens first)."""
        if self._host is None or self._host.shape[0] < batch:
            pinned = self.device.type == "cuda"
            self._host = torch.empty((max(batch, 8), self.vocab.words), dtype=torch.int32, pin_memory=pinned)
        return self._host[:batch]
