"""Fonts for the labels drawn on pictures (`annotate.py`): the bundled DejaVu for Latin text, and for
Chinese (or any other script DejaVu lacks) a system font that has the glyphs, found through fontconfig
or in the usual places. No CJK font is shipped (they are 10-20 MB); where the system has none, the
caller draws the number alone rather than squares ("tofu")."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

BUNDLED = Path(__file__).resolve().parent / "synthetic" / "fonts" / "DejaVuSansMono-Bold.ttf"
# Tried after fontconfig: Debian/Ubuntu (fonts-noto-cjk, fonts-wqy-*, fonts-droid-fallback), macOS, Windows.
CJK_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)
_NOWHERE = "\U0010fffd"  # a private-use code point: every font draws its "missing glyph" box for it
_PROBE = "中文标签"


def label_font(text: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont | None:
    """A font of `size` px that draws every character of `text`: the bundled one, else a system CJK
    font; None when no font at hand has them all."""
    for path in (str(BUNDLED), cjk_font_path()):
        if path is None:
            continue
        font = _truetype(path, size)
        if font is not None and covers(font, text):
            return font
    return None


def covers(font, text: str) -> bool:
    """Whether `font` has a glyph for every visible character of `text` (none drawn as its missing-glyph box)."""
    return all(_glyph(font, ch) != _glyph(font, _NOWHERE) for ch in set(text) if not ch.isspace())


@lru_cache(maxsize=1)
def cjk_font_path() -> str | None:
    """A font file with Chinese glyphs: fontconfig's choice for `:lang=zh` if it has them, else the first
    of CJK_CANDIDATES that exists and has them; None without one."""
    for path in (_fontconfig_zh(), *CJK_CANDIDATES):
        if path and Path(path).is_file():
            font = _truetype(path, 24)
            if font is not None and covers(font, _PROBE):
                return path
    return None


def _fontconfig_zh() -> str | None:
    if shutil.which("fc-match") is None:
        return None
    try:
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


@lru_cache(maxsize=32)
def _truetype(path: str, size: int):
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return None


@lru_cache(maxsize=4096)
def _glyph(font, ch: str) -> tuple[tuple[int, int], bytes]:
    left, top, right, bottom = font.getbbox(ch)
    canvas = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(canvas).text((-left, -top), ch, font=font, fill=255)
    return canvas.size, canvas.tobytes()
