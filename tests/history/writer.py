"""A process that saves the turns of a chat in a loop, for the crash test: `python -m
tests.history.writer DATA_DIR`. It prints `saved N` after save N has returned (is committed), so the
test knows what must survive a kill."""

from __future__ import annotations

import sys
from pathlib import Path

from glm_vision.history import ChatStore

from .support import png


def main(data_dir: str) -> None:
    store = ChatStore.open(Path(data_dir))
    chat = store.create("writer")
    print(f"chat {chat}", flush=True)
    texts: list[str] = []
    images: dict[str, bytes | None] = {}
    for turn in range(1, 100_000):
        digest, data = png(turn, size=(160, 120))
        images = {**dict.fromkeys(images), digest: data}
        texts += [f"question {turn}", f"answer {turn} " + "words " * 200]
        store.save("writer", chat, document={"turns": turn}, settings={}, texts=texts, images=images)
        print(f"saved {turn}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
