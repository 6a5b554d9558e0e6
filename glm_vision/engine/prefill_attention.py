"""A prompt chunk's causal attention over its slot's keys.

A prompt's first chunk (`causal_attention`) runs cuDNN's fused kernel: on the H200 1.8x flash
attention's speed at 2-4k tokens (bench/RESULTS.md), on shapes the caller pads to a step so that the
plan cuDNN builds for each new shape (~50 ms of host time) is built once per step at warm-up. A later
chunk attends after its cached prefix (`prefill_attention`): flash attention, which needs no plans."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

# cuDNN's fused attention builds an execution plan for every new shape (~15 ms of CPU each, seen in
# the demo-training profile), and nearly every prefill chunk has a new (length, prefix) shape: the
# likeliest cause of a +23 ms follow-up TTFT on the H100 (bench/RESULTS.md). Flash and memory-efficient
# attention have no plans; cuDNN and math stay as fallbacks. (The vision encoder tries cuDNN first:
# picture sizes repeat.) A chunk after a cached prefix is causal aligned to the lower right (its query
# i is the prefix's length + i): flash attention's own causal mask when the queries are fewer than the
# keys, grouped heads included (`lower_right`, checked on the device at start); otherwise an explicit
# mask through memory-efficient attention, which takes a mask but not grouped heads, so key/value heads
# are copied per query head (end x heads x head_dim x 4 bytes a layer, freed at once).
_CAUSAL_BACKENDS = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.MATH,
]
_MASKED_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
_FIRST_CHUNK_BACKENDS = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]


def causal_attention(q, keys, values, scale: float) -> torch.Tensor:
    """q (heads, T, d) over keys/values (kv_heads, T, d), query i seeing keys [0, i]. -> (heads, T, d)."""
    with sdpa_kernel(_FIRST_CHUNK_BACKENDS, set_priority=True):
        return F.scaled_dot_product_attention(
            q[None], keys[None], values[None], is_causal=True, scale=scale, enable_gqa=True
        )[0]


def prefill_attention(
    q, keys, values, start: int, scale: float, *, planless: bool, lower_right: bool = False
) -> torch.Tensor:
    """q (heads, T, d) of the chunk at [start, start+T) over keys/values (kv_heads, start+T, d), causally
    (a chunk that starts the sequence: plain causal; after a cached prefix, query i sees keys
    [0, start+i]). -> (heads, T, d)."""
    T, end = q.shape[1], keys.shape[1]
    if start and lower_right:
        return F.scaled_dot_product_attention(
            q[None], keys[None], values[None], attn_mask=causal_lower_right(T, end), scale=scale, enable_gqa=True
        )[0]
    causal = None
    if start:
        arange = torch.arange(end, device=q.device)
        causal = arange[None, :] <= (start + arange[:T])[:, None]
    if not planless:
        return F.scaled_dot_product_attention(
            q[None], keys[None], values[None], attn_mask=causal, is_causal=causal is None, scale=scale, enable_gqa=True
        )[0]
    if causal is None:
        with sdpa_kernel(_CAUSAL_BACKENDS, set_priority=True):
            return F.scaled_dot_product_attention(
                q[None], keys[None], values[None], is_causal=True, scale=scale, enable_gqa=True
            )[0]
    group = q.shape[0] // keys.shape[0]
    keys, values = keys.repeat_interleave(group, dim=0), values.repeat_interleave(group, dim=0)
    with sdpa_kernel(_MASKED_BACKENDS, set_priority=True):
        return F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=causal, scale=scale)[0]


def lower_right_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this device runs lower-right causal attention with grouped heads (and gets it right)."""
    try:
        generator = torch.Generator(device=device).manual_seed(0)
        q = torch.randn(4, 8, 64, device=device, dtype=dtype, generator=generator)
        k, v = (torch.randn(2, 24, 64, device=device, dtype=dtype, generator=generator) for _ in range(2))
        got = prefill_attention(q, k, v, 16, 0.125, planless=True, lower_right=True)
        expected = prefill_attention(q, k, v, 16, 0.125, planless=False)
        return bool(torch.allclose(got.float(), expected.float(), atol=2e-2, rtol=2e-2))
    except RuntimeError:
        return False
