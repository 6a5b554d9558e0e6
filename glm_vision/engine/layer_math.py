"""GLM-4.6V's text decoder layer as plain functions over its weights (Glm4vTextDecoderLayer's math):
input norm, fused QKV, partial interleaved rotary (M-RoPE: for a text token its three positions are
equal), grouped-query attention, o_proj, post-attention norm, residual, norm, SwiGLU MLP, post-MLP
norm, residual. `TextForward` runs them eagerly on the CPU (where CI checks them against
transformers) and compiled on CUDA, where torch.compile fuses the elementwise work around the matrix
products."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def qkv_projection(x, w_qkv, b_qkv, n_heads: int, n_kv: int, head_dim: int):
    """x (N, hidden), already the layer's input norm -> q (N, heads, d), k and v (N, kv_heads, d), not rotated."""
    return split_heads(F.linear(x, w_qkv, b_qkv), n_heads, n_kv, head_dim)


def split_heads(qkv, n_heads: int, n_kv: int, head_dim: int):
    """The fused projection's output (N, (heads + 2 kv_heads) d) as q, k, v views."""
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    return q.view(-1, n_heads, head_dim), k.view(-1, n_kv, head_dim), v.view(-1, n_kv, head_dim)


def rotary(q, k, cos, sin):
    """q (N, heads, d) and k (N, kv_heads, d) rotated on their first `rot` dimensions by cos/sin (N, rot)."""
    rot = cos.shape[-1]
    cos, sin = cos[:, None, :], sin[:, None, :]
    q = torch.cat([q[..., :rot] * cos + rotate_half_interleaved(q[..., :rot]) * sin, q[..., rot:]], dim=-1)
    k = torch.cat([k[..., :rot] * cos + rotate_half_interleaved(k[..., :rot]) * sin, k[..., rot:]], dim=-1)
    return q, k


def pre_attention(x, w_qkv, b_qkv, cos, sin, n_heads: int, n_kv: int, head_dim: int):
    """`qkv_projection`, then q and k rotated by cos/sin (N, rot)."""
    q, k, v = qkv_projection(x, w_qkv, b_qkv, n_heads, n_kv, head_dim)
    q, k = rotary(q, k, cos, sin)
    return q, k, v


def post_attention(h, attn, w_o, n_post_attn, n_pre_mlp, w_gate_up, w_down, n_post_mlp, n_next, eps: float):
    """The layer's residual stream after attention and MLP, and already the next layer's input norm of
    it (`n_next`; the final norm after the last layer): one fused kernel instead of two per layer."""
    h, x = residual_norm(h, F.linear(attn, w_o), n_post_attn, n_pre_mlp, eps)
    return residual_norm(h, swiglu_mlp(x, w_gate_up, w_down), n_post_mlp, n_next, eps)


def swiglu_mlp(x, w_gate_up, w_down):
    """The MLP's product for x, already its input norm: down(silu(gate) * up)."""
    return F.linear(swiglu_glue(F.linear(x, w_gate_up)), w_down)


def swiglu_glue(gate_up):
    """silu(gate) * up from the gate_up product (N, 2I), gate columns first."""
    gate, up = gate_up.chunk(2, dim=-1)
    return up * F.silu(gate)


def post_attention_in_place(h, attn, w_o, n_post_attn, n_pre_mlp, w_gate_up, w_down, n_post_mlp, n_next, eps: float):
    """`post_attention` with the residual stream updated in `h` itself (a prefill pass's static buffer:
    compiled, the last kernel stores into it instead of a new tensor that is then copied); returns x."""
    h_next, x = post_attention(h, attn, w_o, n_post_attn, n_pre_mlp, w_gate_up, w_down, n_post_mlp, n_next, eps)
    h.copy_(h_next)
    return x


def rotary_into(q, k, cos, sin, q_out, k_out) -> None:
    """`rotary` with the results stored into q_out and k_out (static buffers) by the kernel that
    computes them, not copied there afterwards."""
    q_rot, k_rot = rotary(q, k, cos, sin)
    q_out.copy_(q_rot)
    k_out.copy_(k_rot)


def residual_norm(h, out, n_out, n_next, eps: float):
    """The residual stream h plus a sublayer's normed `out`, and the norm (`n_next`) the next sublayer
    takes of it."""
    h = h + rms_norm(out, n_out, eps)
    return h, rms_norm(h, n_next, eps)


def attend(q, keys, values, valid, scale: float):
    """q (B, kv, group, d) over keys/values (B, kv, L, d) where `valid` (B, L): (B, kv, group, d)."""
    scores = torch.matmul(q, keys.transpose(-1, -2)).float() * scale
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    return torch.matmul(scores.softmax(-1).to(values.dtype), values)


def final_logits(x, lm_head):
    """x: the last layer's output, already through the final norm."""
    return F.linear(x, lm_head).float()
