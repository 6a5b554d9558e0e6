"""`--decode-pdl` (engine/pdl.py): where the decode step's Triton kernels are launched with programmatic
dependent launch, and that the kernels compiled for a Hopper GPU carry its wait. What PDL does to the numbers
is checked on the CPU by the GEMV and engine tests (the interpreter runs a PDL kernel's order of work); on
the GPU by bench/pdl_chain.py (the chain in a CUDA graph equals its kernels run one at a time)."""

from __future__ import annotations

import pytest
import torch

from glm_vision.engine.pdl import supported, uses_pdl


def test_pdl_is_on_only_where_the_gpu_has_it():
    cpu = torch.device("cpu")
    assert not supported(cpu)
    assert uses_pdl("auto", cpu) is False and uses_pdl("off", cpu) is False
    with pytest.raises(ValueError, match="--decode-pdl on needs a Hopper or later GPU"):
        uses_pdl("on", cpu)


def test_the_engine_on_the_cpu_runs_without_pdl(engine):
    assert engine.settings.decode_pdl == "auto" and engine.runner.forward.pdl is False


def test_a_gemv_compiled_for_hopper_waits_for_the_previous_kernel_only_under_pdl():
    """Triton and ptxas compile the GEMV for the H200's architecture here: launched with PDL it holds the
    wait and the dependents' launch (griddepcontrol.wait, .launch_dependents), plainly neither; the
    single-row kernel's first weights held across the wait cost it no spills."""
    from bench.kernel_resources import resources
    from glm_vision.engine import gemv

    single_row = next(c for c in gemv.CONFIGS if not c.kwargs["USE_DOT"] and c.kwargs["SPLIT_K"] == 1)
    plain = resources(single_row, swiglu=True, arch=90)
    under_pdl = resources(single_row, swiglu=True, arch=90, pdl=True)
    assert plain["GRIDDEPCONTROL"] == 0 and under_pdl["GRIDDEPCONTROL"] >= 2
    assert under_pdl["STACK"] == 0 and under_pdl["REG"] <= 255
