"""One browser tab's chat: its transcript, its settings, its running answer and the handlers of its
events (send, retry, edit, undo, stop, new chat, import, restore, save, the tab's close); how an
answer is asked for and streamed is `answering.py`.

Each handler returns (or, while an answer streams, yields) a dict of component updates keyed by the
`Widgets`. Stop cancels the backend request (the local engine stops within one decode step) and the
partial answer is kept. Any failure puts the conversation back as it was, with the message in the
error line, and a failed message's text and files back in the input box.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import gradio as gr

from ..backend import RequestHandle
from ..images import ImageError
from .answering import Answering
from .budget import ImageBudget
from .chat_json import from_json
from .controls import Controls, checked, default_controls
from .cost import cost_line
from .examples import gallery_items
from .page_js import keys_help
from .prefs import saved_controls
from .render import chat_messages, image_file, status_markdown, typed_text, version_forks
from .saving import SavedCopies
from .tempfiles import SessionFiles
from .text import say
from .transcript import ChatImage, Transcript, Turn
from .uploads import file_key, load_uploads, message_paths
from .widgets import Widgets

PHONE_WIDTH = 640  # px: a page this narrow starts with the settings closed


class ChatSession(ImageBudget, Answering):
    def __init__(
        self,
        state,
        widgets: Widgets,
        files: SessionFiles,
        tab: str,
        lang: str = "en",
        *,
        examples: list[dict] | None = None,
    ) -> None:
        self.state = state  # the server's AppState: the backend (None while it loads) and the settings
        self.w = widgets
        self.files = files  # the files each tab holds, removed when the last tab holding one closes
        self.tab = tab  # Gradio's session hash of the tab
        self.lang = lang
        self.examples = examples or []
        self.defaults = default_controls(state.settings)
        self.controls = self.defaults  # the chat's settings: saved with it, restored from an import
        self.transcript = Transcript()
        self.usage: dict = {}
        self.run: RequestHandle | None = None
        self.epoch = 0  # counts the chats New chat and Import started; an answer for an older one is dropped
        self.ended = False  # the tab closed (`leave`)
        self.given_back: dict[tuple, ChatImage] = {}  # pictures put back into the input box, by file_key
        self.saved = SavedCopies(state, widgets, files, tab)  # the history, the browser's copy, the exports
        self._lock = threading.Lock()

    @property
    def engine_session(self) -> str:
        return f"ui-{self.tab}"

    # ------------------------------------------------------------------ events
    def send(self, message: dict | None, controls: Controls):
        message = message or {}
        text = (message.get("text") or "").strip()
        paths = message_paths(message)
        for path in paths:
            self.files.add(self.tab, path)  # removed with the tab (only files in our private dir)
        if self.run is not None or not (text or paths):  # Enter while an answer is written, or nothing to send
            yield self._error("err_busy" if self.run is not None else "err_empty")
            return
        try:
            images = load_uploads(paths, self.given_back, self.state.settings, self.lang)
        except ImageError as exc:
            yield self._back(self.transcript, message, error=str(exc))
            return
        work = self.transcript.copy()
        work.turns.append(Turn("user", text, images))
        yield from self._generate(work, controls, restore_input=message)

    def retry(self, controls: Controls):
        last_user = self._last_user()
        if last_user is None:
            return
        work = self.transcript.copy()
        work.branch(last_user + 1)  # the answer on screen stays as the previous version
        yield from self._generate(work, controls)

    def edit(self, index, value, controls: Controls):
        """The user changed the text of an earlier message: the chat continues from there."""
        slots = self._messages(self.transcript)[1]
        index = index if isinstance(index, int) else index[0]
        if not 0 <= index < len(slots) or slots[index].part != "text":
            yield {self.w.chatbot: self._messages(self.transcript)[0]}
            return
        turn = self.transcript.turns[slots[index].turn]
        shown = value if isinstance(value, str) else str(value.get("text", "")) if isinstance(value, dict) else ""
        work = self.transcript.copy()
        work.branch(slots[index].turn)  # the question (and what followed it) stays as the previous version
        work.turns.append(Turn("user", typed_text(shown, turn, self.lang).strip(), list(turn.images)))
        yield from self._generate(work, controls)

    def undo(self) -> dict:
        """Take back the last question (and its answer); its text and pictures go back into the input."""
        last_user = self._last_user()
        if last_user is None:
            return {}
        removed = self.transcript.turns[last_user]
        self.transcript = self.transcript.copy()
        self.transcript.take_back(last_user)
        return {
            self.w.chatbot: self._messages(self.transcript)[0],
            self.w.error: "",
            self.w.notice: "",
            self.w.textbox: self._give_back(removed),
        } | self.save()

    def stop(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def new_chat(self) -> dict:
        self._replace(Transcript())
        return self._view()

    def open_chat(self, chat_id: str) -> dict:
        """A chat from the user's list replaces this one, with its settings (an answer being written for
        this one is stopped; it is saved as far as it got)."""
        if self.run is not None:
            return self._error("err_busy")
        transcript, settings, error = self.saved.open(chat_id, self.lang)
        if error:
            return {self.w.error: error} | self.saved.listing(self.lang)
        self.controls = checked(settings or {}, self.defaults, self.state.settings)
        self._replace(transcript, chat_id)
        return self._view() | self._panel()

    def switch_version(self, ordinal: int, step: int) -> dict:
        """`< >` on the `ordinal`-th version control of the chat: show the previous or next version."""
        forks = version_forks(self.transcript)
        if self.run is not None or not 0 <= ordinal < len(forks):
            return {}
        work = self.transcript.copy()
        if not work.switch(forks[ordinal], step):
            return {}
        self._show(work)
        return self._view()

    def import_chat(self, file) -> dict:
        """A chat from an exported JSON file replaces this one, with the settings saved in it (every
        image is checked like an upload)."""
        settings = self.state.settings
        path = file if isinstance(file, str) else getattr(file, "name", None)
        try:
            transcript, saved = from_json(
                Path(path).read_bytes(),
                max_bytes=settings.max_upload_bytes,
                max_images_per_message=settings.max_images_per_message,
            )
        except (ImageError, OSError) as exc:
            return {self.w.error: say(self.lang, "error_prefix") + say(self.lang, "err_import", error=exc)}
        self.controls = checked(saved, self.controls, settings)  # what the file does not say stays as it is
        self._replace(transcript)  # with the history on, a new chat in the list
        notice = say(self.lang, "imported", count=len(transcript.turns))
        return self._view() | self._panel() | {self.w.notice: notice}

    def restore(self, saved_chat: str, saved_prefs: str, width: str = "") -> dict:
        """The page (re)loaded: the chat and the settings the browser kept, the examples in the page's
        language, the settings closed on a phone. A question that had no answer yet (the page went away
        while it was queued or written) goes back into the input box."""
        self.controls = saved_controls(saved_prefs, self.defaults, self.state.settings)
        transcript, settings, error = self.saved.restore(saved_chat, self.lang)
        if settings is not None:  # a stored chat: its own settings
            self.controls = checked(settings, self.controls, self.state.settings)
        unanswered = transcript.turns[-1] if transcript.turns and transcript.turns[-1].role == "user" else None
        if unanswered is not None:
            transcript.take_back(len(transcript.turns) - 1)
        self._show(transcript)
        out = (
            self._view()
            | self._panel()
            | {
                self.w.error: error,
                self.w.timer: gr.Timer(active=self.state.backend is None),
                self.w.cost: cost_line(self.lang, self.controls.image_tokens, [], self.model_cap),
                self.w.settings: gr.Accordion(open=not width.isdigit() or int(width) > PHONE_WIDTH),
                self.w.gallery: gr.Gallery(gallery_items(self.examples, self.lang)),
                self.w.keys: keys_help(self.lang),
            }
        )
        if unanswered is not None:
            out |= {self.w.textbox: self._give_back(unanswered), self.w.notice: say(self.lang, "question_back")}
        return out

    def save(self) -> dict:
        """The chat into the history, the browser's copy and the two export files."""
        return self.saved.save(self.transcript, self.controls, self.lang)

    def export_clicked(self) -> str:
        """An export button was pressed: say so when there is nothing to export yet."""
        return "" if self.transcript.turns else say(self.lang, "nothing_to_export")

    def leave(self) -> None:
        """The tab closed: stop its answer, and once that has ended free the engine caches again (a request
        the engine admitted after the tab's `close` would keep them until the idle sweep)."""
        self.ended = True
        if self.run is not None:
            self.run.cancel()
            self.run.on_done(self.close)

    def close(self) -> None:
        """Stop the tab's answer and free its engine caches (New chat, Import, the tab closing)."""
        self.stop()
        if self.state.backend is not None:
            self.state.backend.close_session(self.engine_session)

    # ------------------------------------------------------------------ helpers
    def show_boxes(self, shown: bool) -> list:
        """The "Show boxes on images" setting changed: the chat again, with or without the drawn pictures."""
        self.controls = replace(self.controls, show_boxes=bool(shown))
        return self._messages(self.transcript)[0]

    def _messages(self, transcript: Transcript, *args, **kwargs):
        return chat_messages(transcript, self.lang, *args, boxes=self.controls.show_boxes, **kwargs)

    def _error(self, key: str) -> dict:
        return {self.w.error: say(self.lang, "error_prefix") + say(self.lang, key)}

    def _view(self) -> dict:
        """Every chat output as the chat is now, with no answer being written."""
        return {
            self.w.chatbot: self._messages(self.transcript)[0],
            self.w.error: "",
            self.w.notice: "",
            self.w.status: status_markdown(self.state, self.lang, self.usage),
            self.w.textbox: gr.MultimodalTextbox(submit_btn=True, stop_btn=False),
        } | self.save()

    def _panel(self) -> dict:
        """The settings panel showing the chat's settings."""
        return {
            component: self.budget_slider(self.controls.image_tokens)
            if name == "image_tokens"
            else getattr(self.controls, name)
            for name, component in self.w.panel.items()
        }

    def _give_back(self, turn: Turn) -> dict:
        """A question's text and pictures as the input box's value; sent again, the pictures keep their
        names and notes (a PDF page stays "page 1 of 2")."""
        files = [image_file(image) for image in turn.images]
        self.given_back.update(zip(map(file_key, files), turn.images, strict=True))
        return {"text": turn.text, "files": files}

    def _replace(self, transcript: Transcript, chat_id: str | None = None) -> None:
        """New chat or Import: the answer being written for the old chat is stopped and dropped (its
        updates are never shown) and the engine's cached prefix of the old chat is freed."""
        self.close()
        with self._lock:
            self.epoch += 1
            self.run = None
            self.saved.chat_id = chat_id  # None: a new chat, in the list from its first save
            self._show(transcript)

    def _commit(self, transcript: Transcript, epoch: int, usage: dict | None = None) -> bool:
        """The chat after an answer (or a failure), unless New chat or Import replaced it meanwhile."""
        with self._lock:
            if self.epoch != epoch:
                return False
            self.transcript = transcript
            if usage is not None:
                self.usage = usage
            return True

    def _show(self, transcript: Transcript) -> None:
        self.transcript = transcript
        self.usage = next((turn.usage for turn in reversed(transcript.turns) if turn.usage), {})

    def _last_user(self) -> int | None:
        return max((i for i, t in enumerate(self.transcript.turns) if t.role == "user"), default=None)
