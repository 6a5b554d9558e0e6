"""`--decode-matmul triton`: the GEMV kernels compute F.linear (+ bias) and the MLP's silu(gate) * up,
with every autotune candidate (and every swapped candidate bench_gemv sweeps), and the engine decodes
the same greedy tokens with them. Triton runs on the CPU through its interpreter (tests/triton_interpreter.py). The interpreter's `tl.dot`
mishandles bfloat16, so the tensor-core candidates are checked in float32 and float16; the
single-row candidates (no dot) in bfloat16 too. In float32 the kernels run as launched with PDL
(engine/pdl.py: the first block of weights read before the wait, which the interpreter leaves out)."""

from __future__ import annotations

from tests.triton_interpreter import run_interpreted


def test_every_candidate_computes_linear_and_swiglu():
    out = run_interpreted("""
        import torch
        import torch.nn.functional as F
        from glm_vision.engine import gemv

        g = torch.Generator().manual_seed(0)
        n, k = 40, 3100  # multiples of no block size; K long enough for every candidate's splits
        w = torch.randn(2 * n, k, generator=g) / k ** 0.5
        b = torch.randn(n, generator=g)
        checked = set()
        for dtype, tol, pdl in ((torch.float32, 1e-5, True), (torch.float16, 2e-3, False), (torch.bfloat16, 2e-2, False)):
            for m in (1, 3, 8):
                x = torch.randn(m, k, generator=g)
                xd, wd, bd = x.to(dtype), w.to(dtype), b.to(dtype)
                ref = F.linear(xd.float(), wd[:n].float(), bd.float())
                gate, up = F.linear(xd.float(), wd.float()).chunk(2, dim=-1)
                ref_swiglu = F.silu(gate) * up
                for config in gemv.CONFIGS:
                    if not gemv._fits(config, m, n, k) or (dtype == torch.bfloat16 and config.kwargs["USE_DOT"]):
                        continue
                    y = gemv.linear(xd, wd[:n], bd, config=config, pdl=pdl)
                    assert y.dtype == dtype and y.shape == (m, n)
                    err = (y.float() - ref).abs().max().item() / ref.abs().max().item()
                    assert err < tol, (config, m, dtype, err)
                    s = gemv.swiglu(xd, wd, config=config, pdl=pdl)
                    assert s.shape == (m, n)
                    err = (s.float() - ref_swiglu).abs().max().item() / ref_swiglu.abs().max().item()
                    assert err < tol, (config, m, dtype, "swiglu", err)
                    checked.add(str(config))
        assert len(checked) == len(gemv.CONFIGS)
        # the split-K counters are back to zero after every launch: a second one adds up correctly too
        assert not gemv._counter(torch.device("cpu")).any()

        # the tuned entry point (one candidate under the interpreter), no bias, float32 into `out`
        x16, w16 = torch.randn(3, k, generator=g).half(), w[:n].half()
        logits = torch.full((3, n), float("nan"))
        gemv.linear(x16, w16, out=logits)
        want = F.linear(x16.float(), w16.float())
        assert (logits - want).abs().max() < 2e-3 * want.abs().max()
        # a kernel that drops one block of K would not pass
        assert (F.linear(x16[:, 256:].float(), w16[:, 256:].float()) - want).abs().max() > 2e-2 * want.abs().max()
        print("gemv ok")
    """)
    assert "gemv ok" in out


def test_split_candidates_need_columns_in_every_split():
    """A split-K candidate fits a shape only where its last split holds columns of K (the kernel reads a split's
    first block unmasked where K is whole blocks): 4 splits of 256-column blocks over K = 2,304 would leave the
    last split past the end (768 columns a split)."""
    from glm_vision.engine import gemv

    four = next(c for c in gemv.CONFIGS if c.kwargs["SPLIT_K"] == 4 and c.kwargs["BLOCK_K"] == 256)
    assert not gemv._fits(four, 1, 40, 2304)
    assert gemv._fits(four, 1, 40, 3072) and gemv._fits(four, 1, 40, 4096)
    assert not gemv._fits(four, 1, 40, 1792)  # under two blocks a split on average


def test_auto_keeps_cublas_where_triton_cannot_run(engine):
    """`--decode-matmul auto` (the default) means the GEMVs on CUDA only: on the CPU every decode step goes
    through cuBLAS's path (Triton has no CPU driver: a GEMV there failed every request)."""
    forward = engine.runner.forward
    assert engine.settings.decode_matmul == "auto" and forward.device.type == "cpu"
    assert forward.decode_matmul == "cublas" and forward.matmuls is None


def test_kernel_resources_compiles_a_candidate_for_a_gpu_that_is_not_here():
    """bench/kernel_resources.py: Triton and ptxas compile a candidate for the H200's architecture on this
    CPU machine; a single-row linear kernel fits its registers, the SwiGLU one of the same tile needs more."""
    from bench.kernel_resources import resources
    from glm_vision.engine import gemv

    single_row = next(c for c in gemv.CONFIGS if not c.kwargs["USE_DOT"] and c.kwargs["SPLIT_K"] == 1)
    linear = resources(single_row, swiglu=False, arch=90)
    swiglu = resources(single_row, swiglu=True, arch=90)
    assert 0 < linear["REG"] < swiglu["REG"] <= 255 and linear["STACK"] == 0
