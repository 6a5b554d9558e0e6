"""Programmatic dependent launch (PDL) for the decode step's Triton kernels.

A decode step is ~330 dependent kernels (40 layers of QKV, attention split and merge, o_proj, norm,
gate_up, down, norm), most of them a few microseconds long. Launched plainly, each waits for the one
before it to end and flush before its programs are even placed on the SMs, and then its first weight
loads take a memory round trip before the bytes flow again: at one row the GEMVs ran ~6 % over
reading the weights alone (bench/RESULTS.md). With PDL (Hopper and later) a kernel is launched while the one
before it is still running: its programs wait on the SMs (`griddepcontrol.wait`) and start the moment
the previous kernel's writes are visible, having already issued the loads that do not depend on them
(the weights, which nothing writes).

The rule every kernel here keeps when launched so: before `wait_for_previous` it reads only weights and
writes nothing (the previous kernel may still read what it would overwrite). It lets the next kernel
launch right after its own wait, not earlier, so at most one kernel waits ahead: a chain of them
launched early would fill the SMs with programs that can only wait. A kernel launched without PDL
(cuBLAS, Inductor's) waits for everything before it as usual, so mixing them is safe, only slower.

The engine launches so the decode steps of up to 8 rows (forward.PDL_MAX_ROWS), and the attention of up to
8 rows riding in a prefill pass (the same compiled kernels): on the H200 the step's chain of GEMVs and
norms ran 3-5 % faster with PDL at 1 and 8 rows; at 16 and 32 it ran 13-18 % slower on one machine and 4 %
faster at 16 on another (autotune's picks differ), and the engine's 16- and 32-row steps were slower with
it (bench/RESULTS.md, fifteenth and sixteenth sessions).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
GDC = tl.constexpr(not INTERPRETED)  # the interpreter runs no PTX: there a PDL kernel is its order of work alone


@functools.cache
def supported(device: torch.device) -> bool:
    """Whether the kernels may be launched with PDL on `device`: a Hopper or later GPU, and a Triton whose
    launcher sets the attribute (not its interpreter)."""
    if device.type != "cuda" or INTERPRETED:
        return False
    if torch.cuda.get_device_capability(device) < (9, 0):
        return False
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return "launch_pdl" in CUDAOptions.__dataclass_fields__


def launch_options(pdl: bool) -> dict:
    """The launch keywords of a kernel launched with PDL or without (none: the interpreter takes none)."""
    return {"launch_pdl": True} if pdl and not INTERPRETED else {}


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    """Under PDL: wait until the previous kernel has ended and its writes are visible, then let the next
    kernel launch. Nothing without."""
    if PDL:
        if GDC:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()


def uses_pdl(setting: str, device: torch.device) -> bool:
    """`--decode-pdl` (auto | on | off) on `device`: on only where `supported`, which `on` insists on."""
    if setting == "on" and not supported(device):
        raise ValueError(
            f"--decode-pdl on needs a Hopper or later GPU and a Triton that launches with PDL; {device} is not one"
        )
    return setting != "off" and supported(device)
