"""pyproject.toml: the glm-vision command works, the light install is the remote-only set, and its pins
are the ones requirements.txt (what launch.sh installs) and requirements-test.txt hold."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)==([^\s#;]+)", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_the_console_script_is_the_app_command():
    target = PROJECT["project"]["scripts"]["glm-vision"]
    module, function = target.split(":")
    code = f"import sys; sys.argv = ['glm-vision', '--help']; from {module} import {function}; {function}()"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: glm-vision") and "--backend" in out.stdout and "GLMV_API_KEY" in out.stdout


def test_pins_agree_with_the_requirements_files():
    runtime = pins((ROOT / "requirements.txt").read_text().splitlines())
    test = pins((ROOT / "requirements-test.txt").read_text().splitlines())
    light = pins(PROJECT["project"]["dependencies"])
    local = pins(PROJECT["project"]["optional-dependencies"]["local"])
    group = pins(PROJECT["dependency-groups"]["test"])
    assert light | local == runtime  # the same set, the same versions
    assert group == test


def test_the_light_install_has_no_torch():
    light = pins(PROJECT["project"]["dependencies"])
    assert not {"torch", "torchvision", "transformers", "xgrammar", "accelerate"} & set(light)
    assert {"gradio", "fastapi", "openai", "pillow"} <= set(light)
