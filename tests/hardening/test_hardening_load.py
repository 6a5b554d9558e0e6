"""Issue 8, load and soak on CPU (tiny checkpoint, loopback): 1,000 sequential API requests with
images (resident memory grows < 10 % after warm-up, cache bytes within budgets), 32 concurrent
streams (each completes or gets a 429, zero 5xx), 100 browser-less UI sessions opened and closed
(their sessions, cached features, runs and files released). The same code is bench/soak.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.soak import concurrent_streams, sequential, soak_settings, ui_sessions
from glm_vision.server import AppState
from tests.api_helpers import serve


@pytest.fixture(scope="module")
def soak(tiny_model_dir):
    from glm_vision.engine import Engine

    settings = soak_settings(str(tiny_model_dir))
    engine = Engine.load(settings)
    engine.warmup()
    live = serve(AppState(settings, backend=engine))
    yield live, engine, settings
    live.__exit__()
    engine.shutdown()


def test_1000_sequential_requests_with_images(soak):
    live, engine, _ = soak
    figures = sequential(live.url, engine, count=1000, warmup=100)
    print(figures)
    assert figures["statuses"] == {200: 1000}
    assert figures["rss_growth_pct"] < 10
    assert 0 < figures["feature_cache_peak_bytes"] <= figures["feature_cache_budget_bytes"]
    assert 0 < figures["kv_peak_bytes"] <= figures["kv_budget_bytes"]
    assert figures["sessions_end"] <= figures["max_sessions"]


def test_32_concurrent_streams_complete_or_429(soak):
    live, engine, _ = soak
    figures = concurrent_streams(live.url, streams=32)
    print(figures)
    assert figures["finished_threads"] == 32
    assert figures["5xx"] == 0
    assert figures["completed"] + figures["refused_429"] == 32
    assert figures["completed"] >= engine.settings.queue_size  # the queue filled before anyone was refused
    assert engine.worker.alive and engine.worker.queued == 0


def test_100_ui_sessions_opened_and_closed_release_their_memory(soak):
    _, engine, settings = soak
    figures = ui_sessions(AppState(replace(settings, max_new_tokens=2), backend=engine), engine, count=100)
    print(figures)
    assert figures["errors"] == 0
    assert figures["ui_sessions_left"] == 0 and figures["ui_feature_bytes_left"] == 0
    assert figures["running_left"] == 0 and figures["tracked_files_left"] == 0
    assert figures["rss_growth_pct"] < 10
