"""A conversation in a real browser (Chromium): Stop mid-answer, Retry, Undo, Edit, a message past the
context limit, a scripted answer rendered safely (reasoning, boxes, LaTeX, no script runs) and a GPU
error, Markdown and JSON export then import, and a reload that keeps the chat and the settings. On the
shared engine, server and browser of conftest.py (the tiny checkpoint: its answers are gibberish)."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from glm_vision.images import load_image
from tests.doubles import ScriptedBackend

from .ui_support import (
    WAIT_MS,
    ask,
    bot_texts,
    open_page,
    saved_chat,
    user_texts,
    wait_chat_text,
    wait_idle,
    wait_turns,
)


def test_stop_mid_answer_keeps_partial_answer(page, ui_engine):
    _, _, slow = ui_engine
    page.fill("#glmv-max-new input[type=number]", "400")
    page.press("#glmv-max-new input[type=number]", "Enter")
    # thinking off: every token is answer text (with it on, random weights may reason for all 400)
    page.uncheck("#glmv-thinking input[type=checkbox]")
    slow.delay_s = 0.1
    try:
        ask(page, "Write a long answer")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#glmv-chat .message.bot')].map(e => e.innerText).join('')"
            ".replace('…','').trim().length > 3",
            timeout=WAIT_MS,
        )
        page.click("#glmv-input .stop-button", timeout=WAIT_MS)
        chat = wait_turns(page, 2)
    finally:
        slow.delay_s = 0.0
    answer = chat["messages"][1]
    assert answer["finish_reason"] == "cancelled"
    assert 0 < answer["usage"]["completion_tokens"] < 400  # the engine stopped, not just the display
    wait_idle(page)
    assert "Stopped" in page.inner_text("#glmv-status")
    assert bot_texts(page)  # the partial answer stays on screen


def test_retry_and_undo(page):
    ask(page, "First question")
    first = wait_turns(page, 2)
    page.fill("#glmv-temperature input[type=number]", "0")
    page.press("#glmv-temperature input[type=number]", "Enter")
    page.evaluate("() => sessionStorage.removeItem('glmv-chat')")
    page.get_by_role("button", name="Retry").last.click()
    second = wait_turns(page, 2)
    assert second["messages"][0]["text"] == "First question"
    assert first["messages"][1]["role"] == second["messages"][1]["role"] == "assistant"
    wait_idle(page)
    page.get_by_role("button", name="Undo").last.click()
    page.wait_for_function(
        "() => document.querySelector('#glmv-input textarea').value === 'First question'", timeout=WAIT_MS
    )
    page.wait_for_function("() => sessionStorage.getItem('glmv-chat') === null", timeout=WAIT_MS)
    assert user_texts(page) == []


def test_edit_previous_message_and_continue(page):
    ask(page, "Original question")
    wait_turns(page, 2)
    wait_idle(page)
    ask(page, "Second question")
    wait_turns(page, 4)
    wait_idle(page)
    page.get_by_role("button", name="Edit").first.click()
    editor = page.locator("#glmv-chat textarea").first
    editor.fill("Edited question")
    page.get_by_role("button", name="Submit").first.click()
    page.wait_for_function(
        "() => { const v = JSON.parse(sessionStorage.getItem('glmv-chat'));"
        " return v.messages.length === 2 && v.messages[0].text === 'Edited question'; }",
        timeout=WAIT_MS,
    )
    assert any("Edited question" in t for t in user_texts(page))
    assert not any("Second question" in t for t in user_texts(page))


def test_context_overflow_keeps_conversation(page):
    ask(page, "Short question")
    wait_turns(page, 2)
    wait_idle(page)
    ask(page, "word " * 2500)
    page.wait_for_function(
        "() => document.querySelector('#glmv-error')?.innerText.includes('context limit')", timeout=WAIT_MS
    )
    chat = saved_chat(page)
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
    assert any("Short question" in t for t in user_texts(page))
    wait_idle(page)


def test_scripted_output_is_sanitized_and_rendered(page, server):
    from glm_vision.backend import GpuOutOfMemoryError

    pieces = [
        "<think>Looking at the",
        " picture.</think>",
        "The answer is <|begin_of_box|>42<|end_of_box|>. ",
        '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> $x^2$ done',
    ]
    real = server.state.backend
    server.state.backend = ScriptedBackend(pieces, is_demo=True)
    try:
        ask(page, "Try to break the page")
        wait_chat_text(page, "done")
        wait_idle(page)
        chat = wait_turns(page, 2)
        assert page.evaluate("() => window.__xss") is None
        text = page.inner_text("#glmv-chat")
        assert "42" in text and "begin_of_box" not in text and "<think>" not in text
        assert chat["messages"][1]["reasoning"] == "Looking at the picture."
        assert page.locator("#glmv-chat .thought-group").count() == 1  # the reasoning sits in its own collapsible block
        assert page.locator("#glmv-chat .katex").count() >= 1  # $x^2$ rendered as LaTeX
        assert "Demo model" in page.inner_text("#glmv-status")

        server.state.backend = ScriptedBackend(
            ["partial"], is_demo=True, error=GpuOutOfMemoryError("the GPU ran out of memory")
        )
        ask(page, "Second question")
        page.wait_for_function(
            "() => document.querySelector('#glmv-error')?.innerText.includes('out of memory')", timeout=WAIT_MS
        )
        assert [m["role"] for m in saved_chat(page)["messages"]] == ["user", "assistant"]
    finally:
        server.state.backend = real


def test_export_markdown_and_json_then_import(page, picture_file, context, server, tmp_path):
    ask(page, "Export me", [str(picture_file)])
    wait_turns(page, 2)
    wait_idle(page)
    with page.expect_download(timeout=WAIT_MS) as md_download:
        page.click("#glmv-export-md")
    assert md_download.value.suggested_filename.endswith(".md")
    markdown = open(md_download.value.path(), encoding="utf-8").read()
    assert "## User" in markdown and "Export me" in markdown and "## Assistant" in markdown
    assert "](data:image/png;base64," in markdown
    with page.expect_download(timeout=WAIT_MS) as json_download:
        page.click("#glmv-export-json")
    name = json_download.value.suggested_filename
    assert name.endswith(".json") and all(c.isalnum() or c in "._-" for c in name)
    body = json.loads(open(json_download.value.path(), encoding="utf-8").read())
    assert body["format"] == "glm-vision-chat" and [m["role"] for m in body["messages"]] == ["user", "assistant"]
    embedded = Image.open(io.BytesIO(base64.b64decode(body["messages"][0]["images"][0]["data"])))
    assert load_image(embedded).digest == load_image(picture_file).digest

    other = open_page(context.browser.new_context(locale="en-US"), server.url)
    try:
        with other.expect_file_chooser(timeout=WAIT_MS) as chooser:
            other.click("#glmv-import")
        exported = tmp_path / name
        json_download.value.save_as(exported)
        chooser.value.set_files(str(exported))
        other.wait_for_function(
            "() => document.querySelector('#glmv-notice')?.innerText.includes('Imported')", timeout=WAIT_MS
        )
        assert any("Export me" in t for t in user_texts(other))
        assert other.locator("#glmv-chat img").count() >= 1
        ask(other, "And a follow-up")
        chat = wait_turns(other, 4)
        assert chat["messages"][0]["images"][0]["digest"] == body["messages"][0]["images"][0]["digest"]
    finally:
        other.context.close()


def test_reload_keeps_history_and_settings(page):
    ask(page, "Remember me")
    wait_turns(page, 2)
    wait_idle(page)
    page.fill("#glmv-top-k input[type=number]", "7")
    page.press("#glmv-top-k input[type=number]", "Enter")
    page.wait_for_function("() => JSON.parse(localStorage.getItem('glmv-prefs') || '{}').top_k === 7", timeout=WAIT_MS)
    page.reload()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#glmv-chat .message.user')]"
        ".some(e => e.innerText.includes('Remember me'))",
        timeout=WAIT_MS,
    )
    assert bot_texts(page)
    page.wait_for_function(
        "() => document.querySelector('#glmv-top-k input[type=number]')?.value === '7'", timeout=WAIT_MS
    )
