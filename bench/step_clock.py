"""The scheduler's steps timed from the host: each step's wall time, and how much of it the host spent
waiting for the GPU (for the tokens of the step before, `HostCopy.wait`).

The step is pipelined (scheduler.py): while the GPU runs step n, the host books step n-1's tokens and
launches step n+1. So where the GPU is the bottleneck the host waits in every step, and the step's wall
time is the GPU's; where the host waits for nothing, Python's work per step (sampling launches,
detokenizing, the streams' consumers taking the GIL) is the bottleneck and the GPU idles between steps.
"""

from __future__ import annotations

import cProfile
import functools
import io
import pstats
import statistics
import sys
import time

from glm_vision.engine import host_copy, scheduler


@functools.cache
def step_clock() -> StepClock:
    """The process's one clock (it wraps the scheduler's methods once)."""
    return StepClock()


# From Python 3.12 cProfile runs on sys.monitoring: one profiler enabled at a time in the whole process
# (a second one's `enable` raises), seeing every thread's calls.
ONE_PROFILER_A_THREAD = sys.version_info < (3, 12)


class StepClock:
    """Times every `Scheduler.step` (and its waits) while switched on; decode-only steps kept apart."""

    def __init__(self) -> None:
        self.on = False
        # the worker thread's Python, step by step and each admission (a request's prompt built), while set
        self.profiler: cProfile.Profile | None = None
        self.steps: list[tuple[float, float, bool]] = []  # (wall s, waited s, decode rows only)
        self._waited = 0.0
        original_step, original_wait = scheduler.Scheduler.step, host_copy.HostCopy.wait
        original_admit = scheduler.Scheduler.admit

        def step(sched):
            if not self.on:
                return original_step(sched)
            decode_only = bool(sched.rows) and not sched.prefilling
            self._waited = 0.0
            started = time.perf_counter()
            if self.profiler is not None:
                self.profiler.enable()
            try:
                return original_step(sched)
            finally:
                if self.profiler is not None:
                    self.profiler.disable()
                self.steps.append((time.perf_counter() - started, self._waited, decode_only))

        def wait(copy, count):
            started = time.perf_counter()
            try:
                return original_wait(copy, count)
            finally:
                self._waited += time.perf_counter() - started

        def admit(sched, handle):
            if self.profiler is None:
                return original_admit(sched, handle)
            self.profiler.enable()
            try:
                return original_admit(sched, handle)
            finally:
                self.profiler.disable()

        scheduler.Scheduler.step = step
        scheduler.Scheduler.admit = admit
        host_copy.HostCopy.wait = wait

    def start(self) -> None:
        self.steps.clear()
        self.on = True

    def stop(self) -> None:
        self.on = False

    def profile_table(self, limit: int = 30) -> str:
        """What the steps' Python spent its time in (cProfile, by own time; slowed ~2x by the profiler)."""
        return _table(self.profiler, limit, "tottime")

    def profiled(self, run, limit: int = 30, worker_cumulative: bool = False) -> tuple[object, dict[str, str]]:
        """`run()`'s result, and where Python spent its time while it ran: the worker's steps and admissions
        (by own time; also by cumulative time with `worker_cumulative`), and the calling thread (by cumulative
        time: what it waited in)."""
        self.profiler = cProfile.Profile()
        caller = cProfile.Profile() if ONE_PROFILER_A_THREAD else None
        self.start()
        if caller is not None:
            caller.enable()
        try:
            result = run()
        finally:
            if caller is not None:
                caller.disable()
            self.stop()
        tables = {"worker": self.profile_table(limit)}
        if worker_cumulative:
            tables["worker_cumulative"] = _table(self.profiler, limit, "cumulative")
        tables["caller"] = _table(caller, limit, "cumulative") if caller else "(one profiler a process on Python 3.12+)"
        self.profiler = None
        return result, tables

    def median_step_ms(self) -> float:
        return 1000 * statistics.median(wall for wall, _, _ in self.steps)

    def decode_summary(self) -> dict:
        """The decode-only steps: how many, their median wall time and the median of it the host waited for
        the GPU, and the median of the host's own time (wall - waited): ms."""
        decode = [(wall, waited) for wall, waited, only in self.steps if only]
        if not decode:
            return {"decode_steps": 0}
        return {
            "decode_steps": len(decode),
            "decode_step_ms": 1000 * statistics.median(wall for wall, _ in decode),
            "gpu_wait_ms": 1000 * statistics.median(waited for _, waited in decode),
            "host_ms": 1000 * statistics.median(wall - waited for wall, waited in decode),
        }


def _table(profiler: cProfile.Profile, limit: int, sort: str) -> str:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(limit)
    return out.getvalue()
