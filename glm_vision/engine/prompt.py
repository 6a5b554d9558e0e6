"""Turn a conversation into the model's token ids, per-token cache keys and image spans.

The ids are exactly what the checkpoint's processor produces (the chat template rendered, each
image placeholder expanded to one token per 28x28 block), but the images' grids are computed from
their sizes alone, so an image whose features are cached or whose KV is reused is never
preprocessed again.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, replace

from transformers.models.glm46v.image_processing_glm46v import smart_resize

from ..conversation import (
    BOX_CLOSE,
    BOX_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    Message,
    conversation_images,
    to_template_messages,
)
from ..images import InputImage
from ..settings import PIXELS_PER_IMAGE_TOKEN
from ..tool_calls import TOOL_TAGS
from .cache import TokenKey

# What the model writes in its answers as control tokens; kept as such when an answer is sent back.
ANSWER_TOKENS = (BOX_OPEN, BOX_CLOSE, THINK_OPEN, THINK_CLOSE, *TOOL_TAGS)
ANSWER_TOKEN_TEXT = re.compile("(" + "|".join(re.escape(token) for token in ANSWER_TOKENS) + ")")
LITERAL_MARK = "\ue000"  # a private-use character around the index of a literal text in the rendered template


def repeated_to_length(tokenizer, sentence: str, tokens: int) -> str:
    """`sentence` repeated to about `tokens` tokens (at least once): warm-up's long prompt, the benches'
    fillers."""
    per = len(tokenizer(sentence * 16)["input_ids"]) / 16  # repeated: no sentence-start tokens counted each time
    return sentence * max(1, int(tokens / per))


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
        control = sorted(self.tokenizer.get_added_vocab(), key=len, reverse=True)
        self._control_text = re.compile("|".join(re.escape(token) for token in control)) if control else None

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

    def render(self, messages: list[Message], enable_thinking: bool, tools: list[dict] | None = None) -> str:
        return self.processor.apply_chat_template(
            to_template_messages(messages),
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=enable_thinking,
        )

    def tokenize(self, messages: list[Message], enable_thinking: bool, tools: list[dict] | None = None) -> list[int]:
        """The rendered conversation's ids, with what users and system prompts wrote taken literally:
        `<|image|>` or `<|assistant|>` typed by a person is text, never a control token (only the
        template and the model's own answers produce those)."""
        literal: dict[str, tuple[str, bool]] = {}
        nonce = secrets.token_hex(8)  # so that no text a user writes can pose as a marker
        marked = [self._mark_literal(message, literal, nonce) for message in messages]
        text = self.render(marked, enable_thinking, tools)
        if not literal:
            return self.tokenizer(text)["input_ids"]
        ids: list[int] = []
        for piece in re.split(f"({LITERAL_MARK}{nonce}\\d+{LITERAL_MARK})", text):
            if piece in literal:
                ids += self._literal_ids(*literal[piece])
            elif piece:
                ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids

    def _literal_ids(self, text: str, answer_tokens: bool) -> list[int]:
        """Text taken literally; in the model's own answers, its answer markers stay control tokens."""
        pieces = ANSWER_TOKEN_TEXT.split(text) if answer_tokens else [text]
        ids: list[int] = []
        for piece in filter(None, pieces):
            kept = answer_tokens and piece in ANSWER_TOKENS
            ids += self.tokenizer(piece, add_special_tokens=False, split_special_tokens=not kept)["input_ids"]
        return ids

    def _mark_literal(self, message: Message, literal: dict[str, tuple[str, bool]], nonce: str) -> Message:
        """The message with its text swapped for a marker when that text holds control-token strings
        (in an assistant's answer: any but the markers answers are made of)."""
        if self._control_text is None:
            return message
        answer = message.role == "assistant"
        found = {m.group(0) for m in self._control_text.finditer(message.text)}
        if not found or (answer and found <= set(ANSWER_TOKENS)):
            return message
        mark = f"{LITERAL_MARK}{nonce}{len(literal)}{LITERAL_MARK}"
        literal[mark] = (message.text, answer)
        return replace(message, text=mark)

    def build(
        self, messages: list[Message], *, enable_thinking: bool, max_image_tokens: int, tools: list[dict] | None = None
    ) -> Prompt:
        size = self.size_for(max_image_tokens)
        template_ids = self.tokenize(messages, enable_thinking, tools)
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
