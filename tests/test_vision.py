"""The engine's vision encoder: transformers' own tower, fed from the host (engine/vision.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from glm_vision.engine.vision import VisionEncoder

from .conftest import make_picture


def _inputs(processor, sizes):
    images = [make_picture(seed, size) for seed, size in enumerate(sizes)]
    inputs = processor.image_processor(images=images, return_tensors="pt")
    return inputs["pixel_values"], inputs["image_grid_thw"]


def test_encoder_equals_get_image_features(reference):
    """Pictures of different sizes in one call: each picture's features are transformers' own, in order."""
    model, processor = reference
    pixels, grid = _inputs(processor, [(168, 112), (112, 196), (56, 56)])
    with torch.no_grad():
        expected = model.model.get_image_features(pixels, grid, return_dict=True).pooler_output
        got = VisionEncoder(model).encode(pixels, [tuple(g) for g in grid.tolist()])
        # transformers' own call is unaffected by the encoder (the benchmark and the tests use it)
        again = model.model.get_image_features(pixels, grid, return_dict=True).pooler_output
    assert [t.shape for t in got] == [t.shape for t in expected]
    for mine, theirs, after in zip(got, expected, again):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
        torch.testing.assert_close(after, theirs, rtol=0, atol=0)


def test_encoder_reads_nothing_back_from_the_device(reference):
    """On CUDA every read of a device tensor's value on the host (`.tolist()`, `.item()`, a pageable
    copy) waits for the GPU's queue to drain. On the meta device any such read raises, so running the
    tower there shows it reads nothing back; transformers' own call, which does, fails there."""
    model, processor = reference
    pixels, grid = _inputs(processor, [(168, 112), (112, 196)])
    meta_model = copy.deepcopy(model).to("meta")
    with torch.no_grad():
        features = VisionEncoder(meta_model).encode(pixels.to("meta"), [tuple(g) for g in grid.tolist()])
        assert [f.shape for f in features] == [(h * w // 4, model.config.text_config.hidden_size) for _, h, w in grid.tolist()]
        with pytest.raises((RuntimeError, NotImplementedError)):
            meta_model.model.get_image_features(pixels.to("meta"), grid.to("meta"))
