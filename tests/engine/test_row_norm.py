"""The decode step's residual norm as one Triton kernel (engine/row_norm.py) against the eager
`layer_math.residual_norm`, under Triton's interpreter (tests/triton_interpreter.py)."""

from __future__ import annotations

from tests.triton_interpreter import run_interpreted


def test_the_row_kernel_equals_the_eager_residual_norm():
    """Rows of a width that is a power of two and of one that is not (masked), in bfloat16, float16 and
    float32, with large and small values (the sums of squares decide the scale: a missing column, a sum
    over the wrong axis or a norm weight left out would be far off)."""
    out = run_interpreted("""
        import torch
        from glm_vision.engine.layer_math import residual_norm
        from glm_vision.engine.row_norm import residual_norm as row_residual_norm

        g = torch.Generator().manual_seed(0)
        for rows, width in ((1, 4096), (3, 4096), (5, 200)):
            for dtype in (torch.bfloat16, torch.float16, torch.float32):
                h = (8 * torch.randn(rows, width, generator=g)).to(dtype)
                out = (torch.randn(rows, width, generator=g) * torch.logspace(-2, 2, rows)[:, None]).to(dtype)
                n_out, n_next = (1 + 0.3 * torch.randn(2, width, generator=g)).to(dtype)
                h_want, x_want = residual_norm(h, out, n_out, n_next, 1e-5)
                h_got, x_got = row_residual_norm(h, out, n_out, n_next, 1e-5)
                for got, want in ((h_got, h_want), (x_got, x_want)):
                    assert got.dtype == dtype and got.shape == (rows, width)
                    # the same roundings as the eager math: within two units in the last place of the row's
                    # largest value (the sums' order differs; the interpreter rounds to bfloat16 toward zero)
                    error = (got.float() - want.float()).abs()
                    ulp = torch.finfo(dtype).eps * want.float().abs().amax(-1, keepdim=True)
                    assert (error <= 2 * ulp).all(), (rows, width, dtype, error.max())
        print("row norm ok")
    """)
    assert "row norm ok" in out
