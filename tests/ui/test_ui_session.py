"""A tab's session without a browser: the files tabs hold, and what happens to an answer when the chat
is replaced under it (issue 19)."""

from __future__ import annotations

import os
from pathlib import Path

from glm_vision.ui.tempfiles import SessionFiles


def _upload(name: str) -> Path:
    folder = Path(os.environ["GRADIO_TEMP_DIR"]) / ("test-shared-" + name)
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(b"same bytes")
    return path


def test_a_file_two_tabs_hold_is_deleted_when_the_last_one_closes():
    shared, example = _upload("same.png"), _upload("example.png")
    files = SessionFiles(keep=[example])
    files.add("a", shared)
    files.add("b", shared)
    files.add("a", example)
    assert files.purge("a") == 0 and shared.exists()
    assert files.purge("b") == 1 and not shared.exists() and not shared.parent.exists()
    assert example.exists()  # the app's own files are never a tab's


# ---------------------------------------------------------------------------------- a chat replaced mid-answer
def _tab(answer="an answer that is long enough to stream in several pieces"):
    from glm_vision.server import AppState
    from glm_vision.settings import Settings
    from tests.doubles import ScriptedBackend
    from tests.ui.ui_driver import FakeRequest, handlers

    tabs = handlers(AppState(Settings(), backend=ScriptedBackend(answer, chunk=2)))
    return tabs.of(FakeRequest())


def _controls():
    from glm_vision.ui.controls import Controls

    return Controls(thinking=False, max_new_tokens=64)


def _exported(tmp_path) -> Path:
    from glm_vision.ui.chat_json import to_json
    from glm_vision.ui.transcript import Transcript, Turn

    path = tmp_path / "chat.json"
    path.write_text(to_json(Transcript([Turn("user", "imported question"), Turn("assistant", "imported answer")])))
    return path


def test_new_chat_or_import_while_an_answer_is_written_is_not_undone(tmp_path):
    for replace in ("new_chat", "import_chat"):
        session = _tab()
        answer = session.send({"text": "old question", "files": []}, _controls())
        first = next(answer)  # the question is in, the answer on its way
        assert "old question" in str(first["chatbot"])
        replaced = session.new_chat() if replace == "new_chat" else session.import_chat(str(_exported(tmp_path)))
        assert "old question" not in str(replaced["chatbot"])
        late = list(answer)  # whatever the old answer still has to say
        assert all("old question" not in str(update.get("chatbot", "")) for update in late), replace
        assert all("old question" not in str(update.get("store", "")) for update in late), replace
        assert "old question" not in " ".join(t.text for t in session.transcript.turns)
        assert session.run is None
        follow = list(session.send({"text": "next", "files": []}, _controls()))
        assert follow[-1]["error"] == ""
        assert "old question" not in " ".join(t.text for t in session.transcript.turns)


def test_the_thinking_budget_setting_reaches_the_request_and_is_kept_with_the_chat():
    from dataclasses import replace

    from glm_vision.settings import Settings
    from glm_vision.ui.controls import checked, default_controls

    session = _tab()
    list(session.send({"text": "think briefly", "files": []}, replace(_controls(), thinking=True, thinking_budget=64)))
    list(session.send({"text": "no cap", "files": []}, _controls()))
    sent = session.state.backend.requests
    assert sent[-2].thinking_budget == 64 and sent[-2].enable_thinking is True
    assert sent[-1].thinking_budget is None  # 0 in the panel: no limit
    defaults = default_controls(Settings())
    assert checked({"thinking_budget": 256}, defaults, Settings()).thinking_budget == 256
    assert checked({"thinking_budget": -3}, defaults, Settings()).thinking_budget == 0  # out of range: the default


# ---------------------------------------------------------------------------------- a tab closed mid-submit
class _HeldSubmit:
    """A scripted backend whose `submit` waits at a gate, recording each `close_session` with whether
    the request it had submitted last had ended by then."""

    def __init__(self, answer: str) -> None:
        import threading

        from tests.doubles import ScriptedBackend

        self.inner = ScriptedBackend(answer, chunk=2, delay_s=0.01)
        self.info = self.inner.info
        self.entered, self.gate = threading.Event(), threading.Event()
        self.handles, self.closes = [], []

    def submit(self, request):
        self.entered.set()
        assert self.gate.wait(30)
        self.handles.append(self.inner.submit(request))
        return self.handles[-1]

    def close_session(self, session_id: str) -> bool:
        last = self.handles[-1] if self.handles else None
        ended = last is not None and (last.result is not None or last.error is not None)
        self.closes.append((session_id, ended))
        return False


def test_a_tab_closed_while_its_question_is_submitted_stops_the_answer_and_frees_its_caches_after_it():
    """The tab's close comes between the send and the submit (Stop has no answer to stop yet): the answer
    is cancelled as soon as it is submitted, and the engine session is freed once more after it ended,
    since a request the engine admits after the first free would otherwise cache the chat again."""
    import threading

    from glm_vision.server import AppState
    from glm_vision.settings import Settings
    from tests.api_helpers import wait_until
    from tests.ui.ui_driver import FakeRequest, handlers

    backend = _HeldSubmit("a long answer " * 20)
    tabs, request = handlers(AppState(Settings(), backend=backend)), FakeRequest()
    session = tabs.of(request)
    sending = threading.Thread(target=lambda: list(session.send({"text": "q", "files": []}, _controls())))
    sending.start()
    assert backend.entered.wait(30)
    tabs.unload(request)  # the tab goes away while its question is being submitted
    assert backend.closes == [(session.engine_session, False)]
    backend.gate.set()
    sending.join(30)
    wait_until(lambda: len(backend.closes) == 2, what="the caches freed again after the answer")
    handle = backend.handles[0]
    assert handle.cancelled.is_set()  # dropped from the queue, or stopped before its first word
    assert handle.error is not None or handle.result.finish_reason == "cancelled"
    assert handle.result is None or handle.result.text == ""
    assert backend.closes[1] == (session.engine_session, True)
