"""Issue 19, what a new user hit in the web UI: each defect in a real browser (Chromium), on the shared
engine, server and browser of conftest.py."""

from __future__ import annotations

from glm_vision.images import load_image
from tests.conftest import make_picture

from .ui_support import (WAIT_MS, ask, open_page, thumbnail_status, ui_sessions, user_texts, wait_idle,
                         wait_tabs_closed, wait_turns)


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


def test_example_thumbnails_outlive_a_tab_that_sent_the_example(browser, server, ui_engine):
    engine = ui_engine[0]
    before = ui_sessions(engine)
    one = open_page(browser.new_context(locale="en-US"), server.url)
    one.locator("#glmv-examples img").first.click()
    one.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)
    one.press("#glmv-input textarea", "Enter")
    wait_turns(one, 2)
    mine = ui_sessions(engine) - before
    one.context.close()
    wait_tabs_closed(engine, mine)
    two = open_page(browser.new_context(locale="en-US"), server.url)
    try:
        assert thumbnail_status(two) == 200
    finally:
        two.context.close()


def test_an_identical_pending_upload_outlives_another_tabs_close(browser, server, ui_engine, tmp_path):
    engine = ui_engine[0]
    same = tmp_path / "same.png"
    make_picture(21).save(same)
    waiting = open_page(browser.new_context(locale="en-US"), server.url)
    try:
        waiting.set_input_files("#glmv-input input[type=file]", [str(same)])
        waiting.wait_for_function("() => document.querySelector('#glmv-cost')?.innerText.includes('attached')",
                                  timeout=WAIT_MS)
        before = ui_sessions(engine)
        sender = open_page(browser.new_context(locale="en-US"), server.url)
        ask(sender, "Same picture, sent at once", [str(same)])
        wait_turns(sender, 2)
        mine = ui_sessions(engine) - before
        sender.context.close()
        wait_tabs_closed(engine, mine)
        ask(waiting, "Now my question about it")
        chat = wait_turns(waiting, 2)
        assert chat["messages"][0]["images"][0]["name"] == "same.png"
        assert waiting.inner_text("#glmv-error").strip() == ""
    finally:
        waiting.context.close()


def _long_answer(page, slow, question: str) -> None:
    """Ask for a long, slowly written answer and wait until it is being written."""
    page.fill("#glmv-max-new input[type=number]", "400")
    page.press("#glmv-max-new input[type=number]", "Enter")
    slow.delay_s = 0.1
    ask(page, question)
    page.wait_for_selector("#glmv-input .stop-button", timeout=WAIT_MS)


def test_new_chat_while_an_answer_is_written_stays_new(page, ui_engine):
    slow = ui_engine[2]
    try:
        _long_answer(page, slow, "An answer to abandon")
        page.click("#glmv-new")
        wait_idle(page)
    finally:
        slow.delay_s = 0.0
    ask(page, "A fresh start")
    chat = wait_turns(page, 2)
    assert chat["messages"][0]["text"] == "A fresh start"
    assert "An answer to abandon" not in page.inner_text("#glmv-chat")
