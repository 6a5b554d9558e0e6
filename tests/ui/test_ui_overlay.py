"""Issue 15, the live overlay: an answer's boxes as elements over its picture in the chat (their geometry
compared with the picture's on screen), hover pairing with the answer's text, and the full-size viewer
(Chromium, scripted backend); the answer's marks as Markdown (no browser)."""

from __future__ import annotations

import pytest
from PIL import Image

from glm_vision.grounding import ImageSlot, find_groundings, resolve
from glm_vision.ui.boxes import answer_pictures
from glm_vision.ui.overlay import marked_answer, overlay_html

from .test_ui_boxes import boxed_chat
from .ui_support import WAIT_MS, ask, wait_idle, wait_turns

BOXES = [(100, 200, 400, 500), (500, 600, 900, 800)]  # ANSWER's boxes, 0-1000
CHAT_IMG = "#glmv-chat .glmv-shot-img"
CHAT_BOXES = "#glmv-chat .glmv-box"
MARKS = "#glmv-chat mark.glmv-mark"
TOLERANCE = 2  # px


def picture(tmp_path, width: int, height: int) -> str:
    path = tmp_path / f"screen-{width}x{height}.png"
    Image.new("RGB", (width, height), "white").save(path)
    return str(path)


def answered(page, path: str) -> None:
    ask(page, "Where are the buttons?", [path])
    wait_turns(page, 2)
    wait_idle(page)
    page.wait_for_selector(CHAT_BOXES, timeout=WAIT_MS)
    page.wait_for_function(f"() => document.querySelector('{CHAT_IMG}').complete", timeout=WAIT_MS)


def rect(page, selector: str, index: int = 0) -> dict:
    return page.locator(selector).nth(index).bounding_box()


def expected(image: dict, box: tuple[int, ...]) -> dict:
    x1, y1, x2, y2 = box
    return {
        "x": image["x"] + image["width"] * x1 / 1000,
        "y": image["y"] + image["height"] * y1 / 1000,
        "width": image["width"] * (x2 - x1) / 1000,
        "height": image["height"] * (y2 - y1) / 1000,
    }


def assert_near(actual: dict, wanted: dict) -> None:
    assert all(abs(actual[k] - wanted[k]) <= TOLERANCE for k in wanted), (actual, wanted)


def hot(page, selector: str, index: int) -> bool:
    return "glmv-hot" in page.locator(selector).nth(index).get_attribute("class").split()


def test_the_boxes_lie_over_the_picture_where_the_answer_put_them_and_pair_with_its_text(page, scripted, tmp_path):
    answered(page, picture(tmp_path, 600, 400))
    image = rect(page, CHAT_IMG)
    assert image["width"] > 100 and abs(image["width"] / image["height"] - 1.5) < 0.01  # the picture's aspect kept
    assert page.locator(CHAT_BOXES).count() == 2
    for index, box in enumerate(BOXES):
        assert_near(rect(page, CHAT_BOXES, index), expected(image, box))
    tags = page.locator("#glmv-chat .glmv-box .glmv-tag").all_inner_texts()
    assert tags == ["1 Submit", "2 Cancel"]
    assert page.locator(MARKS).all_inner_texts() == ["[100,200,400,500]", "[500,600,900,800]"]

    page.hover(f"{CHAT_BOXES} >> nth=0")
    assert hot(page, MARKS, 0) and not hot(page, MARKS, 1) and not hot(page, CHAT_BOXES, 1)
    page.hover(f"{MARKS} >> nth=1")
    assert hot(page, CHAT_BOXES, 1) and not hot(page, CHAT_BOXES, 0) and not hot(page, MARKS, 0)
    page.hover("#glmv-input textarea")
    assert page.locator("#glmv-chat .glmv-hot").count() == 0


def test_the_copy_buttons_copy_the_answer_without_the_overlay_markup(page, context, scripted, tmp_path):
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    answered(page, picture(tmp_path, 600, 400))
    answer = page.locator("#glmv-chat .message-row", has=page.locator("mark.glmv-mark"))
    answer.locator("xpath=following-sibling::*[1]").locator('button[aria-label="Copy message"]').click()
    assert clipboard(page, "Submit") == "Submit: **[100,200,400,500]**\nCancel: **[500,600,900,800]**"
    page.click('#glmv-chat button[aria-label="Copy conversation"]')
    copied = clipboard(page, "-boxes.png")  # the answer's picture as the address of the drawn copy
    assert "<mark" not in copied and "<div" not in copied
    assert copied.endswith("/screen-600x400-boxes.png") and "Cancel: **[500,600,900,800]**" in copied


def clipboard(page, awaited: str) -> str:
    page.wait_for_function(
        "async (t) => (await navigator.clipboard.readText()).includes(t)", arg=awaited, timeout=WAIT_MS
    )
    return page.evaluate("() => navigator.clipboard.readText()")


def test_the_viewer_shows_a_large_screenshot_whole_zooms_and_frames_a_box(page, scripted, tmp_path):
    answered(page, picture(tmp_path, 3000, 2000))
    page.click(CHAT_IMG)
    viewer = page.locator("#glmv-viewer")
    viewer.wait_for(timeout=WAIT_MS)
    view = rect(page, "#glmv-viewer .glmv-viewer-view")
    shown = rect(page, "#glmv-viewer .glmv-shot-img")
    fit = float(viewer.get_attribute("data-scale"))
    assert fit < 1 and abs(shown["width"] - 3000 * fit) <= TOLERANCE  # the whole picture fits the view
    assert view["x"] - 1 <= shown["x"] and shown["x"] + shown["width"] <= view["x"] + view["width"] + 1
    assert view["y"] - 1 <= shown["y"] and shown["y"] + shown["height"] <= view["y"] + view["height"] + 1
    for index, box in enumerate(BOXES):  # the boxes are drawn on it
        assert_near(rect(page, "#glmv-viewer .glmv-box", index), expected(shown, box))

    page.click("#glmv-viewer .glmv-viewer-in")
    assert float(viewer.get_attribute("data-scale")) == pytest.approx(fit * 1.5)
    page.mouse.move(view["x"] + 200, view["y"] + 200)
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"() => Number(document.querySelector('#glmv-viewer').dataset.scale) > {fit * 1.5 + 1e-6}")

    page.click("#glmv-viewer .glmv-viewer-item >> nth=1")  # box 2 from the list
    assert_framed(rect(page, "#glmv-viewer .glmv-box", 1), view)
    page.click("#glmv-viewer .glmv-viewer-fit")
    page.click("#glmv-viewer .glmv-box >> nth=0", position={"x": 5, "y": 5})  # box 1 on the picture
    assert_framed(rect(page, "#glmv-viewer .glmv-box", 0), view)

    page.keyboard.press("Escape")
    assert viewer.count() == 0


def assert_framed(box: dict, view: dict) -> None:
    """The box is centred in the view and fills 80 % of it in the direction that binds."""
    assert abs(box["x"] + box["width"] / 2 - (view["x"] + view["width"] / 2)) <= TOLERANCE
    assert abs(box["y"] + box["height"] / 2 - (view["y"] + view["height"] / 2)) <= TOLERANCE
    assert max(box["width"] / view["width"], box["height"] / view["height"]) == pytest.approx(0.8, abs=0.01)


def test_the_viewer_pans_by_dragging_and_clicking_a_box_in_the_chat_opens_it_on_that_box(page, scripted, tmp_path):
    answered(page, picture(tmp_path, 600, 400))
    page.click(f"{CHAT_BOXES} >> nth=1", position={"x": 3, "y": 3})
    page.locator("#glmv-viewer").wait_for(timeout=WAIT_MS)
    view = rect(page, "#glmv-viewer .glmv-viewer-view")
    assert_framed(rect(page, "#glmv-viewer .glmv-box", 1), view)
    before = rect(page, "#glmv-viewer .glmv-shot-img")
    page.mouse.move(view["x"] + 50, view["y"] + 50)
    page.mouse.down()
    page.mouse.move(view["x"] + 150, view["y"] + 90, steps=5)
    page.mouse.up()
    after = rect(page, "#glmv-viewer .glmv-shot-img")
    assert (after["x"] - before["x"], after["y"] - before["y"]) == pytest.approx((100, 40), abs=1)
    page.click("#glmv-viewer .glmv-viewer-close")
    assert page.locator("#glmv-viewer").count() == 0


# ------------------------------------------------------------------------------ marks (no browser)
def test_each_box_text_is_marked_inside_its_bold_highlight():
    chat = boxed_chat()
    (boxed,) = answer_pictures(chat, 1)
    assert marked_answer(chat.turns[1].text, boxed.annotations, 1) == (
        'Submit: **<mark class="glmv-mark glmv-pair-1-1">[100,200,400,500]</mark>**\n'
        'Cancel: **<mark class="glmv-mark glmv-pair-1-2">[500,600,900,800]</mark>**'
    )


@pytest.mark.parametrize(
    ("answer", "marked"),
    [
        (
            "The button [10,20,30,40] is here.",
            'The button <mark class="glmv-mark glmv-pair-1-1">[10,20,30,40]</mark> is here.',
        ),
        ('```json\n[{"bbox_2d": [10,20,30,40], "label": "a"}]\n```', None),  # in code: left as is
        (
            "Tap <|begin_of_box|>[5,5]<|end_of_box|> then",
            'Tap **<mark class="glmv-mark glmv-pair-1-1">[5,5]</mark>** then',
        ),
    ],
)
def test_marks_go_only_where_the_markdown_stays_intact(answer, marked):
    annotations = resolve(find_groundings(answer), [ImageSlot(0, 100, 100)])
    assert len(annotations) == 1
    assert marked_answer(answer, annotations, 1) == (marked or answer)


def test_labels_and_names_are_text_in_the_overlay_never_markup():
    chat = boxed_chat()
    chat.turns[0].images[0].name = 'a"><img src=x onerror=alert(1)>.png'
    chat.turns[1].text = '{"label": "<script>x</script>\\"><b>", "bbox_2d": [100,200,400,500]}'
    (boxed,) = answer_pictures(chat, 1)
    assert boxed.annotations[0].label.startswith("<script>")
    html = overlay_html(boxed, 1, "/tmp/dir/a b&c.png", "/tmp/dir/d.png")
    assert "<script" not in html and "<img src=x" not in html and '"><b>' not in html
    assert 'src="gradio_api/file=/tmp/dir/a%20b%26c.png"' in html
    assert html.count("<img ") == 1 and html.count("<div") == 2 and html.count("</div>") == 2
