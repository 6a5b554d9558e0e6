"""Issue 15, the UI half: GLM's boxes drawn on the picture in the chat (Chromium, scripted backend)."""

from __future__ import annotations

import base64
import io
import json
import re
from urllib.parse import unquote

import pytest
from PIL import Image

from glm_vision.annotate import colour
from glm_vision.images import load_image
from glm_vision.ui.chat_json import from_json, to_json
from glm_vision.ui.render import chat_messages
from glm_vision.ui.transcript import ChatImage, Transcript, Turn, to_markdown
from tests.doubles import ScriptedBackend

from .conftest import BOXES_ANSWER
from .ui_support import WAIT_MS, ask, wait_idle, wait_turns

ANSWER = BOXES_ANSWER
BOT_IMAGES = "#glmv-chat .message.bot img"
OVERLAY = "#glmv-chat .glmv-box, #glmv-chat mark.glmv-mark"


@pytest.fixture
def screenshot(tmp_path):
    path = tmp_path / "screen.png"
    Image.new("RGB", (600, 400), "white").save(path)
    return path


def served_image(page, selector: str, index: int = -1, attribute: str = "src") -> Image.Image:
    data = page.evaluate(
        """async ([sel, i, attr]) => { const all = [...document.querySelectorAll(sel)];
        const r = await fetch(all.at(i)[attr]); const b = new Uint8Array(await r.arrayBuffer());
        let s = ''; for (const c of b) s += String.fromCharCode(c); return btoa(s); }""",
        [selector, index, attribute],
    )
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def test_an_answer_with_two_boxes_shows_its_picture_with_a_link_to_the_copy_with_them_drawn(page, scripted, screenshot):
    ask(page, "Where are the buttons?", [str(screenshot)])
    wait_turns(page, 2)
    wait_idle(page)
    page.wait_for_selector(BOT_IMAGES, timeout=WAIT_MS)
    assert page.locator(BOT_IMAGES).count() == 1
    shown = served_image(page, BOT_IMAGES)  # under the overlay (test_ui_overlay.py): the picture itself
    assert shown.size == (600, 400) and shown.getpixel((60, 140)) == (255, 255, 255)
    drawn = served_image(page, "#glmv-chat .glmv-shot-drawn", attribute="href")
    assert page.get_attribute("#glmv-chat .glmv-shot-drawn", "download") == "screen-boxes.png"
    assert drawn.size == (600, 400)  # the original's pixels, not the model's resized input
    # box 1 [100,200,400,500] -> pixels (60, 80, 240, 200); box 2 [500,600,900,800] -> (300, 240, 540, 320)
    first, second = rgb(colour(1)), rgb(colour(2))
    assert drawn.getpixel((60, 140)) == first and drawn.getpixel((239, 140)) == first  # left and right edges
    assert drawn.getpixel((150, 199)) == first  # bottom edge
    assert drawn.getpixel((300, 280)) == second and drawn.getpixel((539, 280)) == second
    assert drawn.getpixel((420, 319)) == second  # bottom edge of box 2
    assert drawn.getpixel((150, 140)) == (255, 255, 255)  # inside: untouched
    assert drawn.getpixel((10, 390)) == (255, 255, 255)


def test_an_answer_without_boxes_adds_no_picture(page, server, screenshot):
    real = server.state.backend
    server.state.backend = ScriptedBackend("Two buttons, no coordinates.", is_demo=True)
    try:
        ask(page, "What is there?", [str(screenshot)])
        wait_turns(page, 2)
        wait_idle(page)
        assert page.locator(BOT_IMAGES).count() == 0
    finally:
        server.state.backend = real


def boxed_chat() -> Transcript:
    picture = load_image(Image.new("RGB", (600, 400), "white"))
    return Transcript(
        [
            Turn("user", "Where are the buttons?", [ChatImage(picture, "screen.png")]),
            Turn("assistant", "".join(ANSWER), finish_reason="stop"),
        ]
    )


def check_drawn(drawn: Image.Image) -> None:
    assert drawn.size == (600, 400)
    assert drawn.getpixel((60, 140)) == rgb(colour(1)) and drawn.getpixel((539, 280)) == rgb(colour(2))
    assert drawn.getpixel((150, 140)) == (255, 255, 255)


def test_the_exports_carry_the_picture_with_its_boxes():
    chat = boxed_chat()
    markdown = to_markdown(chat)
    images = re.findall(r"!\[([^\]]*)\]\(data:image/png;base64,([^)]+)\)", markdown)
    assert [alt for alt, _ in images] == ["screen.png", "screen: 1 Submit, 2 Cancel"]
    assert markdown.index("Cancel") < markdown.index("screen: 1 Submit")  # after the answer's text
    check_drawn(Image.open(io.BytesIO(base64.b64decode(images[1][1]))).convert("RGB"))

    body = json.loads(to_json(chat))
    answer = body["messages"][1]
    assert [(a["label"], a["pixels"]) for a in answer["annotations"]] == [
        ("Submit", [60, 80, 240, 200]),
        ("Cancel", [300, 240, 540, 320]),
    ]
    (drawn,) = answer["annotated_images"]
    assert (drawn["name"], drawn["image_index"]) == ("screen.png", 0)
    check_drawn(Image.open(io.BytesIO(base64.b64decode(drawn["data"]))).convert("RGB"))
    restored, _ = from_json(json.dumps(body))  # the derived fields do not disturb an import
    assert [t.text for t in restored.turns] == [t.text for t in chat.turns]


def test_exports_of_an_answer_without_boxes_add_nothing():
    chat = boxed_chat()
    chat.turns[1].text = "No coordinates here."
    assert to_markdown(chat).count("data:image/png") == 1
    assert "annotations" not in json.loads(to_json(chat))["messages"][1]


def test_the_show_boxes_setting_hides_and_shows_the_drawn_picture(page, scripted, screenshot):
    ask(page, "Where are the buttons?", [str(screenshot)])
    wait_turns(page, 2)
    wait_idle(page)
    page.wait_for_selector(BOT_IMAGES, timeout=WAIT_MS)
    toggle = page.locator("#glmv-show-boxes input[type=checkbox]")
    assert toggle.is_checked()
    assert page.locator(OVERLAY).count() == 4  # two boxes, two marked texts
    toggle.uncheck()
    page.wait_for_function(f"() => !document.querySelector('{BOT_IMAGES}')", timeout=WAIT_MS)
    assert page.locator(OVERLAY).count() == 0
    assert "Cancel" in page.inner_text("#glmv-chat")  # the answer's text stays
    ask(page, "And again?")  # a new answer keeps to the setting
    wait_turns(page, 4)
    wait_idle(page)
    assert page.locator(BOT_IMAGES).count() == 0
    toggle.check()
    page.wait_for_function(f"() => document.querySelectorAll('{BOT_IMAGES}').length === 2", timeout=WAIT_MS)
    assert page.locator(OVERLAY).count() == 8


def test_the_markdown_export_from_the_browser_shows_the_boxes(page, scripted, screenshot):
    ask(page, "Where are the buttons?", [str(screenshot)])
    wait_turns(page, 2)
    wait_idle(page)
    with page.expect_download(timeout=WAIT_MS) as download:
        page.click("#glmv-export-md")
    markdown = open(download.value.path(), encoding="utf-8").read()
    images = re.findall(r"!\[([^\]]*)\]\(data:image/png;base64,([^)]+)\)", markdown)
    assert [alt for alt, _ in images] == ["screen.png", "screen: 1 Submit, 2 Cancel"]
    check_drawn(Image.open(io.BytesIO(base64.b64decode(images[1][1]))).convert("RGB"))


def test_the_drawn_picture_has_its_own_slot_so_edits_still_find_their_turn():
    chat = boxed_chat()
    messages, slots = chat_messages(chat, "en")
    assert [(s.turn, s.part) for s in slots] == [(0, "image"), (0, "text"), (1, "answer"), (1, "boxes")]
    overlay = messages[-1]["content"]
    assert overlay.startswith('<div class="glmv-shot"') and "\n" not in overlay  # one HTML block
    (drawn,) = re.findall(r'class="glmv-shot-drawn" href="gradio_api/file=([^"]+)"', overlay)
    check_drawn(Image.open(unquote(drawn)).convert("RGB"))
    _, hidden = chat_messages(chat, "en", boxes=False)
    assert [(s.turn, s.part) for s in hidden] == [(0, "image"), (0, "text"), (1, "answer")]
    _, writing = chat_messages(chat, "en", ("", "Submit: [1,2,3,4]"), pending=True)
    assert [s.part for s in writing].count("boxes") == 1  # not for the answer still being written
