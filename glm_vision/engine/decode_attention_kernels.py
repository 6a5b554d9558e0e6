"""The decode attention's Triton kernels (decode_attention.py launches them and says what they compute).

`_split_kernel`: one program per (row, KV head, split of the row's keys): the KV head's query group
against the split's keys, written out as partial softmax sums (running max, sum, weighted values).
`_merge_kernel`: one program per query head (or part of one): a row's partial sums merged.

MERGE_IN_SPLIT (`Tuning.merge_in_split`, where a row has few splits): no merge kernel. Each split counts
itself done on a per-(row, KV head) counter, and the split that finishes last merges the group's partial
sums itself (then zeroes the counter for the next call): one launch and one kernel boundary fewer a layer.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .pdl import wait_for_previous


@triton.jit
def _rotate(x, partner, COS, SIN, row, sc_b, offs, ROT: tl.constexpr):
    """x rotated at dimensions `offs` (< ROT) with row `row`'s cos/sin; `partner` is x at offs ^ 1."""
    rot = offs < ROT
    c = tl.load(COS + row * sc_b + offs, mask=rot, other=1.0).to(tl.float32)
    s = tl.load(SIN + row * sc_b + offs, mask=rot, other=0.0).to(tl.float32)
    sign = tl.where(offs % 2 == 0, -1.0, 1.0)
    return x.to(tl.float32) * c + sign * partner.to(tl.float32) * s


@triton.jit
def _last_key(length, bucket):
    """The last key a row attends to: `length`, or key 0 for a padding row of a captured batch (its length
    points past the bucket, at the slab's spare position; its answer is thrown away, and it would read the
    whole bucket's keys)."""
    return tl.where(length < bucket, length, 0)


@triton.jit
def _even_span(last, splits, BLOCK: tl.constexpr):
    """EVEN (`Tuning.pieces`): the key positions of a split when the row's keys [0, last] are cut into `splits`
    equal pieces of whole blocks (a row shorter than its bucket leaves no short last split then). Without EVEN a
    split is SPLIT_N positions, a constant (the static `if`s keep it one: a constant trip count)."""
    return tl.cdiv(tl.cdiv(last + 1, splits), BLOCK) * BLOCK


@triton.jit
def _splits_used(last, splits, span):
    """The splits holding a row's keys [0, last]: the ones that store partial sums, and count themselves done."""
    return tl.minimum(last // span + 1, splits)


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
    OUT,
    COUNTERS,
    bucket,
    splits,
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
    sout_b,
    sout_h,
    sout_g,
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
    MERGE_IN_SPLIT: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
    EVEN: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    s = tl.program_id(2)
    wait_for_previous(PDL)
    length = tl.load(LENGTHS + b)
    last = _last_key(length, bucket)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    if EVEN:
        span = _even_span(last, splits, BLOCK)
    else:
        span = SPLIT_N
    start = s * span
    if start <= last:
        if WRITE and length < start + span:  # the new token's split writes its key and value first
            _write_new(
                K_NEW, V_NEW, K, V, COS, SIN, b, h, length, sn_b, sn_h, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sc_b, D, ROT
            )
        q_at = Q + b * sq_b + h * sq_h + offs_g[:, None] * sq_g
        q = tl.load(q_at + offs_d[None, :], mask=offs_g[:, None] < G, other=0.0)
        if ROT > 0:
            partner = tl.load(q_at + (offs_d ^ 1)[None, :], mask=offs_g[:, None] < G, other=0.0)
            q = _rotate(q, partner, COS, SIN, b, sc_b, offs_d[None, :], ROT).to(Q.dtype.element_ty)
        for n0 in range(start, start + span, BLOCK):
            offs_n = n0 + tl.arange(0, BLOCK)
            valid = offs_n <= last  # a split may reach past the bucket, never past `last`
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
        if MERGE_IN_SPLIT:
            used = _splits_used(last, splits, span)
            tl.debug_barrier()  # every thread's partial sums stored before the split counts itself done
            counter = COUNTERS + b * tl.num_programs(1) + h
            if tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == used - 1:  # the last split of the group
                tl.store(counter, 0)
                _merge_group(
                    PART_O, PART_M, PART_L, OUT, b, h, used, so_b, so_h, so_s, so_g, sm_b, sm_h, sm_s,
                    sout_b, sout_h, sout_g, G, G_PAD, D, SPLITS_PAD,
                )  # fmt: skip


@triton.jit
def _merge_group(
    PART_O, PART_M, PART_L, OUT, b, h, used, so_b, so_h, so_s, so_g, sm_b, sm_h, sm_s, sout_b, sout_h, sout_g,
    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, SPLITS_PAD: tl.constexpr,
):  # fmt: skip
    """The `used` splits' partial sums of KV head h's query group in row b merged into OUT, by the program
    of the split that finished last. The partial sums are read from L2 (`.cg`): other SMs wrote them, and
    this SM's L1 may still hold the same addresses from another call."""
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    offs_s = tl.arange(0, SPLITS_PAD)
    keep = (offs_s[:, None] < used) & (offs_g[None, :] < G)
    ml_at = b * sm_b + h * sm_h + offs_s[:, None] * sm_s + offs_g[None, :]
    m_s = tl.load(PART_M + ml_at, mask=keep, other=float("-inf"), cache_modifier=".cg")
    m = tl.max(m_s, 0)
    m = tl.where(m == float("-inf"), 0.0, m)  # the padding query rows
    weight = tl.exp(m_s - m[None, :])  # (split, query head); 0 for splits not used
    total = tl.sum(weight * tl.load(PART_L + ml_at, mask=keep, other=0.0, cache_modifier=".cg"), 0)
    acc = tl.zeros([G_PAD, D], tl.float32)
    o_at = PART_O + b * so_b + h * so_h + offs_g[:, None] * so_g + offs_d[None, :]
    for s in range(0, used):
        weight_s = tl.sum(tl.where(offs_s[:, None] == s, weight, 0.0), 0)
        part = tl.load(o_at + s * so_s, mask=offs_g[:, None] < G, other=0.0, cache_modifier=".cg")
        acc += weight_s[:, None] * part
    total = tl.where(total == 0.0, 1.0, total)
    out = (acc / total[:, None]).to(OUT.dtype.element_ty)
    tl.store(OUT + b * sout_b + h * sout_h + offs_g[:, None] * sout_g + offs_d[None, :], out, mask=offs_g[:, None] < G)


@triton.jit
def _merge_kernel(
    PART_O,
    PART_M,
    PART_L,
    OUT,
    LENGTHS,
    bucket,
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
    BLOCK: tl.constexpr,
    EVEN: tl.constexpr,
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
    last = _last_key(tl.load(LENGTHS + b), bucket)
    if EVEN:
        span = _even_span(last, splits, BLOCK)
    else:
        span = SPLIT_N
    used = _splits_used(last, splits, span)
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
