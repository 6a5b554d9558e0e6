"""`layer_math.residual_norm` as one Triton kernel for the decode step's Triton path (`--decode-matmul`):
the residual stream plus a sublayer's normed output, and the next sublayer's norm of it.

Between two Triton GEMVs it launches with PDL (pdl.py) like them: the compiled norm it replaces is
a plain launch, so the GEMV after it could only start once it had finished; now that GEMV's blocks
start while the norm runs and stream their weights into L2. One program per row; the float32 sums
and the roundings to the activations' dtype are eager PyTorch's (`layer_math.rms_norm`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import pdl
from .pdl import launch_next, wait_previous


@triton.jit
def _rms_norm(x, weight, n, eps, DTYPE: tl.constexpr):
    """weight * (x * rsqrt(mean(x^2) + eps)).to(dtype), x in float32, as layer_math.rms_norm."""
    normed = (x * tl.rsqrt(tl.sum(x * x, 0) / n + eps)).to(DTYPE)
    return (weight.to(tl.float32) * normed.to(tl.float32)).to(DTYPE)


@triton.jit
def _residual_norm_kernel(
    H, OUT, W_OUT, W_NEXT, H_NEW, X, n, eps, stride_h, stride_out, BLOCK: tl.constexpr, PDL: tl.constexpr
):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    keep = cols < n
    launch_next(PDL)
    w_out = tl.load(W_OUT + cols, mask=keep, other=0.0)  # the weights are no kernel's output
    w_next = tl.load(W_NEXT + cols, mask=keep, other=0.0)
    wait_previous(PDL)
    dtype = H_NEW.dtype.element_ty
    out = tl.load(OUT + row * stride_out + cols, mask=keep, other=0.0).to(tl.float32)
    h = tl.load(H + row * stride_h + cols, mask=keep, other=0.0).to(tl.float32)
    h = (h + _rms_norm(out, w_out, n, eps, dtype).to(tl.float32)).to(dtype)
    tl.store(H_NEW + row * n + cols, h, mask=keep)
    tl.store(X + row * n + cols, _rms_norm(h.to(tl.float32), w_next, n, eps, dtype), mask=keep)


def residual_norm(h: torch.Tensor, out: torch.Tensor, n_out: torch.Tensor, n_next: torch.Tensor, eps: float):
    """(h + rms_norm(out, n_out), rms_norm(of that, n_next)) for rows h, out (M, hidden)."""
    rows, hidden = h.shape
    assert out.shape == h.shape and h.stride(-1) == 1 and out.stride(-1) == 1
    h_new, x = (torch.empty(rows, hidden, dtype=h.dtype, device=h.device) for _ in range(2))
    use_pdl = pdl.enabled(h.device)
    _residual_norm_kernel[(rows,)](
        h,
        out,
        n_out,
        n_next,
        h_new,
        x,
        hidden,
        eps,
        h.stride(0),
        out.stride(0),
        BLOCK=triton.next_power_of_2(hidden),
        PDL=use_pdl,
        num_warps=8,
        **pdl.launch_options(use_pdl),
    )
    return h_new, x
