"""Helpers of the history tests: real PNG pictures with their hashes, a store in a temp folder, and
what a chat's save looks like."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from pathlib import Path

from PIL import Image

from glm_vision.history import ChatStore


def png(seed: int, size=(24, 16)) -> tuple[str, bytes]:
    """A small real PNG, different per seed, and its hash (sha256 of the bytes)."""
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    image.putpixel((seed % size[0], 0), (255 - seed % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest(), data


def save_turns(store: ChatStore, owner: str, chat_id: str, texts: list[str], images: dict | None = None) -> None:
    """Save a chat whose document is its texts (as the UI's would be, in spirit)."""
    store.save(
        owner,
        chat_id,
        document={"messages": [{"text": t} for t in texts], "images": list(images or {})},
        settings={"temperature": 0.8},
        texts=texts,
        images=images or {},
    )


def image_files(data_dir: Path) -> set[str]:
    """The hashes of the picture files on disk (temporary files excluded)."""
    return {p.stem for p in (data_dir / "images").glob("*/*.png") if not p.name.startswith(".")}


def raw(data_dir: Path) -> sqlite3.Connection:
    """A separate plain connection to the store's database, to look at the rows themselves."""
    return sqlite3.connect(data_dir / "chats.sqlite3")
