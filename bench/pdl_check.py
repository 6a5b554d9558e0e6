"""Programmatic dependent launch on and off in one process (engine/pdl.py): the same decode numbers,
and how much faster. GPU only (compute capability 9 or later).

    python -m bench.pdl_check --config bench/glm-4.6v-flash-config.json [--batch 1 8 32] [--context 4000]

The full-size random model is loaded once; an engine is built on it with PDL off (GLM_VISION_PDL=0:
its kernels compiled and its CUDA graphs captured without), then one with PDL on. Each decodes the same
greedy requests (`--batch` at once, prompts of about `--context` tokens) with the log probabilities of
the top 5 tokens at every step, twice; the second run is timed. PDL changes when kernels start, never
what they compute: the tokens and every log probability must be bit for bit equal. Exit status 1 if not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from bench.load import filler_prompt
from bench.profile_decode import StepTimer
from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import pdl


def decode(engine, timer: StepTimer, batch: int, context: int, tokens: int) -> dict:
    """The batch's tokens and top-5 log probabilities, its decode rate and median step (second run)."""
    tokenizer = engine.loaded.processor.tokenizer
    sampling = SamplingParams.greedy(tokens, min_new_tokens=tokens, logprobs=True, top_logprobs=5)
    prompts = [[Message("user", filler_prompt(tokenizer, index, context))] for index in range(batch)]
    for _ in range(2):
        handles = [engine.submit(GenerationRequest(prompt, sampling)) for prompt in prompts]
        for handle in handles:
            next(iter(handle))  # every prompt prefilled: only decode steps are timed
        timer.steps.clear()
        timer.on = True
        results = [handle.wait() for handle in handles]
        timer.on = False
    rate = sum(r.usage.completion_tokens - 1 for r in results) / max(r.usage.decode_s for r in results)
    numbers = [(r.token_ids, [(t.logprob, [(o.token, o.logprob) for o in t.top]) for t in r.logprobs]) for r in results]
    return {"numbers": numbers, "rate": rate, "step_ms": 1000 * statistics.median(timer.steps)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="a model config.json: full-size random bf16 weights")
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny checkpoint on the CPU (PDL off twice: a smoke run)"
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--context", type=int, default=4000, help="prompt tokens (about)")
    parser.add_argument("--decode-matmul", default="auto", choices=["auto", "cublas", "triton"])
    args = parser.parse_args(argv)
    from bench import bench_constraints

    timer = StepTimer()
    loaded, runs = None, {}
    for mode in ("off", "on"):
        os.environ["GLM_VISION_PDL"] = "0" if mode == "off" else "1"
        pdl.enabled.cache_clear()
        options = argparse.Namespace(
            tiny=args.tiny,
            config=args.config,
            batch=args.batch,
            decode_matmul=args.decode_matmul,
            max_context=args.context + 1024,
        )
        engine = bench_constraints.load_engine(options, loaded)
        loaded = engine.loaded
        print(
            f"PDL {mode}: {pdl.enabled(engine.runner.device)}, Inductor options {pdl.inductor_options(engine.runner.device)}"
        )
        runs[mode] = {batch: decode(engine, timer, batch, args.context, args.tokens) for batch in args.batch}
        engine.shutdown()
    print("| rows | PDL off: tok/s, median step | PDL on | step on / off | tokens and log probabilities |")
    print("|---|---|---|---|---|")
    equal = True
    for batch in args.batch:
        off, on = runs["off"][batch], runs["on"][batch]
        same = off["numbers"] == on["numbers"]
        equal &= same
        print(
            f"| {batch} | {off['rate']:.1f}, {off['step_ms']:.2f} ms | {on['rate']:.1f}, {on['step_ms']:.2f} ms | "
            f"{on['step_ms'] / off['step_ms']:.3f} | {'bit for bit equal' if same else 'DIFFERENT'} |",
            flush=True,
        )
    sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
