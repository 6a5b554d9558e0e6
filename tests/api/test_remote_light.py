"""The remote-only install: `python app.py --backend openai --api-base URL` serves the UI, the API
and MCP without ever importing torch or transformers (a subprocess whose imports of them fail), and
it tells the user what a glm-vision upstream says about itself (demo model, image cap) and when the
upstream goes down."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from PIL import Image

from glm_vision.server import AppState
from tests.api_helpers import free_port, image_part, serve, wait_until
from tests.doubles import ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = textwrap.dedent("""
    import importlib.abc, runpy, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "torchvision", "transformers", "xgrammar"}:
                print(f"BLOCKED import of {name}", file=sys.stderr, flush=True)
                raise ImportError(f"{name} is not installed in a remote-only setup")
            return None

    sys.meta_path.insert(0, Blocker())
    sys.argv = ["app.py", *sys.argv[1:]]
    runpy.run_path("app.py", run_name="__main__")
""")


def health(port: int) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    except httpx.HTTPError:
        return None


def test_remote_mode_never_imports_torch_and_shows_the_upstreams_demo_model(settings):
    upstream_backend = ScriptedBackend("<think>looked</think>A red square.", is_demo=True)
    upstream_backend.info = upstream_backend.info.__class__(**{**vars(upstream_backend.info), "max_image_tokens": 100})
    upstream = serve(AppState(settings, backend=upstream_backend))
    port = free_port()
    front = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BLOCKER,
            "--backend",
            "openai",
            "--api-base",
            upstream.url + "/v1",
            "--port",
            str(port),
            "--mcp",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (r := health(port)) is not None and r.status_code == 200, 120, "the front to be ready")
        body = health(port).json()
        assert body["demo"] is True and body["max_image_tokens"] == 100 and body["model"] == "scripted-glm"
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=60,
            json={
                "messages": [
                    {
                        "role": "user",
                        "content": [image_part(Image.new("RGB", (64, 48), "red")), {"type": "text", "text": "?"}],
                    }
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"] == {
            "role": "assistant",
            "content": "A red square.",
            "reasoning_content": "looked",
        }
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=60)
        assert page.status_code == 200 and "gradio" in page.text.lower()

        upstream.__exit__()  # the upstream goes away: /health follows within a few seconds
        wait_until(lambda: (r := health(port)) is not None and r.status_code == 503, 30, "/health to report it")
        front.send_signal(signal.SIGTERM)
        assert front.wait(60) == 128 + signal.SIGTERM
    finally:
        front.kill()
        upstream.__exit__()
        upstream_backend.shutdown()
    stderr = front.stderr.read()
    assert "BLOCKED" not in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


def test_the_local_backend_without_torch_says_what_to_install(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER, "--port", str(free_port()), "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3, out.stderr[-2000:]
    assert "glm-vision[local]" in out.stderr and "--backend openai" in out.stderr
