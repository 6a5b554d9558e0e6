"""bench/bench_http.py end to end on the tiny checkpoint, where Gradio cannot be imported (as on the GPU
machine), and the API-only app it serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from glm_vision.server import AppState, create_api_app
from glm_vision.settings import Settings
from tests.doubles import ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_GRADIO = (
    "import runpy, sys; sys.modules['gradio'] = None; sys.argv[0] = 'bench_http'; "
    "runpy.run_module('bench.bench_http', run_name='__main__')"
)


def test_the_http_bench_runs_without_gradio_and_serves_the_follow_up_from_the_caches(tmp_path):
    out = tmp_path / "http.json"
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_GRADIO, "--tiny", "--repeats", "1", "--answer-tokens", "8", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| cold |" in run.stdout and "| follow-up |" in run.stdout
    results = json.loads(out.read_text())
    cold, follow = results["rows"]["cold"], results["rows"]["follow-up"]
    for row in (cold, follow):
        assert row["http_ttft_s"][0] > 0 and row["engine_ttft_s"][0] > 0
        assert len(row["http_first_text_s"]) == 1  # a generated token's text came through the stream
        assert row["http_prompt_tokens"] == row["engine_prompt_tokens"]  # the same request both ways
    assert results["answers"][0]
    assert cold["http_cached_tokens"] == cold["engine_cached_tokens"] == [0]
    # the follow-up's picture came from the decoded-upload cache, its conversation's KV was reused
    assert follow["upload_cache_hits"] == [1]
    assert 0 < follow["http_cached_tokens"][0] == follow["engine_cached_tokens"][0] < follow["http_prompt_tokens"]
    assert set(results["breakdown_ms"]) >= {"base64-decode the data URL", "PNG decode + pixel hash (cache miss)"}


def test_the_api_app_serves_health_and_v1_but_no_ui():
    backend = ScriptedBackend("hello")
    try:
        with TestClient(create_api_app(AppState(Settings(model="scripted"), backend=backend))) as client:
            assert client.get("/health").json()["model"] == "scripted-glm"
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["scripted-glm"]
            answer = client.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert answer.json()["choices"][0]["message"]["content"] == "hello"
            assert client.get("/").status_code == 404
            assert client.get("/v1/nothing").json()["error"]["code"] == "unknown_url"
    finally:
        backend.shutdown()
