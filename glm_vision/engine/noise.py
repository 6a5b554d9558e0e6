"""Counter-based Exp(1) noise for seeded rows, made on the device for a whole group of rows at once.

Each row has a stream: a 64-bit state that starts at mix(seed) + steps * GOLDEN and moves on by
GOLDEN every step, on the device (splitmix64's own counter). The noise of token id j at a step is
mix(mix(state) + j * GOLDEN): a hash of (seed, step, token id) only, so a row's draw depends neither
on the other rows nor on the order in which top-k lists tied tokens.

torch has no unsigned 64-bit arithmetic: the hash runs on int64, whose multiplication wraps like
uint64's, with logical right shifts made from arithmetic ones and a mask.
"""

from __future__ import annotations

import math

import torch

from .transfer import to_device

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
MANTISSA = 52  # uniform bits: (m + 0.5) / 2**52 is exact in float64, never 0 or 1


def as_int64(value: int) -> int:
    """An unsigned 64-bit value as the int64 with the same bits."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def mix_int(value: int) -> int:
    """splitmix64's finalizer on a Python int (unsigned result): the reference for `mix`."""
    value &= MASK64
    value = ((value ^ (value >> 30)) * MIX[0]) & MASK64
    value = ((value ^ (value >> 27)) * MIX[1]) & MASK64
    return value ^ (value >> 31)


def shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors, elementwise (same bits as `mix_int`)."""
    x = (x ^ shift_right(x, 30)) * as_int64(MIX[0])
    x = (x ^ shift_right(x, 27)) * as_int64(MIX[1])
    return x ^ shift_right(x, 31)


def exponential(bits: torch.Tensor) -> torch.Tensor:
    """Exp(1) values, float32, from random int64 bits: -log(u) with u uniform in (0, 1)."""
    m = shift_right(bits, 64 - MANTISSA).double().add_(0.5)
    return (MANTISSA * math.log(2) - m.log_()).float()


class SeededNoise:
    """The noise streams of a group's rows; a (rows, 1) int64 state column on the device."""

    def __init__(self, seeds: list[int], steps: list[int], device: torch.device) -> None:
        start = [as_int64(mix_int(seed) + step * GOLDEN) for seed, step in zip(seeds, steps, strict=True)]
        self.state = to_device(start, torch.long, device)[:, None]

    def exponential(self, ids: torch.Tensor) -> torch.Tensor:
        """Exp(1) noise for token `ids` (rows, n) or (1, n) at this step; each row's stream moves on."""
        key = mix(self.state)
        self.state.add_(as_int64(GOLDEN))
        return exponential(mix(key + ids * as_int64(GOLDEN)))
