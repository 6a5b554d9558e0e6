"""The GIL switch interval the server runs a local engine under: 1 ms on a GPU, where the engine's worker
gives the GIL up for every CUDA call (measured faster through the API on the H200: bench/RESULTS.md), the
interpreter's 5 ms elsewhere."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from glm_vision.engine import engine as engine_module
from glm_vision.server import load_backend


@pytest.mark.parametrize(("device", "interval"), [("cuda:0", 0.001), ("cuda", 0.001), ("cpu", 0.005)])
def test_loading_a_local_engine_sets_the_switch_interval_for_its_device(settings, monkeypatch, device, interval):
    loaded = SimpleNamespace(info=SimpleNamespace(device=device), warmup=lambda: None)
    monkeypatch.setattr(engine_module.Engine, "load", classmethod(lambda cls, settings: loaded))
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.02)
    try:
        assert load_backend(settings) is loaded
        assert sys.getswitchinterval() == pytest.approx(interval)
    finally:
        sys.setswitchinterval(before)
