"""A chat as the web UI keeps it: turns with their images, answers, reasoning and usage, the earlier
versions Retry and Edit leave behind (forks), and its Markdown form (the branch on screen).

Retry and Edit never throw a version away: the turns from the changed one on are kept as a sibling
version at that position (a `Fork`), and the chat moves between versions with `switch`. `turns` is
always the branch on screen, so everything that reads a chat (the model's messages, the display, the
exports) reads a plain list. The JSON form is in `chat_json.py`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import time
from dataclasses import dataclass, field, replace

from ..conversation import Message
from ..images import InputImage
from .markdown import literal, render_boxes


@dataclass
class ChatImage:
    image: InputImage
    name: str = "image.png"
    _png: bytes | None = field(default=None, repr=False)
    _png_sha256: str | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        return self.image.digest

    @property
    def notes(self) -> tuple[str, ...]:
        return self.image.notes

    def png(self) -> bytes:
        """Lossless PNG of the normalised pixels: decoding it gives the same digest."""
        if self._png is None:
            buffer = io.BytesIO()
            self.image.image.save(buffer, format="PNG", optimize=False, compress_level=6)
            self._png = buffer.getvalue()
        return self._png

    def png_sha256(self) -> str:
        """sha256 of `png()`: the name the chat history stores the picture under (hashed once, not at
        every save of the chat)."""
        if self._png_sha256 is None:
            self._png_sha256 = hashlib.sha256(self.png()).hexdigest()
        return self._png_sha256


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    text: str = ""  # assistant: the answer as the model wrote it (box markers kept), reasoning excluded
    images: list[ChatImage] = field(default_factory=list)
    reasoning: str = ""
    finish_reason: str = ""
    usage: dict = field(default_factory=dict)
    error: str = ""  # a user turn whose answer failed: the message shown under it

    def copy(self) -> Turn:
        return replace(self, images=list(self.images), usage=dict(self.usage))


@dataclass
class Version:
    """The turns from a fork's position on, with the forks further down that branch."""

    turns: list[Turn]
    forks: dict[int, Fork] = field(default_factory=dict)

    def copy(self) -> Version:
        return Version([t.copy() for t in self.turns], {at: f.copy() for at, f in self.forks.items()})


@dataclass
class Fork:
    """The versions of the turns from one position on; the one on screen is `current` (its slot holds
    None: its turns are the transcript's own)."""

    versions: list[Version | None]
    current: int

    def copy(self) -> Fork:
        return Fork([v.copy() if v is not None else None for v in self.versions], self.current)


@dataclass
class Transcript:
    turns: list[Turn] = field(default_factory=list)  # the branch on screen
    created: float = field(default_factory=time.time)
    forks: dict[int, Fork] = field(default_factory=dict)  # by the position of the turn that has versions

    def copy(self) -> Transcript:
        return Transcript([t.copy() for t in self.turns], self.created, {at: f.copy() for at, f in self.forks.items()})

    def engine_messages(self, system_prompt: str = "") -> list[Message]:
        """What the model sees: the system prompt, then each turn (answers without reasoning)."""
        messages = [Message("system", system_prompt.strip())] if system_prompt.strip() else []
        for turn in self.turns:
            images = [img.image for img in turn.images] if turn.role == "user" else []
            messages.append(Message(turn.role, turn.text, images))
        return messages

    @property
    def title(self) -> str:
        for turn in self.turns:
            if turn.role == "user" and turn.text.strip():
                return turn.text.strip().splitlines()[0][:60]
        return "chat"

    # ------------------------------------------------------------------ versions
    def branch(self, at: int) -> None:
        """Make way for a new version of the turns from `at` on (Retry, Edit): the turns on screen from
        there are kept as the previous version; the new one starts empty and is current."""
        if at >= len(self.turns):
            return
        fork = self.forks.get(at) or Fork([None], 0)
        fork.versions[fork.current] = self._tail(at)
        fork.versions.append(None)
        fork.current = len(fork.versions) - 1
        self._cut(at)
        self.forks[at] = fork

    def switch(self, at: int, step: int) -> bool:
        """Show the version `step` away (-1 previous, +1 next) of the turns from `at` on."""
        fork = self.forks.get(at)
        if fork is None or not 0 <= fork.current + step < len(fork.versions):
            return False
        fork.versions[fork.current] = self._tail(at)
        self._cut(at)
        self._show_version(at, fork, fork.current + step)
        return True

    def take_back(self, at: int) -> None:
        """Remove the turns from `at` on (Undo); where that position has other versions, the previous one
        is shown instead."""
        fork = self.forks.get(at)
        self._cut(at)
        if fork is None or len(fork.versions) < 2:
            return
        del fork.versions[fork.current]
        self._show_version(at, fork, max(fork.current - 1, 0))

    def version_of(self, at: int) -> tuple[int, int] | None:
        """(number, count) of the version shown from `at` on, 1-based; None where there is only one."""
        fork = self.forks.get(at)
        return (fork.current + 1, len(fork.versions)) if fork is not None else None

    def every_turn(self):
        """Every turn of every version (what search looks through, and which images the chat holds)."""
        yield from self.turns
        for fork in self.forks.values():
            for version in fork.versions:
                if version is not None:
                    yield from Transcript(version.turns, forks=version.forks).every_turn()

    def _tail(self, at: int) -> Version:
        return Version(self.turns[at:], {k: f for k, f in self.forks.items() if k > at})

    def _cut(self, at: int) -> None:
        del self.turns[at:]
        self.forks = {k: f for k, f in self.forks.items() if k < at}

    def _show_version(self, at: int, fork: Fork, index: int) -> None:
        version = fork.versions[index]
        fork.versions[index], fork.current = None, index
        self.turns.extend(version.turns)
        self.forks.update(version.forks)
        if len(fork.versions) > 1:
            self.forks[at] = fork


# ---------------------------------------------------------------------- Markdown
def to_markdown(transcript: Transcript, *, model: str = "", settings: dict | None = None) -> str:
    """A readable Markdown file; images are embedded as data URLs so the file stands alone. The user's
    words and the system prompt show literally (see `markdown.literal`)."""
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(transcript.created))
    lines = [
        f"# {literal(transcript.title)}",
        "",
        f"_glm-vision chat{' with ' + model if model else ''}, started {stamp}_",
        "",
    ]
    lines += _settings_lines(settings or {})
    for index, turn in enumerate(transcript.turns):
        lines += _user_lines(turn) if turn.role == "user" else _assistant_lines(turn) + _boxes_lines(transcript, index)
    return "\n".join(lines).rstrip() + "\n"


def _settings_lines(settings: dict) -> list[str]:
    lines = []
    if settings.get("system_prompt"):
        lines += ["**System prompt**", "", _paragraph(settings["system_prompt"]), ""]
    values = [f"{name.replace('_', ' ')} {value}" for name, value in settings.items() if name != "system_prompt"]
    return lines + (["**Settings** " + " · ".join(values), ""] if values else [])


def _user_lines(turn: Turn) -> list[str]:
    lines = ["## User", ""]
    for img in turn.images:
        data = base64.b64encode(img.png()).decode("ascii")
        lines += [f"![{_md_alt(img.name)}](data:image/png;base64,{data})", ""]
    lines += [_paragraph(turn.text), ""]
    return lines + ([f"> Error: {literal(turn.error)}", ""] if turn.error else [])


def _assistant_lines(turn: Turn) -> list[str]:
    lines = ["## Assistant", ""]
    if turn.reasoning:
        lines += ["<details><summary>Reasoning</summary>", "", turn.reasoning, "", "</details>", ""]
    lines += [render_boxes(turn.text), ""]
    return lines + (["_(stopped)_", ""] if turn.finish_reason == "cancelled" else [])


def _boxes_lines(transcript: Transcript, index: int) -> list[str]:
    """The pictures an answer put boxes or points on, with them drawn (numbered and labelled)."""
    from .boxes import answer_pictures  # boxes.py builds on this module

    lines = []
    for picture in answer_pictures(transcript, index):
        data = base64.b64encode(picture.png()).decode("ascii")
        lines += [f"![{_md_alt(picture.alt)}](data:image/png;base64,{data})", ""]
    return lines


def _paragraph(text: str) -> str:
    """Typed text as it was typed: literal characters, every line break kept."""
    return literal(text).replace("\n", "  \n")


def _md_alt(name: str) -> str:
    return re.sub(r"[\[\]\n]", "", name)[:80] or "image"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, default: str = "file") -> str:
    """A file name safe on every OS: ASCII letters, digits, dot, dash, underscore; no leading dots."""
    cleaned = _UNSAFE.sub("-", name.replace("\\", "/").rsplit("/", 1)[-1]).strip("-.")
    return cleaned[:80] or default


def export_name(transcript: Transcript, extension: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    return f"glm-vision-{safe_name(transcript.title.lower(), 'chat')[:40]}-{stamp}.{extension}"
