"""Pre-allocated KV memory: `slots` sequences of up to `max_len` tokens.

Slot i holds decode row i (the scheduler keeps running sequences in the lowest slots); a
sequence's KV moves in and out of its slot as one compact pair of tensors (`SavedKV`) so that a
session keeps its conversation between turns without holding a slot.

The last position of every slot (`spare`) never holds real KV: a prompt is shorter than the
context and the final generated token is never fed back, so padding rows of a captured batch
write their dummy token there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def attention_head_dim(text_config) -> int:
    """A layer's attention head size: the config's own, else hidden size over heads."""
    return getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads


def kv_geometry(text_config) -> dict:
    """The KV cache's shape per token: layers, key/value heads, head size."""
    return dict(
        layers=text_config.num_hidden_layers,
        kv_heads=text_config.num_key_value_heads,
        head_dim=attention_head_dim(text_config),
    )


@dataclass(frozen=True)
class SavedKV:
    keys: torch.Tensor  # (layers, kv_heads, length, head_dim)
    values: torch.Tensor


class KVSlab:
    def __init__(self, *, layers: int, kv_heads: int, head_dim: int, slots: int, max_len: int, device, dtype) -> None:
        self.slots = slots
        self.max_len = max_len
        self.spare = max_len - 1
        shape = (layers, slots, kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    @staticmethod
    def bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return layers * 2 * kv_heads * head_dim * dtype.itemsize

    def load(self, slot: int, saved: SavedKV, length: int) -> None:
        """Put the first `length` tokens of a saved conversation into a slot."""
        if length:
            self.k[:, slot, :, :length].copy_(saved.keys[:, :, :length])
            self.v[:, slot, :, :length].copy_(saved.values[:, :, :length])

    def save(self, slot: int, length: int) -> SavedKV:
        return SavedKV(self.k[:, slot, :, :length].clone(), self.v[:, slot, :, :length].clone())

    def move(self, source: int, target: int, length: int) -> None:
        self.k[:, target, :, :length].copy_(self.k[:, source, :, :length])
        self.v[:, target, :, :length].copy_(self.v[:, source, :, :length])

    def swap(self, a: int, length_a: int, b: int, length_b: int) -> None:
        held = self.save(a, length_a)
        self.move(b, a, length_b)
        self.load(b, held, length_a)

    def write_chunk(self, layer: int, slot: int, start: int, k: torch.Tensor, v: torch.Tensor):
        """Store a prefill chunk's k/v (T, kv, d) at [start, start+T); return the slot's keys/values so far."""
        end = start + k.shape[0]
        self.k[layer, slot, :, start:end] = k.transpose(0, 1)
        self.v[layer, slot, :, start:end] = v.transpose(0, 1)
        return self.prefix(layer, slot, end)

    def prefix(self, layer: int, slot: int, length: int):
        """The slot's first `length` keys and values (kv, length, d)."""
        return self.k[layer, slot, :, :length], self.v[layer, slot, :, :length]

    def write_tokens(
        self, layer: int, rows: torch.Tensor, lengths: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bucket: int
    ):
        """Store one token's k/v (B, kv, d) per row at its slot's `length`; return (B, kv, bucket, d) views."""
        self._put(self.k[layer], rows, lengths, k)
        self._put(self.v[layer], rows, lengths, v)
        batch = k.shape[0]
        return self.k[layer, :batch, :, :bucket], self.v[layer, :batch, :, :bucket]

    @staticmethod
    def _put(layer_slab: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor, values: torch.Tensor) -> None:
        # layer_slab (slots+1, kv, max_len, d): advanced indexing on dims 0 and 2 selects (B, kv, d).
        layer_slab[rows, :, lengths] = values
