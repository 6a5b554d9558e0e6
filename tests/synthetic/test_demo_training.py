"""The demo model's training script on the CPU, tiny: its training-only ViT replacements equal
transformers' own code (`--check-positions` raises otherwise), banks of new scenes take over every
`--bank-steps`, a run split by `--state` resumes where it stopped, and the checkpoint it writes loads
with `AutoModelForImageTextToText`. Run in a subprocess: the replacements patch transformers' classes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "--device",
    "cpu",
    "--batch",
    "4",
    "--workers",
    "0",
    "--render-procs",
    "1",
    "--bank",
    "12",
    "--bank-steps",
    "3",
    "--layers",
    "1",
    "--hidden",
    "64",
    "--heads",
    "2",
    "--intermediate",
    "128",
    "--vision-hidden",
    "48",
    "--vision-depth",
    "1",
    "--vision-heads",
    "1",
    "--image-tokens",
    "16",
    "--vocab",
    "600",
    "--log-every",
    "1",
]


def train(out: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tools.train_demo_model", "--out", str(out), *SMALL, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_split_run_with_bank_changes_resumes_and_writes_a_loadable_checkpoint(tmp_path):
    state = tmp_path / "state.pt"
    first = train(tmp_path / "a", "--steps", "4", "--state", str(state), "--check-positions")
    assert (
        "padded vision attention vs per-picture" in first
        and "positions agree with get_rope_index on target tokens: True" in first
    )
    assert "image bank 0:" in first and "image bank 1:" in first  # steps 3.. come from a second bank
    assert torch.load(state, weights_only=False)["step"] == 4

    second = train(tmp_path / "b", "--steps", "7", "--state", str(state))
    assert "resumed from" in second and "at step 4" in second
    assert "image bank 1:" in second and "image bank 2:" in second  # resumes in bank 1, then bank 2 (step 6)
    assert "image bank 0:" not in second  # no bank rendered that the resumed steps do not use
    assert torch.load(state, weights_only=False)["step"] == 7
    assert json.loads((tmp_path / "b" / "training_args.json").read_text())["steps"] == 7

    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "b")
    assert type(model).__name__ == "Glm4vForConditionalGeneration"
    assert model.config.vision_config.depth == 1


def test_banks_hold_different_scenes():
    from glm_vision.synthetic import questions
    from glm_vision.synthetic.tiny import build_processor, train_tokenizer
    from tools import demo_bank

    processor = build_processor(train_tokenizer(600, questions.corpus_text()))
    renderer = demo_bank.BankRenderer(processor.image_processor, 4, seed=0, procs=1)
    first, second, again = renderer.get(0), renderer.get(1), renderer.get(0)
    assert first.scenes != second.scenes
    assert first.scenes == again.scenes and (first.rows == again.rows).all()  # seeded: same bank, same pixels


def test_token_labels_mark_the_objects_under_each_image_token():
    from glm_vision.synthetic import scenes as demo_data
    from tools import demo_bank

    scene = demo_data.Scene(
        width=280,
        height=280,
        background=(255, 255, 255),
        shapes=(
            demo_data.Shape("star", "blue", "center", scale=0.13),
            demo_data.Shape("circle", "red", "left", scale=0.13),
        ),
    )
    labels = demo_bank.token_labels(scene, (20, 20)).reshape(10, 10, -1)
    star, circle = (
        1 + [k for k, _ in demo_data.SHAPES].index("star"),
        1 + [k for k, _ in demo_data.SHAPES].index("circle"),
    )
    blue, red = 1 + [c[0] for c in demo_data.COLORS].index("blue"), 1 + [c[0] for c in demo_data.COLORS].index("red")
    assert tuple(labels[5, 5, :2]) == (star, blue)  # the token under the picture's centre
    assert tuple(labels[5, 1, :2]) == (circle, red)  # left slot: 18 % of the width
    assert tuple(labels[0, 0, :2]) == (0, 0) and tuple(labels[9, 9, :2]) == (0, 0)
    assert {tuple(v) for v in labels[..., :2].reshape(-1, 2)} == {(0, 0), (star, blue), (circle, red)}
    # every token of an object carries that object's box (0-1000); the star's is centred
    x1, y1, x2, y2 = labels[5, 5, 3:]
    assert x1 < 500 < x2 and y1 < 500 < y2 and (labels[5, 5, 3:] == labels[4, 4, 3:]).all()
    assert (labels[5, 1, 3:] == demo_data.thousandths(scene, demo_data.shape_box(scene, scene.shapes[1]))).all()
    assert (labels[0, 0, 2:] == 0).all()
    worded = demo_data.Scene(
        width=280,
        height=280,
        background=(255, 255, 255),
        shapes=(),
        word=demo_data.Word("HELLO", "center", "DejaVuSansMono-Bold.ttf", 0.15, (0, 0, 0)),
    )
    assert (demo_bank.token_labels(worded, (20, 20))[:, 0] == demo_bank.SHAPE_CLASSES - 1).any()


def test_token_labels_spell_the_word_left_to_right():
    from glm_vision.synthetic import scenes as demo_data
    from tools import demo_bank

    scene = demo_data.Scene(
        width=560,
        height=392,
        background=(255, 255, 255),
        shapes=(),
        word=demo_data.Word("HELP", "top", "DejaVuSansMono-Bold.ttf", 0.22, (0, 0, 0)),
    )
    labels = demo_bank.token_labels(scene, (28, 40)).reshape(14, 20, -1)
    letters = labels[..., 2]
    read = [chr(ord("A") - 1 + c) for c in letters.max(0) if c]  # per column of tokens, left to right
    assert "".join(dict.fromkeys(read)) == "HELP"
    assert set(letters[labels[..., 0] != demo_bank.WORD_CLASS].ravel()) <= {0}  # letters only on the word


def test_fine_tune_with_the_auxiliary_loss_from_a_checkpoint(tmp_path):
    train(tmp_path / "base", "--steps", "2")
    log = train(tmp_path / "tuned", "--steps", "3", "--init-from", str(tmp_path / "base"), "--aux-weight", "0.5")
    assert "trained steps 0-3" in log
    from safetensors.torch import load_file

    base, tuned = (
        load_file(tmp_path / "base" / "model.safetensors"),
        load_file(tmp_path / "tuned" / "model.safetensors"),
    )
    assert base.keys() == tuned.keys()  # the auxiliary head is not part of the checkpoint
    assert any(not torch.equal(base[k], tuned[k]) for k in base)  # and the model did train
    assert json.loads((tmp_path / "tuned" / "training_args.json").read_text())["aux_weight"] == 0.5
