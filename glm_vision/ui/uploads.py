"""The files of an input box as the chat's pictures: each checked, a PDF as its pages, named after the
file; a picture the chat gave back to the input (undo, a failed send) is reused as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..images import ImageError, load_media
from .text import say
from .transcript import ChatImage, safe_name


def message_paths(message: dict | None) -> list[str]:
    """The paths of the files in an input box's value."""
    return [f if isinstance(f, str) else f.get("path") for f in (message or {}).get("files") or []]


def file_key(path: str) -> tuple:
    """A file by its name and content (Gradio hands back a copy of a file, not the file itself)."""
    try:
        return Path(path).name, hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return Path(path).name, ""


def load_uploads(paths: list[str], given_back: dict[tuple, ChatImage], settings, lang: str) -> list[ChatImage]:
    images: list[ChatImage] = []
    for path in paths:
        given = given_back.get(file_key(path))
        images += [given] if given is not None else load_upload(path, settings, lang)
    limit = settings.max_images_per_message
    if len(images) > limit:
        raise ImageError(say(lang, "err_too_many", limit=limit, count=len(images)))
    return images


def load_upload(path: str, settings, lang: str) -> list[ChatImage]:
    """An upload's pictures (a PDF gives one per page), each checked and named after the file."""
    name = safe_name(Path(path).name, "image")
    try:
        pages = load_media(path, **settings.upload_limits)
    except ImageError as exc:
        raise ImageError(say(lang, "err_file", name=Path(path).name, error=exc)) from None
    if len(pages) == 1:
        return [ChatImage(pages[0], name)]
    return [ChatImage(page, f"{Path(name).stem}-page{number}.png") for number, page in enumerate(pages, 1)]
