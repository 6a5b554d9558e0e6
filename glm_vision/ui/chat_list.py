"""The sidebar's list of a user's chats as HTML (title, date, a thumbnail of the first picture, a
delete button), newest first. Every user-written text is escaped; a click is handled by the page's
script (`page_js.py`), which hands "open:<id>" or "delete:<id>" to the server."""

from __future__ import annotations

import base64
import html
import io
import time
from functools import lru_cache

from PIL import Image

from .text import say

THUMB_PX = 44


def chat_list_html(chats, open_id: str | None, store, lang: str, *, searched: bool = False) -> str:
    if not chats:
        return f'<p class="glmv-chat-empty">{html.escape(say(lang, "no_match" if searched else "no_chats"))}</p>'
    items = [_item(chat, chat.id == open_id, store, lang) for chat in chats]
    return '<div class="glmv-chat-list" role="list">' + "".join(items) + "</div>"


def _item(chat, is_open: bool, store, lang: str) -> str:
    chat_id = html.escape(chat.id, quote=True)
    title = html.escape(chat.title or say(lang, "untitled"))
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.updated))
    thumb = _thumbnail_url(store, chat.thumbnail) if chat.thumbnail else None
    picture = f'<img class="glmv-thumb" src="{thumb}" alt="">' if thumb else '<span class="glmv-thumb">💬</span>'
    delete = html.escape(say(lang, "delete_chat"), quote=True)
    return (
        f'<div class="glmv-chat-item{" glmv-open" if is_open else ""}" role="listitem" data-chat="{chat_id}">'
        f'{picture}<span class="glmv-chat-text"><span class="glmv-chat-title">{title}</span>'
        f'<span class="glmv-chat-date">{stamp}</span></span>'
        f'<button class="glmv-chat-delete" data-delete="{chat_id}" title="{delete}" aria-label="{delete}">✕</button>'
        "</div>"
    )


def _thumbnail_url(store, digest: str) -> str | None:
    try:
        return _thumbnail(str(store.image_path(digest)))
    except (KeyError, ValueError, OSError):
        return None


@lru_cache(maxsize=1024)
def _thumbnail(path: str) -> str:
    """A small JPEG of a stored picture as a data URL (a stored file never changes: it is named by its hash)."""
    with Image.open(path) as image:
        image.thumbnail((THUMB_PX * 2, THUMB_PX * 2))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
