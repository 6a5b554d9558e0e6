"""Uploaded pictures and PDFs decoded in worker threads, a few at a time.

Decoding a 1920x1080 PNG takes ~25 ms of CPU, part of it holding the GIL (the pixel copies, the glue
around the hashing). A burst's uploads decoded all at once share the GIL and finish together, late: 32
screenshots sent at once were all submitted ~0.23 s after their handlers began, on the H200 machine's
host. A few at a time, they finish in the order they came, so the first request reaches the GPU while
the others are still decoding.
"""

from __future__ import annotations

import asyncio
import functools
import weakref

import anyio

DECODING_THREADS = 4
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _limiter() -> anyio.CapacityLimiter:
    """The running event loop's limiter (an anyio limiter belongs to the loop it is first used in)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(DECODING_THREADS)
    return limiter


async def decode_in_thread(function, *args, **kwargs):
    """`function(*args, **kwargs)` in a worker thread, at most `DECODING_THREADS` of them at once, first come
    first served."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs), limiter=_limiter())
