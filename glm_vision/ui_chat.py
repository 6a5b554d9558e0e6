"""The web UI's chat handlers: send, retry, edit, undo, stop, new chat, tab close.

Each handler takes the tab's transcript (a gr.State) and returns dicts of component updates. A
generation streams into the Chatbot; Stop cancels the engine request (the GPU stops within one
decode step) and the partial answer is kept. Any failure puts the conversation back as it was,
with the message in the error line, and a failed message's text and files back in the input box.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from .conversation import StreamSplitter, split_output
from .backend import DEFAULT_REPETITION_PENALTY, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P
from .images import ImageError, load_media
from .tempfiles import SessionFiles
from .transcript import ChatImage, Transcript, Turn, safe_name
from .ui_render import chat_messages, image_file, status_markdown, usage_dict
from .ui_text import lang_of, say

STREAM_INTERVAL_S = 0.05  # at most ~20 display updates a second
QUEUE_POLL_S = 0.25


@dataclass
class Controls:
    system_prompt: str = ""
    thinking: bool = True
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    max_new_tokens: int = 1024
    image_tokens: int = 6144


@dataclass
class Widgets:
    """The components handlers write to (filled by ui.build_ui)."""

    textbox: object = None
    chatbot: object = None
    transcript: object = None
    usage: object = None
    status: object = None
    error: object = None
    saved: list = field(default_factory=list)  # outputs of ChatHandlers.saved_outputs (store, exports)


class ChatHandlers:
    def __init__(self, state, widgets: Widgets, save) -> None:
        self.state = state
        self.w = widgets
        self.save = save  # transcript, usage, lang -> dict of updates for the persisted outputs
        self.runs: dict[str, object] = {}  # gradio session hash -> the running RequestHandle
        self.files = SessionFiles()  # each tab's uploads and exports, removed when the tab closes

    # ------------------------------------------------------------------ helpers
    def _engine_session(self, request: gr.Request) -> str:
        return f"ui-{request.session_hash}"

    def _load_files(self, paths: list[str], lang: str):
        settings = self.state.settings
        images: list[ChatImage] = []
        for path in paths:
            name = safe_name(Path(path).name, "image")
            try:
                pages = load_media(path, max_bytes=settings.max_upload_bytes,
                                   max_pages=settings.pdf_max_pages, pdf_dpi=settings.pdf_dpi)
            except ImageError as exc:
                raise ImageError(say(lang, "err_file", name=Path(path).name, error=exc)) from None
            for number, page in enumerate(pages, 1):
                page_name = f"{Path(name).stem}-page{number}.png" if len(pages) > 1 else name
                images.append(ChatImage(page, page_name))
        limit = settings.max_images_per_message
        if len(images) > limit:
            raise ImageError(say(lang, "err_too_many", limit=limit, count=len(images)))
        return images

    def _fail(self, base: Transcript, usage: dict, lang: str, message: str, restore_input=None) -> dict:
        out = {self.w.chatbot: chat_messages(base, lang)[0], self.w.transcript: base,
               self.w.error: say(lang, "error_prefix") + message, self.w.status: status_markdown(self.state, lang, usage),
               self.w.textbox: gr.MultimodalTextbox(value=restore_input, submit_btn=True, stop_btn=False)}
        return out

    # ------------------------------------------------------------------ streaming core
    def _generate(self, base: Transcript, work: Transcript, usage: dict, controls: Controls, request: gr.Request,
                  restore_input=None):
        """Stream an answer to `work` (which ends with a user turn); on failure go back to `base`."""
        lang = lang_of(request)
        sid = request.session_hash
        backend = self.state.backend
        if backend is None:
            yield self._fail(base, usage, lang, say(lang, "err_not_ready"), restore_input)
            return
        if sid in self.runs:
            yield {self.w.error: say(lang, "error_prefix") + say(lang, "err_busy")}
            return
        from .backend import EngineError, GenerationRequest, SamplingParams, TextDelta

        try:
            sampling = SamplingParams(
                temperature=float(controls.temperature), top_p=float(controls.top_p), top_k=int(controls.top_k),
                repetition_penalty=float(controls.repetition_penalty), max_new_tokens=int(controls.max_new_tokens))
            handle = backend.submit(GenerationRequest(
                work.engine_messages(controls.system_prompt), sampling, session_id=self._engine_session(request),
                enable_thinking=bool(controls.thinking), max_image_tokens=int(controls.image_tokens)))
        except EngineError as exc:
            yield self._fail(base, usage, lang, exc.message, restore_input)
            return
        self.runs[sid] = handle
        finished = False
        try:
            running = {self.w.textbox: gr.MultimodalTextbox(value=None, submit_btn=False, stop_btn=True),
                       self.w.transcript: work, self.w.error: ""}
            while handle.queue_position > 0 and not handle.cancelled.is_set():
                activity = say(lang, "queued", position=handle.queue_position)
                yield running | {self.w.chatbot: chat_messages(work, lang, ("", ""), pending=True)[0],
                                 self.w.status: status_markdown(self.state, lang, usage, activity)}
                running = {}
                time.sleep(QUEUE_POLL_S)
            yield running | {self.w.chatbot: chat_messages(work, lang, ("", ""), pending=True)[0],
                             self.w.status: status_markdown(self.state, lang, usage, say(lang, "generating"))}
            splitter = StreamSplitter()
            reasoning = answer = ""
            last = 0.0
            result = None
            try:
                for item in handle:
                    if isinstance(item, TextDelta):
                        r, a = splitter.feed(item.text)
                        reasoning, answer = reasoning + r, answer + a
                        now = time.monotonic()
                        if now - last >= STREAM_INTERVAL_S:
                            last = now
                            yield {self.w.chatbot: chat_messages(work, lang, (reasoning, answer), pending=True)[0]}
                    else:
                        result = item
            except EngineError as exc:
                finished = True
                if handle.cancelled.is_set():  # stopped while still waiting in the queue
                    yield self._fail(base, usage, lang, say(lang, "stopped"), restore_input)
                else:
                    yield self._fail(base, usage, lang, exc.message, restore_input)
                return
            finished = True
            parsed = split_output(result.text)
            work.turns.append(Turn("assistant", parsed.raw_answer, reasoning=parsed.reasoning,
                                   finish_reason=result.finish_reason, usage=usage_dict(result.usage)))
            usage = usage_dict(result.usage)
            activity = say(lang, "stopped") if result.finish_reason == "cancelled" else ""
            yield {self.w.chatbot: chat_messages(work, lang)[0], self.w.transcript: work, self.w.usage: usage,
                   self.w.status: status_markdown(self.state, lang, usage, activity), self.w.error: "",
                   self.w.textbox: gr.MultimodalTextbox(submit_btn=True, stop_btn=False)} | self.save(work, usage, lang, request.session_hash)
        finally:
            self.runs.pop(sid, None)
            if not finished:  # the tab went away mid-answer: stop the GPU work
                handle.cancel()

    # ------------------------------------------------------------------ events
    def send(self, message, transcript: Transcript, usage: dict, system_prompt, thinking, temperature, top_p, top_k, repetition_penalty, max_new_tokens, image_tokens, request: gr.Request):
        lang = lang_of(request)
        message = message or {}
        text = (message.get("text") or "").strip()
        paths = [f if isinstance(f, str) else f.get("path") for f in message.get("files") or []]
        for path in paths:
            self.files.add(request.session_hash, path)  # removed with the tab (only files in our private dir)
        if not text and not paths:
            yield {self.w.error: say(lang, "error_prefix") + say(lang, "err_empty")}
            return
        try:
            images = self._load_files(paths, lang)
        except ImageError as exc:
            yield self._fail(transcript, usage, lang, str(exc), message)
            return
        work = transcript.copy()
        work.turns.append(Turn("user", text, images))
        yield from self._generate(transcript, work, usage, Controls(system_prompt, thinking, temperature, top_p, top_k, repetition_penalty, max_new_tokens, image_tokens), request, restore_input=message)

    def retry(self, transcript: Transcript, usage: dict, system_prompt, thinking, temperature, top_p, top_k, repetition_penalty, max_new_tokens, image_tokens, request: gr.Request):
        last_user = max((i for i, t in enumerate(transcript.turns) if t.role == "user"), default=None)
        if last_user is None:
            return
        work = transcript.copy()
        work.turns = work.turns[: last_user + 1]
        yield from self._generate(transcript, work, usage, Controls(system_prompt, thinking, temperature, top_p, top_k, repetition_penalty, max_new_tokens, image_tokens), request)

    def edit(self, data: gr.EditData, transcript: Transcript, usage: dict, system_prompt, thinking, temperature, top_p, top_k, repetition_penalty, max_new_tokens, image_tokens, request: gr.Request):
        lang = lang_of(request)
        slots = chat_messages(transcript, lang)[1]
        index = data.index if isinstance(data.index, int) else data.index[0]
        if not 0 <= index < len(slots) or slots[index].part != "text":
            yield {self.w.chatbot: chat_messages(transcript, lang)[0]}
            return
        turn = transcript.turns[slots[index].turn]
        new_text = data.value if isinstance(data.value, str) else str(data.value.get("text", "")) if isinstance(data.value, dict) else ""
        work = transcript.copy()
        work.turns = work.turns[: slots[index].turn] + [Turn("user", new_text.strip(), list(turn.images))]
        yield from self._generate(transcript, work, usage, Controls(system_prompt, thinking, temperature, top_p, top_k, repetition_penalty, max_new_tokens, image_tokens), request)

    def undo(self, transcript: Transcript, usage: dict, request: gr.Request):
        lang = lang_of(request)
        last_user = max((i for i, t in enumerate(transcript.turns) if t.role == "user"), default=None)
        if last_user is None:
            return {}
        removed = transcript.turns[last_user]
        work = transcript.copy()
        work.turns = work.turns[:last_user]
        restored = {"text": removed.text, "files": [image_file(img) for img in removed.images]}
        return {self.w.chatbot: chat_messages(work, lang)[0], self.w.transcript: work, self.w.error: "",
                self.w.textbox: restored} | self.save(work, usage, lang, request.session_hash)

    def stop(self, request: gr.Request) -> None:
        handle = self.runs.get(request.session_hash)
        if handle is not None:
            handle.cancel()

    def new_chat(self, request: gr.Request):
        lang = lang_of(request)
        self.stop(request)
        self.close(request)
        empty = Transcript()
        return {self.w.chatbot: [], self.w.transcript: empty, self.w.usage: {}, self.w.error: "",
                self.w.status: status_markdown(self.state, lang)} | self.save(empty, {}, lang, request.session_hash)

    def unload(self, request: gr.Request) -> None:
        """The tab closed: stop its answer, free its engine caches and delete its uploads and exports."""
        self.close(request)
        self.files.purge(request.session_hash)

    def close(self, request: gr.Request) -> None:
        """Free the tab's engine caches (also called when the tab closes)."""
        handle = self.runs.get(request.session_hash)
        if handle is not None:
            handle.cancel()
        backend = self.state.backend
        if backend is not None:
            backend.close_session(self._engine_session(request))
