"""The boxes and points of an answer: as the answer wrote them (`Grounding`, thousandths of the image),
the images they can be about (`ImageSlot`), and tied to one in its pixels (`Annotation`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SCALE = 1000  # GLM's coordinates are thousandths of the image
BOX, POINT = "box", "point"


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
            "coords": [plain(v) for v in self.coords],
            "pixels": list(self.pixels),
            "image_size": list(self.image_size),
            "span": list(self.span),
            "text": self.text,
        }


def to_pixels(kind: str, coords: Sequence[float], width: int, height: int) -> tuple[int, ...]:
    """0-1000 coordinates -> pixels of a `width` x `height` image (rounded half up). Box edges lie in
    [0, width] x [0, height]; a point is a pixel, in [0, width-1] x [0, height-1]."""
    scaled = []
    for i, value in enumerate(coords):
        size = width if i % 2 == 0 else height
        pixel = math.floor(clamp(value) * size / SCALE + 0.5)
        scaled.append(min(pixel, size - 1) if kind == POINT else pixel)
    return tuple(scaled)


def clamp(value: float) -> float:
    return min(max(value, 0), SCALE)


def plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
