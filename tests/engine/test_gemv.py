"""`--decode-matmul triton`: the GEMV kernels compute F.linear (+ bias) and the MLP's silu(gate) * up,
with every autotune candidate, and the engine decodes the same greedy tokens with them. Triton runs
on the CPU through its interpreter (tests/triton_interpreter.py). The interpreter's `tl.dot`
mishandles bfloat16, so the tensor-core candidates are checked in float32 and float16; the
single-row candidates (no dot) in bfloat16 too."""

from __future__ import annotations

from tests.triton_interpreter import run_interpreted


def test_every_candidate_computes_linear_and_swiglu():
    out = run_interpreted("""
        import torch
        import torch.nn.functional as F
        from glm_vision.engine import gemv

        g = torch.Generator().manual_seed(0)
        n, k = 40, 2100  # multiples of no block size; K long enough for every candidate's splits
        w = torch.randn(2 * n, k, generator=g) / k ** 0.5
        b = torch.randn(n, generator=g)
        checked = set()
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)):
            for m in (1, 3, 8):
                x = torch.randn(m, k, generator=g)
                xd, wd, bd = x.to(dtype), w.to(dtype), b.to(dtype)
                ref = F.linear(xd.float(), wd[:n].float(), bd.float())
                gate, up = F.linear(xd.float(), wd.float()).chunk(2, dim=-1)
                ref_swiglu = F.silu(gate) * up
                for config in gemv.CONFIGS:
                    if not gemv._fits(config, m, n, k) or (dtype == torch.bfloat16 and config.kwargs["USE_DOT"]):
                        continue
                    y = gemv.linear(xd, wd[:n], bd, config=config)
                    assert y.dtype == dtype and y.shape == (m, n)
                    err = (y.float() - ref).abs().max().item() / ref.abs().max().item()
                    assert err < tol, (config, m, dtype, err)
                    s = gemv.swiglu(xd, wd, config=config)
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


def test_auto_keeps_cublas_where_triton_cannot_run(engine):
    """`--decode-matmul auto` (the default) means the GEMVs on CUDA only: on the CPU every decode step goes
    through cuBLAS's path (Triton has no CPU driver: a GEMV there failed every request)."""
    forward = engine.runner.forward
    assert engine.settings.decode_matmul == "auto" and forward.device.type == "cpu"
    assert forward.decode_matmul == "cublas" and forward.gemv is None and forward.gemv_max_batch == 0


def test_kernel_resources_compiles_a_candidate_for_a_gpu_that_is_not_here():
    """bench/kernel_resources.py: Triton and ptxas compile a candidate for the H200's architecture on this
    CPU machine; a single-row linear kernel fits its registers, the SwiGLU one of the same tile needs more."""
    from bench.kernel_resources import resources
    from glm_vision.engine import gemv

    single_row = next(c for c in gemv.CONFIGS if not c.kwargs["USE_DOT"] and c.kwargs["SPLIT_K"] == 1)
    linear = resources(single_row, swiglu=False, arch=90)
    swiglu = resources(single_row, swiglu=True, arch=90)
    assert 0 < linear["REG"] < swiglu["REG"] <= 255 and linear["STACK"] == 0


def test_the_residual_norm_finished_by_the_last_program_equals_residual_norm():
    """`linear_residual_norm`: o_proj's (or down's) product and the residual norm after it in one launch,
    the norm done by the last row block to finish. Every candidate, 1, 3 and 8 rows (8: the norm's rows
    in several column chunks); under the interpreter the other row blocks of Y are only written when the
    last one starts, so a norm taken by any other program, or one that missed a block's sums, would not
    match `residual_norm`."""
    out = run_interpreted("""
        import torch
        import torch.nn.functional as F
        from glm_vision.engine import gemv
        from glm_vision.engine.layer_math import residual_norm

        def check(m, n, k, dtype, tol, configs):
            w = (torch.randn(n, k, generator=g) / k ** 0.5).to(dtype)
            n_out, n_next = (1 + 0.2 * torch.randn(2, n, generator=g)).to(dtype)
            for config in configs:  # new inputs each time: memory reused from the last call holds other values
                x, h = torch.randn(m, k, generator=g).to(dtype), (3 * torch.randn(m, n, generator=g)).to(dtype)
                # the eager math on the product as the kernel rounds it (the activations' dtype)
                h_want, x_want = residual_norm(h, F.linear(x.float(), w.float()).to(dtype), n_out, n_next, 1e-5)
                h_got, x_got = gemv.linear_residual_norm(x, w, gemv.ResidualNorm(h, n_out, n_next, 1e-5), config=config)
                for got, want in ((h_got, h_want), (x_got, x_want)):
                    assert got.dtype == dtype and got.shape == (m, n)
                    err = (got.float() - want.float()).abs().max().item() / want.float().abs().max().item()
                    assert err < tol, (config, m, dtype, err)
                assert not gemv._counter(torch.device("cpu")).any()  # every counter back at zero
                checked.add(str(config))

        g = torch.Generator().manual_seed(3)
        checked = set()
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)):
            for m in (1, 3, 8):
                # several row blocks for every candidate, the norm's columns in 1-3 chunks; then K long enough to split
                for n, k in ((600, 300), (72, 2100)):
                    fitting = [c for c in gemv.CONFIGS if gemv._fits(c, m, n, k)]
                    if dtype == torch.bfloat16:  # the interpreter's tl.dot mishandles bfloat16
                        fitting = [c for c in fitting if not c.kwargs["USE_DOT"]]
                    check(m, n, k, dtype, tol, fitting if k < 1000 else [c for c in fitting if c.kwargs["SPLIT_K"] > 1])
        assert len(checked) == len(gemv.CONFIGS)
        # more row blocks than the norm adds up at once (8 rows: 256 blocks a chunk)
        check(8, 4200, 64, torch.float32, 1e-5, [gemv.CONFIGS[0]])
        print("residual norm ok")
    """)
    assert "residual norm ok" in out
