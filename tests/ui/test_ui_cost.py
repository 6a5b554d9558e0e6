"""The image-cost line under the chat input: its estimate is what the processor will make."""

from __future__ import annotations

import pytest
from PIL import Image

from glm_vision.images import load_image
from glm_vision.ui.cost import cost_line, estimate_image_tokens

SIZES = [(1920, 1080), (390, 844), (3000, 200), (1280, 720), (97, 131), (5000, 5000)]


@pytest.mark.parametrize("budget", [64, 100, 1000, 2691, 6144])
def test_estimate_equals_the_processor(engine, budget):
    builder = engine.runner.builder
    size = builder.size_for(budget)
    for width, height in SIZES:
        _, h, w = builder.grid_for(load_image(Image.new("RGB", (width, height), "white")), size)
        processor_tokens = h * w // builder.merge_size**2
        expected = estimate_image_tokens(width, height, min(budget, builder.max_tokens_per_image))
        assert expected == processor_tokens, (width, height, budget)


def test_cost_line_never_promises_more_than_the_model_takes():
    assert "6,144 tokens per image" in cost_line("en", 6144, [])
    fullhd = estimate_image_tokens(1920, 1080, 100)
    assert fullhd < 100 < estimate_image_tokens(1920, 1080, 6144)
    capped = cost_line("en", 6144, [], model_cap=100)
    assert "up to 100 tokens per image" in capped and f"≈ {fullhd} tokens" in capped
    assert f"≈ {fullhd} tokens" in cost_line("en", 6144, [(1920, 1080)], model_cap=100)
    assert "最多 64 个 token" in cost_line("zh", 64, [], model_cap=100)  # a lower budget stays
