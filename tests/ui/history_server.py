"""A glm-vision server process for the chat-history browser tests: the real app (`server.create_app`:
UI, API, the owner cookie) with the chat store in a data directory and a scripted backend, so the
process can be restarted on the same data, or killed mid-answer.

    python -m tests.ui.history_server DATA_DIR PORT [API_KEY]

Answer n (counted from the process start) is "Answer n: <word n>", where word n appears in no
question; a question containing "slowly" is answered with a long answer at 0.2 s a piece.
"""

from __future__ import annotations

import sys

WORDS = ["quokka", "axolotl", "pangolin", "narwhal", "okapi", "tapir", "ibex", "dugong", "kiwi", "lemur"]


def scripted_backend():
    from tests.doubles import ScriptedBackend

    class Numbered(ScriptedBackend):
        def _pieces(self, request):
            number = len(self.requests)  # this request is already counted
            slow = "slowly" in (request.messages[-1].text if request.messages else "")
            self.delay_s = 0.2 if slow else 0.0
            self.answer = f"Answer {number}: {WORDS[number % len(WORDS)]}" + (" and more" * 60 if slow else "")
            return super()._pieces(request)

    return Numbered("", chunk=4)


def main(data_dir: str, port: int, api_key: str = "") -> None:
    import uvicorn

    from glm_vision.history import ChatStore
    from glm_vision.server import AppState, create_app
    from glm_vision.settings import Settings

    settings = Settings(api_key=api_key or None, max_new_tokens=4096, max_upload_mb=1.0, data_dir=data_dir)
    store = ChatStore.open(data_dir, undo_seconds=1.0)
    state = AppState(settings, backend=scripted_backend(), history=store)
    state.loaded.set()
    uvicorn.run(create_app(state), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
