"""The vision encoder alone: one call for 1, 2 or 4 pictures, time per picture (GPU, CUDA events).

    python -m bench.bench_encoder --config bench/glm-4.6v-flash-config.json [--attention cudnn,flash,efficient]

One table per attention backend tried first (the engine's order, vision_attention.ATTENTION_BACKENDS, is
`cudnn`), with the elementwise work compiled as the engine compiles it on CUDA (`--no-compile`: eager).

GLM-4.6V-Flash's vision tower with random bf16 weights, 1920x1080 screenshots (10,764 patches each),
preprocessed on the device and encoded by the engine's `VisionEncoder` (attention within each
picture): does batching pictures across requests buy anything at this size?

`--first-calls 1920x1080,1280x720,...`: before the tables, pictures of those sizes one after another on a fresh
encoder, each size's first call against its second (what a new picture size costs a cold request);
`--unbucketed`: cuDNN on each picture's own length, a plan per size (vision_attention.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.nn.attention import SDPBackend

from bench.workload import screenshot
from glm_vision.engine.vision_attention import ATTENTION_BACKENDS

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--depth", type=int, help="fewer layers (a smoke test on the CPU)")
    parser.add_argument("--attention", default="cudnn", help="comma-separated: cudnn, flash, efficient, math")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--unbucketed", action="store_true", help="cuDNN on each picture's own length (a plan per size), as before"
    )
    parser.add_argument(
        "--first-calls",
        help="comma-separated WxH picture sizes, encoded one after another on a fresh encoder (the first "
        "--attention backend first; after one 224x168 picture, as the engine's warm-up): what a size's "
        "first call costs over its second",
    )
    args = parser.parse_args()
    from transformers import Glm4vConfig
    from transformers.models.glm4v.modeling_glm4v import Glm4vVisionModel

    from glm_vision.engine.vision import VisionEncoder
    from glm_vision.synthetic.tiny import build_processor, full_vocab_tokenizer

    config = Glm4vConfig(**json.loads(args.config.read_text()))
    config.vision_config._attn_implementation = "sdpa"
    if args.depth:
        config.vision_config.depth = args.depth
    torch.manual_seed(0)
    device = torch.device(args.device)
    with device:
        visual = Glm4vVisionModel._from_config(config.vision_config, dtype=torch.bfloat16).eval()
    model = SimpleNamespace(model=SimpleNamespace(visual=visual))
    compile_math = not args.no_compile and device.type == "cuda"
    processor = build_processor(full_vocab_tokenizer()).image_processor
    batches = [int(b) for b in args.batches.split(",")]
    pictures = [
        torch.from_numpy(np.ascontiguousarray(np.asarray(screenshot(seed)).transpose(2, 0, 1)))
        for seed in range(max(batches))
    ]
    pictures = [p.to(device) for p in pictures]
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}")

    def encoder_with(name: str) -> VisionEncoder:
        """A fresh encoder with backend `name` tried first (then the engine's order)."""
        first = BACKENDS[name]
        backends = [first] + [b for b in ATTENTION_BACKENDS if b != first]
        encoder = VisionEncoder(model, compile_math=compile_math, attention_backends=backends)
        encoder.layers.attention.bucketed &= not args.unbucketed
        return encoder

    if args.first_calls:
        name = args.attention.split(",")[0]
        print(f"first calls, {name} attention first:")
        sizes = [(224, 168)] + [tuple(int(n) for n in size.split("x")) for size in args.first_calls.split(",")]
        first_calls(encoder_with(name), processor, sizes, device)
    for name in args.attention.split(","):
        encoder = encoder_with(name)
        print(f"\n{name} attention first, elementwise work {'compiled' if compile_math else 'eager'}:")
        table(encoder, processor, pictures, batches, args.repeat, device)


def first_calls(encoder, processor, sizes, device) -> None:
    print("| picture | patches | first call ms | second call ms |")
    print("|---|---|---|---|")
    with torch.inference_mode():
        for index, size in enumerate(sizes):
            picture = np.asarray(screenshot(index, size)).transpose(2, 0, 1)
            picture = torch.from_numpy(np.ascontiguousarray(picture)).to(device)
            times = []
            for _ in range(2):
                started = time.perf_counter()
                inputs = processor(
                    images=[picture], return_tensors="pt", device=device, input_data_format="channels_first"
                )
                grids = [tuple(g) for g in inputs["image_grid_thw"].tolist()]
                encoder.start(inputs["pixel_values"], grids).advance()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(1000 * (time.perf_counter() - started))
            patches = sum(t * h * w for t, h, w in grids)
            print(f"| {size[0]}x{size[1]} | {patches} | {times[0]:.1f} | {times[1]:.1f} |", flush=True)


def table(encoder, processor, pictures, batches, repeat: int, device) -> None:
    print("| pictures per call | patches | ms per call (median) | ms per picture | TFLOP/s (layers) |")
    print("|---|---|---|---|---|")
    with torch.inference_mode():
        for batch in batches:
            inputs = processor(
                images=pictures[:batch], return_tensors="pt", device=device, input_data_format="channels_first"
            )
            grids = [tuple(g) for g in inputs["image_grid_thw"].tolist()]
            times = []
            for _ in range(repeat + 2):
                job = encoder.start(inputs["pixel_values"], grids)
                job.advance()
                if device.type == "cuda":
                    torch.cuda.synchronize()  # reading CUDA events before the GPU has passed them raises
                times.append(1000 * job.seconds())
            ms = statistics.median(times[2:])  # the first two: compilation, cuDNN plans
            tflops = job.block_flops * len(encoder.visual.blocks) / ms / 1e9
            patches = sum(t * h * w for t, h, w in grids)
            print(f"| {batch} | {patches} | {ms:.1f} | {ms / batch:.1f} | {tflops:.0f} |", flush=True)


if __name__ == "__main__":
    main()
