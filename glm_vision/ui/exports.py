"""The chat's two export files, Markdown and JSON (both with the chat's settings), written into a
folder of the tab's own, which goes when the tab closes."""

from __future__ import annotations

import uuid
from pathlib import Path

from .chat_json import to_json
from .tempfiles import keyed_name, private_dir
from .transcript import Transcript, export_name, to_markdown

EXPORT_DIR = private_dir("exports")  # per tab: EXPORT_DIR/<keyed tab>/<random>/


def tab_folder(tab: str) -> Path:
    """The folder holding every export of a tab (a name only this process can derive from the tab)."""
    return EXPORT_DIR / keyed_name("session:" + tab, 16)


def write_exports(tab: str, transcript: Transcript, *, model: str, settings: dict) -> tuple[Path, Path]:
    """The Markdown and the JSON file of the chat as it is now; returns their paths."""
    folder = tab_folder(tab) / uuid.uuid4().hex[:16]
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    md_path, json_path = folder / export_name(transcript, "md"), folder / export_name(transcript, "json")
    md_path.write_text(to_markdown(transcript, model=model, settings=settings), encoding="utf-8")
    json_path.write_text(to_json(transcript, settings=settings), encoding="utf-8")
    return md_path, json_path
