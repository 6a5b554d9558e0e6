"""The UI's side of the chat history: a tab's chat as the document `ChatStore` keeps (the chat's JSON
with each picture referenced by the sha256 of its PNG bytes, stored once beside the database), and back;
one file holding every chat of a user (export all / import all).

Only this module and `sidebar.py` talk to the store; the store never interprets a document.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

from ..history import ChatStore, HistoryError, NewChat, StoredChat
from ..images import ImageError
from .chat_json import FORMAT, decoded_image, embedded_reader, from_document, to_document
from .transcript import ChatImage, Transcript

ALL_FORMAT = "glm-vision-chats"  # the export-all file: {"format", "version", "exported", "chats": [...]}
ALL_VERSION = 1


def referenced(image: ChatImage) -> dict:
    """A picture as the stored document names it: by the hash of its PNG bytes."""
    return {"name": image.name, "digest": image.digest, "notes": list(image.notes), "sha256": image.png_sha256()}


@dataclass
class ChatParts:
    """What `ChatStore.save` and `import_all` take for one chat."""

    document: dict
    settings: dict
    texts: list[str]
    images: dict[str, bytes]


def chat_parts(transcript: Transcript, settings: dict) -> ChatParts:
    """The chat as the store keeps it: every branch's texts (search) and every picture (first: the
    thumbnail)."""
    turns = list(transcript.every_turn())
    images = {img.png_sha256(): img.png() for turn in turns for img in turn.images}
    texts = [turn.text for turn in turns if turn.text]
    return ChatParts(to_document(transcript, referenced), settings, texts, images)


class History:
    """One user's chats in the store (`owner` as `history.owner_of` names it)."""

    def __init__(self, store: ChatStore, owner: str, max_bytes: int | None) -> None:
        self.store, self.owner, self.max_bytes = store, owner, max_bytes

    def save(self, chat_id: str | None, transcript: Transcript, settings: dict) -> str:
        """Save the chat in one call (a new one when `chat_id` is None or no longer there); returns its id.
        QuotaError/HistoryError: nothing written."""
        parts = chat_parts(transcript, settings)
        if chat_id is not None:
            try:
                self.store.save(self.owner, chat_id, **vars(parts))
                return chat_id
            except KeyError:  # deleted meanwhile (another tab): kept as a new chat
                pass
        new = NewChat(**vars(parts), created=transcript.created)
        return self.store.import_all(self.owner, [new])[0]

    def open(self, chat_id: str) -> tuple[Transcript, dict, str]:
        """The chat, its settings and its title (KeyError when this user has no such chat)."""
        stored = self.store.load(self.owner, chat_id)
        transcript, _ = from_document(stored.document, self._read_image)
        return transcript, stored.settings, stored.title

    def _read_image(self, raw: dict, where: str) -> ChatImage:
        try:
            data = self.store.image_bytes(str(raw.get("sha256")))
        except (KeyError, ValueError, OSError):
            raise ImageError(f"{where}: the picture is missing from the history") from None
        return decoded_image(data, raw, where, None)

    # ------------------------------------------------------------------ export all / import all
    def export_all(self) -> str:
        """Every chat of the user as one JSON file, pictures embedded."""
        chats = [self._embedded(chat) for chat in self.store.export_all(self.owner)]
        body = {"format": ALL_FORMAT, "version": ALL_VERSION, "exported": time.time(), "chats": chats}
        return json.dumps(body, ensure_ascii=False)

    def _embedded(self, chat: StoredChat) -> dict:
        document = json.loads(json.dumps(chat.document))  # a copy whose pictures get their bytes
        for image in _image_entries(document):
            image["data"] = base64.b64encode(self.store.image_bytes(image.pop("sha256"))).decode("ascii")
            image["mime"] = "image/png"
        return document | {"title": chat.title, "updated": chat.updated, "settings": chat.settings}

    def import_all(self, text: str | bytes) -> int:
        """The chats of an export-all file (or of one chat's export) added to the user's list, all or
        none; every picture is checked like an upload. Returns how many."""
        try:
            body = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImageError(f"the file is not valid JSON ({exc})") from None
        items = [body] if isinstance(body, dict) and body.get("format") == FORMAT else _chats_of(body)
        new = []
        for number, item in enumerate(items, 1):
            try:
                transcript, settings = from_document(item, embedded_reader(self.max_bytes))
            except ImageError as exc:
                raise ImageError(f"chat {number}: {exc}") from None
            parts = chat_parts(transcript, settings)
            updated = item.get("updated") if isinstance(item.get("updated"), (int, float)) else None
            title = str(item.get("title") or "")
            new.append(NewChat(**vars(parts), title=title, created=transcript.created, updated=updated))
        self.store.import_all(self.owner, new)
        return len(new)


def _chats_of(body) -> list:
    if not isinstance(body, dict) or body.get("format") != ALL_FORMAT or not isinstance(body.get("chats"), list):
        raise ImageError(f'the file is not a glm-vision export (expected "format": "{ALL_FORMAT}" or "{FORMAT}")')
    return body["chats"]


def _image_entries(document: dict):
    """Every picture object of a document, on every branch."""
    for message in document.get("messages") or []:
        yield from message.get("images") or []
    for fork in document.get("forks") or []:
        for version in fork.get("versions") or []:
            if version is not None:
                yield from _image_entries(version)


__all__ = ["History", "HistoryError", "chat_parts"]
