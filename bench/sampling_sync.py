"""Does a decode step's sampling wait for the GPU? (CUDA)

The scheduler launches step n+1 while the GPU still runs step n; any call that synchronizes with the device
on the way (a hidden `cudaStreamSynchronize`, a pageable copy) would make the host wait for the step in
flight and leave the GPU idle while the host books tokens. This puts ~`--busy-ms` of GPU work in the queue,
then times on the host one `BatchSampler` call over (rows, vocab) logits with the load levels' sampling
(the model's defaults: temperature 0.8, top-k 2, top-p 0.6, repetition penalty 1.1, min_new_tokens), under
torch's sync debug mode. A call that returns long before the queued work is done did not wait.

    python -m bench.sampling_sync [--rows 1 8 32 64] [--vocab 151552]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from glm_vision.backend import SamplingParams
from glm_vision.engine.sampling import BatchSampler, SamplerState


def host_ms(rows: int, vocab: int, busy_ms: float, repeats: int = 5) -> tuple[float, float, list[str]]:
    """(the sampler's host time, the queued work's GPU time, the sync warnings): medians of `repeats`."""
    device = torch.device("cuda")
    params = SamplingParams(max_new_tokens=1024, min_new_tokens=1024)
    states = [SamplerState(params, vocab, device, [1, 2, 3], {0}) for _ in range(rows)]
    sampler = BatchSampler(device)
    logits = torch.randn(rows, vocab, device=device, dtype=torch.bfloat16)
    sampler(logits, states)  # the plan and the seen buffer built
    torch.cuda.synchronize()
    cycles = int(busy_ms * 1e-3 * torch.cuda.get_device_properties(device).clock_rate * 1e3)
    hosts, gpus, caught = [], [], []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        with warnings.catch_warnings(record=True) as found:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            began = time.perf_counter()
            sampler(logits, states)
            hosts.append(1e3 * (time.perf_counter() - began))
            torch.cuda.set_sync_debug_mode("default")
        caught += [str(w.message).splitlines()[0] for w in found if "prototype feature" not in str(w.message)]
        torch.cuda.synchronize()
        gpus.append(start.elapsed_time(end))
    return sorted(hosts)[repeats // 2], sorted(gpus)[repeats // 2], sorted(set(caught))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--vocab", type=int, default=151552)
    parser.add_argument("--busy-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    for rows in args.rows:
        host, gpu, caught = host_ms(rows, args.vocab, args.busy_ms)
        verdict = "waited for the GPU" if host > 0.5 * gpu else "did not wait"
        print(f"{rows} rows: the sampler's host time {host:.3f} ms with {gpu:.1f} ms of GPU work queued ({verdict})")
        for message in caught:
            print(f"  sync warning: {message}")


if __name__ == "__main__":
    main()
