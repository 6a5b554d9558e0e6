"""The values the chat store hands out and takes in."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChatSummary:
    """One line of the chat list."""

    id: str
    title: str
    created: float
    updated: float
    thumbnail: str | None  # the hash of the chat's first image (see ChatStore.image_path), None without one


@dataclass(frozen=True)
class StoredChat:
    """A whole chat as saved: the UI's document (images referenced by hash), its settings, and the
    hashes of the images it references (each readable with ChatStore.image_bytes)."""

    id: str
    title: str
    document: dict
    settings: dict
    created: float
    updated: float
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewChat:
    """A chat to import (ChatStore.import_all): the same parts `save` takes, plus its original times.
    `images` maps every hash the document references to its PNG bytes (None: already in the store)."""

    document: dict
    settings: dict = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    images: dict[str, bytes | None] = field(default_factory=dict)
    title: str = ""
    created: float | None = None
    updated: float | None = None
