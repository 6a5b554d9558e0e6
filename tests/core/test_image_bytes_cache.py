"""A repeated upload (the stateless API resends a conversation's pictures every turn) skips decoding:
decoded images are kept by a digest of their encoded bytes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from glm_vision import images
from glm_vision.images import ImageError, decode_image_bytes, load_media
from tests.conftest import make_picture


def _png(seed: int, size=(320, 200)) -> bytes:
    buffer = io.BytesIO()
    make_picture(seed, size).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_same_bytes_are_decoded_once(monkeypatch):
    data = _png(1)
    opened = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: (opened.append(1), original(*a, **k))[1])
    first = load_media(data)[0]
    again = load_media(bytes(data))[0]  # equal bytes, another object
    assert again is first and len(opened) == 1
    other = decode_image_bytes(_png(2))
    assert other.digest != first.digest and len(opened) == 2
    # the decoding limit is part of the key: a smaller one decodes (and refuses) again
    with pytest.raises(ImageError, match="pixels"):
        decode_image_bytes(data, max_decoded_pixels=1000)
    assert len(opened) == 3


def test_failures_are_not_kept_and_the_budget_holds(monkeypatch):
    broken = _png(3)[:200]
    for _ in range(2):
        with pytest.raises(ImageError):
            decode_image_bytes(broken)
    cache = images._DecodedImages(budget_bytes=2 * 320 * 200 * (4 + 3))  # Pillow's padded RGB + the pixel array
    monkeypatch.setattr(images, "DECODED", cache)
    kept = [decode_image_bytes(_png(seed)) for seed in (10, 11, 12)]  # the third evicts the first
    assert decode_image_bytes(_png(12)) is kept[2] and decode_image_bytes(_png(11)) is kept[1]
    assert decode_image_bytes(_png(10)) is not kept[0]
    assert cache._bytes <= cache.budget_bytes
    assert (cache.hits, cache.misses) == (2, 4)  # the two repeats kept; three firsts and the evicted one
