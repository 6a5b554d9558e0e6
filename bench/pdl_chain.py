"""The decode step's GEMVs and residual norms as one chain of kernels, launched plainly and with programmatic
dependent launch (engine/pdl.py): the time of a replay of each in a CUDA graph, and a check that the PDL
chain in the graph computes bit for bit what the same kernels compute one at a time.

    python -m bench.pdl_chain --config bench/glm-4.6v-flash-config.json --batch 1 8 16 32

Also the PDL chain with the tiles autotune picked for the plain one (what PDL does, apart from what it does to
autotune's picks), and the picks of both; with `--cublas down qkv,down ...`, the chain with those matrices
through cuBLAS, plainly and with PDL (what a product the engine's warm-up sends to cuBLAS costs a PDL step: it
is launched plainly and lets the next kernel in only when it ends).

Per layer: QKV (+ bias), o_proj, residual norm, gate_up (+ SiLU x up), down, residual norm; the layers'
weights distinct (random bf16) so that every matrix is read from memory as in the step. No attention: the
chain isolates what PDL changes at the boundaries between the products.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.bench_gemv import CONFIG
from glm_vision.engine import gemv, graph_timer
from glm_vision.engine.decode_matmuls import CUBLAS
from glm_vision.engine.layer_math import swiglu_glue
from glm_vision.engine.row_norm import residual_norm


def layer_weights(text: dict, layers: int, device: str = "cuda", dtype: torch.dtype = torch.bfloat16) -> list[dict]:
    hidden, heads, kv = text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = text.get("head_dim") or hidden // heads
    inter = text["intermediate_size"]

    def matrix(n, k):
        return torch.randn(n, k, device=device, dtype=dtype) / k**0.5

    def norm():
        return 1 + 0.1 * torch.randn(hidden, device=device, dtype=dtype)

    return [
        {
            "qkv": matrix((heads + 2 * kv) * head_dim, hidden),
            "bias": torch.randn((heads + 2 * kv) * head_dim, device=device, dtype=dtype),
            "o": matrix(hidden, heads * head_dim),
            "gate_up": matrix(2 * inter, hidden),
            "down": matrix(hidden, inter),
            "norms": [norm() for _ in range(4)],
        }
        for _ in range(layers)
    ]


def chain(h: torch.Tensor, weights: list[dict], pdl: bool, tiles: dict | None = None, between=lambda: None):
    """The chain's output for the residual stream h (B, hidden); `tiles`: per matrix (qkv, o, gate_up, down) a
    GEMV candidate instead of the tuned one, or CUBLAS for the product through cuBLAS (as the engine's measured
    choice may send it: launched plainly, in a PDL chain too); `between` runs after every kernel."""
    tiles = tiles or {}
    x = h
    for w in weights:
        qkv = _product("qkv", x, w, tiles, pdl, bias=w["bias"])
        between()
        q = qkv[:, : w["o"].shape[1]]  # stands in for the attention's output
        a = _product("o", q, w, tiles, pdl)
        between()
        h, x = residual_norm(h, a, w["norms"][0], w["norms"][1], 1e-5, pdl=pdl)
        between()
        m = _product("gate_up", x, w, tiles, pdl, swiglu=True)
        between()
        d = _product("down", m, w, tiles, pdl)
        between()
        h, x = residual_norm(h, d, w["norms"][2], w["norms"][3], 1e-5, pdl=pdl)
        between()
    return x


def _product(name: str, x, w: dict, tiles: dict, pdl: bool, bias=None, swiglu: bool = False):
    way = tiles.get(name)
    if isinstance(way, str) and way == CUBLAS:
        y = F.linear(x, w[name], bias)
        return swiglu_glue(y) if swiglu else y
    if swiglu:
        return gemv.swiglu(x, w[name], pdl=pdl, config=way)
    return gemv.linear(x, w[name], bias, pdl=pdl, config=way)


def tuned_tiles(weights: list[dict], batch: int, pdl: bool) -> dict:
    """The candidate autotune picked for each matrix of the chain (after a run)."""
    w = weights[0]
    shapes = {
        "qkv": (w["qkv"].shape, {"bias": True}),
        "o": (w["o"].shape, {}),
        "gate_up": ((w["gate_up"].shape[0] // 2, w["gate_up"].shape[1]), {"swiglu": True}),
        "down": (w["down"].shape, {}),
    }
    return {name: gemv.tuned_config(batch, n, k, pdl=pdl, **flags) for name, ((n, k), flags) in shapes.items()}


def describe(tiles: dict) -> str:
    def one(config) -> str:
        kw = config.kwargs
        kind = "dot" if kw["USE_DOT"] else "fma"
        return f"{kw['BLOCK_N']}x{kw['BLOCK_K']}/{kw['SPLIT_K']} {kind} w{config.num_warps} s{config.num_stages}"

    return "; ".join(f"{name} {one(config)}" for name, config in tiles.items())


def measure(weights: list[dict], batch: int, pdl: bool, tiles: dict | None = None) -> tuple[float, bool]:
    """(ms a replay, median of 20; whether the graph's output equals the kernels run one at a time with a sync
    between)."""
    h = torch.randn(batch, weights[0]["o"].shape[0], device="cuda", dtype=torch.bfloat16)
    chain(h, weights, pdl, tiles)  # autotuned before capture
    alone = chain(h, weights, pdl, tiles, between=torch.cuda.synchronize)
    outputs = []
    graph = graph_timer.capture(lambda: outputs.append(chain(h, weights, pdl, tiles)))
    ms = statistics.median(graph_timer.replay_ms(graph) for _ in range(20))
    return ms, torch.equal(outputs[-1], alone)  # the last run is the captured one, its output the graph's


def variants(weights: list[dict], batch: int, through_cublas: list[str]) -> list[tuple[str, float, bool]]:
    """(label, ms a replay, PDL graph == its kernels one at a time) of each way to launch the chain; for each
    comma-separated set of matrices in `through_cublas`, the chain with those through cuBLAS, plain and PDL."""
    plain, plain_same = measure(weights, batch, pdl=False)
    assert plain_same, "the plain chain's graph differs from its kernels run one at a time"
    rows = [("plain", plain, True), ("PDL", *measure(weights, batch, pdl=True))]
    rows.append(("PDL, the plain chain's tiles", *measure(weights, batch, True, tuned_tiles(weights, batch, False))))
    for names in through_cublas:
        tiles = dict.fromkeys(names.split(","), CUBLAS)
        rows.append((f"plain, {names} through cuBLAS", *measure(weights, batch, False, tiles)))
        rows.append((f"PDL, {names} through cuBLAS", *measure(weights, batch, True, tiles)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--layers", type=int, default=0, help="default: the model's")
    parser.add_argument(
        "--cublas",
        nargs="*",
        default=[],
        help="also the chain with these matrices through cuBLAS, plain and PDL: each a comma-separated set of "
        "qkv, o, gate_up, down (e.g. down qkv,down)",
    )
    args = parser.parse_args(argv)
    text = json.loads(args.config.read_text())["text_config"]
    torch.manual_seed(0)
    weights = layer_weights(text, args.layers or text["num_hidden_layers"])
    picks = []
    for batch in args.batch:
        rows = variants(weights, batch, args.cublas)
        if batch == args.batch[0]:
            print("| rows | " + " | ".join(label for label, _, _ in rows) + " | PDL graphs == kernels one at a time |")
            print("|---" * (len(rows) + 2) + "|")
        plain = rows[0][1]
        cells = [f"{plain:.3f}"] + [f"{ms:.3f} ({ms / plain:.3f})" for _, ms, _ in rows[1:]]
        print(f"| {batch} | " + " | ".join(cells) + f" | {all(same for _, _, same in rows)} |", flush=True)
        picks.append((batch, tuned_tiles(weights, batch, pdl=False), tuned_tiles(weights, batch, pdl=True)))
    print("\nautotune's picks (BLOCK_N x BLOCK_K / SPLIT_K, tensor cores or not, warps, stages):")
    for batch, plain_tiles, pdl_tiles in picks:
        print(f"  {batch} rows, plain: {describe(plain_tiles)}")
        print(f"  {batch} rows, PDL:   {describe(pdl_tiles)}")


if __name__ == "__main__":
    main()
