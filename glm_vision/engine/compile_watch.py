"""Triton kernels first compiled (or loaded from Triton's disk cache) after the warm-up. Each one stalls
the user's step that needs it (a compile takes ~0.1-1 s), so each is logged with what was new about it
and counted: `bench.load` reports the count per level, which tells a first burst's stall from a slow step.

Process-wide (Triton's hook is), installed by the first engine that warms up; an engine warming up later
in the same process pauses the count while it does.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager

log = logging.getLogger(__name__)

_lock = threading.Lock()
_installed = False
_warming = 0  # engines warming up now
_compiled = 0  # kernels compiled while no engine was warming up


def compiled_while_serving() -> int:
    """Triton kernels compiled outside every warm-up so far in this process."""
    return _compiled


@contextmanager
def warming_up():
    """Compiles in this block (on any thread) are the warm-up's own: not counted, not logged."""
    global _warming
    installed = _install()
    with _lock:
        _warming += 1
    try:
        yield installed
    finally:
        with _lock:
            _warming -= 1


def _install() -> bool:
    """Put the hook in Triton's runtime (once; a hook already there is still called). False where this
    Triton has no such hook or there is no Triton."""
    global _installed
    try:
        from triton import knobs
    except ImportError:
        return False
    runtime = getattr(knobs, "runtime", None)
    if runtime is None or not hasattr(runtime, "jit_post_compile_hook"):
        return False
    with _lock:
        if not _installed:
            previous = runtime.jit_post_compile_hook
            runtime.jit_post_compile_hook = lambda **kwargs: _compiled_one(previous, kwargs)
            _installed = True
    return True


def _compiled_one(previous, kwargs: dict):
    global _compiled
    with _lock:
        serving = _warming == 0
        if serving:
            _compiled += 1
    if serving:
        log.warning("Triton compiled a kernel in a user's step (the warm-up did not): %s", _describe(kwargs))
    return previous(**kwargs) if previous is not None else None


def _describe(kwargs: dict) -> str:
    """The kernel's name, its compile-time constants (what makes one variant differ from another) and its
    warps and stages."""
    fn = kwargs.get("fn")
    names = getattr(getattr(fn, "jit_function", None), "arg_names", [])
    compiled = kwargs.get("compile") or {}

    def name_of(path) -> str:  # Triton keys a constant by its argument's path: a tuple of indices
        return names[path[0]] if isinstance(path, tuple) and len(path) == 1 and path[0] < len(names) else str(path)

    shown = [f"{name_of(path)}={value}" for path, value in (compiled.get("constants") or {}).items()]
    shown += [f"{option}={compiled[option]}" for option in ("num_warps", "num_stages") if option in compiled]
    return f"{getattr(fn, 'name', '?')}({', '.join(shown)})"
