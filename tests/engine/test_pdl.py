"""Programmatic dependent launch (glm_vision/engine/pdl.py): where the decode kernels wait and release.

No GPU here: the kernels are compiled for the H200's architecture on this machine (Triton and its ptxas,
bench/kernel_resources.py) and their PTX is read. The rule that keeps PDL exact: nothing but the weights
is read, and nothing is written, before `griddepcontrol.wait`."""

import re

import pytest
import torch

from bench.kernel_resources import compile_offline, gemv_candidate, jit_function
from glm_vision.engine import decode_attention, gemv, pdl


def positions(ptx: str, instruction: str) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(instruction), ptx)]


def memory_accesses(ptx: str) -> list[int]:
    return sorted(positions(ptx, "ld.global") + positions(ptx, "st.global") + positions(ptx, "atom.global"))


@pytest.mark.parametrize("dot", [True, False])
@pytest.mark.parametrize("swiglu", [False, True])
def test_gemv_programs_prefetch_their_weights_then_wait_and_release_after_their_loop(dot, swiglu):
    config = next(c for c in gemv.CONFIGS if c.kwargs["USE_DOT"] == dot and c.kwargs["SPLIT_K"] == 1)
    ptx = gemv_candidate(config, swiglu=swiglu, arch=90).asm["ptx"]
    (wait,) = positions(ptx, "griddepcontrol.wait")
    (release,) = positions(ptx, "griddepcontrol.launch_dependents")
    prefetches = positions(ptx, "prefetch.global.L2")
    loads, stores = positions(ptx, "ld.global"), positions(ptx, "st.global")
    assert prefetches and max(prefetches) < wait  # the weights asked for before the wait
    assert wait < min(memory_accesses(ptx))  # no load or store before it
    assert max(loads) < release < min(stores)  # released once the weights are read, before the outputs


def test_without_pdl_the_gemv_neither_waits_nor_prefetches():
    config = gemv.CONFIGS[0]
    ptx = gemv_candidate(config, swiglu=False, arch=90, pdl=False).asm["ptx"]
    assert not positions(ptx, "griddepcontrol") and not positions(ptx, "prefetch.global")


ATTENTION_TYPES = {"K": "*bf16", "LENGTHS": "*i64", "PART_O": "*fp32", "PART_M": "*fp32", "PART_L": "*fp32"}


def attention_kernel_ptx(kernel, constants: dict) -> str:
    strides = {name: "i32" for name in jit_function(kernel).arg_names if name[0] == "s" or name == "bucket"}
    types = {**strides, **ATTENTION_TYPES, "scale": "fp32"}
    return compile_offline(kernel, {**constants, "PDL": True}, arch=90, types=types).asm["ptx"]


@pytest.mark.parametrize(
    "kernel, constants",
    [
        (decode_attention._write_kernel, {"D": 128, "ROT": 64}),
        (decode_attention._merge_kernel, {"D": 128, "CHUNK": 16}),
        (
            decode_attention._split_kernel,
            {"G": 16, "G_PAD": 16, "D": 128, "ROT": 64, "SPLIT_N": 256, "BLOCK": 64, "PRECISION": "tf32"},
        ),
    ],
    ids=["write", "merge", "split"],
)
def test_the_decode_attention_kernels_touch_memory_only_after_their_wait(kernel, constants):
    ptx = attention_kernel_ptx(kernel, constants)
    (wait,) = positions(ptx, "griddepcontrol.wait")
    (release,) = positions(ptx, "griddepcontrol.launch_dependents")
    assert wait < min(memory_accesses(ptx))
    if kernel is decode_attention._split_kernel:  # many programs: released only past the keys
        assert max(positions(ptx, "ld.global")) < release < min(positions(ptx, "st.global"))


def test_prefetch_is_a_power_of_two_of_lines_within_the_budget_and_the_row():
    for block_n in (4, 8, 16, 32, 64):
        for swiglu in (False, True):
            for k in (64, 512, 4096, 13696):
                lines = gemv.prefetch_lines(block_n, swiglu, k)
                rows = block_n * (2 if swiglu else 1)
                assert lines & (lines - 1) == 0 and 1 <= lines <= -(-k // 64)
                assert lines == 1 or rows * lines * 128 <= gemv.PREFETCH_BYTES
    assert gemv.prefetch_lines(8, False, 4096) == 32  # 32 KB: 8 rows of 4 KB


def test_pdl_is_on_for_hopper_and_later_only_and_can_be_switched_off(monkeypatch):
    cuda = torch.device("cuda", 0)
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["value"])
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)

    def fresh(device):
        pdl.enabled.cache_clear()
        return pdl.enabled(device)

    try:
        assert fresh(cuda) and not fresh(torch.device("cpu"))
        assert pdl.inductor_options(cuda) == (
            {"triton.enable_pdl": True} if hasattr(torch._inductor.config.triton, "enable_pdl") else {}
        )
        capability["value"] = (8, 0)
        assert not fresh(cuda) and pdl.inductor_options(cuda) == {}
        capability["value"] = (9, 0)
        monkeypatch.setenv("GLM_VISION_PDL", "0")
        assert not fresh(cuda)
    finally:
        pdl.enabled.cache_clear()
