"""The garbage collector's pauses over a stretch of a benchmark (`gc.callbacks`): how many collections, how
many of them full (generation 2), the longest full one and all of them together. A collection holds the GIL:
the engine's worker launches nothing and the event loop answers no one while it runs."""

from __future__ import annotations

import gc
import time


class CollectorPauses:
    """Records every collection while entered (a context manager)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._started: float | None = None

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))
            self._started = None

    def __enter__(self) -> CollectorPauses:
        self.pauses.clear()
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict:
        full = [seconds for generation, seconds in self.pauses if generation == 2]
        return {
            "gc_collections": len(self.pauses),
            "gc_full": len(full),
            "gc_full_longest_ms": 1000 * max(full, default=0.0),
            "gc_total_ms": 1000 * sum(seconds for _, seconds in self.pauses),
        }
