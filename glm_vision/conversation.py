"""Conversation messages, their rendering for the chat template, and the split of model output
into reasoning (`<think>...</think>`), answer and boxed parts.

Reasoning is kept for display but never sent back to the model in later turns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .images import InputImage
from .tool_calls import ToolCall

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
ROLES = ("system", "user", "assistant", "tool")
IMAGE_ROLES = ("user", "tool")  # a tool's result may be a screenshot


@dataclass
class Message:
    role: str
    text: str = ""
    images: list[InputImage] = field(default_factory=list)
    reasoning: str = ""  # assistant only, display only
    tool_calls: list[ToolCall] = field(default_factory=list)  # assistant only: the calls it made
    tool_call_id: str = ""  # tool only: the call this result answers

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; use one of {', '.join(ROLES)}")
        if self.images and self.role not in IMAGE_ROLES:
            raise ValueError("only user and tool messages can carry images")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages can carry tool calls")


def to_template_messages(messages: list[Message]) -> list[dict]:
    """The chat-template view of a conversation: images first, then text; no reasoning; tool calls
    with their arguments as a mapping (what GLM's template iterates)."""
    rendered = []
    for message in messages:
        if message.role in IMAGE_ROLES:
            content = [{"type": "image"} for _ in message.images]
            content.append({"type": "text", "text": message.text})
            rendered.append({"role": message.role, "content": content})
        elif message.tool_calls:
            calls = [
                {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls
            ]
            rendered.append({"role": "assistant", "content": message.text, "tool_calls": calls})
        else:
            rendered.append({"role": message.role, "content": message.text})
    return rendered


def conversation_images(messages: list[Message]) -> list[InputImage]:
    return [image for message in messages for image in message.images]


@dataclass(frozen=True)
class ParsedOutput:
    reasoning: str
    answer: str  # box markers removed
    boxed: tuple[str, ...]
    raw_answer: str  # as the model wrote it, box markers kept (what later turns send back)


_BOX_RE = re.compile(re.escape(BOX_OPEN) + r"(.*?)(?:" + re.escape(BOX_CLOSE) + r"|$)", re.S)


def split_output(text: str) -> ParsedOutput:
    """Split a complete model output into reasoning, answer and boxed parts: exactly what a
    `StreamSplitter` gives for the same text in any chunking (one splitter, one result)."""
    splitter = StreamSplitter(keep_boxes=True)
    reasoning, answer = splitter.feed(text)
    rest_reasoning, rest_answer = splitter.flush()
    raw_answer = (answer + rest_answer).strip()
    boxed = tuple(m.strip() for m in _BOX_RE.findall(raw_answer))
    clean = raw_answer.replace(BOX_OPEN, "").replace(BOX_CLOSE, "")
    return ParsedOutput(
        reasoning=(reasoning + rest_reasoning).strip(), answer=clean.strip(), boxed=boxed, raw_answer=raw_answer
    )


class StreamSplitter:
    """Incremental `split_output`: feed text deltas, get (reasoning_delta, answer_delta) pairs.

    Marker tags that arrive split over several deltas are held back until they are complete, so
    no raw `<think>` or box marker ever reaches the display (with `keep_boxes`, box markers are kept
    in the text, for what is sent back to the model in later turns).
    """

    _MARKERS = (THINK_OPEN, THINK_CLOSE, BOX_OPEN, BOX_CLOSE)
    _MARKER_START = "<"  # where every marker starts
    _PARTIALS = frozenset(marker[:size] for marker in _MARKERS for size in range(1, len(marker)))
    _LONGEST_PARTIAL = max(len(marker) for marker in _MARKERS) - 1

    def __init__(self, *, keep_boxes: bool = False) -> None:
        self.keep_boxes = keep_boxes
        self._pending = ""
        self._in_reasoning = False
        self._started = False
        self._at_section_start = False  # newlines right after <think> or </think> are not content

    def feed(self, delta: str) -> tuple[str, str]:
        self._pending += delta
        if self._started and not self._at_section_start and self._MARKER_START not in self._pending:
            # most deltas: no marker and no start of one, all of it is text (the API runs this for every stream)
            text, self._pending = self._pending, ""
            return (text, "") if self._in_reasoning else ("", text)
        reasoning, answer = [], []
        while self._pending:
            if not self._started:
                stripped = self._pending.lstrip()
                if not stripped:
                    return "", ""
                if THINK_OPEN.startswith(stripped) and len(stripped) < len(THINK_OPEN):
                    return "", ""  # could still become <think>
                self._started = True
                if stripped.startswith(THINK_OPEN):
                    self._in_reasoning = self._at_section_start = True
                    self._pending = stripped[len(THINK_OPEN) :]
                    continue
            if self._at_section_start:
                # the newline after a tag often arrives as a delta of its own
                self._pending = self._pending.lstrip("\n")
                if not self._pending:
                    break
                self._at_section_start = False
            index, marker = self._next_marker()
            if marker is None:
                keep = self._partial_marker_suffix()
                text, self._pending = (
                    self._pending[: len(self._pending) - keep],
                    self._pending[len(self._pending) - keep :],
                )
                (reasoning if self._in_reasoning else answer).append(text)
                break
            kept = marker if self.keep_boxes and marker in (BOX_OPEN, BOX_CLOSE) else ""
            (reasoning if self._in_reasoning else answer).append(self._pending[:index] + kept)
            self._pending = self._pending[index + len(marker) :]
            if marker in (THINK_OPEN, THINK_CLOSE):
                self._in_reasoning = marker == THINK_OPEN
                self._at_section_start = True
        return "".join(reasoning), "".join(answer)

    def flush(self) -> tuple[str, str]:
        text, self._pending = self._pending, ""
        for marker in self._MARKERS:
            if not (self.keep_boxes and marker in (BOX_OPEN, BOX_CLOSE)):
                text = text.replace(marker, "")
        return (text, "") if self._in_reasoning else ("", text)

    def _next_marker(self) -> tuple[int, str | None]:
        best = (len(self._pending), None)
        for marker in self._MARKERS:
            index = self._pending.find(marker)
            if index != -1 and index < best[0]:
                best = (index, marker)
        return best

    def _partial_marker_suffix(self) -> int:
        """The length of the longest end of the pending text that may still grow into a marker."""
        tail = self._pending[-self._LONGEST_PARTIAL :]
        start = tail.find(self._MARKER_START)  # ~1 us a token: the API's event loop runs this for every stream
        while start != -1:
            if tail[start:] in self._PARTIALS:
                return len(tail) - start
            start = tail.find(self._MARKER_START, start + 1)
        return 0
