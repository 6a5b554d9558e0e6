"""The open browser tabs: each Gradio event goes to its tab's `ChatSession` (made at the tab's first
event), and a tab's close stops its answer, frees its engine caches and deletes its files.

The methods below are the handlers `layout` wires; each only unpacks Gradio's calling convention (a
dict of input values, the request, the event's data) and hands over to the session.
"""

from __future__ import annotations

import threading

import gradio as gr

from ..history import owner_of
from . import sidebar
from .controls import NAMES, default_controls, read
from .examples import as_message
from .history import History
from .session import ChatSession
from .tempfiles import SessionFiles
from .text import lang_of
from .widgets import Widgets


class Tabs:
    def __init__(self, state, widgets: Widgets, examples: list[dict] | None = None, keep: list[str] = ()) -> None:
        self.state = state
        self.w = widgets
        self.examples = examples or []
        self.files = SessionFiles(keep)  # `keep`: the app's own files (the examples), never a tab's to delete
        self._sessions: dict[str, ChatSession] = {}
        self._lock = threading.Lock()

    def of(self, request: gr.Request) -> ChatSession:
        """The tab's session (made on its first event), speaking the language the browser asks for."""
        with self._lock:
            session = self._sessions.get(request.session_hash)
            if session is None:
                session = ChatSession(self.state, self.w, self.files, request.session_hash, examples=self.examples)
                if self.state.history is not None:  # the chats of this browser (or login)
                    limit = self.state.settings.max_upload_bytes
                    session.saved.history = History(self.state.history, owner_of(request), limit)
                self._sessions[request.session_hash] = session
        session.lang = lang_of(request)
        return session

    def running(self) -> int:
        """How many tabs have an answer queued or being written."""
        with self._lock:
            return sum(1 for session in self._sessions.values() if session.run is not None)

    def unload(self, request: gr.Request) -> None:
        """The tab closed: stop its answer, free its engine caches and delete its uploads and exports."""
        with self._lock:
            session = self._sessions.pop(request.session_hash, None)
        if session is not None:
            session.leave()
        self.files.purge(request.session_hash)
        if session is not None:
            session.close()  # last: a freed engine session tells that the tab is cleaned up (tests wait on it)

    # ------------------------------------------------------------------ the wired handlers
    def send(self, values: dict, request: gr.Request):
        yield from self.of(request).send(values[self.w.textbox], read(values, self.w.panel))

    def retry(self, values: dict, request: gr.Request):
        yield from self.of(request).retry(read(values, self.w.panel))

    def edit(self, values: dict, data: gr.EditData, request: gr.Request):
        yield from self.of(request).edit(data.index, data.value, read(values, self.w.panel))

    def undo(self, request: gr.Request) -> dict:
        return self.of(request).undo()

    def stop(self, request: gr.Request) -> None:
        self.of(request).stop()

    def new_chat(self, request: gr.Request) -> dict:
        return self.of(request).new_chat()

    def import_chat(self, file, request: gr.Request) -> dict:
        return self.of(request).import_chat(file)

    def export_clicked(self, request: gr.Request) -> str:
        return self.of(request).export_clicked()

    def restore(self, saved_chat: str, saved_prefs: str, width: str, request: gr.Request) -> dict:
        return self.of(request).restore(saved_chat, saved_prefs, width)

    def input_changed(self, message, image_tokens, request: gr.Request) -> str:
        return self.of(request).input_changed(message, image_tokens)

    def tick(self, message, image_tokens, request: gr.Request) -> tuple:
        return self.of(request).tick(message, image_tokens)

    def show_boxes(self, shown: bool, request: gr.Request) -> list:
        return self.of(request).show_boxes(shown)

    def pick_example(self, event: gr.SelectData, request: gr.Request) -> dict:
        return as_message(self.examples[event.index], lang_of(request))

    def reset_controls(self) -> dict:
        defaults = default_controls(self.state.settings)
        return {self.w.panel[name]: getattr(defaults, name) for name in NAMES}

    # ------------------------------------------------------------------ the sidebar (chat history)
    def chat_action(self, value: str, request: gr.Request) -> dict:
        return sidebar.action(self.of(request), value)

    def search(self, query: str, request: gr.Request) -> dict:
        return sidebar.search(self.of(request), query)

    def rename(self, title: str, request: gr.Request) -> dict:
        return sidebar.rename(self.of(request), title)

    def undo_delete(self, request: gr.Request) -> dict:
        return sidebar.undo_delete(self.of(request))

    def undo_expired(self, request: gr.Request) -> dict:
        return sidebar.undo_expired(self.of(request))

    def export_all(self, request: gr.Request) -> dict:
        return sidebar.export_all(self.of(request))

    def import_all(self, file, request: gr.Request) -> dict:
        return sidebar.import_all(self.of(request), file)
