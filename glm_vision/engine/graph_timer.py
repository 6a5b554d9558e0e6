"""How long a GPU call takes as the decode step runs it: for the GEMVs' autotuning, the choice between cuBLAS
and a GEMV (decode_matmuls.py) and the benches.

The call is replayed in a CUDA graph (no launch cost: Triton's Python launcher made small kernels look 5x
slower than they run in the step), each time after a read of `flush_bytes` that leaves the L2 cache holding
other data (the step streams 17.6 GB of weights through a 50 MB L2: every matrix arrives cold). The flush
alone is captured once per process and replayed in turn with the call, and the median of the differences is
taken, so that a clock that drifts during a long autotuning moves both sides of each difference alike.

An engine's first start times ~250 candidates, so a timing costs little beyond what it measures: the flush is
a float32 sum (70 us on the H200; it used to sum int8 into int64, which converts the whole buffer first: 1.35
ms a flush, 0.3 s a candidate, and a 10-60 us call measured as the difference of two ~22 ms replays), one
flush buffer and one flush-only graph serve the process until `release`, and the graphs are captured
directly on one side stream (`torch.cuda.graph` empties the allocator's caches at every capture, and cuBLAS
keeps a workspace for every stream it ever ran on).
"""

from __future__ import annotations

import statistics

import torch

_flushes: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}
_baselines: dict[tuple[torch.device, int, int], torch.cuda.CUDAGraph] = {}
_streams: dict[int, torch.cuda.Stream] = {}


def graph_time(fn, calls: int = 16, flush_bytes: int = 256 << 20, pairs: int = 5) -> float:
    """Milliseconds one call of `fn` takes after an L2 flush, replayed in a CUDA graph: the median over
    `pairs` replays of (`calls` x (flush, fn)) minus a replay of `calls` flushes alone."""
    device = torch.device("cuda", torch.cuda.current_device())
    flush, total = _flush(device, flush_bytes)

    def flush_once():
        torch.sum(flush, dim=0, out=total)

    fn()  # compiled (or autotuned) before capture
    key = (device, calls, flush_bytes)
    if key not in _baselines:
        _baselines[key] = capture(lambda: _repeat(calls, flush_once))
    timed = capture(lambda: _repeat(calls, lambda: (flush_once(), fn())))
    differences = [replay_ms(timed) - replay_ms(_baselines[key]) for _ in range(pairs)]
    return max(statistics.median(differences) / calls, 1e-4)


def _flush(device: torch.device, flush_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = (device, flush_bytes)
    if key not in _flushes:
        # normal tensors, not inference tensors: the first timing may run under inference mode (the engine's
        # warm-up) and a later one outside it (a bench), which may not write into an inference tensor
        with torch.inference_mode(False):
            _flushes[key] = (
                torch.zeros(flush_bytes // 4, dtype=torch.float32, device=device),
                torch.empty((), dtype=torch.float32, device=device),
            )
    return _flushes[key]


def _repeat(calls: int, body) -> None:
    for _ in range(calls):
        body()


def capture(body) -> torch.cuda.CUDAGraph:
    """`body` captured on a side stream after one run outside the capture (lazy initialisations)."""
    stream = _side_stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        body()
        graph.capture_begin()
        try:
            body()
        finally:
            graph.capture_end()
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()  # the first replay uploads the graph
    return graph


def _side_stream() -> torch.cuda.Stream:
    """The current stream where it is a side stream already (the engine's capture stream), else one side stream
    for the process: cuBLAS allocates a workspace for every stream it runs on and keeps it (a new stream for each
    timing of a cuBLAS product left 128 MB more allocated after an engine's warm-up)."""
    device = torch.cuda.current_device()
    current = torch.cuda.current_stream(device)
    if current != torch.cuda.default_stream(device):
        return current
    if device not in _streams:
        _streams[device] = torch.cuda.Stream(device)
    return _streams[device]


def replay_ms(graph: torch.cuda.CUDAGraph) -> float:
    """Milliseconds one replay of `graph` takes (events around it, waited for)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def release() -> None:
    """Drop the flush buffer and the flush-only graphs, and give their memory back: an engine calls this when
    its warm-up is done timing, so that the 256 MB do not stay allocated beside the conversations."""
    if _flushes or _baselines:
        _flushes.clear()
        _baselines.clear()
        torch.cuda.empty_cache()
