"""The fast decode step: one token through the text model over a pre-allocated KV slab.

gpt-fast style: the step is a plain function of static buffers (token, position, cache length),
so on CUDA it is captured once per KV-length bucket in a CUDA graph and replayed per token; the
elementwise work around the matrix products (RMSNorm, rotary, SiLU) is fused by torch.compile.
On the CPU the same function runs eagerly, which is how CI checks it against transformers.

The math is exactly Glm4vTextDecoderLayer's for a text token (whose three M-RoPE positions are
equal): input norm, fused QKV, partial interleaved rotary, grouped-query attention over the
cache, o_proj, post-attention norm, residual, norm, SwiGLU MLP, post-MLP norm, residual.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BUCKET = 1024  # KV length granularity of the captured graphs


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def _pre_attention(h, norm_w, w_qkv, b_qkv, cos, sin, eps: float, n_heads: int, n_kv: int, head_dim: int):
    x = _rms_norm(h, norm_w, eps)
    qkv = F.linear(x, w_qkv, b_qkv)
    q, k, v = qkv.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
    q = q.view(n_heads, head_dim)
    k = k.view(n_kv, head_dim)
    v = v.view(n_kv, head_dim)
    rot = cos.shape[-1]
    q = torch.cat([q[:, :rot] * cos + _rotate_half_interleaved(q[:, :rot]) * sin, q[:, rot:]], dim=-1)
    k = torch.cat([k[:, :rot] * cos + _rotate_half_interleaved(k[:, :rot]) * sin, k[:, rot:]], dim=-1)
    return q, k, v


def _post_attention(h, attn, w_o, n_post_attn, n_pre_mlp, w_gate_up, w_down, n_post_mlp, eps: float):
    a = F.linear(attn, w_o)
    h = h + _rms_norm(a, n_post_attn, eps)
    x = _rms_norm(h, n_pre_mlp, eps)
    gate, up = F.linear(x, w_gate_up).chunk(2, dim=-1)
    x = F.linear(up * F.silu(gate), w_down)
    return h + _rms_norm(x, n_post_mlp, eps)


def _final(h, norm_w, lm_head, eps: float):
    return F.linear(_rms_norm(h, norm_w, eps), lm_head).float()


def fuse_qkv(model) -> None:
    """Concatenate each layer's q/k/v weights into one matrix (one GEMV instead of three) and make
    the original parameters views into it, so transformers' own forward keeps working and no
    memory is duplicated."""
    for layer in model.model.language_model.layers:
        attn = layer.self_attn
        if hasattr(attn, "qkv_weight"):
            continue
        weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous()
        bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]).contiguous()
        sizes = [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
        for proj, w, b in zip((attn.q_proj, attn.k_proj, attn.v_proj), weight.split(sizes), bias.split(sizes)):
            proj.weight = torch.nn.Parameter(w, requires_grad=False)
            proj.bias = torch.nn.Parameter(b, requires_grad=False)
        attn.qkv_weight, attn.qkv_bias = weight, bias


class SlabDecoder:
    """Decode steps over a static KV slab of `max_len` tokens for one sequence at a time."""

    def __init__(self, model, max_len: int, *, use_graphs: bool, compile_math: bool) -> None:
        fuse_qkv(model)
        text_model = model.model.language_model
        cfg = model.config.get_text_config()
        self.device = model.lm_head.weight.device
        self.dtype = model.lm_head.weight.dtype
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.layers = text_model.layers
        self.final_norm = text_model.norm.weight
        self.lm_head = model.lm_head.weight
        self.embed = text_model.embed_tokens.weight
        self.inv_freq = text_model.rotary_emb.inv_freq.to(self.device, torch.float32)
        self.max_len = max_len
        n_layers = len(self.layers)
        shape = (n_layers, self.n_kv, max_len, self.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        # Static inputs and output: graphs read and write these very tensors.
        self.token = torch.zeros(1, dtype=torch.long, device=self.device)
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self.length = torch.zeros(1, dtype=torch.long, device=self.device)  # tokens already in the slab
        self.logits = torch.zeros(self.lm_head.shape[0], dtype=torch.float32, device=self.device)
        self.arange = torch.arange(max_len, device=self.device)
        self.pre, self.post, self.final = _pre_attention, _post_attention, _final
        if compile_math:
            self.pre = torch.compile(_pre_attention, fullgraph=True, dynamic=False)
            self.post = torch.compile(_post_attention, fullgraph=True, dynamic=False)
            self.final = torch.compile(_final, fullgraph=True, dynamic=False)
        self.use_graphs = use_graphs
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool = None

    @property
    def bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    # ------------------------------------------------------------------ KV in and out
    def load(self, cache, length: int) -> None:
        """Copy the first `length` tokens of a transformers Cache into the slab."""
        for i, layer in enumerate(cache.layers):
            self.k[i, :, :length].copy_(layer.keys[0, :, :length])
            self.v[i, :, :length].copy_(layer.values[0, :, :length])

    def export(self, cache, start: int, end: int) -> None:
        """Append slab tokens [start, end) to a transformers Cache (which holds `start` tokens)."""
        if end <= start:
            return
        for i in range(len(cache.layers)):
            k = self.k[i, :, start:end].unsqueeze(0).clone()
            v = self.v[i, :, start:end].unsqueeze(0).clone()
            cache.layers[i].update(k, v)

    # ------------------------------------------------------------------ the step
    def _step(self, bucket: int) -> None:
        h = F.embedding(self.token, self.embed)  # (1, hidden)
        freqs = self.position.float()[:, None] * self.inv_freq  # (1, rot/2)
        freqs = freqs.repeat_interleave(2, dim=-1)
        cos, sin = freqs.cos().to(self.dtype), freqs.sin().to(self.dtype)
        valid = self.arange[:bucket] <= self.length  # the new token sits at index `length`
        group = self.n_heads // self.n_kv
        for i, layer in enumerate(self.layers):
            attn_mod = layer.self_attn
            q, k, v = self.pre(
                h, layer.input_layernorm.weight, attn_mod.qkv_weight, attn_mod.qkv_bias, cos, sin,
                self.eps, self.n_heads, self.n_kv, self.head_dim,
            )
            self.k[i].index_copy_(1, self.length, k.unsqueeze(1))
            self.v[i].index_copy_(1, self.length, v.unsqueeze(1))
            keys = self.k[i, :, :bucket]  # (kv, bucket, d)
            values = self.v[i, :, :bucket]
            scores = torch.bmm(q.view(self.n_kv, group, self.head_dim), keys.transpose(1, 2)).float() * self.scale
            scores = scores.masked_fill(~valid, float("-inf"))
            probs = scores.softmax(-1).to(self.dtype)
            attn = torch.bmm(probs, values).reshape(1, self.n_heads * self.head_dim)
            h = self.post(
                h, attn, attn_mod.o_proj.weight, layer.post_self_attn_layernorm.weight,
                layer.post_attention_layernorm.weight, layer.mlp.gate_up_proj.weight, layer.mlp.down_proj.weight,
                layer.post_mlp_layernorm.weight, self.eps,
            )
        self.logits.copy_(self.final(h, self.final_norm, self.lm_head, self.eps)[0])

    def _bucket(self, length: int) -> int:
        return min(self.max_len, (length // BUCKET + 1) * BUCKET)

    def capture(self, bucket: int) -> None:
        """Record the step for one KV-length bucket (warm-up runs first, as CUDA graphs require)."""
        saved = self.length.clone()
        self.length.fill_(0)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step(bucket)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._step(bucket)
        self.pool = graph.pool()
        self.graphs[bucket] = graph
        self.length.copy_(saved)

    def warmup(self, buckets: list[int] | None = None) -> None:
        if not self.use_graphs:
            return
        for bucket in buckets or range(BUCKET, self.max_len + 1, BUCKET):
            if bucket not in self.graphs:
                self.capture(min(bucket, self.max_len))

    def step(self, token: torch.Tensor, position: int, length: int) -> torch.Tensor:
        """Run one token at rotary `position`, written at slab index `length`; returns the logits buffer."""
        self.token.copy_(token.view(1))
        self.position.fill_(position)
        self.length.fill_(length)
        bucket = self._bucket(length)
        if self.use_graphs:
            if bucket not in self.graphs:
                self.capture(bucket)
            self.graphs[bucket].replay()
        else:
            self._step(bucket)
        return self.logits
