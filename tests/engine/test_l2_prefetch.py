"""The decode GEMVs' L2 prefetch (engine/l2_prefetch.py): the programs' pieces tile the span to warm,
the plan names the right rows of the next matrices, and the GEMV compiled for the H200 issues the
bulk prefetch (the instruction itself only runs on a GPU: bench/RESULTS.md has what it did there)."""

from __future__ import annotations

import pytest
import torch

from glm_vision.engine.l2_prefetch import ALIGN, NONE, PrefetchPlan, Region
from tests.triton_interpreter import run_interpreted


def test_the_programs_pieces_tile_the_span_in_order():
    out = run_interpreted("""
        import torch
        import triton
        import triton.language as tl
        from glm_vision.engine.l2_prefetch import pieces

        @triton.jit
        def record(STARTS, SIZES, nbytes):
            program = tl.program_id(0)
            start, size = pieces(nbytes, program, tl.num_programs(0))
            tl.store(STARTS + program * 32 + tl.arange(0, 32), start)
            tl.store(SIZES + program * 32 + tl.arange(0, 32), size)

        for nbytes, programs in ((33_554_432, 144), (16 * 1001, 7), (16, 300), (4096 * 8192 - 16, 288)):
            starts = torch.full((programs * 32,), -1, dtype=torch.int32)
            sizes = torch.full((programs * 32,), -1, dtype=torch.int32)
            record[(programs,)](starts, sizes, nbytes)
            covered, position = 0, 0
            for start, size in zip(starts.tolist(), sizes.tolist()):
                assert size >= 0 and start % 16 == 0 and size % 16 == 0, (start, size)
                if size:
                    assert start == position, (nbytes, programs, start, position)  # no gap, no overlap
                    position += size
                    covered += size
            assert covered == nbytes, (nbytes, programs, covered)
        print("pieces ok")
    """)
    assert "pieces ok" in out


def test_the_plan_names_the_next_matrices_rows():
    o_proj = torch.zeros(64, 32, dtype=torch.bfloat16)  # 4 KB
    gate_up = torch.zeros(2 * 48, 32, dtype=torch.bfloat16)  # gate rows 0..47, up rows 48..95; 64 bytes a row
    plan = PrefetchPlan(after_qkv=1 << 20, after_o_proj=1024, after_gate_up=640, after_down=128)
    (whole,) = plan.o_proj(o_proj)
    assert whole.tensor.data_ptr() == o_proj.data_ptr() and whole.nbytes == o_proj.numel() * 2  # all of it
    gate, up = plan.gate_up(gate_up)
    assert gate.tensor.data_ptr() == gate_up.data_ptr() and gate.nbytes == 512  # 8 gate rows
    assert up.tensor.data_ptr() == gate_up[48].data_ptr() and up.nbytes == 512  # and the 8 up rows beside them
    (down,) = plan.down(o_proj)
    assert down.nbytes == 640 and down.tensor.data_ptr() == o_proj.data_ptr()
    assert plan.next_layer(o_proj)[0].nbytes == 128
    for spans in (NONE.o_proj(o_proj), NONE.gate_up(gate_up), NONE.down(o_proj), NONE.next_layer(o_proj)):
        assert spans == ()


def test_a_region_is_one_contiguous_span_of_whole_pieces():
    assert Region(torch.zeros(7, 3, dtype=torch.bfloat16)).nbytes == 32  # 42 bytes, rounded down to ALIGN
    assert Region().nbytes == 0 and ALIGN == 16
    with pytest.raises(AssertionError, match="contiguous"):
        _ = Region(torch.zeros(8, 8)[:, :4]).nbytes


def test_the_gemv_compiled_for_the_h200_issues_the_bulk_prefetch_only_when_asked():
    from bench.kernel_resources import compile_candidate
    from glm_vision.engine import gemv

    config = gemv.CONFIGS[0]
    with_prefetch = compile_candidate(config, swiglu=False, arch=90, prefetch=True).asm["ptx"]
    without = compile_candidate(config, swiglu=False, arch=90, prefetch=False).asm["ptx"]
    assert with_prefetch.count("cp.async.bulk.prefetch.L2.global") == 2  # NEXT_A and NEXT_B
    assert "cp.async.bulk.prefetch" not in without
