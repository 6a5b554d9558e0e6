"""The text model's forward pass over a pre-allocated KV slab: chunked prefill and batched decode.

gpt-fast style: plain functions over the transformers model's own weights. The decode step for a
batch of sequences reads static buffers (tokens, positions, lengths), so on CUDA it is captured in
a CUDA graph per (batch size, KV-length bucket) and replayed per token; the elementwise work
around the matrix products (RMSNorm, rotary, SiLU) is fused by torch.compile. On the CPU the same
functions run eagerly, which is how CI checks them against transformers.

A step that prefills also carries the decoding rows (vLLM's chunked prefill): the prompt chunks of
several sequences and one token of every decoding row go through each weight matrix together, each
attending only to its own slot, so while prompts are prefilled the running streams' tokens cost
almost nothing (a prefill step is bound by arithmetic, a decode step by reading the weights).

The layer's math is in layer_math.py, the prefill pass in prefill_pass.py (its pieces between
attention calls, CUDA graphs per token count, in prefill_pieces.py).
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from . import graph_timer
from .fused_weights import fuse_qkv
from .layer_math import (
    attend,
    final_logits,
    post_attention,
    post_attention_in_place,
    pre_attention,
    qkv_projection,
    rms_norm,
    rotary,
    rotary_into,
    split_heads,
    swiglu_glue,
    swiglu_mlp,
)
from .pdl import uses_pdl
from .prefill_attention import lower_right_works
from .prefill_pass import Chunk, DecodeRows, PrefillPass
from .slab import KVSlab, attention_head_dim

log = logging.getLogger(__name__)

BUCKET = 1024  # KV-length granularity of the captured decode graphs
GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
# decode steps of up to this many rows launch their Triton kernels with PDL (pdl.py): on the H200 it took a
# step at ~4k context from 5.28-5.34 to 5.22-5.28 ms at 1 row and 5.92-6.01 to 5.71-5.96 at 8, but 6.36 to 6.58
# at 16 and 7.18 to 7.32 at 32 (bench/RESULTS.md, fifteenth and sixteenth sessions)
PDL_MAX_ROWS = 8


class TextForward:
    def __init__(
        self,
        model,
        slab: KVSlab,
        *,
        use_graphs: bool,
        compile_math: bool,
        pass_tokens: int,
        solo_pass_tokens: int,
        decode_attention: str = "compiled",
        decode_matmul: str = "cublas",
        decode_pdl: str = "off",
    ) -> None:
        model.requires_grad_(False)  # inference only: no autograd graph may ever hold activations
        fuse_qkv(model)
        text_model = model.model.language_model
        cfg = model.config.get_text_config()
        self.slab = slab
        self.device = model.lm_head.weight.device
        self.dtype = model.lm_head.weight.dtype
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = attention_head_dim(cfg)
        self.hidden = cfg.hidden_size
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.layers = text_model.layers
        self.final_norm = text_model.norm.weight
        self.lm_head = model.lm_head.weight
        self.embed = text_model.embed_tokens.weight
        self.rotary = text_model.rotary_emb
        self.inv_freq = self.rotary.inv_freq.to(self.device, torch.float32)
        slots = slab.slots
        # Static decode inputs and output: the graphs read and write these very tensors.
        self.tokens = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.lengths = torch.zeros(slots, dtype=torch.long, device=self.device)  # KV index of the new token
        self.logits = torch.zeros(slots, self.lm_head.shape[0], dtype=torch.float32, device=self.device)
        self.arange = torch.arange(slab.max_len, device=self.device)
        self.rows = torch.arange(slots, device=self.device)  # row i writes slot i
        # the norm each layer's output goes through next: the next layer's input norm, the final norm last
        self.next_norms = [layer.input_layernorm.weight for layer in self.layers[1:]] + [self.final_norm]
        self.pre, self.post, self.final, self.attend = pre_attention, post_attention, final_logits, attend
        self.norm, self.project, self.rotate = rms_norm, qkv_projection, rotary
        self.rotate_into, self.post_in_place = rotary_into, post_attention_in_place  # the prefill pieces'
        self.mlp_product = swiglu_mlp
        if compile_math:
            self.norm = torch.compile(rms_norm, fullgraph=True)
            self.pre = torch.compile(pre_attention, fullgraph=True)
            self.project = torch.compile(qkv_projection, fullgraph=True)
            self.rotate = torch.compile(rotary, fullgraph=True)
            self.post = torch.compile(post_attention, fullgraph=True)
            self.rotate_into = torch.compile(rotary_into, fullgraph=True)
            self.post_in_place = torch.compile(post_attention_in_place, fullgraph=True)
            self.mlp_product = torch.compile(swiglu_mlp, fullgraph=True)
            self.final = torch.compile(final_logits, fullgraph=True)
            self.attend = torch.compile(attend, fullgraph=True, dynamic=True)  # one kernel set for all buckets
        self.use_graphs = use_graphs
        self.planless = self.device.type == "cuda"  # see prefill_attention
        self.lower_right = self.planless and lower_right_works(self.device, self.dtype)
        self.split_k_attention = None
        if decode_attention == "auto":  # the split-K kernels where Triton runs: faster at every batch size measured
            decode_attention = "triton" if self.device.type == "cuda" else "compiled"
        self.decode_attention = decode_attention
        if decode_attention == "triton":
            from .decode_attention import decode_attention as split_k_attention

            self.split_k_attention = split_k_attention
        self.pdl = uses_pdl(decode_pdl, self.device)
        # The decode step's matrix products through decode_matmuls.py: each through cuBLAS or a Triton GEMV
        # (gemv.py), forced (`cublas`, `triton`) or, under auto on CUDA, whichever the warm-up measured faster
        # for that product and batch size; prefill keeps cuBLAS (a prefill step is bound by arithmetic).
        if decode_matmul == "auto":
            decode_matmul = "measured" if self.device.type == "cuda" else "cublas"
        self.decode_matmul = decode_matmul
        self.matmuls = None
        if decode_matmul != "cublas":
            from .decode_matmuls import DecodeMatmuls

            glue = torch.compile(swiglu_glue, fullgraph=True) if compile_math else swiglu_glue
            self.matmuls = DecodeMatmuls(decode_matmul, glue)
        # the decode step's residual norms as a Triton kernel where Triton runs (row_norm.py)
        self.row_residual_norm = None
        if self.device.type == "cuda" or self.matmuls is not None:
            from .row_norm import residual_norm as row_residual_norm

            self.row_residual_norm = row_residual_norm
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.pool = None
        self._capture_stream = torch.cuda.Stream() if use_graphs else None  # one stream: one set of cuBLAS workspaces
        pinned = self.device.type == "cuda"
        # Two pinned staging buffers, used in turn: one may still be in flight to the GPU.
        self._staging = [torch.zeros(2, slots, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self._turn = 0
        # a pass holds at most a step's prompt tokens, the decode rows included (scheduler.step_budget)
        self.passes = PrefillPass(
            self, pass_tokens=pass_tokens, solo_pass_tokens=solo_pass_tokens, use_graphs=use_graphs
        )

    # ------------------------------------------------------------------ prefill
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embed)

    def rope(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, N) M-RoPE positions -> cos, sin (N, rot), exactly as the model's rotary embedding."""
        dummy = torch.empty(1, dtype=self.dtype, device=self.device)
        cos, sin = self.rotary(dummy, position_ids.to(self.device)[:, None, :])
        return cos[0], sin[0]

    def prefill(self, chunks: list[Chunk], rows: DecodeRows | None = None):
        """Run prompt chunks (of any sequences, each in its own slot) and, riding along, one decode
        token for each of `rows`, in one pass through the layers. Returns (the logits of each chunk
        that ends its prompt, in order, (n, vocab); the rows' logits (B, vocab) or None)."""
        return self.passes(chunks, rows)

    def text_rope(self, positions: torch.Tensor):
        freqs = (positions.float()[:, None] * self.inv_freq).repeat_interleave(2, dim=-1)
        return freqs.cos().to(self.dtype), freqs.sin().to(self.dtype)

    def row_attention(self, i: int, q, k, v, lengths, bucket: int, cos, sin):
        """The decode rows' attention in layer i (their new key and value written first): (B, heads x head_dim)."""
        batch = q.shape[0]
        q = q.reshape(batch, self.n_kv, self.n_heads // self.n_kv, self.head_dim)
        if self.split_k_attention is not None:
            attn = self._split_k(i, q, k, v, lengths, bucket, cos, sin, pdl=self.pdl_for(batch))
        else:
            keys, values = self.slab.write_tokens(i, self.rows[:batch], lengths, k, v, bucket)
            valid = self.arange[:bucket][None, :] <= lengths[:, None]
            attn = self.attend(q, keys, values, valid, self.scale)
        return attn.reshape(batch, self.n_heads * self.head_dim)

    def pdl_for(self, rows: int) -> bool:
        """Whether the Triton kernels of a decode step of `rows` rows launch with PDL. The rows riding in a
        prefill pass take the same, so that their attention runs the kernel variants the decode graphs
        compiled at warm-up (the others cost a user's first burst ~0.8 s of compiles: bench/RESULTS.md)."""
        return self.pdl and self.graph_batch(rows) <= PDL_MAX_ROWS

    def _split_k(self, i: int, q, k, v, lengths, bucket: int, cos, sin, pdl: bool):
        """The rows' attention in layer i through the Triton kernels, their new key and value written first.
        Split and tiles as for the rows' captured batch size: rows riding in a prefill pass (3, 12, ...) run
        the kernel variants their decode graph compiled at warm-up, not variants of their own compiled in a
        user's step (bench/RESULTS.md, seventeenth session)."""
        keys, values = self.slab.k[i], self.slab.v[i]
        tune_as = self.graph_batch(q.shape[0])
        return self.split_k_attention(
            q, keys, values, lengths, bucket, self.scale, cos, sin, new=(k, v), pdl=pdl, tune_as=tune_as
        )

    def _qkv(self, layer, x, cos, sin):
        attn_mod = layer.self_attn
        return self.pre(x, attn_mod.qkv_weight, attn_mod.qkv_bias, cos, sin, self.n_heads, self.n_kv, self.head_dim)

    def _mlp(self, i: int, layer, h, attn):
        """(h, x): the residual stream after layer i, and its norm as the next layer (or lm_head) takes it."""
        return self.post(h, attn, *self._mlp_weights(i, layer), self.eps)

    def mlp_in_place(self, i: int, layer, h, attn):
        """`_mlp` with the residual stream updated in h itself; returns x."""
        return self.post_in_place(h, attn, *self._mlp_weights(i, layer), self.eps)

    def _mlp_weights(self, i: int, layer) -> tuple:
        return (
            layer.self_attn.o_proj.weight,
            layer.post_self_attn_layernorm.weight,
            layer.post_attention_layernorm.weight,
            layer.mlp.gate_up_proj.weight,
            layer.mlp.down_proj.weight,
            layer.post_mlp_layernorm.weight,
            self.next_norms[i],
        )

    # ------------------------------------------------------------------ decode
    def _decode(self, batch: int, bucket: int) -> None:
        tokens, positions, lengths = self.tokens[:batch], self.positions[:batch], self.lengths[:batch]
        h = F.embedding(tokens, self.embed)  # (B, hidden)
        cos, sin = self.text_rope(positions)
        valid = (
            None if self.split_k_attention else self.arange[:bucket][None, :] <= lengths[:, None]
        )  # the new token sits at `length`
        group = self.n_heads // self.n_kv
        rows = self.rows[:batch]
        matmuls = self.matmuls
        pdl = self.pdl_for(batch)
        x = self.norm(h, self.layers[0].input_layernorm.weight, self.eps)
        for i, layer in enumerate(self.layers):
            if self.split_k_attention is not None:  # the Triton kernels rotate q and k themselves
                q, k, v = self._decode_projection(layer, x, matmuls, pdl)
                q = q.view(batch, self.n_kv, group, self.head_dim)
                attn = self._split_k(i, q, k, v, lengths, bucket, cos, sin, pdl=pdl)
            else:
                if matmuls is None:
                    q, k, v = self._qkv(layer, x, cos, sin)
                else:
                    q, k, v = self._decode_projection(layer, x, matmuls, pdl)
                    q, k = self.rotate(q, k, cos, sin)
                q = q.view(batch, self.n_kv, group, self.head_dim)
                keys, values = self.slab.write_tokens(i, rows, lengths, k, v, bucket)  # (B, kv, bucket, d)
                attn = self.attend(q, keys, values, valid, self.scale)
            h, x = self._decode_mlp(i, layer, h, attn.reshape(batch, self.n_heads * self.head_dim), matmuls, pdl)
        if matmuls is None:
            self.logits[:batch].copy_(self.final(x, self.lm_head))
        else:
            matmuls.linear(x, self.lm_head, out=self.logits[:batch], pdl=pdl)

    def _decode_projection(self, layer, x, matmuls, pdl: bool = False):
        """The decode rows' q, k, v, not rotated (through cuBLAS where `matmuls` is None)."""
        attn_mod = layer.self_attn
        if matmuls is None:
            return self.project(x, attn_mod.qkv_weight, attn_mod.qkv_bias, self.n_heads, self.n_kv, self.head_dim)
        qkv = matmuls.linear(x, attn_mod.qkv_weight, attn_mod.qkv_bias, pdl=pdl)
        return split_heads(qkv, self.n_heads, self.n_kv, self.head_dim)

    def _decode_mlp(self, i: int, layer, h, attn, matmuls, pdl: bool):
        """`_mlp` for the decode rows. Where Triton runs, each residual + norm is its row kernel, between the
        GEMVs (gate and up as one, SiLU x up fused) or cuBLAS's products (SiLU x up compiled); `pdl`: the
        Triton kernels launched with programmatic dependent launch."""
        if self.row_residual_norm is None:
            return self._mlp(i, layer, h, attn)
        w_o, n_post_attn, n_pre_mlp, w_gate_up, w_down, n_post_mlp, n_next = self._mlp_weights(i, layer)
        a = F.linear(attn, w_o) if matmuls is None else matmuls.linear(attn, w_o, pdl=pdl)
        h, x = self.row_residual_norm(h, a, n_post_attn, n_pre_mlp, self.eps, pdl=pdl)
        if matmuls is None:
            x = self.mlp_product(x, w_gate_up, w_down)
        else:
            x = matmuls.linear(matmuls.swiglu(x, w_gate_up, pdl=pdl), w_down, pdl=pdl)
        return self.row_residual_norm(h, x, n_post_mlp, n_next, self.eps, pdl=pdl)

    def graph_batch(self, batch: int) -> int:
        """The captured batch size a batch of `batch` rows runs in (padded up, never past the slots)."""
        padded = next((b for b in GRAPH_BATCH_SIZES if b >= batch), batch)
        return min(padded, self.slab.slots)

    def bucket(self, longest: int) -> int:
        return min(self.slab.max_len, (longest // BUCKET + 1) * BUCKET)

    def buckets(self, up_to: int) -> list[int]:
        """Every bucket a step of sequences shorter than `up_to` runs in: the last one the context's own length
        where that is not a multiple of BUCKET (a context of 5,024 tokens ends in a bucket of 5,024)."""
        return sorted({self.bucket(length) for length in range(0, up_to, BUCKET)})

    def capture(self, batch: int, bucket: int) -> None:
        """Record the decode step for one (batch, bucket) (warm-up runs first, as CUDA graphs require)."""
        saved = self.lengths.clone()
        self.lengths.fill_(self.slab.spare)  # warm-up writes land where nothing lives
        stream = self._capture_stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._decode(batch, bucket)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._decode(batch, bucket)
        self.pool = graph.pool()
        self.graphs[(batch, bucket)] = graph
        self.lengths.copy_(saved)

    @torch.inference_mode()
    def warmup(self, max_batch: int = 1, max_bucket: int | None = None) -> None:
        if not self.use_graphs:
            return
        max_bucket = min(max_bucket or self.slab.max_len, self.slab.max_len)
        sizes = sorted({self.graph_batch(b) for b in range(1, min(max_batch, self.slab.slots) + 1)})
        started = time.perf_counter()
        for batch in sizes:
            for bucket in self.buckets(max_bucket):
                if (batch, bucket) not in self.graphs:
                    self.capture(batch, bucket)
        log.info("decode graphs: %d captured in %.1f s", len(self.graphs), time.perf_counter() - started)
        if self.matmuls is not None and self.decode_matmul == "measured":
            log.info(
                "decode products measured faster through cuBLAS (rows: weights): %s", self.matmuls.cublas_products()
            )
            for rows, timings in self.matmuls.measured().items():
                log.info("decode products at %d rows, GEMV / cuBLAS us: %s", rows, timings)
        graph_timer.release()  # autotuning and the products' timings are done
        if not self.passes.pieces.graphs:
            started = time.perf_counter()
            self.passes.pieces.capture_all()
            pieces = self.passes.pieces
            log.info(
                "prefill pieces: %d graphs (passes of up to %d tokens) captured in %.1f s",
                len(pieces.graphs),
                pieces.capacity,
                time.perf_counter() - started,
            )

    def decode(self, tokens: torch.Tensor, positions: list[int], lengths: list[int]) -> torch.Tensor:
        """One token for each of the first B slots: `tokens` (B,) on the device, at rotary `positions`,
        KV written at `lengths`. Returns the logits buffer (B, vocab), valid until the next call."""
        batch = len(positions)
        padded = self.graph_batch(batch) if self.use_graphs else batch
        staging = self._staging[self._turn]
        self._turn ^= 1
        staging[0, :batch] = torch.tensor(positions)
        staging[1, :batch] = torch.tensor(lengths)
        staging[0, batch:padded] = 0
        staging[1, batch:padded] = self.slab.spare  # padding rows write their dummy token where nothing lives
        self.tokens[:batch].copy_(tokens)
        self.positions[:padded].copy_(staging[0, :padded], non_blocking=True)
        self.lengths[:padded].copy_(staging[1, :padded], non_blocking=True)
        bucket = self.bucket(max(lengths))
        if self.use_graphs:
            if (padded, bucket) not in self.graphs:
                self.capture(padded, bucket)
            self.graphs[(padded, bucket)].replay()
        else:
            self._decode(batch, bucket)
        return self.logits[:batch]
