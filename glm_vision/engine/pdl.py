"""Programmatic dependent launch (Hopper and later) for the decode step's kernels.

A decode step replays ~360 kernels, most of them a few microseconds long, and on a plain stream each
boundary costs a drain and a ramp: the next kernel's programs start only once the last program of the
previous one has finished and its writes are flushed. Launched with PDL, a kernel may start while the
previous one still runs: its programs do what depends on nothing that kernel writes (a GEMV pulls its
first weight tiles into L2), then wait (`griddepcontrol.wait`) until the previous kernel has completed
and its memory is visible. A kernel tells when its dependents may be launched
(`griddepcontrol.launch_dependents`): at its start where it is small, after its main loop where its
programs fill the GPU (dependents launched earlier would take the SM slots its later programs need).

The rule that keeps it exact: every write, and every read of data the step writes, comes after the
wait; before it only reads of the weights, which nothing writes. A wait covers every earlier kernel:
the previous one could only complete after its own wait returned.

The Triton kernels take the switch as a constexpr (`PDL`) and are launched with `launch_pdl`; the
kernels torch.compile generates get it from Inductor's `triton.enable_pdl`. Off on the CPU, under
Triton's interpreter, before compute capability 9, and with GLM_VISION_PDL=0 (for A/B benchmarks).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

__all__ = ["enabled", "inductor_options", "gdc_wait", "gdc_launch_dependents", "prefetch_l2"]


@functools.cache
def enabled(device: torch.device) -> bool:
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    if os.environ.get("GLM_VISION_PDL", "1") == "0":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def inductor_options(device: torch.device) -> dict:
    """torch.compile options that give the generated kernels PDL where it is on and Inductor offers it."""
    if enabled(device) and hasattr(torch._inductor.config.triton, "enable_pdl"):
        return {"triton.enable_pdl": True}
    return {}


@triton.jit
def prefetch_l2(pointers):
    """Ask L2 for the 128-byte lines at `pointers` (one pointer a line is enough): no registers held,
    nothing waited for, so it may run before `gdc_wait`."""
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1];\n mov.u32 $0, 0;", "=r,l", [pointers], dtype=tl.int32, is_pure=False, pack=1
    )
