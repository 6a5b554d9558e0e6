"""Browser-less UI sessions: the UI's own handlers (ChatHandlers) driven directly, with a stand-in for
gr.Request. Used by the security and load suites, where a browser per session would be too slow."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from glm_vision.transcript import Transcript
from glm_vision.ui_chat import ChatHandlers, Widgets


@dataclass
class FakeRequest:
    session_hash: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    headers: dict = field(default_factory=lambda: {"accept-language": "en-US"})


def handlers(state) -> ChatHandlers:
    w = Widgets(textbox="textbox", chatbot="chatbot", transcript="transcript", usage="usage", status="status", error="error")
    return ChatHandlers(state, w, lambda transcript, usage, lang, session="": {})


def send(h: ChatHandlers, request: FakeRequest, text: str, files: list[str] | None = None, transcript=None,
         max_new_tokens: int = 2) -> dict:
    """Run one send to the end; returns the last state of every output (transcript, error, ...)."""
    state = {"transcript": transcript or Transcript(), "error": ""}
    for update in h.send({"text": text, "files": files or []}, state["transcript"], {}, "", False, 0.0, 1.0, 0, 1.0,
                         max_new_tokens, 256, request):
        state.update(update)
    return state
