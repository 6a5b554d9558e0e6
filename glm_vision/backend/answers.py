"""A backend's text deltas as reasoning and answer deltas: the one loop the CLI, the API and the UI
share to show an answer while it is written."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from ..conversation import StreamSplitter
from .results import GenerationResult, TextDelta


@dataclass(frozen=True)
class AnswerDelta:
    reasoning: str
    answer: str


def _split(splitter: StreamSplitter, item) -> Iterator[AnswerDelta | GenerationResult]:
    if isinstance(item, TextDelta):
        reasoning, answer = splitter.feed(item.text)
    else:
        reasoning, answer = splitter.flush()
    if reasoning or answer:
        yield AnswerDelta(reasoning, answer)
    if isinstance(item, GenerationResult):
        yield item


def answer_deltas(events: Iterable) -> Iterator[AnswerDelta | GenerationResult]:
    """`AnswerDelta`s as the text arrives, then the `GenerationResult`."""
    splitter = StreamSplitter()
    for item in events:
        yield from _split(splitter, item)


async def answer_deltas_async(events: AsyncIterable) -> AsyncIterator[AnswerDelta | GenerationResult]:
    splitter = StreamSplitter()
    async for item in events:
        for out in _split(splitter, item):
            yield out
