"""Decode attention as two Triton kernels (split-K "flash decoding"), for `--decode-attention triton`,
and the new token's key and value written into the slab by one kernel instead of two.

The default decode step computes attention as matmul, masked softmax, matmul: three kernels a
layer (about 15 us of the H100's 8.5 ms step, bench/RESULTS.md). Here one kernel reads each row's
keys in splits of SPLIT positions, one program per (row, KV head, split), with the KV head's query
group as one matrix (GQA: the keys are read once for the whole group), and a second kernel merges
the splits' partial softmax sums. The valid keys of row b are [0, lengths[b]]; splits past that
return at once.

Rotary: the QKV projection's raw query and key go in, and the kernels rotate them themselves (GLM's
partial interleaved rotary on the first ROT dimensions: element i pairs with i ^ 1), the key as it is
written and the query as it is loaded, so the two rotary kernels a layer of the default path are gone.

Tested on the CPU under Triton's interpreter (`TRITON_INTERPRET=1`) against the default path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SPLIT = 256  # key positions per program
BLOCK_N = 64  # key positions per inner iteration


@triton.jit
def _rotate(x, partner, COS, SIN, row, sc_b, offs, ROT: tl.constexpr):
    """x rotated at dimensions `offs` (< ROT) with row `row`'s cos/sin; `partner` is x at offs ^ 1."""
    rot = offs < ROT
    c = tl.load(COS + row * sc_b + offs, mask=rot, other=1.0).to(tl.float32)
    s = tl.load(SIN + row * sc_b + offs, mask=rot, other=0.0).to(tl.float32)
    sign = tl.where(offs % 2 == 0, -1.0, 1.0)
    return x.to(tl.float32) * c + sign * partner.to(tl.float32) * s


@triton.jit
def _split_kernel(
    Q,
    K,
    V,
    LENGTHS,
    COS,
    SIN,
    PART_O,
    PART_M,
    PART_L,
    sq_b,
    sq_h,
    sq_g,
    sk_b,
    sk_h,
    sk_n,
    sv_b,
    sv_h,
    sv_n,
    sc_b,
    so_b,
    so_h,
    so_s,
    so_g,
    sm_b,
    sm_h,
    sm_s,
    scale,
    G: tl.constexpr,
    G_PAD: tl.constexpr,
    D: tl.constexpr,
    ROT: tl.constexpr,
    SPLIT_N: tl.constexpr,
    BLOCK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    s = tl.program_id(2)
    length = tl.load(LENGTHS + b)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    start = s * SPLIT_N
    if start <= length:
        q_at = Q + b * sq_b + h * sq_h + offs_g[:, None] * sq_g
        q = tl.load(q_at + offs_d[None, :], mask=offs_g[:, None] < G, other=0.0)
        if ROT > 0:
            partner = tl.load(q_at + (offs_d ^ 1)[None, :], mask=offs_g[:, None] < G, other=0.0)
            q = _rotate(q, partner, COS, SIN, b, sc_b, offs_d[None, :], ROT).to(Q.dtype.element_ty)
        for n0 in range(start, start + SPLIT_N, BLOCK):
            offs_n = n0 + tl.arange(0, BLOCK)
            valid = offs_n <= length
            k = tl.load(
                K + b * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :], mask=valid[:, None], other=0.0
            )
            v = tl.load(
                V + b * sv_b + h * sv_h + offs_n[:, None] * sv_n + offs_d[None, :], mask=valid[:, None], other=0.0
            )
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(tl.float32) * scale
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a block with no valid key
            p = tl.exp(scores - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(tl.float32)
            m_i = m_new
    keep = offs_g < G
    tl.store(
        PART_O + b * so_b + h * so_h + s * so_s + offs_g[:, None] * so_g + offs_d[None, :], acc, mask=keep[:, None]
    )
    tl.store(PART_M + b * sm_b + h * sm_h + s * sm_s + offs_g, m_i, mask=keep)
    tl.store(PART_L + b * sm_b + h * sm_h + s * sm_s + offs_g, l_i, mask=keep)


@triton.jit
def _merge_kernel(
    PART_O,
    PART_M,
    PART_L,
    OUT,
    so_b,
    so_h,
    so_s,
    so_g,
    sm_b,
    sm_h,
    sm_s,
    sout_b,
    sout_h,
    sout_g,
    SPLITS: tl.constexpr,
    G: tl.constexpr,
    G_PAD: tl.constexpr,
    D: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    keep = offs_g < G
    m = tl.full([G_PAD], float("-inf"), tl.float32)
    for s in range(SPLITS):
        m = tl.maximum(m, tl.load(PART_M + b * sm_b + h * sm_h + s * sm_s + offs_g, mask=keep, other=float("-inf")))
    m = tl.where(keep, m, 0.0)  # split 0 always holds key 0, so real rows are finite
    total = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    for s in range(SPLITS):
        weight = tl.exp(tl.load(PART_M + b * sm_b + h * sm_h + s * sm_s + offs_g, mask=keep, other=float("-inf")) - m)
        total += weight * tl.load(PART_L + b * sm_b + h * sm_h + s * sm_s + offs_g, mask=keep, other=0.0)
        part = tl.load(
            PART_O + b * so_b + h * so_h + s * so_s + offs_g[:, None] * so_g + offs_d[None, :],
            mask=keep[:, None],
            other=0.0,
        )
        acc += weight[:, None] * part
    total = tl.where(keep, total, 1.0)
    out = acc / total[:, None]
    tl.store(
        OUT + b * sout_b + h * sout_h + offs_g[:, None] * sout_g + offs_d[None, :],
        out.to(OUT.dtype.element_ty),
        mask=keep[:, None],
    )


def decode_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    lengths: torch.Tensor,
    bucket: int,
    scale: float,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
) -> torch.Tensor:
    """q (B, kv, group, d) over the first B rows of a layer's slab keys/values (rows >= B, kv, max_len, d),
    positions [0, lengths[b]] of row b (lengths (B,) long, < bucket): -> (B, kv, group, d). With
    cos/sin (B, rot), q is the raw projection and is rotated first."""
    batch, kv, group, dim = q.shape
    splits = triton.cdiv(bucket, SPLIT)
    group_pad = max(16, triton.next_power_of_2(group))  # tl.dot needs 16 rows at least
    part_o = torch.empty(batch, kv, splits, group, dim, dtype=torch.float32, device=q.device)
    part_m = torch.empty(batch, kv, splits, group, dtype=torch.float32, device=q.device)
    part_l = torch.empty_like(part_m)
    out = torch.empty_like(q)
    assert dim == triton.next_power_of_2(dim), "head_dim must be a power of two"
    for t in (q, keys, values):
        assert t.stride(-1) == 1, "the head dimension must be contiguous"
    cos, sin, rot = _rotary_args(cos, sin, q)
    _split_kernel[(batch, kv, splits)](
        q,
        keys,
        values,
        lengths,
        cos,
        sin,
        part_o,
        part_m,
        part_l,
        q.stride(0),
        q.stride(1),
        q.stride(2),
        keys.stride(0),
        keys.stride(1),
        keys.stride(2),
        values.stride(0),
        values.stride(1),
        values.stride(2),
        cos.stride(0),
        part_o.stride(0),
        part_o.stride(1),
        part_o.stride(2),
        part_o.stride(3),
        part_m.stride(0),
        part_m.stride(1),
        part_m.stride(2),
        scale,
        G=group,
        G_PAD=group_pad,
        D=dim,
        ROT=rot,
        SPLIT_N=SPLIT,
        BLOCK=BLOCK_N,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # float32 stays float32 (TF32 is Triton's default)
    )
    _merge_kernel[(batch, kv)](
        part_o,
        part_m,
        part_l,
        out,
        part_o.stride(0),
        part_o.stride(1),
        part_o.stride(2),
        part_o.stride(3),
        part_m.stride(0),
        part_m.stride(1),
        part_m.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        SPLITS=splits,
        G=group,
        G_PAD=group_pad,
        D=dim,
    )
    return out


def _rotary_args(cos, sin, like: torch.Tensor):
    """(cos, sin, rotated dimensions) for the kernels; 0 dimensions (and a dummy row) without rotary."""
    if cos is None:
        dummy = torch.zeros(1, 1, dtype=like.dtype, device=like.device)
        return dummy, dummy, 0
    assert cos.shape == sin.shape and cos.stride() == sin.stride() and cos.stride(-1) == 1
    assert cos.shape[-1] % 2 == 0, "interleaved rotary pairs whole dimensions"
    return cos, sin, cos.shape[-1]


@triton.jit
def _write_kernel(
    K_NEW, V_NEW, K, V, LENGTHS, COS, SIN, sn_b, sn_h, sk_b, sk_h, sk_n, sc_b, D: tl.constexpr, ROT: tl.constexpr
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs = tl.arange(0, D)
    at = tl.load(LENGTHS + b)
    k_at = K_NEW + b * sn_b + h * sn_h
    k = tl.load(k_at + offs)
    if ROT > 0:
        k = _rotate(k, tl.load(k_at + (offs ^ 1)), COS, SIN, b, sc_b, offs, ROT)
    tl.store(K + b * sk_b + h * sk_h + at * sk_n + offs, k.to(K.dtype.element_ty))
    tl.store(V + b * sk_b + h * sk_h + at * sk_n + offs, tl.load(V_NEW + b * sn_b + h * sn_h + offs))


def write_kv(
    keys: torch.Tensor,
    values: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
) -> None:
    """Row b's new key and value (B, kv, d) into slot b of a layer's slab (slots, kv, max_len, d) at
    lengths[b]; with cos/sin (B, rot), k is the raw projection and is rotated as it is written."""
    batch, kv, dim = k.shape
    if k.stride() != v.stride() or k.stride(-1) != 1:  # views of one QKV output share their strides: no copy
        k, v = k.contiguous(), v.contiguous()
    assert keys.stride() == values.stride() and keys.stride(-1) == 1
    cos, sin, rot = _rotary_args(cos, sin, k)
    _write_kernel[(batch, kv)](
        k,
        v,
        keys,
        values,
        lengths,
        cos,
        sin,
        k.stride(0),
        k.stride(1),
        keys.stride(0),
        keys.stride(1),
        keys.stride(2),
        cos.stride(0),
        D=dim,
        ROT=rot,
    )
