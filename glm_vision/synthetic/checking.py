"""Checking a model's answer to a synthetic question (`questions.QA`): does it state the right fact and
no contradicting one? Shared by the evaluation, the gallery tool and the tests, so what is taught
(`scenes`) and what is measured cannot drift."""

from __future__ import annotations

import re

from .questions import QA
from .scenes import COLORS, SHAPES, SLOTS, WORDS

COLOR_WORDS = {"en": [c[0] for c in COLORS], "zh": [c[1] for c in COLORS]}
SHAPE_WORDS = {"en": [s[0] for s in SHAPES], "zh": [s[1] for s in SHAPES]}
SLOT_WORDS = {
    "en": ["left", "right", "top", "bottom", "center"],
    "zh": [SLOTS[s][1] for s in ["left", "right", "top", "bottom", "center"]],
}


def mentions(text: str, words: list[str]) -> set[int]:
    lowered = text.lower()
    return {i for i, w in enumerate(words) if re.search(r"(?<![a-z])" + re.escape(w) + r"(?![a-z])", lowered)}


def check_answer(qa: QA, text: str) -> bool:
    """Does a model answer state the right fact (and no contradicting one)?"""
    text = text.split("</think>")[-1].strip()
    lang = qa.lang
    if qa.target == "-":  # "there is no ..."
        return ("no " in text.lower()) if lang == "en" else ("没有" in text)
    if qa.kind == "color":
        return mentions(text, COLOR_WORDS[lang]) == {COLOR_WORDS["en"].index(qa.target)}
    if qa.kind == "position":
        return mentions(text, SLOT_WORDS[lang]) == {SLOT_WORDS["en"].index(qa.target)}
    if qa.kind == "shapes":
        want = {SHAPE_WORDS["en"].index(k) for k in qa.target.split(",")}
        return mentions(text, SHAPE_WORDS[lang]) == want
    if qa.kind == "count":
        return re.findall(r"\d+", text) == [qa.target]
    if qa.kind == "word":
        return {w for w in re.findall(r"[A-Z]+", text.upper()) if w in WORDS} == {qa.target}
    if qa.kind == "describe":
        return text == qa.target
    if qa.kind == "box":
        return box_matches(text, tuple(int(v) for v in qa.target.split(",")))
    raise ValueError(qa.kind)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def box_matches(answer: str, want: tuple[int, ...], threshold: float = 0.5) -> bool:
    """The answer holds exactly one box (read as the UI reads it) and it overlaps `want` (0-1000) by IoU >= 0.5."""
    from ..grounding import BOX, find_groundings

    boxes = [g.coords for g in find_groundings(answer) if g.kind == BOX]
    return len(boxes) == 1 and iou(boxes[0], want) >= threshold
