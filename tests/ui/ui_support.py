"""Helpers for the browser tests: the UI served on a free loopback port, a scripted backend, Chromium."""

from __future__ import annotations

import time

from fastapi import FastAPI

from tests.api_helpers import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000


class UiServer(LiveServer):
    """The web UI alone (mount_ui on a bare FastAPI app), served by uvicorn in a thread."""

    def __init__(self, state) -> None:
        from glm_vision.ui import mount_ui

        self.state = state
        super().__init__(mount_ui(FastAPI(), state))

    @property
    def url(self) -> str:
        return super().url + "/"


class SlowEmit:
    """Wraps the engine scheduler's emit so each text delta waits `delay_s` on the worker thread
    (the GPU loop itself is slowed, so Stop can be pressed mid-answer and cancellation is real)."""

    def __init__(self, engine) -> None:
        self.delay_s = 0.0
        self._emit = engine.scheduler.emit
        engine.scheduler.emit = self.emit

    def emit(self, seq, text):
        if self.delay_s:
            time.sleep(self.delay_s)
        self._emit(seq, text)


# ---------------------------------------------------------------------- page helpers
def open_page(context, url: str):
    return load_page(context.new_page(), url)


def load_page(page, url: str):
    """Load (or reload) the UI in this tab and wait until it is ready."""
    page.goto(url, timeout=WAIT_MS)
    page.wait_for_selector("#glmv-input textarea", timeout=WAIT_MS)
    page.wait_for_function("() => document.querySelector('#glmv-status')?.innerText.includes(' · ')", timeout=WAIT_MS)
    return page


def bot_texts(page) -> list[str]:
    return page.eval_on_selector_all("#glmv-chat .message.bot", "els => els.map(e => e.innerText)")


def user_texts(page) -> list[str]:
    return page.eval_on_selector_all("#glmv-chat .message.user", "els => els.map(e => e.innerText)")


def wait_idle(page) -> None:
    """Until no answer is being written (the input's submit button is back)."""
    page.wait_for_selector("#glmv-input .submit-button", timeout=WAIT_MS)
    page.wait_for_function("() => !document.querySelector('#glmv-input .stop-button')", timeout=WAIT_MS)


def wait_chat_text(page, text: str) -> None:
    """Until the conversation on screen shows `text` (a stored chat is saved while the answer is still
    being written, and the submit button can be back before the last piece is rendered)."""
    page.wait_for_function(
        "(t) => document.querySelector('#glmv-chat')?.innerText.includes(t)", arg=text, timeout=WAIT_MS
    )


def saved_chat(page) -> dict | None:
    import json

    raw = page.evaluate("() => sessionStorage.getItem('glmv-chat')")
    return json.loads(raw) if raw else None


def wait_turns(page, count: int) -> dict:
    """Until the tab's stored chat has `count` messages; returns it."""
    page.wait_for_function(
        f"() => {{ const v = sessionStorage.getItem('glmv-chat');"
        f" return v && JSON.parse(v).messages.length === {count}; }}",
        timeout=WAIT_MS,
    )
    return saved_chat(page)


def ask(page, text: str, files: list | None = None) -> None:
    if files:
        page.set_input_files("#glmv-input input[type=file]", files)
        page.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)
    page.fill("#glmv-input textarea", text)
    page.keyboard.press("Enter")


def queue_behind(one, two) -> None:
    """`one` starts a long answer; `two` asks while it is written and waits first in the queue."""
    ask(one, "A long answer first")
    one.wait_for_selector("#glmv-input .stop-button", timeout=WAIT_MS)
    ask(two, "Then me")
    two.wait_for_function(
        "() => document.querySelector('#glmv-status')?.innerText.includes('position 1')", timeout=WAIT_MS
    )


def ui_sessions(engine) -> set[str]:
    """The engine sessions the UI's tabs hold now."""
    return {s for s in engine.sessions._sessions if s.startswith("ui-")}


def wait_tabs_closed(engine, sessions: set[str]) -> None:
    """Until the server has handled these tabs' close (their engine sessions are freed last)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while sessions & ui_sessions(engine) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sessions & ui_sessions(engine), "the closed tab was not cleaned up"


def thumbnail_status(page) -> int:
    """The HTTP status of the first example thumbnail, fetched again now."""
    return page.evaluate("async () => (await fetch(document.querySelector('#glmv-examples img').src)).status")
