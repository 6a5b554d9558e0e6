"""The one thread that owns the model: a bounded queue of requests, admitted into the scheduler
between its steps (so sessions never share mutable model state across threads).

Callers get a `RequestHandle`: iterate it (or `async for` it) for `TextDelta`s and a final
`GenerationResult`; `cancel()` stops the GPU work within one decode step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator

from .types import EngineError, EngineUnavailableError, GenerationRequest, GenerationResult, QueueFullError, TextDelta

log = logging.getLogger(__name__)

_DONE = object()


class RequestHandle:
    _ids = itertools.count(1)

    def __init__(self, request: GenerationRequest, worker: "GpuWorker") -> None:
        self.id = next(self._ids)
        self.request = request
        self.cancelled = threading.Event()
        self.submitted_at = time.perf_counter()
        self.result: GenerationResult | None = None
        self.queue_s = 0.0
        self.error: BaseException | None = None
        self._events: queue.Queue = queue.Queue()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._worker = worker

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def queue_position(self) -> int:
        """0 while running or done, n when n-1 requests are ahead of it."""
        return self._worker.position_of(self)

    # Called from the worker thread.
    def _put(self, item) -> None:
        self._events.put(item)
        waiter = self._waiter
        if waiter is not None:
            loop, event = waiter
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the consumer's event loop is gone
                pass

    def _emit(self, text: str) -> None:
        self._put(TextDelta(text))

    def _finish(self, result: GenerationResult | None, error: BaseException | None) -> None:
        if result is not None:
            result.usage.queue_s = self.queue_s
        self.result, self.error = result, error
        self._put(_DONE)

    def _next(self):
        item = self._events.get()
        if item is _DONE:
            if self.error is not None:
                raise self.error
            return self.result
        return item

    def __iter__(self) -> Iterator[TextDelta | GenerationResult]:
        while True:
            item = self._next()
            yield item
            if isinstance(item, GenerationResult):
                return

    async def __aiter__(self) -> AsyncIterator[TextDelta | GenerationResult]:
        """Async iteration without a thread per waiting request: the worker wakes the event loop."""
        event = asyncio.Event()
        self._waiter = (asyncio.get_running_loop(), event)
        try:
            while True:
                event.clear()
                if self._events.empty():
                    await event.wait()
                    continue
                item = self._next()
                yield item
                if isinstance(item, GenerationResult):
                    return
        finally:
            self._waiter = None

    def wait(self) -> GenerationResult:
        for item in self:
            if isinstance(item, GenerationResult):
                return item
        raise RuntimeError("request ended without a result")


class GpuWorker:
    """Owns the scheduler: admits waiting requests between steps and runs steps while there is work.

    `scheduler` is a batching `Scheduler`, or a plain function `run(request, cancel, emit) -> result`
    that serves one request at a time (backends that are not a local model)."""

    def __init__(self, scheduler, *, queue_size: int, name: str = "glm-vision-gpu") -> None:
        if callable(scheduler) and not hasattr(scheduler, "step"):
            from .scheduler import SerialScheduler

            scheduler = SerialScheduler(scheduler)
        self.scheduler = scheduler
        self.queue_size = queue_size
        self._pending: deque[RequestHandle] = deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._name = name
        self.deaths = 0
        self._admitting = 0  # taken from the queue, not yet in the scheduler

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, request: GenerationRequest) -> RequestHandle:
        handle = RequestHandle(request, self)
        with self._lock:
            if not self.alive:
                raise EngineUnavailableError("the GPU worker is not running; the server is restarting it, try again shortly")
            # Free decode slots take requests at the next step: only the rest counts as waiting.
            if len(self._pending) >= self.queue_size + max(0, self.scheduler.room - self._admitting):
                raise QueueFullError(
                    f"the server is busy: {len(self._pending)} requests are already waiting (limit {self.queue_size}); "
                    "try again in a few seconds",
                    retry_after_s=max(1.0, len(self._pending) * 2.0),
                )
            self._pending.append(handle)
            self._lock.notify()
        return handle

    def position_of(self, handle: RequestHandle) -> int:
        with self._lock:
            try:
                return self._pending.index(handle) + 1
            except ValueError:
                return 0

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def served(self) -> int:
        return self.scheduler.served

    def _take_admissible(self) -> list[RequestHandle]:
        """Waiting requests that fit now, in order; a session's next turn waits for its current one."""
        chosen = []
        busy = self.scheduler.busy_sessions()
        room = self.scheduler.room
        for handle in list(self._pending):
            if handle.cancelled.is_set():
                self._pending.remove(handle)
                handle._finish(None, EngineError("the request was cancelled before it started"))
                continue
            if len(chosen) >= room:
                break
            session_id = handle.request.session_id
            if session_id is not None and session_id in busy:
                continue
            self._pending.remove(handle)
            chosen.append(handle)
            if session_id is not None:
                busy.add(session_id)
        return chosen

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._stopping and self.scheduler.idle and not self._pending:
                        self._lock.wait()
                    if self._stopping:
                        for handle in self._pending:
                            handle._finish(None, EngineUnavailableError("the server is shutting down"))
                        self._pending.clear()
                        self.scheduler.abort(EngineUnavailableError("the server is shutting down"))
                        return
                    admitted = self._take_admissible()
                    self._admitting = len(admitted)
                for handle in admitted:
                    handle.queue_s = time.perf_counter() - handle.submitted_at
                    try:
                        self.scheduler.admit(handle)
                    finally:
                        with self._lock:
                            self._admitting -= 1
                if self.scheduler.idle:
                    continue
                self.scheduler.step()
        except BaseException:  # noqa: BLE001 - the thread itself died: report, and let the engine restart it
            self.deaths += 1
            log.exception("GPU worker died")
            try:
                self.scheduler.abort(EngineUnavailableError("the GPU worker failed; please retry"))
            finally:
                raise
