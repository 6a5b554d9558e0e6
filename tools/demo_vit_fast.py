"""Training-only replacements for parts of transformers' GLM-4V vision tower that are slow on big,
many-picture training batches. Each computes what the original does (`check` compares them), so the
saved checkpoint runs unchanged on the original code.

- the per-picture SDPA loop of the ViT attention -> all pictures padded and masked, one call;
- the bf16 Conv3d patch embedding -> the same product as one matmul;
- the bicubic `grid_sample` of the position table -> a fixed matrix per grid size;
- `get_vision_position_ids`' loop per picture -> positions built by the data workers (`vision_layout`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

_LAYOUT: dict = {}  # the current batch's padded ViT layout, set by `use_layout`


def vision_layout(grid_list: list[tuple[int, int, int]], merge: int = 2) -> dict:
    """For a batch's pictures (built in the data workers, as numpy): the ViT's patch positions
    (what `get_vision_position_ids` computes with one loop iteration per picture on the GPU), and
    the gather indices that pad every picture's patches to the longest one and back."""
    lengths = np.array([t * h * w for t, h, w in grid_list], dtype=np.int64)
    total, longest, n = int(lengths.sum()), int(lengths.max()), len(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    slot = np.arange(longest)[None, :]
    pad_index = np.where(slot < lengths[:, None], starts[:, None] + slot, total)  # `total`: a zero row appended
    valid = slot < lengths[:, None]
    return {
        "vision_positions": np.concatenate([_patch_positions(h, w, merge) for _, h, w in grid_list]),
        "pad_index": pad_index.reshape(-1),
        "unpad_index": np.flatnonzero(valid.reshape(-1)),
        "valid": valid,
        "shape": (n, longest),
    }


_PATCH_POSITIONS: dict = {}


def _patch_positions(h: int, w: int, merge: int) -> np.ndarray:
    """(h*w, 2) (row, column) of each patch in the processor's order: merge x merge blocks, row-major."""
    key = (h, w, merge)
    if key not in _PATCH_POSITIONS:
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        _PATCH_POSITIONS[key] = np.stack(
            [
                rows.reshape(shape).transpose(0, 2, 1, 3).reshape(-1),
                cols.reshape(shape).transpose(0, 2, 1, 3).reshape(-1),
            ],
            -1,
        )
    return _PATCH_POSITIONS[key]


def padded_vision_attention(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
    """Training-only replacement for the ViT's per-image SDPA loop: all images padded to the longest
    one and masked, one SDPA call per layer. Same math (checked against the original by
    `check`), a handful of kernels instead of one loop iteration per image."""
    from transformers.models.glm4v.modeling_glm4v import apply_rotary_pos_emb_vision

    length = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    n, longest = _LAYOUT["shape"]
    heads, dim = v.shape[1], v.shape[2]

    def pad(t):  # index_select, not t[index]: its backward is an index_add, not a sort-based index_put
        t = torch.cat([t.to(v.dtype), t.new_zeros(1, heads, dim, dtype=v.dtype)])
        return t.index_select(0, _LAYOUT["pad_index"]).view(n, longest, heads, dim).transpose(1, 2)

    with torch.nn.attention.sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        o = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=_LAYOUT["mask"], scale=self.scaling)
    o = o.transpose(1, 2).reshape(n * longest, heads, dim).index_select(0, _LAYOUT["unpad_index"])
    return self.proj(o.reshape(length, -1))


def linear_patch_embed(self, hidden_states):
    """Training-only replacement for the ViT's Conv3d patch embedding: with stride == kernel the
    convolution is one matrix product over the flattened patch (cuDNN's bf16 Conv3d has slow paths:
    pytorch#174051, transformers#45041). Same weights, same math (checked by `check`)."""
    w = self.proj.weight
    return F.linear(hidden_states.reshape(-1, w[0].numel()).to(w.dtype), w.reshape(w.shape[0], -1), self.proj.bias)


_POSITION_MATRICES: dict = {}  # (t, h, w) grid -> its (patches, table rows) interpolation weights


def matrix_position_embeddings(self, embeddings, lengths, image_shapes, h_coords, w_coords):
    """Training-only replacement for the ViT's bicubic `grid_sample` of its position table. The
    sample is linear in the table, so per grid size it is a fixed matrix (the sample of an identity
    basis), and the batch's position embeddings are one matrix product. `grid_sample`'s backward
    scatters ~1M taps with atomics into a 24x24 table, which serialises on the GPU; the product's
    backward is another product. Same numbers (checked by `check`)."""
    weight = self.position_embedding.weight
    rows, side = weight.shape[0], int(weight.shape[0] ** 0.5)
    mats, start = [], 0
    for n, grid in zip(lengths.tolist(), image_shapes.tolist(), strict=False):
        key = tuple(grid)
        mat = _POSITION_MATRICES.get(key)
        if mat is None:
            basis = torch.eye(rows, device=weight.device).view(1, rows, side, side)
            hc, wc = h_coords[start : start + n].float(), w_coords[start : start + n].float()
            where = torch.stack((((wc + 0.5) / grid[2]) * 2 - 1, ((hc + 0.5) / grid[1]) * 2 - 1), dim=-1)
            sampled = F.grid_sample(
                basis,
                where[None, :, None, :],
                mode=self.interpolated_method,
                align_corners=False,
                padding_mode="border",
            )
            mat = _POSITION_MATRICES[key] = sampled[0, :, :, 0].T.contiguous()
        mats.append(mat)
        start += n
    with torch.autocast(weight.device.type, enabled=False):
        positions = torch.cat(mats) @ weight.float()
    return embeddings + positions.to(weight.dtype).to(embeddings.device)


def use_layout(layout: dict, device) -> None:
    """Make a batch's layout (from `vision_layout`, as tensors) the one the padded attention uses."""
    _LAYOUT.update(
        pad_index=torch.as_tensor(layout["pad_index"]).to(device, non_blocking=True),
        unpad_index=torch.as_tensor(layout["unpad_index"]).to(device, non_blocking=True),
        mask=torch.as_tensor(layout["valid"])[:, None, None, :].to(device, non_blocking=True),
        shape=layout["shape"],
    )


def check(model, device) -> None:
    """Each replacement against the original, on random inputs; raises if one differs."""
    from transformers.vision_utils import get_vision_position_ids

    tol = 1e-4 if device.type == "cpu" else 3e-3  # TF32 on the GPU
    visual = model.model.visual
    probe = torch.randn(8, visual.patch_embed.proj.weight[0].numel(), device=device)
    diff = (visual.patch_embed(probe) - linear_patch_embed(visual.patch_embed, probe)).abs().max().item()
    print(f"linear patch embedding vs Conv3d: max abs diff {diff:.2e}", flush=True)
    assert diff < tol

    grid_list = [(1, 12, 20), (1, 8, 8), (1, 20, 6)]
    grids = torch.tensor(grid_list, device=device)
    layout = vision_layout(grid_list)
    positions = get_vision_position_ids(grids, 2).cpu()
    assert torch.equal(torch.from_numpy(layout["vision_positions"]), positions), "vision positions differ"
    lengths = grids.prod(-1)
    h, w = positions[:, 0].to(device), positions[:, 1].to(device)
    x = torch.randn(int(lengths.sum()), visual.embeddings.embed_dim, device=device)
    diff = (
        (
            visual.embeddings(x, lengths, grids, h, w)
            - matrix_position_embeddings(visual.embeddings, x, lengths, grids, h, w)
        )
        .abs()
        .max()
        .item()
    )
    print(f"matrix position embeddings vs grid_sample: max abs diff {diff:.2e}", flush=True)
    assert diff < tol

    attn = visual.blocks[0].attn
    x = torch.randn(int(lengths.sum()), attn.qkv.in_features, device=device)
    cos_sin = visual.rotary_pos_emb(x, positions.to(device))
    cu = F.pad(lengths.cumsum(0), (1, 0)).int()
    use_layout(layout, device)
    diff = (
        (
            attn(x, cu_seqlens=cu, position_embeddings=cos_sin)
            - padded_vision_attention(attn, x, cu, position_embeddings=cos_sin)
        )
        .abs()
        .max()
        .item()
    )
    print(f"padded vision attention vs per-picture: max abs diff {diff:.2e}", flush=True)
    assert diff < tol


def install(linear_patch: bool = True) -> None:
    from transformers.models.glm4v import modeling_glm4v

    modeling_glm4v.Glm4vVisionEmbeddings.forward = matrix_position_embeddings
    modeling_glm4v.Glm4vVisionAttention.forward = padded_vision_attention
    if linear_patch:
        modeling_glm4v.Glm4vVisionPatchEmbed.forward = linear_patch_embed
