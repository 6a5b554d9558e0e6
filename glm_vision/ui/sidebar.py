"""The sidebar's handlers: open a chat of the list, search, rename, delete (with Undo for the store's
undo window), export every chat as one file and import it back; and the page script's actions
("open:<id>", "delete:<id>", "version:<n>:<step>", see `page_js.py`).

Each takes the tab's `ChatSession` and returns component updates keyed by its `Widgets`, as the
session's own handlers do.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import gradio as gr

from ..history import HistoryError
from ..images import ImageError
from .exports import tab_folder
from .text import say


def action(session, value: str) -> dict:
    """What the page's script asked for."""
    kind, _, rest = str(value or "").partition(":")
    if kind == "open" and rest:
        return session.open_chat(rest) | _undo_hidden(session)
    if kind == "delete" and rest:
        return delete(session, rest)
    if kind == "version":
        ordinal, _, step = rest.partition(":")
        if ordinal.lstrip("-").isdigit() and step in ("-1", "1"):
            return session.switch_version(int(ordinal), int(step))
    return {}


def delete(session, chat_id: str) -> dict:
    """The chat leaves the list at once; Undo brings it back until the store purges it."""
    history, w = session.saved.history, session.w
    if history is None:
        return {}
    title = next((c.title for c in history.store.list(history.owner) if c.id == chat_id), "")
    try:
        history.store.delete(history.owner, chat_id)
    except KeyError:
        return session.saved.listing(session.lang)
    was_open = session.saved.chat_id == chat_id
    session.saved.deleted = (chat_id, was_open)
    out = session.new_chat() if was_open else session.saved.listing(session.lang)
    return out | {
        w.notice: say(session.lang, "deleted", title=title),
        w.undo: gr.Button(visible=True),
        w.undo_timer: gr.Timer(value=history.store.undo_seconds, active=True),
    }


def undo_delete(session) -> dict:
    history = session.saved.history
    chat_id, was_open = session.saved.deleted or (None, False)
    session.saved.deleted = None
    if history is None or chat_id is None:
        return _undo_hidden(session)
    try:
        history.store.undelete(history.owner, chat_id)
    except KeyError:  # purged meanwhile
        return _undo_hidden(session) | {session.w.error: say(session.lang, "err_chat_gone")}
    out = session.open_chat(chat_id) if was_open else session.saved.listing(session.lang)
    return out | {session.w.notice: ""} | _undo_hidden(session)


def undo_expired(session) -> dict:
    """The undo window is over: the chat is purged (rows and pictures only it used)."""
    session.saved.deleted = None
    if session.saved.history is not None:
        session.saved.history.store.purge_expired()
    return _undo_hidden(session) | {session.w.notice: ""}


def _undo_hidden(session) -> dict:
    return {session.w.undo: gr.Button(visible=False), session.w.undo_timer: gr.Timer(active=False)}


def search(session, query: str) -> dict:
    session.saved.query = str(query or "").strip()
    return session.saved.listing(session.lang)


def rename(session, title: str) -> dict:
    saved = session.saved
    if saved.history is None or saved.chat_id is None:
        return {}
    try:
        saved.history.store.rename(saved.history.owner, saved.chat_id, str(title or ""))
    except KeyError:
        return {}
    return saved.listing(session.lang)


def export_all(session) -> dict:
    """Every chat of the user as one JSON file (pictures embedded), ready to download."""
    history = session.saved.history
    if history is None:
        return {}
    folder = tab_folder(session.tab) / uuid.uuid4().hex[:16]
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    session.files.add(session.tab, tab_folder(session.tab))
    path = folder / "glm-vision-all-chats.json"
    path.write_text(history.export_all(), encoding="utf-8")
    return {session.w.export_all_file: gr.DownloadButton(value=str(path), visible=True)}


def import_all(session, file) -> dict:
    """The chats of an export-all file (or one chat's JSON export) added to the list."""
    history, lang = session.saved.history, session.lang
    if history is None:
        return {}
    path = file if isinstance(file, str) else getattr(file, "name", None)
    try:
        count = history.import_all(Path(path).read_bytes())
    except (ImageError, HistoryError, OSError) as exc:
        return {session.w.error: say(lang, "error_prefix") + say(lang, "err_import", error=exc)}
    return session.saved.listing(lang) | {session.w.notice: say(lang, "imported_all", count=count)}
