"""Matrix-vector products of the decode step as Triton kernels (used through decode_matmuls.py).

A decode step multiplies a few rows of activations (M = the batch, 1..64) by every weight matrix of
the model once: it is bound by reading the weights (17.6 GB a step for GLM-4.6V-Flash), not by
arithmetic. cuBLAS reaches ~90 % of the H200's copy bandwidth there but splits K over several kernels
and leaves the epilogues (bias, SiLU x up) to more kernels. Here one launch computes y = x @ W^T for
the weight W (N, K) as nn.Linear stores it (no copy, no transpose): each program owns BLOCK_N output
rows and streams their weight rows over K in BLOCK_K-wide blocks (contiguous, vectorised loads,
`num_stages` blocks in flight), accumulating in float32, and writes bias + product, or for the MLP's
gate_up matrix (gate rows [0, I), up rows [I, 2I)) silu(gate) * up from the matching row blocks.

Two ways to accumulate, chosen by autotune: `tl.dot` on tensor cores (rows padded to 16; in either order, x @
w^T or w @ x^T with the weight block as the product's tall side), or, for a single row, a float32 multiply-add
per element reduced once at the end (no padding, no shared memory for x). Where N alone gives too few programs
for 132 SMs, SPLIT_K programs share a row block: each stores its partial sums, and the last to finish (an
atomic counter per row block, reset by that program, so no memset kernel) adds them up and applies the
epilogue, all in one launch.

Launched with programmatic dependent launch (`pdl`, pdl.py: the decode steps of up to 8 rows on Hopper), a
program reads its first block of weights before it waits for the previous kernel, and x only after.

Autotuning is keyed on (M, N, K), the epilogue and PDL, and times each candidate the first time a shape
is seen (the timings are kept in Triton's disk cache for the next start): in the engine that is the
warm-up before a CUDA graph is captured; under capture and on replay a launch is the tuned kernel
alone (no host sync; the partial sums' buffer comes from the graph's pool like any activation).
Under Triton's interpreter (the CPU tests) the first candidate that suits the shape runs untimed.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .graph_timer import graph_time
from .pdl import launch_options, wait_for_previous

MAX_SPLIT = 4  # partial sums held per row block at most
SPLIT_MAX_N = 8192  # output columns up to which splitting K is tried (N=4096/4608 here: 128-288 row blocks)
SPLIT_MAX_M = 64  # rows up to which splitting K is tried (one row block of M at most)
COUNTERS = 4096  # row blocks that can be split at once: SPLIT_MAX_N / 8 rows x 1 block of M, with room


def _config(block_n, block_k, split=1, dot=True, warps=4, stages=4, swap=False):
    return triton.Config(
        {"BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": split, "USE_DOT": dot, "SWAP_AB": swap},
        num_warps=warps,
        num_stages=stages,
    )


CONFIGS = [
    _config(16, 256),
    _config(32, 256),
    _config(16, 512, stages=3),
    _config(64, 128, stages=5),
    _config(16, 256, warps=2, stages=6),  # fewer warps: each reads the whole tile from shared memory
    _config(16, 256, split=2),
    _config(32, 256, split=4),
    # bench_gemv --sweep's best at one row on the H200: o_proj, then gate_up + SwiGLU (two), then qkv + bias
    _config(32, 128, stages=6),
    _config(64, 256, warps=8, stages=3),
    _config(64, 128, warps=8, stages=5),
    # 64-key tiles: the only tensor-core tiles of gate_up + SwiGLU that do not spill registers under Triton 3.6
    # (bench/kernel_resources.py)
    _config(32, 64, stages=8),
    _config(64, 64, warps=8, stages=6),
    _config(8, 512, dot=False),  # the single-row kernels (their loads are not pipelined: wide tiles instead)
    _config(8, 512, dot=False, warps=8, stages=3),
    _config(4, 1024, dot=False),
    _config(8, 1024, dot=False, warps=8),
    _config(16, 1024, dot=False, warps=8),
    _config(8, 512, split=2, dot=False),
    # Swapped products (`_accumulate`): on Hopper the weight block is the tall side Triton's wgmma needs (64 rows a
    # warp group), where the plain order's is the few decode rows. The H200's picks for most products at 2-64 rows
    # (down at 16-32 rows 7-10 % faster than the best plain tile, lm_head 1-2 %; bench/RESULTS.md)
    _config(64, 128, stages=5, swap=True),
    _config(64, 128, split=2, stages=5, swap=True),
    _config(128, 128, stages=4, swap=True),
]
assert all(
    c.kwargs["SPLIT_K"] <= MAX_SPLIT
    and (c.kwargs["SPLIT_K"] == 1 or c.kwargs["BLOCK_N"] >= 8)
    and (c.kwargs["USE_DOT"] or not c.kwargs["SWAP_AB"])  # only a product on tensor cores can be swapped
    for c in CONFIGS
)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _may_split(m: int, n: int) -> bool:
    return m <= SPLIT_MAX_M and n <= SPLIT_MAX_N


def _fits(config: triton.Config, m: int, n: int, k: int) -> bool:
    """Whether a candidate suits the shape: single-row kernels for one row; split K only where N is small,
    the splits span two blocks on average and the last holds one at least (the kernel reads a split's first
    block unmasked where K is whole blocks)."""
    kw = config.kwargs
    split, block = kw["SPLIT_K"], kw["BLOCK_K"]
    if not kw["USE_DOT"] and m != 1:
        return False
    span = triton.cdiv(k, split * block) * block
    return split == 1 or (_may_split(m, n) and k >= 2 * split * block and (split - 1) * span < k)


def _prune(configs, named_args, **kwargs):
    m, n, k = named_args["M"], named_args["N"], named_args["K"]
    fitting = [c for c in configs if _fits(c, m, n, k)]
    return fitting[:1] if _interpreted() else fitting  # the interpreter cannot time anything


def _bench(fn, quantiles):
    ms = graph_time(fn)
    return [ms] * len(quantiles) if quantiles else ms


@triton.jit
def _accumulate(acc, x, w, USE_DOT: tl.constexpr, PRECISION: tl.constexpr, SWAP_AB: tl.constexpr):
    """acc (BLOCK_M, BLOCK_N) += x (BLOCK_M, BLOCK_K) @ w (BLOCK_N, BLOCK_K)^T; swapped, acc (BLOCK_N, BLOCK_M)
    += w @ x^T (the weight block as the product's tall side, the rows as its narrow one); without dot (one
    row) acc (BLOCK_N, BLOCK_K) += w * x, summed over K after the loop."""
    if USE_DOT and SWAP_AB:
        acc += tl.dot(w, tl.trans(x), input_precision=PRECISION)
    elif USE_DOT:
        acc += tl.dot(x, tl.trans(w), input_precision=PRECISION)
    else:
        acc += w.to(tl.float32) * x.to(tl.float32)
    return acc


@triton.jit
def _load_weights(rows, cols, K, EVEN_K: tl.constexpr):
    if EVEN_K:
        w = tl.load(rows + cols[None, :])
    else:
        w = tl.load(rows + cols[None, :], mask=cols[None, :] < K, other=0.0)
    return w


@triton.jit
def _load_x(x_rows, rows_in, cols, K, EVEN_K: tl.constexpr):
    if EVEN_K:
        x = tl.load(x_rows + cols[None, :], mask=rows_in, other=0.0)
    else:
        x = tl.load(x_rows + cols[None, :], mask=rows_in & (cols[None, :] < K), other=0.0)
    return x


@triton.jit
def _first_block_around_wait(
    acc, up, x_rows, rows_in, w_rows, u_rows, k_start, K,
    BLOCK_K: tl.constexpr, SWIGLU: tl.constexpr, EVEN_K: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr,
    SWAP_AB: tl.constexpr,
):  # fmt: skip
    """Under PDL, a split's first block: its weights read while the previous kernel still runs, x once it has
    ended. -> (acc, up). (Also asking L2 for 32 or 64 more 128-byte lines of each weight row before the wait
    made the chain of the step's GEMVs and norms 5-38 % slower on the H200: bench/RESULTS.md.)"""
    cols = k_start + tl.arange(0, BLOCK_K)
    w = _load_weights(w_rows, cols, K, EVEN_K)
    if SWIGLU:
        u = _load_weights(u_rows, cols, K, EVEN_K)
    wait_for_previous(True)
    x = _load_x(x_rows, rows_in, cols, K, EVEN_K)
    acc = _accumulate(acc, x, w, USE_DOT, PRECISION, SWAP_AB)
    if SWIGLU:
        up = _accumulate(up, x, u, USE_DOT, PRECISION, SWAP_AB)
    return acc, up


@triton.jit
def _finish(acc, USE_DOT: tl.constexpr, SWAP_AB: tl.constexpr):
    """The accumulator as (BLOCK_M, BLOCK_N) sums."""
    if USE_DOT and SWAP_AB:
        return tl.trans(acc)
    elif USE_DOT:
        return acc
    else:
        return tl.sum(acc, 1)[None, :]


@triton.jit
def _epilogue(Y, B, acc, up, offs_m, offs_n, M, N, stride_ym, HAS_BIAS: tl.constexpr, SWIGLU: tl.constexpr):
    if HAS_BIAS:
        acc += tl.load(B + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    if SWIGLU:
        acc = acc * tl.sigmoid(acc) * up
    keep = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(Y.dtype.element_ty), mask=keep)


@triton.heuristics(
    {
        "BLOCK_M": lambda a: min(64, max(16, triton.next_power_of_2(a["M"]))) if a["USE_DOT"] else 1,
        "EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0,
    }
)
@triton.jit(do_not_specialize=["M"])
def _gemv_kernel(
    X,
    W,
    B,
    Y,
    PARTS,
    COUNTS,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_ym,
    HAS_BIAS: tl.constexpr,
    SWIGLU: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    USE_DOT: tl.constexpr,
    SWAP_AB: tl.constexpr,
    EVEN_K: tl.constexpr,
    PDL: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # weight rows past N read a valid row instead of masking every load (their results are never
    # stored); activation rows past M are masked, so a padded tile reads no more than M rows
    x_rows = X + offs_m.to(tl.int64)[:, None] * stride_xm
    rows_in = offs_m[:, None] < M
    w_rows = W + (offs_n % N).to(tl.int64)[:, None] * stride_wn
    u_rows = W + (offs_n % N + N).to(tl.int64)[:, None] * stride_wn  # SwiGLU: the up row of each gate row
    if USE_DOT and SWAP_AB:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    elif USE_DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    up = acc
    span = tl.cdiv(K, SPLIT_K * BLOCK_K) * BLOCK_K
    k_start = pid_k * span
    k_end = tl.minimum(k_start + span, K)
    if PDL:
        acc, up = _first_block_around_wait(
            acc, up, x_rows, rows_in, w_rows, u_rows, k_start, K,
            BLOCK_K, SWIGLU, EVEN_K, USE_DOT, PRECISION, SWAP_AB,
        )  # fmt: skip
        k_start += BLOCK_K
    for k0 in range(k_start, k_end, BLOCK_K):
        cols = k0 + offs_k
        x = _load_x(x_rows, rows_in, cols, K, EVEN_K)
        acc = _accumulate(acc, x, _load_weights(w_rows, cols, K, EVEN_K), USE_DOT, PRECISION, SWAP_AB)
        if SWIGLU:
            up = _accumulate(up, x, _load_weights(u_rows, cols, K, EVEN_K), USE_DOT, PRECISION, SWAP_AB)
    acc = _finish(acc, USE_DOT, SWAP_AB)
    up = _finish(up, USE_DOT, SWAP_AB)
    if SPLIT_K == 1:
        _epilogue(Y, B, acc, up, offs_m, offs_n, M, N, stride_ym, HAS_BIAS, SWIGLU)
    else:
        # partial sums of split s at PARTS[s, m, n] (and the up half at PARTS[s, m, N + n])
        keep = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        cols_out = 2 * N if SWIGLU else N
        part = PARTS + offs_m[:, None] * cols_out + offs_n[None, :]
        tl.store(part + pid_k * M * cols_out, acc, mask=keep)
        if SWIGLU:
            tl.store(part + pid_k * M * cols_out + N, up, mask=keep)
        tl.debug_barrier()  # every thread's partial sums stored before the counter is bumped (release)
        tile = pid_m * tl.num_programs(0) + pid_n
        if tl.atomic_add(COUNTS + tile, 1) == SPLIT_K - 1:  # the last split of this row block
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            up = acc
            for s in range(SPLIT_K):
                acc += tl.load(part + s * M * cols_out, mask=keep, other=0.0, cache_modifier=".cg")
                if SWIGLU:
                    up += tl.load(part + s * M * cols_out + N, mask=keep, other=0.0, cache_modifier=".cg")
            tl.store(COUNTS + tile, 0)  # ready for the next launch
            _epilogue(Y, B, acc, up, offs_m, offs_n, M, N, stride_ym, HAS_BIAS, SWIGLU)


_tuned = triton.autotune(
    CONFIGS,
    key=["M", "N", "K", "HAS_BIAS", "SWIGLU", "PDL"],
    prune_configs_by={"early_config_prune": _prune},
    do_bench=_bench,
    cache_results=True,  # the timings kept on disk (Triton's cache): a restarted engine skips them
)(_gemv_kernel)

_counters: dict[torch.device, torch.Tensor] = {}


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    config: triton.Config | None = None,
    pdl: bool = False,
) -> torch.Tensor:
    """x (M, K) @ weight (N, K)^T (+ bias (N,)): (M, N) in x's dtype, or written into `out` (M, N) of
    any float dtype (the float32 logits). `config`: this candidate instead of the tuned one (tests).
    `pdl`: launched with programmatic dependent launch (pdl.py; where `pdl.supported`)."""
    if out is None:
        out = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
    _launch(x, weight, bias, out, swiglu=False, config=config, pdl=pdl)
    return out


def swiglu(
    x: torch.Tensor, weight: torch.Tensor, *, config: triton.Config | None = None, pdl: bool = False
) -> torch.Tensor:
    """silu(x @ gate^T) * (x @ up^T) for the MLP's gate_up weight (2I, K), gate rows first: (M, I)."""
    out = torch.empty(x.shape[0], weight.shape[0] // 2, dtype=x.dtype, device=x.device)
    _launch(x, weight, None, out, swiglu=True, config=config, pdl=pdl)
    return out


def _launch(x, weight, bias, out, *, swiglu: bool, config, pdl: bool) -> None:
    if x.stride(-1) != 1:
        x = x.contiguous()
    m, k = x.shape
    n = out.shape[1]
    assert weight.shape == ((2 if swiglu else 1) * n, k) and weight.stride(-1) == 1, (weight.shape, x.shape)
    assert out.shape[0] == m and out.stride(-1) == 1 and (bias is None or bias.shape == (n,))
    assert weight.dtype == x.dtype, "x and the weight must have one dtype"
    parts = x  # a placeholder where K is never split
    if _may_split(m, n):
        parts = torch.empty(MAX_SPLIT, m, (2 if swiglu else 1) * n, dtype=torch.float32, device=x.device)
    args = (x, weight, x if bias is None else bias, out, parts, _counter(x.device), m, n, k)
    args += (x.stride(0), weight.stride(0), out.stride(0))
    flags = {
        "HAS_BIAS": bias is not None,
        "SWIGLU": swiglu,
        "PRECISION": "ieee" if x.dtype == torch.float32 else "tf32",
        "PDL": pdl,
        **launch_options(pdl),
    }

    def grid(meta):
        return triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(m, meta["BLOCK_M"]), meta["SPLIT_K"]

    if config is None:
        _tuned[grid](*args, **flags)
    else:
        assert _fits(config, m, n, k), f"{config} does not suit M={m} N={n} K={k}"
        _gemv_kernel[grid](*args, **flags, **config.all_kwargs())


def _counter(device: torch.device) -> torch.Tensor:
    """The split-K counters of a device, all zero between launches (made at the first, uncaptured call)."""
    if device not in _counters:
        _counters[device] = torch.zeros(COUNTERS, dtype=torch.int32, device=device)
    return _counters[device]


def tuned_config(
    m: int, n: int, k: int, *, bias: bool = False, swiglu: bool = False, pdl: bool = False
) -> triton.Config | None:
    """The candidate autotune picked for this shape, epilogue and launch (after a call), for reports."""
    for key, config in _tuned.cache.items():
        if key[:6] == (m, n, k, bias, swiglu, pdl):
            return config
    return None
