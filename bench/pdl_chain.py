"""The decode step's GEMVs and residual norms as one chain of kernels, launched plainly and with programmatic
dependent launch (engine/pdl.py): the time of a replay of each in a CUDA graph, and a check that the PDL
chain in the graph computes bit for bit what the same kernels compute one at a time.

    python -m bench.pdl_chain --config bench/glm-4.6v-flash-config.json --batch 1 8 32

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

from bench.bench_gemv import CONFIG
from glm_vision.engine import gemv
from glm_vision.engine.row_norm import residual_norm


def layer_weights(text: dict, layers: int) -> list[dict]:
    hidden, heads, kv = text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = text.get("head_dim") or hidden // heads
    inter = text["intermediate_size"]

    def matrix(n, k):
        return torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5

    def norm():
        return 1 + 0.1 * torch.randn(hidden, device="cuda", dtype=torch.bfloat16)

    return [
        {
            "qkv": matrix((heads + 2 * kv) * head_dim, hidden),
            "bias": torch.randn((heads + 2 * kv) * head_dim, device="cuda", dtype=torch.bfloat16),
            "o": matrix(hidden, heads * head_dim),
            "gate_up": matrix(2 * inter, hidden),
            "down": matrix(hidden, inter),
            "norms": [norm() for _ in range(4)],
        }
        for _ in range(layers)
    ]


def chain(h: torch.Tensor, weights: list[dict], pdl: bool, between=lambda: None) -> torch.Tensor:
    """The chain's output for the residual stream h (B, hidden); `between` runs after every kernel."""
    x = h
    for w in weights:
        qkv = gemv.linear(x, w["qkv"], w["bias"], pdl=pdl)
        between()
        a = gemv.linear(qkv[:, : w["o"].shape[1]], w["o"], pdl=pdl)  # the attention output stands in: q
        between()
        h, x = residual_norm(h, a, w["norms"][0], w["norms"][1], 1e-5, pdl=pdl)
        between()
        m = gemv.swiglu(x, w["gate_up"], pdl=pdl)
        between()
        d = gemv.linear(m, w["down"], pdl=pdl)
        between()
        h, x = residual_norm(h, d, w["norms"][2], w["norms"][3], 1e-5, pdl=pdl)
        between()
    return x


def replay_ms(graph: torch.cuda.CUDAGraph, replays: int = 20) -> float:
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(weights: list[dict], batch: int, pdl: bool) -> tuple[float, bool]:
    """(ms a replay, whether the graph's output equals the kernels run one at a time with a sync between)."""
    h = torch.randn(batch, weights[0]["o"].shape[0], device="cuda", dtype=torch.bfloat16)
    chain(h, weights, pdl)  # autotuned before capture
    alone = chain(h, weights, pdl, between=torch.cuda.synchronize)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        chain(h, weights, pdl)
        with torch.cuda.graph(graph, stream=stream):
            out = chain(h, weights, pdl)
    torch.cuda.current_stream().wait_stream(stream)
    ms = replay_ms(graph)
    return ms, torch.equal(out, alone)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--layers", type=int, default=0, help="default: the model's")
    args = parser.parse_args(argv)
    text = json.loads(args.config.read_text())["text_config"]
    torch.manual_seed(0)
    weights = layer_weights(text, args.layers or text["num_hidden_layers"])
    print("| rows | plain (ms a chain) | PDL | PDL / plain | PDL graph == kernels one at a time |")
    print("|---|---|---|---|---|")
    for batch in args.batch:
        plain, plain_same = measure(weights, batch, pdl=False)
        pdl, pdl_same = measure(weights, batch, pdl=True)
        assert plain_same, "the plain chain's graph differs from its kernels run one at a time"
        print(f"| {batch} | {plain:.3f} | {pdl:.3f} | {pdl / plain:.3f} | {pdl_same} |", flush=True)


if __name__ == "__main__":
    main()
