"""The demo model's training pictures: banks of synthetic scenes rendered by a process pool and
resized by the processor itself into uint8 patch rows, and their normalisation on the GPU (equal to
the processor's `pixel_values` to 5e-7)."""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from glm_vision.synthetic import scenes as demo_data

_POOL_IP = None


def _pool_init(image_processor) -> None:
    global _POOL_IP
    torch.set_num_threads(1)
    _POOL_IP = image_processor


SHAPE_CLASSES = 7  # background, the five shapes, the word's letters
COLOR_CLASSES = len(demo_data.COLORS) + 1  # none (background, word), the colours
CHAR_CLASSES = 27  # none, A-Z
LABEL_COLUMNS = 7  # class, colour, character, the object's box x1 y1 x2 y2 (0-1000; 0 on background)
WORD_CLASS = SHAPE_CLASSES - 1
_SHAPE_INDEX = {kind: i + 1 for i, (kind, _) in enumerate(demo_data.SHAPES)}
_COLOR_INDEX = {c[0]: i + 1 for i, c in enumerate(demo_data.COLORS)}
COVER = 0.15  # an object labels a token's cell when it covers this share of it
INK = 0.05  # a letter labels a cell when its strokes cover this share of it


def _label_value(shape) -> int:
    return _SHAPE_INDEX[shape.kind] * 16 + _COLOR_INDEX[shape.color]


def _cells(layout: np.ndarray, grid: tuple[int, int], merge: int, patch: int) -> np.ndarray:
    """(tokens, cell pixels): a label image at the processor's size, cut into the LLM tokens' cells."""
    gh, gw = grid
    cell = merge * patch
    return layout.reshape(gh // merge, cell, gw // merge, cell).transpose(0, 2, 1, 3).reshape(-1, cell * cell)


def _majority(codes: np.ndarray, classes: int, least: float) -> np.ndarray:
    """Per row, the most frequent code in 1..classes-1 if it covers `least` of the row, else 0."""
    counts = np.stack([(codes == c).sum(1) for c in range(1, classes)], 1)
    return np.where(counts.max(1) >= least * codes.shape[1], counts.argmax(1) + 1, 0)


def _char_layout(scene: demo_data.Scene, size: tuple[int, int]) -> np.ndarray:
    """The word's strokes at `size` (w, h), each pixel holding its character's class (A=1 .. Z=26)."""
    strokes = demo_data.render_labels(scene, lambda s: 0, 1).resize(size, resample=0)
    x = (np.arange(size[0]) + 0.5) * scene.width / size[0]  # column centres in the scene's pixels
    which = np.searchsorted(demo_data.word_char_edges(scene), x) - 1
    text = scene.word.text
    codes = np.array([ord(ch) - ord("A") + 1 if "A" <= ch <= "Z" else 0 for ch in text] + [0])
    column = codes[np.clip(which, -1, len(text))]  # -1 (left of the word) reads the trailing 0
    return np.asarray(strokes) * column[None, :]


def token_labels(scene: demo_data.Scene, grid: tuple[int, int], merge: int = 2, patch: int = 14) -> np.ndarray:
    """(tokens, LABEL_COLUMNS) int16: per LLM image token (row-major over the merged grid), the class of
    the object covering its cell (0 background, 1-5 shapes, 6 word), the shape's colour (0 none), the
    letter whose strokes cover most of the cell (0 none, 1-26 A-Z), and the covering object's box in
    0-1000 coordinates: the targets of the demo model's auxiliary encoder loss."""
    gh, gw = grid
    size = (gw * patch, gh * patch)
    layout = demo_data.render_labels(scene, _label_value, WORD_CLASS * 16)
    cells = _cells(np.asarray(layout.resize(size, resample=0)), grid, merge, patch)  # nearest: labels stay labels
    out = np.zeros((cells.shape[0], LABEL_COLUMNS), dtype=np.int16)
    out[:, 0] = _majority(cells // 16, SHAPE_CLASSES, COVER)
    out[:, 1] = _majority(cells % 16, COLOR_CLASSES, COVER)
    boxes = {_SHAPE_INDEX[s.kind]: demo_data.shape_box(scene, s) for s in scene.shapes}
    if scene.word is not None:
        out[:, 2] = _majority(_cells(_char_layout(scene, size), grid, merge, patch), CHAR_CLASSES, INK)
        boxes[WORD_CLASS] = demo_data.word_box(scene)
    for code, box in boxes.items():
        out[out[:, 0] == code, 3:] = demo_data.thousandths(scene, box)
    return out


def _render_one(job: tuple[int, int, int]):
    """Scene j of bank k and its pixels exactly as the processor resizes them, as uint8 patch rows
    (grid_h * grid_w, 3 * 14 * 14) in the processor's patch order, without the temporal copy; and the
    per-token labels of `token_labels`."""
    seed, k, j = job
    scene = demo_data.varied_scene(random.Random(f"{seed}/scene/{j}" if k == 0 else f"{seed}/scene/{k}/{j}"))
    out = _POOL_IP(images=[demo_data.render(scene)], do_rescale=False, do_normalize=False, return_tensors="pt")
    _, gh, gw = out["image_grid_thw"][0].tolist()
    rows = out["pixel_values"].view(gh * gw, 3, _POOL_IP.temporal_patch_size, -1)[:, :, 0]
    pixels = rows.round().clamp(0, 255).to(torch.uint8).reshape(gh * gw, -1).numpy()
    return scene, pixels, (gh, gw), token_labels(scene, (gh, gw), _POOL_IP.merge_size, _POOL_IP.patch_size)


class ImageBank:
    """One bank of training pictures: the scenes (for the questions) and their resized pixels as one
    uint8 array of patch rows (moved to the GPU by the trainer), with each picture's first row and grid."""

    def __init__(self, results: list, seconds: float) -> None:
        self.scenes = [r[0] for r in results]
        self.grids = np.asarray([r[2] for r in results], dtype=np.int64)
        lengths = self.grids[:, 0] * self.grids[:, 1]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.rows = np.concatenate([r[1] for r in results])
        self.labels = np.concatenate([r[3] for r in results])  # (tokens, LABEL_COLUMNS), picture after picture
        tokens = np.asarray([len(r[3]) for r in results])  # one label row per LLM image token
        self.label_offsets = np.concatenate([[0], np.cumsum(tokens)[:-1]]).astype(np.int64)
        self.seconds = seconds

    def __len__(self) -> int:
        return len(self.scenes)


class BankRenderer:
    """Renders bank k (`n` pictures of seed-derived scenes) in a process pool. The pool is made
    before CUDA starts (forking a CUDA process is unsafe), and `prefetch` renders the next bank in the
    background while training uses the current one, so a long run sees many distinct pictures
    instead of memorising one bank."""

    def __init__(self, image_processor, n: int, seed: int, procs: int) -> None:
        import multiprocessing as mp

        self.n, self.seed, self.procs = n, seed, procs
        self.pending: dict[int, tuple[float, object]] = {}
        self.pool = mp.get_context("fork").Pool(procs, _pool_init, (image_processor,)) if procs > 1 else None
        if self.pool is None:
            _pool_init(image_processor)

    def _jobs(self, k: int) -> list[tuple[int, int, int]]:
        return [(self.seed, k, j) for j in range(self.n)]

    def prefetch(self, k: int) -> None:
        if self.pool is not None and k not in self.pending:
            self.pending[k] = (time.time(), self.pool.map_async(_render_one, self._jobs(k), chunksize=64))

    def get(self, k: int) -> ImageBank:
        if self.pool is None:
            started = time.time()
            results = [_render_one(job) for job in self._jobs(k)]
        else:
            self.prefetch(k)
            started, pending = self.pending.pop(k)
            results = pending.get()
        bank = ImageBank(results, time.time() - started)
        print(
            f"image bank {k}: {self.n} pictures, {len(bank.rows)} patch rows, {bank.rows.nbytes / 1e9:.2f} GB uint8, "
            f"ready {bank.seconds:.1f}s after it was asked for ({self.procs} processes)",
            flush=True,
        )
        return bank

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()


def normalise_patches(rows: torch.Tensor, image_processor) -> torch.Tensor:
    """uint8 patch rows -> the processor's `pixel_values` (rescale, normalise, temporal copy), on rows' device."""
    n = rows.shape[0]
    mean = torch.tensor(image_processor.image_mean, device=rows.device).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std, device=rows.device).view(1, 3, 1, 1)
    x = rows.view(n, 3, 1, -1).float() * image_processor.rescale_factor
    x = (x - mean) / std
    return x.expand(n, 3, image_processor.temporal_patch_size, x.shape[-1]).reshape(n, -1)
