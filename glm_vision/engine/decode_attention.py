"""Decode attention as two Triton kernels (split-K "flash decoding"), the new token's key and value
written into the slab on the way: the decode step's attention on CUDA (`--decode-attention auto`;
`compiled`, matmul, masked softmax, matmul, is the CPU's and the reference).

One kernel reads each row's keys in splits of `tuning(...).split` positions (longer splits at larger
batches: enough programs for every SM either way), one program per (row, KV head, split), with the
KV head's query group as one matrix (GQA: the keys are read once for the whole group), and a second
kernel merges the splits' partial softmax sums, one program per query head (or half of one), or the
split kernel's last program of each query group merges them itself (`Tuning.merge_in_split`). The
valid keys of row b are [0, lengths[b]]; splits past that return at once, and the merge stops
before them. A padding row of a captured batch (its length past the bucket) attends to its first key
only: it used to read the whole bucket, at 20 rows in a 32-row graph ~60 % more keys than the rows
themselves. `Tuning.pieces` cuts each row into equal pieces instead, as many as give two programs an SM
(`even_tuning`; `tuning` picks them where the fixed splits, powers of two long, would give more).
The kernels: decode_attention_kernels.py.

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

from .decode_attention_kernels import _merge_kernel, _split_kernel
from .pdl import launch_options

PROGRAMS_PER_SM = 2
PIECES_FROM_ROWS = 16  # equal pieces measured from 16 rows up; fewer rows keep the splits they were tuned with
MIN_SPLIT = 64  # shorter splits lost at every batch size (bench_decode_attention)
MERGE_IN_SPLIT_MAX = 6  # splits a row whose last split merges them beats the merge kernel (~0.6 us a split)
DEFAULT_SMS = 132  # an H200's, where there is no GPU to ask (Triton's interpreter)


@dataclass(frozen=True)
class Tuning:
    split: int  # key positions per program
    block: int = 64  # key positions per inner iteration
    warps: int = 4
    stages: int = 3
    merge_chunk: int = 16  # splits the merge kernel reads at once
    merge_dim: int = 128  # head dimensions per merge program
    merge_in_split: bool = False  # the last split of each query group merges (no merge kernel)
    pieces: int = 0  # > 0: each row's keys cut into this many equal splits of whole blocks (`split` unused)

    def splits(self, bucket: int) -> int:
        return self.pieces or triton.cdiv(bucket, self.split)


def tuning(batch: int, kv: int, bucket: int, sms: int = DEFAULT_SMS) -> Tuning:
    """`fixed_tuning`'s splits, or from PIECES_FROM_ROWS rows `even_tuning`'s equal pieces where the fixed
    splits give more than PROGRAMS_PER_SM programs an SM (their lengths are powers of two: at 64 rows of a
    4,096 bucket four 1,024-key splits a row, ~3.9 programs an SM; at 16 rows of a 7,168 bucket fourteen
    512-key splits, ~3.4). H200, twenty-sixth session, rows of context - [0, 40] keys, us a layer
    (bench_decode_attention), pieces against fixed: 3,300 keys 48 rows 48.9 / 51.1, 64 rows 57.1 / 61.8;
    7,000 keys 16 rows 39.0 / 49.1, 32 rows 64.0 / 83.5, 64 rows 114.6 / 164.8; 15,000 keys 16 rows 68.7 / 83.9,
    32 rows 123.0 / 140.3. The decode step (profile_decode, one process): 3,300 keys 48 rows 7.62 / 7.96 ms,
    64 rows 8.03 / 8.23; 7,000 keys 32 rows 8.01 / 8.66. Where the fixed splits give two programs an SM
    (16 and 32 rows of a 4,096 bucket) the pieces were no faster: 24.4 / 23.9 and 34.6 / 34.0 us, steps
    6.06 / 6.07 and 6.69 / 6.67 ms."""
    fixed = fixed_tuning(batch, kv, bucket, sms)
    if batch >= PIECES_FROM_ROWS and batch * kv * fixed.splits(bucket) > PROGRAMS_PER_SM * sms:
        return even_tuning(batch, kv, sms)
    return fixed


def fixed_tuning(batch: int, kv: int, bucket: int, sms: int = DEFAULT_SMS) -> Tuning:
    """`split_length`'s split; many splits (small batches) merged in one pass, by twice the programs.
    bench_decode_attention on the H200, split + merge a layer: 4,096 keys a row (bucket 5,120): 1 row
    9.8 us (64-key splits merged 128 at a time, 64 dimensions a program; 256 merged 16 at a time: 12.8),
    2 rows 11.9 (128; 256: 13.7), 4 rows 15.2 (256; merged 16 at a time: 16.3), 8 rows 20.6 (256),
    16 rows 28.9 (512), 32 rows 44.7 (1,024), 64 rows 80.1 (1,024 with 32-key blocks); 4,000 keys
    (bucket 4,096): 16 rows 26.3 (512; 256: 33.2), 32 rows 42.8 (1,024; 512: 51.2); 16,000 keys: 1 row
    13.6 (256), 4 rows 26.1 (512; 256: 35.8), 8 rows 40.2 (1,024; 512: 50.1).
    Merged by the last split where a row has at most MERGE_IN_SPLIT_MAX splits (bucket 5,120: 32 rows 42.1
    against 45.1 us, 64 rows 74.5 against 80.0; 16 rows, 10 splits: 29.5 against 28.5; 8 rows, 20: 25.4
    against 19.7, eighteenth session)."""
    split = split_length(batch, kv, bucket, sms)
    splits = triton.cdiv(bucket, split)
    block = 32 if batch * kv >= 128 else 64
    if splits <= MERGE_IN_SPLIT_MAX:
        return Tuning(split, block, merge_in_split=True)
    if splits <= 16:
        return Tuning(split, block)
    return Tuning(split, block, merge_chunk=min(128, triton.next_power_of_2(splits)), merge_dim=64)


def even_tuning(batch: int, kv: int, sms: int = DEFAULT_SMS) -> Tuning:
    """Each row in equal pieces (`Tuning.pieces`) of 64-key blocks: the most (a power of two) that keep the
    programs within two an SM. On the H200 its picks (8 / 4 / 2 pieces at 16 / 32 / 64 rows) were the fastest
    pieces at 3,300, 7,000 and 15,000 keys a row; at 48 rows (2 pieces) within 4 % of 4 pieces of 32-key
    blocks (bench_decode_attention, twenty-sixth session). Where `tuning` picks them: see there."""
    pieces = max(1, triton.next_power_of_2(PROGRAMS_PER_SM * sms // (batch * kv) + 1) // 2)
    return Tuning(64, 64, pieces=pieces, merge_in_split=pieces <= MERGE_IN_SPLIT_MAX)


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
    splits = tuned.splits(bucket)
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
    counters = _counters(q.device, batch * kv) if tuned.merge_in_split else part_m
    _split_kernel[(batch, kv, splits)](
        q, keys, values, new_k, new_v, lengths, cos, sin, part_o, part_m, part_l, out, counters,
        bucket, splits,
        *q.stride()[:3], *keys.stride()[:3], *values.stride()[:3], *new_k.stride()[:2], cos.stride(0),
        *part_o.stride()[:4], *part_m.stride()[:3], *out.stride()[:3],
        scale,
        G=group,
        G_PAD=max(16, triton.next_power_of_2(group)),  # tl.dot needs 16 rows at least
        D=dim,
        ROT=rot,
        SPLIT_N=tuned.split,
        BLOCK=tuned.block,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # float32 stays float32 (TF32 is Triton's default)
        WRITE=new is not None,
        PDL=pdl,
        MERGE_IN_SPLIT=tuned.merge_in_split,
        SPLITS_PAD=triton.next_power_of_2(splits),
        EVEN=tuned.pieces > 0,
        num_warps=tuned.warps,
        num_stages=tuned.stages,
        **launch_options(pdl),
    )  # fmt: skip
    if not tuned.merge_in_split:
        merge_dim = min(tuned.merge_dim, dim)
        _merge_kernel[(batch, kv, group * (dim // merge_dim))](
            part_o, part_m, part_l, out, lengths, bucket, splits,
            *part_o.stride()[:4], *part_m.stride()[:3], *out.stride()[:3],
            SPLIT_N=tuned.split,
            BLOCK=tuned.block,
            EVEN=tuned.pieces > 0,
            D=dim,
            D_BLOCK=merge_dim,
            CHUNK=tuned.merge_chunk,
            PDL=pdl,
            **launch_options(pdl),
        )  # fmt: skip
    return out


_COUNTERS: dict[torch.device, torch.Tensor] = {}
COUNTERS = 1 << 16  # (row, KV head) query groups a call may have


def _counters(device: torch.device, groups: int) -> torch.Tensor:
    """The device's zeroed done-split counters, one per query group, for `merge_in_split`. Each group's
    last split zeroes its counter again, so one set serves every call on the device, in turn (the calls of
    a decode step run one after another on one stream). Made outside CUDA graph capture: a graph replays
    its kernels, not the zeroing."""
    assert groups <= COUNTERS, f"{groups} query groups; the counters hold {COUNTERS}"
    if device not in _COUNTERS:
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        assert not capturing, "run the attention once before capturing it"
        _COUNTERS[device] = torch.zeros(COUNTERS, dtype=torch.int32, device=device)
    return _COUNTERS[device]


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
