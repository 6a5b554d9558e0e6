"""One browser tab's chat: its transcript, its running answer and the handlers of its events (send,
retry, edit, undo, stop, new chat, import, restore, save, close).

Each handler returns (or, while an answer streams, yields) a dict of component updates keyed by the
`Widgets`. Stop cancels the backend request (the local engine stops within one decode step) and the
partial answer is kept. Any failure puts the conversation back as it was, with the message in the
error line, and a failed message's text and files back in the input box.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import gradio as gr

from ..backend import EngineError, GenerationRequest, GenerationResult, RequestHandle, answer_deltas
from ..conversation import split_output
from ..images import ImageError, load_media
from .controls import Controls, default_controls
from .cost import cost_line, image_sizes
from .prefs import saved_controls
from .render import chat_messages, image_file, status_markdown, usage_dict
from .tempfiles import SessionFiles, keyed_name, private_dir
from .text import say
from .transcript import ChatImage, Transcript, Turn, export_name, from_json, safe_name, to_json, to_markdown
from .widgets import Widgets

STREAM_INTERVAL_S = 0.05  # at most ~20 display updates a second
QUEUE_POLL_S = 0.25
EXPORT_DIR = private_dir("exports")  # per tab: EXPORT_DIR/<keyed tab>/<random>/


class ChatSession:
    def __init__(self, state, widgets: Widgets, files: SessionFiles, tab: str, lang: str = "en") -> None:
        self.state = state  # the server's AppState: the backend (None while it loads) and the settings
        self.w = widgets
        self.files = files  # the files each tab brought in, removed when it closes
        self.tab = tab  # Gradio's session hash of the tab
        self.lang = lang
        self.defaults = default_controls(state.settings)
        self.transcript = Transcript()
        self.usage: dict = {}
        self.run: RequestHandle | None = None
        self.epoch = 0  # counts the chats New chat and Import started; an answer for an older one is dropped
        self._lock = threading.Lock()

    @property
    def engine_session(self) -> str:
        return f"ui-{self.tab}"

    @property
    def model_cap(self) -> int | None:
        """The backend's most tokens per image, None while loading or when it does not say."""
        return self.state.backend.info.max_image_tokens if self.state.backend is not None else None

    # ------------------------------------------------------------------ events
    def send(self, message: dict | None, controls: Controls):
        message = message or {}
        text = (message.get("text") or "").strip()
        paths = _paths(message)
        for path in paths:
            self.files.add(self.tab, path)  # removed with the tab (only files in our private dir)
        if self.run is not None or not (text or paths):  # Enter while an answer is written, or nothing to send
            yield self._error("err_busy" if self.run is not None else "err_empty")
            return
        try:
            images = self._load_files(paths)
        except ImageError as exc:
            yield self._fail(self.transcript, str(exc), message)
            return
        work = self.transcript.copy()
        work.turns.append(Turn("user", text, images))
        yield from self._generate(work, controls, restore_input=message)

    def retry(self, controls: Controls):
        last_user = self._last_user()
        if last_user is None:
            return
        work = self.transcript.copy()
        work.turns = work.turns[: last_user + 1]
        yield from self._generate(work, controls)

    def edit(self, index, value, controls: Controls):
        """The user changed the text of an earlier message: the chat continues from there."""
        slots = chat_messages(self.transcript, self.lang)[1]
        index = index if isinstance(index, int) else index[0]
        if not 0 <= index < len(slots) or slots[index].part != "text":
            yield {self.w.chatbot: chat_messages(self.transcript, self.lang)[0]}
            return
        turn = self.transcript.turns[slots[index].turn]
        new_text = value if isinstance(value, str) else str(value.get("text", "")) if isinstance(value, dict) else ""
        work = self.transcript.copy()
        work.turns = work.turns[: slots[index].turn] + [Turn("user", new_text.strip(), list(turn.images))]
        yield from self._generate(work, controls)

    def undo(self) -> dict:
        """Take back the last question (and its answer); its text and pictures go back into the input."""
        last_user = self._last_user()
        if last_user is None:
            return {}
        removed = self.transcript.turns[last_user]
        self.transcript = self.transcript.copy()
        self.transcript.turns = self.transcript.turns[:last_user]
        restored = {"text": removed.text, "files": [image_file(img) for img in removed.images]}
        return {self.w.chatbot: chat_messages(self.transcript, self.lang)[0], self.w.error: "",
                self.w.textbox: restored} | self.save()

    def stop(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def new_chat(self) -> dict:
        self._replace(Transcript())
        return self._view()

    def import_chat(self, file) -> dict:
        """A chat from an exported JSON file replaces this one (every image checked like an upload)."""
        settings = self.state.settings
        path = file if isinstance(file, str) else getattr(file, "name", None)
        try:
            transcript, _ = from_json(Path(path).read_bytes(), max_bytes=settings.max_upload_bytes,
                                      max_images_per_message=settings.max_images_per_message)
        except (ImageError, OSError) as exc:
            return {self.w.error: say(self.lang, "error_prefix") + say(self.lang, "err_import", error=exc)}
        self._replace(transcript)
        return self._view() | {self.w.error: say(self.lang, "imported", count=len(transcript.turns))}

    def restore(self, saved_chat: str, saved_prefs: str) -> dict:
        """The page (re)loaded: the chat and the settings the browser kept."""
        prefs = saved_controls(saved_prefs, self.defaults, self.state.settings)
        transcript, error = Transcript(), ""
        if saved_chat:
            try:
                transcript, _ = from_json(saved_chat, max_bytes=self.state.settings.max_upload_bytes)
            except ImageError as exc:
                error = say(self.lang, "error_prefix") + say(self.lang, "err_import", error=exc)
        self._show(transcript)
        out = {self.w.chatbot: chat_messages(transcript, self.lang)[0], self.w.error: error,
               self.w.status: status_markdown(self.state, self.lang, self.usage),
               self.w.cost: cost_line(self.lang, prefs.image_tokens, [], self.model_cap),
               self.w.timer: gr.Timer(active=self.state.backend is None)}
        out.update({component: getattr(prefs, name) for name, component in self.w.panel.items()})
        return out | (self.save() if transcript.turns else {})

    def input_changed(self, message, image_tokens) -> str:
        """Files in the input box are the tab's from the moment they are attached (so another tab's close
        never deletes an identical upload); the cost line follows the files and the budget."""
        for path in _paths(message):
            self.files.add(self.tab, path)
        return self.cost(message, image_tokens)

    def cost(self, message, image_tokens) -> str:
        return cost_line(self.lang, int(image_tokens), image_sizes(message, self.state.settings), self.model_cap)

    def tick(self, message, image_tokens) -> tuple:
        """While the model loads: the status, and the image cost once the model's own cap is known."""
        loading = self.state.backend is None and not self.state.load_error
        return status_markdown(self.state, self.lang, self.usage), gr.Timer(active=loading), self.cost(message, image_tokens)

    def save(self) -> dict:
        """The chat into the browser's copy and the two export files (an empty chat keeps nothing)."""
        w = self.w
        if not self.transcript.turns:
            return {w.store: "", w.export_md: gr.DownloadButton(value=None), w.export_json: gr.DownloadButton(value=None)}
        owner = EXPORT_DIR / keyed_name("session:" + self.tab, 16)
        folder = owner / uuid.uuid4().hex[:16]
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.files.add(self.tab, owner)
        body = to_json(self.transcript)
        model = self.state.backend.info.model if self.state.backend is not None else ""
        md_path, json_path = folder / export_name(self.transcript, "md"), folder / export_name(self.transcript, "json")
        md_path.write_text(to_markdown(self.transcript, model=model), encoding="utf-8")
        json_path.write_text(body, encoding="utf-8")
        return {w.store: body, w.export_md: gr.DownloadButton(value=str(md_path)),
                w.export_json: gr.DownloadButton(value=str(json_path))}

    def close(self) -> None:
        """Stop the tab's answer and free its engine caches (New chat, Import, the tab closing)."""
        self.stop()
        if self.state.backend is not None:
            self.state.backend.close_session(self.engine_session)

    # ------------------------------------------------------------------ streaming core
    def _generate(self, work: Transcript, controls: Controls, restore_input=None):
        """Stream an answer to `work` (which ends with a user turn); on failure go back to the chat as it was."""
        base, epoch = self.transcript, self.epoch
        if self.state.backend is None:
            yield self._fail(base, say(self.lang, "err_not_ready"), restore_input)
            return
        if self.run is not None:
            yield self._error("err_busy")
            return
        try:
            handle = self.state.backend.submit(self._request(work, controls))
        except EngineError as exc:
            yield self._fail(base, exc.message, restore_input)
            return
        self.run, self.transcript = handle, work
        try:
            for update in self._answer(handle, work, base, epoch, restore_input):
                if self.epoch != epoch:  # New chat or Import replaced the chat: this answer is not shown
                    yield self._view()  # (Gradio shows an event's last update again when it ends)
                    return
                yield update
        finally:
            if self.run is handle:
                self.run = None
            handle.cancel()  # harmless once finished; stops the GPU work when the tab went away mid-answer

    def _answer(self, handle: RequestHandle, work: Transcript, base: Transcript, epoch: int, restore_input):
        """The wait in the queue, the answer as it is written, then the finished chat (or, on failure, the
        chat as it was)."""
        try:
            yield from self._wait_in_queue(handle, work)
            result = yield from self._stream(handle, work)
        except EngineError as exc:
            stopped = handle.cancelled.is_set()  # stopped while still waiting in the queue
            yield self._fail(base, say(self.lang, "stopped") if stopped else exc.message, restore_input, epoch)
            return
        yield self._finish(work, result, epoch)

    def _request(self, work: Transcript, controls: Controls) -> GenerationRequest:
        return GenerationRequest(work.engine_messages(controls.system_prompt), controls.sampling(),
                                 session_id=self.engine_session, enable_thinking=bool(controls.thinking),
                                 max_image_tokens=int(controls.image_tokens))

    def _wait_in_queue(self, handle: RequestHandle, work: Transcript):
        """The input turns into a Stop button; the queue position is shown until the answer starts."""
        first = {self.w.textbox: gr.MultimodalTextbox(value=None, submit_btn=False, stop_btn=True), self.w.error: ""}
        while handle.queue_position > 0 and not handle.cancelled.is_set():
            yield first | self._pending(work, say(self.lang, "queued", position=handle.queue_position))
            first = {}
            time.sleep(QUEUE_POLL_S)
        yield first | self._pending(work, say(self.lang, "generating"))

    def _pending(self, work: Transcript, activity: str) -> dict:
        return {self.w.chatbot: chat_messages(work, self.lang, ("", ""), pending=True)[0],
                self.w.status: status_markdown(self.state, self.lang, self.usage, activity)}

    def _stream(self, handle: RequestHandle, work: Transcript):
        """Show the reasoning and the answer while they are written; returns the backend's result."""
        reasoning = answer = ""
        last = 0.0
        for item in answer_deltas(handle):
            if isinstance(item, GenerationResult):
                return item
            reasoning, answer = reasoning + item.reasoning, answer + item.answer
            if time.monotonic() - last >= STREAM_INTERVAL_S:
                last = time.monotonic()
                yield {self.w.chatbot: chat_messages(work, self.lang, (reasoning, answer), pending=True)[0]}
        raise EngineError("the answer ended without a result")

    def _finish(self, work: Transcript, result: GenerationResult, epoch: int) -> dict:
        parsed = split_output(result.text)
        usage = usage_dict(result.usage)
        work.turns.append(Turn("assistant", parsed.raw_answer, reasoning=parsed.reasoning,
                               finish_reason=result.finish_reason, usage=usage))
        if not self._commit(work, epoch, usage):
            return {}
        activity = say(self.lang, "stopped") if result.finish_reason == "cancelled" else ""
        return {self.w.chatbot: chat_messages(work, self.lang)[0], self.w.error: "",
                self.w.status: status_markdown(self.state, self.lang, usage, activity),
                self.w.textbox: gr.MultimodalTextbox(submit_btn=True, stop_btn=False)} | self.save()

    def _fail(self, base: Transcript, message: str, restore_input=None, epoch: int | None = None) -> dict:
        if not self._commit(base, self.epoch if epoch is None else epoch):
            return {}
        return {self.w.chatbot: chat_messages(base, self.lang)[0], self.w.error: say(self.lang, "error_prefix") + message,
                self.w.status: status_markdown(self.state, self.lang, self.usage),
                self.w.textbox: gr.MultimodalTextbox(value=restore_input, submit_btn=True, stop_btn=False)}

    # ------------------------------------------------------------------ helpers
    def _replace(self, transcript: Transcript) -> None:
        """New chat or Import: the answer being written for the old chat is stopped and dropped (its
        updates are never shown) and the engine's cached prefix of the old chat is freed."""
        self.close()
        with self._lock:
            self.epoch += 1
            self.run = None
            self._show(transcript)

    def _error(self, key: str) -> dict:
        return {self.w.error: say(self.lang, "error_prefix") + say(self.lang, key)}

    def _view(self) -> dict:
        """Every chat output as the chat is now, with no answer being written."""
        return {self.w.chatbot: chat_messages(self.transcript, self.lang)[0], self.w.error: "",
                self.w.status: status_markdown(self.state, self.lang, self.usage),
                self.w.textbox: gr.MultimodalTextbox(submit_btn=True, stop_btn=False)} | self.save()

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

    def _load_files(self, paths: list[str]) -> list[ChatImage]:
        settings = self.state.settings
        images: list[ChatImage] = []
        for path in paths:
            name = safe_name(Path(path).name, "image")
            try:
                pages = load_media(path, max_bytes=settings.max_upload_bytes,
                                   max_pages=settings.pdf_max_pages, pdf_dpi=settings.pdf_dpi)
            except ImageError as exc:
                raise ImageError(say(self.lang, "err_file", name=Path(path).name, error=exc)) from None
            for number, page in enumerate(pages, 1):
                page_name = f"{Path(name).stem}-page{number}.png" if len(pages) > 1 else name
                images.append(ChatImage(page, page_name))
        limit = settings.max_images_per_message
        if len(images) > limit:
            raise ImageError(say(self.lang, "err_too_many", limit=limit, count=len(images)))
        return images


def _paths(message: dict | None) -> list[str]:
    """The paths of the files in an input box's value."""
    return [f if isinstance(f, str) else f.get("path") for f in (message or {}).get("files") or []]
