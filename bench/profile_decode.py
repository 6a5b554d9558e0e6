"""Where a decode step's time goes on the GPU: torch.profiler over the decode steps of the full-size random
model (unseeded GLM defaults, text prompt), the kernels' GPU time per step against the step's wall time.

    python -m bench.profile_decode --config bench/glm-4.6v-flash-config.json [--decode-matmul cublas,triton]
        [--decode-pdl on,off] [--context 4000] [--attention-variant tuned,fixed,even,merge-kernel]

For each batch size: tok/s and the median wall time of a scheduler step over plain runs, then one profiled
run with the kernel table (by GPU time, then by CPU time). GPU time close to the wall time means the step
is kernel-bound (faster kernels are the lever); far below it, host-bound (launches and Python).
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace

import torch

from bench import bench_constraints
from bench.steady import filler_prompt
from bench.step_clock import StepClock, step_clock
from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import decode_attention, forward

PICK_TUNING = decode_attention.tuning
VARIANTS = {  # --attention-variant: forced on every decode attention's tuning
    "merge-kernel": dict(merge_in_split=False),
    "merge-in-split": dict(merge_in_split=True),
}


def even_from_rows(batch: int, kv: int, bucket: int, sms: int = decode_attention.DEFAULT_SMS):
    """`even`: equal pieces (even_tuning) at every batch from PIECES_FROM_ROWS rows."""
    if batch < decode_attention.PIECES_FROM_ROWS:
        return PICK_TUNING(batch, kv, bucket, sms)
    return decode_attention.even_tuning(batch, kv, sms)


PICKS = {"tuned": PICK_TUNING, "even": even_from_rows, "fixed": decode_attention.fixed_tuning}


def force_attention_variant(name: str) -> None:
    """`tuning`'s picks as they are (`tuned`), even pieces from 16 rows (`even`), fixed splits at every batch
    (`fixed`) or with a variant forced, for the engines built after this."""
    if name in PICKS:
        decode_attention.tuning = PICKS[name]
        return
    flags = VARIANTS[name]
    decode_attention.tuning = lambda *args, **kwargs: replace(PICK_TUNING(*args, **kwargs), **flags)


def run(engine, timer: StepClock, batch: int, tokens: int, context: int, profile: bool = False) -> None:
    sampling = SamplingParams(max_new_tokens=tokens, min_new_tokens=tokens)
    tokenizer = engine.loaded.processor.tokenizer
    prompts = [[Message("user", filler_prompt(tokenizer, index, context))] for index in range(batch)]
    handles = [engine.submit(GenerationRequest(prompt, sampling)) for prompt in prompts]
    for handle in handles:
        next(iter(handle))  # every prompt prefilled: only decode steps are timed
    timer.start()
    profiler = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    )
    if profile:
        profiler.__enter__()
    results = [handle.wait() for handle in handles]
    if profile:
        torch.cuda.synchronize()
        profiler.__exit__(None, None, None)
    timer.stop()
    rate = sum(r.usage.completion_tokens - 1 for r in results) / max(r.usage.decode_s for r in results)
    steps = len(timer.steps)
    split = timer.decode_summary()
    print(
        f"batch {batch}: {rate:.1f} tok/s, {steps} steps, median step {timer.median_step_ms():.2f} ms "
        f"(host {split.get('host_ms', 0):.2f} ms of it, waiting for the GPU {split.get('gpu_wait_ms', 0):.2f})"
    )
    if profile:
        table = profiler.key_averages()
        gpu_ms = sum(e.self_device_time_total for e in table) / 1000
        print(f"  profiled: kernels {gpu_ms / steps:.2f} ms of GPU time a step")
        print(table.table(sort_by="self_device_time_total", row_limit=18))
        print(table.table(sort_by="self_cpu_time_total", row_limit=18))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a model config.json: full-size random bf16 weights")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--context", type=int, default=160, help="prompt tokens (about)")
    parser.add_argument(
        "--decode-matmul", default="auto", help="comma-separated (auto, cublas, triton): an engine each, same weights"
    )
    parser.add_argument(
        "--decode-pdl", default="auto", help="comma-separated (auto, on, off): an engine each (and each matmul way)"
    )
    parser.add_argument(
        "--pdl-max-rows", type=int, help="PDL for decode steps of up to this many rows (forward.PDL_MAX_ROWS)"
    )
    parser.add_argument(
        "--attention-variant",
        default="tuned",
        help=f"comma-separated ({', '.join(PICKS)}, {', '.join(VARIANTS)}): the decode attention's split kernel, an engine each",
    )
    parser.add_argument("--no-profile", action="store_true", help="plain runs only (no kernel tables)")
    args = parser.parse_args(argv)
    timer = step_clock()
    if args.pdl_max_rows is not None:
        forward.PDL_MAX_ROWS = args.pdl_max_rows
    loaded = None
    ways = itertools.product(
        args.decode_matmul.split(","), args.decode_pdl.split(","), args.attention_variant.split(",")
    )
    for matmul, pdl, variant in ways:
        force_attention_variant(variant)
        options = argparse.Namespace(
            tiny=False,
            config=args.config,
            batch=args.batch,
            decode_matmul=matmul,
            decode_pdl=pdl,
            max_context=args.context + 1024,
        )
        engine = bench_constraints.load_engine(options, loaded)
        loaded = engine.loaded
        print(f"decode matmuls: {matmul}, PDL: {pdl} ({engine.runner.forward.pdl}), attention: {variant}", flush=True)
        products = engine.runner.forward.matmuls  # None: every product through cuBLAS
        if products is not None:
            print(f"  through cuBLAS (rows: weights): {products.cublas_products()}")
            for rows, timings in products.measured().items():
                print(f"  {rows} rows, GEMV / cuBLAS us: {timings}")
        for batch in args.batch:
            run(engine, timer, batch, args.tokens, args.context)
            if not args.no_profile:
                run(engine, timer, batch, args.tokens // 2, args.context, profile=True)
        engine.shutdown()


if __name__ == "__main__":
    main()
