"""Programmatic dependent launch (Hopper and later) for the decode step's Triton kernels.

A decode step is ~340 small kernels in a row, each bound by reading memory, and each one's first
and last microseconds leave the memory bus half idle (blocks starting up, the last blocks draining).
With PDL a kernel lets the next one launch as soon as all its own blocks have started
(`launch_next`), and the next one's blocks, on the SMs that free up, first do what does not depend
on their predecessor (a matrix-vector product streams its weights into L2: `prefetch_l2`), then
wait until the predecessor has finished and its writes are visible (`wait_previous`), and only then
read its output. Every kernel launched with PDL waits before its first dependent read and before its
first write, so the result is the same as without (bit for bit: same kernels, same order of sums).

On the CPU (Triton's interpreter) and before Hopper the kernels are compiled without it.
`MODE` "off" switches it off, "wait" keeps the early launch without the prefetches (benchmarks:
bench/profile_decode.py --pdl).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

MODE = os.environ.get("GLMV_PDL", "on")  # on | wait | off
PREFETCH_COLS = 512  # columns of its weight rows a GEMV program prefetches into L2 before waiting


def enabled(device: torch.device) -> bool:
    """Whether the decode kernels on `device` launch with PDL: CUDA, compute capability 9 or later."""
    if MODE == "off" or device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9 and _triton_launches_pdl()


def prefetches(use_pdl: bool) -> bool:
    """Whether kernels launched with PDL prefetch what they will read before waiting."""
    return use_pdl and MODE == "on"


def launch_options(use_pdl: bool) -> dict:
    """The Triton launch keyword for a kernel launched with PDL (none without: older Tritons lack it)."""
    return {"launch_pdl": True} if use_pdl else {}


def _triton_launches_pdl() -> bool:
    from triton.backends.nvidia.compiler import CUDAOptions

    return "launch_pdl" in CUDAOptions.__dataclass_fields__ and hasattr(tl.extra.cuda, "gdc_wait")


@triton.jit
def launch_next(PDL: tl.constexpr):
    """Let the next kernel in the stream launch now (it still waits for this one before reading)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def wait_previous(PDL: tl.constexpr):
    """Wait until the previous kernel in the stream has finished and its writes are visible."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def prefetch_l2(ptrs):
    """Ask for the 128-byte lines at `ptrs` to be loaded into L2 (no registers, no wait)."""
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1]; // dummy $0", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
    )
