"""How long the engine takes to get ready with the product's defaults, and where that goes: the decode and
prefill graphs' capture and the warm-up requests (the engine's own log lines), the Triton kernels compiled
(ptxas runs) and the GEMV shapes autotuned (Triton's autotuner prints each one it times).

    python -m bench.warmup [--config bench/glm-4.6v-flash-config.json]

Run it on a fresh machine for a user's first start (Triton's and Inductor's caches empty), then again for a
restart (caches full). Full-size random weights on the GPU; the tiny checkpoint on the CPU (`--tiny`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).with_name("glm-4.6v-flash-config.json")


@contextlib.contextmanager
def counted_compiles(counts: dict):
    """Count and time Triton's ptxas runs (one per kernel compiled, none for a kernel from the cache)."""
    from triton.backends.nvidia import compiler

    original = compiler.CUDABackend.make_cubin

    def make_cubin(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            counts["ptxas runs"] += 1
            counts["ptxas s"] += time.perf_counter() - started

    compiler.CUDABackend.make_cubin = make_cubin
    try:
        yield counts
    finally:
        compiler.CUDABackend.make_cubin = original


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="the full-size model's config (GPU)")
    parser.add_argument("--tiny", action="store_true", help="the tiny checkpoint (CPU: checks that this runs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRITON_PRINT_AUTOTUNING", "1")  # before Triton reads its knobs

    import torch

    from bench.workload import full_size_model, tiny_model
    from glm_vision.engine import Engine
    from glm_vision.settings import Settings

    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("glm_vision.engine").setLevel(logging.INFO)  # the warm-up's phases and their times
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    loaded = tiny_model(Path(tempfile.mkdtemp())) if device == "cpu" else full_size_model(args.config, device)
    counts = {"ptxas runs": 0, "ptxas s": 0.0}
    engine = Engine(Settings(model="(in memory)", device=device), loaded)
    with counted_compiles(counts) if device == "cuda" else contextlib.nullcontext():
        started = time.perf_counter()
        engine.warmup()
        took = time.perf_counter() - started
    engine.shutdown()
    print(
        f"warm-up {took:.1f} s on {device} with the default settings ({engine.runner.slab.slots} decode slots); "
        f"{counts['ptxas runs']} kernels compiled (ptxas {counts['ptxas s']:.1f} s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
