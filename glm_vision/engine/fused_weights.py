"""Weights fused or laid out once at engine start so that the products run fewer and larger: the text
layers' q/k/v (a decode step reads them as one matrix), the vision blocks' MLP gate and up, the vision
tower's downsample kernel as a matrix. The modules' own parameters become views into the new tensors,
so transformers' forward keeps working and no memory is duplicated."""

from __future__ import annotations

import torch


def fuse_qkv(model) -> None:
    """Concatenate each layer's q/k/v weights into one matrix (one GEMV instead of three)."""
    for layer in model.model.language_model.layers:
        attn = layer.self_attn
        if _views_into(getattr(attn, "qkv_weight", None), attn.q_proj.weight):
            continue
        weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous()
        bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]).contiguous()
        sizes = [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
        for proj, w, b in zip(
            (attn.q_proj, attn.k_proj, attn.v_proj), weight.split(sizes), bias.split(sizes), strict=False
        ):
            proj.weight = _frozen(w)
            proj.bias = _frozen(b)
        attn.qkv_weight, attn.qkv_bias = weight, bias


def fuse_vision(visual) -> None:
    """The vision blocks' MLP gate and up rows as one matrix (`mlp.gate_up_weight`: one product twice
    as wide, which fills the GPU's last wave of tiles better), and the downsample convolution's kernel
    as a matrix over (row, column, channel) of each merged group of patches (`downsample.matrix`), so
    that it is one product over the patches as they lie instead of a convolution over a permuted copy."""
    for block in visual.blocks:
        mlp = block.mlp
        if _views_into(getattr(mlp, "gate_up_weight", None), mlp.gate_proj.weight):
            continue
        assert mlp.gate_proj.bias is None and mlp.up_proj.bias is None, "GLM-4.6V's vision MLP has no biases"
        weight = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        gate, up = weight.split([mlp.gate_proj.out_features, mlp.up_proj.out_features])
        mlp.gate_proj.weight, mlp.up_proj.weight = _frozen(gate), _frozen(up)
        mlp.gate_up_weight = weight
    conv = visual.downsample
    if not _views_into(getattr(conv, "matrix", None), conv.weight):
        out, channels, rows, cols = conv.weight.shape
        matrix = conv.weight.permute(0, 2, 3, 1).reshape(out, rows * cols * channels)  # a copy: the old one goes
        conv.weight = _frozen(matrix.view(out, rows, cols, channels).permute(0, 3, 1, 2))
        conv.matrix = matrix


def _frozen(tensor: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(tensor, requires_grad=False)


def _views_into(fused: torch.Tensor | None, part: torch.Tensor) -> bool:
    """Whether a module's parameter still starts the fused tensor: casting the model (`model.float()`)
    gives every parameter new storage and leaves the fused tensor behind in the old dtype."""
    return (
        fused is not None
        and part.dtype == fused.dtype
        and part.device == fused.device
        and part.data_ptr() == fused.data_ptr()
    )
