"""The engine's own threads (the GPU worker, the idle-session sweeper): what they hold and how they end."""

from __future__ import annotations

import gc
import threading
import weakref

from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import Engine


def test_no_thread_of_the_engine_holds_it_and_shutdown_ends_them_all(settings):
    """The engine's threads hold no reference to it: dropping it frees it (and its tensors) in the caller's
    thread. Before, the idle-session sweeper's target was a bound method of the engine: when it was the last
    reference, the engine was freed by that thread as it ended, possibly while the interpreter exited, and
    freeing a tensor then aborted the process ("terminate called without an active exception": ~1 in 40 runs of
    `python -m bench.warmup --tiny`, a core dump showed that thread). And shutdown waits for every thread the
    engine started."""
    before = set(threading.enumerate())
    engine = Engine.load(settings)
    engine.generate(GenerationRequest([Message("user", "hi")], SamplingParams.greedy(2)))
    started = set(threading.enumerate()) - before
    assert {thread.name for thread in started} >= {"glm-vision-sessions"}
    worker, closing, freed = engine.worker, engine._closing, weakref.ref(engine)
    del engine
    gc.collect()
    assert freed() is None  # nothing running held it
    closing.set()
    worker.stop()

    engine = Engine.load(settings)
    started = set(threading.enumerate()) - before
    engine.shutdown()
    assert started and not [thread.name for thread in started if thread.is_alive()]
