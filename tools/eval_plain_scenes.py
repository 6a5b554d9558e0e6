"""Plain pictures drawn by code other than `glm_vision.synthetic.scenes`, for the demo model's
evaluation: one or two shapes at any size and place on a flat background, anti-aliased (drawn at
twice the size and reduced), in shades near but not equal to the training colours, with their own
shape outlines (an axis-aligned square, a flatter diamond, a fatter star). They measure whether the
model learnt shapes and colours rather than the training renderer; the questions are fixed ones a
user would type ("What shape is in the image?"), checked by `scenes.check_answer`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from glm_vision.synthetic import questions
from glm_vision.synthetic import scenes as demo_data

SHADES = {
    "red": (230, 0, 0),
    "orange": (255, 140, 0),
    "yellow": (255, 215, 0),
    "green": (0, 170, 0),
    "blue": (0, 70, 255),
    "purple": (128, 0, 160),
    "pink": (255, 105, 180),
    "brown": (139, 69, 19),
    "black": (0, 0, 0),
}
BACKGROUNDS = [(255, 255, 255), (250, 250, 250), (235, 235, 235), (255, 250, 235), (40, 40, 40)]
SIZES = [(400, 400), (512, 384), (384, 512), (640, 360)]
QUESTIONS = {  # kind -> (English, Chinese)
    "shapes": [
        ("What shape is in the image?", "图中是什么形状？"),
        ("Which shapes are in the picture?", "图片里有哪些形状？"),
    ],
    "color": [("What colour is the {s}?", "{s}是什么颜色？")],
    "box": [("Box the {s}.", "框出{s}。")],
}
KINDS = list(QUESTIONS)


@dataclass(frozen=True)
class Plain:
    kind: str
    color: str
    box: tuple[float, float, float, float]  # pixels


def _outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]
    if kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "star":
        return [
            (
                cx + (r if i % 2 == 0 else 0.5 * r) * math.sin(i * math.pi / 5),
                cy - (r if i % 2 == 0 else 0.5 * r) * math.cos(i * math.pi / 5),
            )
            for i in range(10)
        ]
    raise ValueError(kind)


def plain_scene(rng: random.Random) -> tuple[Image.Image, list[Plain]]:
    """A picture of one shape (two thirds of them, 25-90 % of the short side) or two side by side."""
    width, height = rng.choice(SIZES)
    background = rng.choice(BACKGROUNDS)
    colors = [c for c in SHADES if not (background[0] < 128 and c == "black")]
    count = 1 if rng.random() < 2 / 3 else 2
    kinds = rng.sample([k for k, _ in demo_data.SHAPES], count)
    big = Image.new("RGB", (2 * width, 2 * height), background)
    draw = ImageDraw.Draw(big)
    shapes = []
    for i, kind in enumerate(kinds):
        short = min(width, height) if count == 1 else min(width / 2, height)
        r = rng.uniform(0.125, 0.45) * short
        span_x = (width if count == 1 else width / 2) - 2 * r
        cx = (0 if count == 1 else i * width / 2) + r + rng.uniform(0, max(0.0, span_x))
        cy = r + rng.uniform(0, max(0.0, height - 2 * r))
        color = rng.choice(colors)
        if kind == "circle":
            draw.ellipse([2 * (cx - r), 2 * (cy - r), 2 * (cx + r), 2 * (cy + r)], fill=SHADES[color])
            box = (cx - r, cy - r, cx + r, cy + r)
        else:
            points = _outline(kind, cx, cy, r)
            draw.polygon([(2 * x, 2 * y) for x, y in points], fill=SHADES[color])
            xs, ys = zip(*points, strict=True)
            box = (min(xs), min(ys), max(xs), max(ys))
        shapes.append(Plain(kind, color, box))
    return big.resize((width, height), Image.LANCZOS), shapes


def question(shapes: list[Plain], size: tuple[int, int], kind: str, lang: str, rng: random.Random) -> questions.QA:
    """A fixed question of `kind` about the picture, with the fact the answer must state."""
    en, zh = rng.choice(QUESTIONS[kind])
    subject = rng.choice(shapes)
    named = subject.kind if lang == "en" else demo_data.SHAPE_ZH[subject.kind]
    text = (en if lang == "en" else zh).format(s=named)
    if kind == "shapes":
        target = ",".join(sorted(s.kind for s in shapes))
    elif kind == "color":
        target = subject.color
    else:
        sizes = size * 2
        target = ",".join(str(round(v * 1000 / n)) for v, n in zip(subject.box, sizes, strict=True))
    return questions.QA(kind=kind, lang=lang, question=text, answer="", target=target, subject=subject.kind)
