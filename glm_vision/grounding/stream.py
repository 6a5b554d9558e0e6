"""Groundings found while an answer streams in, each once, without re-reading the whole answer."""

from __future__ import annotations

import re

from ..conversation import BOX_CLOSE, BOX_OPEN, StreamSplitter
from .marks import Grounding
from .parsing import FENCE, line_mentions, parse, unbox


class GroundingStream:
    """Groundings as the model output streams in: feed the generated text (reasoning and box markers
    included, as the backend emits it), get each box or point once its line is complete. `flush()` at
    the end gives the rest; all of them together equal `find_groundings` of the whole answer.

    Linear in the answer's length: text before the last complete line outside any bracket, box
    marker or code fence is never read again (what it leaves for later, the last "Image N:" line, is
    carried over)."""

    _CLOSERS = set("])}>）】") | {BOX_CLOSE[-1]}

    def __init__(self) -> None:
        self._splitter = StreamSplitter(keep_boxes=True)
        self._answer = ""
        self._settled = 0  # the answer up to here can no longer change its groundings
        self._scanned = 0
        self._depth = 0
        self._in_box = False
        self._base = 0  # the segment still parsed again starts here (a line start) ...
        self._base_clean = 0  # ... which is here in the displayed answer
        self._carried_ref: int | None = None  # the last "Image N" line before the segment
        self._segment_seen = 0  # groundings of the segment already given out
        self.groundings: list[Grounding] = []

    def feed(self, delta: str) -> list[Grounding]:
        _, answer = self._splitter.feed(delta)
        self._answer += answer
        settled = self._settle()
        if settled <= self._settled:
            return []
        fresh = self._answer[self._settled : settled]
        self._settled = settled
        found = []
        if any(ch.isdigit() for ch in fresh) and any(ch in self._CLOSERS for ch in fresh):
            found = self._emit(settled)
        self._rebase(settled)
        return found

    def flush(self) -> list[Grounding]:
        _, answer = self._splitter.flush()
        self._answer += answer
        return self._emit(len(self._answer))

    def _emit(self, end: int) -> list[Grounding]:
        segment = self._answer[self._base : end]
        if self._base == 0:
            items = parse(segment)
        else:
            items = parse(segment, strip=False, offset=self._base_clean, carried_ref=self._carried_ref)
        fresh = items[self._segment_seen :]
        self._segment_seen = len(items)
        self.groundings.extend(fresh)
        return fresh

    def _rebase(self, settled: int) -> None:
        """Start the next segment at `settled` when nothing before it can matter any more."""
        clean, _ = unbox(self._answer[self._base : settled], strip=False)
        toggles = sum(1 for _ in FENCE.finditer(clean))
        if toggles % 2:
            return  # inside a code fence: its end decides what is code
        if self._base == 0:
            if not clean.strip():
                return
            self._base_clean = len(clean.strip()) + len(clean) - len(clean.rstrip())
        else:
            self._base_clean += len(clean)
        starts = [0] + [m.end() for m in re.finditer("\n", clean)]
        heads = line_mentions(clean, starts)
        if heads:
            self._carried_ref = heads[-1][1]
        self._base, self._segment_seen = settled, 0

    def _settle(self) -> int:
        """The end of the last complete line with no bracket or box marker left open."""
        text, settled = self._answer, self._settled
        position = self._scanned
        while position < len(text):
            if text.startswith(BOX_OPEN, position):
                self._in_box, position = True, position + len(BOX_OPEN)
                continue
            if text.startswith(BOX_CLOSE, position):
                self._in_box, position = False, position + len(BOX_CLOSE)
                continue
            ch = text[position]
            if ch in "[{":
                self._depth += 1
            elif ch in "]}":
                self._depth = max(0, self._depth - 1)
            elif ch == "\n":
                if text.startswith("\n", position + 1):
                    self._depth = 0  # a blank line ends any bracket a stray "[" left open
                if self._depth == 0 and not self._in_box:
                    settled = position + 1
            position += 1
        self._scanned = position
        return settled
