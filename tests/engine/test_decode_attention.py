"""`--decode-attention triton`: the split-K Triton kernels compute what the default decode attention
does, and the engine decodes the same greedy tokens with them. Triton runs on the CPU here through
its interpreter (`TRITON_INTERPRET=1`, which must be set before Triton is imported: a subprocess).
The interpreter's `tl.dot` mishandles bfloat16, so the kernels are checked in float32 and float16."""

from __future__ import annotations

import pytest

from tests.triton_interpreter import run_interpreted


def test_split_k_kernels_equal_the_default_attention():
    out = run_interpreted("""
        import torch
        from glm_vision.engine.decode_attention import _COUNTERS, Tuning, decode_attention
        from glm_vision.engine.layer_math import attend

        VARIANTS = (Tuning(64, merge_in_split=True), Tuning(256, block=32, merge_in_split=True),
                    # rows in equal pieces: merged by the merge kernel, by the last piece, and (short rows) more pieces than blocks
                    Tuning(64, pieces=3), Tuning(64, block=32, pieces=5, merge_in_split=True),
                    Tuning(64, block=32, pieces=12, merge_chunk=4))
        g = torch.Generator().manual_seed(0)
        cases = [(3, 2, 16, 32, 1024, 1024, torch.float32, 1e-5), (3, 2, 2, 16, 700, 512, torch.float32, 1e-5),
                 (4, 2, 16, 32, 2048, 2048, torch.float16, 2e-3)]
        for batch, kv, group, dim, max_len, bucket, dtype, tol in cases:
            keys = torch.randn(batch + 1, kv, max_len, dim, generator=g).to(dtype)
            values = torch.randn(batch + 1, kv, max_len, dim, generator=g).to(dtype)
            q = torch.randn(batch, kv, group, dim, generator=g).to(dtype)
            lengths = torch.randint(0, bucket, (batch,), generator=g)
            lengths[0] = 0  # one key only
            lengths[-1] = max_len - 1  # a padding row where max_len > bucket: it attends to key 0 only
            valid = torch.arange(bucket)[None, :] <= torch.where(lengths < bucket, lengths, 0)[:, None]
            ref = attend(q.float(), keys[:batch, :, :bucket].float(), values[:batch, :, :bucket].float(), valid, dim ** -0.5)
            # the default split, short ones (many splits, merged in several chunks; also a few dimensions a merge
            # program, and every split in one chunk) and one long split
            short = (Tuning(64), Tuning(32, block=32, merge_chunk=4, merge_dim=8), Tuning(64, merge_chunk=64))
            long = (Tuning(1024, block=32, warps=8, stages=2), Tuning(1024, block=32, merge_in_split=True))
            for tuned in (None, *short, *long, *VARIANTS):
                out = decode_attention(q, keys, values, lengths, bucket, dim ** -0.5, tuned=tuned)
                err = (out.float() - ref).abs().max().item()
                assert out.dtype == dtype and out.shape == q.shape
                assert err < tol, (batch, group, dtype, tuned, err)
            # one key fewer in the middle rows (the padding row and the one-key row aside) is caught
            wrong = attend(q.float(), keys[:batch, :, :bucket].float(), values[:batch, :, :bucket].float(),
                            torch.arange(bucket)[None, :] < lengths[:, None], dim ** -0.5)
            assert (out.float() - wrong)[1:-1].abs().max().item() > 10 * tol
        # the new token's key and value written on the way, by the program whose split holds their position
        slab_k, slab_v = torch.randn(4, 2, 1024, 16, generator=g), torch.randn(4, 2, 1024, 16, generator=g)
        q = torch.randn(3, 2, 4, 16, generator=g)
        k, v = torch.randn(3, 2, 16, generator=g), torch.randn(3, 2, 16, generator=g)
        at = torch.tensor([5, 0, 1023])  # inside a split, the first position, the last of the bucket
        want_k, want_v = slab_k.clone(), slab_v.clone()
        want_k[torch.arange(3), :, at], want_v[torch.arange(3), :, at] = k, v
        valid = torch.arange(1024)[None, :] <= at[:, None]
        ref = attend(q, want_k[:3], want_v[:3], valid, 0.25)
        for tuned in (Tuning(64), Tuning(256), *VARIANTS):
            keys, values = slab_k.clone(), slab_v.clone()
            out = decode_attention(q, keys, values, at, 1024, 0.25, tuned=tuned, new=(k, v))
            assert torch.equal(keys, want_k) and torch.equal(values, want_v), tuned
            assert (out - ref).abs().max() < 1e-5, (tuned, (out - ref).abs().max())
        assert not _COUNTERS[torch.device("cpu")].any()  # each group's last split zeroed its counter again
        print("kernels ok")
    """)
    assert "kernels ok" in out


def test_kernels_rotate_query_and_key_as_the_default_path_does():
    """Given the raw QKV projection and the rows' cos/sin, the split kernel writes the key the default
    path's rotary makes, and rotates the query the same way."""
    out = run_interpreted("""
        import torch
        from glm_vision.engine.decode_attention import Tuning, decode_attention
        from glm_vision.engine.layer_math import attend, pre_attention, qkv_projection

        g = torch.Generator().manual_seed(1)
        batch, kv, group, dim, rot, max_len, hidden = 3, 2, 4, 32, 16, 512, 24
        heads = kv * group
        x = torch.randn(batch, hidden, generator=g)
        w = torch.randn((heads + 2 * kv) * dim, hidden, generator=g) * 0.3
        b = torch.randn((heads + 2 * kv) * dim, generator=g) * 0.1
        lengths = torch.tensor([3, 70, 250])
        inv_freq = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
        freqs = (lengths.float()[:, None] * inv_freq).repeat_interleave(2, dim=-1)
        cos, sin = freqs.cos(), freqs.sin()
        q_ref, k_ref, v_ref = pre_attention(x, w, b, cos, sin, heads, kv, dim)
        q_raw, k_raw, v_raw = qkv_projection(x, w, b, heads, kv, dim)  # views into one output, not rotated
        keys = torch.randn(batch + 1, kv, max_len, dim, generator=g)
        values = torch.randn(batch + 1, kv, max_len, dim, generator=g)
        want_k, want_v = keys.clone(), values.clone()
        want_k[torch.arange(batch), :, lengths], want_v[torch.arange(batch), :, lengths] = k_ref, v_ref
        valid = torch.arange(max_len)[None, :] <= lengths[:, None]
        ref = attend(q_ref.reshape(batch, kv, group, dim), want_k[:batch], want_v[:batch], valid, dim ** -0.5)
        q_raw = q_raw.view(batch, kv, group, dim)
        slab = keys.clone(), values.clone()
        for tuned in (None, Tuning(64, merge_in_split=True)):
            keys, values = slab[0].clone(), slab[1].clone()
            got = decode_attention(q_raw, keys, values, lengths, max_len, dim ** -0.5, cos, sin, tuned, (k_raw, v_raw))
            assert (keys - want_k).abs().max() < 1e-5 and torch.equal(values, want_v)
            assert (got - ref).abs().max() < 1e-4, (tuned, (got - ref).abs().max())
        unrotated = decode_attention(q_raw, keys, values, lengths, max_len, dim ** -0.5)
        assert (unrotated - ref).abs().max() > 1e-2  # the query's rotation matters in this case
        print("rotary ok")
    """)
    assert "rotary ok" in out


def test_split_gives_every_sm_work_with_the_fewest_partial_sums():
    """The split grows with the batch while the grid still has about two programs per SM (fewer partial
    sums to merge); at a few rows, where 256-key splits give fewer, it shrinks (to 64 keys at most) until
    every SM has about one ("about": 7/8 of it). Many splits are merged in one pass, by twice the programs."""
    import itertools
    import math

    from glm_vision.engine.decode_attention import fixed_tuning as tuning

    def programs(batch, bucket, split):  # (row, KV head, split)
        return batch * 2 * math.ceil(bucket / split)

    def about(count, wanted):
        return 8 * count >= 7 * wanted

    batches = (1, 2, 4, 8, 16, 32, 64, 128)
    for sms, bucket in itertools.product((132, 108, 46), (1024, 4096, 5120, 8192, 16384, 32768)):  # H200, A100, 4080
        picks = [tuning(batch, 2, bucket, sms) for batch in batches]
        splits = [t.split for t in picks]
        assert splits == sorted(splits) and min(splits) >= 64, (bucket, splits)
        for batch, t in zip(batches, picks, strict=True):
            assert t.split % t.block == 0
            if t.split > 256:
                assert about(programs(batch, bucket, t.split), 2 * sms)
            if 256 <= t.split < 1024:  # the next longer split would have left SMs idle
                assert not about(programs(batch, bucket, 2 * t.split), 2 * sms), (batch, bucket)
            if t.split < 256:  # even about one program an SM needs shorter splits
                assert not about(programs(batch, bucket, 2 * t.split), sms), (batch, bucket)
            splits_to_merge = math.ceil(bucket / t.split)
            assert t.merge_in_split == (splits_to_merge <= 6), (batch, bucket, t)
            if splits_to_merge > 16:
                assert t.merge_chunk >= min(128, splits_to_merge) and t.merge_dim == 64
    # bench_decode_attention's best on the H200 (bench/RESULTS.md, fourteenth session)
    assert [tuning(batch, 2, 5120).split for batch in (1, 2, 4, 8, 16, 32)] == [64, 128, 256, 256, 512, 1024]
    assert [tuning(batch, 2, 4096).split for batch in (2, 16, 32)] == [128, 512, 1024]
    assert [tuning(batch, 2, 16384).split for batch in (1, 4, 8)] == [256, 512, 1024]
    # eighteenth session: the last split merges at 32 and 64 rows of ~4k keys (5 splits), not at 16 (10)
    assert [tuning(batch, 2, 5120).merge_in_split for batch in (8, 16, 32, 64)] == [False, False, True, True]


def test_many_rows_take_equal_pieces_where_fixed_splits_give_more_than_two_programs_an_sm():
    """`tuning`: from 16 rows, equal pieces where the fixed splits (powers of two long) would give more
    than two programs an SM; the fixed splits otherwise, and always below 16 rows."""
    import math

    from glm_vision.engine.decode_attention import even_tuning, fixed_tuning, tuning

    for sms in (132, 46):
        for batch in (1, 8, 15, 16, 32, 48, 64, 128):
            for bucket in (1024, 3072, 4096, 5120, 7168, 8192, 32768):
                picked, fixed = tuning(batch, 2, bucket, sms), fixed_tuning(batch, 2, bucket, sms)
                many = batch * 2 * math.ceil(bucket / fixed.split) > 2 * sms
                assert picked == (even_tuning(batch, 2, sms) if batch >= 16 and many else fixed), (batch, bucket)
    # the H200 (132 SMs): fixed at 16 and 32 rows of a 4,096 bucket, pieces at 48 and 64; at 16 and 32 rows
    # of a 7,168 bucket (the fixed: 14 and 7 splits a row) pieces; 8 rows keep their fixed splits
    assert [tuning(batch, 2, 4096).pieces for batch in (8, 16, 32, 48, 64)] == [0, 0, 0, 2, 2]
    assert [tuning(batch, 2, 7168).pieces for batch in (8, 16, 32)] == [0, 8, 4]


def test_even_pieces_give_about_two_programs_an_sm_at_most():
    """`even_tuning`: the most pieces a row (a power of two) whose programs, one per (row, KV head, piece),
    stay within two an SM; at least one piece; the last piece merges where a row has few."""
    from glm_vision.engine.decode_attention import MERGE_IN_SPLIT_MAX, even_tuning

    for sms in (132, 108, 46):
        for batch in (1, 8, 16, 32, 64, 128, 512):
            t = even_tuning(batch, 2, sms)
            assert t.pieces >= 1 and t.pieces & (t.pieces - 1) == 0, (batch, t)
            assert batch * 2 * t.pieces <= 2 * sms or t.pieces == 1, (batch, sms, t)
            assert batch * 2 * 2 * t.pieces > 2 * sms, (batch, sms, t)  # twice the pieces would be too many
            assert t.merge_in_split == (t.pieces <= MERGE_IN_SPLIT_MAX)
    # the H200 kernel bench's fastest pieces at 16, 32 and 64 rows of 3,300-15,000 keys (twenty-sixth session)
    assert [even_tuning(batch, 2).pieces for batch in (16, 32, 64)] == [8, 4, 2]


def test_rows_riding_in_a_prefill_pass_run_their_decode_graphs_kernel_variants(settings, monkeypatch):
    """Rows riding in a prefill pass (any count) tune the attention kernels, and choose PDL, as the decode
    graph of their padded batch does: the kernel variants the warm-up compiled. On the H200 12 riding rows
    once compiled a merge variant of their own (256-key splits) in a user's step, where the 16-row graphs
    use 512-key splits."""
    from dataclasses import replace

    import torch

    from glm_vision.engine import Engine
    from glm_vision.engine import decode_attention as kernels

    class Tuned(Exception):
        """Raised once the kernels' tuning is chosen: nothing is launched (no Triton on the CPU here)."""

    tuned_for, pdl_for = [], []

    def record(batch, kv, bucket, sms=kernels.DEFAULT_SMS):
        tuned_for.append(batch)
        raise Tuned

    engine = Engine.load(replace(settings, max_batch=16, decode_attention="triton"))
    try:
        forward = engine.runner.forward
        forward.pdl = True  # as on a Hopper GPU
        attention = forward.split_k_attention
        forward.split_k_attention = lambda *args, **kwargs: (pdl_for.append(kwargs["pdl"]), attention(*args, **kwargs))[
            1
        ]
        monkeypatch.setattr(kernels, "tuning", record)
        width, kv_width = forward.n_heads * forward.head_dim, forward.n_kv * forward.head_dim
        counts = (1, 3, 8, 12, 16)
        for rows in counts:
            q, k, v = torch.zeros(rows, width), torch.zeros(rows, kv_width), torch.zeros(rows, kv_width)
            cos = sin = torch.zeros(rows, forward.head_dim)
            with pytest.raises(Tuned):
                forward.row_attention(0, q, k, v, torch.full((rows,), 4000), 4096, cos, sin)
        assert [forward.graph_batch(rows) for rows in counts] == [1, 4, 8, 16, 16]
        assert tuned_for == [1, 4, 8, 16, 16]
        assert pdl_for == [True, True, True, False, False]
    finally:
        engine.shutdown()
    monkeypatch.undo()
    assert kernels.tuning(12, 2, 4096) != kernels.tuning(16, 2, 4096)  # what 12 rows of their own would compile
