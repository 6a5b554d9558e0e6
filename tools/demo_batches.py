"""The demo model's training batches: conversations about the current bank's pictures, tokenised with
GLM's chat template, image placeholders expanded, loss targets on the assistant tokens, explicit
M-RoPE positions, and which bank rows (pixels) and labels (auxiliary targets) each picture uses."""

from __future__ import annotations

import random

import numpy as np
import torch

from glm_vision.synthetic import questions
from tools import demo_vit_fast
from tools.demo_bank import ImageBank

IGNORE = -100


def template_messages(conv: questions.Conversation) -> tuple[list[dict], list]:
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


def mrope_positions(
    ids: np.ndarray, grids: list[tuple[int, int, int]], image_token_id: int, merge: int = 2
) -> np.ndarray:
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
        conv = questions.random_conversation(rng, images=images, zh_share=0.4, new_scene=self._pick)
        messages, images = template_messages(conv)
        thinking = rng.random() < 0.5
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False, enable_thinking=thinking
        )
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
            rows = torch.from_numpy(
                np.concatenate(
                    [
                        np.arange(self.bank.offsets[j], self.bank.offsets[j] + g[1] * g[2])
                        for j, g in zip(all_images, grid_list, strict=False)
                    ]
                )
            )
            token_labels = torch.from_numpy(
                np.concatenate(
                    [
                        self.bank.labels[self.bank.label_offsets[j] : self.bank.label_offsets[j] + g[1] * g[2] // 4]
                        for j, g in zip(all_images, grid_list, strict=False)
                    ]
                ).astype(np.int64)
            )
        else:
            rows, grids, grid_list, token_labels = None, None, [], None
        layout = demo_vit_fast.vision_layout(grid_list) if grid_list else None
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
            "token_labels": token_labels,
            "layout": None
            if layout is None
            else {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in layout.items()},
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
