"""What the benchmarks run on: GLM-4.6V-Flash's architecture with random bf16 weights (or the tiny
checkpoint on the CPU), a desktop-like screenshot and the question asked about it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from glm_vision.engine import LoadedModel

QUESTION = (
    "Look at this screenshot carefully and describe every window, button, label, icon and line of text you can "
    "see, from the top left to the bottom right, and say what the user was probably doing. "
)


def screenshot(seed: int, size=(1920, 1080)) -> Image.Image:
    """A desktop-like picture: title bars, panels, buttons and text."""
    import random

    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(200, 256),) * 3)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = rng.randrange(size[0] - 200), rng.randrange(size[1] - 100)
        box = (x0, y0, x0 + rng.randrange(40, 400), y0 + rng.randrange(20, 300))
        draw.rectangle(box, fill=tuple(rng.randrange(256) for _ in range(3)), outline=(0, 0, 0))
        draw.text((x0 + 5, y0 + 5), f"Button {rng.randrange(1000)}", fill=(0, 0, 0))
    return image


def tiny_model(outdir: Path) -> LoadedModel:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from glm_vision.synthetic.tiny import build_tiny_checkpoint

    build_tiny_checkpoint(outdir)
    model = AutoModelForImageTextToText.from_pretrained(outdir, attn_implementation="sdpa").eval()
    processor = AutoProcessor.from_pretrained(outdir)
    return LoadedModel(model, processor, "tiny", "cpu", "float32", "sdpa", False)


def full_size_model(config_path: Path, device: str) -> LoadedModel:
    """GLM-4.6V-Flash's architecture with random bf16 weights (speed equals the real weights')."""
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration

    from glm_vision.synthetic.tiny import build_processor, full_vocab_tokenizer

    config = Glm4vConfig(**json.loads(config_path.read_text()))
    config._attn_implementation = "sdpa"
    processor = build_processor(full_vocab_tokenizer())
    assert processor.tokenizer.convert_tokens_to_ids("<|image|>") == config.image_token_id
    torch.manual_seed(0)
    with torch.device(device):
        model = Glm4vForConditionalGeneration._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    return LoadedModel(model, processor, "GLM-4.6V-Flash-random", device, "bfloat16", "sdpa", False)
