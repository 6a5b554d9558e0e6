"""Flags, GLMV_* environment variables and their validation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from glm_vision.settings import Settings, build_parser, load_settings


def test_defaults_follow_the_contract():
    s = load_settings([], environ={})
    assert (s.model, s.host, s.port, s.device, s.backend) == ("auto", "127.0.0.1", 8080, "auto", "local")
    assert s.max_image_tokens == 6144


def test_env_vars_and_flag_precedence():
    env = {"GLMV_PORT": "9000", "GLMV_API_KEY": "k", "GLMV_THINKING": "off", "GLMV_MAX_PIXELS": "200704"}
    s = load_settings([], environ=env)
    assert (s.port, s.api_key, s.thinking, s.max_image_tokens) == (9000, "k", False, 256)
    assert load_settings(["--port", "9100"], environ=env).port == 9100


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--device", "tpu"], "--device"),
        (["--attn", "eager"], "eager is never used"),
        (["--backend", "openai"], "--api-base"),
        (["--max-pixels", "10"], "--max-pixels"),
        (["--image", "shot.png"], "--image needs --prompt"),
        (["--scheduler-policy", "fifo"], "--scheduler-policy must be prefill-first or decode-first"),
        (["--decode-matmul", "cutlass"], "--decode-matmul must be auto, cublas or triton"),
        (["--decode-pdl", "yes"], "--decode-pdl must be auto, on or off"),
    ],
)
def test_invalid_values_are_refused_clearly(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        load_settings(argv, environ={})
    assert needle in str(exc.value)


def test_bad_env_value_names_the_variable():
    with pytest.raises(SystemExit, match="GLMV_PORT"):
        load_settings([], environ={"GLMV_PORT": "eighty"})


def test_help_documents_every_flag():
    text = build_parser().format_help()
    for name in Settings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text
        assert "GLMV_" + name.upper() in text
    out = subprocess.run([sys.executable, "app.py", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--api-key" in out.stdout


def test_help_shows_the_default_of_boolean_flags():
    text = " ".join(build_parser().format_help().split())
    assert "GLMV_THINKING] (default on)" in text
    assert "GLMV_MCP] (default off)" in text


def test_history_flags_and_the_per_user_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    s = load_settings([], environ={})
    assert (s.history, s.history_max_chats, s.history_max_mb) == (True, 1000, 2048)
    assert s.history_dir == tmp_path / "xdg" / "glm-vision"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings([], environ={}).history_dir == tmp_path / "home" / ".local" / "share" / "glm-vision"
    env = {"GLMV_DATA_DIR": "~/chats", "GLMV_HISTORY": "off", "GLMV_HISTORY_MAX_MB": "10"}
    s = load_settings([], environ=env)
    assert (s.history_dir, s.history, s.history_max_mb) == (tmp_path / "home" / "chats", False, 10)
    assert load_settings(["--history", "--data-dir", str(tmp_path)], environ=env).history is True
    with pytest.raises(SystemExit, match="--history-max-chats must be positive"):
        load_settings(["--history-max-chats", "0"], environ={})
