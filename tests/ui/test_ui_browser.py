"""The web UI in a real browser: Playwright driving Debian's Chromium against the UI served on a free
loopback port with the tiny checkpoint (its answers are gibberish: these tests check the mechanics).
The engine, server and browser fixtures are in conftest.py."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from glm_vision.images import load_image
from glm_vision.server import AppState
from tests.conftest import make_picture
from tests.doubles import ScriptedBackend

from .ui_support import (
    WAIT_MS,
    UiServer,
    ask,
    bot_texts,
    open_page,
    queue_behind,
    saved_chat,
    user_texts,
    wait_chat_text,
    wait_idle,
    wait_turns,
)


def test_upload_by_file_chooser_ask_and_stream(page, picture_file, ui_engine):
    _, _, slow = ui_engine
    slow.delay_s = 0.05
    try:
        with page.expect_file_chooser(timeout=WAIT_MS) as chooser:
            page.click("#glmv-input button.upload-button")
        chooser.value.set_files(str(picture_file))
        page.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)
        page.fill("#glmv-input textarea", "What colour is the circle?")
        # Record every text the answer bubble shows while it is written.
        page.evaluate("""() => { window.__seen = [];
            new MutationObserver(() => {
              const b = [...document.querySelectorAll('#glmv-chat .message.bot')].map(e => e.innerText).join('|');
              if (window.__seen[window.__seen.length - 1] !== b) window.__seen.push(b); })
            .observe(document.querySelector('#glmv-chat'), {subtree: true, childList: true, characterData: true}); }""")
        page.keyboard.press("Enter")
        chat = wait_turns(page, 2)
    finally:
        slow.delay_s = 0.0
    assert user_texts(page)[-1].strip().startswith("What colour is the circle?")
    assert page.locator("#glmv-chat img").count() >= 1  # the picture is shown inline
    seen = [s for s in page.evaluate("() => window.__seen") if s.strip() and s.strip() != "…"]
    assert len(set(seen)) >= 2, "the answer should appear piece by piece"
    assert chat["messages"][0]["images"] and chat["messages"][1]["role"] == "assistant"
    page.wait_for_function(
        "() => document.querySelector('#glmv-status')?.innerText.includes('first token')", timeout=WAIT_MS
    )
    status = page.inner_text("#glmv-status")
    assert "first token" in status and "tokens/s" in status and "cached" in status and "encoded" in status


def test_drag_and_drop_upload(page, picture_file):
    data = base64.b64encode(picture_file.read_bytes()).decode()
    page.evaluate(
        """(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        const target = document.querySelector('#glmv-input textarea');
        for (const type of ['dragenter', 'dragover', 'drop'])
            target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""",
        data,
    )
    page.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)
    page.fill("#glmv-input textarea", "Describe the dropped picture")
    page.keyboard.press("Enter")
    chat = wait_turns(page, 2)
    assert chat["messages"][0]["images"][0]["name"] == "dropped.png"
    expected = load_image(picture_file).digest
    assert chat["messages"][0]["images"][0]["digest"] == expected


def test_paste_image_from_clipboard(page, picture_file):
    data = base64.b64encode(picture_file.read_bytes()).decode()
    page.evaluate(
        """(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'pasted.png', {type: 'image/png'}));
        const target = document.querySelector('#glmv-input textarea');
        target.focus();
        target.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
    }""",
        data,
    )
    page.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)
    ask(page, "What was pasted?")
    chat = wait_turns(page, 2)
    assert len(chat["messages"][0]["images"]) == 1


def test_pdf_pages_become_images(page, tmp_path):
    path = tmp_path / "two-pages.pdf"
    first, second = make_picture(11, (300, 200)), make_picture(12, (300, 200))
    first.save(path, format="PDF", save_all=True, append_images=[second])
    ask(page, "Compare the pages", [str(path)])
    chat = wait_turns(page, 2)
    names = [img["name"] for img in chat["messages"][0]["images"]]
    assert names == ["two-pages-page1.png", "two-pages-page2.png"]
    assert page.locator("#glmv-chat img").count() >= 2


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


def test_two_browser_contexts_are_isolated(browser, server):
    one = open_page(browser.new_context(locale="en-US"), server.url)
    two = open_page(browser.new_context(locale="en-US"), server.url)
    try:
        ask(one, "alpha question")
        ask(two, "beta question")
        wait_turns(one, 2)
        wait_turns(two, 2)
        one.reload()
        one.wait_for_function(
            "() => document.querySelector('#glmv-chat')?.innerText.includes('alpha question')", timeout=WAIT_MS
        )
        assert "beta question" not in one.inner_text("#glmv-chat")
        assert "alpha question" not in two.inner_text("#glmv-chat")
        assert [m["text"] for m in saved_chat(two)["messages"][:1]] == ["beta question"]
    finally:
        one.context.close()
        two.context.close()


def test_corrupt_file_shows_error_and_chat_still_works(page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    ask(page, "What is in this file?", [str(bad)])
    page.wait_for_function(
        "() => document.querySelector('#glmv-error')?.innerText.includes('broken.png')", timeout=WAIT_MS
    )
    assert "readable image" in page.inner_text("#glmv-error") or "damaged" in page.inner_text("#glmv-error")
    assert page.input_value("#glmv-input textarea") == "What is in this file?"  # the message is given back
    page.click("#glmv-input .thumbnail-item button", timeout=WAIT_MS)  # remove the bad file
    page.fill("#glmv-input textarea", "A question without the file")
    page.keyboard.press("Enter")
    chat = wait_turns(page, 2)
    assert chat["messages"][0]["text"] == "A question without the file"
    assert page.inner_text("#glmv-error").strip() == ""


def test_too_many_images_refused_before_sending(page, tmp_path):
    paths = []
    for seed in range(4):
        path = tmp_path / f"p{seed}.png"
        make_picture(seed).save(path)
        paths.append(str(path))
    ask(page, "Four pictures", paths)
    page.wait_for_function(
        "() => document.querySelector('#glmv-error')?.innerText.includes('At most 3 images')", timeout=WAIT_MS
    )
    assert saved_chat(page) is None


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


def test_loading_state_then_ready(context, server):
    real = server.state.backend
    server.state.backend = None
    try:
        page = context.new_page()
        page.goto(server.url, timeout=WAIT_MS)
        page.wait_for_function(
            "() => document.querySelector('#glmv-status')?.innerText.includes('Loading')", timeout=WAIT_MS
        )
    finally:
        server.state.backend = real
    page.wait_for_function("() => document.querySelector('#glmv-status')?.innerText.includes(' · ')", timeout=WAIT_MS)


def test_example_gallery_fills_the_input(page):
    page.locator("#glmv-examples img").first.click()
    page.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)
    assert page.input_value("#glmv-input textarea").endswith("?")


def test_chinese_interface_and_dark_mode(browser, server):
    ctx = browser.new_context(locale="zh-CN", color_scheme="dark")
    try:
        page = open_page(ctx, server.url)
        page.wait_for_function(
            "() => document.querySelector('#glmv-new')?.innerText.includes('新对话')", timeout=WAIT_MS
        )
        assert "设备" in page.inner_text("#glmv-status")
        assert page.evaluate(
            "() => document.querySelector('.gradio-container').closest('.dark') !== null "
            "|| document.body.classList.contains('dark') || document.documentElement.classList.contains('dark')"
        )
    finally:
        ctx.close()


def test_tab_close_frees_engine_session(context, server, ui_engine):
    engine = ui_engine[0]
    page = open_page(context, server.url)
    ask(page, "Cache me")
    wait_turns(page, 2)
    ours = {s for s in engine.sessions._sessions if s.startswith("ui-")}
    assert ours
    page.close()
    import time

    deadline = time.monotonic() + 60
    while ours & set(engine.sessions._sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ours & set(engine.sessions._sessions)


def test_api_key_requires_login(browser, ui_engine):
    engine, settings, _ = ui_engine
    from dataclasses import replace

    state = AppState(replace(settings, api_key="sekret"), backend=engine)
    with UiServer(state) as srv:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(srv.url, timeout=WAIT_MS)
            page.wait_for_selector("input[type=password]", timeout=WAIT_MS)
            assert page.locator("#glmv-input").count() == 0
            page.locator("input[type=text]").first.fill("me")
            page.fill("input[type=password]", "wrong")
            page.keyboard.press("Enter")
            page.wait_for_function("() => /incorrect/i.test(document.body.innerText)", timeout=WAIT_MS)
            assert page.locator("#glmv-input").count() == 0
            page.locator("input[type=text]").first.fill("me")
            page.fill("input[type=password]", "sekret")
            page.keyboard.press("Enter")
            page.wait_for_selector("#glmv-input textarea", timeout=WAIT_MS)
        finally:
            ctx.close()


def test_queue_position_shown_while_waiting(browser, server, ui_engine):
    _, _, slow = ui_engine
    one = open_page(browser.new_context(locale="en-US"), server.url)
    two = open_page(browser.new_context(locale="en-US"), server.url)
    slow.delay_s = 0.1
    try:
        one.fill("#glmv-max-new input[type=number]", "400")
        one.press("#glmv-max-new input[type=number]", "Enter")
        queue_behind(one, two)
        one.click("#glmv-input .stop-button", timeout=WAIT_MS)
        slow.delay_s = 0.0
        chat = wait_turns(two, 2)
        assert chat["messages"][0]["text"] == "Then me"
    finally:
        slow.delay_s = 0.0
        one.context.close()
        two.context.close()
