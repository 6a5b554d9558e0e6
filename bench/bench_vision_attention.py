"""The vision tower's attention per picture length (engine/vision_attention.py): bucketed cuDNN against cuDNN
and flash attention on each picture's own length. GPU only.

    python -m bench.bench_vision_attention [--lengths 1024,2048,4784,10764]

GLM-4.6V's vision attention shape (12 heads of 128), random bfloat16 q, k, v. First the planning of every
bucket (as the engine's warm-up does it), then per length: the bucketed path's first call (wall time: after
planning it should cost what later calls do), the largest error of each path against float32 attention,
and each path's time a call (CUDA events over 10 calls; small pictures are bound by the host's launches).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn.attention import SDPBackend

from glm_vision.engine.vision_attention import PictureAttention, attend_per_picture

HEADS, DIM = 12, 128
MAX_PATCHES = 6144 * 4  # GLM-4.6V's largest picture


def per_call_ms(fn, calls: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def wall_ms(fn) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - started)


def paths(device) -> dict:
    eager = PictureAttention(device=device, max_patches=MAX_PATCHES)
    compiled = PictureAttention(device=device, max_patches=MAX_PATCHES, compiled=True)
    return {
        "bucketed": eager,
        "bucketed, merge compiled (the engine's)": compiled,
        "cuDNN, own length": lambda q, k, v, lengths, scale: attend_per_picture(
            q, k, v, lengths, scale, [SDPBackend.CUDNN_ATTENTION]
        ),
        "flash, own length": lambda q, k, v, lengths, scale: attend_per_picture(
            q, k, v, lengths, scale, [SDPBackend.FLASH_ATTENTION]
        ),
    }


@torch.inference_mode()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1024,2048,2100,2436,3000,4784,10764", help="patches a picture")
    args = parser.parse_args(argv)
    device, scale = torch.device("cuda"), DIM**-0.5
    torch.manual_seed(0)
    attention = paths(device)
    started = time.perf_counter()
    for name in ("bucketed", "bucketed, merge compiled (the engine's)"):
        attention[name].plan(HEADS, DIM, torch.bfloat16, device, scale)
    print(f"planning every bucket, twice: {time.perf_counter() - started:.2f} s")
    names = " / ".join(attention)
    print(f"| patches | first call ms (bucketed) | max abs error vs float32: {names} | ms a call: {names} |")
    print("|---|---|---|---|")
    for length in (int(n) for n in args.lengths.split(",")):
        print(row(attention, length, device, scale), flush=True)


def row(attention: dict, length: int, device, scale: float) -> str:
    q, k, v = (torch.randn(length, HEADS, DIM, device=device, dtype=torch.bfloat16) for _ in range(3))

    def call(fn):
        return fn(q, k, v, [length], scale)

    first = wall_ms(lambda: call(attention["bucketed"]))
    exact = attend_per_picture(q.float(), k.float(), v.float(), [length], scale, [SDPBackend.EFFICIENT_ATTENTION])
    errors = " / ".join(f"{(call(fn).float() - exact).abs().max().item():.4f}" for fn in attention.values())
    times = " / ".join(f"{per_call_ms(lambda fn=fn: call(fn)):.3f}" for fn in attention.values())
    return f"| {length} | {first:.1f} | {errors} | {times} |"


if __name__ == "__main__":
    main()
