"""`engine/decode_matmuls.py`: each decode product through cuBLAS or the Triton GEMV, forced or measured. On the
CPU under Triton's interpreter (tests/triton_interpreter.py), with a stand-in for the GPU timer: it runs the
call it is given, sees whether a GEMV kernel was launched, and answers a seeded random time."""

from __future__ import annotations

from tests.triton_interpreter import run_interpreted

PRELUDE = """
    import random
    import torch
    import torch.nn.functional as F
    from glm_vision.engine import gemv
    from glm_vision.engine.decode_matmuls import CUBLAS, TRITON, DecodeMatmuls

    launched = []
    launch = gemv._launch
    gemv._launch = lambda *args, **kwargs: (launched.append(1), launch(*args, **kwargs))[1]

    def way_of(call):
        before = len(launched)
        result = call()
        return (TRITON if len(launched) > before else CUBLAS), result

    rng, timed = random.Random(3), []

    def timer(call):
        way, _ = way_of(call)
        ms = rng.random()
        timed.append((way, ms))
        return ms

    g = torch.Generator().manual_seed(0)
    n, k = 40, 96
    w = torch.randn(2 * n, k, generator=g) / k ** 0.5
    b = torch.randn(n, generator=g)

    def close(got, want):
        return (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()

    def products(mm, x):
        \"\"\"(name, call, reference) for each kind of product the decode step makes.\"\"\"
        logits = torch.full((x.shape[0], 2 * n), float("nan"))
        gate, up = F.linear(x, w).chunk(2, dim=-1)
        return [
            ("bias", lambda: mm.linear(x, w[:n], b), F.linear(x, w[:n], b)),
            ("plain", lambda: mm.linear(x, w[n:]), F.linear(x, w[n:])),
            ("logits", lambda: mm.linear(x, w, out=logits), F.linear(x, w)),
            ("swiglu", lambda: mm.swiglu(x, w), F.silu(gate) * up),
        ]
"""


def test_measured_way_times_each_product_once_and_keeps_the_faster():
    out = run_interpreted(
        PRELUDE
        + """
    mm = DecodeMatmuls("measured", timer=timer)
    inputs = {rows: torch.randn(rows, k, generator=g) for rows in (1, 2, 5)}
    faster = {}
    for rows, x in inputs.items():  # first calls: each product timed both ways, once
        for name, call, want in products(mm, x):
            before = len(timed)
            assert close(call(), want), (name, rows)
            pair = timed[before:]
            assert sorted(way for way, _ in pair) == [CUBLAS, TRITON], (name, rows, pair)
            faster[name, rows] = min(pair, key=lambda timing: timing[1])[0]
    for rows, x in inputs.items():  # later calls: no timing, each the way that was faster
        for name, call, want in products(mm, x):
            before = len(timed)
            way, got = way_of(call)
            assert close(got, want) and len(timed) == before, (name, rows)
            assert way == faster[name, rows], (name, rows, way)
    assert len(mm.choices) == 12 and set(faster.values()) == {CUBLAS, TRITON}  # this seed mixes both ways
    listed = mm.cublas_products()
    assert sum(map(len, listed.values())) == list(mm.choices.values()).count(CUBLAS)
    assert all(rows in (1, 2, 5) and all("x" in product for product in names) for rows, names in listed.items())
    report = mm.measured()  # both timings of every product, in microseconds, for the log
    assert sorted(report) == [1, 2, 5] and all(len(line.split("; ")) == 4 for line in report.values()), report
    for index in range(0, len(timed), 2):  # each product's two timings, one after the other: GEMV / cuBLAS
        rows, ms = (1, 2, 5)[index // 8], dict(timed[index : index + 2])
        assert f"{1000 * ms[TRITON]:.1f} / {1000 * ms[CUBLAS]:.1f}" in report[rows], (rows, ms, report)
    print("measured ok")
"""
    )
    assert "measured ok" in out


def test_forced_ways_never_time_and_never_mix():
    out = run_interpreted(
        PRELUDE
        + """
    for forced in (CUBLAS, TRITON):
        mm = DecodeMatmuls(forced, timer=timer)
        for rows in (1, 3):
            x = torch.randn(rows, k, generator=g)
            for name, call, want in products(mm, x):
                way, got = way_of(call)
                assert way == forced and close(got, want), (forced, name, rows, way)
        assert not mm.choices and not timed and not mm.cublas_products()
    print("forced ok")
"""
    )
    assert "forced ok" in out


def test_measured_way_keeps_the_gemvs_in_pdl_steps_untimed():
    """In a PDL step every product is a GEMV, however the two ways would time alone (a cuBLAS product would
    launch plainly and hold the next kernel back); the same products outside PDL are measured as before."""
    out = run_interpreted(
        PRELUDE
        + """
    mm = DecodeMatmuls("measured", timer=timer)
    x = torch.randn(3, k, generator=g)
    pdl_products = [
        ("bias", lambda: mm.linear(x, w[:n], b, pdl=True), F.linear(x, w[:n], b)),
        ("logits", lambda: mm.linear(x, w, out=torch.empty(3, 2 * n), pdl=True), F.linear(x, w)),
        ("swiglu", lambda: mm.swiglu(x, w, pdl=True), products(mm, x)[3][2]),
    ]
    for name, call, want in pdl_products:
        way, got = way_of(call)
        assert way == TRITON and close(got, want), (name, way)
    assert not mm.timings and not timed
    cublas_faster = DecodeMatmuls("measured", timer=lambda call: 1.0 if way_of(call)[0] == TRITON else 0.5)
    cublas_faster.swiglu(x, w)  # timed both ways
    assert way_of(lambda: cublas_faster.swiglu(x, w))[0] == CUBLAS  # outside PDL the timings choose
    assert way_of(lambda: cublas_faster.swiglu(x, w, pdl=True))[0] == TRITON
    print("pdl ok")
"""
    )
    assert "pdl ok" in out
