"""Questions and answers about synthetic scenes (`scenes.py`), and conversations made of them, for the
bundled demo model. In English and Chinese (the answer in the question's language): describe, colour of
a named shape, which shapes, how many, where, what word, and "box the X" (answered with GLM's
`<|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>` in 0-1000 coordinates), each kind in many train phrasings
and a few held-out ones (`templates.py`). Answers are checked by `checking.check_answer`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image

from ..conversation import BOX_CLOSE, BOX_OPEN
from .scenes import (
    COLOR_EN,
    SHAPE_ZH,
    SHAPES,
    SLOTS,
    WORDS,
    Scene,
    Shape,
    random_scene,
    render,
    shape_box,
    thousandths,
    varied_scene,
)
from .templates import templates

KINDS = ["describe", "color", "shapes", "count", "position", "word", "box"]
GREETING_EN = "Hello! Send me an image and ask about its colors, shapes, counts, positions or words."
GREETING_ZH = "你好！请发送一张图片，问我其中的颜色、形状、数量、位置或文字。"


# ---------------------------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class QA:
    kind: str
    lang: str
    question: str
    answer: str
    target: str = ""  # the fact the answer must state (colour, shape, count, slot, word)
    subject: str = ""  # the shape asked about, if any


def _en_shape(s: Shape) -> str:
    return f"{'an' if s.color[0] in 'aeiou' else 'a'} {s.color} {s.kind}"


def _zh_shape(s: Shape) -> str:
    return f"{COLOR_EN[s.color][1]}的{SHAPE_ZH[s.kind]}"


def _join_en(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _join_zh(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "、".join(items[:-1]) + "和" + items[-1]


NAMED_KINDS = ("color", "position", "box")  # questions about one named shape


def answer_for(scene: Scene, kind: str, lang: str, subject: str = "") -> tuple[str, str]:
    """(answer text, target fact) for a question kind about a scene; the answer wording is fixed."""
    shapes = scene.ordered()
    n = len(shapes)
    en = lang == "en"
    if kind == "describe":
        if en:
            parts = [f"{_en_shape(s)} {SLOTS[s.slot][0]}" for s in shapes]
            if scene.word:
                parts.append(f"the word {scene.word.text} {SLOTS[scene.word.slot][0]}")
            text = "The image shows " + _join_en(parts) + "."
        else:
            parts = [f"{SLOTS[s.slot][1]}有{_zh_shape(s)}" for s in shapes]
            if scene.word:
                parts.append(f"{SLOTS[scene.word.slot][1]}写着{scene.word.text}")
            text = "图中" + "，".join(parts) + "。"
        return text, text
    if kind == "shapes":
        if en:
            items = [_en_shape(s) for s in shapes]
            items[0] = items[0][0].upper() + items[0][1:]
            return _join_en(items) + ".", ",".join(sorted(s.kind for s in shapes))
        return "有" + _join_zh([_zh_shape(s) for s in shapes]) + "。", ",".join(sorted(s.kind for s in shapes))
    if kind == "count":
        if en:
            return ("There is 1 shape." if n == 1 else f"There are {n} shapes."), str(n)
        return f"有{n}个形状。", str(n)
    if kind == "word":
        if scene.word is None:
            return ("There is no word in the image." if en else "图中没有文字。"), "-"
        return (f"The word is {scene.word.text}." if en else f"写的是{scene.word.text}。"), scene.word.text
    s = scene.shape(subject)
    if s is None:
        return (f"There is no {subject} in the image." if en else f"图中没有{SHAPE_ZH[subject]}。"), "-"
    if kind == "color":
        return (f"The {s.kind} is {s.color}." if en else f"{SHAPE_ZH[s.kind]}是{COLOR_EN[s.color][1]}的。"), s.color
    if kind == "position":
        if en:
            return f"The {s.color} {s.kind} is {SLOTS[s.slot][0]}.", s.slot
        return f"{_zh_shape(s)}在{SLOTS[s.slot][1]}。", s.slot
    if kind == "box":
        box = thousandths(scene, shape_box(scene, s))
        return f"{BOX_OPEN}[{','.join(map(str, box))}]{BOX_CLOSE}", ",".join(map(str, box))
    raise ValueError(kind)


def ask(
    scene: Scene, kind: str, lang: str, rng: random.Random, *, subject: str | None = None, heldout: bool = False
) -> QA:
    """A question of `kind` about the scene in one of the kind's train templates (`heldout`: one of
    the held-out ones), and its answer in the question's language."""
    forms = templates(kind, lang, heldout)
    template = rng.choice(forms)
    if kind in NAMED_KINDS:
        if subject is None:
            present = [s.kind for s in scene.shapes]
            absent = [k for k, _ in SHAPES if k not in present]
            subject = rng.choice(absent) if absent and rng.random() < 0.08 else rng.choice(present)
        s = scene.shape(subject)
        if "{c}" in template and s is None:
            template = forms[0]
        color = "" if s is None else (s.color if lang == "en" else COLOR_EN[s.color][1])
        question = template.format(s=subject if lang == "en" else SHAPE_ZH[subject], c=color)
    else:
        question = template
        subject = ""
    answer, target = answer_for(scene, kind, lang, subject)
    return QA(kind=kind, lang=lang, question=question, answer=answer, target=target, subject=subject)


# ---------------------------------------------------------------------------------------------- conversations
@dataclass
class Turn:
    question: str
    answer: str
    image: Image.Image | int | None = None  # shown with this question (a bank index in training)
    qa: QA | None = None
    image_index: int = -1  # which of the conversation's scenes the question is about


@dataclass
class Conversation:
    scenes: list[Scene] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)


KIND_WEIGHTS = {"describe": 0.5, "color": 1.2, "shapes": 1.4, "count": 1.0, "position": 1.6, "word": 1.8, "box": 1.8}


def pick_kind(rng: random.Random, scene: Scene) -> str:
    kinds = list(KIND_WEIGHTS)
    weights = [KIND_WEIGHTS[k] * (0.25 if k == "word" and scene.word is None else 1.0) for k in kinds]
    return rng.choices(kinds, weights)[0]


def _new_rendered_scene(rng: random.Random):
    scene = varied_scene(rng)
    return scene, render(scene)


def random_conversation(
    rng: random.Random, *, images: int | None = None, zh_share: float = 0.3, new_scene=_new_rendered_scene
) -> Conversation:
    """1 to 3 image showings (a later one may repeat an earlier image), each followed by 1 to 5 questions
    about the image shown last; sometimes a text-only greeting first.

    `new_scene(rng) -> (scene, picture)` supplies each new image; by default a fresh random scene and
    its rendering. The training script passes one that draws from a pre-rendered bank (the picture is
    then the bank index); `Turn.image` holds whatever it returned."""
    conv = Conversation()
    if images is None:
        images = rng.choices([0, 1, 2, 3], [0.03, 0.55, 0.27, 0.15])[0]
    if images == 0 or rng.random() < 0.03:
        lang = "zh" if rng.random() < zh_share else "en"
        greeting = rng.choice(["Hi", "Hello", "hi!", "Hey"] if lang == "en" else ["你好", "您好"])
        conv.turns.append(Turn(greeting, GREETING_EN if lang == "en" else GREETING_ZH))
    rendered: list = []
    for shown in range(images):
        if shown >= 2 and rng.random() < 0.6:
            index = rng.randrange(len(conv.scenes))  # show an earlier image again
        else:
            scene, picture = new_scene(rng)
            conv.scenes.append(scene)
            rendered.append(picture)
            index = len(conv.scenes) - 1
        scene = conv.scenes[index]
        for q in range(rng.choice([1, 2, 2, 3]) if images > 1 else rng.choice([2, 3, 4, 5])):
            lang = "zh" if rng.random() < zh_share else "en"
            qa = ask(scene, pick_kind(rng, scene), lang, rng)
            conv.turns.append(Turn(qa.question, qa.answer, rendered[index] if q == 0 else None, qa, index))
    return conv


def corpus_text(samples: int = 3000) -> str:
    """Every question and answer pattern, for training the demo model's tokenizer (deterministic)."""
    rng = random.Random(20240601)
    lines = [GREETING_EN, GREETING_ZH, "Hi Hello Hey 你好 您好", " ".join(WORDS)]
    for _ in range(samples):
        scene = random_scene(rng, size=(320, 240))
        for kind in KINDS:
            for lang in ("en", "zh"):
                qa = ask(scene, kind, lang, rng)
                lines.append(qa.question + ("/nothink " if rng.random() < 0.5 else " ") + qa.answer)
    return "\n".join(lines)
