"""The model's own vision tower, fed so that it never reads a value back from the GPU.

transformers derives the packing of a batch of pictures (cumulative lengths, patch positions) from
`grid_thw` on the device, and without flash-attn each of the tower's attention layers reads the
per-picture lengths back to split the sequence. On CUDA every such read, like every copy from
pageable host memory, waits for the GPU to drain its queue, so the CPU stops launching kernels
ahead of it. The grids are known on the host before any pixel is, so the packing is computed here
(by transformers' own functions, on CPU tensors), copied without blocking, and the attention
layers split by the host copy of the lengths.
"""

from __future__ import annotations

import threading
import types

import torch
from transformers.utils.generic import is_flash_attention_requested
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

from .transfer import to_device

_HOST = threading.local()  # `cu_seqlens` on the host while this thread runs VisionEncoder.encode


def _forward_with_host_lengths(attn, hidden_states, cu_seqlens=None, **kwargs):
    host = getattr(_HOST, "cu_seqlens", None)
    return type(attn).forward(attn, hidden_states, cu_seqlens=host if host is not None else cu_seqlens, **kwargs)


def _split_on_host(attn) -> None:
    """Make one attention layer take the host copy of `cu_seqlens` while `encode` runs; anyone else
    calling the model (transformers' own generate, in the tests and the benchmark) is unaffected.
    A bound method, so that a deep copy of the model gets one bound to its own layer."""
    if "forward" not in vars(attn):
        attn.forward = types.MethodType(_forward_with_host_lengths, attn)


class VisionEncoder:
    def __init__(self, model) -> None:
        self.visual = model.model.visual
        self.merge = self.visual.spatial_merge_size
        self.device = next(self.visual.parameters()).device
        # flash-attn takes the lengths on the device and reads nothing back: nothing to change
        self.split_on_host = not is_flash_attention_requested(self.visual.config)
        if self.split_on_host:
            for block in self.visual.blocks:
                _split_on_host(block.attn)

    def encode(self, pixel_values: torch.Tensor, grids: list[tuple[int, int, int]]) -> list[torch.Tensor]:
        """Features of each picture, (tokens, hidden) each; `pixel_values` as the processor made them."""
        host_grid = torch.tensor(grids, dtype=torch.long)
        cu_seqlens = get_vision_cu_seqlens(host_grid)
        positions = get_vision_position_ids(host_grid, self.merge)
        _HOST.cu_seqlens = cu_seqlens if self.split_on_host else None
        try:
            out = self.visual(
                pixel_values.to(self.visual.dtype),
                grid_thw=to_device(host_grid, None, self.device),
                cu_seqlens=to_device(cu_seqlens, None, self.device),
                position_ids=to_device(positions, None, self.device),
                max_seqlen=int((cu_seqlens[1:] - cu_seqlens[:-1]).max()),
            )
        finally:
            _HOST.cu_seqlens = None
        sizes = [t * h * w // self.merge**2 for t, h, w in grids]
        return list(out.pooler_output.split(sizes))
