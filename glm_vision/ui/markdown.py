"""Text into Markdown: a user's own words shown literally (what they typed is what the chat and the
Markdown export show, never HTML or formatting), and the model's box markers as a visible highlight."""

from __future__ import annotations

import re

from ..conversation import BOX_CLOSE, BOX_OPEN

# Characters that start Markdown, HTML or entities: a backslash before any ASCII punctuation is a literal
# in CommonMark. `$` (the chat's LaTeX delimiter, which a backslash does not stop) becomes an entity.
_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&])")
_ESCAPED = re.compile(r"\\([\\`*_\[\]<>#|~&])|&#36;")


def literal(text: str) -> str:
    """`text` as Markdown that shows exactly `text`."""
    return _SPECIAL.sub(r"\\\1", text).replace("$", "&#36;")


def unliteral(text: str) -> str:
    """The inverse of `literal` (the chat's Edit box holds the escaped text of a message)."""
    return _ESCAPED.sub(lambda m: m.group(1) or "$", text)


def render_boxes(text: str) -> str:
    """The model's box markers as a visible highlight (Markdown bold) instead of raw tokens."""
    text = re.sub(
        re.escape(BOX_OPEN) + r"\s*(.*?)\s*" + re.escape(BOX_CLOSE),
        lambda m: f"**{m.group(1)}**" if m.group(1) else "",
        text,
        flags=re.DOTALL,
    )
    return text.replace(BOX_OPEN, "").replace(BOX_CLOSE, "")
