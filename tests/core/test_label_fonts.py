"""Labels drawn on pictures (annotate.py, used by the UI, the exports and batch --annotate): a label the
bundled font cannot draw (Chinese) takes a system font that has its glyphs, or is left out (number only),
never drawn as squares."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from glm_vision import fonts
from glm_vision.annotate import draw_annotations, drawn_tag
from glm_vision.conversation import BOX_CLOSE, BOX_OPEN, Message
from glm_vision.grounding import annotate_answer
from glm_vision.images import load_image

SERIF = str(fonts.BUNDLED.with_name("DejaVuSerif-Bold.ttf"))  # has "Ǆ" (U+01C4), which the bundled Mono lacks


@pytest.fixture
def picture():
    return load_image(Image.new("RGB", (800, 600), "white"))


def labelled(picture, label: str):
    (annotation,) = annotate_answer(
        f"{label}: {BOX_OPEN}[100,300,500,600]{BOX_CLOSE}", [Message("user", "", [picture])]
    )
    return annotation


@pytest.fixture
def no_cjk_font(monkeypatch):
    monkeypatch.setattr(fonts, "cjk_font_path", lambda: None)


def test_the_bundled_font_covers_latin_labels_but_not_chinese():
    font = fonts.label_font("1 Submit", 20)
    assert font is not None and fonts.covers(font, "1 Submit, é")
    assert not fonts.covers(font, "提交") and not fonts.covers(font, "1 提交")


def test_a_chinese_label_without_a_cjk_font_is_drawn_as_its_number_alone(picture, no_cjk_font):
    chinese = labelled(picture, "提交按钮")
    assert chinese.label == "提交按钮"
    text, _ = drawn_tag(chinese, 20)
    assert text == "1"
    # pixel for pixel the picture of the same box without a label: no squares anywhere
    unlabelled = replace(chinese, label="")
    assert (
        draw_annotations(picture.image, [chinese]).tobytes() == draw_annotations(picture.image, [unlabelled]).tobytes()
    )


def test_a_latin_label_is_drawn_whole(picture, no_cjk_font):
    text, _ = drawn_tag(labelled(picture, "Submit"), 20)
    assert text == "1 Submit"


def test_a_label_the_bundled_font_lacks_is_drawn_whole_with_a_system_font_that_has_it(picture, monkeypatch):
    monkeypatch.setattr(fonts, "cjk_font_path", lambda: SERIF)
    text, font = drawn_tag(labelled(picture, "Ǆ"), 20)
    assert text == "1 Ǆ" and font.path == SERIF
    with_label = draw_annotations(picture.image, [labelled(picture, "Ǆ")])
    assert with_label.tobytes() != draw_annotations(picture.image, [labelled(picture, "")]).tobytes()


def test_a_system_font_without_chinese_glyphs_is_not_taken_for_a_cjk_font(monkeypatch):
    # fontconfig answers `:lang=zh` with its best font even when it has no Chinese (DejaVu on a bare Debian)
    monkeypatch.setattr(fonts, "_fontconfig_zh", lambda: str(fonts.BUNDLED))
    monkeypatch.setattr(fonts, "CJK_CANDIDATES", (SERIF, "/nonexistent/font.ttc"))
    fonts.cjk_font_path.cache_clear()
    try:
        assert fonts.cjk_font_path() is None
    finally:
        fonts.cjk_font_path.cache_clear()
