"""Train the bundled demo model: a small GLM-4.6V-architecture VLM, from scratch, on synthetic scenes.

    python tools/train_demo_model.py --out assets/demo-model            # GPU: ~8 minutes on one H100
    python tools/train_demo_model.py --out /tmp/demo --device cpu --steps 20 --batch 8 --workers 1   # smoke run

The model is a `Glm4vForConditionalGeneration` with GLM's special tokens and chat template, a
byte-level BPE tokenizer trained on the question/answer vocabulary, and a preprocessor that caps
images at `--image-tokens` LLM tokens (28x28 px each). Data come from `glm_vision.demo_data`:
conversations of 1-3 images with 1-4 questions each (English and Chinese), thinking on (an empty
`<think></think>` block, as GLM writes it in history) or off (`/nothink`), each answer ending with
`<|user|>` (next turn) or `<|endoftext|>`. Loss is on assistant tokens only.

Data path: `--bank` pictures are rendered once, up front, by a process pool, and resized by the
processor itself into uint8 patch rows that live on the GPU; the DataLoader workers only write the
conversations and token ids (about 1,400 conversations/s per worker on this CPU, against 77 when
each worker rendered and preprocessed its own pictures), and the step gathers and normalises the
patches on the GPU (equal to the processor's `pixel_values` to 5e-7). Every log line prints
steps/s and the share of the time spent waiting for data.

Reproducible: batch i is drawn from `random.Random(f"{seed}/{i}")` whatever the number of data
workers, and the model is initialised from `--seed`. With `--steps auto` the step count is chosen
from the measured speed so that training fits `--budget-s`; the chosen count is printed and saved in
`training_args.json`, and passing it back as `--steps N` repeats the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glm_vision import demo_data  # noqa: E402
from glm_vision.tiny import build_config, build_processor, train_tokenizer  # noqa: E402

PX_PER_TOKEN = 28 * 28
IGNORE = -100


# ---------------------------------------------------------------------------------------------- processor
def make_processor(image_tokens: int, vocab_size: int):
    processor = build_processor(train_tokenizer(vocab_size, demo_data.corpus_text()))
    ip = processor.image_processor
    # the processor's pixel counts include the temporal factor (2): `longest_edge` = tokens x 784 x 2
    ip.size = {"shortest_edge": ip.size["shortest_edge"], "longest_edge": image_tokens * PX_PER_TOKEN * ip.temporal_patch_size}
    return processor


# ---------------------------------------------------------------------------------------------- samples
def template_messages(conv: demo_data.Conversation) -> tuple[list[dict], list]:
    messages, images = [], []
    for turn in conv.turns:
        content = []
        if turn.image is not None:
            content.append({"type": "image"})
            images.append(turn.image)
        content.append({"type": "text", "text": turn.question})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": turn.answer})
    return messages, images


def mrope_positions(ids: np.ndarray, grids: list[tuple[int, int, int]], image_token_id: int, merge: int = 2) -> np.ndarray:
    """(3, len) M-RoPE positions, as `Glm4vModel.get_rope_index` computes them (checked in the smoke run)."""
    out = np.zeros((3, len(ids)), dtype=np.int64)
    p, i, g = 0, 0, 0
    n = len(ids)
    while i < n:
        if ids[i] == image_token_id:
            _, h, w = grids[g]
            g += 1
            gh, gw = h // merge, w // merge
            rows, cols = np.divmod(np.arange(gh * gw), gw)
            out[0, i : i + gh * gw] = p
            out[1, i : i + gh * gw] = p + rows
            out[2, i : i + gh * gw] = p + cols
            i += gh * gw
            p += max(h, w) // merge
        else:
            j = i
            while j < n and ids[j] != image_token_id:
                j += 1
            out[:, i:j] = np.arange(p, p + j - i)
            p += j - i
            i = j
    return out


# ---------------------------------------------------------------------------------------------- image bank
_POOL_IP = None


def _pool_init(image_processor) -> None:
    global _POOL_IP
    torch.set_num_threads(1)
    _POOL_IP = image_processor


def _render_one(job: tuple[int, int]):
    """Scene j of the bank and its pixels exactly as the processor resizes them, as uint8 patch rows
    (grid_h * grid_w, 3 * 14 * 14) in the processor's patch order, without the temporal copy."""
    seed, j = job
    scene = demo_data.random_scene(random.Random(f"{seed}/scene/{j}"))
    out = _POOL_IP(images=[demo_data.render(scene)], do_rescale=False, do_normalize=False, return_tensors="pt")
    _, gh, gw = out["image_grid_thw"][0].tolist()
    rows = out["pixel_values"].view(gh * gw, 3, _POOL_IP.temporal_patch_size, -1)[:, :, 0]
    return scene, rows.round().clamp(0, 255).to(torch.uint8).reshape(gh * gw, -1).numpy(), (gh, gw)


class ImageBank:
    """Every training picture rendered once, up front, by a pool of processes: the scenes (for the
    questions) and their resized pixels as one uint8 array of patch rows (moved to the GPU by the
    trainer), with each picture's first row and grid."""

    def __init__(self, processor, n: int, seed: int, procs: int) -> None:
        import multiprocessing as mp

        t = time.time()
        jobs = [(seed, j) for j in range(n)]
        if procs > 1:
            with mp.get_context("fork").Pool(procs, _pool_init, (processor.image_processor,)) as pool:
                results = pool.map(_render_one, jobs, chunksize=64)
        else:
            _pool_init(processor.image_processor)
            results = [_render_one(job) for job in jobs]
        self.scenes = [r[0] for r in results]
        self.grids = np.asarray([r[2] for r in results], dtype=np.int64)
        lengths = self.grids[:, 0] * self.grids[:, 1]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.rows = np.concatenate([r[1] for r in results])
        self.seconds = time.time() - t
        print(f"image bank: {n} pictures, {len(self.rows)} patch rows, {self.rows.nbytes / 1e9:.2f} GB uint8, "
              f"rendered in {self.seconds:.1f}s with {procs} processes ({n / self.seconds:.0f} pictures/s)", flush=True)

    def __len__(self) -> int:
        return len(self.scenes)


def normalise_patches(rows: torch.Tensor, image_processor) -> torch.Tensor:
    """uint8 patch rows -> the processor's `pixel_values` (rescale, normalise, temporal copy), on rows' device."""
    n = rows.shape[0]
    mean = torch.tensor(image_processor.image_mean, device=rows.device).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std, device=rows.device).view(1, 3, 1, 1)
    x = rows.view(n, 3, 1, -1).float() * image_processor.rescale_factor
    x = (x - mean) / std
    return x.expand(n, 3, image_processor.temporal_patch_size, x.shape[-1]).reshape(n, -1)


class Batcher:
    """Builds one padded training batch from a seed: token ids, targets, positions, and which bank
    rows hold its pictures' patches (the pixels themselves are gathered on the GPU)."""

    def __init__(self, processor, batch: int, seed: int, bank: ImageBank) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.batch = batch
        self.seed = seed
        self.bank = bank
        tk = self.tokenizer
        self.image_token_id = tk.convert_tokens_to_ids("<|image|>")
        self.assistant_id = tk.convert_tokens_to_ids("<|assistant|>")
        self.end_ids = {tk.convert_tokens_to_ids("<|user|>"), tk.convert_tokens_to_ids("<|endoftext|>")}
        self.pad_id = tk.convert_tokens_to_ids("<|endoftext|>")

    def _pick(self, rng: random.Random):
        j = rng.randrange(len(self.bank))
        return self.bank.scenes[j], j

    def sample(self, rng: random.Random, multi: bool):
        images = rng.choice([2, 2, 3]) if multi else (0 if rng.random() < 0.03 else 1)
        conv = demo_data.random_conversation(rng, images=images, zh_share=0.4, new_scene=self._pick)
        messages, images = template_messages(conv)
        thinking = rng.random() < 0.5
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False, enable_thinking=thinking)
        ids = self.tokenizer(text + "<|endoftext|>")["input_ids"]
        return ids, images

    def make(self, index: int) -> dict:
        rng = random.Random(f"{self.seed}/{index}")
        # a batch holds either single-image or multi-image conversations: less padding
        multi = rng.random() < 0.4
        raw = []
        while len(raw) < self.batch:
            raw.append(self.sample(rng, multi))
        all_images = [j for _, imgs in raw for j in imgs]
        if all_images:
            grid_list = [(1, int(self.bank.grids[j, 0]), int(self.bank.grids[j, 1])) for j in all_images]
            grids = torch.tensor(grid_list, dtype=torch.long)
            rows = torch.from_numpy(np.concatenate(
                [np.arange(self.bank.offsets[j], self.bank.offsets[j] + g[1] * g[2]) for j, g in zip(all_images, grid_list)]))
        else:
            rows, grids, grid_list = None, None, []
        layout = vision_layout(grid_list) if grid_list else None
        seqs, g = [], 0
        for ids, images in raw:
            mine = grid_list[g : g + len(images)]
            g += len(images)
            expanded = []
            it = iter(mine)
            for t in ids:
                if t == self.image_token_id:
                    _, h, w = next(it)
                    expanded.extend([t] * ((h // 2) * (w // 2)))
                else:
                    expanded.append(t)
            arr = np.asarray(expanded, dtype=np.int64)
            target = np.zeros(len(arr), dtype=bool)
            inside = False
            for k, t in enumerate(expanded):
                if inside:
                    target[k] = True
                    if t in self.end_ids:
                        inside = False
                elif t == self.assistant_id:
                    inside = True
            seqs.append((arr, target, mrope_positions(arr, mine, self.image_token_id)))
        length = max(len(a) for a, _, _ in seqs)
        input_ids = np.full((len(seqs), length), self.pad_id, dtype=np.int64)
        labels = np.full((len(seqs), length), IGNORE, dtype=np.int64)
        positions = np.zeros((3, len(seqs), length), dtype=np.int64)
        for b, (arr, target, pos) in enumerate(seqs):
            n = len(arr)
            input_ids[b, :n] = arr
            lab = np.where(target, arr, IGNORE)
            labels[b, : n - 1] = lab[1:]  # position t predicts token t+1
            positions[:, b, :n] = pos
            positions[:, b, n:] = pos.max() + 1 + np.arange(length - n)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(positions),
            "patch_rows": rows,
            "image_grid_thw": grids,
            "layout": None if layout is None else {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in layout.items()},
        }


class BatchStream(torch.utils.data.IterableDataset):
    def __init__(self, batcher: Batcher, start: int, stop: int) -> None:
        self.batcher, self.start, self.stop = batcher, start, stop

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        torch.set_num_threads(1)
        for i in range(self.start + wid, self.stop, nw):  # DataLoader interleaves workers in order
            yield self.batcher.make(i)


# ---------------------------------------------------------------------------------------------- model
_LAYOUT: dict = {}  # the current batch's padded ViT layout, set by `loss_fn`


def vision_layout(grid_list: list[tuple[int, int, int]], merge: int = 2) -> dict:
    """For a batch's pictures (built in the data workers, as numpy): the ViT's patch positions
    (what `get_vision_position_ids` computes with one loop iteration per picture on the GPU), and
    the gather indices that pad every picture's patches to the longest one and back."""
    lengths = np.array([t * h * w for t, h, w in grid_list], dtype=np.int64)
    total, longest, n = int(lengths.sum()), int(lengths.max()), len(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    slot = np.arange(longest)[None, :]
    pad_index = np.where(slot < lengths[:, None], starts[:, None] + slot, total)  # `total`: a zero row appended
    valid = (slot < lengths[:, None])
    return {
        "vision_positions": np.concatenate([_patch_positions(h, w, merge) for _, h, w in grid_list]),
        "pad_index": pad_index.reshape(-1),
        "unpad_index": np.flatnonzero(valid.reshape(-1)),
        "valid": valid,
        "shape": (n, longest),
    }


_PATCH_POSITIONS: dict = {}


def _patch_positions(h: int, w: int, merge: int) -> np.ndarray:
    """(h*w, 2) (row, column) of each patch in the processor's order: merge x merge blocks, row-major."""
    key = (h, w, merge)
    if key not in _PATCH_POSITIONS:
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        _PATCH_POSITIONS[key] = np.stack(
            [rows.reshape(shape).transpose(0, 2, 1, 3).reshape(-1), cols.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)], -1)
    return _PATCH_POSITIONS[key]


def padded_vision_attention(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
    """Training-only replacement for the ViT's per-image SDPA loop: all images padded to the longest
    one and masked, one SDPA call per layer. Same math (checked against the original in the smoke
    run), a handful of kernels instead of one loop iteration per image."""
    from transformers.models.glm4v.modeling_glm4v import apply_rotary_pos_emb_vision

    length = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    n, longest = _LAYOUT["shape"]
    heads, dim = v.shape[1], v.shape[2]

    def pad(t):  # index_select, not t[index]: its backward is an index_add, not a sort-based index_put
        t = torch.cat([t.to(v.dtype), t.new_zeros(1, heads, dim, dtype=v.dtype)])
        return t.index_select(0, _LAYOUT["pad_index"]).view(n, longest, heads, dim).transpose(1, 2)

    with torch.nn.attention.sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        o = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=_LAYOUT["mask"], scale=self.scaling)
    o = o.transpose(1, 2).reshape(n * longest, heads, dim).index_select(0, _LAYOUT["unpad_index"])
    return self.proj(o.reshape(length, -1))


def linear_patch_embed(self, hidden_states):
    """Training-only replacement for the ViT's Conv3d patch embedding: with stride == kernel the
    convolution is one matrix product over the flattened patch, and cuDNN's Conv3d (bf16, ~70k
    patches a batch) is suspected of being the slow part of the step on the H100 (the data wait was
    0-4 % of the step in the last run; pytorch#174051, transformers#45041). Same weights, same math
    (checked in the smoke run)."""
    w = self.proj.weight
    return F.linear(hidden_states.reshape(-1, w[0].numel()).to(w.dtype), w.reshape(w.shape[0], -1), self.proj.bias)


_POSITION_MATRICES: dict = {}  # (t, h, w) grid -> its (patches, table rows) interpolation weights


def matrix_position_embeddings(self, embeddings, lengths, image_shapes, h_coords, w_coords):
    """Training-only replacement for the ViT's bicubic `grid_sample` of its position table. The
    sample is linear in the table, so per grid size it is a fixed matrix (the sample of an identity
    basis), and the batch's position embeddings are one matrix product. `grid_sample`'s backward
    scatters ~1M taps with atomics into a 24x24 table, which serialises on the GPU; the product's
    backward is another product. Same numbers (checked with --check-positions)."""
    weight = self.position_embedding.weight
    rows, side = weight.shape[0], int(weight.shape[0] ** 0.5)
    mats, start = [], 0
    for n, grid in zip(lengths.tolist(), image_shapes.tolist()):
        key = tuple(grid)
        mat = _POSITION_MATRICES.get(key)
        if mat is None:
            basis = torch.eye(rows, device=weight.device).view(1, rows, side, side)
            hc, wc = h_coords[start : start + n].float(), w_coords[start : start + n].float()
            where = torch.stack((((wc + 0.5) / grid[2]) * 2 - 1, ((hc + 0.5) / grid[1]) * 2 - 1), dim=-1)
            sampled = F.grid_sample(basis, where[None, :, None, :], mode=self.interpolated_method,
                                    align_corners=False, padding_mode="border")
            mat = _POSITION_MATRICES[key] = sampled[0, :, :, 0].T.contiguous()
        mats.append(mat)
        start += n
    with torch.autocast(weight.device.type, enabled=False):
        positions = torch.cat(mats) @ weight.float()
    return embeddings + positions.to(weight.dtype).to(embeddings.device)


def build_model(processor, args):
    from transformers import GenerationConfig, Glm4vForConditionalGeneration

    config = build_config(
        processor.tokenizer, layers=args.layers, hidden=args.hidden, heads=args.heads, intermediate=args.intermediate,
        vision_hidden=args.vision_hidden, vision_depth=args.vision_depth, vision_heads=args.vision_heads, init_std=0.02,
    )
    torch.manual_seed(args.seed)
    model = Glm4vForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=config.text_config.pad_token_id,
        do_sample=True, temperature=0.8, top_p=0.6, top_k=2, repetition_penalty=1.1,
    )
    return model


def loss_fn(model, batch, device, autocast, bank_rows, image_processor):
    inner = model.model
    ids = batch["input_ids"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    positions = batch["position_ids"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        embeds = inner.language_model.embed_tokens(ids)
        if batch["patch_rows"] is not None:
            rows = bank_rows[batch["patch_rows"].to(device, non_blocking=True)]
            pixels = normalise_patches(rows, image_processor)
            grids = batch["image_grid_thw"].to(device)
            layout = batch["layout"]
            _LAYOUT.update(
                pad_index=layout["pad_index"].to(device, non_blocking=True),
                unpad_index=layout["unpad_index"].to(device, non_blocking=True),
                mask=layout["valid"][:, None, None, :].to(device, non_blocking=True),
                shape=layout["shape"],
            )
            feats = inner.visual(pixels, grid_thw=grids, position_ids=layout["vision_positions"].to(device, non_blocking=True)).pooler_output
            mask = (ids == model.config.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(mask, feats.to(embeds.dtype))
        hidden = inner.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=False).last_hidden_state
        keep = labels != IGNORE
        logits = model.lm_head(hidden[keep])
    return F.cross_entropy(logits.float(), labels[keep])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", default="auto", help="number of optimizer steps, or 'auto' to fit --budget-s")
    p.add_argument("--budget-s", type=float, default=470.0, help="training time for --steps auto")
    p.add_argument("--batch", type=int, default=160)
    p.add_argument("--lr", type=float, default=2.5e-3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--bank", type=int, default=48000, help="pictures rendered up front; conversations draw from them")
    p.add_argument("--render-procs", type=int, default=os.cpu_count() or 1, help="processes that render the bank")
    p.add_argument("--image-tokens", type=int, default=100, help="most LLM tokens per image (28x28 px each)")
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--vision-hidden", type=int, default=192)
    p.add_argument("--vision-depth", type=int, default=4)
    p.add_argument("--vision-heads", type=int, default=3)
    p.add_argument("--deadline-s", type=float, default=0, help="stop early (and save) this long after the start; 0: never")
    p.add_argument("--state", help="training state file: written when the run stops, and resumed from if it exists "
                                   "(a long run split over several commands; needs a fixed --steps)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--linear-patch-embed", type=int, default=1, help="1: patch embedding as a matmul instead of Conv3d")
    p.add_argument("--check-positions", action="store_true", help="compare the positions with get_rope_index first")
    p.add_argument("--profile", action="store_true", help="profile steps 20-24, print the top ops, and stop")
    args = p.parse_args(argv)

    started = time.time()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    # cuDNN attention builds a new plan (~15 ms of CPU) for every new batch shape; flash and
    # memory-efficient attention have no plans.
    torch.backends.cuda.enable_cudnn_sdp(False)
    processor = make_processor(args.image_tokens, args.vocab)
    print(f"processor ready {time.time() - started:.0f}s", flush=True)
    bank = ImageBank(processor, args.bank, args.seed, args.render_procs)
    bank_rows = torch.from_numpy(bank.rows).to(device)
    bank.rows = None  # the workers need only the scenes, offsets and grids
    model = build_model(processor, args).to(device)
    from transformers.models.glm4v import modeling_glm4v
    from transformers.vision_utils import get_vision_position_ids

    if args.check_positions:  # the replacements compute what the originals do
        probe = torch.randn(8, model.model.visual.patch_embed.proj.weight[0].numel(), device=device)
        ref = model.model.visual.patch_embed(probe)
        alt = linear_patch_embed(model.model.visual.patch_embed, probe)
        print(f"linear patch embedding vs Conv3d: max abs diff {(ref - alt).abs().max().item():.2e}", flush=True)
        assert torch.allclose(ref, alt, atol=1e-4 if device.type == "cpu" else 3e-3)  # TF32 on the GPU
    if args.check_positions:
        emb = model.model.visual.embeddings
        grids = torch.tensor([[1, 12, 20], [1, 8, 8], [1, 12, 20]], device=device)
        pos = get_vision_position_ids(grids, 2)
        cu = torch.cat([grids.new_zeros(1), grids.prod(-1).cumsum(0)])
        x = torch.randn(int(cu[-1]), emb.embed_dim, device=device)
        ref = emb(x, cu[1:] - cu[:-1], grids, pos[:, 0].to(device), pos[:, 1].to(device))
        alt = matrix_position_embeddings(emb, x, cu[1:] - cu[:-1], grids, pos[:, 0].to(device), pos[:, 1].to(device))
        print(f"matrix position embeddings vs grid_sample: max abs diff {(ref - alt).abs().max().item():.2e}", flush=True)
        assert torch.allclose(ref, alt, atol=1e-4 if device.type == "cpu" else 3e-3)  # TF32 on the GPU
    modeling_glm4v.Glm4vVisionEmbeddings.forward = matrix_position_embeddings
    if args.check_positions:  # padded attention and worker-built positions == the model's own
        grid_list = [(1, 12, 20), (1, 8, 8), (1, 20, 6)]
        grids = torch.tensor(grid_list, device=device)
        layout = vision_layout(grid_list)
        ref_pos = get_vision_position_ids(grids, 2).cpu()
        assert torch.equal(torch.from_numpy(layout["vision_positions"]), ref_pos), "vision positions differ"
        blk = model.model.visual.blocks[0].attn
        x = torch.randn(int(grids.prod(-1).sum()), blk.qkv.in_features, device=device)
        cos_sin = model.model.visual.rotary_pos_emb(x, ref_pos.to(device))
        cu = torch.nn.functional.pad(grids.prod(-1).cumsum(0), (1, 0)).int()
        ref = blk(x, cu_seqlens=cu, position_embeddings=cos_sin)
        _LAYOUT.update(pad_index=torch.from_numpy(layout["pad_index"]).to(device),
                       unpad_index=torch.from_numpy(layout["unpad_index"]).to(device),
                       mask=torch.from_numpy(layout["valid"])[:, None, None, :].to(device), shape=layout["shape"])
        alt = padded_vision_attention(blk, x, cu, position_embeddings=cos_sin)
        print(f"padded vision attention vs per-image: max abs diff {(ref - alt).abs().max().item():.2e}", flush=True)
        assert torch.allclose(ref, alt, atol=1e-4 if device.type == "cpu" else 3e-3)
    modeling_glm4v.Glm4vVisionAttention.forward = padded_vision_attention
    if args.linear_patch_embed:
        modeling_glm4v.Glm4vVisionPatchEmbed.forward = linear_patch_embed
    n_params = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters ({n_vision / 1e6:.2f}M vision), vocab {len(processor.tokenizer)}", flush=True)

    batcher = Batcher(processor, args.batch, args.seed, bank)
    if args.check_positions:
        b = batcher.make(10**6)
        types = (b["input_ids"] == model.config.image_token_id).int()
        pos, _ = model.model.get_rope_index(b["input_ids"], types, image_grid_thw=b["image_grid_thw"])
        mine = b["position_ids"]
        real = b["labels"] != IGNORE
        agree = bool(((pos == mine)[:, real]).all())
        print(f"positions agree with get_rope_index on target tokens: {agree}", flush=True)
        assert agree

    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        (decay if prm.ndim >= 2 and "embed" not in name else no_decay).append(prm)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-8, fused=fused,
    )
    total = None if args.steps == "auto" else int(args.steps)
    stop = total if total is not None else 10**7
    first_step, train_s_before = 0, 0.0
    if args.state and Path(args.state).exists():
        if total is None:
            raise SystemExit("--state needs a fixed --steps")
        saved = torch.load(args.state, map_location=device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        first_step, train_s_before = saved["step"], saved["train_seconds"]
        print(f"resumed from {args.state} at step {first_step}", flush=True)
    loader = torch.utils.data.DataLoader(
        BatchStream(batcher, first_step, stop), batch_size=None, num_workers=args.workers, pin_memory=fused,
        prefetch_factor=4 if args.workers else None, persistent_workers=False,
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        horizon = total if total is not None else 10**7
        frac = min(1.0, (step - args.warmup) / max(1, horizon - args.warmup))
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    autocast = device.type == "cuda"
    t_probe = None
    running, count = 0.0, 0
    t0 = time.time()
    print(f"training starts {t0 - started:.0f}s after launch", flush=True)
    step = first_step
    wait, wait_window, t_window = 0.0, 0.0, time.time()
    it = iter(loader)
    while True:
        t_wait = time.time()
        try:
            batch = next(it)
        except StopIteration:
            break
        waited = time.time() - t_wait
        wait += waited
        wait_window += waited
        if total is not None and step >= total:
            break
        if args.deadline_s and time.time() - started > args.deadline_s:
            print(f"deadline reached at step {step}: stopping early", flush=True)
            if total is None or not args.state:
                total = step
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        if args.profile and step == 20:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
            profiler.__enter__()
            t_prof = time.time()
        loss = loss_fn(model, batch, device, autocast, bank_rows, processor.image_processor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if args.profile and step == 24:
            torch.cuda.synchronize() if device.type == "cuda" else None
            profiler.__exit__(None, None, None)
            print(f"5 profiled steps: {time.time() - t_prof:.2f}s wall", flush=True)
            keys = profiler.key_averages()
            print(keys.table(sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total", row_limit=25), flush=True)
            print(keys.table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
            return
        running += loss.item() if (step % 10 == 0 or step < 20) else 0.0
        count += 1 if (step % 10 == 0 or step < 20) else 0
        if total is None:
            if step == 60:
                t_probe = time.time()
            elif step == 260:
                rate = 200 / (time.time() - t_probe)
                left = args.budget_s - (time.time() - t0)
                total = max(args.warmup + 200, int(260 + rate * left))
                print(f"speed {rate:.2f} steps/s -> --steps {total}", flush=True)
        if step % args.log_every == 0:
            span = time.time() - t_window
            print(f"step {step}/{total or '?'} loss {running / max(1, count):.4f} lr {lr_at(step):.2e} "
                  f"{time.time() - t0:.0f}s | {args.log_every / span if step else 0:.2f} steps/s, "
                  f"data wait {wait_window / max(span, 1e-9):.0%}", flush=True)
            running, count = 0.0, 0
            wait_window, t_window = 0.0, time.time()
        step += 1
    steps_done = step
    session_s = time.time() - t0
    train_s = session_s + train_s_before
    print(f"trained steps {first_step}-{steps_done} of {total} in {session_s:.0f}s "
          f"({(steps_done - first_step) / session_s:.2f} steps/s, waiting for data {wait:.0f}s)", flush=True)
    if args.state:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": steps_done,
                    "train_seconds": train_s}, args.state)
        print(f"saved the training state at step {steps_done} to {args.state}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to(torch.bfloat16).save_pretrained(out)
    processor.save_pretrained(out)
    record = {k: v for k, v in vars(args).items() if k != "out"}
    record.update(steps=steps_done, train_seconds=round(train_s), total_seconds=round(time.time() - started),
                  device_name=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                  parameters=n_params, torch=torch.__version__,
                  bank_render_seconds=round(bank.seconds, 1), data_wait_seconds=round(wait, 1))
    import transformers

    record["transformers"] = transformers.__version__
    (out / "training_args.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}: " + ", ".join(f"{f.name} {f.stat().st_size / 1e6:.1f} MB" for f in sorted(out.iterdir())), flush=True)


if __name__ == "__main__":
    main()
