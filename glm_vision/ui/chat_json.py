"""A chat as JSON: what the browser stores for a tab (so a reload or a server restart keeps the chat),
what "Export JSON" downloads and "Import JSON" reads back, and (with images referenced by hash instead
of embedded) the document the chat history stores.

`messages` is the branch on screen, so a reader that knows nothing of versions reads the chat as it
was shown; `forks` (version 2) holds the other versions Retry and Edit kept. Version 1 files (no forks)
are read as they are. Every embedded image is decoded through `images.load_media` again, so an
imported file gets the same checks as an upload.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import replace

from ..images import ImageError, load_media
from .transcript import ChatImage, Fork, Transcript, Turn, Version, safe_name

FORMAT = "glm-vision-chat"
VERSION = 2  # 2: forks (the versions Retry and Edit keep); 1: messages only

ImageEntry = Callable[[ChatImage], dict]  # a picture as its JSON object (embedded or by reference)
ImageReader = Callable[[dict, str], ChatImage]  # (the JSON object, where it is for messages) -> the picture


# ---------------------------------------------------------------------- writing
def embedded(image: ChatImage) -> dict:
    """A picture with its pixels in the file (lossless PNG, base64)."""
    return {
        "name": image.name,
        "mime": "image/png",
        "digest": image.digest,
        "notes": list(image.notes),
        "data": base64.b64encode(image.png()).decode("ascii"),
    }


def to_json(transcript: Transcript, *, settings: dict | None = None, drawn: bool = True) -> str:
    """The chat as JSON with its images embedded. With `drawn` (the export), an answer on screen with
    boxes or points also carries them (`annotations`, as the API gives them) and its pictures with them
    drawn (`annotated_images`); the browser's own copy leaves both out (derived, and browser storage is
    small)."""
    body = to_document(transcript, embedded, settings=settings, drawn=drawn)
    return json.dumps(body | {"exported": time.time()}, ensure_ascii=False)


def to_document(
    transcript: Transcript, image_entry: ImageEntry, *, settings: dict | None = None, drawn: bool = False
) -> dict:
    body = {
        "format": FORMAT,
        "version": VERSION,
        "created": transcript.created,
        "messages": _messages(transcript.turns, image_entry),
        "forks": _forks(transcript.forks, image_entry),
    }
    if drawn:
        _add_drawn(transcript, body["messages"])
    if settings is not None:
        body["settings"] = settings
    return body


def _messages(turns: list[Turn], image_entry: ImageEntry) -> list[dict]:
    items = []
    for turn in turns:
        item: dict = {"role": turn.role, "text": turn.text}
        if turn.role == "user":
            item["images"] = [image_entry(img) for img in turn.images]
            if turn.error:
                item["error"] = turn.error
        else:
            item.update(reasoning=turn.reasoning, finish_reason=turn.finish_reason, usage=turn.usage)
        items.append(item)
    return items


def _forks(forks: dict[int, Fork], image_entry: ImageEntry) -> list[dict]:
    return [
        {
            "at": at,
            "current": fork.current,
            "versions": [
                None
                if version is None
                else {
                    "messages": _messages(version.turns, image_entry),
                    "forks": _forks(version.forks, image_entry),
                }
                for version in fork.versions
            ],
        }
        for at, fork in sorted(forks.items())
    ]


def _add_drawn(transcript: Transcript, items: list[dict]) -> None:
    """The answers' boxes and points, and their pictures with them drawn (for readers; an import draws
    them again)."""
    from .boxes import answer_pictures  # boxes.py builds on the transcript

    for index, item in enumerate(items):
        pictures = answer_pictures(transcript, index) if item["role"] == "assistant" else []
        if pictures:
            item["annotations"] = [a.to_json() for p in pictures for a in p.annotations]
            item["annotated_images"] = [
                {
                    "name": p.name,
                    "image_index": p.image_index,
                    "mime": "image/png",
                    "data": base64.b64encode(p.png()).decode("ascii"),
                }
                for p in pictures
            ]


# ---------------------------------------------------------------------- reading
def from_json(
    text: str | bytes, *, max_bytes: int | None = None, max_images_per_message: int = 64
) -> tuple[Transcript, dict]:
    """A transcript (and the settings saved with it) from an export; raises ImageError with a clear message."""
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"the file is not valid JSON ({exc}); import a glm-vision JSON export") from None
    return from_document(body, embedded_reader(max_bytes), max_images_per_message=max_images_per_message)


def embedded_reader(max_bytes: int | None) -> ImageReader:
    """Reads a picture embedded in the file, checked like an upload."""

    def read(raw: dict, where: str) -> ChatImage:
        try:
            data = base64.b64decode(raw["data"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise ImageError(f"{where}: the embedded image data is not valid base64") from None
        return decoded_image(data, raw, where, max_bytes)

    return read


def decoded_image(data: bytes, raw: dict, where: str, max_bytes: int | None) -> ChatImage:
    """A picture from its file bytes and its JSON object (name, notes)."""
    try:
        image = load_media(data, max_bytes=max_bytes, max_pages=1)[0]
    except ImageError as exc:
        raise ImageError(f"{where}: {exc}") from None
    notes = tuple(str(n) for n in raw.get("notes") or ())
    name = safe_name(str(raw.get("name") or "image.png"))
    return ChatImage(replace(image, notes=notes), name, data)


def from_document(body, read_image: ImageReader, *, max_images_per_message: int = 64) -> tuple[Transcript, dict]:
    """A transcript and its settings from the JSON object (any version this code wrote)."""
    if not isinstance(body, dict) or body.get("format") != FORMAT or not isinstance(body.get("messages"), list):
        raise ImageError('the file is not a glm-vision chat export (expected "format": "glm-vision-chat")')
    version = body.get("version", 1)
    if version not in (1, VERSION):
        raise ImageError(f"the file is version {version} of the chat format; this glm-vision reads 1 to {VERSION}")
    limit = max_images_per_message
    turns = _turns(body["messages"], read_image, limit)
    forks = _read_forks(body.get("forks") or [], len(turns), read_image, limit) if version >= 2 else {}
    created = body.get("created")
    transcript = Transcript(turns, float(created) if isinstance(created, (int, float)) else time.time(), forks)
    settings = body.get("settings") if isinstance(body.get("settings"), dict) else {}
    return transcript, settings


def _turns(items, read_image: ImageReader, limit: int) -> list[Turn]:
    if not isinstance(items, list):
        raise ImageError("messages must be a list")
    return [_turn(index, item, read_image, limit) for index, item in enumerate(items)]


def _turn(index: int, item, read_image: ImageReader, limit: int) -> Turn:
    if not isinstance(item, dict) or item.get("role") not in {"user", "assistant"}:
        raise ImageError(f"message {index + 1} has no valid role (user or assistant)")
    text = item.get("text", "")
    if not isinstance(text, str):
        raise ImageError(f"message {index + 1}: text must be a string")
    if item["role"] == "assistant":
        usage = item.get("usage") if isinstance(item.get("usage"), dict) else {}
        reasoning, finish = str(item.get("reasoning") or ""), str(item.get("finish_reason") or "")
        return Turn("assistant", text, reasoning=reasoning, finish_reason=finish, usage=usage)
    raw_images = item.get("images") or []
    if len(raw_images) > limit:
        raise ImageError(f"message {index + 1} has {len(raw_images)} images; at most {limit} are accepted")
    images = [read_image(raw, f"message {index + 1}, image {n}") for n, raw in enumerate(raw_images, 1)]
    return Turn("user", text, images, error=str(item.get("error") or ""))


def _read_forks(items, length: int, read_image: ImageReader, limit: int) -> dict[int, Fork]:
    """The other versions; each fork's position must lie on the branch it belongs to."""
    forks = {}
    for item in items if isinstance(items, list) else []:
        at, current = item.get("at") if isinstance(item, dict) else None, item.get("current")
        versions = item.get("versions") if isinstance(item, dict) else None
        if not (isinstance(at, int) and 0 <= at < length and isinstance(versions, list) and len(versions) > 1):
            raise ImageError("a saved version of the chat does not fit it (forks)")
        if not (isinstance(current, int) and 0 <= current < len(versions) and versions[current] is None):
            raise ImageError("a saved version of the chat does not fit it (current)")
        forks[at] = Fork([_read_version(v, at, read_image, limit) for v in versions], current)
    return forks


def _read_version(item, at: int, read_image: ImageReader, limit: int) -> Version | None:
    if item is None:
        return None
    if not isinstance(item, dict):
        raise ImageError("a saved version of the chat is not an object")
    turns = _turns(item.get("messages"), read_image, limit)
    if not turns:
        raise ImageError("a saved version of the chat is empty")
    return Version(turns, _read_forks(item.get("forks") or [], at + len(turns), read_image, limit))
