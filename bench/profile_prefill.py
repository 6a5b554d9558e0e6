"""Where a cold request's time to first token goes on the GPU: torch.profiler over cold 1080p requests
(new cache scope each: encoder + text prefill + first token) on the full-size random model, single stream.

    python -m bench.profile_prefill --config bench/glm-4.6v-flash-config.json

Prints the TTFT of plain runs, then one profiled run's kernels by GPU time, with the kernels' GPU time
against the TTFT: close to it means the prefill is kernel-bound (faster kernels are the lever).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from bench.workload import QUESTION, full_size_model, screenshot
from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import Engine
from glm_vision.images import load_image
from glm_vision.settings import Settings


def cold(engine: Engine, picture, tag: str) -> float:
    request = GenerationRequest(
        [Message("user", QUESTION, [picture])], SamplingParams.greedy(1), session_id=tag, cache_scope=tag
    )
    result = engine.generate(request)
    engine.close_session(tag)
    return result.usage.ttft_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-attention", default="auto")
    args = parser.parse_args(argv)
    loaded = full_size_model(args.config, "cuda")
    settings = Settings(model="(in memory)", device="cuda", max_context_tokens=16384, compile="on", max_batch=1)
    engine = Engine(replace(settings, decode_attention=args.decode_attention), loaded)
    engine.warmup()
    picture = load_image(screenshot(1))
    cold(engine, picture, "first")  # the 1080p shape's first call: cuDNN plans, compiled shapes
    ttfts = [cold(engine, picture, f"plain-{i}") for i in range(args.repeats)]
    print(f"TTFT cold, median of {args.repeats}: {1000 * statistics.median(ttfts):.1f} ms", flush=True)
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profiler:
        profiled = cold(engine, picture, "profiled")
        torch.cuda.synchronize()
    table = profiler.key_averages()
    gpu_ms = sum(e.self_device_time_total for e in table) / 1000
    print(f"profiled run: TTFT {1000 * profiled:.1f} ms, kernels {gpu_ms:.1f} ms of GPU time")
    print(table.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=90))
    engine.shutdown()


if __name__ == "__main__":
    main()
