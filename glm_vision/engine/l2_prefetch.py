"""Warming the L2 cache with the weights the decode step reads next, while the memory would idle.

A decode step reads every weight matrix once, and the reads are the step (gemv.py). But between the
matrix products sit kernels that read little and wait a lot: a layer's attention (a few MB of keys
and values in ~12 us at one row), the residual norms (~3.5 us each). While they run, the HBM idles,
though the next matrix is known: weights do not depend on the data. So a GEMV's programs, as they
finish, ask the memory system for the next matrix (or its first rows) with Hopper's bulk L2 prefetch
(`cp.async.bulk.prefetch.L2`, one instruction per lane, nothing waits for it), and the product after
the latency-bound kernels finds its weights in the 50 MB L2 instead of the HBM. The values computed
are the same either way.

Only on CUDA with compute capability 9.0 or later (the instruction is Hopper's); the CPU tests run the
kernels under Triton's interpreter, where the prefetch is compiled out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

ALIGN = 16  # bytes: the instruction's address and size granularity

# one bulk prefetch by each lane of a program's first warp, of `size` ($2) bytes at `at` ($1) where size > 0
_PREFETCH_ASM = tl.constexpr("""{
    .reg .pred issue;
    .reg .u32 lane;
    mov.u32 lane, %tid.x;
    setp.lt.u32 issue, lane, 32;
    setp.gt.and.s32 issue, $2, 0, issue;
    @issue cp.async.bulk.prefetch.L2.global [$1], $2;
    mov.u32 $0, 0;
}""")


@dataclass(frozen=True)
class Region:
    """A contiguous span of device memory to prefetch: a tensor's bytes, or none (`tensor` None)."""

    tensor: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        if self.tensor is None:
            return 0
        assert self.tensor.is_contiguous(), "a prefetch region is one contiguous span"
        return self.tensor.numel() * self.tensor.element_size() // ALIGN * ALIGN

    def pointer(self, fallback: torch.Tensor) -> torch.Tensor:
        """What the kernel takes as the region's address (any tensor where there is none: 0 bytes)."""
        return fallback if self.tensor is None else self.tensor


def head_rows(weight: torch.Tensor, nbytes: int) -> torch.Tensor:
    """The first rows of a weight matrix, about `nbytes` of them (all rows at most)."""
    rows = max(1, nbytes // (weight.shape[1] * weight.element_size()))
    return weight[:rows]


@functools.cache
def supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


@triton.jit
def pieces(nbytes, program, programs):
    """(start, size) of the 32 pieces of [0, nbytes) that program `program` of `programs` takes: the
    programs' pieces tile the span in order, each a multiple of ALIGN bytes, the last ones empty."""
    piece = tl.cdiv(tl.cdiv(nbytes, programs * 32), 16) * 16
    start = (program * 32 + tl.arange(0, 32)) * piece
    return start, tl.minimum(tl.maximum(nbytes - start, 0), piece)


@triton.jit
def prefetch_share(BASE, nbytes, program, programs):
    """Program `program` of `programs` prefetches its share of bytes [BASE, BASE + nbytes) into L2,
    one bulk prefetch per lane of its first warp."""
    start, size = pieces(nbytes, program, programs)
    at = BASE.to(tl.pointer_type(tl.int8)) + start
    tl.inline_asm_elementwise(_PREFETCH_ASM, "=r,l,r", [at, size], dtype=tl.int32, is_pure=False, pack=1)


@dataclass(frozen=True)
class PrefetchPlan:
    """How many bytes of the next weights each GEMV of a decode layer warms the L2 with (0: none). The
    windows they fill: attention after QKV (o_proj's 33.5 MB fit whole), the residual norm after
    o_proj and after down (a few us each)."""

    after_qkv: int = 64 << 20  # o_proj's weights, during attention
    after_o_proj: int = 16 << 20  # gate_up's first gate and up rows, during the residual norm
    after_gate_up: int = 0  # down's first rows
    after_down: int = 16 << 20  # the next layer's QKV rows (after the last layer, lm_head's), during the norm

    def o_proj(self, weight: torch.Tensor) -> tuple[Region, ...]:
        return _head(weight, self.after_qkv)

    def gate_up(self, weight: torch.Tensor) -> tuple[Region, ...]:
        """Both halves' first rows: the SwiGLU GEMV's first programs read gate and up rows together."""
        if not self.after_o_proj:
            return ()
        intermediate = weight.shape[0] // 2
        halves = weight[:intermediate], weight[intermediate:]
        return tuple(Region(head_rows(half, self.after_o_proj // 2)) for half in halves)

    def down(self, weight: torch.Tensor) -> tuple[Region, ...]:
        return _head(weight, self.after_gate_up)

    def next_layer(self, weight: torch.Tensor) -> tuple[Region, ...]:
        return _head(weight, self.after_down)


NONE = PrefetchPlan(0, 0, 0, 0)


def _head(weight: torch.Tensor, nbytes: int) -> tuple[Region, ...]:
    return (Region(head_rows(weight, nbytes)),) if nbytes else ()
