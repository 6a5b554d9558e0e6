"""The vision tower's attention: each picture attends to its own patches, on cuDNN without a plan per
picture size.

cuDNN's fused attention runs a picture's long non-causal sequence fastest on Hopper (a 1080p picture's
10,764 patches: 1.17 ms a layer on the H200 against flash attention's 2.0), but it builds an execution
plan for every new shape, 58-69 ms, the first time a picture of a new size arrives (bench/RESULTS.md,
seventh session): a cost nearly every cold request would pay, since screenshots come in every size. So
cuDNN only sees bucketed shapes. For a picture of L patches and C, L rounded up to a multiple of
BUCKET: its queries padded to C rows (the rows past the picture are thrown away) attend over its first
C - BUCKET keys through cuDNN, over its last 1..BUCKET keys through flash attention, which has no plans,
and the two parts are merged by their log-sum-exps, exact up to rounding. Pictures of up to FLASH_UP_TO
patches run flash attention alone. One plan per bucket, built for every bucket a picture can reach the
first time a thread runs the layers (PyTorch keeps the plans per thread): in the engine's warm-up, for
its worker.

Elsewhere (the CPU, float32, GPUs before Ampere, another backend first) each picture runs through
`F.scaled_dot_product_attention` with the backends in the order given: `attend_per_picture`.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTENTION_BACKENDS = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
BUCKET = 512  # patches; 44 plans from FLASH_UP_TO to GLM-4.6V's largest picture (6,144 tokens: 24,576 patches)
# pictures of up to this many patches run flash attention alone: at 1,024 patches it was as fast as cuDNN
# on the H200 (0.12 ms a layer), and the bucketed parts cost more than one kernel there (bench/RESULTS.md)
FLASH_UP_TO = 4 * BUCKET
HALF = (torch.bfloat16, torch.float16)  # what cuDNN's and flash attention's kernels take


def attend_per_picture(q, k, v, lengths: list[int], scale: float, backends) -> torch.Tensor:
    """q, k, v (L, heads, d) of pictures packed one after another (`lengths` patches each, on the
    host); each picture attends only to its own patches. -> (L, heads, d)."""

    def picture(start: int, length: int) -> torch.Tensor:
        q_i, k_i, v_i = (_heads_first(t[start : start + length]) for t in (q, k, v))
        return F.scaled_dot_product_attention(q_i, k_i, v_i, scale=scale)[0].transpose(0, 1)

    with sdpa_kernel(backends, set_priority=True):
        return _each_picture(lengths, picture)


def _each_picture(lengths: list[int], attend) -> torch.Tensor:
    """`attend(start, length)` (length, heads, d) for each packed picture, concatenated in order."""
    outs, start = [], 0
    for length in lengths:
        outs.append(attend(start, length))
        start += length
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def as_values(t: torch.Tensor) -> torch.Tensor:
    """A (L, heads, d) tensor with the strides the vision layers' v has (a view into the QKV
    projection's output, vision_block.attention_inputs): cuDNN keeps a plan per layout too, so the
    plans are built on tensors laid out as the layers' are."""
    rows, heads, dim = t.shape
    qkv = t.new_zeros(rows, 3, heads, dim)
    qkv[:, 2] = t
    return qkv[:, 2]


def _heads_first(t: torch.Tensor) -> torch.Tensor:
    """(L, heads, d) -> a (1, heads, L, d) view, as the attention kernels take it (read through strides)."""
    return t.transpose(0, 1)[None]


def cudnn_part(q, k, v, scale: float):
    """(out (1, heads, Lq, d), log-sum-exp (1, heads, Lq) float32) of cuDNN's fused attention."""
    outputs = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, False, False, scale=scale)
    return outputs[0], _per_query(outputs[1], q)


def flash_part(q, k, v, scale: float):
    """The same from flash attention (no per-shape plans)."""
    outputs = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
    return outputs[0], _per_query(outputs[1], q)


def math_part(q, k, v, scale: float):
    """The same computed plainly in float32 (the CPU, tests)."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    return torch.matmul(scores.softmax(-1), v.float()).to(q.dtype), torch.logsumexp(scores, -1)


def _per_query(lse: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    batch, heads, queries = q.shape[:3]
    return lse.reshape(batch, heads, -1)[..., :queries]


def merge_parts(out_a, lse_a, out_b, lse_b) -> torch.Tensor:
    """The attention of the same queries over the union of two disjoint sets of keys, from each set's
    output (1, heads, L, d) and log-sum-exp (1, heads, L)."""
    lse = torch.logaddexp(lse_a, lse_b)
    weight_a, weight_b = torch.exp(lse_a - lse)[..., None], torch.exp(lse_b - lse)[..., None]
    return (out_a.float() * weight_a + out_b.float() * weight_b).to(out_a.dtype)


class PictureAttention:
    """Per-picture attention for the vision layers: bucketed cuDNN where it runs (module docstring),
    `attend_per_picture` with `backends` elsewhere. `main` and `rest` compute the two parts (cuDNN and
    flash attention by default; tests put `math_part` in); `compiled`: their merge fused by torch.compile."""

    def __init__(
        self,
        backends=None,
        *,
        device: torch.device,
        max_patches: int,
        compiled: bool = False,
        bucket: int = BUCKET,
        flash_up_to: int = FLASH_UP_TO,
        main=cudnn_part,
        rest=flash_part,
    ) -> None:
        self.backends = backends or ATTENTION_BACKENDS
        self.bucket = bucket
        self.flash_up_to = max(flash_up_to, bucket)
        self.max_patches = max_patches
        self.main, self.rest = main, rest
        self.compiled = compiled
        self.merge = torch.compile(merge_parts, fullgraph=True) if compiled else merge_parts
        cudnn_first = device.type == "cuda" and self.backends[0] == SDPBackend.CUDNN_ATTENTION
        # both parts' fused kernels (cuDNN's, flash attention's) need Ampere or later; before, SDPA picks
        self.bucketed = cudnn_first and torch.cuda.get_device_capability(device) >= (8, 0)
        self._planned_threads: set[int] = set()

    def __call__(self, q, k, v, lengths: list[int], scale: float) -> torch.Tensor:
        """q, k, v (L, heads, d) of pictures packed one after another (`lengths` patches each, on the
        host; q may have rows past them, `room`). -> (L, heads, d)."""
        if not (self.bucketed and q.dtype in HALF):
            return attend_per_picture(q, k, v, lengths, scale, self.backends)
        if threading.get_ident() not in self._planned_threads:
            self.plan(q.shape[1], q.shape[2], q.dtype, q.device, scale)
        q = self._with_room(q, lengths)
        return _each_picture(lengths, lambda start, length: self._picture(q, k, v, start, length, scale))

    def _picture(self, q, k, v, start: int, length: int, scale: float) -> torch.Tensor:
        """One picture's attention (length, heads, d); q has rows past it up to its padded length."""
        if length <= self.flash_up_to:  # a small picture: flash attention alone
            exact = (_heads_first(t[start : start + length]) for t in (q, k, v))
            return self.rest(*exact, scale)[0][0].transpose(0, 1)
        padded = self._padded(length)
        split = start + padded - self.bucket  # keys before it: the main part's, bucketed
        rest_k, rest_v = _heads_first(k[split : start + length]), _heads_first(v[split : start + length])
        queries = _heads_first(q[start : start + padded])  # both parts padded: merged as whole tensors
        parts = self.main(queries, _heads_first(k[start:split]), _heads_first(v[start:split]), scale)
        parts += self.rest(queries, rest_k, rest_v, scale)
        if self.compiled:  # one kernel for every picture size (as vision_block's `_patches_vary`)
            for part in parts:
                torch._dynamo.mark_dynamic(part, 2)
        return self.merge(*parts)[0, :, :length].transpose(0, 1)

    @property
    def room(self) -> int:
        """Rows past the pictures that q may come with so that no padded queries need a copy of it: a
        picture's padded queries reach less than a bucket past its end."""
        return self.bucket if self.bucketed else 0

    def _with_room(self, q: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """q with rows (zeros) appended where a bucketed picture's padded queries reach past its rows
        (none where q came with `room` rows already)."""
        end = reach = 0
        for length in lengths:
            if length > self.flash_up_to:
                reach = max(reach, end + self._padded(length))
            end += length
        missing = reach - q.shape[0]
        return F.pad(q, (0, 0, 0, 0, 0, missing)) if missing > 0 else q

    def _padded(self, length: int) -> int:
        return -(-length // self.bucket) * self.bucket

    def plan(self, heads: int, dim: int, dtype: torch.dtype, device: torch.device, scale: float) -> None:
        """cuDNN's plan for every bucket up to `max_patches`, in the calling thread's plan cache: ~60 ms
        each here once, instead of in the first request of each picture size; then one picture through
        both parts."""
        self._planned_threads.add(threading.get_ident())
        first = self._padded(self.flash_up_to + 1)
        for padded in range(first, self._padded(self.max_patches) + 1, self.bucket):
            q = torch.zeros(padded, heads, dim, dtype=dtype, device=device)
            keys = _heads_first(q[: padded - self.bucket])
            self.main(_heads_first(q), keys, _heads_first(as_values(q[: padded - self.bucket])), scale)
        picture = torch.zeros(self.flash_up_to + 1, heads, dim, dtype=dtype, device=device)
        self(picture, picture, as_values(picture), [len(picture)], scale)  # the merge compiled here, not in a request
