"""Engine benchmark against plain transformers, both measured in this one process.

    python -m bench.bench_engine --tiny                 # CPU, the tiny checkpoint: compare ratios
    python -m bench.bench_engine --config ../shared/glm-4.6v-flash-config.json   # GPU, full size, random bf16

For a 1920x1080 screenshot + ~128 text tokens it prints: vision encoder time; time to first token
cold, on a follow-up question in the same session, and in a new session of the same tenant whose
image was seen before; decode tokens/s; peak memory (also with 8k tokens of history); warm-up time;
and the greedy-token / first-step-logits agreement of the engine with `model.generate` over a
three-turn conversation with images. Columns: plain `generate` (SDPA, dynamic cache), the engine's
eager loop (compile off), the engine's fast path (static KV slab, CUDA graphs; GPU only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.agreement import agreement, float32_agreement, reference_inputs
from bench.picture_sizes import first_of_each_size
from bench.timing import peak_gib, reset_peak, sync, timed
from bench.workload import QUESTION, full_size_model, screenshot, tiny_model
from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import Engine, LoadedModel
from glm_vision.engine.prompt import repeated_to_length
from glm_vision.images import load_image
from glm_vision.settings import Settings


# ---------------------------------------------------------------------------- measurements
@torch.inference_mode()
def baseline(loaded: LoadedModel, messages, device: str, decode_tokens: int) -> dict:
    model = loaded.model
    inputs = reference_inputs(loaded, messages, device)
    pixel_values, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    encoder_s = timed(lambda: model.model.get_image_features(pixel_values, grid), device)

    def first_token():
        fresh = reference_inputs(loaded, messages, device)  # preprocessing is part of a cold request
        model.generate(**fresh, do_sample=False, max_new_tokens=1, repetition_penalty=1.0)

    reset_peak(device)
    ttft = timed(first_token, device)
    prefill = timed(lambda: model.generate(**inputs, do_sample=False, max_new_tokens=1, repetition_penalty=1.0), device)
    started = time.perf_counter()
    out = model.generate(
        **inputs, do_sample=False, max_new_tokens=decode_tokens, min_new_tokens=decode_tokens, repetition_penalty=1.0
    )
    sync(device)
    total = time.perf_counter() - started
    new = out.shape[1] - inputs["input_ids"].shape[1]
    return {
        "prompt_tokens": inputs["input_ids"].shape[1],
        "encoder_ms": encoder_s * 1000,
        "ttft_cold_ms": ttft * 1000,
        "ttft_followup_ms": ttft * 1000,  # generate recomputes the whole conversation every turn
        "ttft_seen_image_ms": ttft * 1000,
        "decode_tok_s": (new - 1) / max(total - prefill, 1e-9),
        "peak_gib": peak_gib(device),
    }


def engine_numbers(engine: Engine, picture, other_picture, device: str, decode_tokens: int, tag: str) -> dict:
    greedy = SamplingParams.greedy(1)
    ttfts, follow, seen = [], [], []
    for i in range(3):
        scope = f"{tag}-tenant-{i}"
        first = [Message("user", QUESTION, [picture])]
        cold = engine.generate(GenerationRequest(first, greedy, session_id=f"{tag}-{i}-a", cache_scope=scope))
        ttfts.append(cold.usage.ttft_s)
        history = first + [
            Message("assistant", "It shows a desktop with several windows and buttons."),
            Message("user", "What does the largest button say?"),
        ]
        fu = engine.generate(GenerationRequest(history, greedy, session_id=f"{tag}-{i}-a", cache_scope=scope))
        follow.append(fu.usage.ttft_s)
        again = [Message("user", "Which colours dominate?", [picture])]
        sn = engine.generate(GenerationRequest(again, greedy, session_id=f"{tag}-{i}-b", cache_scope=scope))
        # its pictures' features come from the cache, or its whole prefix from the other session's KV
        assert sn.usage.image_cache_hits == 1 or sn.usage.cached_tokens > 0
        seen.append(sn.usage.ttft_s)
        engine.close_session(f"{tag}-{i}-a")
        engine.close_session(f"{tag}-{i}-b")
    reset_peak(device)
    long = engine.generate(
        GenerationRequest(
            [Message("user", QUESTION, [other_picture])],
            SamplingParams.greedy(decode_tokens, min_new_tokens=decode_tokens),
        )
    )
    return {
        "prompt_tokens": cold.usage.prompt_tokens,
        "encoder_ms": cold.usage.encode_s * 1000,
        "ttft_cold_ms": statistics.median(ttfts) * 1000,
        "ttft_first_ms": ttfts[0] * 1000,  # the engine's first 1080p request: shapes the warm-up did not see
        "ttft_followup_ms": statistics.median(follow) * 1000,
        "ttft_seen_image_ms": statistics.median(seen) * 1000,
        "decode_tok_s": long.usage.decode_tokens_per_s,
        "decode_tokens": long.usage.completion_tokens,
        "peak_gib": peak_gib(device),
    }


def history_peak(engine: Engine, picture, device: str, history_tokens: int) -> tuple[float | None, int]:
    """Peak memory for one 1080p session carrying about `history_tokens` tokens of history."""
    filler = "The window on the left shows a list of files and a preview of the selected document. "
    answer = repeated_to_length(engine.runner.tokenizer, filler, 600)
    turns = [Message("user", QUESTION, [picture])]
    prompt_len = 0
    while prompt_len < history_tokens:
        turns += [Message("assistant", answer), Message("user", "Go on.")]
        prompt_len = len(engine.runner.build_prompt(GenerationRequest(turns)))
    reset_peak(device)
    engine.generate(GenerationRequest(turns, SamplingParams.greedy(64), session_id="history"))
    engine.close_session("history")
    return peak_gib(device), prompt_len


def profile_decode(engine: Engine, picture) -> None:
    """Kernel time of the graph-replayed decode steps and of a prefill, by kernel name."""
    from torch.profiler import ProfilerActivity, profile

    request = GenerationRequest([Message("user", QUESTION, [picture])], SamplingParams.greedy(48, min_new_tokens=48))
    engine.generate(request)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        engine.generate(request)
    print("decode, 48 graph-replayed steps (Calls / 48 = kernels per step):")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=70))
    cold = GenerationRequest([Message("user", QUESTION, [load_image(screenshot(7))])], SamplingParams.greedy(1))
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        engine.generate(cold)
    print("cold request, new 1080p image, one token (encoder + prefill):")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=20, max_name_column_width=70))


# ---------------------------------------------------------------------------- report
ROWS = [
    ("vision encoder, 1080p", "encoder_ms", "ms"),
    ("TTFT cold, 1080p + text", "ttft_cold_ms", "ms"),
    ("TTFT of the first 1080p request after warm-up", "ttft_first_ms", "ms"),
    ("TTFT follow-up, same session", "ttft_followup_ms", "ms"),
    ("TTFT new session, image seen before", "ttft_seen_image_ms", "ms"),
    ("decode", "decode_tok_s", "tok/s"),
    ("peak memory, 1080p", "peak_gib", "GiB"),
]


def table(columns: dict[str, dict]) -> str:
    names = list(columns)
    base = columns[names[0]]
    ratio_names = [f"{n} / {names[0]}" for n in names[1:]]
    head = "| " + " | ".join(["metric", *names, *ratio_names]) + " |"
    lines = [head, "|" + "---|" * (1 + len(names) + len(ratio_names))]
    for label, key, unit in ROWS:
        cells, ratios = [], []
        for name in names:
            value = columns[name].get(key)
            cells.append("-" if value is None else f"{value:.1f} {unit}")
        for name in names[1:]:
            value, ref = columns[name].get(key), base.get(key)
            ratios.append("-" if value is None or not ref else f"{value / ref:.2f}x")
        lines.append("| " + " | ".join([label, *cells, *ratios]) + " |")
    return "\n".join(lines)


def eager_numbers(settings, loaded, pictures, device: str, decode_tokens: int, columns: dict) -> None:
    """The engine without compilation or graphs; a failure is printed and the fast path still runs."""
    eager = Engine(settings, loaded)
    try:
        eager.warmup()
        columns["engine eager"] = engine_numbers(eager, pictures[0], pictures[1], device, decode_tokens, "eager")
        print("engine eager:", columns["engine eager"], flush=True)
    except Exception:  # noqa: BLE001 - go on to the fast path
        import traceback

        traceback.print_exc()
        if device == "cuda":
            print(torch.cuda.memory_summary(abbreviated=True), flush=True)
    finally:
        eager.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny checkpoint on the CPU")
    parser.add_argument("--config", type=Path, help="full-size config JSON (GPU)")
    parser.add_argument("--decode-tokens", type=int, default=512)
    parser.add_argument("--baseline-decode-tokens", type=int, default=128)
    parser.add_argument("--agreement-tokens", type=int, default=100, help="greedy tokens per turn compared")
    parser.add_argument("--history-tokens", type=int, default=8192)
    parser.add_argument("--max-context", type=int, default=16384)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of 32 decode steps")
    parser.add_argument(
        "--fast-only", action="store_true", help="skip the baseline, the eager engine and the agreement run"
    )
    parser.add_argument(
        "--decode-attention", default="auto", choices=["auto", "compiled", "triton"], help="the fast engine's"
    )
    parser.add_argument(
        "--also-decode-attention",
        action="append",
        choices=["compiled", "triton"],
        help="measure the fast engine again with this decode attention (a column each)",
    )
    parser.add_argument(
        "--decode-matmul", default="auto", choices=["auto", "cublas", "triton"], help="the fast engine's decode matmuls"
    )
    parser.add_argument(
        "--also-decode-matmul",
        action="append",
        choices=["cublas", "triton"],
        help="measure the fast engine again with these decode matmuls (a column each)",
    )
    parser.add_argument("--decode-pdl", default="auto", choices=["auto", "on", "off"], help="the fast engine's")
    parser.add_argument(
        "--also-decode-pdl",
        action="append",
        choices=["on", "off"],
        help="measure the fast engine again with its decode kernels launched with PDL or not (a column each)",
    )
    parser.add_argument(
        "--prefill-chunk-tokens", type=int, default=Settings.prefill_chunk_tokens, help="the fast engine's step budget"
    )
    parser.add_argument(
        "--also-prefill-chunk-tokens",
        action="append",
        type=int,
        help="measure the fast engine again with this prompt-token budget a step (a column each)",
    )
    parser.add_argument(
        "--picture-sizes",
        default="",
        help="first, right after the fast engine's warm-up: TTFT of the first and second request with a picture of "
        "each of these sizes (comma-separated WIDTHxHEIGHT)",
    )
    parser.add_argument(
        "--profile-first-size",
        action="store_true",
        help="with --picture-sizes: Python's time in the worker and the caller over the first size's two requests",
    )
    parser.add_argument(
        "--float32-agreement",
        action="store_true",
        help="last, cast the model to float32 (TF32 off) and compare the fast engine's greedy tokens "
        "and first-step logits with generate there, where rounding does not flip near-tied argmaxes",
    )
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.tiny:
        loaded = tiny_model(Path(tempfile.mkdtemp()))
    else:
        loaded = full_size_model(args.config, device)
    torch.set_grad_enabled(False)
    pictures = [load_image(screenshot(seed)) for seed in (1, 2, 3)]
    question = [Message("user", QUESTION, [pictures[0]])]
    # One decode slot: the single-stream numbers (the batching benchmark is bench/load.py).
    settings = Settings(
        model="(in memory)",
        device=device,
        max_context_tokens=args.max_context,
        compile="off",
        max_batch=1,
        prefill_chunk_tokens=args.prefill_chunk_tokens,
    )
    print(
        f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; torch {torch.__version__}", flush=True
    )

    columns: dict[str, dict] = {}
    results = {"columns": columns}
    if not args.fast_only:
        columns["generate"] = baseline(loaded, question, device, args.baseline_decode_tokens)
        print("baseline:", columns["generate"], flush=True)
        eager_numbers(settings, loaded, pictures, device, args.baseline_decode_tokens, columns)

    try:
        fast_settings = replace(
            settings,
            compile="on",
            decode_attention=args.decode_attention,
            decode_matmul=args.decode_matmul,
            decode_pdl=args.decode_pdl,
        )
        started = time.perf_counter()
        fast = Engine(fast_settings, loaded)
        fast.warmup()
        results["warmup_s"] = time.perf_counter() - started
        print(f"fast path warm-up: {results['warmup_s']:.1f} s", flush=True)
        if args.picture_sizes:
            sizes = [tuple(int(n) for n in size.split("x")) for size in args.picture_sizes.split(",")]
            for size, (first, second) in first_of_each_size(fast, sizes, args.profile_first_size).items():
                print(f"TTFT of the first / second {size} request after warm-up: {first:.1f} / {second:.1f} ms")
        columns["engine fast"] = engine_numbers(fast, pictures[0], pictures[1], device, args.decode_tokens, "fast")
        print("engine fast:", columns["engine fast"], flush=True)
        results["history_peak_gib"], results["history_tokens"] = history_peak(
            fast, pictures[0], device, args.history_tokens
        )
        print("history peak:", results["history_peak_gib"], results["history_tokens"], flush=True)
        if not args.fast_only:
            results["agreement"] = agreement(fast, loaded, pictures, device, args.agreement_tokens, QUESTION * 8)
        if args.profile and device == "cuda":
            profile_decode(fast, pictures[0])
        fast.shutdown()
        others = [(f"{mode} attention", {"decode_attention": mode}) for mode in args.also_decode_attention or []]
        others += [(f"{mode} matmuls", {"decode_matmul": mode}) for mode in args.also_decode_matmul or []]
        others += [(f"PDL {mode}", {"decode_pdl": mode}) for mode in args.also_decode_pdl or []]
        others += [
            (f"{n}-token prefill steps", {"prefill_chunk_tokens": n}) for n in args.also_prefill_chunk_tokens or []
        ]
        for label, change in others:  # A/B in the same process, same weights
            other = Engine(replace(fast_settings, **change), loaded)
            other.warmup()
            name = f"engine fast, {label}"
            columns[name] = engine_numbers(other, pictures[0], pictures[1], device, args.decode_tokens, "fast")
            print(f"{name}:", columns[name], flush=True)
            other.shutdown()
        if args.float32_agreement:
            results["agreement_float32"] = float32_agreement(
                fast_settings, loaded, pictures, device, args.agreement_tokens, QUESTION * 8
            )
    except Exception:  # noqa: BLE001 - keep the columns measured so far
        import traceback

        traceback.print_exc()
    print()
    print(table(columns) if columns else "nothing measured: see the error above")
    print()
    if "warmup_s" in results:
        print(f"warm-up (compile + graph capture): {results['warmup_s']:.1f} s")
    if results.get("history_peak_gib") is not None:
        print(
            f"peak memory, one 1080p session with {results['history_tokens']} tokens of history: "
            f"{results['history_peak_gib']:.2f} GiB"
        )
    for key, label in (("agreement", loaded.dtype), ("agreement_float32", "float32")):
        a = results.get(key)
        if a:
            print(
                f"{label}: greedy agreement with generate over 3 turns: {a['tokens_equal']}/{a['tokens_compared']} tokens "
                f"equal (first divergence turn/token: {a['first_divergence']}); first-step logits max relative error "
                f"{a['max_first_logits_rel_err']:.2e}"
            )
            print(
                f"{label}: reference noise floor, transformers SDPA vs eager attention on turn 1: logits relative error "
                f"{a['reference_sdpa_vs_eager_logits_rel_err']:.2e}, first "
                f"{a['reference_sdpa_vs_eager_tokens_equal_before_divergence']} greedy tokens equal"
            )
            print(
                f"{label}: first-step logits relative error with generate fed the pictures resized on the device as the "
                f"engine does: {a['max_first_logits_rel_err_pixels_resized_on_device']:.2e}; text-only prompt: "
                f"{a['text_only_first_logits_rel_err']:.2e}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
