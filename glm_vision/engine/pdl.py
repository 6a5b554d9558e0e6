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
writes nothing (the previous kernel may still read what it would overwrite). A kernel launched without
PDL (cuBLAS, Inductor's) waits for everything before it as usual, so mixing them is safe, only slower.

When a kernel lets the next one launch (`griddepcontrol.launch_dependents`; the next one still waits
for this one's end and writes) is the launch's mode: `AFTER_WAIT`, right after its own wait, so that at
most one kernel waits ahead (a chain of them launched early would fill the SMs with programs that can
only wait); or `AFTER_LOOP`, once each of its programs has done its main loop (`let_next_launch`), so
that the next kernel's programs take an SM only in this kernel's last wave, and hold no registers or
shared memory its earlier waves need (the suspect of PDL's loss at 16-32 rows).

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

OFF, AFTER_WAIT, AFTER_LOOP = 0, 1, 2  # a launch's PDL mode (True is AFTER_WAIT)
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


def launch_options(pdl: int) -> dict:
    """The launch keywords of a kernel launched with PDL (any mode) or without (none: the interpreter takes none)."""
    return {"launch_pdl": True} if pdl and not INTERPRETED else {}


def mode(pdl: int) -> int:
    """A launch's PDL mode as the kernels take it (OFF, AFTER_WAIT, AFTER_LOOP; True and False as 1 and 0)."""
    assert pdl in (OFF, AFTER_WAIT, AFTER_LOOP), f"a PDL mode is 0, 1 or 2, not {pdl!r}"
    return int(pdl)


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    """Under PDL: wait until the previous kernel has ended and its writes are visible, then (AFTER_WAIT)
    let the next kernel launch. Nothing without."""
    if PDL:
        if GDC:
            tl.extra.cuda.gdc_wait()
            if PDL == 1:  # AFTER_WAIT
                tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def let_next_launch(PDL: tl.constexpr):
    """Under PDL AFTER_LOOP, where a program has done its main loop: the next kernel may launch once every
    program has come here (or ended). Nothing otherwise."""
    if PDL == 2:  # AFTER_LOOP
        if GDC:
            tl.extra.cuda.gdc_launch_dependents()


def uses_pdl(setting: str, device: torch.device) -> bool:
    """`--decode-pdl` (auto | on | off) on `device`: on only where `supported`, which `on` insists on."""
    if setting == "on" and not supported(device):
        raise ValueError(
            f"--decode-pdl on needs a Hopper or later GPU and a Triton that launches with PDL; {device} is not one"
        )
    return setting != "off" and supported(device)
