"""Decode attention as two Triton kernels (split-K "flash decoding"), the new token's key and value
written into the slab on the way: the decode step's attention on CUDA (`--decode-attention auto`;
`compiled`, matmul, masked softmax, matmul, is the CPU's and the reference).

One kernel reads each row's keys in splits of `tuning(...).split` positions (longer splits at larger
batches: enough programs for every SM either way), one program per (row, KV head, split), with the
KV head's query group as one matrix (GQA: the keys are read once for the whole group), and a second
kernel merges the splits' partial softmax sums, one program per query head (or half of one). The
valid keys of row b are [0, lengths[b]]; splits past that return at once, and the merge stops
before them.

Rotary: the QKV projection's raw query and key go in, and the kernels rotate them themselves (GLM's
partial interleaved rotary on the first ROT dimensions: element i pairs with i ^ 1), the key as it is
written and the query as it is loaded, so the two rotary kernels a layer of the default path are gone.
The new token's key and value are written by the split kernel itself (the program whose split holds
their position, before it reads the keys): no kernel of its own for the write.

Tested on the CPU under Triton's interpreter (`TRITON_INTERPRET=1`) against the default path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .pdl import launch_options, wait_for_previous

PROGRAMS_PER_SM = 2
MIN_SPLIT = 64  # shorter splits lost at every batch size (bench_decode_attention)
DEFAULT_SMS = 132  # an H200's, where there is no GPU to ask (Triton's interpreter)


@dataclass(frozen=True)
class Tuning:
    split: int  # key positions per program
    block: int = 64  # key positions per inner iteration
    warps: int = 4
    stages: int = 3
    merge_chunk: int = 16  # splits the merge kernel reads at once
    merge_dim: int = 128  # head dimensions per merge program


def tuning(batch: int, kv: int, bucket: int, sms: int = DEFAULT_SMS) -> Tuning:
    """`split_length`'s split; many splits (small batches) merged in one pass, by twice the programs.
    bench_decode_attention on the H200, split + merge a layer: 4,096 keys a row (bucket 5,120): 1 row
    9.8 us (64-key splits merged 128 at a time, 64 dimensions a program; 256 merged 16 at a time: 12.8),
    2 rows 11.9 (128; 256: 13.7), 4 rows 15.2 (256; merged 16 at a time: 16.3), 8 rows 20.6 (256),
    16 rows 28.9 (512), 32 rows 44.7 (1,024), 64 rows 80.1 (1,024 with 32-key blocks); 4,000 keys
    (bucket 4,096): 16 rows 26.3 (512; 256: 33.2), 32 rows 42.8 (1,024; 512: 51.2); 16,000 keys: 1 row
    13.6 (256), 4 rows 26.1 (512; 256: 35.8), 8 rows 40.2 (1,024; 512: 50.1)."""
    split = split_length(batch, kv, bucket, sms)
    splits = triton.cdiv(bucket, split)
    block = 32 if batch * kv >= 128 else 64
    if splits <= 16:
        return Tuning(split, block)
    return Tuning(split, block, merge_chunk=min(128, triton.next_power_of_2(splits)), merge_dim=64)


def split_length(batch: int, kv: int, bucket: int, sms: int = DEFAULT_SMS) -> int:
    """The longest split (fewer partial sums to write and merge) that still gives about two programs per
    SM; where even 256-key splits give fewer (a few rows), the longest down to 64 keys that gives about
    one. "About": 7/8 of it will do (a 512-key split's 256 programs beat the 256-key split's 512 on the
    H200's 132 SMs, 4 rows of 16k keys: 25.8 against 32.3 us)."""

    def enough(split: int, per_sm: int) -> bool:  # (row, KV head, split) programs
        return 8 * batch * kv * triton.cdiv(bucket, split) >= 7 * per_sm * sms

    for split in (1024, 512, 256):
        if enough(split, PROGRAMS_PER_SM):
            return split
    return next((split for split in (256, 128) if enough(split, 1)), MIN_SPLIT)


@functools.cache
def _sms(device: torch.device) -> int:
    if device.type != "cuda":
        return DEFAULT_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


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
    K_NEW,
    V_NEW,
    LENGTHS,
    COS,
    SIN,
    PART_O,
    PART_M,
    PART_L,
    bucket,
    sq_b,
    sq_h,
    sq_g,
    sk_b,
    sk_h,
    sk_n,
    sv_b,
    sv_h,
    sv_n,
    sn_b,
    sn_h,
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
    WRITE: tl.constexpr,
    PDL: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    s = tl.program_id(2)
    wait_for_previous(PDL)
    length = tl.load(LENGTHS + b)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    start = s * SPLIT_N
    if start <= length:
        if WRITE and length < start + SPLIT_N:  # the new token's split writes its key and value first
            _write_new(
                K_NEW, V_NEW, K, V, COS, SIN, b, h, length, sn_b, sn_h, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sc_b, D, ROT
            )
        q_at = Q + b * sq_b + h * sq_h + offs_g[:, None] * sq_g
        q = tl.load(q_at + offs_d[None, :], mask=offs_g[:, None] < G, other=0.0)
        if ROT > 0:
            partner = tl.load(q_at + (offs_d ^ 1)[None, :], mask=offs_g[:, None] < G, other=0.0)
            q = _rotate(q, partner, COS, SIN, b, sc_b, offs_d[None, :], ROT).to(Q.dtype.element_ty)
        for n0 in range(start, start + SPLIT_N, BLOCK):
            offs_n = n0 + tl.arange(0, BLOCK)
            valid = (offs_n <= length) & (offs_n < bucket)  # a split may reach past the bucket
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
        keep = offs_g < G  # splits past the row's keys store nothing: the merge stops before them
        o_at = PART_O + b * so_b + h * so_h + s * so_s + offs_g[:, None] * so_g + offs_d[None, :]
        tl.store(o_at, acc, mask=keep[:, None])
        tl.store(PART_M + b * sm_b + h * sm_h + s * sm_s + offs_g, m_i, mask=keep)
        tl.store(PART_L + b * sm_b + h * sm_h + s * sm_s + offs_g, l_i, mask=keep)


@triton.jit
def _merge_kernel(
    PART_O,
    PART_M,
    PART_L,
    OUT,
    LENGTHS,
    splits,
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
    SPLIT_N: tl.constexpr,
    D: tl.constexpr,
    D_BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
    PDL: tl.constexpr,
):
    """D_BLOCK dimensions of one query head (b, h, g) per program: the partial sums of the splits that
    hold row b's keys merged CHUNK splits at a time."""
    wait_for_previous(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    g = tl.program_id(2) // (D // D_BLOCK)
    offs_d = (tl.program_id(2) % (D // D_BLOCK)) * D_BLOCK + tl.arange(0, D_BLOCK)
    offs_s = tl.arange(0, CHUNK)
    used = tl.minimum(tl.load(LENGTHS + b) // SPLIT_N + 1, splits)
    m_at = PART_M + b * sm_b + h * sm_h + g
    l_at = PART_L + b * sm_b + h * sm_h + g
    o_at = PART_O + b * so_b + h * so_h + g * so_g
    m = float("-inf")
    total = 0.0
    acc = tl.zeros([D_BLOCK], tl.float32)
    for s0 in range(0, used, CHUNK):  # split 0 always holds key 0: m is finite after the first chunk
        s = s0 + offs_s
        keep = s < used
        m_s = tl.load(m_at + s * sm_s, mask=keep, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(m_s, 0))
        alpha = tl.exp(m - m_new)
        weight = tl.exp(m_s - m_new)
        total = total * alpha + tl.sum(weight * tl.load(l_at + s * sm_s, mask=keep, other=0.0), 0)
        part = tl.load(o_at + s[:, None] * so_s + offs_d[None, :], mask=keep[:, None], other=0.0)
        acc = acc * alpha + tl.sum(weight[:, None] * part, 0)
        m = m_new
    tl.store(OUT + b * sout_b + h * sout_h + g * sout_g + offs_d, (acc / total).to(OUT.dtype.element_ty))


def decode_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    lengths: torch.Tensor,
    bucket: int,
    scale: float,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
    tuned: Tuning | None = None,
    new: tuple[torch.Tensor, torch.Tensor] | None = None,
    pdl: bool = False,
    tune_as: int | None = None,
) -> torch.Tensor:
    """q (B, kv, group, d) over the first B rows of a layer's slab keys/values (rows >= B, kv, max_len, d),
    positions [0, lengths[b]] of row b (lengths (B,) long, < bucket): -> (B, kv, group, d). With
    cos/sin (B, rot), q is the raw projection and is rotated first. `new`: the rows' new key and
    value (B, kv, d each; the key the raw projection, rotated by cos/sin as it is written), written
    into the slab at lengths[b] before they are read, by the program whose split holds that position.
    `tuned`: the kernel's split and tiles instead of `tuning`'s (benchmarks, tests); `tune_as`: `tuning`'s for
    a batch of this many rows instead of B. `pdl`: both kernels launched with programmatic dependent launch
    (pdl.py)."""
    batch, kv, group, dim = q.shape
    tuned = tuned or tuning(tune_as or batch, kv, bucket, _sms(q.device))
    splits = triton.cdiv(bucket, tuned.split)
    group_pad = max(16, triton.next_power_of_2(group))  # tl.dot needs 16 rows at least
    part_o = torch.empty(batch, kv, splits, group, dim, dtype=torch.float32, device=q.device)
    part_m = torch.empty(batch, kv, splits, group, dtype=torch.float32, device=q.device)
    part_l = torch.empty_like(part_m)
    out = torch.empty_like(q)
    assert dim == triton.next_power_of_2(dim), "head_dim must be a power of two"
    assert tuned.split % tuned.block == 0, "a split is whole blocks (a longer block would read the next split's keys)"
    for t in (q, keys, values):
        assert t.stride(-1) == 1, "the head dimension must be contiguous"
    cos, sin, rot = _rotary_args(cos, sin, q)
    new_k, new_v = _new_token(new, q)
    _split_kernel[(batch, kv, splits)](
        q,
        keys,
        values,
        new_k,
        new_v,
        lengths,
        cos,
        sin,
        part_o,
        part_m,
        part_l,
        bucket,
        q.stride(0),
        q.stride(1),
        q.stride(2),
        keys.stride(0),
        keys.stride(1),
        keys.stride(2),
        values.stride(0),
        values.stride(1),
        values.stride(2),
        new_k.stride(0),
        new_k.stride(1),
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
        SPLIT_N=tuned.split,
        BLOCK=tuned.block,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # float32 stays float32 (TF32 is Triton's default)
        WRITE=new is not None,
        PDL=pdl,
        num_warps=tuned.warps,
        num_stages=tuned.stages,
        **launch_options(pdl),
    )
    merge_dim = min(tuned.merge_dim, dim)
    _merge_kernel[(batch, kv, group * (dim // merge_dim))](
        part_o,
        part_m,
        part_l,
        out,
        lengths,
        splits,
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
        SPLIT_N=tuned.split,
        D=dim,
        D_BLOCK=merge_dim,
        CHUNK=tuned.merge_chunk,
        PDL=pdl,
        **launch_options(pdl),
    )
    return out


def _new_token(new, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The new key and value as the kernel reads them: one set of strides for both (views of one QKV
    output share theirs: no copy); `like` twice where there is nothing to write."""
    if new is None:
        return like, like
    k, v = new
    if k.stride() != v.stride() or k.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    return k, v


def _rotary_args(cos, sin, like: torch.Tensor):
    """(cos, sin, rotated dimensions) for the kernels; 0 dimensions (and a dummy row) without rotary."""
    if cos is None:
        dummy = torch.zeros(1, 1, dtype=like.dtype, device=like.device)
        return dummy, dummy, 0
    assert cos.shape == sin.shape and cos.stride() == sin.stride() and cos.stride(-1) == 1
    assert cos.shape[-1] % 2 == 0, "interleaved rotary pairs whole dimensions"
    return cos, sin, cos.shape[-1]


@triton.jit
def _write_new(
    K_NEW, V_NEW, K, V, COS, SIN, b, h, at, sn_b, sn_h, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sc_b,
    D: tl.constexpr, ROT: tl.constexpr,
):  # fmt: skip
    """Row b's new key (rotated) and value of KV head h into the slab at position `at`, visible to the
    whole program before it reads the keys (a barrier)."""
    offs = tl.arange(0, D)
    k_at = K_NEW + b * sn_b + h * sn_h
    k = tl.load(k_at + offs)
    if ROT > 0:
        k = _rotate(k, tl.load(k_at + (offs ^ 1)), COS, SIN, b, sc_b, offs, ROT)
    tl.store(K + b * sk_b + h * sk_h + at * sk_n + offs, k.to(K.dtype.element_ty))
    tl.store(V + b * sv_b + h * sv_h + at * sv_n + offs, tl.load(V_NEW + b * sn_b + h * sn_h + offs))
    tl.debug_barrier()
