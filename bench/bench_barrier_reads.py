"""Whether a persistent decode kernel could beat a kernel per matrix: a few layers' matrices (QKV, o_proj,
gate_up, down) read by one launch whose programs wait for each other between matrices (a grid barrier: each
matrix of a decode step needs the whole output of the one before it), against the same bytes read a kernel a
matrix and by one launch with no barrier (`bench_bandwidth`'s layer reads).

    python -m bench.bench_barrier_reads [--gib 2]

The persistent launch reads each matrix split over all its programs, four blocks in flight a program (Triton
does not pipeline these loops), as a persistent GEMV would. Variants: without the barrier (its own read
speed); with it; each program loading its first four blocks of the next matrix before it waits (weights never
depend on the activations, so a persistent kernel can have them in flight across the barrier); and each program
reading a small L2-resident vector after the barrier before its first block (the activations a GEMV needs). If
the barrier launch with the early blocks reads close to "one kernel", a persistent kernel is worth writing; if it
reads like "a kernel a matrix", the boundaries cannot be saved this way. (H200, 2026-11-30: 102-109 us a layer
with the barrier against 101 a kernel a matrix and 90 one kernel: bench/RESULTS.md, twelfth session.)

Every program of a barrier launch must be resident at once (a program waiting for one that never started
would wait forever): it is a cooperative launch, which the driver refuses when they cannot all be resident,
and the bench then tries one program an SM instead of two. Under Triton's interpreter (CPU) programs run one
after another, so there only one program is launched (`--check`).
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl

from bench.bench_bandwidth import LAYER_MB, layer_parts, step_read_us
from glm_vision.engine.graph_timer import graph_time

WARPS = 8


@triton.jit
def _span(OFFSETS, i, pid, programs, BLOCK: tl.constexpr):
    """[start, end) of matrix i that program pid reads: whole blocks, the last program's share cut at the end."""
    lo = tl.load(OFFSETS + i)
    hi = tl.load(OFFSETS + i + 1)
    per = tl.cdiv(tl.cdiv(hi - lo, programs), BLOCK) * BLOCK
    start = lo + pid * per
    # every bound a multiple of 16 elements (layer_parts): vector loads, masked by whole vectors
    return tl.multiple_of(start, 16), tl.multiple_of(tl.minimum(start + per, hi), 16)


@triton.jit
def _wait_for_all(COUNTER, target):
    """Grid barrier: this program's arrival counted, then wait until `target` arrivals (a counter that only grows)."""
    tl.debug_barrier()  # every thread of the program done with the matrix before it arrives
    tl.atomic_add(COUNTER, 1, sem="release")
    while tl.atomic_add(COUNTER, 0, sem="acquire") < target:
        pass


@triton.jit
def _load4(X, start, end, offs, BLOCK: tl.constexpr):
    """Four blocks from `start`, issued together (Triton does not pipeline these loops: the bytes in flight
    come from here), kept in bf16 until they are added."""
    x0 = tl.load(X + start + offs, mask=start + offs < end, other=0.0)
    x1 = tl.load(X + start + BLOCK + offs, mask=start + BLOCK + offs < end, other=0.0)
    x2 = tl.load(X + start + 2 * BLOCK + offs, mask=start + 2 * BLOCK + offs < end, other=0.0)
    x3 = tl.load(X + start + 3 * BLOCK + offs, mask=start + 3 * BLOCK + offs < end, other=0.0)
    return x0, x1, x2, x3


@triton.jit
def _sum4(x0, x1, x2, x3):
    return (x0.to(tl.float32) + x1.to(tl.float32)) + (x2.to(tl.float32) + x3.to(tl.float32))


@triton.jit
def _barrier_read_kernel(
    X,
    OFFSETS,
    COUNTER,
    VEC,
    PARTIAL,
    matrices,
    BLOCK: tl.constexpr,
    BARRIER: tl.constexpr,
    EARLY: tl.constexpr,
    DEPENDENT: tl.constexpr,
):
    """Sum of `matrices` spans of X (OFFSETS: matrices + 2 entries, the last two equal), a grid barrier after
    each, four blocks a step."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    start, end = _span(OFFSETS, 0, pid, programs, 4 * BLOCK)
    e0, e1, e2, e3 = _load4(X, start, end, offs, BLOCK)
    for i in range(matrices):
        start, end = _span(OFFSETS, i, pid, programs, 4 * BLOCK)
        if DEPENDENT:  # the activations: written by the matrix before, read from the L2 after the barrier
            acc += tl.load(VEC + offs).to(tl.float32)
        first = start
        if EARLY:
            acc += _sum4(e0, e1, e2, e3)
            first = start + 4 * BLOCK
        for step in range(first, end, 4 * BLOCK):
            x0, x1, x2, x3 = _load4(X, tl.multiple_of(step, 16), end, offs, BLOCK)
            acc += _sum4(x0, x1, x2, x3)
        if EARLY:  # the next matrix's first four blocks in flight while this program waits
            start, end = _span(OFFSETS, i + 1, pid, programs, 4 * BLOCK)
            e0, e1, e2, e3 = _load4(X, start, end, offs, BLOCK)
        if BARRIER:
            _wait_for_all(COUNTER, (i + 1) * programs)
    tl.store(PARTIAL + pid, tl.sum(acc, 0))


class BarrierRead:
    """One launch reading `parts` (consecutive views of one buffer) with a grid barrier after each."""

    def __init__(self, parts: list[torch.Tensor], block: int, early: bool, dependent: bool, barrier: bool = True):
        base = parts[0].data_ptr()
        bounds = [(p.data_ptr() - base) // p.element_size() for p in parts] + [parts[-1].numel()]
        bounds[-1] += bounds[-2]
        self.x = parts[0]
        self.offsets = torch.tensor(bounds + bounds[-1:], dtype=torch.int64, device=self.x.device)
        self.matrices = len(parts)
        self.counter = torch.zeros(1, dtype=torch.int32, device=self.x.device)
        self.block = block
        self.vec = torch.ones(self.block, dtype=self.x.dtype, device=self.x.device)
        self.early, self.dependent, self.barrier = early, dependent, barrier
        self.partial = None

    def resident_programs(self, sms: int) -> int:
        """The most programs (two an SM at most) that the driver runs all at once: a cooperative launch
        refuses a grid whose programs cannot all be resident."""
        for per_sm in (2, 1):
            try:
                self.launch(per_sm * sms)
                torch.cuda.synchronize()
                return per_sm * sms
            except RuntimeError as error:
                print(f"  {per_sm * sms} programs refused: {error}")
        raise RuntimeError("not even one program an SM fits")

    def launch(self, programs: int) -> None:
        if self.partial is None or self.partial.numel() != programs:
            self.partial = torch.empty(programs, dtype=torch.float32, device=self.x.device)
        self.counter.zero_()
        cooperative = {} if self.x.device.type == "cpu" else {"launch_cooperative_grid": True}
        flags = {"BARRIER": self.barrier, "EARLY": self.early, "DEPENDENT": self.dependent}
        _barrier_read_kernel[(programs,)](
            self.x, self.offsets, self.counter, self.vec, self.partial, self.matrices,
            BLOCK=self.block, **flags, num_warps=WARPS, num_stages=1, **cooperative,
        )  # fmt: skip

    def total(self) -> float:
        return self.partial.sum().item()


def check(reader: BarrierRead, parts: list[torch.Tensor], programs: int) -> None:
    """The launch's sum against torch's: every byte read once, the vector once per matrix and program."""
    reader.launch(programs)
    want = sum(p.float().sum().item() for p in parts)
    want += len(parts) * programs * reader.block if reader.dependent else 0
    got = reader.total()
    assert abs(got - want) <= 1e-3 * abs(want) + 1e2, (reader.early, reader.dependent, got, want)


BLOCKS = (4096, 8192)  # elements a load of the barrier launch (four loads in flight)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="buffer size")
    parser.add_argument("--check", action="store_true", help="only check the sums, one program (CPU interpreter)")
    args = parser.parse_args(argv)
    device = "cpu" if args.check else "cuda"
    src = torch.rand(int(args.gib * 2**30) // 2, device=device, dtype=torch.bfloat16)  # positive: a missed block shows
    if args.check:
        parts, _ = layer_parts(src, [mb * args.gib / 2 for mb in LAYER_MB])
        for early in (False, True):
            for dependent in (False, True):
                check(BarrierRead(parts, 4096, early, dependent), parts, programs=1)
        print("sums agree")
        return
    parts, layers = layer_parts(src, LAYER_MB)
    print(f"device: {torch.cuda.get_device_name()}; {layers} layers of {LAYER_MB} MB")
    print("| how | elements a load | programs | us a layer | GB/s |\n|---|---|---|---|---|")
    time_references(src, parts, layers)
    time_barrier_launches(parts, layers)


def row(name: str, block: int, programs: int, us: float, parts: list[torch.Tensor], layers: int) -> str:
    layer_bytes = sum(p.nbytes for p in parts) / layers
    return f"| {name} | {block} | {programs} | {us:.1f} | {layer_bytes / us / 1e3:,.0f} |"


def time_references(src: torch.Tensor, parts: list[torch.Tensor], layers: int) -> None:
    """The same bytes a kernel a matrix and in one kernel without barriers (`bench_bandwidth`'s layer reads)."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    whole = [src[: sum(p.numel() for p in parts)]]
    for name, pieces in (("a kernel a matrix", parts), ("one kernel, no barrier", whole)):
        us = step_read_us(pieces, sms, 2, 16384)[0] / layers
        print(row(name, 16384, 2 * sms, us, parts, layers), flush=True)


def time_barrier_launches(parts: list[torch.Tensor], layers: int) -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    variants = [(False, False, False)] + [(True, early, dep) for early in (False, True) for dep in (False, True)]
    for block in BLOCKS:
        for barrier, early, dependent in variants:
            reader = BarrierRead(parts, block, early, dependent, barrier)
            programs = reader.resident_programs(sms)
            check(reader, parts, programs)
            us = 1000 * graph_time(lambda reader=reader, programs=programs: reader.launch(programs)) / layers
            name = "barrier" if barrier else "the same launch without the barrier"
            name += (", next block early" if early else "") + (", vector after it" if dependent else "")
            print(row(name, block, programs, us, parts, layers), flush=True)


if __name__ == "__main__":
    main()
