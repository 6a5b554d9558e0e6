"""Waking asyncio consumers from the backend's thread, one write to their loop's pipe for many of them.

`loop.call_soon_threadsafe` writes a byte to the loop's self-pipe every time (a system call in the backend's
thread, and a callback and a pipe read on the loop's). A decode step of 64 streams hands a token to 64
consumers on the API's loop: the wake-ups set before the loop has run the last one share it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWaker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def waker_for(loop: asyncio.AbstractEventLoop) -> LoopWaker:
    """The loop's one waker."""
    with _wakers_lock:
        waker = _wakers.get(loop)
        if waker is None:
            waker = _wakers[loop] = LoopWaker(loop)
        return waker


class LoopWaker:
    """Sets asyncio events on one loop from other threads, batching the events set between the loop's turns."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: set[asyncio.Event] = set()

    def wake(self, event: asyncio.Event) -> None:
        """Set `event` on the loop soon. An event added while a wake-up is scheduled is set by it: the loop takes
        the set under the lock, so an addition lands either in the set it takes or in a fresh one that schedules
        its own wake-up."""
        with self._lock:
            scheduled = bool(self._pending)
            self._pending.add(event)
        if scheduled:
            return
        try:
            self.loop.call_soon_threadsafe(self._set_pending)
        except RuntimeError:  # the loop is closed: nobody is left to wake
            with self._lock:
                self._pending.clear()

    def _set_pending(self) -> None:
        with self._lock:
            events, self._pending = self._pending, set()
        for event in events:
            event.set()
