"""Pictures and files into the chat in a real browser (Chromium): by the file chooser (that test also
watches the answer stream in and the status line), drag and drop, paste, a PDF's pages, the example
gallery; a damaged file refused with the message given back, and too many pictures refused before
sending. On the shared engine, server and browser of conftest.py (the tiny checkpoint: its answers
are gibberish)."""

from __future__ import annotations

import base64

from glm_vision.images import load_image
from tests.conftest import make_picture

from .ui_support import WAIT_MS, ask, saved_chat, user_texts, wait_turns


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


def give_png(page, picture_file, name: str, how: str) -> None:
    """The picture handed to the input box as a browser would: dropped on it (`how="drop"`) or pasted."""
    page.evaluate(
        """([b64, name, how]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: 'image/png'}));
        const target = document.querySelector('#glmv-input textarea');
        if (how === 'drop') {
            for (const type of ['dragenter', 'dragover', 'drop'])
                target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
        } else {
            target.focus();
            target.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
        }
    }""",
        [base64.b64encode(picture_file.read_bytes()).decode(), name, how],
    )
    page.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)


def test_drag_and_drop_upload(page, picture_file):
    give_png(page, picture_file, "dropped.png", "drop")
    page.fill("#glmv-input textarea", "Describe the dropped picture")
    page.keyboard.press("Enter")
    chat = wait_turns(page, 2)
    assert chat["messages"][0]["images"][0]["name"] == "dropped.png"
    expected = load_image(picture_file).digest
    assert chat["messages"][0]["images"][0]["digest"] == expected


def test_paste_image_from_clipboard(page, picture_file):
    give_png(page, picture_file, "pasted.png", "paste")
    ask(page, "What was pasted?")
    chat = wait_turns(page, 2)
    assert len(chat["messages"][0]["images"]) == 1
    assert chat["messages"][0]["images"][0]["name"] == "pasted.png"


def test_pdf_pages_become_images(page, tmp_path):
    path = tmp_path / "two-pages.pdf"
    first, second = make_picture(11, (300, 200)), make_picture(12, (300, 200))
    first.save(path, format="PDF", save_all=True, append_images=[second])
    ask(page, "Compare the pages", [str(path)])
    chat = wait_turns(page, 2)
    names = [img["name"] for img in chat["messages"][0]["images"]]
    assert names == ["two-pages-page1.png", "two-pages-page2.png"]
    assert page.locator("#glmv-chat img").count() >= 2


def test_example_gallery_fills_the_input(page):
    page.locator("#glmv-examples img").first.click()
    page.wait_for_selector("#glmv-input .thumbnail-item", timeout=WAIT_MS)
    assert page.input_value("#glmv-input textarea").endswith("?")


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
