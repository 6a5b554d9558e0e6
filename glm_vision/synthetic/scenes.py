"""Synthetic screenshot-like scenes for the bundled demo model: what is in a picture, how it is drawn,
and where each thing lies (the questions about them are `questions.py`).

A scene is a flat background with 1 to 5 coloured shapes, each in its own slot (left, right, top,
bottom, center), and sometimes a short word in a free slot; `varied_scene` mixes in single objects
from a few percent to most of the picture, many small ones, and large words.

The same scenes make the training data (`tools/train_demo_model.py`), the held-out evaluation set
(`tools/eval_demo_model.py`, another seed) and the pictures of the end-to-end tests, so what the
model was taught and what is measured cannot drift.
Everything is drawn from a `random.Random`, so a seed gives the same scenes on every machine (the
fonts ship in `glm_vision/synthetic/fonts/`; the fourth is Pillow's built-in one).
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# (English, Chinese, RGB)
COLORS = [
    ("red", "红色", (220, 38, 38)),
    ("orange", "橙色", (245, 135, 20)),
    ("yellow", "黄色", (240, 205, 15)),
    ("green", "绿色", (35, 160, 65)),
    ("blue", "蓝色", (35, 90, 225)),
    ("purple", "紫色", (135, 55, 185)),
    ("pink", "粉色", (245, 115, 185)),
    ("brown", "棕色", (125, 75, 35)),
    ("black", "黑色", (18, 18, 18)),
]
SHAPES = [("circle", "圆形"), ("square", "正方形"), ("triangle", "三角形"), ("star", "星形"), ("diamond", "菱形")]
# slot -> (English phrase, Chinese, relative centre)
SLOTS = {
    "left": ("on the left", "左边", (0.18, 0.5)),
    "right": ("on the right", "右边", (0.82, 0.5)),
    "top": ("at the top", "上方", (0.5, 0.18)),
    "bottom": ("at the bottom", "下方", (0.5, 0.82)),
    "center": ("in the center", "中间", (0.5, 0.5)),
}
READING_ORDER = ["top", "left", "center", "right", "bottom"]
WORDS = [
    "HELLO",
    "LOGIN",
    "SUBMIT",
    "CANCEL",
    "SEARCH",
    "SAVE",
    "MENU",
    "HOME",
    "START",
    "STOP",
    "PLAY",
    "NEXT",
    "BACK",
    "EDIT",
    "HELP",
    "SEND",
    "OPEN",
    "CLOSE",
    "SHARE",
    "PRINT",
    "UPLOAD",
    "DELETE",
    "CART",
    "EXIT",
]
LIGHT_BACKGROUNDS = [
    (255, 255, 255),
    (243, 244, 246),
    (229, 231, 235),
    (253, 246, 227),
    (236, 242, 250),
    (240, 250, 240),
]
DARK_BACKGROUNDS = [(32, 33, 36), (17, 24, 39), (45, 45, 60)]
# width / height: portrait phone screenshots to wide desktop ones
ASPECTS = [9 / 19.5, 9 / 16, 3 / 4, 1.0, 4 / 3, 16 / 10, 16 / 9, 21 / 9]
FONT_DIR = Path(__file__).resolve().parent / "fonts"
FONT_NAMES = ["default", "DejaVuSansMono-Bold.ttf", "DejaVuSerif-Bold.ttf"]


COLOR_EN = {c[0]: c for c in COLORS}
SHAPE_ZH = dict(SHAPES)


@dataclass(frozen=True)
class Shape:
    kind: str  # circle, square, ...
    color: str  # English colour name
    slot: str
    dx: float = 0.0  # jitter, fraction of the short side
    dy: float = 0.0
    scale: float = 0.12  # radius, fraction of the short side
    angle: float = 0.0


@dataclass(frozen=True)
class Word:
    text: str
    slot: str
    font: str
    rel_size: float  # font size, fraction of the short side
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: tuple[int, int, int]
    shapes: tuple[Shape, ...]
    word: Word | None = None

    def shape(self, kind: str) -> Shape | None:
        return next((s for s in self.shapes if s.kind == kind), None)

    def ordered(self) -> list[Shape]:
        return sorted(self.shapes, key=lambda s: READING_ORDER.index(s.slot))


# ---------------------------------------------------------------------------------------------- scenes
@functools.lru_cache(maxsize=512)
def _font(name: str, size: int):
    if name == "default":
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(FONT_DIR / name), size=size)


def _word_box_limit(slot: str, width: int, height: int) -> float:
    """The widest a word may be in a slot without touching the neighbouring slots."""
    return {"left": 0.32, "right": 0.32, "center": 0.36, "top": 0.8, "bottom": 0.8}[slot] * width


def random_scene(
    rng: random.Random,
    *,
    n_shapes: int | None = None,
    with_word: bool | None = None,
    size: tuple[int, int] | None = None,
    shape_slots: tuple[str, ...] = tuple(SLOTS),
    scale: tuple[float, float] = (0.085, 0.135),
    word_slots: tuple[str, ...] = tuple(SLOTS),
    word_rel: tuple[float, float] = (0.1, 0.17),
) -> Scene:
    """A scene of `n_shapes` (default 1-5) shapes in `shape_slots` with radii in `scale` (fractions
    of the short side), and a word (default: in 70 % of the scenes with a free slot) in a free one of
    `word_slots`, its font `word_rel` of the short side or less, to fit."""
    if size is None:
        aspect = rng.choice(ASPECTS) * rng.uniform(0.93, 1.07)
        long_side = int(round(math.exp(rng.uniform(math.log(224), math.log(1280)))))
        width, height = (
            (long_side, max(64, int(long_side / aspect)))
            if aspect >= 1
            else (max(64, int(long_side * aspect)), long_side)
        )
    else:
        width, height = size
    dark = rng.random() < 0.2
    background = rng.choice(DARK_BACKGROUNDS if dark else LIGHT_BACKGROUNDS)
    n = n_shapes if n_shapes is not None else rng.randint(1, 5)
    slots = rng.sample(list(shape_slots), n)
    kinds = rng.sample([s[0] for s in SHAPES], n)
    colors = [c[0] for c in COLORS if not (dark and c[0] == "black")]
    shapes = tuple(
        Shape(
            kind=k,
            color=rng.choice(colors),
            slot=slot,
            dx=rng.uniform(-0.04, 0.04),
            dy=rng.uniform(-0.04, 0.04),
            scale=rng.uniform(*scale),
            angle=rng.uniform(-0.3, 0.3),
        )
        for k, slot in zip(kinds, slots, strict=False)
    )
    word = None
    free = [s for s in word_slots if s not in slots]
    if with_word is None:
        with_word = bool(free) and rng.random() < 0.7
    if with_word and free:
        text = rng.choice(WORDS)
        font = rng.choice(FONT_NAMES)
        rng.shuffle(free)
        for slot in free:
            rel = rng.uniform(*word_rel)
            fitted = _fit_word(text, font, slot, width, height, rel)
            if fitted is not None:
                ink = (255, 255, 255) if dark else rng.choice([(20, 20, 20), (55, 65, 81), (30, 58, 138)])
                word = Word(text=text, slot=slot, font=font, rel_size=fitted, color=ink)
                break
    return Scene(width=width, height=height, background=background, shapes=shapes, word=word)


def _fit_word(text: str, font: str, slot: str, width: int, height: int, rel: float) -> float | None:
    """Shrink the font until the word fits its slot; None if it would get too small to read."""
    short = min(width, height)
    limit = _word_box_limit(slot, width, height)
    while rel >= 0.075:
        size = max(6, int(rel * short))
        left, top, right, bottom = _font(font, size).getbbox(text)
        if right - left <= limit:
            return rel
        rel *= 0.9
    return None


def varied_scene(rng: random.Random) -> Scene:
    """The training and evaluation mix: 40 % `random_scene` defaults; 20 % one object from a few
    percent to most of the picture (large ones centred); 15 % three to five small objects; 25 % a
    large word at the top or bottom next to one to three shapes (more pixels per letter)."""
    style = rng.random()
    if style < 0.4:
        return random_scene(rng)
    if style < 0.6:
        radius = math.exp(rng.uniform(math.log(0.05), math.log(0.45)))
        big = radius > 0.2
        return random_scene(
            rng,
            n_shapes=1,
            shape_slots=("center",) if big else tuple(SLOTS),
            scale=(radius, radius),
            with_word=not big and rng.random() < 0.5,
            word_slots=("top", "bottom"),
        )
    if style < 0.75:
        return random_scene(rng, n_shapes=rng.randint(3, 5), scale=(0.05, 0.085))
    return random_scene(
        rng,
        n_shapes=rng.randint(1, 3),
        shape_slots=("left", "center", "right"),
        with_word=True,
        word_slots=("top", "bottom"),
        word_rel=(0.15, 0.26),
    )


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        r *= 0.82
    elif kind == "diamond":
        pts = [(0, -1.1), (0.75, 0), (0, 1.1), (-0.75, 0)]
        angle = 0.0
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        cy += 0.15 * r
        angle *= 0.3
    elif kind == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rad = 1.0 if i % 2 == 0 else 0.45
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        angle *= 0.3
    else:
        raise ValueError(kind)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def render(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    word_ink = scene.word.color if scene.word is not None else None
    return _paint(scene, image, lambda s: COLOR_EN[s.color][2], word_ink)


def render_labels(scene: Scene, shape_value, word_value: int) -> Image.Image:
    """An 'L' image of the scene's layout: each shape filled with `shape_value(shape)`, the word's
    strokes with `word_value`, 0 elsewhere (dense training targets for the demo model's encoder)."""
    return _paint(scene, Image.new("L", (scene.width, scene.height), 0), shape_value, word_value)


def _paint(scene: Scene, image: Image.Image, shape_fill, word_fill) -> Image.Image:
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        cx, cy, r = _placement(scene, s)
        if s.kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=shape_fill(s))
        else:
            draw.polygon(_polygon(s.kind, cx, cy, r, s.angle), fill=shape_fill(s))
    if scene.word is not None:
        font, anchor = _word_layout(scene)
        draw.text(anchor, scene.word.text, font=font, fill=word_fill, anchor="mm")
    return image


# ---------------------------------------------------------------------------------------------- geometry
def _placement(scene: Scene, s: Shape) -> tuple[float, float, float]:
    """A shape's centre and radius in pixels."""
    short = min(scene.width, scene.height)
    rx, ry = SLOTS[s.slot][2]
    return rx * scene.width + s.dx * short, ry * scene.height + s.dy * short, s.scale * short


def _word_layout(scene: Scene):
    """The word's font and its anchor point (the text's middle) in pixels."""
    w = scene.word
    rx, ry = SLOTS[w.slot][2]
    return _font(w.font, max(6, int(w.rel_size * min(scene.width, scene.height)))), (
        rx * scene.width,
        ry * scene.height,
    )


def _clip(scene: Scene, box) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return max(0.0, x1), max(0.0, y1), min(float(scene.width), x2), min(float(scene.height), y2)


def shape_box(scene: Scene, s: Shape) -> tuple[float, float, float, float]:
    """The drawn shape's bounding box in pixels (x1, y1, x2, y2), clipped to the picture."""
    cx, cy, r = _placement(scene, s)
    if s.kind == "circle":
        return _clip(scene, (cx - r, cy - r, cx + r, cy + r))
    xs, ys = zip(*_polygon(s.kind, cx, cy, r, s.angle), strict=True)
    return _clip(scene, (min(xs), min(ys), max(xs), max(ys)))


def word_box(scene: Scene) -> tuple[float, float, float, float]:
    font, (x, y) = _word_layout(scene)
    left, top, right, bottom = font.getbbox(scene.word.text, anchor="mm")
    return _clip(scene, (x + left, y + top, x + right, y + bottom))


def word_char_edges(scene: Scene) -> list[float]:
    """x pixels where the word's characters start and end (len(text) + 1 edges, by advance width)."""
    font, (x, _) = _word_layout(scene)
    text = scene.word.text
    left = x - font.getlength(text) / 2
    return [left + font.getlength(text[:i]) for i in range(len(text) + 1)]


def thousandths(scene: Scene, box) -> tuple[int, int, int, int]:
    """A pixel box in GLM's 0-1000 coordinates (thousandths of the width and height), integers."""
    sizes = (scene.width, scene.height) * 2
    return tuple(min(1000, max(0, round(v * 1000 / size))) for v, size in zip(box, sizes, strict=True))
