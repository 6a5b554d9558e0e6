"""One layer of the vision tower as plain functions over its own weights (as forward.py does for the
text model): the math of transformers' `Glm4vVisionBlock`, with the elementwise work around the
matrix products (the RMSNorms, the float32 rotary, SiLU, the residual adds) fused by torch.compile
on CUDA instead of a dozen full passes over a 1080p picture's 10,764 x 1,536 activations a layer,
and the attention run per picture by the fastest fused kernel the device offers (vision_attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layer_math import rms_norm
from .vision_attention import PictureAttention


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def attention_inputs(h, norm_weight, eps: float, w_qkv, b_qkv, cos, sin, heads: int, room: int):
    """h (L, hidden) -> q, k, v (L, heads, head_dim): the layer's input norm, QKV projection and the
    rotary of q and k in float32 (cos/sin (L, head_dim) float32), as transformers computes them. Kept
    in the patches' order: the attention kernels read them through strides, where a transposed copy
    costs more than the rotary itself, and v a view into the projection's output (its copy took 0.7 ms
    a 1080p picture on the H200). q has `room` rows of zeros after the patches (the bucketed
    attention's padded queries), written by the rotary's own kernel instead of a copy of q a layer."""
    x = rms_norm(h, norm_weight, eps)
    length = x.shape[0]
    q, k, v = F.linear(x, w_qkv, b_qkv).view(length, 3, heads, -1).unbind(1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    q32, k32 = q.float(), k.float()
    q = (q32 * cos + _rotate_half(q32) * sin).to(x.dtype)
    k = (k32 * cos + _rotate_half(k32) * sin).to(x.dtype)
    return (F.pad(q, (0, 0, 0, 0, 0, room)) if room else q), k, v


def attention_output_and_mlp(h, attn, w_proj, norm_weight, eps: float, w_gate_up, w_down):
    """The residual stream after the layer: attention output (L, heads, head_dim) projected and added,
    then the SwiGLU MLP of its norm added (gate and up as one matrix, fused_weights.fuse_vision)."""
    h = h + F.linear(attn.reshape(h.shape[0], -1), w_proj)
    gate, up = F.linear(rms_norm(h, norm_weight, eps), w_gate_up).chunk(2, dim=-1)
    return h + F.linear(F.silu(gate) * up, w_down)


class VisionBlocks:
    """Runs the tower's layers with these functions, compiled on request (CUDA)."""

    def __init__(self, visual, *, compile_math: bool, max_patches: int, backends=None) -> None:
        config = visual.config
        if config.hidden_act != "silu":
            raise ValueError(f"the vision tower's activation is {config.hidden_act!r}; the engine runs SiLU only")
        self.blocks = visual.blocks
        self.heads = config.num_heads
        self.scale = (config.hidden_size // config.num_heads) ** -0.5
        device = next(visual.parameters()).device
        self.attention = PictureAttention(backends, device=device, max_patches=max_patches, compiled=compile_math)
        self.inputs, self.rest = attention_inputs, attention_output_and_mlp
        self.compiled = compile_math
        if compile_math:  # picture sizes vary: one kernel set for all of them (see `_patches_vary`)
            self.inputs = torch.compile(attention_inputs, fullgraph=True)
            self.rest = torch.compile(attention_output_and_mlp, fullgraph=True)

    def run(self, index: int, h: torch.Tensor, rotary: tuple, lengths: list[int]) -> torch.Tensor:
        """Layer `index` over h (patches, hidden) with the tower's (cos, sin)."""
        block = self.blocks[index]
        attn, mlp = block.attn, block.mlp
        cos, sin = rotary
        self._patches_vary(h, cos, sin)
        norm = block.norm1
        qkv = attn.qkv.weight, attn.qkv.bias
        q, k, v = self.inputs(h, norm.weight, norm.variance_epsilon, *qkv, cos, sin, self.heads, self.attention.room)
        out = self.attention(q, k, v, lengths, self.scale)
        self._patches_vary(out)
        return self.rest(
            h,
            out,
            attn.proj.weight,
            block.norm2.weight,
            block.norm2.variance_epsilon,
            mlp.gate_up_weight,
            mlp.down_proj.weight,
        )

    def _patches_vary(self, *tensors: torch.Tensor) -> None:
        if self.compiled:
            patches_vary(*tensors)


def patches_vary(*tensors: torch.Tensor) -> None:
    """Compile for any number of patches, and only that: with every size symbolic (`dynamic=True`)
    the fused kernels' index arithmetic divided by runtime head counts and widths, which made the
    rotary 7x and the copy of v 5x slower than reading their bytes (H200, bench/RESULTS.md)."""
    for tensor in tensors:
        torch._dynamo.mark_dynamic(tensor, 0)
