"""The example pictures under the chat (assets/examples/examples.json): a question in each language."""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"


def load_examples() -> list[dict]:
    index = EXAMPLES_DIR / "examples.json"
    if not index.exists():
        return []
    items = json.loads(index.read_text(encoding="utf-8"))
    return [
        dict(item, image=str(EXAMPLES_DIR / item["image"])) for item in items if (EXAMPLES_DIR / item["image"]).exists()
    ]


def question(item: dict, lang: str) -> str:
    """The example's question in the page's language (English when there is no translation)."""
    return item.get("question_zh") if lang == "zh" and item.get("question_zh") else item["question"]


def gallery_items(examples: list[dict], lang: str) -> list[tuple[str, str]]:
    return [(item["image"], question(item, lang)) for item in examples]


def gallery_files(gallery) -> list[str]:
    """The example pictures' copies in Gradio's cache, which the gallery serves to every tab."""
    return [item["image"]["path"] for item in gallery.value or []]


def as_message(item: dict, lang: str) -> dict:
    """What clicking the example puts in the input box."""
    return {"text": question(item, lang), "files": [item["image"]]}
