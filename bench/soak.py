"""Soak and load on CPU with the tiny checkpoint, over loopback (issue 8's figures).

    python -m bench.soak                    # 1,000 sequential requests with images, 32 concurrent streams,
                                            # 100 UI sessions opened and closed; prints the figures as JSON
    python -m bench.soak --requests 300     # smaller

The CI suite (tests/hardening/test_hardening_load.py) runs the same functions at a bounded size."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psutil

from glm_vision.heap import freeze_startup_heap
from glm_vision.server import AppState
from glm_vision.settings import Settings
from tests.api_helpers import data_url, serve
from tests.conftest import make_picture

MB = 1024 * 1024


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def soak_settings(model_dir: str) -> Settings:
    """Small cache budgets, so that eviction is exercised within a few hundred requests."""
    return Settings(
        model=model_dir,
        device="cpu",
        max_context_tokens=1024,
        max_new_tokens=4,
        vision_cache_mb=1,
        kv_cache_mb=2,
        max_sessions=8,
        queue_size=8,
    )


def sequential(url: str, engine, count: int, warmup: int, images: int = 48) -> dict:
    """`count` API requests one after another, each with an image (cycling over `images` pictures,
    half of them follow-up turns); resident memory after warm-up vs at the end, cache bytes vs budgets."""
    pictures = [data_url(make_picture(seed, (84, 56))) for seed in range(images)]
    statuses: dict[int, int] = {}
    peak_features = peak_kv = 0
    base = None
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client:
        for index in range(count):
            if index == warmup:
                base = rss()
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": pictures[index % images]}},
                        {"type": "text", "text": f"question {index % 7}"},
                    ],
                }
            ]
            if index % 2:
                messages += [{"role": "assistant", "content": "an answer"}, {"role": "user", "content": "and then?"}]
            response = client.post(
                url + "/v1/chat/completions",
                json={"messages": messages, "max_tokens": 1 + index % 4},
                headers={"Authorization": f"Bearer tenant-{index % 3}"},
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            peak_features = max(peak_features, engine.features.bytes_used)
            peak_kv = max(peak_kv, engine.sessions.kv_bytes)
    end = rss()
    return {
        "requests": count,
        "statuses": statuses,
        "seconds": round(time.perf_counter() - started, 1),
        "rss_after_warmup_mb": round(base / MB, 1),
        "rss_end_mb": round(end / MB, 1),
        "rss_growth_pct": round(100 * (end - base) / base, 2),
        "feature_cache_peak_bytes": peak_features,
        "feature_cache_budget_bytes": engine.features.budget_bytes,
        "kv_peak_bytes": peak_kv,
        "kv_budget_bytes": engine.sessions.kv_budget_bytes,
        "sessions_end": len(engine.sessions),
        "max_sessions": engine.settings.max_sessions,
    }


def concurrent_streams(url: str, streams: int = 32) -> dict:
    """`streams` streamed requests at once: each completes ([DONE]) or is refused with 429."""
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(streams)
    picture = data_url(make_picture(5, (56, 56)))

    def one(index: int) -> None:
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": picture}},
                        {"type": "text", "text": f"stream {index}"},
                    ],
                }
            ],
            "max_tokens": 8,
            "stream": True,
        }
        barrier.wait(60)
        done = False
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=180) as response:
                status = response.status_code
                for line in response.iter_lines():
                    if line == "data: [DONE]":
                        done = True
                    if line.startswith("data: {") and '"error"' in line:
                        status = 599  # an error event after the 200
        except httpx.HTTPError:
            status = 598
        with lock:
            results.append((status, done))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    statuses: dict[int, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "streams": streams,
        "statuses": statuses,
        "completed": sum(1 for s, d in results if s == 200 and d),
        "refused_429": statuses.get(429, 0),
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
        "finished_threads": len(results),
    }


def ui_sessions(state, engine, count: int = 100) -> dict:
    """`count` browser-less UI sessions (the UI's own handlers), each sending an image and closing."""
    from tests.ui.ui_driver import FakeRequest, handlers, send

    h = handlers(state)
    folder = Path(tempfile.mkdtemp())
    picture = folder / "p.png"
    make_picture(9, (84, 56)).save(picture)
    base_sessions = {s for s in engine.sessions._sessions if s.startswith("ui-")}
    base_rss, errors = rss(), 0
    peak_sessions = 0
    for _ in range(count):
        request = FakeRequest()
        out = send(h, request, "what is this?", [str(picture)])
        errors += bool(out["error"])
        peak_sessions = max(peak_sessions, len(engine.sessions))
        h.unload(request)
    left = {s for s in engine.sessions._sessions if s.startswith("ui-")} - base_sessions
    ui_scope_bytes = sum(engine.features.scope_bytes(s) for s in left)
    end = rss()
    return {
        "sessions": count,
        "errors": errors,
        "ui_sessions_left": len(left),
        "ui_feature_bytes_left": ui_scope_bytes,
        "running_left": h.running(),
        "tracked_files_left": len(h.files),
        "peak_sessions": peak_sessions,
        "rss_before_mb": round(base_rss / MB, 1),
        "rss_after_mb": round(end / MB, 1),
        "rss_growth_pct": round(100 * (end - base_rss) / base_rss, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--ui-sessions", type=int, default=100)
    parser.add_argument("--no-freeze", action="store_true", help="leave the heap unfrozen (the server freezes it)")
    args = parser.parse_args()
    from glm_vision.engine import Engine
    from glm_vision.synthetic.tiny import build_tiny_checkpoint

    model_dir = build_tiny_checkpoint(Path(tempfile.mkdtemp()), seed=0)
    settings = soak_settings(str(model_dir))
    engine = Engine.load(settings)
    engine.warmup()
    live = serve(AppState(settings, backend=engine))
    if not args.no_freeze:
        freeze_startup_heap()  # as the server does once its backend is ready
    try:
        figures = {
            "sequential": sequential(live.url, engine, args.requests, args.warmup),
            "concurrent": concurrent_streams(live.url, args.streams),
            "ui_sessions": ui_sessions(
                AppState(replace(settings, max_new_tokens=2), backend=engine), engine, args.ui_sessions
            ),
        }
    finally:
        live.__exit__()
        engine.shutdown()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
