"""The one thread that owns the model: a bounded queue of requests, admitted into the scheduler
between its steps (so sessions never share mutable model state across threads).

Callers get a `RequestHandle` (see `backend.handle`); `cancel()` stops the GPU work within one
decode step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from ..backend import EngineError, EngineUnavailableError, GenerationRequest, QueueFullError, RequestHandle

log = logging.getLogger(__name__)


class GpuWorker:
    """Owns the scheduler: admits waiting requests between steps and runs steps while there is work.

    `scheduler` is the batching `Scheduler`, or a `SerialScheduler` that serves one request at a time
    through a plain function (the scripted test backend)."""

    def __init__(self, scheduler, *, queue_size: int, name: str = "glm-vision-gpu") -> None:
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
        handle = RequestHandle(request, self.position_of)
        with self._lock:
            if not self.alive:
                raise EngineUnavailableError(
                    "the GPU worker is not running; the server is restarting it, try again shortly"
                )
            # Free decode slots take requests at the next step: only the rest counts as waiting.
            if len(self._pending) >= self.queue_size + max(0, self.scheduler.room - self._admitting):
                retry_s = max(1, len(self._pending) * 2)
                raise QueueFullError(
                    f"the server is busy: {len(self._pending)} requests are already waiting (limit {self.queue_size}); "
                    f"try again in {retry_s} seconds",
                    retry_after_s=retry_s,
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
        rows = 0  # a request of n choices takes n rows
        for handle in list(self._pending):
            if handle.cancelled.is_set():
                self._pending.remove(handle)
                handle._finish(None, EngineError("the request was cancelled before it started"))
                continue
            if rows + min(handle.request.n, self.scheduler.max_batch) > room:
                break
            session_id = handle.request.session_id
            if session_id is not None and session_id in busy:
                continue
            self._pending.remove(handle)
            chosen.append(handle)
            rows += handle.request.n
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
