"""GLM's boxes and points drawn on the image they are about (Pillow): numbered, labelled, one colour
each. The batch CLI's `--annotate DIR` writes these; the UI and exports can use the same pictures."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from .fonts import label_font
from .grounding import POINT, Annotation

# Distinct on light and dark screenshots (Okabe-Ito and Tableau colours); annotation n gets COLOURS[(n-1) % len].
COLOURS = ("#E6194B", "#3CB44B", "#4363D8", "#F58231", "#911EB4", "#00A3A3", "#F032E6", "#9A6324", "#808000", "#000075")


def colour(number: int) -> str:
    """The colour of annotation `number` (1-based), the same in every drawing and in the UI."""
    return COLOURS[(number - 1) % len(COLOURS)]


def tag(annotation: Annotation) -> str:
    """The text drawn beside a box or point: its number, then its label."""
    return f"{annotation.number} {annotation.label}".strip()


def draw_annotations(
    image: Image.Image, annotations: Sequence[Annotation], *, image_index: int | None = None
) -> Image.Image:
    """A copy of `image` (RGB) with the annotations drawn on it, at their pixel coordinates; with
    `image_index`, only the annotations of that image. `image` must be the original the pixels refer
    to (its size is checked: annotations of another size are scaled to this one)."""
    canvas = image.convert("RGB") if image.mode != "RGB" else image.copy()
    chosen = [a for a in annotations if image_index is None or a.image_index == image_index]
    if not chosen:
        return canvas
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = max(2, round(min(width, height) / 250))
    size = max(12, round(min(width, height) / 40))
    for annotation in chosen:
        pixels = _fit(annotation, width, height)
        fill = colour(annotation.number)
        if annotation.kind == POINT:
            x, y = pixels
            r = max(4, line * 3)
            draw.ellipse((x - r, y - r, x + r, y + r), outline=fill, width=line)
            draw.line((x - 2 * r, y, x + 2 * r, y), fill=fill, width=max(1, line // 2))
            draw.line((x, y - 2 * r, x, y + 2 * r), fill=fill, width=max(1, line // 2))
            anchor = (x + r + line, y - r)
        else:
            x1, y1, x2, y2 = pixels
            draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=fill, width=line)
            anchor = (x1, y1)
        _label(draw, *drawn_tag(annotation, size), anchor, fill, width, height)
    return canvas


def annotated_images(images: Sequence[Image.Image], annotations: Sequence[Annotation]) -> dict[int, Image.Image]:
    """{image_index: annotated copy} for each image (of a conversation's images, in order) that has annotations."""
    return {
        index: draw_annotations(images[index], annotations, image_index=index)
        for index in sorted({a.image_index for a in annotations})
        if 0 <= index < len(images)
    }


def drawn_tag(annotation: Annotation, size: int) -> tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    """The tag as drawn and its font: the whole tag where a font at hand has its glyphs (a Chinese label
    needs a system CJK font), else the number alone; the label is in the answer's text anyway."""
    text = tag(annotation)
    font = label_font(text, size)
    if font is None:
        text = str(annotation.number)
        font = label_font(text, size) or ImageFont.load_default(size)
    return text, font


def _fit(annotation: Annotation, width: int, height: int) -> tuple[int, ...]:
    if annotation.image_size == (width, height):
        return annotation.pixels
    sx, sy = width / annotation.image_size[0], height / annotation.image_size[1]
    return tuple(round(v * (sx if i % 2 == 0 else sy)) for i, v in enumerate(annotation.pixels))


def _label(
    draw: ImageDraw.ImageDraw, text: str, font, anchor: tuple[int, int], fill: str, width: int, height: int
) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0, anchor[0]), max(0, width - w))
    y = anchor[1] - h if anchor[1] - h >= 0 else min(anchor[1], max(0, height - h))
    draw.rectangle((x, y, x + w, y + h), fill=fill)
    draw.text((x + 3 - left, y + 2 - top), text, fill="white", font=font)
