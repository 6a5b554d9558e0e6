"""Issue 8, bad input through the UI: every file of the corpus sent through the UI's own send handler
(browser-less; the browser shows the same error line:
test_ui_attachments.py::test_corrupt_file_shows_error_and_chat_still_works).
Each bad file gets a clear message naming the file, the conversation so far is kept, the message is
given back in the input box; accepted odd files say what was used (first frame, first page)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from glm_vision.server import AppState
from tests.hardening_corpus import corpus
from tests.ui.ui_driver import FakeRequest, handlers, send

CASES = corpus(max_upload_bytes=2_000_000, max_pixels=64_000_000, pdf_max_pages=3)


@pytest.fixture(scope="module")
def ui(settings, engine, tmp_path_factory):
    state = AppState(
        replace(settings, max_upload_mb=2.0, pdf_max_pages=3, pdf_dpi=36, max_new_tokens=2), backend=engine
    )
    h = handlers(state)
    request = FakeRequest()
    first = send(h, request, "hello before anything")
    assert first["error"] == "" and len(first["transcript"].turns) == 2
    return h, request, first["transcript"], tmp_path_factory.mktemp("ui-corpus")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_file_case_through_the_ui(ui, case):
    h, request, transcript, folder = ui
    path = folder / case.filename
    path.write_bytes(case.data)
    out = send(h, request, "what is this?", [str(path)], transcript=transcript)
    if case.ok:
        assert out["error"] == "", out["error"]
        work = out["transcript"]
        assert len(work.turns) == 4 and work.turns[:2] == transcript.turns[:2]
        notes = [n for image in work.turns[2].images for n in image.notes]
        if case.phrase:
            assert any(case.phrase in n for n in notes), notes
        return
    error = out["error"]
    assert case.filename in error and case.phrase in error, error
    assert out["transcript"] is transcript and len(transcript.turns) == 2  # the conversation so far is kept
    restored = out["textbox"]
    assert restored.value["text"] == "what is this?"  # the message is given back to edit or resend


def test_other_ui_sessions_unaffected_and_this_one_goes_on(ui):
    h, request, transcript, _ = ui
    other = send(h, FakeRequest(), "another tab")
    assert other["error"] == ""
    out = send(h, request, "still here?", transcript=transcript)
    assert out["error"] == "" and len(out["transcript"].turns) == 4
    assert out["transcript"].turns[0].text == "hello before anything"


def test_empty_message_and_too_many_images(ui, tmp_path):
    h, request, transcript, _ = ui
    assert "type a question or attach an image" in send(h, request, "   ", transcript=transcript)["error"].lower()
    paths = []
    for index in range(9):
        path = tmp_path / f"p{index}.png"
        from tests.conftest import make_picture

        make_picture(index).save(path)
        paths.append(str(path))
    out = send(h, request, "nine", paths, transcript=transcript)
    assert "8" in out["error"] and out["transcript"] is transcript
