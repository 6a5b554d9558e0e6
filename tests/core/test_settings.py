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
