"""The engine with its Triton kernels (decode attention, GEMVs) on the CPU under Triton's interpreter:
the same greedy tokens as the compiled attention and cuBLAS's path."""

from __future__ import annotations

from tests.triton_interpreter import run_interpreted


def test_engine_with_triton_kernels_decodes_the_same_tokens():
    """Each combination decodes three prompts of different lengths together; an 8-token prefill budget
    makes rows decode in the same passes as the later prompts' chunks; "cublas" sends the products of an
    engine built for the GEMVs through cuBLAS, their residual norms through the Triton row kernel (as
    `--decode-matmul cublas` does on CUDA); "mixed" measures each product's way as auto
    does on CUDA, with a seeded random stand-in for the GPU timer, so that one step mixes cuBLAS and GEMVs;
    "pdl" runs the decode steps' kernels as launched with PDL (each GEMV's first weights read before its
    wait; the interpreter runs no wait itself), the attention of rows riding in prefill passes too."""
    out = run_interpreted("""
        import random
        import tempfile
        from dataclasses import replace
        from pathlib import Path

        from glm_vision.backend import GenerationRequest, SamplingParams
        from glm_vision.conversation import Message
        from glm_vision.engine import Engine, gemv
        from glm_vision.engine.decode_matmuls import DecodeMatmuls
        from glm_vision.settings import Settings
        from glm_vision.synthetic.tiny import build_tiny_checkpoint

        directory = Path(tempfile.mkdtemp())
        build_tiny_checkpoint(directory)
        base = Settings(model=str(directory), device="cpu", max_context_tokens=2048, max_batch=3)
        requests = [GenerationRequest([Message("user", text)], SamplingParams.greedy(16, min_new_tokens=16))
                    for text in ("hello", "what is in the picture?", "a longer question about colours and shapes")]
        rows, linear = [], gemv.linear
        gemv.linear = lambda x, *args, **kwargs: (rows.append(x.shape[0]), linear(x, *args, **kwargs))[1]
        answers = {}
        for attention, matmul, budget, gemv_rows in (
            ("compiled", "cublas", 2048, None),
            ("triton", "cublas", 8, None),
            ("compiled", "triton", 2048, None),
            ("triton", "triton", 8, None),
            ("triton", "triton", 2048, "cublas"),
            ("triton", "triton", 8, "mixed"),
            ("triton", "triton", 8, "pdl"),
        ):
            engine = Engine.load(replace(base, decode_attention=attention, decode_matmul=matmul, prefill_chunk_tokens=budget))
            engine.runner.solo_pass_tokens = budget  # 8-token chunks even before the first row decodes
            forward = engine.runner.forward
            assert (forward.decode_attention, forward.decode_matmul) == (attention, matmul)
            if gemv_rows == "mixed":
                rng = random.Random(1)
                forward.matmuls = DecodeMatmuls("measured", timer=lambda call: (call(), rng.random())[1])
            elif gemv_rows == "cublas":
                forward.matmuls = None  # the row norm kernel stays
            elif gemv_rows == "pdl":
                assert not forward.pdl  # auto: never on the CPU
                forward.pdl = True
                pdl_calls = []
                launch = gemv._launch
                gemv._launch = lambda *args, **kwargs: (pdl_calls.append(kwargs["pdl"]), launch(*args, **kwargs))[1]
                attention_pdl, split_k = [], forward.split_k_attention
                forward.split_k_attention = lambda *args, **kwargs: (attention_pdl.append(kwargs["pdl"]), split_k(*args, **kwargs))[1]
            prefill, mixed = engine.runner.prefill, []
            engine.runner.prefill = lambda chunks, rows=(), tokens=None: (mixed.append(len(rows)), prefill(chunks, rows, tokens))[1]
            rows.clear()
            handles = [engine.submit(r) for r in requests]
            answers[attention, matmul, budget, gemv_rows] = [h.wait().token_ids for h in handles]
            if gemv_rows == "mixed":
                assert set(forward.matmuls.choices.values()) == {"cublas", "triton"}, forward.matmuls.choices
                assert {key[0] for key in forward.matmuls.choices} == {1, 2, 3}  # each batch size measured
            elif gemv_rows == "cublas":
                assert forward.row_residual_norm is not None and rows == [], rows
            elif gemv_rows == "pdl":
                gemv._launch = launch
                assert any(pdl_calls) and max(rows) == 3, (pdl_calls, rows)
                # the rows riding in prefill passes (budget 8) too: the decode graphs' kernel variants
                assert attention_pdl and all(attention_pdl), attention_pdl
            elif matmul == "triton":
                assert max(rows) == 3, rows  # the three rows' steps went through the kernels
            engine.shutdown()
            assert budget > 8 or max(mixed) > 0
        assert len(set(map(tuple, answers.values()))) == 1, answers
        assert all(len(t) == 16 for t in answers["triton", "triton", 8, None])
        print("engine ok")
    """)
    assert "engine ok" in out
