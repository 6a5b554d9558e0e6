"""The decode step's residual norm (`layer_math.residual_norm`) as one Triton kernel that holds each row
in registers, for the steps whose matrix products are the Triton GEMVs.

Between two GEMVs a decode step adds a sublayer's normed output to the residual stream and norms the
result for the next matrix: two sums of squares over a 4,096-wide row, ~3.5 us a call on the H200 as
Inductor compiles it, 81 calls a step, for a few kilobytes. Rows that wide are past Inductor's limit for
persistent reductions (the prefill profile names its norm kernel `triton_red_...`, a looped one), so
the compiled kernel most likely walks the row once per sum and again for the stores: a chain of
dependent memory round trips. Here one program owns a row: one round of loads (the stream, the
sublayer's output and both norm weights), both sums in registers, two stores. The rounding is the
eager functions': each product, norm and sum rounded to the activations' dtype where they round.
On the H200 it takes 2.1 us a call, and a decode step at ~4k context went from 5.46 / 6.04 / 7.49 ms
to 5.39 / 5.90 / 7.33 ms at 1 / 8 / 32 rows (bench/RESULTS.md, tenth session).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import launch_options, wait_for_previous


@triton.jit
def _residual_norm_kernel(H, OUT, N_OUT, N_NEXT, H_NEW, X, N, eps, BLOCK: tl.constexpr, PDL: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    keep = cols < N
    at = row.to(tl.int64) * N + cols
    dtype = H_NEW.dtype.element_ty
    n_out = tl.load(N_OUT + cols, mask=keep, other=0.0).to(tl.float32)  # weights: before the wait under PDL
    n_next = tl.load(N_NEXT + cols, mask=keep, other=0.0).to(tl.float32)
    wait_for_previous(PDL)
    out = tl.load(OUT + at, mask=keep, other=0.0).to(tl.float32)
    h = tl.load(H + at, mask=keep, other=0.0).to(tl.float32)
    normed = (out * tl.rsqrt(tl.sum(out * out, 0) / N + eps)).to(dtype).to(tl.float32)
    h_new = (h + (normed * n_out).to(dtype).to(tl.float32)).to(dtype)
    tl.store(H_NEW + at, h_new, mask=keep)
    h_new = h_new.to(tl.float32)
    x = (h_new * tl.rsqrt(tl.sum(h_new * h_new, 0) / N + eps)).to(dtype).to(tl.float32)
    tl.store(X + at, (x * n_next).to(dtype), mask=keep)


def residual_norm(
    h: torch.Tensor, out: torch.Tensor, n_out: torch.Tensor, n_next: torch.Tensor, eps: float, *, pdl: bool = False
):
    """`layer_math.residual_norm` for rows of h and out (B, N), contiguous: (h + rmsnorm(out) n_out, its
    rmsnorm n_next), new tensors in h's dtype. `pdl`: launched with programmatic dependent launch (pdl.py)."""
    rows, n = h.shape
    assert out.shape == h.shape and n_out.shape == n_next.shape == (n,), (h.shape, out.shape, n_out.shape)
    assert h.is_contiguous() and out.is_contiguous() and out.dtype == h.dtype
    h_new, x = torch.empty_like(h), torch.empty_like(h)
    block = triton.next_power_of_2(n)
    warps = 8 if block >= 4096 else 4
    _residual_norm_kernel[(rows,)](
        h, out, n_out, n_next, h_new, x, n, eps, BLOCK=block, PDL=pdl, num_warps=warps, **launch_options(pdl)
    )
    return h_new, x
