"""Where a burst's wall time goes, step by step: N requests (each its own 1920x1080 screenshot) sent at
once to the in-process engine, every scheduler step recorded with what it held (decode rows, prompt
tokens, encoder layers), its wall time and the time it waited for the last step's tokens.

    python -m bench.step_trace --config bench/glm-4.6v-flash-config.json --streams 32 --tokens 256 [--gpu-busy]
    python -m bench.step_trace --tiny --streams 4 --tokens 16
    python -m bench.step_trace --config bench/glm-4.6v-flash-config.json --streams 8 --tokens 1024 --max-batch 64 --bursts 2

Steps whose wait is near zero are host-bound: the GPU finished the last step before the host had
launched this one. `--gpu-busy` runs the burst again under torch.profiler (CUDA kernels only) and adds
the union of the kernels' intervals. That second run's wall time is not comparable: tracing every
launch slows the host (on the H200 it hid most of the host cost of unprofiled runs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from glm_vision.engine import host_copy, scheduler


class StepRecorder:
    """Records every `Scheduler.step` of `engine` while switched on (patches the classes it uses)."""

    def __init__(self, engine) -> None:
        self.on = False
        self.steps: list[dict] = []
        self._current: dict = {}
        runner = type(engine.runner)
        step, prefill, encode, wait = (
            scheduler.Scheduler.step,
            runner.prefill,
            runner.encode_some,
            host_copy.HostCopy.wait,
        )

        def recorded_step(sched):
            if not self.on:
                return step(sched)
            self._current = {"rows": len(sched.rows), "prompt": 0, "layers": 0, "wait_ms": 0.0}
            started = time.perf_counter()
            try:
                return step(sched)
            finally:
                self._current["wall_ms"] = 1000 * (time.perf_counter() - started)
                self.steps.append(self._current)

        def recorded_prefill(run, chunks, rows=(), tokens=None):
            self._current["prompt"] = self._current.get("prompt", 0) + sum(len(c) for _, c in chunks)
            return prefill(run, chunks, rows, tokens)

        def recorded_encode(run, job, seqs, blocks=None):
            self._current["layers"] = self._current.get("layers", 0) + (blocks or job.blocks_left)
            return encode(run, job, seqs, blocks)

        def recorded_wait(copy, count):
            started = time.perf_counter()
            try:
                return wait(copy, count)
            finally:
                self._current["wait_ms"] = self._current.get("wait_ms", 0.0) + 1000 * (time.perf_counter() - started)

        scheduler.Scheduler.step, runner.prefill, runner.encode_some = recorded_step, recorded_prefill, recorded_encode
        host_copy.HostCopy.wait = recorded_wait

    def by_kind(self) -> dict[str, dict]:
        """Steps grouped by what they held: decode rows, prompt tokens, encoder layers."""
        kinds: dict[str, dict] = {}
        for s in self.steps:
            name = " + ".join(
                k for k, v in (("rows", s["rows"]), ("prompt", s["prompt"]), ("encoder", s["layers"])) if v
            )
            kind = kinds.setdefault(
                name or "empty", {"steps": 0, "wall_ms": 0.0, "wait_ms": 0.0, "prompt": 0, "layers": 0}
            )
            kind["steps"] += 1
            for key in ("wall_ms", "wait_ms", "prompt", "layers"):
                kind[key] += s[key]
        return kinds


def kernel_busy_ms(profiler) -> float:
    """The union of the CUDA kernels' intervals a profiler saw, in ms."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in profiler.events() if e.device_type.name == "CUDA")
    busy, start, end = 0, None, None
    for s, e in spans:
        if end is None or s > end:
            busy += 0 if end is None else end - start
            start, end = s, e
        else:
            end = max(end, e)
    return (busy + (end - start if end is not None else 0)) / 1000


def compilations() -> int:
    """Graphs torch.compile has made in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def longest_host_ops(profiler, count: int = 12) -> list[str]:
    """The longest single CPU-side operations a profiler saw (a first use's plan or compile shows here)."""
    events = sorted(profiler.events(), key=lambda e: -e.cpu_time_total)[:count]
    return [f"{e.cpu_time_total / 1000:.1f} ms {e.name}" for e in events]


def burst(
    engine, recorder: StepRecorder, streams: int, tokens: int, images, *, gpu_busy: bool = False, host: bool = False
) -> dict:
    from bench.load import run_level_direct

    recorder.steps.clear()
    recorder.on = True
    compiled_before = compilations()
    profiler = None
    if gpu_busy or host:
        activity = torch.profiler.ProfilerActivity
        every_thread = torch.profiler._ExperimentalConfig(profile_all_threads=True)  # the engine's worker too
        profiler = torch.profiler.profile(
            activities=[activity.CUDA if gpu_busy else activity.CPU], experimental_config=every_thread
        )
        profiler.__enter__()
    try:
        level = run_level_direct(engine, streams, tokens, images)
    finally:
        recorder.on = False
        if profiler is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            profiler.__exit__(None, None, None)
    result = {key: level[key] for key in ("ttft_p50_s", "ttft_p95_s", "aggregate_tok_s", "wall_s")}
    result.update(steps=len(recorder.steps), step_wall_ms=sum(s["wall_ms"] for s in recorder.steps))
    result["compilations"] = compilations() - compiled_before  # torch.compile runs in the burst: stalls
    result["by_kind"] = recorder.by_kind()
    # a one-time stall (a first use of something) shows as one long step, not in the totals
    order = sorted(range(len(recorder.steps)), key=lambda i: -recorder.steps[i]["wall_ms"])
    result["slowest"] = [{"step": i, **recorder.steps[i]} for i in order[:5]]
    if gpu_busy:
        result["gpu_busy_ms"] = kernel_busy_ms(profiler)
    elif host:
        result["longest_host_ops"] = longest_host_ops(profiler)
    return result


def main(argv: list[str] | None = None) -> None:
    from bench.bench_constraints import load_engine
    from bench.workload import screenshot
    from glm_vision.images import load_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="full-size random model from this config (GPU)")
    parser.add_argument("--tiny", action="store_true", help="the tiny checkpoint on the CPU")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--policy", default="prefill-first", help="comma-separated policies, a burst each")
    parser.add_argument("--max-context", type=int, default=8192, help="the engine's context limit")
    parser.add_argument("--max-batch", type=int, default=0, help="decode slots (default: --streams)")
    parser.add_argument(
        "--bursts", type=int, default=1, help="bursts per policy (a first-use stall shows in the first)"
    )
    parser.add_argument("--gpu-busy", action="store_true", help="also a profiled burst: kernels' busy time")
    parser.add_argument(
        "--host-ops", action="store_true", help="the first burst under a CPU-only profiler: its longest ops"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    engine = load_engine(
        argparse.Namespace(
            tiny=args.tiny, config=args.config, batch=[args.max_batch or args.streams], max_context=args.max_context
        )
    )
    recorder = StepRecorder(engine)
    images = [load_image(screenshot(seed)) for seed in range(args.streams)]
    results = {}
    try:
        for policy in args.policy.split(","):
            engine.scheduler.policy = policy
            for number in range(args.bursts):
                name = policy if number == 0 else f"{policy} (burst {number + 1})"
                host = args.host_ops and number == 0
                results[name] = burst(engine, recorder, args.streams, args.tokens, images, host=host)
            if args.gpu_busy and engine.runner.device.type == "cuda":
                results[policy + " (profiled)"] = burst(
                    engine, recorder, args.streams, args.tokens, images, gpu_busy=True
                )
    finally:
        engine.shutdown()
    for name, result in results.items():
        shown = {k: v for k, v in result.items() if k not in ("by_kind", "slowest", "longest_host_ops")}
        print(f"\n{name}: {json.dumps(shown)}")
        if "longest_host_ops" in result:
            print("longest host ops:", "; ".join(result["longest_host_ops"]))
        print(
            "slowest steps:",
            ", ".join(
                f"#{s['step']} {s['wall_ms']:.0f} ms ({s['rows']} rows, {s['prompt']} "
                f"prompt tokens, {s['layers']} encoder layers)"
                for s in result["slowest"]
            ),
        )
        print("| steps holding | steps | wall ms | waited for the last step ms | prompt tokens | encoder layers |")
        print("|---|---|---|---|---|---|")
        for kind, k in result["by_kind"].items():
            print(
                f"| {kind} | {k['steps']} | {k['wall_ms']:.0f} | {k['wait_ms']:.0f} | {k['prompt']} | {k['layers']} |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
