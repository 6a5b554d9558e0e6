"""A running request as its caller sees it, whichever backend serves it.

Iterate a `RequestHandle` (or `async for` it) for `TextDelta`s (with n > 1, a `ChoiceEnd` for each
choice done before the last) and one final `GenerationResult`;
`cancel()` asks the backend to stop (the local engine stops within one decode step, a remote
server when its stream is closed). The backend's thread feeds it with `_emit` and `_finish`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from .loop_waker import LoopWaker, waker_for
from .requests import GenerationRequest
from .results import Choice, ChoiceEnd, GenerationResult, TextDelta

_DONE = object()
log = logging.getLogger(__name__)


def _not_queued(handle: RequestHandle) -> int:
    return 0


class RequestHandle:
    _ids = itertools.count(1)

    def __init__(self, request: GenerationRequest, position: Callable[[RequestHandle], int] = _not_queued) -> None:
        self.id = next(self._ids)
        self.request = request
        self.cancelled = threading.Event()
        self.submitted_at = time.perf_counter()
        self.result: GenerationResult | None = None
        self.queue_s = 0.0
        self.error: BaseException | None = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # C-implemented: a few times cheaper a put or get
        self._waiter: tuple[LoopWaker, asyncio.Event] | None = None
        self._position = position
        self._done_lock = threading.Lock()
        self._ended = False
        self._on_done: list[Callable[[], None]] = []

    def cancel(self) -> None:
        self.cancelled.set()

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the request has ended: now if it has, else on the backend's thread as it ends."""
        with self._done_lock:
            if not self._ended:
                self._on_done.append(callback)
                return
        callback()

    @property
    def queue_position(self) -> int:
        """0 while running or done, n when n-1 requests are ahead of it."""
        return self._position(self)

    # Called from the backend's thread.
    def _put(self, item) -> None:
        self._events.put(item)
        waiter = self._waiter
        if waiter is not None:
            waker, event = waiter
            waker.wake(event)  # shared with the other requests' consumers on that loop (loop_waker.py)

    def _emit(self, text: str, index: int = 0, logprobs: tuple = ()) -> None:
        self._put(TextDelta(text, index, tuple(logprobs)))

    def _choice_end(self, choice: Choice) -> None:
        self._put(ChoiceEnd(choice))

    def _finish(self, result: GenerationResult | None, error: BaseException | None) -> None:
        if result is not None:
            result.usage.queue_s = self.queue_s
        self.result, self.error = result, error
        self._put(_DONE)
        with self._done_lock:
            self._ended = True
            callbacks, self._on_done = self._on_done, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the backend's thread serves everyone: a caller's callback must not stop it
                log.exception("a request's on_done callback failed")

    def _next(self):
        return self._resolve(self._events.get())

    def _resolve(self, item):
        if item is _DONE:
            if self.error is not None:
                raise self.error
            return self.result
        return item

    def _merge_queued(self, delta: TextDelta) -> tuple[TextDelta, object]:
        """`delta` with the text deltas of its choice queued right behind it, as one; and the first queued
        item it could not take (None when the queue ran dry)."""
        texts, logprobs = [delta.text], list(delta.logprobs)
        after = None
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
            if not (isinstance(item, TextDelta) and item.index == delta.index):
                after = item
                break
            texts.append(item.text)
            logprobs.extend(item.logprobs)
        if len(texts) == 1:
            return delta, after
        return TextDelta("".join(texts), delta.index, tuple(logprobs)), after

    def __iter__(self) -> Iterator[TextDelta | ChoiceEnd | GenerationResult]:
        while True:
            item = self._next()
            yield item
            if isinstance(item, GenerationResult):
                return

    async def __aiter__(self) -> AsyncIterator[TextDelta | ChoiceEnd | GenerationResult]:
        """Async iteration without a thread per waiting request: the backend wakes the event loop.

        Text deltas of one choice that queued up while the consumer was busy come as one (their text and
        logprobs joined): an event loop serving many streams that falls behind the GPU then writes one
        chunk for several tokens instead of falling further behind."""
        event = asyncio.Event()
        self._waiter = (waker_for(asyncio.get_running_loop()), event)
        after = None  # taken from the queue, not yet given out
        try:
            while True:
                event.clear()
                if after is None and self._events.empty():
                    await event.wait()
                    continue
                if after is not None:
                    raw, after = after, None
                else:
                    raw = self._events.get()
                item = self._resolve(raw)
                if isinstance(item, TextDelta):
                    item, after = self._merge_queued(item)
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
