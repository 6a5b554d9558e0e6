"""A tab's session without a browser: the files tabs hold, and what happens to an answer when the chat
is replaced under it (issue 19)."""

from __future__ import annotations

import os
from pathlib import Path

from glm_vision.ui.tempfiles import SessionFiles


def _upload(name: str) -> Path:
    folder = Path(os.environ["GRADIO_TEMP_DIR"]) / ("test-shared-" + name)
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(b"same bytes")
    return path


def test_a_file_two_tabs_hold_is_deleted_when_the_last_one_closes():
    shared, example = _upload("same.png"), _upload("example.png")
    files = SessionFiles(keep=[example])
    files.add("a", shared)
    files.add("b", shared)
    files.add("a", example)
    assert files.purge("a") == 0 and shared.exists()
    assert files.purge("b") == 1 and not shared.exists() and not shared.parent.exists()
    assert example.exists()  # the app's own files are never a tab's
