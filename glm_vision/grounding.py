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
import bisect
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
        return {
            "type": self.kind,
            "label": self.label,
            "image_index": self.image_index,
            "coords": [_plain(v) for v in self.coords],
            "pixels": list(self.pixels),
            "image_size": list(self.image_size),
            "span": list(self.span),
            "text": self.text,
        }


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
        annotations.append(
            Annotation(
                number=number,
                kind=grounding.kind,
                label=grounding.label,
                image_index=slot.index,
                coords=grounding.coords,
                pixels=to_pixels(grounding.kind, grounding.coords, slot.width, slot.height),
                image_size=(slot.width, slot.height),
                span=grounding.span,
                text=grounding.text,
            )
        )
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
_INLINE_CODE = re.compile(r"`[^`\n]+`|\$\$[^$]{1,4000}\$\$|\$[^$\n]+\$|\\\([^\n]{1,500}?\\\)|\\\[[^$]{1,4000}?\\\]")
_MENTION = re.compile(
    r"(?i)\b(?:image|picture|pic|img|screenshot|photo|page)\s*(?:#|no\.?)?\s*(\d{1,3})\b"
    r"|(?:图片|图|截图)\s*(\d{1,3})|第\s*(\d{1,3})\s*(?:张|页|幅)"
)
_LIST_MARK = re.compile(r"^\s*(?:[-*+•]|\d+[.)、]|#+)?\s*")


def answer_layout(answer: str) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """What spans refer to, for a raw answer (as `find_groundings` takes it): the displayed answer (box
    markers removed, stripped), the spans that were inside box markers, and its code and math spans."""
    text, regions = _unbox(answer)
    return text, regions, _code_spans(text)


def find_groundings(answer: str) -> list[Grounding]:
    """Every box and point of an answer (the raw answer: box markers kept, reasoning left out, e.g.
    `split_output(text).raw_answer`), in order. Spans refer to the answer with the markers removed
    and stripped, i.e. `split_output(text).answer`."""
    return _parse(answer)


def _parse(raw: str, *, strip: bool = True, offset: int = 0, carried_ref: int | None = None) -> list[Grounding]:
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
        self.text, regions = _unbox(raw, strip)
        self.regions = _Spans(regions)
        self.code = _Spans(_code_spans(self.text))
        self.offset, self.carried_ref = offset, carried_ref
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        self.mentions = [(m.start(), _mention_number(m)) for m in _MENTION.finditer(self.text)]
        self.heads = _line_mentions(self.text, self.line_starts)

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
        coords = [_plain(_clamp(n)) for n in numbers]
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


def _line_mentions(text: str, line_starts: list[int]) -> list[tuple[int, int]]:
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


def _unbox(raw: str, strip: bool = True) -> tuple[str, list[tuple[int, int]]]:
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
    spans, fences = [], list(_FENCE.finditer(text))
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


# ------------------------------------------------------------------------------------------ streaming
class GroundingStream:
    """Groundings as the model output streams in: feed the generated text (reasoning and box markers
    included, as the backend emits it), get each box or point once its line is complete. `flush()` at
    the end gives the rest; all of them together equal `find_groundings` of the whole answer.

    Linear in the answer's length: text before the last complete line outside any bracket, box
    marker or code fence is never read again (what it leaves for later, the last "Image N:" line, is
    carried over)."""

    _CLOSERS = set("])}>）】") | {BOX_CLOSE[-1]}

    def __init__(self) -> None:
        self._splitter = StreamSplitter(keep_boxes=True)
        self._answer = ""
        self._settled = 0  # the answer up to here can no longer change its groundings
        self._scanned = 0
        self._depth = 0
        self._in_box = False
        self._base = 0  # the segment still parsed again starts here (a line start) ...
        self._base_clean = 0  # ... which is here in the displayed answer
        self._carried_ref: int | None = None  # the last "Image N" line before the segment
        self._segment_seen = 0  # groundings of the segment already given out
        self.groundings: list[Grounding] = []

    def feed(self, delta: str) -> list[Grounding]:
        _, answer = self._splitter.feed(delta)
        self._answer += answer
        settled = self._settle()
        if settled <= self._settled:
            return []
        fresh = self._answer[self._settled : settled]
        self._settled = settled
        found = []
        if any(ch.isdigit() for ch in fresh) and any(ch in self._CLOSERS for ch in fresh):
            found = self._emit(settled)
        self._rebase(settled)
        return found

    def flush(self) -> list[Grounding]:
        _, answer = self._splitter.flush()
        self._answer += answer
        return self._emit(len(self._answer))

    def _emit(self, end: int) -> list[Grounding]:
        segment = self._answer[self._base : end]
        if self._base == 0:
            items = _parse(segment)
        else:
            items = _parse(segment, strip=False, offset=self._base_clean, carried_ref=self._carried_ref)
        fresh = items[self._segment_seen :]
        self._segment_seen = len(items)
        self.groundings.extend(fresh)
        return fresh

    def _rebase(self, settled: int) -> None:
        """Start the next segment at `settled` when nothing before it can matter any more."""
        clean, _ = _unbox(self._answer[self._base : settled], strip=False)
        toggles = sum(1 for _ in _FENCE.finditer(clean))
        if toggles % 2:
            return  # inside a code fence: its end decides what is code
        if self._base == 0:
            if not clean.strip():
                return
            self._base_clean = len(clean.strip()) + len(clean) - len(clean.rstrip())
        else:
            self._base_clean += len(clean)
        starts = [0] + [m.end() for m in re.finditer("\n", clean)]
        heads = _line_mentions(clean, starts)
        if heads:
            self._carried_ref = heads[-1][1]
        self._base, self._segment_seen = settled, 0

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
