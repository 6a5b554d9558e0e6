"""The model's own vision tower, fed so that it never reads a value back from the GPU.

transformers derives the packing of a batch of pictures (cumulative lengths, patch positions) from
`grid_thw` on the device, and its attention layers read the per-picture lengths back to split the
sequence. On CUDA every such read, like every copy from pageable host memory, waits for the GPU to
drain its queue, so the CPU stops launching kernels ahead of it. The grids are known on the host
before any pixel is, so the packing is computed here (by transformers' own functions, on CPU
tensors), copied without blocking, and the layers (vision_block.py: transformers' math with the
elementwise work fused and the fastest attention kernel) split by the host copy of the lengths.

An `EncodeJob` runs the tower a few layers at a time, so that the scheduler can spread a large
picture's encoder work over several steps while other streams decode. One job takes the pictures of
several requests (the scheduler batches those waiting for the encoder); each picture attends only
to its own patches, as in transformers.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

from ..settings import MAX_IMAGE_TOKENS
from .fused_weights import fuse_vision
from .transfer import to_device
from .vision_block import VisionBlocks
from .vision_embed import add_position_embeddings, embed_patches
from .vision_merge import PatchMerger


class VisionEncoder:
    def __init__(
        self, model, *, compile_math: bool = False, attention_backends=None, max_image_tokens: int = MAX_IMAGE_TOKENS
    ) -> None:
        self.visual = model.model.visual
        self.merge = self.visual.spatial_merge_size
        self.device = next(self.visual.parameters()).device
        patches = max_image_tokens * self.merge**2  # of the largest picture a request may send
        fuse_vision(self.visual)
        self.layers = VisionBlocks(
            self.visual, compile_math=compile_math, max_patches=patches, backends=attention_backends
        )
        self.merger = PatchMerger(self.visual, compile_math=compile_math)
        self.block_weights = sum(p.numel() for p in self.visual.blocks[0].parameters())
        self.hidden = self.visual.config.hidden_size

    def start(self, pixel_values: torch.Tensor, grids: list[tuple[int, int, int]]) -> EncodeJob:
        return EncodeJob(self, pixel_values, grids)

    def encode(self, pixel_values: torch.Tensor, grids: list[tuple[int, int, int]]) -> list[torch.Tensor]:
        """Features of each picture, (tokens, hidden) each; `pixel_values` as the processor made them."""
        job = self.start(pixel_values, grids)
        job.advance()
        return job.features


class EncodeJob:
    """One encoder call that can run a few layers at a time (the patch embedding with the first, the
    merger with the last), so that a large picture's encoder work is spread over several scheduler
    steps instead of stalling every other stream's next token for all of it. The steps compute
    transformers' `Glm4vVisionModel.forward`, fed the packing computed on the host."""

    def __init__(self, encoder: VisionEncoder, pixel_values: torch.Tensor, grids: list[tuple[int, int, int]]) -> None:
        self.encoder = encoder
        self.grids = grids
        host_grid = torch.tensor(grids, dtype=torch.long)
        self._host_cu = get_vision_cu_seqlens(host_grid)
        device = encoder.device
        self._grid = to_device(host_grid, None, device)
        self._positions = to_device(get_vision_position_ids(host_grid, encoder.merge), None, device)
        self._lengths = self._host_cu[1:] - self._host_cu[:-1]  # patches per picture
        self._host_lengths = self._lengths.tolist()
        self._device_lengths = to_device(self._lengths, None, device)
        self._pixels = pixel_values.to(encoder.visual.dtype)
        self._hidden = self._rotary = None
        self.next_block = 0
        self.features: list[torch.Tensor] | None = None
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._cpu_s = 0.0

    @property
    def patches(self) -> int:
        return int(self._host_cu[-1])

    @property
    def done(self) -> bool:
        return self.features is not None

    @property
    def block_flops(self) -> float:
        """One layer's arithmetic: every patch multiplied by the layer's weights, and attention over
        its own picture's patches."""
        return 2 * self.patches * self.encoder.block_weights + 4 * int((self._lengths**2).sum()) * self.encoder.hidden

    @property
    def blocks_left(self) -> int:
        return len(self.encoder.visual.blocks) - self.next_block

    def blocks_for(self, flops: float) -> int:
        """How many layers cost about `flops` (at least one)."""
        return max(1, int(flops // self.block_flops))

    def advance(self, blocks: int | None = None) -> bool:
        """Run the next `blocks` layers (None: all that are left); True once the features are ready."""
        visual = self.encoder.visual
        end = len(visual.blocks) if blocks is None else min(len(visual.blocks), self.next_block + max(1, blocks))
        with self._timed():
            if self._hidden is None:
                self._embed(visual)
            for index in range(self.next_block, end):
                self._hidden = self.encoder.layers.run(index, self._hidden, self._rotary, self._host_lengths)
            self.next_block = end
            if end == len(visual.blocks):
                self._merge()
        return self.done

    def seconds(self) -> float:
        """Encoder time so far. On CUDA read from events: call it once the GPU has passed them (after
        a token that depends on the features was read), or it waits for them."""
        return self._cpu_s + sum(start.elapsed_time(end) for start, end in self._events) / 1000

    def _embed(self, visual) -> None:
        hidden = visual.post_conv_layernorm(embed_patches(visual.patch_embed, self._pixels))
        self._rotary = visual.rotary_pos_emb(hidden, self._positions)
        self._hidden = add_position_embeddings(
            visual.embeddings, hidden, self._device_lengths, self._grid, self._positions[:, 0], self._positions[:, 1]
        )

    def _merge(self) -> None:
        merged = self.encoder.merger(self._hidden)
        sizes = [t * h * w // self.encoder.merge**2 for t, h, w in self.grids]
        self.features = list(merged.split(sizes))
        self._pixels = self._hidden = self._rotary = None

    @contextmanager
    def _timed(self):
        if self.encoder.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((start, end))
        else:
            started = time.perf_counter()
            yield
            self._cpu_s += time.perf_counter() - started
