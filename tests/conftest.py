"""Shared fixtures: a tiny GLM-4.6V checkpoint built once per test run, engines on it, test images."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from PIL import Image, ImageDraw

from glm_vision.settings import Settings
from glm_vision.synthetic.tiny import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-glm"), seed=0)


@pytest.fixture(scope="session")
def settings(tiny_model_dir):
    return Settings(model=str(tiny_model_dir), device="cpu", max_context_tokens=4096)


@pytest.fixture(scope="session")
def engine(settings):
    from glm_vision.engine import Engine

    eng = Engine.load(settings)
    eng.warmup()
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def reference(tiny_model_dir):
    """The plain transformers model and processor, loaded separately from the engine's."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    return model, processor


def make_picture(seed: int, size=(168, 112)) -> Image.Image:
    """A screenshot-like test picture: a flat background with a few shapes, different per seed."""
    import random

    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.randrange(size[0] - 20), rng.randrange(size[1] - 20)
        box = (x0, y0, x0 + rng.randrange(10, 60), y0 + rng.randrange(10, 60))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


@pytest.fixture
def pictures():
    from glm_vision.images import load_image

    return [load_image(make_picture(seed, size)) for seed, size in [(1, (168, 112)), (2, (112, 196)), (3, (140, 140))]]


def pytest_configure(config):
    """Servers a test starts (in this process or as `app.py` subprocesses, which inherit the environment)
    keep their chat history in a throw-away folder, never in the real per-user data folder."""
    config._glmv_data_dir = tempfile.mkdtemp(prefix="glmv-test-data-")
    os.environ["GLMV_DATA_DIR"] = config._glmv_data_dir


# A native library has been seen to abort ("terminate called without an active exception") while the
# interpreter tears down after a run that loaded the engine; the results are final by then, so the
# test process leaves with pytest's own exit status instead of risking that teardown.
def pytest_sessionfinish(session, exitstatus):
    session.config._glmv_exit_status = int(exitstatus)
    if getattr(session.config, "_glmv_data_dir", None):
        shutil.rmtree(session.config._glmv_data_dir, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    from glm_vision.process import exit_now

    status = getattr(config, "_glmv_exit_status", None)
    if status is not None and not hasattr(config, "workerinput"):
        exit_now(status)
