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

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--device", "cpu", "--batch", "4", "--workers", "0", "--render-procs", "1", "--bank", "12", "--bank-steps", "3",
         "--layers", "1", "--hidden", "64", "--heads", "2", "--intermediate", "128", "--vision-hidden", "48",
         "--vision-depth", "1", "--vision-heads", "1", "--image-tokens", "16", "--vocab", "600", "--log-every", "1"]


def train(out: Path, *extra: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train_demo_model.py"), "--out", str(out), *SMALL, *extra],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_split_run_with_bank_changes_resumes_and_writes_a_loadable_checkpoint(tmp_path):
    state = tmp_path / "state.pt"
    first = train(tmp_path / "a", "--steps", "4", "--state", str(state), "--check-positions")
    assert "padded vision attention vs per-picture" in first and "positions agree with get_rope_index on target tokens: True" in first
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
    sys.path.insert(0, str(ROOT / "tools"))
    import demo_bank
    from glm_vision.tiny import build_processor, train_tokenizer
    from glm_vision import demo_data

    processor = build_processor(train_tokenizer(600, demo_data.corpus_text()))
    renderer = demo_bank.BankRenderer(processor.image_processor, 4, seed=0, procs=1)
    first, second, again = renderer.get(0), renderer.get(1), renderer.get(0)
    assert first.scenes != second.scenes
    assert first.scenes == again.scenes and (first.rows == again.rows).all()  # seeded: same bank, same pixels
