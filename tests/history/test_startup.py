"""Starting the real server (`python app.py`) with a history that cannot open: a damaged database
file, a data directory that cannot be written. It starts anyway, without history (as --no-history),
with one log line naming the file or directory and what to do, and no traceback; a good data
directory gets its database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from glm_vision.server import AppState
from glm_vision.settings import Settings
from tests.api_helpers import free_port, serve, wait_until
from tests.doubles import ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def upstream():
    """What the started servers front (--backend openai), so that they start without loading a model."""
    live = serve(AppState(Settings(), backend=ScriptedBackend("hello")))
    yield live.url + "/v1"
    live.__exit__(None, None, None)


def start(upstream: str, data_dir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "GLMV_DATA_DIR": str(data_dir)}
    command = [sys.executable, "app.py", "--backend", "openai", "--api-base", upstream, "--port", str(port)]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ), port


def health(port: int) -> dict | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def test_the_server_starts_without_history_when_it_cannot_open_and_says_why(upstream, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "chats.sqlite3").write_bytes(os.urandom(8192))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    good = tmp_path / "fresh" / "data"
    servers = {
        name: start(upstream, path)
        for name, path in [("damaged", damaged), ("unwritable", blocker / "data"), ("good", good)]
    }
    logs = {}
    try:
        for name, (process, port) in servers.items():
            up = lambda port=port, process=process: health(port) is not None or process.poll() is not None  # noqa: E731
            wait_until(up, 120, f"the {name} server")
            assert process.poll() is None, f"the {name} server stopped"
            assert health(port)["history"] is (name == "good")
    finally:
        for name, (process, _) in servers.items():
            process.terminate()
            logs[name] = process.communicate(timeout=30)[1]

    assert "Traceback" not in "".join(logs.values())
    [damaged_line] = [line for line in logs["damaged"].splitlines() if "chat history is off" in line]
    assert f"{damaged / 'chats.sqlite3'} cannot be read" in damaged_line and "Move it aside" in damaged_line
    [unwritable_line] = [line for line in logs["unwritable"].splitlines() if "chat history is off" in line]
    assert f"{blocker / 'data'} cannot be written" in unwritable_line and "--data-dir" in unwritable_line
    assert "chat history is off" not in logs["good"] and (good / "chats.sqlite3").is_file()
    assert (damaged / "chats.sqlite3").stat().st_size == 8192  # left as it was, for the user to look at
