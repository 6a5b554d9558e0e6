"""The `glm-vision` command (and `python app.py`): settings -> backend -> server, or one answer.

    glm-vision                       # web UI and API on http://127.0.0.1:8080
    glm-vision --prompt "What is in this picture?" --image shot.png   # one answer, no server
    glm-vision --help                # every flag (each also readable from GLMV_<FLAG>)

Exit status: 0 done, 1 the answer failed, 2 bad arguments or input, 3 the model (or remote server)
cannot be loaded, 4 the server cannot listen on its port.
"""

from __future__ import annotations

import logging
import sys

from .backend import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    ModelLoadError,
    SamplingParams,
    answer_deltas,
)
from .conversation import Message
from .images import ImageError, load_media
from .process import exit_now
from .settings import Settings, load_settings

log = logging.getLogger("glm_vision")


def read_images(settings: Settings) -> list:
    return [page for path in settings.image for page in load_media(path, **settings.upload_limits)]


def print_answer(handle) -> None:
    """Reasoning to stderr (after a '[thinking]' mark), the answer to stdout, as they arrive."""
    thinking_shown = False
    for item in answer_deltas(handle):
        if isinstance(item, GenerationResult):
            print()
            usage = item.usage
            log.info(
                "%d prompt tokens, %d new tokens, first token after %.0f ms, %.1f tokens/s",
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.ttft_s * 1000,
                usage.decode_tokens_per_s,
            )
            continue
        if item.reasoning and not thinking_shown:
            print("[thinking] ", end="", file=sys.stderr)
            thinking_shown = True
        print(item.reasoning, end="", file=sys.stderr, flush=True)
        print(item.answer, end="", flush=True)


def answer_once(settings: Settings) -> int:
    """Load the backend, stream one answer to stdout, exit."""
    from .server import load_backend

    try:
        images = read_images(settings)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = load_backend(settings, warm=False)
    request = GenerationRequest(
        [Message("user", settings.prompt or "", images)],
        SamplingParams(max_new_tokens=settings.max_new_tokens),
        enable_thinking=settings.thinking,
    )
    try:
        print_answer(backend.submit(request))
    except EngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        backend.shutdown()
    return 0


def main(argv: list[str] | None = None, prog: str = "app.py") -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(argv, prog=prog)
    try:
        if settings.prompt is not None:
            return answer_once(settings)
        from .server import serve

        return serve(settings)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


def entry_point() -> None:
    """The console script: everything is written and the backend stopped when main returns."""
    exit_now(main(prog="glm-vision"))
