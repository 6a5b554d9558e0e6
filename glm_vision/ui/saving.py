"""Where a tab's chat is kept: the user's chat list in the history (when it is on), the browser's copy
in sessionStorage (the whole chat without the history; with it, just which stored chat the tab shows)
and the two export files.

Each save writes the whole chat to the history in one call, so a kill loses at most the answer being
written. When the history cannot take it (a quota, a full disk), the error line says so and the
browser keeps the whole chat as it does without the history.
"""

from __future__ import annotations

import json

import gradio as gr

from ..history import HistoryError
from ..images import ImageError
from .chat_json import from_json, to_json
from .chat_list import chat_list_html
from .exports import tab_folder, write_exports
from .history import History
from .text import say
from .transcript import Transcript

REF_FORMAT = "glm-vision-chat-ref"  # the browser's copy with the history on: {"format", "chat": id}


class SavedCopies:
    def __init__(self, state, widgets, files, tab: str) -> None:
        self.state, self.w, self.files, self.tab = state, widgets, files, tab
        self.history: History | None = None  # set once the tab's owner is known (Tabs.of)
        self.chat_id: str | None = None  # the stored chat the tab shows
        self.query = ""  # the sidebar's search
        self.failed = ""  # why the last save into the history failed ("" when it worked)
        self.deleted: tuple[str, bool] | None = None  # the chat Undo would bring back, and whether it was open

    def save(self, transcript: Transcript, controls, lang: str) -> dict:
        """The chat into the history, the browser's copy and the two export files (an empty chat keeps
        nothing; it is not in the list until its first question)."""
        w = self.w
        if not transcript.turns:
            return {
                w.store: "",
                w.export_md: gr.DownloadButton(value=None),
                w.export_json: gr.DownloadButton(value=None),
            } | self.listing(lang)
        self.files.add(self.tab, tab_folder(self.tab))
        model = self.state.backend.info.model if self.state.backend is not None else ""
        md_path, json_path = write_exports(self.tab, transcript, model=model, settings=controls.as_dict())
        return self.sent(transcript, controls, lang) | {
            w.export_md: gr.DownloadButton(value=str(md_path)),
            w.export_json: gr.DownloadButton(value=str(json_path)),
        }

    def sent(self, transcript: Transcript, controls, lang: str) -> dict:
        """A question was sent (or an answer finished): the chat into the history and the browser's copy."""
        self.keep(transcript, controls, lang)
        out = {self.w.store: self.browser_copy(transcript, controls)} | self.listing(lang)
        if self.failed:
            out[self.w.error] = say(lang, "error_prefix") + self.failed
        return out

    def keep(self, transcript: Transcript, controls, lang: str) -> None:
        self.failed = ""
        if self.history is None or not transcript.turns:
            return
        try:
            self.chat_id = self.history.save(self.chat_id, transcript, controls.as_dict())
        except HistoryError as exc:  # a quota reached, the disk full: the tab still has the chat
            self.failed = say(lang, "err_history", error=exc)

    def browser_copy(self, transcript: Transcript, controls) -> str:
        """What the tab's sessionStorage keeps of the chat ("" for an empty chat)."""
        if not transcript.turns:
            return ""
        if self.history is not None and self.chat_id is not None and not self.failed:
            return json.dumps({"format": REF_FORMAT, "chat": self.chat_id})
        return to_json(transcript, settings=controls.as_dict(), drawn=False)

    def restore(self, saved: str, lang: str) -> tuple[Transcript, dict | None, str]:
        """The chat the tab showed before the reload: (chat, its settings or None, an error to show)."""
        self.chat_id = None
        if not saved:
            return Transcript(), None, ""
        try:
            body = json.loads(saved)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("format") == REF_FORMAT:
            return self.open(str(body.get("chat")), lang)
        try:
            transcript, _ = from_json(saved, max_bytes=self.state.settings.max_upload_bytes)
        except ImageError as exc:
            return Transcript(), None, say(lang, "error_prefix") + say(lang, "err_import", error=exc)
        return transcript, None, ""

    def open(self, chat_id: str, lang: str) -> tuple[Transcript, dict | None, str]:
        """A stored chat of this user: (chat, its settings, an error to show)."""
        if self.history is None:
            return Transcript(), None, ""
        try:
            transcript, settings, _ = self.history.open(chat_id)
        except KeyError:
            return Transcript(), None, say(lang, "error_prefix") + say(lang, "err_chat_gone")
        except ImageError as exc:
            return Transcript(), None, say(lang, "error_prefix") + say(lang, "err_import", error=exc)
        self.chat_id = chat_id
        return transcript, settings, ""

    def listing(self, lang: str) -> dict:
        """The sidebar's list of the user's chats (matching the search), the open one marked."""
        if self.history is None:
            return {}
        store, owner = self.history.store, self.history.owner
        everything = store.list(owner)
        shown = store.list(owner, self.query) if self.query else everything
        title = next((c.title for c in everything if c.id == self.chat_id), "")
        return {
            self.w.chats: chat_list_html(shown, self.chat_id, store, lang, searched=bool(self.query)),
            self.w.title: title,
        }
