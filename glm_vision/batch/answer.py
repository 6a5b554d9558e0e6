"""One image, one question, one record."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..annotate import draw_annotations
from ..backend import MAX_TOP_LOGPROBS, EngineError, GenerationRequest, SamplingParams
from ..conversation import Message, split_output
from ..grounding import annotate_answer
from ..images import ImageError, load_media
from .results import FIELDS

log = logging.getLogger("glm_vision.batch")


def make_backend(args):
    from ..settings import Settings

    if args.api_base:
        from ..remote import RemoteBackend

        settings = Settings(
            backend="openai",
            api_base=args.api_base,
            remote_api_key=args.api_key,
            remote_model=args.remote_model,
            queue_size=max(1, args.concurrency),
            max_upload_mb=args.max_upload_mb,
        )
        return RemoteBackend.connect(settings, wait_s=5.0)
    from ..engine import Engine

    values = {
        "model": args.model,
        "device": args.device,
        "max_upload_mb": args.max_upload_mb,
        "queue_size": max(1, args.concurrency) + 1,
    }
    if args.max_pixels:
        values["max_pixels"] = args.max_pixels
    return Engine.load(Settings(**values))


def request_for(images, work, args) -> GenerationRequest:
    messages = [Message("system", args.system)] if args.system else []
    messages.append(Message("user", work.prompt, images))
    sampling = {"max_new_tokens": args.max_tokens}
    if args.temperature is not None:
        sampling["temperature"] = args.temperature
    if args.seed is not None:
        sampling["seed"] = args.seed
    if work.format.choices:  # each choice's probability comes from the first answer token's alternatives
        sampling.update(logprobs=True, top_logprobs=MAX_TOP_LOGPROBS)
    return GenerationRequest(
        messages,
        SamplingParams(**sampling),
        session_id="batch",
        cache_scope="batch",
        enable_thinking=not args.no_thinking,
        constraint=work.format.constraint,
        thinking_budget=args.thinking_budget,
    )


def answer_one(backend, path: str, work, args) -> dict:
    """The record of one image: the answer and its numbers, or the error (numbers null) — never raises."""
    started = time.perf_counter()
    record = dict.fromkeys(FIELDS + work.format.fields() + work.format.columns())
    record.update(image=path, prompt=work.prompt, run=work.key, error="")
    try:
        images = load_media(path, max_bytes=int(args.max_upload_mb * 1e6))
        request = request_for(images, work, args)
        result = backend.submit(request).wait()
        parsed = split_output(result.text)
        annotations = annotate_answer(result.text, request.messages)
        usage = result.usage
        record.update(
            answer=parsed.answer,
            grounding=[a.to_json() for a in annotations],
            reasoning=parsed.reasoning,
            finish_reason=result.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            ttft_s=round(usage.ttft_s, 4),
        )
        work.format.fill(record, parsed.answer, result.logprobs)
        if getattr(args, "annotate", None):
            write_annotated(images, annotations, annotated_path(args.annotate, path, getattr(work, "root", "")))
    except ImageError as exc:
        record["error"] = f"bad image: {exc}"
    except EngineError as exc:
        record["error"] = exc.message
    except Exception as exc:  # noqa: BLE001 - one image must never end the run
        log.exception("unexpected failure on %s", path)
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def annotated_path(folder: Path, path: str, root: str) -> Path:
    """Where `--annotate` writes an input's drawing: its path below the inputs' common folder, as PNG
    (`shots/a.png` -> `DIR/a.png`, `shots/b.jpg` -> `DIR/b.jpg.png`, a PDF's pages `doc.pdf.p1.png`...)."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root)) if root else os.path.basename(path)
    if relative.startswith(".."):
        relative = os.path.basename(path)
    return Path(folder) / relative


def write_annotated(images, annotations, target: Path) -> None:
    """Each image of an input with its boxes and points drawn (an image without any is written as is)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        if len(images) > 1:
            name = f"{target.name}.p{index + 1}.png"
        else:
            name = target.name if target.suffix.lower() == ".png" else target.name + ".png"
        draw_annotations(image.image, annotations, image_index=index).save(target.with_name(name))
