"""Every example of the UI gallery (assets/examples/examples.json) is answered right by the bundled
demo model, through the engine: its English and its Chinese question, thinking off and on, greedy,
checked by `checking.check_answer` against the scene the picture was drawn from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from glm_vision.engine import Engine
from glm_vision.engine.loader import DEMO_MODEL_DIR
from glm_vision.settings import Settings
from glm_vision.synthetic import scenes as demo_data

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
make_examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_examples)
ITEMS = json.loads((EXAMPLES / "examples.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def engine():
    engine = Engine.load(Settings(model=str(DEMO_MODEL_DIR), device="cpu", max_context_tokens=4096))
    yield engine
    engine.shutdown()


def test_the_gallery_has_examples():
    assert len(ITEMS) >= 3
    assert all({"image", "question", "question_zh"} <= set(item) for item in ITEMS)


@pytest.mark.parametrize("item", ITEMS, ids=[item["image"] for item in ITEMS])
def test_example_is_answered_right(engine, item):
    kind, i = item["kind"], int(item["scene"].rsplit("/", 1)[1])
    scene = make_examples.scene_for(kind, i)
    # the picture on disk is the scene the answers are checked against
    from PIL import Image, ImageChops

    on_disk = Image.open(EXAMPLES / item["image"]).convert("RGB")
    assert ImageChops.difference(on_disk, demo_data.render(scene)).getbbox() is None
    en, zh = make_examples.gallery_questions(scene, kind)
    assert (en.question, zh.question) == (item["question"], item["question_zh"])
    assert make_examples.answers_ok(engine, on_disk, (en, zh)), item
