"""Browser-less UI sessions: the UI's own handlers (the tab's ChatSession) driven directly, with a
stand-in for gr.Request. Used by the security and load suites, where a browser per session would be too slow."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from glm_vision.ui.controls import Controls
from glm_vision.ui.tabs import Tabs
from glm_vision.ui.widgets import Widgets


@dataclass
class FakeRequest:
    session_hash: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    headers: dict = field(default_factory=lambda: {"accept-language": "en-US"})


def handlers(state) -> Tabs:
    """The UI's tabs; updates come back keyed by the component names of `Widgets()` ("error", "textbox", ...)."""
    return Tabs(state, Widgets())


def send(
    h: Tabs, request: FakeRequest, text: str, files: list[str] | None = None, transcript=None, max_new_tokens: int = 2
) -> dict:
    """Run one send to the end; returns the last state of every output, and the tab's transcript."""
    session = h.of(request)
    if transcript is not None:
        session.transcript = transcript
    controls = Controls(
        system_prompt="",
        thinking=False,
        temperature=0.0,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
        image_tokens=256,
    )
    state = {"error": ""}
    for update in session.send({"text": text, "files": files or []}, controls):
        state.update(update)
    state["transcript"] = session.transcript
    return state
