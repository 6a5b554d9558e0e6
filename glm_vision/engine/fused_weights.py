"""Weights fused once at engine start so that a decode step reads them in fewer, larger products."""

from __future__ import annotations

import torch


def fuse_qkv(model) -> None:
    """Concatenate each layer's q/k/v weights into one matrix (one GEMV instead of three) and make
    the original parameters views into it, so transformers' own forward keeps working and no
    memory is duplicated."""
    for layer in model.model.language_model.layers:
        attn = layer.self_attn
        if _fused(attn):
            continue
        weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous()
        bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]).contiguous()
        sizes = [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
        for proj, w, b in zip(
            (attn.q_proj, attn.k_proj, attn.v_proj), weight.split(sizes), bias.split(sizes), strict=False
        ):
            proj.weight = torch.nn.Parameter(w, requires_grad=False)
            proj.bias = torch.nn.Parameter(b, requires_grad=False)
        attn.qkv_weight, attn.qkv_bias = weight, bias


def _fused(attn) -> bool:
    """Whether q_proj is still a view into the fused matrix: casting the model (`model.float()`) gives
    every parameter new storage and leaves the fused matrix behind in the old dtype."""
    weight = getattr(attn, "qkv_weight", None)
    q = attn.q_proj.weight
    return (
        weight is not None
        and q.dtype == weight.dtype
        and q.device == weight.device
        and q.data_ptr() == weight.data_ptr()
    )
