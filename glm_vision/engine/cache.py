"""The visual feature cache (image -> encoder output, LRU-bounded in bytes) and KV prefix matching.

A prompt is described token by token by a key: the token id for text, the image's cache key for
each of its image tokens. Two prompts can share KV exactly as far as their keys agree, and never
up to a point inside an image span.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

TokenKey = int | str  # token id for text, image cache key for image tokens


@dataclass(frozen=True)
class ImageFeatures:
    embeds: torch.Tensor  # (num_image_tokens, hidden): the vision encoder's merged output
    grid_thw: tuple[int, int, int]

    @property
    def nbytes(self) -> int:
        return self.embeds.numel() * self.embeds.element_size()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0


class FeatureCache:
    """Image features per scope (a session or an API tenant), one byte budget over all scopes.

    Entries are keyed by (scope, image key), so one scope never sees another's features; the least
    recently used entry of any scope is evicted when the budget is exceeded.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple[str, str], ImageFeatures] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def get(self, scope: str, key: str) -> ImageFeatures | None:
        with self._lock:
            entry = self._entries.get((scope, key))
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end((scope, key))
            self.stats.hits += 1
            return entry

    def put(self, scope: str, key: str, features: ImageFeatures) -> None:
        if features.nbytes > self.budget_bytes:
            return  # larger than the whole budget: not worth evicting everything for
        with self._lock:
            old = self._entries.pop((scope, key), None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[(scope, key)] = features
            self._bytes += features.nbytes
            while self._bytes > self.budget_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.stats.evictions += 1
            self._sync_stats()

    def drop_scope(self, scope: str) -> int:
        """Forget every entry of one scope; returns the bytes freed."""
        with self._lock:
            doomed = [k for k in self._entries if k[0] == scope]
            freed = 0
            for k in doomed:
                freed += self._entries.pop(k).nbytes
            self._bytes -= freed
            self._sync_stats()
            return freed

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def scope_bytes(self, scope: str) -> int:
        with self._lock:
            return sum(f.nbytes for (s, _), f in self._entries.items() if s == scope)

    def _sync_stats(self) -> None:
        self.stats.entries = len(self._entries)
        self.stats.bytes = self._bytes


def reusable_prefix(cached: list[TokenKey], wanted: list[TokenKey]) -> int:
    """How many leading tokens of `wanted` can reuse the KV computed for `cached`.

    The longest common prefix, cut back to the start of an image span it would end inside, and
    leaving at least one token to compute (the model needs the last prompt position's logits).
    """
    limit = min(len(cached), len(wanted) - 1)
    n = 0
    while n < limit and cached[n] == wanted[n]:
        n += 1
    # Never end inside an image: back off to the first token of the span.
    while 0 < n < len(wanted) and isinstance(wanted[n], str) and wanted[n - 1] == wanted[n]:
        n -= 1
    return max(n, 0)
