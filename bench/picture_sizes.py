"""What the first picture of each size costs after the engine's warm-up (`bench_engine --picture-sizes`): the
TTFT of the first and of the second request with a picture of that size, and optionally where Python spent the
time of both (bench/RESULTS.md, seventeenth session: 16-50 ms more for the first, on the H200)."""

from __future__ import annotations

from bench.step_clock import step_clock
from bench.workload import QUESTION, screenshot
from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import Engine
from glm_vision.images import load_image


def first_of_each_size(
    engine: Engine, sizes: list[tuple[int, int]], profile: bool = False
) -> dict[str, tuple[float, float]]:
    """Per picture size, the TTFT (ms) of the first request after warm-up with a picture of that size (other
    pixels each time, nothing cached) and of the second: what a user's first screenshot of a new size pays.
    `profile`: Python's time over the first size's two requests (cProfile, bench/step_clock.py), printed."""
    times = {}
    for index, (width, height) in enumerate(sizes):
        pair = []
        for seed in (1000 + 2 * index, 1001 + 2 * index):
            session = f"size-{seed}"
            request = GenerationRequest(
                [Message("user", QUESTION, [load_image(screenshot(seed, (width, height)))])],
                SamplingParams.greedy(1),
                session_id=session,
                cache_scope=session,
            )
            if profile and index == 0:
                result, tables = step_clock().profiled(lambda request=request: engine.generate(request))
            else:
                result, tables = engine.generate(request), {}
            assert result.usage.image_cache_hits == 0
            pair.append(result.usage.ttft_s * 1000)
            engine.close_session(session)
            for thread, table in tables.items():
                print(
                    f"{width}x{height}, request {len(pair)} (TTFT {pair[-1]:.1f} ms), Python in the {thread}:\n{table}"
                )
        times[f"{width}x{height}"] = (pair[0], pair[1])
    return times
