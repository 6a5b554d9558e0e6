"""A chat as the web UI keeps it: turns with their images, answers, reasoning and usage, and its
stand-alone file forms (JSON with the images embedded as base64 PNG, and Markdown).

The same JSON is what the browser stores for a tab (so a reload or a server restart keeps the chat)
and what "Export JSON" downloads; "Import JSON" reads it back, decoding every image through
`images.load_media` again so an imported file gets the same checks as an upload.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from dataclasses import dataclass, field

from ..conversation import Message
from ..images import ImageError, InputImage, load_media
from .markdown import literal, render_boxes

FORMAT = "glm-vision-chat"
VERSION = 1


@dataclass
class ChatImage:
    image: InputImage
    name: str = "image.png"
    _png: bytes | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        return self.image.digest

    @property
    def notes(self) -> tuple[str, ...]:
        return self.image.notes

    def png(self) -> bytes:
        """Lossless PNG of the normalised pixels: decoding it gives the same digest."""
        if self._png is None:
            buffer = io.BytesIO()
            self.image.image.save(buffer, format="PNG", optimize=False, compress_level=6)
            self._png = buffer.getvalue()
        return self._png


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    text: str = ""  # assistant: the answer as the model wrote it (box markers kept), reasoning excluded
    images: list[ChatImage] = field(default_factory=list)
    reasoning: str = ""
    finish_reason: str = ""
    usage: dict = field(default_factory=dict)
    error: str = ""  # a user turn whose answer failed: the message shown under it


@dataclass
class Transcript:
    turns: list[Turn] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    def copy(self) -> Transcript:
        return Transcript(
            [
                Turn(t.role, t.text, list(t.images), t.reasoning, t.finish_reason, dict(t.usage), t.error)
                for t in self.turns
            ],
            self.created,
        )

    def engine_messages(self, system_prompt: str = "") -> list[Message]:
        """What the model sees: the system prompt, then each turn (answers without reasoning)."""
        messages = [Message("system", system_prompt.strip())] if system_prompt.strip() else []
        for turn in self.turns:
            images = [img.image for img in turn.images] if turn.role == "user" else []
            messages.append(Message(turn.role, turn.text, images))
        return messages

    @property
    def title(self) -> str:
        for turn in self.turns:
            if turn.role == "user" and turn.text.strip():
                return turn.text.strip().splitlines()[0][:60]
        return "chat"


# ---------------------------------------------------------------------- JSON
def to_json(transcript: Transcript, *, settings: dict | None = None, drawn: bool = True) -> str:
    """The chat as JSON. With `drawn` (the export), an answer with boxes or points also carries them
    (`annotations`, as the API gives them) and its pictures with them drawn (`annotated_images`); the
    browser's own copy leaves both out (they are derived, and browser storage is small)."""
    from .boxes import answer_pictures  # boxes.py builds on this module

    turns = []
    for index, turn in enumerate(transcript.turns):
        item: dict = {"role": turn.role, "text": turn.text}
        if turn.role == "user":
            item["images"] = [
                {
                    "name": img.name,
                    "mime": "image/png",
                    "digest": img.digest,
                    "notes": list(img.notes),
                    "data": base64.b64encode(img.png()).decode("ascii"),
                }
                for img in turn.images
            ]
            if turn.error:
                item["error"] = turn.error
        else:
            item.update(reasoning=turn.reasoning, finish_reason=turn.finish_reason, usage=turn.usage)
            pictures = answer_pictures(transcript, index) if drawn else []
            if pictures:  # derived from the text and the pictures (an import draws them again): for readers
                item["annotations"] = [a.to_json() for p in pictures for a in p.annotations]
                item["annotated_images"] = [
                    {
                        "name": p.name,
                        "image_index": p.image_index,
                        "mime": "image/png",
                        "data": base64.b64encode(p.png()).decode("ascii"),
                    }
                    for p in pictures
                ]
        turns.append(item)
    body = {
        "format": FORMAT,
        "version": VERSION,
        "created": transcript.created,
        "exported": time.time(),
        "messages": turns,
    }
    if settings is not None:
        body["settings"] = settings
    return json.dumps(body, ensure_ascii=False)


def from_json(
    text: str | bytes, *, max_bytes: int | None = None, max_images_per_message: int = 64
) -> tuple[Transcript, dict]:
    """A transcript (and the settings saved with it) from an export; raises ImageError with a clear message."""
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"the file is not valid JSON ({exc}); import a glm-vision JSON export") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT or not isinstance(body.get("messages"), list):
        raise ImageError('the file is not a glm-vision chat export (expected "format": "glm-vision-chat")')
    turns: list[Turn] = []
    for index, item in enumerate(body["messages"]):
        if not isinstance(item, dict) or item.get("role") not in {"user", "assistant"}:
            raise ImageError(f"message {index + 1} has no valid role (user or assistant)")
        text = item.get("text", "")
        if not isinstance(text, str):
            raise ImageError(f"message {index + 1}: text must be a string")
        if item["role"] == "assistant":
            usage = item.get("usage") if isinstance(item.get("usage"), dict) else {}
            turns.append(
                Turn(
                    "assistant",
                    text,
                    reasoning=str(item.get("reasoning") or ""),
                    finish_reason=str(item.get("finish_reason") or ""),
                    usage=usage,
                )
            )
            continue
        raw_images = item.get("images") or []
        if len(raw_images) > max_images_per_message:
            raise ImageError(
                f"message {index + 1} has {len(raw_images)} images; at most {max_images_per_message} are accepted"
            )
        images = []
        for number, raw in enumerate(raw_images, 1):
            try:
                data = base64.b64decode(raw["data"], validate=True)
            except (KeyError, TypeError, ValueError):
                raise ImageError(
                    f"message {index + 1}, image {number}: the embedded image data is not valid base64"
                ) from None
            try:
                decoded = load_media(data, max_bytes=max_bytes, max_pages=1)
            except ImageError as exc:
                raise ImageError(f"message {index + 1}, image {number}: {exc}") from None
            image = decoded[0]
            notes = tuple(str(n) for n in raw.get("notes") or ())
            images.append(
                ChatImage(
                    InputImage(image.image, image.digest, notes), safe_name(str(raw.get("name") or "image.png")), data
                )
            )
        turns.append(Turn("user", text, images, error=str(item.get("error") or "")))
    created = body.get("created")
    transcript = Transcript(turns, float(created) if isinstance(created, (int, float)) else time.time())
    settings = body.get("settings") if isinstance(body.get("settings"), dict) else {}
    return transcript, settings


# ---------------------------------------------------------------------- Markdown
def to_markdown(transcript: Transcript, *, model: str = "", settings: dict | None = None) -> str:
    """A readable Markdown file; images are embedded as data URLs so the file stands alone. The user's
    words and the system prompt show literally (see `markdown.literal`)."""
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(transcript.created))
    lines = [
        f"# {literal(transcript.title)}",
        "",
        f"_glm-vision chat{' with ' + model if model else ''}, started {stamp}_",
        "",
    ]
    lines += _settings_lines(settings or {})
    for index, turn in enumerate(transcript.turns):
        lines += _user_lines(turn) if turn.role == "user" else _assistant_lines(turn) + _boxes_lines(transcript, index)
    return "\n".join(lines).rstrip() + "\n"


def _settings_lines(settings: dict) -> list[str]:
    lines = []
    if settings.get("system_prompt"):
        lines += ["**System prompt**", "", _paragraph(settings["system_prompt"]), ""]
    values = [f"{name.replace('_', ' ')} {value}" for name, value in settings.items() if name != "system_prompt"]
    return lines + (["**Settings** " + " · ".join(values), ""] if values else [])


def _user_lines(turn: Turn) -> list[str]:
    lines = ["## User", ""]
    for img in turn.images:
        data = base64.b64encode(img.png()).decode("ascii")
        lines += [f"![{_md_alt(img.name)}](data:image/png;base64,{data})", ""]
    lines += [_paragraph(turn.text), ""]
    return lines + ([f"> Error: {literal(turn.error)}", ""] if turn.error else [])


def _assistant_lines(turn: Turn) -> list[str]:
    lines = ["## Assistant", ""]
    if turn.reasoning:
        lines += ["<details><summary>Reasoning</summary>", "", turn.reasoning, "", "</details>", ""]
    lines += [render_boxes(turn.text), ""]
    return lines + (["_(stopped)_", ""] if turn.finish_reason == "cancelled" else [])


def _boxes_lines(transcript: Transcript, index: int) -> list[str]:
    """The pictures an answer put boxes or points on, with them drawn (numbered and labelled)."""
    from .boxes import answer_pictures  # boxes.py builds on this module

    lines = []
    for picture in answer_pictures(transcript, index):
        data = base64.b64encode(picture.png()).decode("ascii")
        lines += [f"![{_md_alt(picture.alt)}](data:image/png;base64,{data})", ""]
    return lines


def _paragraph(text: str) -> str:
    """Typed text as it was typed: literal characters, every line break kept."""
    return literal(text).replace("\n", "  \n")


def _md_alt(name: str) -> str:
    return re.sub(r"[\[\]\n]", "", name)[:80] or "image"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, default: str = "file") -> str:
    """A file name safe on every OS: ASCII letters, digits, dot, dash, underscore; no leading dots."""
    cleaned = _UNSAFE.sub("-", name.replace("\\", "/").rsplit("/", 1)[-1]).strip("-.")
    return cleaned[:80] or default


def export_name(transcript: Transcript, extension: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    return f"glm-vision-{safe_name(transcript.title.lower(), 'chat')[:40]}-{stamp}.{extension}"
