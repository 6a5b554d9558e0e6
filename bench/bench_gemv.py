"""The decode step's matrix products: cuBLAS (as the engine calls it today) against the Triton GEMVs of
`glm_vision/engine/gemv.py`, for each weight matrix of the text model and each batch size.

    python -m bench.bench_gemv                                   # GPU, GLM-4.6V-Flash shapes
    TRITON_INTERPRET=1 python -m bench.bench_gemv --smoke        # CPU: tiny shapes, only checks that it runs
    python -m bench.bench_gemv --sweep --batch 1 32              # cuBLAS and every candidate tile, each timed

Time per call: `graph_timer.graph_time` (median of 3), the call replayed in a CUDA graph as the decode step
runs it, each call after a 256 MB read that evicts the L2 cache (a decode step streams 17.6 GB of
weights through a 50 MB L2, so every matrix is read cold there), the flush's own time taken off.
Timing each call with events instead adds Triton's Python launch cost (~20-100 us), which the step's
graph does not pay. GB/s counts the weight bytes only.
The MLP's cuBLAS column is F.linear + the compiled silu(gate) * up kernel, as `layer_math.post_attention` runs
it; the Triton column is one fused kernel. The step total is 4 matrices x layers + lm_head.
Autotuning (the first Triton call of each shape) runs before the timing, and its picks are printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.timing import graph_time_median
from glm_vision.engine.layer_math import swiglu_glue

CONFIG = Path(__file__).with_name("glm-4.6v-flash-config.json")


@dataclass
class Matrix:
    name: str
    n: int  # output columns (for SwiGLU: I, of a (2I, K) weight)
    k: int
    epilogue: str  # bias | plain | swiglu | logits
    per_step: int  # calls in one decode step

    @property
    def rows(self) -> int:
        return 2 * self.n if self.epilogue == "swiglu" else self.n


def matrices(text: dict) -> list[Matrix]:
    """The text model's decode-step matrices from its config."""
    hidden, heads, kv = text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = text.get("head_dim", hidden // heads)
    layers, inter = text["num_hidden_layers"], text["intermediate_size"]
    return [
        Matrix("qkv + bias", (heads + 2 * kv) * head_dim, hidden, "bias", layers),
        Matrix("o_proj", hidden, heads * head_dim, "plain", layers),
        Matrix("gate_up + SwiGLU", inter, hidden, "swiglu", layers),
        Matrix("down", hidden, inter, "plain", layers),
        Matrix("lm_head", text["vocab_size"], hidden, "logits", 1),
    ]


SMOKE_TEXT = {
    "hidden_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 136,
    "vocab_size": 300,
}


def callables(matrix: Matrix, m: int, device: str, dtype: torch.dtype, glue, config=None):
    """(cuBLAS call, Triton call) for one matrix and batch size, on random data; `config`: that Triton
    candidate instead of the tuned one."""
    from glm_vision.engine import gemv

    x = torch.randn(m, matrix.k, device=device, dtype=dtype)
    w = torch.randn(matrix.rows, matrix.k, device=device, dtype=dtype) / matrix.k**0.5
    if matrix.epilogue == "bias":
        b = torch.randn(matrix.n, device=device, dtype=dtype)
        return (lambda: F.linear(x, w, b)), (lambda: gemv.linear(x, w, b, config=config))
    if matrix.epilogue == "swiglu":
        return (lambda: glue(F.linear(x, w))), (lambda: gemv.swiglu(x, w, config=config))
    if matrix.epilogue == "logits":
        logits = torch.empty(m, matrix.n, device=device, dtype=torch.float32)
        return (lambda: F.linear(x, w).float()), (lambda: gemv.linear(x, w, out=logits, config=config))
    return (lambda: F.linear(x, w)), (lambda: gemv.linear(x, w, config=config))


def time_call(fn, on_gpu: bool) -> float:
    """Seconds per call."""
    if on_gpu:
        return graph_time_median(fn) / 1000
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(matrix: Matrix, m: int, device: str, dtype: torch.dtype, glue) -> dict:
    from glm_vision.engine import gemv

    cublas, triton_call = callables(matrix, m, device, dtype, glue)
    ref, got = cublas().float(), triton_call().float()  # the first Triton call autotunes
    on_gpu = device == "cuda"
    t_cublas, t_triton = time_call(cublas, on_gpu), time_call(triton_call, on_gpu)
    config = gemv.tuned_config(
        m, matrix.n, matrix.k, bias=matrix.epilogue == "bias", swiglu=matrix.epilogue == "swiglu"
    )
    return {
        "matrix": matrix.name,
        "m": m,
        "weight_mb": matrix.rows * matrix.k * dtype.itemsize / 1e6,
        "cublas_us": t_cublas * 1e6,
        "triton_us": t_triton * 1e6,
        "rel_diff": ((got - ref).abs().max() / ref.abs().max()).item(),
        "config": describe(config),
        "per_step": matrix.per_step,
    }


def describe(config) -> str:
    if config is None:
        return "-"
    kw = config.kwargs
    kind = ("dot swapped" if kw["SWAP_AB"] else "dot") if kw["USE_DOT"] else "rows"
    return f"{kind} N{kw['BLOCK_N']} K{kw['BLOCK_K']} split{kw['SPLIT_K']} w{config.num_warps} s{config.num_stages}"


def _sweep_configs():
    from glm_vision.engine.gemv import CONFIGS, _config

    rows_kernels = [
        _config(n, k, split, dot=False, warps=w, stages=3)
        for n, k, w, split in itertools.product((4, 8, 16), (512, 1024, 2048), (4, 8), (1, 2, 4))
        if n * k <= 16384 and not (split > 1 and n < 8)  # split 4: the down matrix's long rows (K = 13,696)
    ] + [_config(n, k, dot=False, warps=8, stages=1) for n, k in ((4, 2048), (8, 1024), (8, 2048), (16, 1024))]
    dot_kernels = [
        _config(n, k, split, warps=w, stages=st)
        for n, k, st, split in [
            (16, 128, 8, 1),
            (16, 256, 4, 1),
            (16, 512, 3, 1),
            (32, 128, 6, 1),
            (32, 256, 4, 1),
            (32, 512, 3, 1),
            (64, 128, 5, 1),
            (64, 256, 3, 1),
            (128, 128, 4, 1),
            (16, 256, 4, 2),
            (32, 256, 4, 2),
            (32, 128, 6, 4),
            (64, 128, 4, 2),
            (32, 256, 4, 4),
        ]
        for w in (4, 8)
    ]
    swapped_kernels = [  # measured and left out of CONFIGS (twenty-third session): never the fastest at 1-64 rows
        _config(64, 256, stages=3, swap=True),
        _config(128, 128, warps=8, stages=4, swap=True),
        _config(128, 64, stages=6, swap=True),
    ]
    return list(dict.fromkeys(CONFIGS + rows_kernels + dot_kernels + swapped_kernels))


def sweep(matrix: Matrix, m: int, budget_end: float, glue) -> list[dict]:
    """cuBLAS, then every candidate of the sweep list that suits the shape, timed as the step runs it (until
    the budget)."""
    from triton.runtime.errors import OutOfResources

    from glm_vision.engine import gemv

    gb = matrix.rows * matrix.k * 2 / 1e3
    cublas_us = 1000 * graph_time_median(callables(matrix, m, "cuda", torch.bfloat16, glue)[0])
    rows = [{"matrix": matrix.name, "m": m, "config": "cuBLAS", "us": cublas_us, "gbs": gb / cublas_us}]
    for config in _sweep_configs():
        if time.perf_counter() > budget_end or not gemv._fits(config, m, matrix.n, matrix.k):
            continue
        try:
            us = 1000 * graph_time_median(callables(matrix, m, "cuda", torch.bfloat16, glue, config)[1])
        except OutOfResources as error:  # shared memory or registers: that tile does not exist here
            print(f"  {describe(config)}: {type(error).__name__}", flush=True)
            continue
        rows.append({"matrix": matrix.name, "m": m, "config": describe(config), "us": us, "gbs": gb / us})
    return rows


def report_sweep(rows: list[dict], best: int) -> None:
    """The `best` fastest of each (M, matrix), and cuBLAS wherever it ranks."""
    print("| M | matrix | config | us | GB/s |")
    print("|---|---|---|---|---|")
    for key in dict.fromkeys((r["m"], r["matrix"]) for r in rows):
        ranked = sorted((r for r in rows if (r["m"], r["matrix"]) == key), key=lambda r: r["us"])
        for r in ranked[:best] + [r for r in ranked[best:] if r["config"] == "cuBLAS"]:
            print(f"| {r['m']} | {r['matrix']} | {r['config']} | {r['us']:.1f} | {r['gbs']:.0f} |")


def report(rows: list[dict]) -> None:
    print("| M | matrix | weights MB | cuBLAS us | GB/s | Triton us | GB/s | Triton / cuBLAS | max rel diff | config |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['m']} | {r['matrix']} | {r['weight_mb']:.0f} | {r['cublas_us']:.1f} | "
            f"{r['weight_mb'] / r['cublas_us'] * 1e3:.0f} | {r['triton_us']:.1f} | "
            f"{r['weight_mb'] / r['triton_us'] * 1e3:.0f} | {r['triton_us'] / r['cublas_us']:.2f} | "
            f"{r['rel_diff']:.1e} | {r['config']} |"
        )
    print("\nOne decode step's matrix products (4 a layer x layers + lm_head):\n")
    print("| M | cuBLAS ms | GB/s | Triton ms | GB/s | Triton / cuBLAS |")
    print("|---|---|---|---|---|---|")
    for m in dict.fromkeys(r["m"] for r in rows):
        step = [r for r in rows if r["m"] == m]
        mb = sum(r["weight_mb"] * r["per_step"] for r in step)
        cublas = sum(r["cublas_us"] * r["per_step"] for r in step) / 1e3
        triton = sum(r["triton_us"] * r["per_step"] for r in step) / 1e3
        print(f"| {m} | {cublas:.3f} | {mb / cublas:.0f} | {triton:.3f} | {mb / triton:.0f} | {triton / cublas:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="model config.json (its text_config's shapes)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="rows (M) per call")
    parser.add_argument("--smoke", action="store_true", help="CPU under TRITON_INTERPRET=1: tiny shapes, float32")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--sweep", action="store_true", help="time every candidate tile (GPU), not the tuned one")
    parser.add_argument(
        "--sweep-budget", type=float, default=240, help="seconds the sweep may take in all, shared by the shapes"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    if args.sweep:
        text = json.loads(args.config.read_text())["text_config"]
        glue = torch.compile(swiglu_glue, fullgraph=True, dynamic=False)
        share = args.sweep_budget / (len(args.batch) * len(matrices(text)))  # each (M, matrix) gets its part
        rows = [
            row
            for m in args.batch
            for matrix in matrices(text)
            for row in sweep(matrix, m, time.perf_counter() + share, glue)
        ]
        report_sweep(rows, best=6)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return
    if args.smoke:
        device, dtype, text, batches, glue = "cpu", torch.float32, SMOKE_TEXT, args.batch[:2], swiglu_glue
    else:
        device, dtype, glue = "cuda", torch.bfloat16, torch.compile(swiglu_glue, fullgraph=True, dynamic=False)
        text, batches = json.loads(args.config.read_text())["text_config"], args.batch
        print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    rows = [measure(matrix, m, device, dtype, glue) for m in batches for matrix in matrices(text)]
    print(f"measured in {time.perf_counter() - started:.0f} s (autotuning included)\n", flush=True)
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
