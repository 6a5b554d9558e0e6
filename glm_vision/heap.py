"""Python's cyclic garbage collector and the long-lived heap of a serving process.

A full (generation-2) collection walks every object the collector tracks, holding the GIL: in the server
with the demo model, ~570k objects after start and ~0.3 s a full collection (bench/RESULTS.md), during which the
engine's worker launches nothing on the GPU and the event loop answers no one. It comes whenever enough
objects have survived younger collections, i.e. at some point of a busy stretch. What is alive once the
process is up (model, tokenizer, UI) lives as long as the process: frozen into the collector's permanent
generation it is never walked again, and a full collection walks only what requests made since (vLLM and
LightLLM freeze theirs after start for the same stalls)."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect what is garbage now, then freeze everything still alive; returns the objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
