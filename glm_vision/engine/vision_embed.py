"""The vision tower's input, as transformers computes it (`Glm4vVisionPatchEmbed`,
`Glm4vVisionEmbeddings`), in kernels that fill the GPU.

- The patch embedding is a Conv3d whose kernel equals its stride: each patch meets the kernel once,
  so it is one matrix product of the flattened patches with the flattened kernel (cuDNN's implicit
  convolution took 1.7 ms for a 1080p picture on the H200, the product well under 0.1 ms).
- The position embeddings are the learned 24 x 24 table resampled bicubically at every patch's
  position with `grid_sample`, whose kernel runs one thread per sampled point and loops over the
  1,536 channels: 10,764 threads for a 1080p picture, 2.7 ms. Every channel is sampled on its own,
  so the channels are split into groups given to the batch dimension: the same arithmetic per
  channel, many more threads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHANNEL_GROUPS = 32


def embed_patches(patch_embed, pixels: torch.Tensor) -> torch.Tensor:
    """(patches, C x T x P x P) processor output -> (patches, hidden)."""
    conv = patch_embed.proj
    weight = conv.weight.view(conv.out_channels, -1)
    return F.linear(pixels.view(-1, weight.shape[1]).to(weight.dtype), weight, conv.bias)


def add_position_embeddings(embeddings_module, hidden, lengths, grid, h_coords, w_coords) -> torch.Tensor:
    """`hidden` (patches, hidden) plus each patch's position embedding: transformers'
    `Glm4vVisionEmbeddings.forward`, with the interpolation spread over channel groups."""
    table = embeddings_module.position_embedding.weight
    side, channels = int(table.shape[0] ** 0.5), table.shape[1]
    groups = CHANNEL_GROUPS if channels % CHANNEL_GROUPS == 0 else 1
    pos_2d = table.view(side, side, channels).permute(2, 0, 1).to(torch.float32)
    pos_2d = pos_2d.reshape(groups, channels // groups, side, side)
    tokens = hidden.shape[0]
    seq_ids = (torch.arange(tokens, device=hidden.device)[None] >= lengths.cumsum(0)[:, None]).sum(0)
    target_h = grid[seq_ids, 1].to(torch.float32)
    target_w = grid[seq_ids, 2].to(torch.float32)
    norm_w = ((w_coords + 0.5) / target_w) * 2 - 1
    norm_h = ((h_coords + 0.5) / target_h) * 2 - 1
    points = torch.stack((norm_w, norm_h), dim=-1)[None, :, None, :].expand(groups, -1, -1, -1)
    sampled = F.grid_sample(pos_2d, points, mode="bicubic", align_corners=False, padding_mode="border")
    # (groups, channels / groups, tokens, 1) -> (tokens, channels)
    adapted = sampled.reshape(channels, tokens).transpose(0, 1)
    return hidden + adapted.to(table.dtype)
