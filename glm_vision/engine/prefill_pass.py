"""One prefill pass: prompt chunks of several sequences, each in its own slab slot, with one token of
every decoding row riding along (vLLM's chunked prefill), through all the layers at once.

The pass's tokens sit in static buffers, the chunks first and the decode rows after them; the work
between attention calls runs as pieces (prefill_pieces.py: CUDA graphs on CUDA), the attention calls
eagerly: a prompt's first chunk plain causal (cuDNN's kernel, on a length padded to the pieces'
step), a later chunk after its cached prefix (prefill_attention.py), the rows by the decode kernels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layer_math import split_heads
from .prefill_attention import causal_attention, prefill_attention
from .prefill_pieces import GRAPH_STEP, PassBuffers, PassPieces
from .transfer import to_device


@dataclass
class Chunk:
    """A piece of one prompt for a step: `embeds` (T, hidden) at slab positions [start, start+T) of
    `slot`, with their (3, T) M-RoPE `positions`; `last`: the prompt ends here (its logits are wanted)."""

    slot: int
    start: int
    embeds: torch.Tensor
    positions: torch.Tensor
    last: bool

    def __len__(self) -> int:
        return self.embeds.shape[0]


@dataclass
class DecodeRows:
    """One token for each of the first B slots: `tokens` (B,) on the device, at rotary `positions`,
    KV written at `lengths` (host lists)."""

    tokens: torch.Tensor
    positions: list[int]
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.positions)


class PrefillPass:
    """Prefill passes for `forward` (a TextForward): up to `pass_tokens` tokens in graph pieces, up
    to `solo_pass_tokens` (a step while nothing decodes) in eager ones."""

    def __init__(self, forward, *, pass_tokens: int, solo_pass_tokens: int, use_graphs: bool) -> None:
        self.forward = forward
        self.use_graphs = use_graphs
        step = GRAPH_STEP if use_graphs else 1
        self.pieces = PassPieces(forward, pass_tokens, step=step, use_graphs=use_graphs)
        self.solo_pass_tokens = solo_pass_tokens
        self._planned_threads: set[int] = set()

    @torch.inference_mode()  # the worker's mode, which the buffers were made in (prefill_pieces.py)
    def __call__(self, chunks: list[Chunk], rows: DecodeRows | None = None):
        """The logits of each chunk that ends its prompt, in order, (n, vocab) or None; the rows'
        logits (B, vocab) or None."""
        f = self.forward
        if self.use_graphs and threading.get_ident() not in self._planned_threads:
            self._plan_first_chunks()
        batch = len(rows) if rows is not None else 0
        prompt = sum(len(c) for c in chunks)
        run = self.pieces.begin(prompt + batch)
        self._inputs(run, chunks, rows, prompt)
        lengths = to_device(rows.lengths, torch.long, f.device) if batch else None
        bucket = f.bucket(max(rows.lengths)) if batch else 0
        self.pieces.run(0, run)
        for i in range(len(f.layers)):
            self._attention(i, run, chunks, slice(prompt, prompt + batch), lengths, bucket)
            self.pieces.run(i + 1, run)
        ends, offset = [], 0
        for c in chunks:
            offset += len(c)
            if c.last:
                ends.append(run.x[offset - 1 : offset])
        picked = ends + ([run.x[prompt : prompt + batch]] if batch else [])
        if not picked:  # mid-prompt chunks only: no logits wanted
            return None, None
        logits = f.final(torch.cat(picked) if len(picked) > 1 else picked[0], f.lm_head)
        return (logits[: len(ends)] if ends else None), (logits[len(ends) :] if batch else None)

    def _inputs(self, run: PassBuffers, chunks: list[Chunk], rows: DecodeRows | None, prompt: int) -> None:
        """The pass's residual stream and rotary tables: each chunk, then the rows' tokens; padding zeroed."""
        f = self.forward
        offset = 0
        for chunk in chunks:
            span = slice(offset, offset + len(chunk))
            run.h[span] = chunk.embeds
            run.cos[span], run.sin[span] = f.rope(chunk.positions)
            offset += len(chunk)
        if rows is not None and len(rows):
            offset += len(rows)
            positions = to_device(rows.positions, torch.long, f.device)
            run.h[prompt:offset] = F.embedding(rows.tokens, f.embed)
            run.cos[prompt:offset], run.sin[prompt:offset] = f.text_rope(positions)
        for padding in (run.h, run.cos, run.sin):
            padding[offset:] = 0

    def _attention(self, i: int, run: PassBuffers, chunks, rows: slice, lengths, bucket: int) -> None:
        """Layer i's attention, into `run.attn`: each chunk causally over its own slot, then the decode
        rows over theirs (the Triton kernels rotate the rows' q and k themselves)."""
        f = self.forward
        q, k, v = split_heads(run.qkv, f.n_heads, f.n_kv, f.head_dim)
        offset = 0
        for chunk in chunks:
            span = slice(offset, offset + len(chunk))
            keys, values = f.slab.write_chunk(i, chunk.slot, chunk.start, run.k_rot[span], v[span])
            out = self._chunk_attention(i, chunk, run.q_rot, offset, keys, values)
            run.attn[span] = out.transpose(0, 1).reshape(len(chunk), f.n_heads * f.head_dim)
            offset += len(chunk)
        if rows.stop > rows.start:
            row_q, row_k = (q, k) if f.split_k_attention is not None else (run.q_rot, run.k_rot)
            run.attn[rows] = f.row_attention(
                i, row_q[rows], row_k[rows], v[rows], lengths, bucket, run.cos[rows], run.sin[rows]
            )

    def _chunk_attention(self, i: int, chunk: Chunk, q_rot, offset: int, keys, values) -> torch.Tensor:
        """A chunk's attention (heads, T, d). A prompt's first chunk is plain causal attention: it runs
        on T padded to the pieces' step (cuDNN's kernel, whose per-shape plans then repeat), over the
        rows after it in the pass and the slot's keys after it, which no real query sees."""
        f = self.forward
        tokens, padded = len(chunk), self.pieces.padded(len(chunk))
        if chunk.start == 0 and offset + padded <= q_rot.shape[0] and padded <= f.slab.max_len:
            keys, values = f.slab.prefix(i, chunk.slot, padded)
            q = q_rot[offset : offset + padded].transpose(0, 1)
            return causal_attention(q, keys, values, f.scale)[:, :tokens]
        return prefill_attention(
            q_rot[offset : offset + tokens].transpose(0, 1),
            keys,
            values,
            chunk.start,
            f.scale,
            planless=f.planless,
            lower_right=f.lower_right,
        )

    def _plan_first_chunks(self) -> None:
        """cuDNN's plan for every padded first-chunk length a pass may hold, in the calling thread's plan
        cache (PyTorch keeps one per thread): built by the first pass of each thread, in the engine's
        warm-up for its worker, instead of ~50 ms per new length (and ~0.8 s for the first) in passes."""
        f = self.forward
        self._planned_threads.add(threading.get_ident())
        step, most = self.pieces.step, max(self.pieces.capacity, self.solo_pass_tokens)
        for tokens in range(step, min(most, f.slab.max_len) + 1, step):
            q = torch.zeros(tokens, f.n_heads, f.head_dim, dtype=f.dtype, device=f.device)
            causal_attention(q.transpose(0, 1), *f.slab.prefix(0, 0, tokens), f.scale)
