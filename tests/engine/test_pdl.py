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
    single-row kernel's first weights held across the wait cost it no spills; with lines of its weights
    asked of the L2 cache before the wait (gemv.PREFETCH_LINES) it holds the prefetches, plainly never."""
    from bench.kernel_resources import resources
    from glm_vision.engine import gemv

    single_row = next(c for c in gemv.CONFIGS if not c.kwargs["USE_DOT"] and c.kwargs["SPLIT_K"] == 1)
    plain = resources(single_row, swiglu=True, arch=90)
    under_pdl = resources(single_row, swiglu=True, arch=90, pdl=True)
    assert plain["GRIDDEPCONTROL"] == 0 and under_pdl["GRIDDEPCONTROL"] >= 2
    assert under_pdl["STACK"] == 0 and under_pdl["REG"] <= 255
    prefetching = resources(single_row, swiglu=True, arch=90, pdl=True, prefetch_lines=32)
    assert prefetching["PREFETCH"] > 0 and prefetching["STACK"] == 0
    assert plain["PREFETCH"] == under_pdl["PREFETCH"] == 0
    assert resources(single_row, swiglu=True, arch=90, prefetch_lines=32)["PREFETCH"] == 0  # only under PDL


def test_pdl_launches_can_take_the_tiles_timed_for_plain_launches():
    """gemv.TILES_TIMED_UNDER_PDL = False (a bench's switch): a PDL launch of a new shape tunes it as a plain
    launch and runs that pick, and computes the product; autotune keeps no PDL pick for it."""
    from tests.triton_interpreter import run_interpreted

    out = run_interpreted("""
        import torch
        import torch.nn.functional as F
        from glm_vision.engine import gemv

        gemv.TILES_TIMED_UNDER_PDL = False
        g = torch.Generator().manual_seed(0)
        x, w, b = torch.randn(3, 300, generator=g), torch.randn(40, 300, generator=g), torch.randn(40, generator=g)
        y = gemv.linear(x, w, b, pdl=True)
        assert torch.allclose(y, F.linear(x, w, b), atol=1e-4)
        assert gemv.tuned_config(3, 40, 300, bias=True) is not None
        assert gemv.tuned_config(3, 40, 300, bias=True, pdl=True) is None
        print("plain tiles ok")
    """)
    assert "plain tiles ok" in out
