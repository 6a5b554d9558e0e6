"""A backend's text deltas as reasoning and answer deltas: the one loop the CLI, the API and the UI
share to show an answer while it is written.

Each choice (n > 1) is split on its own. Token logprobs ride on the answer delta of the text they
wrote; those of text that shows nowhere (the `</think>` tag, a newline after it) wait for the next
delta of their choice, so every token's logprob comes out exactly once, at the latest with `final`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..conversation import StreamSplitter
from .results import ChoiceEnd, GenerationResult, TextDelta, TokenLogprob


@dataclass(frozen=True)
class AnswerDelta:
    reasoning: str
    answer: str
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    final: bool = False  # the choice's last delta (what its splitter held back), before the result


class AnswerSplitter:
    """One request's text deltas as reasoning and answer deltas: the splitters and held-back logprobs of
    every choice. `feed` each backend event; it yields what can be shown so far."""

    def __init__(self) -> None:
        self.splitters: dict[int, StreamSplitter] = {}
        self.held: dict[int, list[TokenLogprob]] = {}

    def feed(self, item) -> Iterator[AnswerDelta | ChoiceEnd | GenerationResult]:
        if isinstance(item, TextDelta):
            splitter = self.splitters.setdefault(item.index, StreamSplitter())
            held = self.held.setdefault(item.index, [])
            held.extend(item.logprobs)
            reasoning, answer = splitter.feed(item.text)
            if reasoning or answer:
                self.held[item.index] = []
                yield AnswerDelta(reasoning, answer, item.index, tuple(held))
            return
        if isinstance(item, ChoiceEnd):
            yield from self._flush(item.choice.index)
            yield item
            return
        for index in sorted(set(self.splitters) | set(self.held)):
            yield from self._flush(index)
        yield item

    def _flush(self, index: int) -> Iterator[AnswerDelta]:
        """A choice's last delta: what its splitter held back, and logprobs not yet sent."""
        reasoning, answer = self.splitters.pop(index, StreamSplitter()).flush()
        held = tuple(self.held.pop(index, ()))
        if reasoning or answer or held:
            yield AnswerDelta(reasoning, answer, index, held, final=True)


def answer_deltas(events: Iterable) -> Iterator[AnswerDelta | ChoiceEnd | GenerationResult]:
    """`AnswerDelta`s as the text arrives (and `ChoiceEnd`s, n > 1), then the `GenerationResult`."""
    split = AnswerSplitter()
    for item in events:
        yield from split.feed(item)
