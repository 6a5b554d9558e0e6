"""The grounding parser (every format the GLM family writes, malformed ones included), the choice of
image, the 0-1000 -> pixel conversion against hand-computed values, streaming, and the drawing."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from glm_vision.annotate import colour, draw_annotations
from glm_vision.conversation import Message, split_output
from glm_vision.grounding import (
    GroundingStream,
    ImageSlot,
    annotate_answer,
    find_groundings,
    reply_images,
    resolve,
    to_pixels,
)
from glm_vision.images import load_image

B, E = "<|begin_of_box|>", "<|end_of_box|>"


def parse(output: str):
    """(kind, coords, label, image_ref) of each grounding; spans checked against the displayed answer."""
    parsed = split_output(output)
    found = find_groundings(parsed.raw_answer)
    for g in found:
        assert parsed.answer[g.span[0] : g.span[1]] == g.text
    return [(g.kind, g.coords, g.label, g.image_ref) for g in found]


def box(*coords, label="", ref=None):
    return ("box", tuple(coords), label, ref)


def point(*coords, label="", ref=None):
    return ("point", tuple(coords), label, ref)


# ---------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    "output, expected",
    [
        # single box, in the bracket styles the GLM-V README lists ([], [[]], (), <>) and spacing variants
        (f"{B}[[100,200,300,400]]{E}", [box(100, 200, 300, 400)]),
        (f"{B}[100, 200, 300, 400]{E}", [box(100, 200, 300, 400)]),
        (f"{B}( 100 , 200 , 300 , 400 ){E}", [box(100, 200, 300, 400)]),
        (f"{B}<100,200,300,400>{E}", [box(100, 200, 300, 400)]),
        (f"{B}[100 200 300 400]{E}", [box(100, 200, 300, 400)]),
        (f"{B}【100，200，300，400】{E}", [box(100, 200, 300, 400)]),
        (f"{B}100,200,300,400{E}", [box(100, 200, 300, 400)]),
        (f"{B}[[100.5,200,300,400.25]]{E}", [box(100.5, 200, 300, 400.25)]),
        # a list of boxes, in one marker pair or several
        (f"{B}[[1,2,3,4],[5,6,7,8]]{E}", [box(1, 2, 3, 4), box(5, 6, 7, 8)]),
        (f"Cats: {B}[[1,2,3,4]]{E} and {B}[[5,6,7,8]]{E}.", [box(1, 2, 3, 4, label="Cats"), box(5, 6, 7, 8)]),
        # points
        (f"{B}[505,955]{E}", [point(505, 955)]),
        (f"{B}[[505, 955]]{E}", [point(505, 955)]),
        (f"{B}(505,955){E}", [point(505, 955)]),
        # without box markers (an upstream that skips special tokens drops them)
        ("The Submit button is at [[120,340,560,780]].", [box(120, 340, 560, 780)]),
        ("Submit button: [120, 340, 560, 780]", [box(120, 340, 560, 780, label="Submit button")]),
        ("Tap [505, 955] to continue.", [point(505, 955)]),
        ("- **关闭按钮**：[[900,20,980,80]]", [box(900, 20, 980, 80, label="关闭按钮")]),
        # JSON objects with bbox_2d / point_2d and label, in a fence or not, with or without markers
        (
            '```json\n[{"label": "error dialog", "bbox_2d": [10, 20, 30, 40]},\n {"label": "OK", "bbox_2d": [50,60,70,80]}]\n```',
            [box(10, 20, 30, 40, label="error dialog"), box(50, 60, 70, 80, label="OK")],
        ),
        (f'{B}[{{"bbox_2d": [1,2,3,4], "label": "cat"}}]{E}', [box(1, 2, 3, 4, label="cat")]),
        ("{'label': 'icon', 'point_2d': [500, 500]}", [point(500, 500, label="icon")]),
        (
            '{"label": "two", "bbox_2d": [[1,2,3,4],[5,6,7,8]]}',
            [box(1, 2, 3, 4, label="two"), box(5, 6, 7, 8, label="two")],
        ),
        ('{"label": "s", "bbox_2d": "[1, 2, 3, 4]"}', [box(1, 2, 3, 4, label="s")]),
        ('{"objects": [{"label": "a", "bbox_2d": [1,2,3,4]}]}', [box(1, 2, 3, 4, label="a")]),
        ('{label: "loose", "bbox_2d": [1,2,3,4],}', [box(1, 2, 3, 4, label="loose")]),
        # clamped to 0-1000 and corners put in order
        (f"{B}[[-20, 500, 1040, 1100]]{E}", [box(0, 500, 1000, 1000)]),
        (f"{B}[[300,400,100,200]]{E}", [box(100, 200, 300, 400)]),
        (f"{B}[1200, -5]{E}", [point(1000, 0)]),
        # reasoning is not the answer: its draft boxes are not drawn
        (f"<think>maybe [[1,2,3,4]]</think>Here: {B}[[9,9,10,10]]{E}", [box(9, 9, 10, 10, label="Here")]),
    ],
)
def test_formats(output, expected):
    assert parse(output) == expected


@pytest.mark.parametrize(
    "output",
    [
        "",
        "No boxes here.",
        f"{B}{E}",
        f"{B}",
        f"{E}[[",
        f"{B}[1,2,3]{E}",  # three numbers
        f"{B}[1,2,3,4,5]{E}",  # five
        f"{B}[[1,2,3,",
        "[[[[[[[[",
        "]]]]}}}}{{{{",
        '{"bbox_2d": [1, 2, "x", 4], "label": "bad"}',
        '{"bbox_2d": [1, 2, 3], "label": "short"}',
        '{"bbox_2d": null}',
        '{"bbox_2d": [true, false, 1, 2]}',
        '[{"bbox_2d": [5,6',  # cut off by max_tokens
        "code: `[1, 2, 3, 4]`",
        "```python\nxs = [1, 2, 3, 4]\n```",
        "the interval $[0, 1]$",
        "a tuple (1, 2) in prose and <3, 4>",
        "decimals in prose [0.5, 0.25]",
        '{"size": [10, 20], "margin": [1, 2, 3, 4]}',
        "1e309 " * 3 + f"{B}[1e309, 2, 3, 4]{E}",
        "\x00\ufffd<|begin_of_box|>\x00[NaN, 1, 2, 3]<|end_of_box|>",
    ],
)
def test_malformed_or_not_grounding_draws_nothing(output):
    assert parse(output) == []


def test_truncated_json_keeps_the_complete_objects():
    assert parse('[{"bbox_2d": [1,2,3,4], "label": "a"}, {"bbox_2d": [5,6') == [box(1, 2, 3, 4, label="a")]


def test_random_text_never_raises():
    rng = random.Random(7)
    alphabet = list("[](){}<>,:0123456789 -.\"'\n`$abc图第张") + [B, E, "bbox_2d", "point_2d", "label", "```"]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        for g in find_groundings(text):
            assert all(0 <= v <= 1000 for v in g.coords) and len(g.coords) in (2, 4)


# ---------------------------------------------------------------------------------- which image
def test_the_answer_names_the_image():
    output = (
        "Image 2: the button [[1,2,3,4]]\n\n**Image 1**\n- OK: [5,6,7,8]\n"
        f'第3张图中 {B}[9,9,10,10]{E}\n{{"image": 2, "label": "x", "point_2d": [1, 1]}}'
    )
    assert [g[3] for g in parse(output)] == [2, 1, 3, 2]


def test_reply_images_are_the_last_turns_images():
    red, blue, green = (
        load_image(Image.new("RGB", size, c))
        for size, c in [((1920, 1080), "red"), ((1080, 2400), "blue"), ((640, 480), "green")]
    )
    messages = [
        Message("user", "first", [red]),
        Message("assistant", "ok"),
        Message("user", "now these", [blue, green]),
    ]
    assert reply_images(messages) == [ImageSlot(1, 1080, 2400), ImageSlot(2, 640, 480)]
    # a follow-up without an image: every image of the conversation, the last one by default
    follow = messages + [Message("assistant", "seen"), Message("user", "where is the close button?")]
    assert [s.index for s in reply_images(follow)] == [0, 1, 2]
    # a tool's screenshot is the turn answered
    tool = messages + [Message("assistant", "calling"), Message("tool", "shot", [red], tool_call_id="c")]
    assert reply_images(tool) == [ImageSlot(3, 1920, 1080)]
    # default: the last image of the turn; "image 1" names the first of the turn; out of range -> default
    annotations = annotate_answer(f"{B}[[0,0,500,500]]{E} image 1: [[0,0,1000,1000]] image 7: [1,1]", messages)
    assert [(a.number, a.image_index, a.image_size) for a in annotations] == [
        (1, 2, (640, 480)),
        (2, 1, (1080, 2400)),
        (3, 2, (640, 480)),
    ]
    assert annotate_answer(f"{B}[[0,0,5,5]]{E}", [Message("user", "no image")]) == []


# ---------------------------------------------------------------------------------- pixels
def test_pixels_of_a_1920x1080_screenshot():
    # x * 1920 / 1000 and y * 1080 / 1000, rounded half up
    assert to_pixels("box", (100, 200, 300, 400), 1920, 1080) == (192, 216, 576, 432)
    assert to_pixels("box", (333, 667, 999, 1000), 1920, 1080) == (639, 720, 1918, 1080)  # 639.36, 720.36, 1918.08
    assert to_pixels("box", (0, 0, 1000, 1000), 1920, 1080) == (0, 0, 1920, 1080)
    assert to_pixels("point", (500, 500), 1920, 1080) == (960, 540)
    assert to_pixels("point", (1000, 1000), 1920, 1080) == (1919, 1079)  # a point is a pixel of the image


def test_pixels_of_a_1080x2400_phone_screenshot():
    assert to_pixels("box", (250, 100, 750, 150), 1080, 2400) == (270, 240, 810, 360)
    assert to_pixels("box", (41, 905, 959, 962), 1080, 2400) == (44, 2172, 1036, 2309)  # 44.28, 2172, 1035.72, 2308.8
    assert to_pixels("point", (505, 955), 1080, 2400) == (545, 2292)  # 545.4, 2292


def test_resolve_uses_the_original_size():
    image = load_image(Image.new("RGB", (1080, 2400), "white"))
    (annotation,) = resolve(
        find_groundings(f"Send: {B}[[250,100,750,150]]{E}"), reply_images([Message("user", "", [image])])
    )
    assert annotation.to_json() == {
        "type": "box",
        "label": "Send",
        "image_index": 0,
        "coords": [250, 100, 750, 150],
        "pixels": [270, 240, 810, 360],
        "image_size": [1080, 2400],
        "span": [6, 25],
        "text": "[[250,100,750,150]]",
    }


# ---------------------------------------------------------------------------------- streaming
STREAMED = (
    "<think>I look for [[1,2,3,4]] first.</think>\nImage 1, the OK button: "
    + B
    + "[[100,200,300,400]]"
    + E
    + '\n```json\n[\n  {"label": "close", "bbox_2d": [900, 20, 980, 80]},\n  {"label": "tap", '
    '"point_2d": [505, 955]}\n]\n```\nAnd here ' + B + "(10,20,30,40)" + E + " too.\n\n**Image 2**\n\n"
    "- A: [[1,2,3,4]]\n```python\nxs = [1, 2, 3, 4]\n```\nB: [5, 6]\n"
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 50, len(STREAMED)])
def test_stream_equals_complete_parse_in_any_chunking(chunk):
    stream = GroundingStream()
    seen = []
    for i in range(0, len(STREAMED), chunk):
        seen.extend(stream.feed(STREAMED[i : i + chunk]))
    seen.extend(stream.flush())
    complete = find_groundings(split_output(STREAMED).raw_answer)
    assert seen == complete == stream.groundings
    assert [(g.kind, g.label, g.image_ref) for g in complete] == [
        ("box", "the OK button", 1),
        ("box", "close", 1),
        ("point", "tap", 1),
        ("box", "", 1),
        ("box", "A", 2),
        ("point", "B", 2),
    ]


def test_stream_reports_a_box_once_its_line_is_complete():
    stream = GroundingStream()
    assert stream.feed("Close: " + B + "[[900,20,980") == []
    assert stream.feed(",80]]" + E) == []  # the line may still name an image or continue
    (first,) = stream.feed(" here.\nNext")
    assert first.coords == (900, 20, 980, 80) and first.label == "Close"
    assert stream.flush() == []


# ---------------------------------------------------------------------------------- drawing
def test_drawing_puts_each_box_and_point_in_its_colour():
    image = load_image(Image.new("RGB", (1920, 1080), "white"))
    annotations = annotate_answer(
        f"OK: {B}[[100,200,300,400]]{E}\nTap: {B}[500,500]{E}", [Message("user", "", [image])]
    )
    drawn = draw_annotations(image.image, annotations)
    assert drawn.size == (1920, 1080) and image.image.getpixel((192, 300)) == (
        255,
        255,
        255,
    )  # the original is untouched
    first, second = (Image.new("RGB", (1, 1), colour(n)).getpixel((0, 0)) for n in (1, 2))
    assert drawn.getpixel((192, 300)) == first and drawn.getpixel((575, 300)) == first  # left and right edges
    assert drawn.getpixel((384, 216)) == first and drawn.getpixel((384, 431)) == first  # top and bottom edges
    assert drawn.getpixel((384, 324)) == (255, 255, 255)  # inside stays clear
    assert drawn.getpixel((960 + 20, 540)) == second  # the point's cross hair
    assert draw_annotations(image.image, annotations, image_index=5).tobytes() == image.image.tobytes()
