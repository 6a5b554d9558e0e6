"""GPU work for one request: encode new images, prefill only the uncached suffix, decode.

Runs on the worker thread only. It uses the plain transformers modules of the loaded model with
explicit 3-D M-RoPE position ids, so no shared `rope_deltas` state is read or written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch
from transformers import DynamicCache

from ..cache import FeatureCache, ImageFeatures, reusable_prefix
from ..conversation import Message
from ..sessions import KVState, Session
from .decode import SlabDecoder
from .loader import LoadedModel
from .prompt import Prompt, PromptBuilder, PromptImage
from .sampling import Sampler
from .textstream import IncrementalDetokenizer, StopStrings
from .types import ContextOverflowError, GenerationRequest, GenerationResult, GpuOutOfMemoryError, Usage


class _NoEvent:
    """CPU stand-in for a CUDA event: work is already synchronous."""

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (model.generation_config.eos_token_id, model.config.get_text_config().eos_token_id):
        if source is None:
            continue
        ids.update(source if isinstance(source, (list, tuple)) else [source])
    for token in ("<|endoftext|>", "<|user|>", "<|observation|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return ids


def crop_cache(cache, length: int) -> None:
    """Keep the first `length` tokens (transformers >= 5.24 crops by minus the number of tokens to remove)."""
    surplus = cache.get_seq_length() - length
    if surplus > 0:
        cache.crop(-surplus)


class ModelRunner:
    def __init__(
        self,
        loaded: LoadedModel,
        features: FeatureCache,
        *,
        max_context_tokens: int,
        default_max_image_tokens: int,
        decoder: SlabDecoder | None = None,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        self.config = self.model.config
        self.device = torch.device(loaded.device)
        self.features = features
        self.max_context_tokens = max_context_tokens
        self.default_max_image_tokens = default_max_image_tokens
        self.builder = PromptBuilder(self.processor, self.config.image_token_id)
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        text = self.config.get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.kv_bytes_per_token = (
            text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * self.model.dtype.itemsize
        )
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.embed_tokens = self.model.get_input_embeddings()
        self.decoder = decoder
        pinned = self.device.type == "cuda"
        self._host_token = torch.zeros(1, dtype=torch.long, pin_memory=pinned)
        self._copied = torch.cuda.Event() if pinned else _NoEvent()

    # ------------------------------------------------------------------ prompt
    def build_prompt(self, request: GenerationRequest) -> Prompt:
        budget = request.max_image_tokens or self.default_max_image_tokens
        budget = min(budget, self.default_max_image_tokens)
        prompt = self.builder.build(request.messages, enable_thinking=request.enable_thinking, max_image_tokens=budget)
        if len(prompt) >= self.max_context_tokens:
            raise ContextOverflowError(
                f"the conversation is {len(prompt):,} tokens long; the context limit is {self.max_context_tokens:,} "
                "tokens (prompt and answer together). Remove images, lower the image resolution budget or start a new chat"
            )
        return prompt

    def positions(self, prompt: Prompt) -> torch.Tensor:
        """(3, 1, len) M-RoPE positions for the whole prompt, as the model itself computes them."""
        ids = torch.tensor([prompt.ids], dtype=torch.long)
        types = torch.tensor([prompt.mm_token_type_ids], dtype=torch.int)
        grids = torch.tensor([img.grid_thw for img in prompt.images], dtype=torch.long) if prompt.images else None
        position_ids, _ = self.model.model.get_rope_index(ids, types, image_grid_thw=grids)
        return position_ids

    # ------------------------------------------------------------------ vision
    def encode_images(self, images: list[PromptImage], size: dict[str, int]) -> list[torch.Tensor]:
        if not images:
            return []
        inputs = self.builder.image_processor(
            images=[img.image.image for img in images], size=size, return_tensors="pt", device=self.device
        )
        grids = inputs["image_grid_thw"]
        for img, grid in zip(images, grids.tolist()):
            if tuple(grid) != img.grid_thw:
                raise RuntimeError(f"image grid {grid} differs from the predicted {img.grid_thw}")
        pixel_values = inputs["pixel_values"].to(self.device, self.model.model.visual.dtype)
        out = self.model.model.get_image_features(pixel_values, grids.to(self.device), return_dict=True)
        return list(out.pooler_output)

    def image_features(self, images: list[PromptImage], scope: str | None, size: dict[str, int], usage: Usage) -> dict[int, torch.Tensor]:
        """Features for each image (by start index), from the cache where possible, one encoder call for the rest."""
        found: dict[int, torch.Tensor] = {}
        missing: list[PromptImage] = []
        for img in images:
            cached = self.features.get(scope, img.key) if scope is not None else None
            if cached is not None and cached.grid_thw == img.grid_thw:
                found[img.start] = cached.embeds
                usage.image_cache_hits += 1
            else:
                missing.append(img)
        unique: dict[str, PromptImage] = {}
        for img in missing:
            unique.setdefault(img.key, img)
        if unique:
            started = time.perf_counter()
            encoded = dict(zip(unique, self.encode_images(list(unique.values()), size)))
            usage.encode_s += time.perf_counter() - started
            usage.images_encoded += len(unique)
            for key, embeds in encoded.items():
                if scope is not None:
                    self.features.put(scope, key, ImageFeatures(embeds=embeds, grid_thw=unique[key].grid_thw))
            for img in missing:
                found[img.start] = encoded[img.key]
        return found

    # ------------------------------------------------------------------ model steps
    def _forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        out = self.model(inputs_embeds=embeds, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1]

    def prefill(self, prompt: Prompt, start: int, cache, features: dict[int, torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
        ids = torch.tensor([prompt.ids[start:]], dtype=torch.long, device=self.device)
        embeds = self.embed_tokens(ids)
        for img in prompt.images:
            if img.start >= start:
                embeds[0, img.start - start : img.end - start] = features[img.start].to(embeds.dtype)
        return self._forward(embeds, positions[:, :, start:].to(self.device), cache)

    def decode_step(self, token: torch.Tensor, position: int, cache) -> torch.Tensor:
        embeds = self.embed_tokens(token.view(1, 1))
        positions = torch.full((3, 1, 1), position, dtype=torch.long, device=self.device)
        return self._forward(embeds, positions, cache)

    # ------------------------------------------------------------------ one request
    @torch.inference_mode()
    def generate(
        self,
        request: GenerationRequest,
        session: Session | None,
        cancel: threading.Event,
        emit: Callable[[str], None],
    ) -> GenerationResult:
        try:
            return self._generate(request, session, cancel, emit)
        except torch.OutOfMemoryError:
            if session is not None:
                session.kv = None
            self.free_memory()
            raise GpuOutOfMemoryError(
                "the GPU ran out of memory for this request; lower the image resolution budget, send fewer "
                "images or start a new chat. The server is still running."
            ) from None

    def free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _generate(self, request: GenerationRequest, session: Session | None, cancel: threading.Event, emit) -> GenerationResult:
        started = time.perf_counter()
        usage = Usage()
        prompt = self.build_prompt(request)
        usage.prompt_tokens = len(prompt)
        usage.images = len(prompt.images)
        max_new = min(request.sampling.max_new_tokens, self.max_context_tokens - len(prompt))
        scope = (request.cache_scope or session.id) if session is not None else None

        kv = session.kv if session is not None else None
        if kv is not None:
            reuse = reusable_prefix(kv.keys, prompt.keys)
            cache = kv.cache
            crop_cache(cache, reuse)
        else:
            reuse, cache = 0, DynamicCache(config=self.config)
        if session is not None:
            session.kv = None  # rebuilt below; a failure mid-way must not leave a half-updated cache behind
        usage.cached_tokens = reuse

        positions = self.positions(prompt)
        size = self.builder.size_for(min(request.max_image_tokens or self.default_max_image_tokens, self.default_max_image_tokens))
        features = self.image_features([img for img in prompt.images if img.start >= reuse], scope, size, usage)
        logits = self.prefill(prompt, reuse, cache, features, positions)
        first_logits = logits.float().cpu() if request.capture_logits else None
        next_position = int(positions.max()) + 1
        keys = list(prompt.keys)

        sampler = Sampler(request.sampling, self.vocab_size, self.device, prompt.ids, self.stop_ids)
        detok = IncrementalDetokenizer(self.tokenizer)
        stops = StopStrings(request.sampling.stop)
        generated: list[int] = []
        text_parts: list[str] = []
        finish_reason = "length"
        first_token_at = None
        if self.decoder is not None:
            self.decoder.load(cache, len(keys))
            step = lambda token, position: self.decoder.step(token, position, len(keys))  # noqa: E731
        else:
            step = lambda token, position: self.decode_step(token, position, cache)  # noqa: E731
        token = sampler(logits)
        while True:
            # Queue the next step before reading this token on the host, so the GPU never waits for
            # Python: the host copy is ordered before the step on the stream and waited for alone.
            self._host_token.copy_(token.view(1), non_blocking=True)
            self._copied.record()
            launched = len(generated) + 1 < max_new
            if launched:
                logits = step(token, next_position)
            self._copied.synchronize()
            token_id = int(self._host_token[0])
            if first_token_at is None:
                first_token_at = time.perf_counter()
                usage.ttft_s = first_token_at - started
            if token_id in self.stop_ids:
                finish_reason = "stop"
                break
            generated.append(token_id)
            delta = stops.feed(detok.push(token_id))
            if delta:
                text_parts.append(delta)
                emit(delta)
            if stops.stopped:
                finish_reason = "stop"
                break
            if cancel.is_set():
                finish_reason = "cancelled"
                break
            if not launched:
                break
            keys.append(token_id)  # its KV was written by the step just launched
            next_position += 1
            token = sampler(logits)
        # A step launched for a token that ended the answer wrote KV nobody will read: drop it.
        if self.decoder is not None:
            self.decoder.export(cache, len(prompt), len(keys))
        else:
            crop_cache(cache, len(keys))
        if not stops.stopped:
            tail = stops.feed(detok.flush())
            if not stops.stopped:
                tail += stops.flush()
            if tail:
                text_parts.append(tail)
                emit(tail)
        usage.completion_tokens = len(generated)
        if first_token_at is not None:
            usage.decode_s = time.perf_counter() - first_token_at
        if session is not None:
            session.kv = KVState(cache=cache, keys=keys, bytes_per_token=self.kv_bytes_per_token)
        return GenerationResult(
            text="".join(text_parts),
            finish_reason=finish_reason,
            usage=usage,
            token_ids=tuple(generated),
            first_logits=first_logits,
        )
