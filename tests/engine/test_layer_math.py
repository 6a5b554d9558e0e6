"""The layer functions the prefill pieces run in place (engine/layer_math.py): compiled as on CUDA (here by
Inductor's CPU backend), they store into the static buffers what the plain functions return."""

from __future__ import annotations

import torch

from glm_vision.engine.layer_math import (
    post_attention,
    post_attention_in_place,
    rotary,
    rotary_into,
    split_heads,
)

TOKENS, HIDDEN, HEADS, KV, DIM, ROT, INTER = 24, 64, 4, 2, 16, 8, 96


def test_in_place_variants_store_what_the_plain_functions_return():
    g = torch.Generator().manual_seed(0)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    qkv = randn(TOKENS, (HEADS + 2 * KV) * DIM)
    q, k, _ = split_heads(qkv, HEADS, KV, DIM)
    cos, sin = randn(TOKENS, ROT), randn(TOKENS, ROT)
    norms = [1 + randn(HIDDEN, scale=0.1) for _ in range(5)]
    weights = (
        randn(HIDDEN, HEADS * DIM, scale=0.1),
        randn(2 * INTER, HIDDEN, scale=0.1),
        randn(HIDDEN, INTER, scale=0.1),
    )
    h, attn = randn(TOKENS, HIDDEN), randn(TOKENS, HEADS * DIM)
    args = (weights[0], norms[0], norms[1], weights[1], weights[2], norms[2], norms[3], 1e-6)
    h_want, x_want = post_attention(h, attn, *args)
    q_want, k_want = rotary(q, k, cos, sin)
    for compiled in (False, True):
        post = torch.compile(post_attention_in_place, fullgraph=True) if compiled else post_attention_in_place
        into = torch.compile(rotary_into, fullgraph=True) if compiled else rotary_into
        h_buffer, q_out, k_out = h.clone(), torch.full_like(q, float("nan")), torch.full_like(k, float("nan"))
        x = post(h_buffer, attn, *args)
        into(q, k, cos, sin, q_out, k_out)
        torch.testing.assert_close(h_buffer, h_want, rtol=1e-5, atol=1e-5)  # the residual stream, updated in place
        torch.testing.assert_close(x, x_want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(q_out, q_want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(k_out, k_want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(h_want, h)  # the layer changed the stream: an in-place update that did nothing fails
