"""The in-process inference engine: model loading, prompt building, caches, sessions, scheduler,
prefill/decode and the GPU worker.

Importing this package is cheap: `Engine`, `load_model` and `LoadedModel` (which need torch) are
imported on first use, so code that only needs the backend contract never loads torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Engine": ".engine",
    "LoadedModel": ".loader",
    "load_model": ".loader",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
