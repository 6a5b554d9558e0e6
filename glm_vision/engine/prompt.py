"""Turn a conversation into the model's token ids, per-token cache keys and image spans.

The ids are exactly what the checkpoint's processor produces (the chat template rendered, each
image placeholder expanded to one token per 28x28 block), but the images' grids are computed from
their sizes alone, so an image whose features are cached or whose KV is reused is never
preprocessed again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from transformers.models.glm46v.image_processing_glm46v import smart_resize

from .cache import TokenKey
from ..conversation import Message, conversation_images, to_template_messages
from ..images import InputImage
from ..settings import PIXELS_PER_IMAGE_TOKEN


@dataclass(frozen=True)
class PromptImage:
    image: InputImage
    key: str  # the cache key: pixels + preprocessing settings
    grid_thw: tuple[int, int, int]
    start: int  # index of its first image token
    num_tokens: int

    @property
    def end(self) -> int:
        return self.start + self.num_tokens


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    keys: list[TokenKey]
    mm_token_type_ids: list[int]
    images: list[PromptImage]

    def __len__(self) -> int:
        return len(self.ids)


class PromptBuilder:
    def __init__(self, processor, image_token_id: int) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.image_token_id = image_token_id
        ip = self.image_processor
        self.patch_size = ip.patch_size
        self.merge_size = ip.merge_size
        self.temporal_patch_size = ip.temporal_patch_size
        self.min_pixels = ip.size["shortest_edge"]
        self.max_processor_pixels = ip.size["longest_edge"]

    @property
    def max_tokens_per_image(self) -> int:
        """The most tokens the processor itself lets one image have, whatever the budget asked."""
        return self.max_processor_pixels // (PIXELS_PER_IMAGE_TOKEN * self.temporal_patch_size)

    def size_for(self, max_image_tokens: int) -> dict[str, int]:
        """The processor's `size` for a per-image token budget (its pixel counts include the temporal factor)."""
        longest = max_image_tokens * PIXELS_PER_IMAGE_TOKEN * self.temporal_patch_size
        return {"shortest_edge": self.min_pixels, "longest_edge": min(longest, self.max_processor_pixels)}

    def grid_for(self, image: InputImage, size: dict[str, int]) -> tuple[int, int, int]:
        width, height = image.size
        resized_h, resized_w = smart_resize(
            num_frames=self.temporal_patch_size,
            height=height,
            width=width,
            temporal_factor=self.temporal_patch_size,
            factor=self.patch_size * self.merge_size,
            min_pixels=size["shortest_edge"],
            max_pixels=size["longest_edge"],
        )
        return (1, resized_h // self.patch_size, resized_w // self.patch_size)

    def image_key(self, image: InputImage, size: dict[str, int]) -> str:
        settings = json.dumps([size, self.patch_size, self.merge_size, self.temporal_patch_size], sort_keys=True)
        return hashlib.sha256(f"{image.digest}|{settings}".encode()).hexdigest()[:32]

    def render(self, messages: list[Message], enable_thinking: bool) -> str:
        return self.processor.apply_chat_template(
            to_template_messages(messages),
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=enable_thinking,
        )

    def build(self, messages: list[Message], *, enable_thinking: bool, max_image_tokens: int) -> Prompt:
        size = self.size_for(max_image_tokens)
        text = self.render(messages, enable_thinking)
        template_ids = self.tokenizer(text)["input_ids"]
        images = conversation_images(messages)
        placeholders = sum(1 for t in template_ids if t == self.image_token_id)
        if placeholders != len(images):
            raise ValueError(f"the chat template produced {placeholders} image placeholders for {len(images)} images")
        ids: list[int] = []
        keys: list[TokenKey] = []
        types: list[int] = []
        spans: list[PromptImage] = []
        pending = iter(images)
        merge = self.merge_size**2
        for token in template_ids:
            if token != self.image_token_id:
                ids.append(token)
                keys.append(token)
                types.append(0)
                continue
            image = next(pending)
            grid = self.grid_for(image, size)
            count = grid[0] * grid[1] * grid[2] // merge
            key = self.image_key(image, size)
            spans.append(PromptImage(image=image, key=key, grid_thw=grid, start=len(ids), num_tokens=count))
            ids.extend([token] * count)
            keys.extend([key] * count)
            types.extend([1] * count)
        return Prompt(ids=ids, keys=keys, mm_token_type_ids=types, images=spans)
