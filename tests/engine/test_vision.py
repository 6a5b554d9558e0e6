"""The engine's vision encoder: transformers' tower's math, fed from the host (engine/vision*.py)."""

from __future__ import annotations

import copy
import traceback

import pytest
import torch
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

from glm_vision.engine.vision import VisionEncoder
from glm_vision.engine.vision_embed import add_position_embeddings, embed_patches
from tests.conftest import make_picture


def _inputs(processor, sizes):
    images = [make_picture(seed, size) for seed, size in enumerate(sizes)]
    inputs = processor.image_processor(images=images, return_tensors="pt")
    return inputs["pixel_values"], inputs["image_grid_thw"]


def test_encoder_equals_get_image_features(reference):
    """Pictures of different sizes in one call: each picture's features are transformers' own, in order
    (to float32 rounding: the patch embedding is a matrix product, not transformers' convolution)."""
    model, processor = reference
    pixels, grid = _inputs(processor, [(168, 112), (112, 196), (56, 56)])
    with torch.no_grad():
        expected = model.model.get_image_features(pixels, grid, return_dict=True).pooler_output
        got = VisionEncoder(model).encode(pixels, [tuple(g) for g in grid.tolist()])
        # transformers' own call is unaffected by the encoder (the benchmark and the tests use it)
        again = model.model.get_image_features(pixels, grid, return_dict=True).pooler_output
    assert [t.shape for t in got] == [t.shape for t in expected]
    for mine, theirs, after in zip(got, expected, again, strict=False):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(after, theirs, rtol=0, atol=0)


def test_tower_input_equals_transformers(reference):
    """The patch embedding as a matrix product equals transformers' convolution (float32 rounding), and
    the position embeddings interpolated over channel groups equal transformers' to the bit."""
    model, processor = reference
    visual = model.model.visual
    pixels, grid = _inputs(processor, [(168, 112), (56, 84)])
    positions = get_vision_position_ids(grid, visual.spatial_merge_size)
    cu = get_vision_cu_seqlens(grid)
    with torch.no_grad():
        patches = visual.patch_embed(pixels)
        torch.testing.assert_close(embed_patches(visual.patch_embed, pixels), patches, rtol=1e-5, atol=1e-4)
        args = (patches, cu[1:] - cu[:-1], grid, positions[:, 0], positions[:, 1])
        theirs = visual.embeddings(*args)
        assert not torch.equal(theirs, patches)
        torch.testing.assert_close(add_position_embeddings(visual.embeddings, *args), theirs, rtol=0, atol=0)


def test_encoder_reads_nothing_back_from_the_device(reference):
    """On CUDA every read of a device tensor's value on the host (`.tolist()`, `.item()`, a pageable
    copy) waits for the GPU's queue to drain. On the meta device any such read raises, so running the
    tower there shows it reads nothing back; transformers' own call, which does, fails there."""
    model, processor = reference
    pixels, grid = _inputs(processor, [(168, 112), (112, 196)])
    meta_model = copy.deepcopy(model).to("meta")
    with torch.no_grad():
        features = VisionEncoder(meta_model).encode(pixels.to("meta"), [tuple(g) for g in grid.tolist()])
        assert [f.shape for f in features] == [
            (h * w // 4, model.config.text_config.hidden_size) for _, h, w in grid.tolist()
        ]
        with pytest.raises((RuntimeError, NotImplementedError)):
            meta_model.model.get_image_features(pixels.to("meta"), grid.to("meta"))


class PageableCopies:
    """Records host-to-device copies made outside `engine/transfer.py` (on CUDA a copy from pageable
    memory waits for the GPU's queue to drain, like a read does)."""

    def __init__(self, monkeypatch, device: str) -> None:
        self.seen: list[str] = []
        original_to, original_tensor = torch.Tensor.to, torch.tensor

        def where() -> str:
            frames = [f for f in traceback.extract_stack()[:-2] if "/torch/" not in f.filename]
            return (
                ""
                if any(f.filename.endswith("transfer.py") for f in frames)
                else f"{frames[-1].filename}:{frames[-1].lineno}"
            )

        def to(tensor, *args, **kwargs):
            out = original_to(tensor, *args, **kwargs)
            if tensor.device.type == "cpu" and out.device.type == device and (at := where()):
                self.seen.append(at)
            return out

        def tensor(*args, **kwargs):
            if str(kwargs.get("device", "cpu")).startswith(device) and (at := where()):
                self.seen.append(at)
            return original_tensor(*args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)
        monkeypatch.setattr(torch, "tensor", tensor)


def test_cold_request_waits_for_nothing_until_its_first_token(reference, pictures, monkeypatch):
    """A new picture and a new prompt, prefilled in chunks, on the meta device (where reading a value
    raises): preprocessing, the encoder, the prompt's embeddings and positions, every prefill chunk and
    the first token's sampling neither read a device value on the host nor copy from pageable memory;
    only taking the sampled token itself reads."""
    from glm_vision.backend import GenerationRequest, SamplingParams
    from glm_vision.conversation import Message
    from glm_vision.engine.cache import FeatureCache
    from glm_vision.engine.loader import LoadedModel
    from glm_vision.engine.runner import ModelRunner

    model, processor = reference
    meta = LoadedModel(
        model=copy.deepcopy(model).to("meta"),
        processor=processor,
        name="tiny",
        device="meta",
        dtype="float32",
        attn="sdpa",
        is_demo=False,
    )
    runner = ModelRunner(
        meta, FeatureCache(1 << 20), max_context_tokens=1024, default_max_image_tokens=64, prefill_chunk_tokens=16
    )
    copies = None
    for sampling in (
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.8, top_p=0.6, top_k=2, repetition_penalty=1.1),
    ):
        request = GenerationRequest(
            [Message("user", "What is in these two pictures?", pictures[:2])], sampling=sampling
        )
        handle = type("Handle", (), {"request": request})()
        seq = runner.start(handle, None, slot=0)
        assert not runner.lookup_images(seq)
        job = runner.encode_images([seq])
        while not runner.encode_some(job, [seq], 1):
            pass
        chunks = 0
        while not seq.prefilled:
            runner.prefill([(seq, runner.prefill_chunk(seq, 16))])
            chunks += 1
        assert chunks > 2 and seq.pending.device.type == "meta" and seq.usage.images_encoded == 2
        with pytest.raises((RuntimeError, NotImplementedError)):
            seq.pending.tolist()
        if copies is None:  # the processor makes its normalisation constants once per device, then caches them
            copies = PageableCopies(monkeypatch, "meta")
    assert copies.seen == [], f"copies from pageable memory at {copies.seen}"


def test_encoder_run_a_layer_at_a_time_equals_one_call(reference):
    """The encoder spread over several scheduler steps computes what one call does."""
    model, processor = reference
    pixels, grid = _inputs(processor, [(168, 112), (56, 84)])
    grids = [tuple(g) for g in grid.tolist()]
    encoder = VisionEncoder(model)
    with torch.no_grad():
        whole = encoder.encode(pixels, grids)
        job = encoder.start(pixels, grids)
        steps = 1
        while not job.advance(1):
            steps += 1
    assert steps == len(model.model.visual.blocks) > 1
    for a, b in zip(job.features, whole, strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert job.seconds() > 0 and job.blocks_for(0) == 1
    assert job.blocks_for(10**15) >= len(model.model.visual.blocks)


def test_a_new_picture_is_encoded_over_several_steps_while_others_stream(settings):
    """A running stream's next token waits for at most a chunk's worth of encoder layers: with small
    chunks, a new request's encoder runs over several steps, and both answers equal their solo runs."""
    from dataclasses import replace

    from glm_vision.backend import GenerationRequest, SamplingParams
    from glm_vision.conversation import Message
    from glm_vision.engine import Engine
    from glm_vision.images import load_image

    engine = Engine.load(replace(settings, max_batch=2, prefill_chunk_tokens=8))
    try:
        runner = engine.runner
        runner.text_weights = 1  # size every encoder share to its minimum, one layer per step
        calls = []
        original = runner.encode_some

        def counting(job, seqs, blocks):
            calls.append(([seq.request.messages[-1].text for seq in seqs], blocks, len(engine.scheduler.rows)))
            return original(job, seqs, blocks)

        runner.encode_some = counting
        first = GenerationRequest(
            [Message("user", "Describe it.", [load_image(make_picture(41))])],
            SamplingParams.greedy(40, min_new_tokens=40),
        )
        second = GenerationRequest(
            [Message("user", "And this?", [load_image(make_picture(42, (224, 168)))])], SamplingParams.greedy(12)
        )
        solo = [engine.generate(first).token_ids, engine.generate(second).token_ids]
        calls.clear()
        running = engine.submit(first)
        next(iter(running))  # the first stream is decoding
        joined = engine.submit(second)
        results = [running.wait(), joined.wait()]
        assert [r.token_ids for r in results] == solo
        during = [(blocks, rows) for texts, blocks, rows in calls if texts == ["And this?"]]
        assert during == [(1, 1)] * len(runner.model.model.visual.blocks)
    finally:
        engine.shutdown()


def test_compiled_encoder_layers_compile_once_for_every_picture_size(reference):
    """The encoder's glue, compiled as on CUDA (here by Inductor's CPU backend), equals the eager layers
    for pictures of three sizes and compiles once: the patch count is symbolic from the first picture on,
    so a new size never waits for a compilation (and only it: every size symbolic made the H200's
    kernels divide by runtime widths, 7x slower than their bytes; bench/RESULTS.md)."""
    from torch._dynamo.utils import counters

    model, processor = reference
    torch._dynamo.reset()
    counters.clear()
    eager = VisionEncoder(model)
    compiled = VisionEncoder(model, compile_math=True)
    with torch.no_grad():
        for sizes in ([(168, 112)], [(112, 196), (56, 56)], [(56, 84)]):
            pixels, grid = _inputs(processor, sizes)
            grids = [tuple(g) for g in grid.tolist()]
            for mine, theirs in zip(compiled.encode(pixels, grids), eager.encode(pixels, grids), strict=True):
                torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
    # attention_inputs, attention_output_and_mlp and merge_patches, once each
    assert counters["stats"]["unique_graphs"] == 3


def test_fused_vision_weights_are_the_modules_own_memory(reference):
    """fuse_vision lays the MLP's gate and up and the downsample kernel out as the encoder multiplies by
    them with the modules' parameters as views into those tensors (no weight held twice), and lays them
    out again when a cast gave the parameters new storage."""
    from glm_vision.engine.fused_weights import fuse_vision

    visual = copy.deepcopy(reference[0].model.visual)
    conv_before = visual.downsample.weight.detach().clone()
    fuse_vision(visual)
    mlp, conv = visual.blocks[0].mlp, visual.downsample
    assert mlp.gate_up_weight.data_ptr() == mlp.gate_proj.weight.data_ptr()
    assert mlp.gate_up_weight[mlp.gate_proj.out_features :].data_ptr() == mlp.up_proj.weight.data_ptr()
    assert conv.matrix.data_ptr() == conv.weight.data_ptr() and torch.equal(conv.weight, conv_before)
    groups = torch.randn(5, 2, 2, conv_before.shape[1])  # five merged groups of 2 x 2 patches (row, column, channel)
    as_conv = torch.nn.functional.conv2d(groups.permute(0, 3, 1, 2), conv_before, conv.bias).flatten(1)
    torch.testing.assert_close(groups.flatten(1) @ conv.matrix.T + conv.bias, as_conv, rtol=1e-5, atol=1e-5)
    visual.double()  # new storage for every parameter: the fused tensors are stale until laid out again
    fuse_vision(visual)
    assert mlp.gate_up_weight.dtype == torch.float64 and conv.matrix.dtype == torch.float64
    assert mlp.gate_up_weight.data_ptr() == mlp.gate_proj.weight.data_ptr()
    assert conv.matrix.data_ptr() == conv.weight.data_ptr()
