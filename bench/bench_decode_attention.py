"""The decode step's attention (`engine/decode_attention.py`) alone: time per layer for each batch size
at a given context, for the split and tiles `tuning` picks and for the alternatives around them.

    python -m bench.bench_decode_attention [--batch 1 8 32 64] [--context 4096] [--spread 0 | --short N]
        [--flex] [--variants | --even]

Every row of the batch holds `context` keys of its own (GLM-4.6V-Flash's 2 KV heads x 128 dimensions,
16 query heads a KV head, the rows' query rotated by the kernel as in the engine). Time per call: the
split kernel + the merge kernel replayed in a CUDA graph after an L2-evicting read (`graph_timer.graph_time`),
as the decode step runs them; GB/s counts the keys and values read.

`--variants` times the merge in the split kernel (`Tuning.merge_in_split`) instead: on and off for
`tuning`'s pick, and on at every split length.

`--even` times each row cut into equal pieces (`Tuning.pieces`) instead: `even_tuning`'s pick and the piece
counts around it, against the fixed splits (`fixed_tuning`).

With `--spread`, the rows' lengths differ a little, as under load, and stop short of the bucket's end;
with `--short`, every row but the first is short (one long conversation among short ones).

`--flex` adds torch's FlexAttention (its decoding kernel, compiled) on the same keys for comparison: the
query rotated beforehand and the new token already in the slab (the engine's kernels do both themselves),
its block mask built once outside the timing (the engine would build one a step).
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace

import torch
from triton.runtime.errors import OutOfResources

from bench.timing import graph_time_median
from glm_vision.engine.decode_attention import (
    MERGE_IN_SPLIT_MAX,
    Tuning,
    decode_attention,
    even_tuning,
    fixed_tuning,
    tuning,
)

KV_HEADS, GROUP, DIM, ROT = 2, 16, 128, 64


MERGES = ((16, 128), (64, 32), (128, 32), (128, 64))  # (splits read at once, dimensions a program)
SPLITS = (32, 64, 128, 256, 512, 1024)


def candidates(picked: Tuning, tiles: bool = True) -> list[Tuning]:
    """`tuning`'s pick; every split with each way of merging; with `tiles`, also the tiles around the
    picked split and the short ones (a block never longer than its split)."""
    merged = [
        Tuning(split, min(picked.block, split), picked.warps, picked.stages, chunk, dims)
        for split in SPLITS
        for chunk, dims in MERGES
    ]
    tiled = [
        Tuning(split, block, warps, stages, picked.merge_chunk, picked.merge_dim)
        for split in dict.fromkeys((picked.split, 64, 128))
        for block, warps, stages in itertools.product((32, 64, 128), (4, 8), (2, 3, 4))
        if block <= split and tiles
    ]
    return list(dict.fromkeys([picked, *merged, *tiled]))


def variants(picked: Tuning) -> list[Tuning]:
    """`tuning`'s pick with the merge in the split kernel and without; the merge in the split kernel at
    every split length (a block never longer than its split)."""
    on_pick = [replace(picked, merge_in_split=merge) for merge in (False, True)]
    merged = [replace(picked, split=split, block=min(picked.block, split), merge_in_split=True) for split in SPLITS]
    return list(dict.fromkeys([*on_pick, *merged]))


def even_pieces(picked: Tuning, batch: int, bucket: int) -> list[Tuning]:
    """`tuning`'s pick, the fixed splits, `even_tuning`'s pieces, and 1-16 equal pieces a row in 32- and 64-key
    blocks."""
    pieces = [
        Tuning(64, block, pieces=count, merge_in_split=count <= MERGE_IN_SPLIT_MAX)
        for count in (1, 2, 4, 8, 16)
        for block in (32, 64)
    ]
    fixed = fixed_tuning(batch, KV_HEADS, bucket)
    return list(dict.fromkeys([picked, fixed, even_tuning(batch, KV_HEADS), *pieces]))


def flex_row(batch: int, q, keys, values, lengths, bucket: int, cos, sin, ref, gb: float) -> dict:
    """FlexAttention's time on the rows `measure` made, its output checked against the engine kernels'."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from glm_vision.engine.layer_math import rotary

    heads = KV_HEADS * GROUP
    q_rot, _ = rotary(q.reshape(batch, heads, DIM), q[:, :1, 0], cos, sin)
    q_rot = q_rot.reshape(batch, heads, 1, DIM).contiguous()

    def visible(b, h, q_idx, kv_idx):
        return kv_idx <= lengths[b]

    mask = create_block_mask(visible, B=batch, H=None, Q_LEN=1, KV_LEN=bucket, device=q.device)
    attend = torch.compile(flex_attention, dynamic=False)
    keys, values = keys[:, :, :bucket], values[:, :, :bucket]

    def call():
        return attend(q_rot, keys, values, block_mask=mask, scale=DIM**-0.5, enable_gqa=True)

    out = call().reshape(ref.shape)
    assert (out.float() - ref.float()).abs().max() < 2e-2, "FlexAttention disagrees with the engine's kernels"
    us = 1000 * graph_time_median(call)
    return {"batch": batch, "tuning": "flex_attention", "picked": False, "us": us, "gbs": gb / us * 1e6}


def measure(
    batch: int,
    context: int,
    max_len: int,
    flex=False,
    tiles=True,
    flags=False,
    even=False,
    spread: int = 0,
    short: int | None = None,
) -> list[dict]:
    g = torch.Generator(device="cuda").manual_seed(batch)
    shape = (batch, KV_HEADS, max_len, DIM)
    keys = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
    values = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
    q = torch.randn(batch, KV_HEADS, GROUP, DIM, device="cuda", dtype=torch.bfloat16, generator=g)
    new = tuple(torch.randn(batch, KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    lengths = context - torch.randint(0, spread + 1, (batch,), device="cuda", generator=g)
    if short is not None:
        lengths[1:] = short
    cos, sin = (torch.rand(batch, ROT, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    bucket = min(max_len, (context // 1024 + 1) * 1024)  # forward.TextForward.bucket
    gb = 2 * KV_HEADS * (lengths + 1).sum().item() * DIM * 2 / 1e9
    picked = tuning(batch, KV_HEADS, bucket)
    ref = decode_attention(q, keys, values, lengths, bucket, DIM**-0.5, cos, sin, tuned=Tuning(256), new=new)
    rows = []
    if even:
        tried = even_pieces(picked, batch, bucket)
    else:
        tried = variants(picked) if flags else candidates(picked, tiles)
    for tuned in tried:
        try:
            out = decode_attention(q, keys, values, lengths, bucket, DIM**-0.5, cos, sin, tuned=tuned, new=new)
        except OutOfResources as exc:  # a tile and stage count this card's shared memory cannot hold
            print(f"skipped {tuned}: {exc}", flush=True)
            continue
        assert (out.float() - ref.float()).abs().max() < 2e-2, tuned

        def call(tuned=tuned):  # as the engine calls it: the new key and value written on the way
            decode_attention(q, keys, values, lengths, bucket, DIM**-0.5, cos, sin, tuned=tuned, new=new)

        us = 1000 * graph_time_median(call)
        again = decode_attention(q, keys, values, lengths, bucket, DIM**-0.5, cos, sin, tuned=tuned, new=new)
        assert torch.equal(again, out), f"{tuned}: another answer after the timed replays"
        rows.append({"batch": batch, "tuning": tuned, "picked": tuned == picked, "us": us, "gbs": gb / us * 1e6})
    if flex:
        rows.append(flex_row(batch, q, keys, values, lengths, bucket, cos, sin, ref, gb))
    return rows


def report(rows: list[dict]) -> None:
    print("| batch | split | block | warps | stages | merge chunk | merge dims | merge in split | us | GB/s | |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["batch"], r["us"])):
        t = r["tuning"]
        mark = "tuning()" if r["picked"] else ""
        tiles = (
            f"{t} | | | | | |"
            if isinstance(t, str)
            else f"{t.split} | {t.block} | {t.warps} | {t.stages} | {t.merge_chunk} | {t.merge_dim} | "
            f"{'yes' if t.merge_in_split else ''}{f', {t.pieces} pieces' if t.pieces else ''}"
        )
        print(f"| {r['batch']} | {tiles} | {r['us']:.1f} | {r['gbs']:.0f} | {mark} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--context", type=int, default=4096, help="keys each row attends to")
    parser.add_argument("--max-len", type=int, default=8192, help="slab positions per row")
    parser.add_argument("--flex", action="store_true", help="also time torch's FlexAttention on the same rows")
    parser.add_argument("--splits-only", action="store_true", help="only the splits and merges, not the tiles")
    parser.add_argument("--variants", action="store_true", help="the merge in the split kernel, on and off")
    parser.add_argument("--even", action="store_true", help="rows cut into equal pieces against the fixed splits")
    parser.add_argument("--spread", type=int, default=0, help="rows hold context - [0, spread] keys (random)")
    parser.add_argument("--short", type=int, help="every row but the first holds this many keys")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)
    rows = [
        row
        for batch in args.batch
        for row in measure(
            batch,
            args.context,
            args.max_len,
            args.flex,
            not args.splits_only,
            args.variants,
            args.even,
            args.spread,
            args.short,
        )
    ]
    report(rows)


if __name__ == "__main__":
    main()
