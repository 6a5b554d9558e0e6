"""What the web UI shows: a transcript as Chatbot messages (with the map back to turns), the chat's
images as files Gradio can serve, and the status panel. Pure functions of their inputs, no Gradio state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from .boxes import answer_pictures, picture_file
from .markdown import literal, render_boxes, unliteral
from .overlay import marked_answer, overlay_html
from .tempfiles import keyed_name, private_dir
from .text import say
from .transcript import Transcript

IMAGE_DIR = private_dir("images")  # in the process's private temp dir (mode 0700)


@dataclass(frozen=True)
class Slot:
    """Which turn a Chatbot message shows, and which part of it."""

    turn: int
    part: str  # "image" | "text" | "reasoning" | "answer" | "boxes" (an answer's picture with its boxes drawn)
    # | "versions" (the `< 2/3 >` control of a turn Retry or Edit gave several versions)


def versions_text(number: int, count: int) -> str:
    """The version control as the chat shows it; the page's script turns the arrows into buttons."""
    return f"‹ {number}/{count} ›"


def version_forks(transcript: Transcript) -> list[int]:
    """The positions of the chat's version controls, in the order the chat shows them."""
    return sorted(at for at in transcript.forks if at <= len(transcript.turns))


def image_file(image) -> str:
    """The chat image as a PNG file Gradio can serve: in a folder named by a keyed hash of its pixels (a
    name no other user can derive from a picture they guess), under the picture's own name (what its
    download button saves)."""
    folder = IMAGE_DIR / keyed_name(image.digest)
    path = folder / f"{Path(image.name).stem or 'image'}.png"
    if not path.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(image.png())
        tmp.replace(path)
    return str(path)


def user_text(turn, lang: str) -> str:
    """A user's message as the chat shows it: their words literally, then the notes on its pictures."""
    notes = [say(lang, "note", note=n) for img in turn.images for n in img.notes]
    text = literal(turn.text) if turn.text.strip() else "🖼️"
    return text + ("\n\n" + "\n".join(f"_{literal(n)}_" for n in notes) if notes else "")


def typed_text(shown: str, turn, lang: str) -> str:
    """What the user meant by an edited message: the inverse of `user_text` (the Edit box holds what
    the chat showed)."""
    suffix = user_text(replace(turn, text="x"), lang)[len("x") :]
    if suffix and shown.endswith(suffix):
        shown = shown[: -len(suffix)]
    return "" if shown.strip() == "🖼️" else unliteral(shown)


def chat_messages(
    transcript: Transcript,
    lang: str,
    partial: tuple[str, str] | None = None,
    pending: bool = False,
    *,
    boxes: bool = True,
) -> tuple[list[dict], list[Slot]]:
    """Chatbot messages and, for each, the turn it belongs to. `partial` is the answer being written.
    With `boxes`, a finished answer with boxes or points is followed by its picture(s) with them laid over
    (ui/overlay.py)."""
    messages: list[dict] = []
    slots: list[Slot] = []
    for index, turn in enumerate(transcript.turns):
        _versions(messages, slots, transcript, index, turn.role)
        if turn.role == "user":
            for image in turn.images:
                messages.append({"role": "user", "content": {"path": image_file(image), "alt_text": image.name}})
                slots.append(Slot(index, "image"))
            messages.append({"role": "user", "content": user_text(turn, lang)})
            slots.append(Slot(index, "text"))
        else:
            pictures = answer_pictures(transcript, index) if boxes else []
            _assistant(
                messages,
                slots,
                index,
                turn.reasoning,
                _answer_markdown(turn.text, pictures, index),
                lang,
                stopped=turn.finish_reason == "cancelled",
            )
            for boxed in pictures:
                picture, drawn = image_file(boxed.picture), picture_file(boxed, IMAGE_DIR)
                messages.append({"role": "assistant", "content": overlay_html(boxed, index, picture, drawn)})
                slots.append(Slot(index, "boxes"))
    if partial is not None:
        reasoning, answer = partial
        _versions(messages, slots, transcript, len(transcript.turns), "assistant")
        _assistant(messages, slots, len(transcript.turns), reasoning, answer, lang, writing=pending)
    return messages, slots


def _answer_markdown(text: str, pictures, index: int) -> str:
    """A finished answer as the chat shows it; with its pictures shown, each box's text marked for the overlay."""
    annotations = [a for boxed in pictures for a in boxed.annotations]
    return marked_answer(text, annotations, index) if annotations else render_boxes(text)


def _versions(messages, slots, transcript: Transcript, index: int, role: str) -> None:
    version = transcript.version_of(index)
    if version is not None:
        messages.append({"role": role, "content": versions_text(*version)})
        slots.append(Slot(index, "versions"))


def _assistant(messages, slots, index, reasoning, answer, lang, *, stopped=False, writing=False) -> None:
    if reasoning:
        status = "pending" if writing and not answer else "done"
        messages.append(
            {"role": "assistant", "content": reasoning, "metadata": {"title": say(lang, "reasoning"), "status": status}}
        )
        slots.append(Slot(index, "reasoning"))
    if answer or not reasoning:
        text = answer if answer else ("…" if writing else "")
        if stopped:
            text += "\n\n_⏹_"
        messages.append({"role": "assistant", "content": text})
        slots.append(Slot(index, "answer"))


def status_markdown(state, lang: str, usage: dict | None = None, activity: str = "") -> str:
    """Model, device and demo banner; the last answer's speed and cache use; the current activity."""
    backend = state.backend
    lines = []
    if backend is None:
        lines.append(say(lang, "load_failed", error=state.load_error) if state.load_error else say(lang, "loading"))
    else:
        info = backend.info
        lines.append(say(lang, "model_line", model=info.model, device=info.device))
        if info.is_demo:
            lines.append(say(lang, "demo_banner"))
    if usage:
        lines.append(
            say(
                lang,
                "last_answer",
                ttft=f"{usage.get('ttft_s', 0) * 1000:.0f} ms",
                tps=f"{usage.get('decode_tokens_per_s', 0):.1f}",
                completion=usage.get("completion_tokens", 0),
                prompt=usage.get("prompt_tokens", 0),
                cached=usage.get("cached_tokens", 0),
                computed=usage.get("computed_tokens", 0),
                hits=usage.get("image_cache_hits", 0),
                encoded=usage.get("images_encoded", 0),
            )
        )
    if activity:
        lines.append(activity)
    return "\n\n".join(lines)


def usage_dict(usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "computed_tokens": usage.computed_tokens,
        "completion_tokens": usage.completion_tokens,
        "image_cache_hits": usage.image_cache_hits,
        "images_encoded": usage.images_encoded,
        "ttft_s": round(usage.ttft_s, 4),
        "decode_tokens_per_s": round(usage.decode_tokens_per_s, 2),
    }
