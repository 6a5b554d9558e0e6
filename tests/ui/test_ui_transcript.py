"""The UI's transcript (JSON/Markdown export and import), display mapping, costs and saved settings."""

from __future__ import annotations

import base64
import json

import pytest

from glm_vision.images import ImageError, load_image
from glm_vision.settings import Settings
from glm_vision.ui.chat_json import from_json, to_json
from glm_vision.ui.controls import default_controls
from glm_vision.ui.cost import estimate_image_tokens
from glm_vision.ui.examples import load_examples
from glm_vision.ui.prefs import saved_controls
from glm_vision.ui.render import chat_messages
from glm_vision.ui.transcript import ChatImage, Transcript, Turn, render_boxes, safe_name, to_markdown
from tests.conftest import make_picture


def sample() -> Transcript:
    image = load_image(make_picture(5))
    return Transcript(
        [
            Turn("user", "What is this?", [ChatImage(image, "shot one.png")]),
            Turn(
                "assistant",
                "It is <|begin_of_box|>a circle<|end_of_box|>.",
                reasoning="I see a round shape.",
                finish_reason="stop",
                usage={"prompt_tokens": 10},
            ),
            Turn("user", "And now?"),
            Turn("assistant", "Stopped half", finish_reason="cancelled"),
        ]
    )


def test_json_round_trip_keeps_pixels_text_and_reasoning():
    original = sample()
    restored, _ = from_json(to_json(original, settings={"temperature": 0.5}))
    assert [(t.role, t.text, t.reasoning, t.finish_reason) for t in restored.turns] == [
        (t.role, t.text, t.reasoning, t.finish_reason) for t in original.turns
    ]
    assert restored.turns[0].images[0].digest == original.turns[0].images[0].digest
    assert restored.turns[0].images[0].name == "shot one.png".replace(" ", "-")


def test_engine_messages_leave_out_reasoning_and_add_the_system_prompt():
    messages = sample().engine_messages("Be brief.")
    assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[2].text == "It is <|begin_of_box|>a circle<|end_of_box|>."  # raw answer: the cached prefix matches
    assert all(m.reasoning == "" for m in messages)
    assert len(messages[1].images) == 1


def test_markdown_export_stands_alone():
    text = to_markdown(sample(), model="tiny")
    assert text.startswith("# What is this?")
    assert "](data:image/png;base64," in text
    assert "**a circle**" in text and "begin_of_box" not in text
    assert "<summary>Reasoning</summary>" in text and "_(stopped)_" in text


@pytest.mark.parametrize(
    "body, message",
    [
        ("not json", "not valid JSON"),
        ('{"format": "other", "messages": []}', "not a glm-vision chat export"),
        ('{"format": "glm-vision-chat", "messages": [{"role": "robot"}]}', "no valid role"),
        (
            '{"format": "glm-vision-chat", "messages": [{"role": "user", "text": "x", "images": [{"data": "@@@"}]}]}',
            "not valid base64",
        ),
    ],
)
def test_import_refuses_bad_files_with_a_clear_message(body, message):
    with pytest.raises(ImageError, match=message):
        from_json(body)


def test_import_checks_embedded_images_like_uploads():
    body = json.loads(to_json(sample()))
    body["messages"][0]["images"][0]["data"] = base64.b64encode(b"GIF89a broken").decode()
    with pytest.raises(ImageError, match="message 1, image 1"):
        from_json(json.dumps(body))
    with pytest.raises(ImageError, match="at most 0 are accepted"):
        from_json(to_json(sample()), max_images_per_message=0)


def test_display_maps_every_message_back_to_its_turn():
    messages, slots = chat_messages(sample(), "en")
    assert [(s.turn, s.part) for s in slots] == [
        (0, "image"),
        (0, "text"),
        (1, "reasoning"),
        (1, "answer"),
        (2, "text"),
        (3, "answer"),
    ]
    assert messages[2]["metadata"]["title"] == "Reasoning"
    assert messages[3]["content"] == "It is **a circle**."
    assert messages[5]["content"].endswith("_⏹_")
    partial, slots = chat_messages(sample(), "zh", ("thinking", ""), pending=True)
    assert partial[-1]["metadata"] == {"title": "推理过程", "status": "pending"}


def test_render_boxes_and_safe_names():
    assert render_boxes("a <|begin_of_box|> 7 <|end_of_box|> b <|begin_of_box|>cut") == "a **7** b cut"
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("my shot (1).png") == "my-shot-1-.png"
    assert safe_name("...") == "file"
    assert safe_name("截图.png") == "png"


def test_image_token_estimate_matches_the_model_for_known_sizes():
    assert estimate_image_tokens(1920, 1080, 6144) == 2691
    assert estimate_image_tokens(1024, 768, 6144) == 999
    assert estimate_image_tokens(1920, 1080, 256) <= 256


def test_saved_settings_are_range_checked():
    settings = Settings()
    defaults = default_controls(settings)
    assert (defaults.temperature, defaults.top_p, defaults.top_k, defaults.repetition_penalty) == (0.8, 0.6, 2, 1.1)
    good = saved_controls(
        json.dumps({"temperature": 0.3, "top_k": 5, "system_prompt": "hi", "thinking": False}), defaults, settings
    )
    assert (good.temperature, good.top_k, good.system_prompt, good.thinking) == (0.3, 5, "hi", False)
    bad = saved_controls(
        json.dumps({"temperature": 9, "top_k": "x", "image_tokens": 10**9, "thinking": "yes"}), defaults, settings
    )
    assert (bad.temperature, bad.top_k, bad.image_tokens, bad.thinking) == (0.8, 2, settings.max_image_tokens, True)
    assert saved_controls("{broken", defaults, settings) == defaults


def test_example_gallery_files_exist_and_have_both_languages():
    examples = load_examples()
    assert len(examples) >= 3  # only pictures the demo model answers correctly (tests/test_examples.py)
    for item in examples:
        assert load_image(item["image"]).size[0] > 0
        assert item["question"].strip() and item["question_zh"].strip()


def test_user_text_is_shown_literally_and_an_edit_gives_back_what_was_typed():
    from glm_vision.images import InputImage
    from glm_vision.ui.markdown import literal, unliteral
    from glm_vision.ui.render import typed_text, user_text

    typed = "<b>hi</b> **x** $5 and $6 a_b `c` [l](u) # h \\ &amp; &#36;"
    assert unliteral(literal(typed)) == typed
    page = load_image(make_picture(1))
    turn = Turn("user", typed, [ChatImage(InputImage(page.image, page.digest, ("PDF page 1 of 2",)), "doc-page1.png")])
    shown = user_text(turn, "en")
    assert shown.endswith("_Note: PDF page 1 of 2_") and "<b>" not in shown
    assert typed_text(shown, turn, "en") == typed  # the Edit box holds `shown`, unchanged
    assert typed_text(shown.replace("hi", "bye"), turn, "en") == typed.replace("hi", "bye")


def test_markdown_export_carries_the_settings_and_literal_user_text():
    transcript = Transcript([Turn("user", "<img src=x> *a*"), Turn("assistant", "ok")])
    text = to_markdown(transcript, settings={"system_prompt": "Be <b>brief</b>.", "temperature": 0.3})
    assert text.startswith("# \\<img src=x\\> \\*a\\*")
    assert "Be \\<b\\>brief\\</b\\>." in text and "temperature 0.3" in text
