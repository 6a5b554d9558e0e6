"""Issue 19, what a new user hit in the web UI: each defect in a real browser (Chromium), on the shared
engine, server and browser of conftest.py."""

from __future__ import annotations

from glm_vision.images import load_image

from .ui_support import WAIT_MS, ask, saved_chat, user_texts, wait_idle, wait_turns


def test_edit_a_message_that_carries_an_image(page, picture_file):
    ask(page, "What is in the picture?", [str(picture_file)])
    wait_turns(page, 2)
    wait_idle(page)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.get_by_role("button", name="Edit").first.click()
    page.locator("#glmv-chat textarea").first.fill("Edited question about the picture")
    page.get_by_role("button", name="Submit").first.click()
    page.wait_for_function(
        "() => JSON.parse(sessionStorage.getItem('glmv-chat')).messages[0].text === 'Edited question about the picture'",
        timeout=WAIT_MS)
    chat = wait_turns(page, 2)
    assert chat["messages"][0]["images"][0]["digest"] == load_image(picture_file).digest  # the picture stays
    assert any("Edited question about the picture" in t for t in user_texts(page))
    assert errors == []
