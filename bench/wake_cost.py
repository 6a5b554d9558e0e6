"""What handing one token to each of N streaming consumers costs the backend's thread and the API's loop (CPU).

A decode step of N rows puts one text delta into each of N `RequestHandle`s from the engine's worker thread,
while the API's event loop consumes them (one `async for` per stream). This times the worker's share (the puts,
its wake-ups of the loop) and the loop's (thread CPU time), over steps paced like the GPU's.

    python -m bench.wake_cost [--streams 64] [--steps 400] [--step-ms 8]

Run it from an older tree (`cd base && python -m bench.wake_cost`) for a before / after on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

from glm_vision.backend import GenerationRequest, GenerationResult, RequestHandle, Usage
from glm_vision.backend.results import TextDelta
from glm_vision.conversation import Message


def measure(streams: int, steps: int, step_s: float) -> dict:
    handles = [RequestHandle(GenerationRequest([Message("user", "hi")])) for _ in range(streams)]
    put_s = []
    result = GenerationResult(
        text="", finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1), token_ids=()
    )

    def worker():
        for _ in range(steps):
            started = time.thread_time()
            for handle in handles:
                handle._put(TextDelta("x", 0, ()))
            put_s.append(time.thread_time() - started)
            time.sleep(step_s)  # the GPU's step
        for handle in handles:
            handle._finish(result, None)

    async def consume(handle):
        return [item async for item in handle]

    async def serve():
        tasks = [asyncio.create_task(consume(handle)) for handle in handles]
        await asyncio.sleep(0)
        loop_started = time.thread_time()
        thread = threading.Thread(target=worker)
        thread.start()
        streams_items = await asyncio.gather(*tasks)
        loop_s = time.thread_time() - loop_started
        thread.join()
        for items in streams_items:  # every consumer got every token (queued ones joined) and the result
            assert "".join(item.text for item in items[:-1]) == "x" * steps and items[-1] is result
        return loop_s

    loop_s = asyncio.run(serve())
    put_s.sort()
    return {"worker_us": 1e6 * put_s[len(put_s) // 2], "loop_us": 1e6 * loop_s / steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--step-ms", type=float, default=8.0)
    args = parser.parse_args(argv)
    row = measure(args.streams, args.steps, args.step_ms / 1000)
    print(
        f"{args.streams} streams: the worker's puts {row['worker_us']:.0f} us a step (median), "
        f"the loop's CPU {row['loop_us']:.0f} us a step (mean)"
    )


if __name__ == "__main__":
    main()
