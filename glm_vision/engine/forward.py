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

The math is Glm4vTextDecoderLayer's: input norm, fused QKV, partial interleaved rotary (M-RoPE:
for a text token its three positions are equal), grouped-query attention, o_proj,
post-attention norm, residual, norm, SwiGLU MLP, post-MLP norm, residual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from .slab import KVSlab, attention_head_dim
from .transfer import to_device

log = logging.getLogger(__name__)

BUCKET = 1024  # KV-length granularity of the captured decode graphs
GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
# Decode batches up to which `--decode-matmul auto` runs the Triton GEMVs (bench/RESULTS.md: faster than
# cuBLAS at 1 and 8 rows on the H200, slower at 32)
GEMV_MAX_BATCH = 8


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def _qkv_projection(x, w_qkv, b_qkv, n_heads: int, n_kv: int, head_dim: int):
    """x (N, hidden), already the layer's input norm -> q (N, heads, d), k and v (N, kv_heads, d), not rotated."""
    return _split_heads(F.linear(x, w_qkv, b_qkv), n_heads, n_kv, head_dim)


def _split_heads(qkv, n_heads: int, n_kv: int, head_dim: int):
    """The fused projection's output (N, (heads + 2 kv_heads) d) as q, k, v views."""
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    return q.view(-1, n_heads, head_dim), k.view(-1, n_kv, head_dim), v.view(-1, n_kv, head_dim)


def _rotary(q, k, cos, sin):
    """q (N, heads, d) and k (N, kv_heads, d) rotated on their first `rot` dimensions by cos/sin (N, rot)."""
    rot = cos.shape[-1]
    cos, sin = cos[:, None, :], sin[:, None, :]
    q = torch.cat([q[..., :rot] * cos + _rotate_half_interleaved(q[..., :rot]) * sin, q[..., rot:]], dim=-1)
    k = torch.cat([k[..., :rot] * cos + _rotate_half_interleaved(k[..., :rot]) * sin, k[..., rot:]], dim=-1)
    return q, k


def _pre_attention(x, w_qkv, b_qkv, cos, sin, n_heads: int, n_kv: int, head_dim: int):
    """`_qkv_projection`, then q and k rotated by cos/sin (N, rot)."""
    q, k, v = _qkv_projection(x, w_qkv, b_qkv, n_heads, n_kv, head_dim)
    q, k = _rotary(q, k, cos, sin)
    return q, k, v


def _post_attention(h, attn, w_o, n_post_attn, n_pre_mlp, w_gate_up, w_down, n_post_mlp, n_next, eps: float):
    """The layer's residual stream after attention and MLP, and already the next layer's input norm of
    it (`n_next`; the final norm after the last layer): one fused kernel instead of two per layer."""
    h, x = _residual_norm(h, F.linear(attn, w_o), n_post_attn, n_pre_mlp, eps)
    gate, up = F.linear(x, w_gate_up).chunk(2, dim=-1)
    return _residual_norm(h, F.linear(up * F.silu(gate), w_down), n_post_mlp, n_next, eps)


def _residual_norm(h, out, n_out, n_next, eps: float):
    """The residual stream h plus a sublayer's normed `out`, and the norm (`n_next`) the next sublayer
    takes of it."""
    h = h + rms_norm(out, n_out, eps)
    return h, rms_norm(h, n_next, eps)


def _attend(q, keys, values, valid, scale: float):
    """q (B, kv, group, d) over keys/values (B, kv, L, d) where `valid` (B, L): (B, kv, group, d)."""
    scores = torch.matmul(q, keys.transpose(-1, -2)).float() * scale
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    return torch.matmul(scores.softmax(-1).to(values.dtype), values)


# cuDNN's fused attention builds an execution plan for every new shape (~15 ms of CPU each, seen in
# the demo-training profile), and nearly every prefill chunk has a new (length, prefix) shape: the
# likeliest cause of a +23 ms follow-up TTFT on the H100 (bench/RESULTS.md). Flash and memory-efficient
# attention have no plans; cuDNN and math stay as fallbacks. (The vision encoder tries cuDNN first:
# picture sizes repeat.) A chunk after a cached prefix is causal aligned to the lower right (its query
# i is the prefix's length + i): flash attention's own causal mask when the queries are fewer than the
# keys, grouped heads included (`lower_right`, checked on the device at start); otherwise an explicit
# mask through memory-efficient attention, which takes a mask but not grouped heads, so key/value heads
# are copied per query head (end x heads x head_dim x 4 bytes a layer, freed at once).
_CAUSAL_BACKENDS = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.MATH,
]
_MASKED_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]


def prefill_attention(
    q, keys, values, start: int, scale: float, *, planless: bool, lower_right: bool = False
) -> torch.Tensor:
    """q (heads, T, d) of the chunk at [start, start+T) over keys/values (kv_heads, start+T, d), causally
    (a chunk that starts the sequence: plain causal; after a cached prefix, query i sees keys
    [0, start+i]). -> (heads, T, d)."""
    T, end = q.shape[1], keys.shape[1]
    if start and lower_right:
        return F.scaled_dot_product_attention(
            q[None], keys[None], values[None], attn_mask=causal_lower_right(T, end), scale=scale, enable_gqa=True
        )[0]
    causal = None
    if start:
        arange = torch.arange(end, device=q.device)
        causal = arange[None, :] <= (start + arange[:T])[:, None]
    if not planless:
        return F.scaled_dot_product_attention(
            q[None], keys[None], values[None], attn_mask=causal, is_causal=causal is None, scale=scale, enable_gqa=True
        )[0]
    if causal is None:
        with sdpa_kernel(_CAUSAL_BACKENDS, set_priority=True):
            return F.scaled_dot_product_attention(
                q[None], keys[None], values[None], is_causal=True, scale=scale, enable_gqa=True
            )[0]
    group = q.shape[0] // keys.shape[0]
    keys, values = keys.repeat_interleave(group, dim=0), values.repeat_interleave(group, dim=0)
    with sdpa_kernel(_MASKED_BACKENDS, set_priority=True):
        return F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=causal, scale=scale)[0]


def lower_right_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this device runs lower-right causal attention with grouped heads (and gets it right)."""
    try:
        generator = torch.Generator(device=device).manual_seed(0)
        q = torch.randn(4, 8, 64, device=device, dtype=dtype, generator=generator)
        k, v = (torch.randn(2, 24, 64, device=device, dtype=dtype, generator=generator) for _ in range(2))
        got = prefill_attention(q, k, v, 16, 0.125, planless=True, lower_right=True)
        expected = prefill_attention(q, k, v, 16, 0.125, planless=False)
        return bool(torch.allclose(got.float(), expected.float(), atol=2e-2, rtol=2e-2))
    except RuntimeError:
        return False


def _final(x, lm_head):
    """x: the last layer's output, already through the final norm."""
    return F.linear(x, lm_head).float()


def fuse_qkv(model) -> None:
    """Concatenate each layer's q/k/v weights into one matrix (one GEMV instead of three) and make
    the original parameters views into it, so transformers' own forward keeps working and no
    memory is duplicated."""
    for layer in model.model.language_model.layers:
        attn = layer.self_attn
        if _fused(attn):
            continue
        weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous()
        bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]).contiguous()
        sizes = [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
        for proj, w, b in zip(
            (attn.q_proj, attn.k_proj, attn.v_proj), weight.split(sizes), bias.split(sizes), strict=False
        ):
            proj.weight = torch.nn.Parameter(w, requires_grad=False)
            proj.bias = torch.nn.Parameter(b, requires_grad=False)
        attn.qkv_weight, attn.qkv_bias = weight, bias


def _fused(attn) -> bool:
    """Whether q_proj is still a view into the fused matrix: casting the model (`model.float()`) gives
    every parameter new storage and leaves the fused matrix behind in the old dtype."""
    weight = getattr(attn, "qkv_weight", None)
    q = attn.q_proj.weight
    return (
        weight is not None
        and q.dtype == weight.dtype
        and q.device == weight.device
        and q.data_ptr() == weight.data_ptr()
    )


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


class TextForward:
    def __init__(
        self,
        model,
        slab: KVSlab,
        *,
        use_graphs: bool,
        compile_math: bool,
        decode_attention: str = "compiled",
        decode_matmul: str = "cublas",
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
        self.pre, self.post, self.final, self.attend = _pre_attention, _post_attention, _final, _attend
        self.norm, self.project, self.rotate, self.residual_norm = rms_norm, _qkv_projection, _rotary, _residual_norm
        if compile_math:
            self.norm = torch.compile(rms_norm, fullgraph=True)
            self.pre = torch.compile(_pre_attention, fullgraph=True)
            self.project = torch.compile(_qkv_projection, fullgraph=True)
            self.rotate = torch.compile(_rotary, fullgraph=True)
            self.post = torch.compile(_post_attention, fullgraph=True)
            self.residual_norm = torch.compile(_residual_norm, fullgraph=True)
            self.final = torch.compile(_final, fullgraph=True)
            self.attend = torch.compile(_attend, fullgraph=True, dynamic=True)  # one kernel set for all buckets
        self.use_graphs = use_graphs
        self.planless = self.device.type == "cuda"  # see prefill_attention
        self.lower_right = self.planless and lower_right_works(self.device, self.dtype)
        self.split_k_attention = self.write_kv = None
        if decode_attention == "auto":  # the split-K kernels where Triton runs: faster at every batch size measured
            decode_attention = "triton" if self.device.type == "cuda" else "compiled"
        self.decode_attention = decode_attention
        if decode_attention == "triton":
            from .decode_attention import decode_attention as split_k_attention
            from .decode_attention import write_kv

            self.split_k_attention, self.write_kv = split_k_attention, write_kv
        # `--decode-matmul triton`: the decode step's matrix products as Triton GEMVs (gemv.py), the norms
        # around them compiled; prefill keeps cuBLAS (a prefill step is bound by arithmetic, not reading).
        # auto: the GEMVs on CUDA for batches of up to GEMV_MAX_BATCH rows, where the H200 measured them faster
        auto = decode_matmul == "auto"
        if auto:
            decode_matmul = "triton" if self.device.type == "cuda" else "cublas"
        self.decode_matmul = decode_matmul
        self.gemv_max_batch = 0 if decode_matmul == "cublas" else GEMV_MAX_BATCH if auto else self.slab.slots
        self.gemv = None
        if self.gemv_max_batch:
            from . import gemv

            self.gemv = gemv
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.pool = None
        self._capture_stream = torch.cuda.Stream() if use_graphs else None  # one stream: one set of cuBLAS workspaces
        pinned = self.device.type == "cuda"
        # Two pinned staging buffers, used in turn: one may still be in flight to the GPU.
        self._staging = [torch.zeros(2, slots, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self._turn = 0

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
        batch = len(rows) if rows is not None else 0
        parts = [self._row_inputs(rows)] if batch else []
        parts += [(c.embeds.to(self.dtype), *self.rope(c.positions)) for c in chunks]
        # always new tensors: a chunk's embeddings are a view at a varying offset, which compiled code
        # would compile again for
        h, cos, sin = (torch.cat(t) for t in zip(*parts, strict=False))
        lengths = to_device(rows.lengths, torch.long, self.device) if batch else None
        bucket = self.bucket(max(rows.lengths)) if batch else 0
        x = self.norm(h, self.layers[0].input_layernorm.weight, self.eps)
        for i, layer in enumerate(self.layers):
            attn = self._mixed_attention(i, layer, x, cos, sin, batch, lengths, bucket, chunks)
            h, x = self._mlp(i, layer, h, attn)
        ends, offset = [], batch
        for c in chunks:
            offset += len(c)
            if c.last:
                ends.append(x[offset - 1 : offset])
        picked = ([x[:batch]] if batch else []) + ends
        if not picked:  # mid-prompt chunks only: no logits wanted
            return None, None
        logits = self.final(torch.cat(picked) if len(picked) > 1 else picked[0], self.lm_head)
        return (logits[batch:] if ends else None), (logits[:batch] if batch else None)

    def _row_inputs(self, rows: DecodeRows):
        """Embeddings and rotary cos/sin of the decode rows' tokens (text tokens: one position each)."""
        positions = to_device(rows.positions, torch.long, self.device)
        return (F.embedding(rows.tokens, self.embed), *self._text_rope(positions))

    def _text_rope(self, positions: torch.Tensor):
        freqs = (positions.float()[:, None] * self.inv_freq).repeat_interleave(2, dim=-1)
        return freqs.cos().to(self.dtype), freqs.sin().to(self.dtype)

    def _mixed_attention(self, i: int, layer, x, cos, sin, batch: int, lengths, bucket: int, chunks):
        """Layer i's attention for a prefill step: rows [0, batch) decode over their slots, then each
        chunk attends causally over its own slot. -> (N, heads x head_dim)."""
        attn_mod = layer.self_attn
        if self.split_k_attention is not None and batch:  # the Triton kernels rotate the rows' q and k themselves
            q, k, v = self.project(x, attn_mod.qkv_weight, attn_mod.qkv_bias, self.n_heads, self.n_kv, self.head_dim)
            row_q, row_k = q[:batch], k[:batch]
            # all rows rotated, the chunks' kept: a compiled function fed views at a varying offset
            # (q[batch:]) compiles again for each new offset, seconds each (seen on the H200)
            q_rest, k_rest = (t[batch:] for t in self.rotate(q, k, cos, sin))
        else:
            q, k, v = self._qkv(layer, x, cos, sin)
            row_q, row_k, q_rest, k_rest = q[:batch], k[:batch], q[batch:], k[batch:]
        outs = (
            [self._row_attention(i, row_q, row_k, v[:batch], lengths, bucket, cos[:batch], sin[:batch])]
            if batch
            else []
        )
        offset = 0
        for chunk in chunks:
            span = slice(offset, offset + len(chunk))
            offset += len(chunk)
            keys, values = self.slab.write_chunk(i, chunk.slot, chunk.start, k_rest[span], v[batch:][span])
            out = prefill_attention(
                q_rest[span].transpose(0, 1),
                keys,
                values,
                chunk.start,
                self.scale,
                planless=self.planless,
                lower_right=self.lower_right,
            )
            outs.append(out.transpose(0, 1).reshape(len(chunk), self.n_heads * self.head_dim))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _row_attention(self, i: int, q, k, v, lengths, bucket: int, cos, sin):
        """The decode rows' attention in layer i (their new key and value written first): (B, heads x head_dim)."""
        batch = q.shape[0]
        q = q.reshape(batch, self.n_kv, self.n_heads // self.n_kv, self.head_dim)
        if self.split_k_attention is not None:
            self.write_kv(self.slab.k[i], self.slab.v[i], k, v, lengths, cos, sin)
            attn = self.split_k_attention(q, self.slab.k[i], self.slab.v[i], lengths, bucket, self.scale, cos, sin)
        else:
            keys, values = self.slab.write_tokens(i, self.rows[:batch], lengths, k, v, bucket)
            valid = self.arange[:bucket][None, :] <= lengths[:, None]
            attn = self.attend(q, keys, values, valid, self.scale)
        return attn.reshape(batch, self.n_heads * self.head_dim)

    def _qkv(self, layer, x, cos, sin):
        attn_mod = layer.self_attn
        return self.pre(x, attn_mod.qkv_weight, attn_mod.qkv_bias, cos, sin, self.n_heads, self.n_kv, self.head_dim)

    def _mlp(self, i: int, layer, h, attn):
        """(h, x): the residual stream after layer i, and its norm as the next layer (or lm_head) takes it."""
        return self.post(
            h,
            attn,
            layer.self_attn.o_proj.weight,
            layer.post_self_attn_layernorm.weight,
            layer.post_attention_layernorm.weight,
            layer.mlp.gate_up_proj.weight,
            layer.mlp.down_proj.weight,
            layer.post_mlp_layernorm.weight,
            self.next_norms[i],
            self.eps,
        )

    # ------------------------------------------------------------------ decode
    def _decode(self, batch: int, bucket: int) -> None:
        tokens, positions, lengths = self.tokens[:batch], self.positions[:batch], self.lengths[:batch]
        h = F.embedding(tokens, self.embed)  # (B, hidden)
        cos, sin = self._text_rope(positions)
        valid = (
            None if self.split_k_attention else self.arange[:bucket][None, :] <= lengths[:, None]
        )  # the new token sits at `length`
        group = self.n_heads // self.n_kv
        rows = self.rows[:batch]
        gemv = self.gemv if batch <= self.gemv_max_batch else None
        x = self.norm(h, self.layers[0].input_layernorm.weight, self.eps)
        for i, layer in enumerate(self.layers):
            if self.split_k_attention is not None:  # the Triton kernels rotate q and k themselves
                q, k, v = self._decode_projection(layer, x, gemv)
                q = q.view(batch, self.n_kv, group, self.head_dim)
                self.write_kv(self.slab.k[i], self.slab.v[i], k, v, lengths, cos, sin)
                attn = self.split_k_attention(q, self.slab.k[i], self.slab.v[i], lengths, bucket, self.scale, cos, sin)
            else:
                if gemv is None:
                    q, k, v = self._qkv(layer, x, cos, sin)
                else:
                    q, k, v = self._decode_projection(layer, x, gemv)
                    q, k = self.rotate(q, k, cos, sin)
                q = q.view(batch, self.n_kv, group, self.head_dim)
                keys, values = self.slab.write_tokens(i, rows, lengths, k, v, bucket)  # (B, kv, bucket, d)
                attn = self.attend(q, keys, values, valid, self.scale)
            h, x = self._decode_mlp(i, layer, h, attn.reshape(batch, self.n_heads * self.head_dim), gemv)
        if gemv is None:
            self.logits[:batch].copy_(self.final(x, self.lm_head))
        else:
            gemv.linear(x, self.lm_head, out=self.logits[:batch])

    def _decode_projection(self, layer, x, gemv):
        """The decode rows' q, k, v, not rotated (through cuBLAS where `gemv` is None)."""
        attn_mod = layer.self_attn
        if gemv is None:
            return self.project(x, attn_mod.qkv_weight, attn_mod.qkv_bias, self.n_heads, self.n_kv, self.head_dim)
        qkv = gemv.linear(x, attn_mod.qkv_weight, attn_mod.qkv_bias)
        return _split_heads(qkv, self.n_heads, self.n_kv, self.head_dim)

    def _decode_mlp(self, i: int, layer, h, attn, gemv):
        """`_mlp` for the decode rows: with Triton GEMVs, one kernel for each matrix (gate and up as one,
        SiLU x up fused) and one compiled kernel for each residual + norm between them."""
        if gemv is None:
            return self._mlp(i, layer, h, attn)
        a = gemv.linear(attn, layer.self_attn.o_proj.weight)
        norms = layer.post_self_attn_layernorm.weight, layer.post_attention_layernorm.weight
        h, x = self.residual_norm(h, a, *norms, self.eps)
        x = gemv.linear(gemv.swiglu(x, layer.mlp.gate_up_proj.weight), layer.mlp.down_proj.weight)
        return self.residual_norm(h, x, layer.post_mlp_layernorm.weight, self.next_norms[i], self.eps)

    def graph_batch(self, batch: int) -> int:
        """The captured batch size a batch of `batch` rows runs in (padded up, never past the slots)."""
        padded = next((b for b in GRAPH_BATCH_SIZES if b >= batch), batch)
        return min(padded, self.slab.slots)

    def bucket(self, longest: int) -> int:
        return min(self.slab.max_len, (longest // BUCKET + 1) * BUCKET)

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
        for batch in sizes:
            for bucket in range(BUCKET, max_bucket + 1, BUCKET):
                if (batch, bucket) not in self.graphs:
                    self.capture(batch, bucket)

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
