"""Issue 19, what a new user hit in the web UI: each defect in a real browser (Chromium), on the shared
engine, server and browser of conftest.py."""

from __future__ import annotations

import json
from dataclasses import replace

from PIL import Image

from glm_vision.images import load_image
from glm_vision.ui.examples import EXAMPLES_DIR
from tests.conftest import make_picture
from tests.doubles import ScriptedBackend

from .ui_support import (
    WAIT_MS,
    ask,
    open_page,
    queue_behind,
    saved_chat,
    thumbnail_status,
    ui_sessions,
    user_texts,
    wait_idle,
    wait_tabs_closed,
    wait_turns,
)


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
        "() => JSON.parse(sessionStorage.getItem('glmv-chat')).messages[0].text"
        " === 'Edited question about the picture'",
        timeout=WAIT_MS,
    )
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
        waiting.wait_for_function(
            "() => document.querySelector('#glmv-cost')?.innerText.includes('attached')", timeout=WAIT_MS
        )
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


def test_stopping_a_queued_question_says_nothing_was_written(browser, server):
    real = server.state.backend
    # One answer at a time, long enough to outlast the test on a loaded machine: the UI server writes at most
    # 12 tokens (conftest.py), so the length is the delay's, 12 x 2 s. (4,000 words at 0.05 s lasted 0.6 s.)
    server.state.backend = scripted = ScriptedBackend(["word "] * 12, delay_s=2.0)
    one = open_page(browser.new_context(locale="en-US"), server.url)
    two = open_page(browser.new_context(locale="en-US"), server.url)
    try:
        queue_behind(one, two)
        two.click("#glmv-input .stop-button", timeout=WAIT_MS)
        two.wait_for_function(
            "() => document.querySelector('#glmv-notice')?.innerText.includes('before the answer began')",
            timeout=WAIT_MS,
        )
        assert two.inner_text("#glmv-error").strip() == ""
        assert "partial answer" not in two.inner_text("body")
        assert two.input_value("#glmv-input textarea") == "Then me"  # the question is back to send again
        assert saved_chat(two) is None
    finally:
        server.state.backend = real
        scripted.shutdown()
        one.context.close()
        two.context.close()


def test_exports_keep_the_settings_and_an_import_restores_them(page, browser, server, tmp_path):
    page.fill("#glmv-system textarea", "Answer in French.")
    page.fill("#glmv-temperature input[type=number]", "0.3")
    page.press("#glmv-temperature input[type=number]", "Enter")
    ask(page, "Settings travel with the chat")
    wait_turns(page, 2)
    wait_idle(page)
    with page.expect_download(timeout=WAIT_MS) as md_download:
        page.click("#glmv-export-md")
    assert "Answer in French." in open(md_download.value.path(), encoding="utf-8").read()
    with page.expect_download(timeout=WAIT_MS) as json_download:
        page.click("#glmv-export-json")
    exported = tmp_path / "chat.json"
    json_download.value.save_as(exported)
    saved = json.loads(exported.read_text(encoding="utf-8"))["settings"]
    assert saved["system_prompt"] == "Answer in French." and saved["temperature"] == 0.3

    other = open_page(browser.new_context(locale="en-US"), server.url)
    try:
        with other.expect_file_chooser(timeout=WAIT_MS) as chooser:
            other.click("#glmv-import")
        chooser.value.set_files(str(exported))
        other.wait_for_function(
            "() => document.querySelector('#glmv-system textarea')?.value === 'Answer in French.'", timeout=WAIT_MS
        )
        assert other.input_value("#glmv-temperature input[type=number]") == "0.3"
        assert "Imported" in other.inner_text("#glmv-notice") and other.inner_text("#glmv-error").strip() == ""
    finally:
        other.context.close()


def test_reload_while_an_answer_is_written_gives_the_question_back(page, ui_engine, picture_file):
    slow = ui_engine[2]
    page.fill("#glmv-max-new input[type=number]", "400")
    page.press("#glmv-max-new input[type=number]", "Enter")
    slow.delay_s = 0.1
    try:
        ask(page, "Keep this question", [str(picture_file)])
        page.wait_for_selector("#glmv-input .stop-button", timeout=WAIT_MS)
        page.wait_for_function("() => sessionStorage.getItem('glmv-chat') !== null", timeout=WAIT_MS)
        page.reload()
        page.wait_for_function(
            "() => document.querySelector('#glmv-input textarea')?.value === 'Keep this question'", timeout=WAIT_MS
        )
    finally:
        slow.delay_s = 0.0
    page.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)
    assert "no answer yet" in page.inner_text("#glmv-notice")
    assert user_texts(page) == []
    page.press("#glmv-input textarea", "Enter")
    chat = wait_turns(page, 2)
    assert chat["messages"][0]["text"] == "Keep this question"
    assert chat["messages"][0]["images"][0]["name"] == "shapes.png"


def test_user_text_shows_literally(page):
    fetched = []
    page.on("request", lambda request: fetched.append(request.url) if request.url.endswith("/x") else None)
    typed = '<img src=x onerror="window.__hit = 1"> **not bold** $5 and $6 a_b_c'
    ask(page, typed)
    wait_turns(page, 2)
    wait_idle(page)
    assert typed in user_texts(page)[0]
    assert page.locator("#glmv-chat img").count() == 0 and page.locator("#glmv-chat strong").count() == 0
    assert page.evaluate("() => window.__hit") is None and fetched == []
    with page.expect_download(timeout=WAIT_MS) as md_download:
        page.click("#glmv-export-md")
    from markdown_it import MarkdownIt

    html = MarkdownIt().render(open(md_download.value.path(), encoding="utf-8").read())
    assert "<img src" not in html and "&lt;img src=x" in html and "**not bold**" in html
    assert html.startswith("<h1>&lt;img src=x onerror=")  # the title is the literal text


def test_undo_then_resend_keeps_file_names_and_page_notes(page, tmp_path):
    path = tmp_path / "two-pages.pdf"
    make_picture(11, (300, 200)).save(path, format="PDF", save_all=True, append_images=[make_picture(12, (300, 200))])
    ask(page, "Compare the pages", [str(path)])
    first = wait_turns(page, 2)
    wait_idle(page)
    page.get_by_role("button", name="Undo").last.click()
    page.wait_for_function(
        "() => document.querySelector('#glmv-input textarea').value === 'Compare the pages'", timeout=WAIT_MS
    )
    page.press("#glmv-input textarea", "Enter")
    page.wait_for_function("() => sessionStorage.getItem('glmv-chat') === null", timeout=WAIT_MS)
    again = wait_turns(page, 2)
    wanted = [(i["name"], i["notes"]) for i in first["messages"][0]["images"]]
    assert wanted == [("two-pages-page1.png", ["PDF page 1 of 2"]), ("two-pages-page2.png", ["PDF page 2 of 2"])]
    assert [(i["name"], i["notes"]) for i in again["messages"][0]["images"]] == wanted
    sources = page.eval_on_selector_all("#glmv-chat img", "els => els.map(e => e.src)")
    assert [s.rsplit("/", 1)[-1] for s in sources] == [
        "two-pages-page1.png",
        "two-pages-page2.png",
    ]  # what Download saves
    assert page.locator("#glmv-chat button[aria-label='Share']:visible").count() == 0


def test_empty_chat_shows_a_placeholder_and_exporting_it_says_so(page):
    assert "Drop a screenshot or pick an example" in page.inner_text("#glmv-chat")
    page.click("#glmv-export-md")
    page.wait_for_function(
        "() => document.querySelector('#glmv-notice')?.innerText.includes('nothing to export')", timeout=WAIT_MS
    )
    assert page.inner_text("#glmv-error").strip() == ""


def test_the_error_line_is_red_in_dark_mode(browser, server):
    page = open_page(browser.new_context(locale="en-US", color_scheme="dark"), server.url)
    try:
        page.press("#glmv-input textarea", "Enter")  # nothing to send: an error
        page.wait_for_function(
            "() => document.querySelector('#glmv-error')?.innerText.includes('Type a question')", timeout=WAIT_MS
        )
        color = page.eval_on_selector("#glmv-error p", "e => getComputedStyle(e).color")
        red, green, blue = (int(part) for part in color[color.index("(") + 1 : color.index(")")].split(",")[:3])
        assert red >= 200 and green <= 160 and blue <= 160, color  # red, not the near-white of the theme
    finally:
        page.context.close()


def test_on_a_phone_the_input_is_above_the_fold_and_the_settings_closed(browser, server):
    real = server.state.backend
    server.state.backend = scripted = ScriptedBackend("fine", is_demo=True)  # the demo banner takes room too
    page = open_page(
        browser.new_context(locale="en-US", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True),
        server.url,
    )
    try:
        assert "Demo model" in page.inner_text("#glmv-status")
        box = page.locator("#glmv-input").bounding_box()
        assert box["y"] + box["height"] <= 844
        page.wait_for_selector("#glmv-system", state="hidden", timeout=WAIT_MS)
        page.get_by_text("Settings", exact=True).click()  # one tap opens them
        page.wait_for_selector("#glmv-system", state="visible", timeout=WAIT_MS)
    finally:
        server.state.backend = real
        scripted.shutdown()
        page.context.close()


def test_upload_limit_message_names_the_limit(page, tmp_path):
    big = tmp_path / "big.bmp"
    Image.new("RGB", (800, 800), "white").save(big)  # 1.9 MB, over the 1 MB limit of these tests
    page.set_input_files("#glmv-input input[type=file]", [str(big)])
    page.wait_for_function("() => document.body.innerText.includes('exceed the maximum allowed size')", timeout=WAIT_MS)
    assert "maximum allowed size of 1.0 Mb" in page.inner_text("body")


def test_typing_a_budget_below_the_slider_never_fails_on_the_server(page):
    failures = []
    page.on("response", lambda response: failures.append(response.url) if response.status >= 500 else None)
    page.fill("#glmv-budget input[type=number]", "10")
    page.press("#glmv-budget input[type=number]", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#glmv-cost')?.innerText.includes('up to 64 tokens')", timeout=WAIT_MS
    )
    ask(page, "And a question")
    wait_turns(page, 2)
    assert failures == []


def test_the_image_budget_is_capped_by_the_models_own_cap(page, server):
    real = server.state.backend
    scripted = ScriptedBackend("fine")
    scripted.info = replace(scripted.info, max_image_tokens=100)
    server.state.backend = scripted
    try:
        page.reload()
        page.wait_for_function(
            "() => document.querySelector('#glmv-budget')?.innerText.includes('at most 100 tokens')", timeout=WAIT_MS
        )
        assert page.get_attribute("#glmv-budget input[type=range]", "max") == "100"
        assert page.input_value("#glmv-budget input[type=number]") == "100"
    finally:
        server.state.backend = real
        scripted.shutdown()


def test_chinese_example_captions(browser, server):
    page = open_page(browser.new_context(locale="zh-CN"), server.url)
    try:
        page.wait_for_function(
            "() => document.querySelector('#glmv-examples')?.innerText.includes('星形是什么颜色')", timeout=WAIT_MS
        )
        assert "What color is the star?" not in page.inner_text("#glmv-examples")
    finally:
        page.context.close()


def test_example_thumbnails_are_whole_and_their_captions_readable_at_1400px(page):
    """Polish: thumbnails were cropped (object-fit cover), the third cut by the column's edge, and the
    captions cut to 'What colo…'."""
    items = page.evaluate("""() => {
      const gallery = document.querySelector('#glmv-examples').getBoundingClientRect();
      return [...document.querySelectorAll('#glmv-examples .thumbnail-item')].map(item => {
        const img = item.querySelector('img'), caption = item.querySelector('.caption-label');
        const box = item.getBoundingClientRect();
        return {fit: getComputedStyle(img).objectFit, inside: box.left >= gallery.left - 1 && box.right <= gallery.right + 1,
                captionCut: caption.scrollWidth > caption.clientWidth + 1, caption: caption.innerText};
      });
    }""")
    questions = {example["question"] for example in json.loads((EXAMPLES_DIR / "examples.json").read_text())}
    assert len(items) >= 3
    for item in items:
        assert item["fit"] == "contain", item
        assert item["inside"], item
        assert not item["captionCut"] and item["caption"] in questions, item
