"""Boxes and points found in an answer's text: inside box markers, in JSON objects with a grounding
key, and as bracketed integers in prose (see the package doc for what is read where)."""

from __future__ import annotations

import ast
import bisect
import json
import math
import re

from ..conversation import BOX_CLOSE, BOX_OPEN
from .marks import BOX, POINT, Grounding, clamp, plain

BOX_KEYS = ("bbox_2d", "box_2d")
POINT_KEYS = ("point_2d",)
IMAGE_KEYS = ("image", "image_index", "image_id", "page")

_NUM = r"[-+]?\d+(?:\.\d+)?"
_SEP = r"(?:\s*[,，]\s*|\s+)"
_NUMS = rf"{_NUM}(?:{_SEP}{_NUM}){{1,3}}"
_BRACKETS = {"[": "]", "(": ")", "<": ">", "（": "）", "【": "】", "{": "}"}
_ANY_GROUP = re.compile("|".join(rf"{re.escape(o)}\s*({_NUMS})\s*{re.escape(c)}" for o, c in _BRACKETS.items()))
_PROSE_GROUP = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+){1,3})\s*\]")
_BARE_REGION = re.compile(rf"\s*({_NUMS})\s*")
_NUMBER = re.compile(_NUM)
_QUOTED_KEY_BEFORE = re.compile(r"""["'](\w+)["']\s*:\s*$""")
FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)
_INLINE_CODE = re.compile(r"`[^`\n]+`|\$\$[^$]{1,4000}\$\$|\$[^$\n]+\$|\\\([^\n]{1,500}?\\\)|\\\[[^$]{1,4000}?\\\]")
_MENTION = re.compile(
    r"(?i)\b(?:image|picture|pic|img|screenshot|photo|page)\s*(?:#|no\.?)?\s*(\d{1,3})\b"
    r"|(?:图片|图|截图)\s*(\d{1,3})|第\s*(\d{1,3})\s*(?:张|页|幅)"
)
_LIST_MARK = re.compile(r"^\s*(?:[-*+•]|\d+[.)、]|#+)?\s*")


def answer_layout(answer: str) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """What spans refer to, for a raw answer (as `find_groundings` takes it): the displayed answer (box
    markers removed, stripped), the spans that were inside box markers, and its code and math spans."""
    text, regions = unbox(answer)
    return text, regions, _code_spans(text)


def find_groundings(answer: str) -> list[Grounding]:
    """Every box and point of an answer (the raw answer: box markers kept, reasoning left out, e.g.
    `split_output(text).raw_answer`), in order. Spans refer to the answer with the markers removed
    and stripped, i.e. `split_output(text).answer`."""
    return parse(answer)


def parse(raw: str, *, strip: bool = True, offset: int = 0, carried_ref: int | None = None) -> list[Grounding]:
    try:
        return _Document(raw, strip, offset, carried_ref).groundings()
    except Exception:  # noqa: BLE001 - an unreadable answer has no boxes; it must never fail a request
        return []


class _Spans:
    """Sorted, non-overlapping spans; `position in spans` by bisection."""

    def __init__(self, spans) -> None:
        self.spans = sorted(spans)
        self.starts = [start for start, _ in self.spans]

    def __contains__(self, position: int) -> bool:
        i = bisect.bisect_right(self.starts, position) - 1
        return i >= 0 and position < self.spans[i][1]

    def __iter__(self):
        return iter(self.spans)


class _Document:
    def __init__(self, raw: str, strip: bool = True, offset: int = 0, carried_ref: int | None = None) -> None:
        self.text, regions = unbox(raw, strip)
        self.regions = _Spans(regions)
        self.code = _Spans(_code_spans(self.text))
        self.offset, self.carried_ref = offset, carried_ref
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        self.mentions = [(m.start(), _mention_number(m)) for m in _MENTION.finditer(self.text)]
        self.heads = line_mentions(self.text, self.line_starts)

    def groundings(self) -> list[Grounding]:
        found: list[tuple[int, int, list[Grounding]]] = []
        objects = []
        for start, end in _keyed_objects(self.text):
            items = self._from_object(start, end)
            if items:
                found.append((start, end, items))
                objects.append((start, end))
        taken = _Spans(objects)
        for match in _ANY_GROUP.finditer(self.text):
            self._group(match, taken, found)
        for start, end in self.regions:  # a region that is just numbers: <|begin_of_box|>1,2,3,4<|end_of_box|>
            bare = _BARE_REGION.fullmatch(self.text, start, end)
            if bare and start not in taken:
                item = self._make(_numbers(bare.group(1)), bare.start(1), bare.end(1))
                if item:
                    found.append((start, end, [item]))
        found.sort(key=lambda entry: entry[0])
        return [item for _, _, items in found for item in items]

    def _group(self, match: re.Match, taken: _Spans, found: list) -> None:
        start, end = match.span()
        if start in taken:
            return
        in_region = start in self.regions
        if not in_region:
            if start in self.code or not _PROSE_GROUP.fullmatch(match.group(0)):
                return
            key = _QUOTED_KEY_BEFORE.search(self.text, max(0, start - 40), start)
            if key and key.group(1) not in BOX_KEYS + POINT_KEYS:
                return  # a JSON value of another key ("size": [10, 20])
        numbers_text = next(g for g in match.groups() if g is not None)
        while start > 0 and end < len(self.text) and _BRACKETS.get(self.text[start - 1]) == self.text[end]:
            if self.text[start - 1] != "[" and not in_region:
                break
            start, end = start - 1, end + 1  # [[x1,y1,x2,y2]]: the whole of it is the box's text
        item = self._make(_numbers(numbers_text), start, end)
        if item:
            found.append((start, end, [item]))

    def _make(
        self, numbers: list[float], start: int, end: int, label: str | None = None, image_ref: int | None = None
    ) -> Grounding | None:
        if len(numbers) not in (2, 4) or not all(math.isfinite(n) for n in numbers):
            return None
        kind = BOX if len(numbers) == 4 else POINT
        coords = [plain(clamp(n)) for n in numbers]
        if kind == BOX:
            x1, y1, x2, y2 = coords
            coords = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
        if label is None:
            label = self._line_label(start)
        if image_ref is None:
            image_ref = self._mentioned_image(start)
        span = (start + self.offset, end + self.offset)
        return Grounding(kind, tuple(coords), label, span, self.text[start:end], image_ref)

    # ---------------------------------------------------------------------------------- JSON objects
    def _from_object(self, start: int, end: int) -> list[Grounding]:
        body = self.text[start:end]
        data = _lenient_object(body)
        label = data.get("label") if isinstance(data.get("label"), (str, int, float)) else None
        label = "" if label is None else str(label).strip()
        image_ref = next((_int(data[k]) for k in IMAGE_KEYS if _int(data.get(k)) is not None), None)
        items = []
        for keys, size in ((BOX_KEYS, 4), (POINT_KEYS, 2)):
            for key in keys:
                value = data.get(key)
                for numbers in _coordinate_lists(value, size):
                    item = self._make(numbers, start, end, label, image_ref)
                    if item:
                        items.append(item)
        return items

    # ---------------------------------------------------------------------------------- context
    def _line_start(self, position: int) -> int:
        return self.line_starts[bisect.bisect_right(self.line_starts, position) - 1]

    def _line_label(self, start: int) -> str:
        """`Submit button: [..]` or `- **猫**：[..]` -> the words before the colon, back to the start of
        the line, the end of a sentence or the previous box."""
        before = self.text[max(self._line_start(start), start - 200) : start]
        before = before.replace("*", "").replace("`", "").rstrip().rstrip("[(<{（【").rstrip()
        if not before.endswith((":", "：")):
            return ""
        words = re.split(r"[\])}>）】.;。；!?！？]", before[:-1])[-1]
        words = _LIST_MARK.sub("", _MENTION.sub("", words)).strip(" ,，;；-—")
        return words if 0 < len(words) <= 60 else ""

    def _mentioned_image(self, start: int) -> int | None:
        """The image the answer names for a position: the last mention before it on its line, else
        the last line that starts with a mention ("Image 2:", "### Page 2", "**图2**")."""
        line_start = self._line_start(start)
        i = bisect.bisect_left(self.mentions, (start, -1)) - 1
        if i >= 0 and self.mentions[i][0] >= line_start:
            return self.mentions[i][1]
        i = bisect.bisect_left(self.heads, (line_start, -1)) - 1
        return self.heads[i][1] if i >= 0 else self.carried_ref


def line_mentions(text: str, line_starts: list[int]) -> list[tuple[int, int]]:
    """(line start, number) of each line that starts with an image mention."""
    heads = []
    for i, start in enumerate(line_starts):
        end = line_starts[i + 1] - 1 if i + 1 < len(line_starts) else len(text)
        if end - start > 300:
            continue
        lead = _MENTION.match(_LIST_MARK.sub("", text[start:end].replace("*", "")))
        if lead:
            heads.append((start, _mention_number(lead)))
    return heads


def _mention_number(match: re.Match) -> int:
    return int(next(g for g in match.groups() if g is not None))


def unbox(raw: str, strip: bool = True) -> tuple[str, list[tuple[int, int]]]:
    """The answer without box markers (stripped, as `split_output` gives it) and the spans that were
    inside markers (an unclosed marker runs to the end)."""
    parts, regions, position, length, open_at = [], [], 0, 0, None
    while True:
        marker = BOX_CLOSE if open_at is not None else BOX_OPEN
        index = raw.find(marker, position)
        other = raw.find(BOX_OPEN if open_at is not None else BOX_CLOSE, position)
        if other != -1 and (index == -1 or other < index):  # a stray marker: dropped, changes nothing
            parts.append(raw[position:other])
            length += other - position
            position = other + len(BOX_OPEN if open_at is not None else BOX_CLOSE)
            continue
        if index == -1:
            parts.append(raw[position:])
            length += len(raw) - position
            if open_at is not None:
                regions.append((open_at, length))
            break
        parts.append(raw[position:index])
        length += index - position
        position = index + len(marker)
        if open_at is None:
            open_at = length
        else:
            regions.append((open_at, length))
            open_at = None
    text = "".join(parts)
    if not strip:
        return text, [(s, e) for s, e in regions if e > s]
    lead = len(text) - len(text.lstrip())
    text = text.strip()
    regions = [(max(0, s - lead), min(len(text), e - lead)) for s, e in regions]
    return text, [(s, e) for s, e in regions if e > s]


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Fenced blocks (an unclosed fence runs to the end), inline code and math; merged, in order."""
    spans, fences = [], list(FENCE.finditer(text))
    for i in range(0, len(fences), 2):
        end = fences[i + 1].end() if i + 1 < len(fences) else len(text)
        spans.append((fences[i].start(), end))
    fenced = _Spans(spans)
    spans += [m.span() for m in _INLINE_CODE.finditer(text) if m.start() not in fenced]
    return _non_overlapping(spans)


def _non_overlapping(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _keyed_objects(text: str) -> list[tuple[int, int]]:
    """Spans of the innermost `{...}` objects (balanced, quote-aware) that have a grounding key."""
    keys = BOX_KEYS + POINT_KEYS
    positions = sorted(m.start() for m in re.finditer("|".join(keys), text))
    if not positions:
        return []
    spans, stack, quote, escaped = [], [], None, False  # stack: [start, holds a keyed object]
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote or ch == "\n":
                quote = None
            continue
        if ch == '"' and stack:
            quote = ch
        elif ch == "{":
            stack.append([i, False])
        elif ch == "}" and stack:
            start, holds = stack.pop()
            k = bisect.bisect_left(positions, start)
            keyed = holds or (k < len(positions) and positions[k] < i)
            if keyed and not holds:
                spans.append((start, i + 1))  # innermost: an object holding a keyed one is not itself a grounding
            if keyed and stack:
                stack[-1][1] = True
    return sorted(spans)


def _lenient_object(body: str) -> dict:
    for parse in (json.loads, ast.literal_eval):
        try:
            data = parse(body)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(data, dict):
            return {str(k).strip().lower(): v for k, v in data.items()}
    data = {}  # not JSON: take the keys that can still be read
    for key, value in re.findall(r"""["']?(\w+)["']?\s*:\s*(\[[^\]{}]*\]\]?|"[^"\n]*"|'[^'\n]*'|-?\d+)""", body):
        key = key.lower()
        if value.startswith("["):
            data[key] = [_numbers(inner) for inner in re.findall(r"[^\[\]]+", value) if _NUMBER.search(inner)]
            if len(data[key]) == 1:
                data[key] = data[key][0]
        else:
            data[key] = value.strip("\"'")
    return data


def _coordinate_lists(value, size: int) -> list[list[float]]:
    """`[x1,y1,x2,y2]`, `[[..], [..]]` or `"[..]"` -> lists of numbers of the expected size."""
    if isinstance(value, str):
        return [n for n in [_numbers(value)] if len(n) == size]
    if not isinstance(value, (list, tuple)) or not value:
        return []
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [[float(v) for v in value]] if len(value) == size else []
    return [numbers for inner in value for numbers in _coordinate_lists(inner, size)]


def _numbers(text: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(text)]


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
