"""The decode step's matrix products, each through cuBLAS or a Triton GEMV (gemv.py), whichever runs it faster.

Neither wins everywhere on the H200 (bench/RESULTS.md, thirteenth session): an engine's warm-up there kept the GEMVs
for gate_up (with SiLU x up fused in) and lm_head at every batch size up to 64 rows, and chose cuBLAS for the down
matrix at 2 to 32 rows, for QKV from 16 rows and for o_proj at 64; the margins are a few percent and move with the
card. So under `--decode-matmul auto` each product times both ways the first time it is called at a batch size (in
the warm-up's eager steps, before any CUDA graph is captured), as the step runs them (`graph_timer`), and keeps the
faster; `cublas` and `triton` force one way.

Except in a PDL step (pdl.py): there every product is a GEMV. A cuBLAS product launches plainly, so the kernel
after it cannot start early, and timing a product alone does not see that: with the decode chain's products
through cuBLAS where one measured up to ~1 us faster alone, the H200's 8-row PDL step took 6.14 ms, with GEMVs
only 5.71 (bench/RESULTS.md, seventeenth session).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import gemv
from .graph_timer import graph_time
from .layer_math import swiglu_glue

log = logging.getLogger(__name__)

CUBLAS, TRITON, MEASURED = "cublas", "triton", "measured"


class DecodeMatmuls:
    """`linear` and `swiglu` as gemv.py has them, each call routed by `way`: cublas, triton or measured."""

    def __init__(self, way: str, glue: Callable = swiglu_glue, timer: Callable = graph_time) -> None:
        assert way in (CUBLAS, TRITON, MEASURED), way
        self.way = way
        self.glue = glue  # silu(gate) * up after cuBLAS's gate_up product (compiled on CUDA)
        self.timer = timer
        self.timings: dict[tuple, tuple[float, float]] = {}  # measured: (GEMV ms, cuBLAS ms)

    def linear(self, x, weight, bias=None, *, out=None, pdl: bool = False) -> torch.Tensor:
        """x @ weight^T (+ bias), or written into `out` (the float32 logits). `pdl`: a GEMV is launched with
        programmatic dependent launch (pdl.py)."""

        def with_cublas():
            y = F.linear(x, weight, bias)
            return y if out is None else out.copy_(y)

        key = (x.shape[0], *weight.shape, x.dtype, bias is not None, None if out is None else out.dtype)
        return self._run(key, with_cublas, lambda: gemv.linear(x, weight, bias, out=out, pdl=pdl), pdl)

    def swiglu(self, x, weight, *, pdl: bool = False) -> torch.Tensor:
        """silu(x @ gate^T) * (x @ up^T) for the MLP's gate_up weight, gate rows first."""
        key = (x.shape[0], *weight.shape, x.dtype, "swiglu")
        return self._run(key, lambda: self.glue(F.linear(x, weight)), lambda: gemv.swiglu(x, weight, pdl=pdl), pdl)

    def _run(self, key: tuple, with_cublas: Callable, with_triton: Callable, pdl: bool) -> torch.Tensor:
        return (with_triton if self._choice(key, with_cublas, with_triton, pdl) == TRITON else with_cublas)()

    def _choice(self, key: tuple, with_cublas: Callable, with_triton: Callable, pdl: bool) -> str:
        if self.way != MEASURED:
            return self.way
        if pdl:
            return TRITON
        if key not in self.timings:
            if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():  # nothing can be timed there
                log.warning("decode product %s first seen inside a CUDA graph capture: cuBLAS", key)
                return CUBLAS
            with_triton()  # autotunes the GEMV's tile before it is timed
            self.timings[key] = self.timer(with_triton), self.timer(with_cublas)
        return _faster(*self.timings[key])

    @property
    def choices(self) -> dict[tuple, str]:
        """Each measured product's way (its key: rows, the weight's shape, dtype, epilogue)."""
        return {key: _faster(*timings) for key, timings in self.timings.items()}

    def cublas_products(self) -> dict[int, list[str]]:
        """Batch size -> the products (rows x columns of the weight) measured faster through cuBLAS."""
        chosen: dict[int, list[str]] = {}
        for key, way in sorted(self.choices.items(), key=lambda item: item[0][:3]):
            if way == CUBLAS:
                chosen.setdefault(key[0], []).append(_product(key))
        return chosen

    def measured(self) -> dict[int, str]:
        """Batch size -> each product's two timings, GEMV / cuBLAS in microseconds (how close the choices were)."""
        lines: dict[int, list[str]] = {}
        for key, (gemv_ms, cublas_ms) in sorted(self.timings.items(), key=lambda item: item[0][:3]):
            lines.setdefault(key[0], []).append(f"{_product(key)} {1000 * gemv_ms:.1f} / {1000 * cublas_ms:.1f}")
        return {rows: "; ".join(products) for rows, products in lines.items()}


def _faster(gemv_ms: float, cublas_ms: float) -> str:
    return TRITON if gemv_ms <= cublas_ms else CUBLAS


def _product(key: tuple) -> str:
    """A choice's key as the weight's rows x columns, SwiGLU marked."""
    return f"{key[1]}x{key[2]}" + (" SwiGLU" if key[-1] == "swiglu" else "")
