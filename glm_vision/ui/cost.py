"""The image-cost line under the input: what the attached pictures will cost in tokens under the budget,
estimated from the files' headers the way the processor resizes them."""

from __future__ import annotations

import math
from pathlib import Path

from ..settings import PIXELS_PER_IMAGE_TOKEN
from .text import say

FACTOR = 28  # one LLM token per 28x28 pixel block


def estimate_image_tokens(width: int, height: int, budget: int) -> int:
    """Tokens for one image under a per-image budget: both sides rounded to 28 px, area capped."""
    h = max(FACTOR, round(height / FACTOR) * FACTOR)
    w = max(FACTOR, round(width / FACTOR) * FACTOR)
    cap = budget * PIXELS_PER_IMAGE_TOKEN
    if h * w > cap:
        beta = math.sqrt(height * width / cap)
        h = max(FACTOR, math.floor(height / beta / FACTOR) * FACTOR)
        w = max(FACTOR, math.floor(width / beta / FACTOR) * FACTOR)
    return (h // FACTOR) * (w // FACTOR)


def cost_line(lang: str, budget: int, sizes: list[tuple[int, int]], model_cap: int | None = None) -> str:
    """What the attached images will cost under the budget; never more than the model itself allows
    (the bundled demo model takes at most 100 tokens an image whatever the slider says)."""
    if model_cap is not None:
        budget = min(budget, model_cap)
    fullhd = estimate_image_tokens(1920, 1080, budget)
    if not sizes:
        return say(lang, "cost_none", budget=budget, fullhd=fullhd)
    tokens = sum(estimate_image_tokens(w, h, budget) for w, h in sizes)
    return (
        say(lang, "cost", detail=say(lang, "cost_files", count=len(sizes), tokens=tokens))
        + " · "
        + say(lang, "cost_none", budget=budget, fullhd=fullhd).split(":", 1)[-1].strip()
    )


def image_sizes(message: dict | None, settings) -> list[tuple[int, int]]:
    """Sizes of the attached files from their headers only (PDF pages at the render resolution)."""
    sizes: list[tuple[int, int]] = []
    for entry in (message or {}).get("files") or []:
        path = entry if isinstance(entry, str) else entry.get("path")
        try:
            sizes += _file_sizes(Path(path), settings)
        except Exception:  # noqa: BLE001 - a bad file is reported when it is sent, not here
            continue
    return sizes


def _file_sizes(path: Path, settings) -> list[tuple[int, int]]:
    if path.read_bytes()[:5] == b"%PDF-":
        import pypdfium2 as pdfium

        document = pdfium.PdfDocument(path)
        try:
            scale = settings.pdf_dpi / 72
            pages = range(min(len(document), settings.pdf_max_pages))
            return [(int(w * scale), int(h * scale)) for w, h in map(document.get_page_size, pages)]
        finally:
            document.close()
    from PIL import Image

    with Image.open(path) as image:
        return [image.size]
