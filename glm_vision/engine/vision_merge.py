"""The vision tower's last steps as plain functions over its weights (transformers' `post_layernorm`,
`downsample` and `Glm4vVisionPatchMerger`), compiled on CUDA like the blocks (vision_block.py): each
merged group of patches is one row of a product with the downsample kernel laid out as a matrix
(fused_weights.fuse_vision) instead of a convolution over a permuted copy, and the norms and
activations are fused around the products."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layer_math import rms_norm
from .vision_block import patches_vary


def merge_patches(h, norm, eps: float, down, proj, layer_norm, ln_eps: float, gate, up, out):
    """h (patches, hidden) -> (patches / merge^2, out_hidden): the final norm, the downsample of each
    group of merge x merge consecutive patches, and the merger's MLP. Each of down .. out is a
    (weight, bias) pair, `layer_norm` too."""
    x = rms_norm(h, norm, eps)
    x = F.linear(x.view(-1, down[0].shape[1]), *down)
    x = F.gelu(F.layer_norm(F.linear(x, *proj), x.shape[-1:], *layer_norm, ln_eps))
    return F.linear(F.silu(F.linear(x, *gate)) * F.linear(x, *up), *out)


class PatchMerger:
    """Runs `merge_patches` with the tower's weights, compiled on request (CUDA)."""

    def __init__(self, visual, *, compile_math: bool) -> None:
        self.visual = visual
        self.compiled = compile_math
        self.merge = torch.compile(merge_patches, fullgraph=True) if compile_math else merge_patches

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        merger, norm = visual.merger, visual.post_layernorm
        if self.compiled:  # one kernel set for every picture size
            patches_vary(h)
        return self.merge(
            h,
            norm.weight,
            norm.variance_epsilon,
            (visual.downsample.matrix, visual.downsample.bias),
            _pair(merger.proj),
            (merger.post_projection_norm.weight, merger.post_projection_norm.bias),
            merger.post_projection_norm.eps,
            _pair(merger.gate_proj),
            _pair(merger.up_proj),
            _pair(merger.down_proj),
        )


def _pair(linear: torch.nn.Linear) -> tuple:
    return linear.weight, linear.bias
