"""Grounding in GLM's answers: the boxes and points it writes, found in the answer text, tied to the
image they are about and converted to that image's pixels.

GLM-4.1V / 4.5V / 4.6V write positions in thousandths of the image's width and height (0-1000, the
origin top left), whatever size the processor resized the image to: a box is `[x1,y1,x2,y2]`, a
point `[x,y]`. The answer usually marks them with `<|begin_of_box|>...<|end_of_box|>`, and the
bracket style varies (`[..]`, `[[..]]`, `(..)`, `<..>`, lists of several boxes); detection answers
are JSON objects `{"label": "cat", "bbox_2d": [..]}` / `{"point_2d": [..]}`, often in a ```json
fence. An upstream server that decodes with `skip_special_tokens` drops the box markers, so the
answer is read with and without them:

- inside box markers: every bracket style, commas or spaces, integers or decimals;
- anywhere (prose or code): JSON objects with a `bbox_2d` / `point_2d` key;
- in prose outside markers (not in code or math): square-bracketed integers, 4 (a box) or 2 (a point).

Malformed text never raises: what cannot be read is not a box. Coordinates are clamped to 0-1000
and a box's corners put in order.

Which image: the image the question is about, that is the last image of the user (or tool) turn the
answer replies to (the last image of the conversation when that turn has none), unless the answer
names another ("image 2", "page 2", "图2", `{"image": 2, ...}`; numbered from 1 among that turn's
images, or among all the conversation's images when the turn has none).

Spans and texts refer to the answer as displayed: `split_output(text).answer`, box markers removed.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .conversation import BOX_CLOSE, BOX_OPEN, IMAGE_ROLES, Message, StreamSplitter, split_output

SCALE = 1000  # GLM's coordinates are thousandths of the image
BOX, POINT = "box", "point"
BOX_KEYS = ("bbox_2d", "box_2d")
POINT_KEYS = ("point_2d",)
IMAGE_KEYS = ("image", "image_index", "image_id", "page")


@dataclass(frozen=True)
class Grounding:
    """One box or point as the answer wrote it."""

    kind: str  # "box" or "point"
    coords: tuple[float, ...]  # 0-1000, clamped: (x1, y1, x2, y2) with x1 <= x2, y1 <= y2, or (x, y)
    label: str  # the JSON `label`, or the text before a colon that introduces it on its line ("Submit: [..]")
    span: tuple[int, int]  # where it is in the displayed answer (start, end)
    text: str  # the answer's text at `span`
    image_ref: int | None = None  # the image the answer named for it, numbered from 1; None: the default image


@dataclass(frozen=True)
class ImageSlot:
    """An image an answer can point at: its position among all images of the conversation (0-based,
    a PDF's pages one each) and the ORIGINAL size in pixels (not what the processor resized it to)."""

    index: int
    width: int
    height: int


@dataclass(frozen=True)
class Annotation:
    """A grounding tied to its image, in that image's pixels: what the API, batch and UI show."""

    number: int  # 1, 2, ... in answer order: the number drawn on the image
    kind: str
    label: str
    image_index: int  # ImageSlot.index
    coords: tuple[float, ...]  # 0-1000
    pixels: tuple[int, ...]  # the same corners (or point) in pixels of the original image
    image_size: tuple[int, int]  # (width, height) of the original image
    span: tuple[int, int]
    text: str

    def to_json(self) -> dict:
        """The API / batch shape (see README, "Grounding")."""
        return {"type": self.kind, "label": self.label, "image_index": self.image_index,
                "coords": [_plain(v) for v in self.coords], "pixels": list(self.pixels),
                "image_size": list(self.image_size), "span": list(self.span), "text": self.text}


# ------------------------------------------------------------------------------------------ pixels
def to_pixels(kind: str, coords: Sequence[float], width: int, height: int) -> tuple[int, ...]:
    """0-1000 coordinates -> pixels of a `width` x `height` image (rounded half up). Box edges lie in
    [0, width] x [0, height]; a point is a pixel, in [0, width-1] x [0, height-1]."""
    scaled = []
    for i, value in enumerate(coords):
        size = width if i % 2 == 0 else height
        pixel = math.floor(_clamp(value) * size / SCALE + 0.5)
        scaled.append(min(pixel, size - 1) if kind == POINT else pixel)
    return tuple(scaled)


def _clamp(value: float) -> float:
    return min(max(value, 0), SCALE)


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# ------------------------------------------------------------------------------------------ images
def reply_images(messages: Sequence[Message]) -> list[ImageSlot]:
    """The images an answer to `messages` can mean, the default (the one the question is about) last:
    the images of the trailing user/tool turn, or every image of the conversation when it has none."""
    slots, turn, index = [], [], 0
    for message in messages:
        if message.role not in IMAGE_ROLES:
            turn = []
        for image in message.images:
            slot = ImageSlot(index, *image.size)
            slots.append(slot)
            turn.append(slot)
            index += 1
    return turn or slots


def resolve(groundings: Sequence[Grounding], slots: Sequence[ImageSlot]) -> list[Annotation]:
    """Tie each grounding to its image (see the module doc) and convert it to pixels; nothing without an image."""
    if not slots:
        return []
    annotations = []
    for number, grounding in enumerate(groundings, start=1):
        ref = grounding.image_ref
        slot = slots[ref - 1] if ref is not None and 1 <= ref <= len(slots) else slots[-1]
        annotations.append(Annotation(
            number=number, kind=grounding.kind, label=grounding.label, image_index=slot.index,
            coords=grounding.coords, pixels=to_pixels(grounding.kind, grounding.coords, slot.width, slot.height),
            image_size=(slot.width, slot.height), span=grounding.span, text=grounding.text))
    return annotations


def annotate_answer(output: str, messages: Sequence[Message]) -> list[Annotation]:
    """The annotations of a model output (reasoning and box markers included, as generated) that
    answers `messages`: the one call for a finished answer."""
    return resolve(find_groundings(split_output(output).raw_answer), reply_images(messages))


# ------------------------------------------------------------------------------------------ parsing
_NUM = r"[-+]?\d+(?:\.\d+)?"
_SEP = r"(?:\s*[,，]\s*|\s+)"
_NUMS = rf"{_NUM}(?:{_SEP}{_NUM}){{1,3}}"
_BRACKETS = {"[": "]", "(": ")", "<": ">", "（": "）", "【": "】", "{": "}"}
_ANY_GROUP = re.compile("|".join(rf"{re.escape(o)}\s*({_NUMS})\s*{re.escape(c)}" for o, c in _BRACKETS.items()))
_PROSE_GROUP = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+){1,3})\s*\]")
_BARE_REGION = re.compile(rf"\s*({_NUMS})\s*")
_NUMBER = re.compile(_NUM)
_QUOTED_KEY_BEFORE = re.compile(r"""["'](\w+)["']\s*:\s*$""")
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)
_INLINE_CODE = re.compile(r"`[^`\n]+`|\$\$.+?\$\$|\$[^$\n]+\$|\\\(.+?\\\)|\\\[.+?\\\]", re.S)
_MENTION = re.compile(r"(?i)\b(?:image|picture|pic|img|screenshot|photo|page)\s*(?:#|no\.?)?\s*(\d{1,3})\b"
                      r"|(?:图片|图|截图)\s*(\d{1,3})|第\s*(\d{1,3})\s*(?:张|页|幅)")
_LIST_MARK = re.compile(r"^\s*(?:[-*+•]|\d+[.)、]|#+)?\s*")


def find_groundings(answer: str) -> list[Grounding]:
    """Every box and point of an answer (the raw answer: box markers kept, reasoning left out, e.g.
    `split_output(text).raw_answer`), in order. Spans refer to the answer with the markers removed
    and stripped, i.e. `split_output(text).answer`."""
    try:
        return _Document(answer).groundings()
    except Exception:  # noqa: BLE001 - an unreadable answer has no boxes; it must never fail a request
        return []


class _Document:
    def __init__(self, raw: str) -> None:
        self.text, self.regions = _unbox(raw)
        self.code = _code_spans(self.text)

    def groundings(self) -> list[Grounding]:
        found: list[tuple[int, int, list[Grounding]]] = []
        taken: list[tuple[int, int]] = []
        for start, end in _keyed_objects(self.text):
            items = self._from_object(start, end)
            if items:
                found.append((start, end, items))
                taken.append((start, end))
        for match in _ANY_GROUP.finditer(self.text):
            self._group(match, taken, found)
        for start, end in self.regions:  # a region that is just numbers: <|begin_of_box|>1,2,3,4<|end_of_box|>
            body = self.text[start:end]
            bare = _BARE_REGION.fullmatch(body)
            if bare and not _inside(start, taken):
                item = self._make(_numbers(bare.group(1)), start + bare.start(1), start + bare.end(1))
                if item:
                    found.append((start, end, [item]))
        found.sort(key=lambda entry: entry[0])
        return [item for _, _, items in found for item in items]

    def _group(self, match: re.Match, taken: list, found: list) -> None:
        start, end = match.span()
        if _inside(start, taken):
            return
        in_region = _inside(start, self.regions)
        if not in_region:
            if _inside(start, self.code) or not _PROSE_GROUP.fullmatch(match.group(0)):
                return
            key = _QUOTED_KEY_BEFORE.search(self.text[max(0, start - 40):start])
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

    def _make(self, numbers: list[float], start: int, end: int, label: str | None = None,
              image_ref: int | None = None) -> Grounding | None:
        if len(numbers) not in (2, 4) or not all(math.isfinite(n) for n in numbers):
            return None
        kind = BOX if len(numbers) == 4 else POINT
        coords = [_plain(_clamp(n)) for n in numbers]
        if kind == BOX:
            x1, y1, x2, y2 = coords
            coords = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
        if label is None:
            label = self._line_label(start)
        if image_ref is None:
            image_ref = self._mentioned_image(start)
        return Grounding(kind, tuple(coords), label, (start, end), self.text[start:end], image_ref)

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
    def _line_label(self, start: int) -> str:
        """`Submit button: [..]` or `- **猫**：[..]` -> the words before the colon on the same line."""
        line_start = self.text.rfind("\n", 0, start) + 1
        before = self.text[line_start:start].replace("*", "").replace("`", "").rstrip().rstrip("[(<{（【").rstrip()
        if not before.endswith((":", "：")):
            return ""
        words = _LIST_MARK.sub("", _MENTION.sub("", before[:-1])).strip(" ,，;；-—")
        return words if 0 < len(words) <= 60 else ""

    def _mentioned_image(self, start: int) -> int | None:
        """The image the answer names for a position: the last mention before it on its line, else
        the last line that starts with a mention ("Image 2:", "### Page 2", "**图2**")."""
        line_start = self.text.rfind("\n", 0, start) + 1
        same_line = list(_MENTION.finditer(self.text, line_start, start))
        if same_line:
            return _mention_number(same_line[-1])
        position = line_start
        while position > 0:
            previous = self.text.rfind("\n", 0, position - 1) + 1
            line = self.text[previous:position - 1]
            lead = _MENTION.match(_LIST_MARK.sub("", line.replace("*", "")))
            if lead:
                return _mention_number(lead)
            position = previous
        return None


def _mention_number(match: re.Match) -> int:
    return int(next(g for g in match.groups() if g is not None))


def _unbox(raw: str) -> tuple[str, list[tuple[int, int]]]:
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
    lead = len(text) - len(text.lstrip())
    text = text.strip()
    regions = [(max(0, s - lead), min(len(text), e - lead)) for s, e in regions]
    return text, [(s, e) for s, e in regions if e > s]


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Fenced blocks (an unclosed fence runs to the end), inline code and math."""
    spans, fences = [], list(_FENCE.finditer(text))
    for i in range(0, len(fences), 2):
        end = fences[i + 1].end() if i + 1 < len(fences) else len(text)
        spans.append((fences[i].start(), end))
    for match in _INLINE_CODE.finditer(text):
        if not _inside(match.start(), spans):
            spans.append(match.span())
    return spans


def _inside(position: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _keyed_objects(text: str) -> list[tuple[int, int]]:
    """Spans of the innermost `{...}` objects (balanced, quote-aware) that have a grounding key."""
    keys = BOX_KEYS + POINT_KEYS
    if not any(key in text for key in keys):
        return []
    spans, stack, quote, escaped = [], [], None, False
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
            stack.append(i)
        elif ch == "}" and stack:
            start = stack.pop()
            body = text[start:i + 1]
            if any(key in body for key in keys):
                spans.append((start, i + 1))
    # innermost only: an object holding another keyed object is not itself a grounding
    return sorted(s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans))


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


# ------------------------------------------------------------------------------------------ streaming
class GroundingStream:
    """Groundings as the model output streams in: feed the generated text (reasoning and box markers
    included, as the backend emits it), get each box or point once its line is complete. `flush()` at
    the end gives the rest; all of them together equal `find_groundings` of the whole answer."""

    _CLOSERS = set("])}>）】") | {BOX_CLOSE[-1]}

    def __init__(self) -> None:
        self._splitter = StreamSplitter(keep_boxes=True)
        self._answer = ""
        self._settled = 0  # the answer text up to here can no longer change its groundings
        self._scanned = 0
        self._depth = 0
        self._in_box = False
        self.groundings: list[Grounding] = []

    def feed(self, delta: str) -> list[Grounding]:
        _, answer = self._splitter.feed(delta)
        return self._advance(answer)

    def flush(self) -> list[Grounding]:
        _, answer = self._splitter.flush()
        self._answer += answer
        return self._emit(find_groundings(self._answer))

    def _advance(self, answer: str) -> list[Grounding]:
        self._answer += answer
        settled = self._settle()
        if settled <= self._settled:
            return []
        fresh = self._answer[self._settled:settled]
        self._settled = settled
        if not (any(ch.isdigit() for ch in fresh) and any(ch in self._CLOSERS for ch in fresh)):
            return []
        return self._emit(find_groundings(self._answer[:settled]))

    def _emit(self, everything: list[Grounding]) -> list[Grounding]:
        fresh = everything[len(self.groundings):]
        self.groundings.extend(fresh)
        return fresh

    def _settle(self) -> int:
        """The end of the last complete line with no bracket or box marker left open."""
        text, settled = self._answer, self._settled
        position = self._scanned
        while position < len(text):
            if text.startswith(BOX_OPEN, position):
                self._in_box, position = True, position + len(BOX_OPEN)
                continue
            if text.startswith(BOX_CLOSE, position):
                self._in_box, position = False, position + len(BOX_CLOSE)
                continue
            ch = text[position]
            if ch in "[{":
                self._depth += 1
            elif ch in "]}":
                self._depth = max(0, self._depth - 1)
            elif ch == "\n":
                if text.startswith("\n", position + 1):
                    self._depth = 0  # a blank line ends any bracket a stray "[" left open
                if self._depth == 0 and not self._in_box:
                    settled = position + 1
            position += 1
        self._scanned = position
        return settled
