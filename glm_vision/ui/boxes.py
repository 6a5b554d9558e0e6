"""GLM's boxes and points in the web UI and its exports: for an answer with groundings, the picture it
refers to with the boxes drawn (numbered, labelled, one colour each: `annotate.draw_annotations`)."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..annotate import draw_annotations, tag
from ..grounding import Annotation, find_groundings, reply_images, resolve
from .tempfiles import keyed_name
from .transcript import ChatImage, Transcript


@dataclass(frozen=True)
class Boxed:
    """One picture of the chat with an answer's annotations drawn on it."""

    image_index: int  # among all the chat's pictures, in order
    picture: ChatImage  # the original
    annotations: tuple[Annotation, ...]

    @property
    def name(self) -> str:
        return self.picture.name

    def drawn(self) -> Image.Image:
        return draw_annotations(self.picture.image.image, self.annotations)

    @property
    def alt(self) -> str:
        return f"{Path(self.name).stem or 'image'}: " + ", ".join(tag(a) for a in self.annotations)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.drawn().save(buffer, format="PNG", compress_level=6)
        return buffer.getvalue()

    @property
    def key(self) -> str:
        """What the drawing depends on: the picture's pixels and the annotations."""
        body = json.dumps([a.to_json() for a in self.annotations], sort_keys=True)
        return hashlib.sha256(f"{self.picture.digest}|{self.name}|{body}".encode()).hexdigest()


def answer_pictures(transcript: Transcript, index: int) -> list[Boxed]:
    """The pictures the assistant answer at turn `index` puts boxes or points on (none without any)."""
    turn = transcript.turns[index]
    if turn.role != "assistant" or not turn.text:
        return []
    messages = transcript.engine_messages()[:index]
    annotations = resolve(find_groundings(turn.text), reply_images(messages))
    if not annotations:
        return []
    chat_images: list[ChatImage] = [img for t in transcript.turns[:index] if t.role == "user" for img in t.images]
    return [
        Boxed(i, chat_images[i], tuple(a for a in annotations if a.image_index == i))
        for i in sorted({a.image_index for a in annotations})
        if 0 <= i < len(chat_images)
    ]


def picture_file(boxed: Boxed, folder: Path) -> str:
    """The annotated picture as a PNG under `folder` (written once per picture and annotations)."""
    path = folder / keyed_name("boxes:" + boxed.key) / f"{Path(boxed.name).stem or 'image'}-boxes.png"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.parent / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(boxed.png())
        tmp.replace(path)
    return str(path)
