"""Issue 8, faults: CUDA out-of-memory in the vision encoder, in prefill and in decode (simulated by
making the runner raise torch.OutOfMemoryError), a GPU worker that dies, a model that cannot load.
Each gives a clear error, and the next request works. (A client disconnect stopping the generation
is tested in tests/api/test_api_queue.py: test_disconnect_mid_stream_cancels_generation and the two after it.)"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import httpx
import pytest
import torch

from glm_vision.backend import EngineError, GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import Engine
from glm_vision.server import AppState
from tests.api_helpers import free_port, image_part, raw_request, serve, wait_until
from tests.conftest import make_picture


@pytest.fixture(scope="module")
def fault_engine(settings):
    engine = Engine.load(replace(settings, max_context_tokens=1024))
    engine.warmup()
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def server(settings, fault_engine):
    live = serve(AppState(replace(settings, max_context_tokens=1024), backend=fault_engine))
    yield live
    live.__exit__()


def ask(server, seed: int, stream: bool = False) -> httpx.Response:
    body = {
        "messages": [{"role": "user", "content": [image_part(make_picture(seed)), {"type": "text", "text": "hi"}]}],
        "max_tokens": 3,
        "stream": stream,
    }
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


def raising(count: list):
    def fail(*args, **kwargs):
        count.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")

    return fail


@pytest.mark.parametrize("where", ["encode_images", "prefill_chunk"])
@pytest.mark.parametrize("stream", [False, True])
def test_out_of_memory_in_encode_or_prefill_is_a_clear_503_then_the_next_request_works(
    server, fault_engine, monkeypatch, where, stream
):
    calls = []
    monkeypatch.setattr(fault_engine.runner, where, raising(calls))
    response = ask(server, 100 + len(where) + stream, stream)  # a new image, so the encoder must run
    assert calls, f"{where} was not reached"
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "out_of_memory" and "out of memory" in error["message"].lower()
    assert response.headers["retry-after"]
    monkeypatch.undo()
    assert fault_engine.worker.alive and fault_engine.healthy
    again = ask(server, 100 + len(where) + stream, stream)
    assert again.status_code == 200, again.text
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200


def test_out_of_memory_in_decode_fails_the_batch_and_the_engine_recovers(fault_engine, monkeypatch):
    calls = []
    monkeypatch.setattr(fault_engine.runner.forward, "decode", raising(calls))
    with pytest.raises(EngineError) as caught:
        fault_engine.generate(GenerationRequest([Message("user", "hello")], SamplingParams.greedy(5)))
    assert caught.value.status == 503 and caught.value.code == "out_of_memory"
    monkeypatch.undo()
    result = fault_engine.generate(GenerationRequest([Message("user", "hello")], SamplingParams.greedy(3)))
    assert result.usage.completion_tokens > 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_dead_gpu_worker_sets_health_503_and_is_restarted(server, fault_engine, monkeypatch):
    class WorkerDeath(BaseException):
        """Not an Exception: nothing inside the scheduler catches it, the worker thread itself dies."""

    def die():
        raise WorkerDeath("simulated crash of the GPU thread")

    deaths = fault_engine.worker.deaths
    monkeypatch.setattr(fault_engine.scheduler, "step", die)
    response = ask(server, 7)  # the request in flight when the worker dies gets a clear 503
    assert response.status_code == 503, response.text
    assert "GPU worker failed" in response.json()["error"]["message"]
    wait_until(lambda: not fault_engine.worker.alive, 30, "the worker thread to end")
    assert fault_engine.worker.deaths == deaths + 1
    health = httpx.get(server.url + "/health", timeout=30)
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    monkeypatch.undo()
    again = ask(server, 7)  # the next request restarts the worker
    assert again.status_code == 200, again.text
    assert fault_engine.worker.alive
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200


def run_app(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "app.py", "--port", str(free_port()), *args], capture_output=True, text=True, timeout=timeout
    )


def test_server_with_a_model_that_cannot_load_exits_with_a_clear_message(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    out = run_app("--model", str(tmp_path), "--device", "cpu")
    assert out.returncode == 3, out.stderr
    assert "cannot start" in out.stderr
    assert "Traceback" not in out.stderr


def test_server_with_a_missing_model_path_exits_with_a_clear_message(tmp_path):
    out = run_app("--model", str(tmp_path / "nowhere"), "--device", "cpu")
    assert out.returncode == 3, out.stderr
    assert "cannot start" in out.stderr and "nowhere" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_port_in_use_is_its_own_exit_status():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "app.py",
                "--port",
                str(port),
                "--backend",
                "openai",
                "--api-base",
                f"http://127.0.0.1:{free_port()}/v1",
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert out.returncode == 4, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "--port" in out.stderr


def test_sigterm_stops_the_server_and_removes_its_private_files(tmp_path, tiny_model_dir):
    import os
    import signal

    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path))
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--model", str(tiny_model_dir), "--device", "cpu"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _health(port) == 200, 240, "the server to be ready")
        # the server's HTTP protocol bounds a request's head (http_protocol.py)
        oversized = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200_000 + b"\r\n\r\n"
        assert raw_request(port, oversized).startswith(b"HTTP/1.1 431 ")
        private = [p for p in tmp_path.iterdir() if p.name.startswith("glm-vision-")]
        assert len(private) == 1 and private[0].is_dir()
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 128 + signal.SIGTERM
    finally:
        server.kill()
    assert not private[0].exists(), server.stderr.read()[-2000:]


def _health(port: int) -> int | None:
    try:
        return httpx.head(f"http://127.0.0.1:{port}/health", timeout=5).status_code
    except httpx.HTTPError:
        return None
