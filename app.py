"""glm-vision entry point: settings -> engine -> FastAPI app (web UI + /v1 API) -> uvicorn.

    python app.py                       # web UI and API on http://127.0.0.1:8080
    python app.py --prompt "What is in this picture?" --image shot.png   # one answer, no server
    python app.py --help                # every flag (each also readable from GLMV_<FLAG>)
"""

from __future__ import annotations

import logging
import sys

from glm_vision.settings import load_settings

log = logging.getLogger("glm_vision")


def answer_once(settings) -> int:
    """Load the engine, stream one answer to stdout, exit."""
    from glm_vision.conversation import Message, StreamSplitter
    from glm_vision.backend import EngineError, GenerationRequest, SamplingParams, TextDelta
    from glm_vision.engine import Engine
    from glm_vision.images import ImageError, load_media

    try:
        images = [page for path in settings.image for page in load_media(
            path, max_bytes=settings.max_upload_bytes, max_pages=settings.pdf_max_pages, pdf_dpi=settings.pdf_dpi
        )]
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = Engine.load(settings)
    request = GenerationRequest(
        [Message("user", settings.prompt or "", images)],
        SamplingParams(max_new_tokens=settings.max_new_tokens),
        enable_thinking=settings.thinking,
    )
    splitter = StreamSplitter()
    in_reasoning = False
    try:
        handle = engine.submit(request)
        for item in handle:
            if isinstance(item, TextDelta):
                reasoning, answer = splitter.feed(item.text)
                if reasoning and not in_reasoning:
                    print("[thinking] ", end="", file=sys.stderr)
                    in_reasoning = True
                if reasoning:
                    print(reasoning, end="", file=sys.stderr, flush=True)
                if answer:
                    print(answer, end="", flush=True)
        reasoning, answer = splitter.flush()
        print(answer)
        usage = handle.result.usage
        log.info(
            "%d prompt tokens, %d new tokens, first token after %.0f ms, %.1f tokens/s",
            usage.prompt_tokens, usage.completion_tokens, usage.ttft_s * 1000, usage.decode_tokens_per_s,
        )
    except EngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        engine.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(argv)
    from glm_vision.backend import ModelLoadError

    try:
        if settings.prompt is not None:
            return answer_once(settings)
        from glm_vision.server import serve

        return serve(settings)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


def exit_now(code: int) -> None:
    """Leave without the interpreter's native teardown: everything is written and the engine stopped,
    and a native library has been seen to abort there ("terminate called without an active exception")."""
    import atexit
    import os

    atexit._run_exitfuncs()  # our own clean-up (the private upload directory, logging) still runs
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
