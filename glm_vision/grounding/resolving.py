"""Which image each grounding is about, and its pixels there (see the package doc)."""

from __future__ import annotations

from collections.abc import Sequence

from ..conversation import IMAGE_ROLES, Message, split_output
from .marks import Annotation, Grounding, ImageSlot, to_pixels
from .parsing import find_groundings


def reply_images(messages: Sequence[Message]) -> list[ImageSlot]:
    """The images an answer to `messages` can mean, the default (the one the question is about) last:
    the images of the trailing user/tool turn, or every image of the conversation when it has none."""
    slots, turn, index = [], [], 0
    for message in messages:
        if message.role not in IMAGE_ROLES:
            turn = []
        for image in message.images:
            slot = ImageSlot(index, *image.size)
            slots.append(slot)
            turn.append(slot)
            index += 1
    return turn or slots


def resolve(groundings: Sequence[Grounding], slots: Sequence[ImageSlot]) -> list[Annotation]:
    """Tie each grounding to its image (see the module doc) and convert it to pixels; nothing without an image."""
    if not slots:
        return []
    annotations = []
    for number, grounding in enumerate(groundings, start=1):
        ref = grounding.image_ref
        slot = slots[ref - 1] if ref is not None and 1 <= ref <= len(slots) else slots[-1]
        annotations.append(
            Annotation(
                number=number,
                kind=grounding.kind,
                label=grounding.label,
                image_index=slot.index,
                coords=grounding.coords,
                pixels=to_pixels(grounding.kind, grounding.coords, slot.width, slot.height),
                image_size=(slot.width, slot.height),
                span=grounding.span,
                text=grounding.text,
            )
        )
    return annotations


def annotate_answer(output: str, messages: Sequence[Message]) -> list[Annotation]:
    """The annotations of a model output (reasoning and box markers included, as generated) that
    answers `messages`: the one call for a finished answer."""
    return resolve(find_groundings(split_output(output).raw_answer), reply_images(messages))
