"""GLM's boxes and points live in the chat: an answer's picture with each box or point as an HTML element
over it (positioned in percent of the picture, so its geometry follows the picture's size on screen),
numbered, labelled and coloured as `annotate.py` draws them, and the answer's text of each one wrapped in
a <mark>. Box and text share a class `glmv-pair-<turn>-<number>` (Gradio's sanitizer keeps `class` and
`style` but drops `data-*` attributes); static/overlay.js pairs them on hover and opens the viewer."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from ..annotate import colour, tag
from ..grounding import POINT, Annotation, answer_layout
from .boxes import Boxed

STATIC = Path(__file__).resolve().parent / "static"
Span = tuple[int, int]


def page_head() -> str:
    """The page's <head> addition: the overlay's script (hover pairing, viewer), for Gradio's `head=`."""
    return "<script>\n" + (STATIC / "overlay.js").read_text(encoding="utf-8") + "\n</script>"


def page_css() -> str:
    return (STATIC / "overlay.css").read_text(encoding="utf-8")


def pair_class(turn: int, annotation: Annotation) -> str:
    return f"glmv-pair-{turn}-{annotation.number}"


def overlay_html(boxed: Boxed, turn: int, picture: str, drawn: str) -> str:
    """The picture (file `picture`) with its boxes and points over it, and a link to the copy with them
    drawn in (file `drawn`). One line: Markdown takes it as one HTML block. (Gradio's sanitizer drops
    `aria-*`; `title` and `role` stay.)"""
    width, height = boxed.annotations[0].image_size
    name = html.escape(Path(boxed.name).stem or "image", quote=True)
    marks = "".join(_element(a, turn) for a in boxed.annotations)
    return (
        f'<div class="glmv-shot" title="{html.escape(boxed.alt, quote=True)}">'
        f'<img class="glmv-shot-img" src="{file_url(picture)}" alt="{html.escape(boxed.alt, quote=True)}" '
        f'width="{width}" height="{height}">{marks}'
        f'<a class="glmv-shot-drawn" href="{file_url(drawn)}" download="{name}-boxes.png" '
        f'title="{name}-boxes.png">⤓</a></div>'
    )


def file_url(path: str) -> str:
    """Gradio's URL of a file it may serve (relative: the page is the app's root)."""
    return "gradio_api/file=" + quote(path, safe="/")


def _element(annotation: Annotation, turn: int) -> str:
    label = html.escape(tag(annotation), quote=True)
    style = f"--glmv-c:{colour(annotation.number)};" + _position(annotation)
    kind = "glmv-point" if annotation.kind == POINT else "glmv-box"
    return (
        f'<div class="{kind} {pair_class(turn, annotation)}" style="{style}" title="{label}" '
        f'role="button" tabindex="0"><span class="glmv-tag">{label}</span></div>'
    )


def _position(annotation: Annotation) -> str:
    c = [_percent(v) for v in annotation.coords]
    if annotation.kind == POINT:
        return f"left:{c[0]}%;top:{c[1]}%"
    x1, y1, x2, y2 = annotation.coords
    return f"left:{c[0]}%;top:{c[1]}%;width:{_percent(x2 - x1)}%;height:{_percent(y2 - y1)}%"


def _percent(thousandths: float) -> str:
    return f"{thousandths / 10:.3f}".rstrip("0").rstrip(".")


def marked_answer(raw: str, annotations: Sequence[Annotation], turn: int) -> str:
    """The answer as Markdown, box markers as bold (as `markdown.render_boxes`), and each annotation's
    text wrapped in <mark class="glmv-mark glmv-pair-..."> where that keeps the Markdown intact: on one
    line, outside code and math, inside or outside a bold region but not across its edge."""
    text, regions, code = answer_layout(raw)
    bold = [span for span in (_trimmed(text, s, e) for s, e in regions) if span]
    inserts = [(s, 1, "**") for s, _ in bold] + [(e, -1, "**") for _, e in bold]
    for annotation in annotations:
        start, end = annotation.span
        if _markable(text, start, end, bold, code):
            opening = f'<mark class="glmv-mark {pair_class(turn, annotation)}">'
            inserts += [(start, 2, opening), (end, -2, "</mark>")]
    # at one position: closings before openings; a mark closes inside its bold and opens inside it
    inserts.sort(key=lambda insert: (insert[0], insert[1]))
    parts, position = [], 0
    for at, _, piece in inserts:
        parts += [text[position:at], piece]
        position = at
    return "".join(parts) + text[position:]


def _trimmed(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _markable(text: str, start: int, end: int, bold: list[Span], code: list[Span]) -> bool:
    if not 0 <= start < end <= len(text) or "\n" in text[start:end] or text[start - 1 : start] == "\\":
        return False
    if any(s < end and start < e for s, e in code):
        return False
    return all(e <= start or end <= s or (s <= start and end <= e) for s, e in bold)
