"""The card's memory ceilings, measured: a device-to-device copy (bytes read + written) and a pure read
(a Triton kernel summing a buffer), the two numbers METHOD.md asks for before judging a kernel's
bandwidth. A decode step at one row reads ~17.6 GB and writes almost nothing, so the read ceiling is
the one its GEMVs should be held against.

    python -m bench.bench_bandwidth [--gib 2]

Then the decode step's matrix sizes read the way the step reads them (`graph_timer.graph_time`: replayed in a
CUDA graph, each read after an L2 flush): what a read kernel that does nothing else costs at those
sizes, ramp and tail included, the floor for a GEMV of that many bytes. Last, a few layers' worth of
matrices (QKV, o_proj, gate_up, down: 408 MB a layer) read one kernel per matrix, one per layer, and
one for all of them: what the boundaries between a layer's kernels cost, the most a persistent kernel
that streams matrix after matrix could save.
"""

import argparse

import torch
import triton
import triton.language as tl

from glm_vision.engine.graph_timer import graph_time

LAYER_MB = [33.6, 37.7, 112.2, 224.4]  # a layer's matrices in bf16: o_proj, qkv + bias, down, gate_up
READ_TILES = [(block, warps, stages) for block in (4096, 16384) for warps in (4, 8) for stages in (1, 3, 5)]


@triton.jit
def _read_kernel(X, PARTIAL, n, per_program, BLOCK: tl.constexpr):
    start = tl.program_id(0) * per_program
    acc = tl.zeros([BLOCK], tl.float32)
    for offset in range(start, start + per_program, BLOCK):
        offs = offset + tl.arange(0, BLOCK)
        acc += tl.load(X + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(PARTIAL + tl.program_id(0), tl.sum(acc, 0))


def read_partials(x: torch.Tensor, partial: torch.Tensor, block: int, warps: int, stages: int) -> None:
    """One partial sum of x per program into `partial` (its length is the number of programs)."""
    programs = partial.numel()
    per_program = triton.cdiv(triton.cdiv(x.numel(), programs), block) * block
    _read_kernel[(programs,)](x, partial, x.numel(), per_program, BLOCK=block, num_warps=warps, num_stages=stages)


def read_sum(x: torch.Tensor, programs: int, block: int, warps: int, stages: int) -> torch.Tensor:
    partial = torch.empty(programs, device=x.device, dtype=torch.float32)
    read_partials(x, partial, block, warps, stages)
    return partial.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="buffer size")
    parser.add_argument(
        "--step-mb",
        type=float,
        nargs="*",
        default=[*LAYER_MB, 1241.5],
        help="read sizes timed as the decode step runs them (default: o_proj, qkv, down, gate_up, lm_head in bf16)",
    )
    args = parser.parse_args()
    assert torch.cuda.is_available(), "a CUDA device is needed"
    n = int(args.gib * 2**30) // 2
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    expected = src.float().sum().item()
    print(f"device: {torch.cuda.get_device_name()}; {args.gib} GiB bf16 buffers")
    print("| what | us | GB/s |\n|---|---|---|")
    copy_ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=200, rep=2000, return_mode="median")
    print(f"| copy (read + write) | {copy_ms * 1e3:.0f} | {2 * src.nbytes / copy_ms / 1e6:,.0f} |")
    torch_ms = triton.testing.do_bench(lambda: src.sum(dtype=torch.float32), warmup=200, rep=2000, return_mode="median")
    print(f"| read, torch.sum | {torch_ms * 1e3:.0f} | {src.nbytes / torch_ms / 1e6:,.0f} |")
    for per_sm in (1, 2, 4, 8):
        for tile in READ_TILES:
            time_read(src, per_sm * sms, tile, expected, f"read, {per_sm} programs an SM, block/warps/stages {tile}")
    for mb in args.step_mb:
        time_step_read(src[: int(mb * 1e6) // 2], sms)
    time_layer_reads(src, sms, LAYER_MB)


STEP_READS = ((1, 16384), (2, 16384), (4, 8192))  # (programs an SM, elements a block) of the step-like reads


def step_read_us(parts: list[torch.Tensor], sms: int, per_sm: int, block: int) -> tuple[float, int]:
    """Microseconds to read `parts`, a kernel each, as the decode step runs its kernels (`graph_time`),
    and the programs of the first kernel."""
    partials = [torch.empty(min(per_sm * sms, triton.cdiv(p.numel(), block)), device="cuda") for p in parts]

    def read_all():
        for part, partial in zip(parts, partials, strict=True):
            read_partials(part, partial, block, 8, 1)

    return 1000 * graph_time(read_all), partials[0].numel()


def time_step_read(part: torch.Tensor, sms: int) -> None:
    for per_sm, block in STEP_READS:
        us, programs = step_read_us([part], sms, per_sm, block)
        label = f"step-like read of {part.nbytes / 1e6:,.1f} MB, {programs} programs of {block}"
        print(f"| {label} | {us:.1f} | {part.nbytes / us / 1e3:,.0f} |")


def layer_parts(src: torch.Tensor, layer_mb: list[float]) -> tuple[list[torch.Tensor], int]:
    """As many layers as `src` holds (8 at most), each its matrices one after another, every size a multiple of
    16 elements: (the matrices in order, layers)."""
    sizes = [int(mb * 1e6) // 2 // 16 * 16 for mb in layer_mb]
    layers = min(8, src.numel() // sum(sizes))
    return list(src[: layers * sum(sizes)].split(sizes * layers)), layers


def time_layer_reads(src: torch.Tensor, sms: int, layer_mb: list[float]) -> None:
    """As many layers as the buffer holds, each layer's matrices contiguous and the layers one after
    another, read as one kernel per matrix, one per layer, or one for all: microseconds a layer."""
    matrices, layers = layer_parts(src, layer_mb)
    assert layers >= 2, "a buffer of two layers at least (--gib)"
    layer = sum(m.numel() for m in matrices) // layers
    by_layer = [src[i * layer : (i + 1) * layer] for i in range(layers)]
    ways = {"a kernel a matrix": matrices, "a kernel a layer": by_layer, "one kernel": [src[: layers * layer]]}
    for way, parts in ways.items():
        for per_sm, block in STEP_READS:
            us = step_read_us(parts, sms, per_sm, block)[0] / layers
            label = f"{layers} layers of {layer_mb} MB, {way}, {per_sm} programs an SM of {block}"
            print(f"| {label} | {us:.1f} a layer | {2 * layer / us / 1e3:,.0f} |")


def time_read(src: torch.Tensor, programs: int, tile: tuple[int, int, int], expected: float, label: str) -> None:
    got = read_sum(src, programs, *tile).item()
    assert abs(got - expected) <= 1e-3 * abs(expected) + 1e3, (got, expected)
    ms = triton.testing.do_bench(lambda: read_sum(src, programs, *tile), warmup=100, rep=500, return_mode="median")
    print(f"| {label} | {ms * 1e3:.0f} | {src.nbytes / ms / 1e6:,.0f} |")


if __name__ == "__main__":
    main()
