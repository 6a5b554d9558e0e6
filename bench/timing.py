"""Wall-clock timing and peak memory for the benchmarks (the device synchronised around each run)."""

from __future__ import annotations

import statistics
import time

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int = 3) -> float:
    """Median seconds of `repeat` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def graph_time_median(fn, repeats: int = 3) -> float:
    """The median of `repeats` `graph_timer.graph_time`s of `fn`: milliseconds a call as the decode step runs it."""
    from glm_vision.engine.graph_timer import graph_time

    return statistics.median(graph_time(fn) for _ in range(repeats))
