"""Registers, spills and shared memory of the decode GEMV candidates, compiled for a GPU that need not be
here (this machine's Triton compiler and its bundled ptxas, no device time spent; another Triton
version may allocate registers differently).

    python -m bench.kernel_resources [--arch 90]

A candidate that needs more than 255 registers a thread spills to local memory ("stack" bytes a
thread): the H200 showed such a variant of the kernel 30 % slower for the whole decode step
(bench/RESULTS.md, sixth session), so a new kernel variant is worth checking here before a GPU run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from glm_vision.engine import gemv

POINTERS = {"PARTS": "*fp32", "COUNTS": "*i32"}  # every other pointer: bfloat16 activations and weights


def _kernel() -> triton.runtime.jit.JITFunction:
    fn = gemv._gemv_kernel
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # under the heuristics wrapper
        fn = fn.fn
    return fn


def resources(config: triton.Config, *, swiglu: bool, arch: int, pdl: bool = False) -> dict[str, int]:
    """REG / STACK / SHARED / LOCAL of one candidate for a bfloat16 decode step of up to 16 rows, and its
    GRIDDEPCONTROL instructions (`pdl`: as launched with programmatic dependent launch, its first block of
    weights read before its wait)."""
    fn = _kernel()
    dot = config.kwargs["USE_DOT"]
    constants = dict(config.kwargs, HAS_BIAS=False, SWIGLU=swiglu, PRECISION="tf32", BLOCK_M=16 if dot else 1)
    constants.update(EVEN_K=True, PDL=pdl)
    signature = {}
    for name in fn.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name in ("M", "N", "K") or name.startswith("stride"):
            signature[name] = "i32"
        else:
            signature[name] = POINTERS.get(name, "*bf16")
    # as Triton specializes them at run time for the model's shapes: every pointer, size and stride a multiple
    # of 16 (M, the batch, is left unspecialized), which makes the loads vector loads
    aligned = [i for i, name in enumerate(fn.arg_names) if signature[name] != "constexpr" and name != "M"]
    source = ASTSource(
        fn=fn,
        signature=signature,
        constexprs={(fn.arg_names.index(k),): v for k, v in constants.items()},
        attrs={(i,): [["tt.divisibility", 16]] for i in aligned},
    )
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        report = subprocess.run([tool, "--dump-resource-usage", cubin], capture_output=True, text=True, check=True)
    used = {key: int(value) for key, value in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", report.stdout)}
    used["GRIDDEPCONTROL"] = compiled.asm["ptx"].count("griddepcontrol.")  # PDL's wait and launch instructions
    return used


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    parser.add_argument("--pdl", action="store_true", help="the kernels as launched with PDL (engine/pdl.py)")
    args = parser.parse_args(argv)
    print("| candidate | epilogue | registers | stack bytes (spills) | shared bytes |")
    print("|---|---|---|---|---|")
    for config in gemv.CONFIGS:
        for swiglu in (False, True):
            used = resources(config, swiglu=swiglu, arch=args.arch, pdl=args.pdl)
            name = ", ".join(f"{k}={v}" for k, v in config.kwargs.items())
            name += f", warps={config.num_warps}, stages={config.num_stages}"
            epilogue = "SwiGLU" if swiglu else "linear"
            print(f"| {name} | {epilogue} | {used['REG']} | {used['STACK']} | {used['SHARED']} |")


if __name__ == "__main__":
    main()
