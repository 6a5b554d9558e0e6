"""A prefill pass's work between its attention calls, as pieces over static buffers: on CUDA each piece
is a CUDA graph per token count (vLLM's piecewise CUDA graphs).

A pass (prompt chunks with the decode rows riding along) runs ~15 kernels a layer through Python
and torch.compile's wrappers: ~20 ms of host time a pass, whatever its size, on the H200 more than
the GPU needs for a pass of up to ~1,000 tokens (bench/RESULTS.md), so small steps (decode-first's,
short prompts beside running streams) left the GPU waiting for the host. Everything in a pass
except attention is row-wise (norms, matrix products, rotary), so it does not care which rows are
whose: piece i is layer i-1's MLP followed by layer i's input norm, QKV projection and rotary, over the
first `n` rows of the buffers, `n` the pass's tokens padded up to a multiple of `step`. Captured once
per `n`, a pass is then 41 graph launches plus its attention calls, which stay eager (their shapes are
each chunk's own and each row's KV length). Padded rows compute on zeros and are never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layer_math import split_heads

GRAPH_STEP = 128  # tokens a pass is padded up to a multiple of where pieces are CUDA graphs


@dataclass
class PassBuffers:
    """The pass's rows (n, ...): inputs `h` (residual stream), `cos`/`sin`; `attn` written by the
    attention calls; the pieces' outputs `qkv` (unrotated), `q_rot`/`k_rot`, and `x` (the final norm)."""

    h: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    attn: torch.Tensor
    qkv: torch.Tensor
    q_rot: torch.Tensor
    k_rot: torch.Tensor
    x: torch.Tensor

    def rows(self, n: int) -> PassBuffers:
        return PassBuffers(*(t[:n] for t in vars(self).values()))


class PassPieces:
    """The pieces of a pass for `forward` (a TextForward), over buffers of up to `max_tokens` rows
    (a pass of more runs on buffers of its own, eagerly)."""

    def __init__(self, forward, max_tokens: int, *, step: int = 1, use_graphs: bool = False) -> None:
        self.forward = forward
        self.step = step
        self.capacity = self.padded(max_tokens)
        self.use_graphs = use_graphs
        self._buffers = self._allocate(self.capacity)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}

    @property
    def count(self) -> int:
        """Pieces a pass runs: one before each layer's attention, and one after the last."""
        return len(self.forward.layers) + 1

    def padded(self, tokens: int) -> int:
        return -(-tokens // self.step) * self.step

    def begin(self, tokens: int) -> PassBuffers:
        """Buffers for a pass of `tokens` rows (padded); the caller fills h, cos and sin."""
        rows = self.padded(tokens)
        return self._allocate(rows) if rows > self.capacity else self._buffers.rows(rows)

    def run(self, index: int, buffers: PassBuffers) -> None:
        """Piece `index` of a pass: its graph where one was captured for these (static) buffers' rows."""
        static = buffers.h.data_ptr() == self._buffers.h.data_ptr()
        graph = self.graphs.get((buffers.h.shape[0], index)) if static else None
        if graph is not None:
            graph.replay()
        else:
            self._piece(index, buffers)

    # ------------------------------------------------------------------ the work
    def _piece(self, index: int, b: PassBuffers) -> None:
        f = self.forward
        if index == 0:
            x = f.norm(b.h, f.layers[0].input_layernorm.weight, f.eps)
        else:
            x = f.mlp_in_place(index - 1, f.layers[index - 1], b.h, b.attn)
        if index == len(f.layers):
            b.x.copy_(x)
            return
        attn = f.layers[index].self_attn
        if attn.qkv_bias is None:
            torch.mm(x, attn.qkv_weight.t(), out=b.qkv)
        else:
            torch.addmm(attn.qkv_bias, x, attn.qkv_weight.t(), out=b.qkv)
        q, k, _ = split_heads(b.qkv, f.n_heads, f.n_kv, f.head_dim)
        f.rotate_into(q, k, b.cos, b.sin, b.q_rot, b.k_rot)

    @torch.inference_mode()
    def _allocate(self, rows: int) -> PassBuffers:
        """Inference tensors, as every activation the worker makes (it runs in inference mode):
        torch.compile guards on that, and a compiled layer function that saw both kinds compiled twice,
        once in a user's step (a 260 ms stall on the H200, bench/RESULTS.md)."""
        f = self.forward
        width, rot = f.n_heads * f.head_dim, f.inv_freq.shape[0] * 2

        def zeros(*shape):
            return torch.zeros(rows, *shape, dtype=f.dtype, device=f.device)

        qkv = zeros((f.n_heads + 2 * f.n_kv) * f.head_dim)
        return PassBuffers(
            h=zeros(f.hidden),
            cos=zeros(rot),
            sin=zeros(rot),
            attn=zeros(width),
            qkv=qkv,
            q_rot=zeros(f.n_heads, f.head_dim),
            k_rot=zeros(f.n_kv, f.head_dim),
            x=zeros(f.hidden),
        )

    # ------------------------------------------------------------------ CUDA graphs
    def capture_all(self) -> None:
        """Record every piece for every padded token count up to the capacity (warm-up runs first)."""
        for rows in range(self.step, self.capacity + 1, self.step):
            self._capture(self._buffers.rows(rows))

    def _capture(self, buffers: PassBuffers) -> None:
        f = self.forward
        rows = buffers.h.shape[0]
        stream = f._capture_stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                for index in range(self.count):
                    self._piece(index, buffers)
        torch.cuda.current_stream().wait_stream(stream)
        for index in range(self.count):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=f.pool):
                self._piece(index, buffers)
            f.pool = graph.pool()
            self.graphs[(rows, index)] = graph
        buffers.h.zero_()  # the warm-up's values grew through 40 layers: no stale rows carried into passes
