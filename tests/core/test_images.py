"""Image decoding and normalisation: every mode becomes the right RGB picture, bad files get clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from glm_vision.images import ImageError, load_image, load_media


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def pixel(image, xy=(0, 0)):
    return image.image.getpixel(xy)


def test_rgba_transparency_goes_on_white():
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 30))
    result = load_image(encode(rgba, "PNG"))
    assert result.image.mode == "RGB"
    assert pixel(result, (5, 5)) == (0, 0, 255)
    assert pixel(result, (30, 5)) == (255, 255, 255)  # fully transparent red -> white, not red or black


def test_half_transparent_pixels_blend_with_white():
    result = load_image(Image.new("RGBA", (30, 30), (0, 0, 0, 128)))
    value = pixel(result)[0]
    assert 120 <= value <= 135 and pixel(result)[0] == pixel(result)[1] == pixel(result)[2]


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (30, 30), (0, 0))
    assert pixel(load_image(encode(la, "PNG"))) == (255, 255, 255)
    palette = Image.new("P", (30, 30), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.paste(0, (0, 0, 15, 30))
    result = load_image(encode(palette, "PNG", transparency=0))
    assert pixel(result, (2, 2)) == (255, 255, 255)
    assert pixel(result, (20, 2)) == (0, 255, 0)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red in CMYK
    r, g, b = pixel(load_image(encode(cmyk, "JPEG", quality=95)))
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_grey_is_scaled_not_clipped():
    array = np.full((20, 20), 32768, dtype=np.uint16)
    result = load_image(encode(Image.fromarray(array), "PNG"))
    assert 126 <= pixel(result)[0] <= 130


def test_float_and_int32_modes():
    assert pixel(load_image(Image.fromarray(np.full((20, 20), 0.5, dtype=np.float32), mode="F")))[0] in (127, 128)
    assert pixel(load_image(Image.fromarray(np.full((20, 20), 200, dtype=np.int32), mode="I")))[0] == 200


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    result = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert result.size == (20, 60)
    r, g, b = pixel(result, (10, 3))  # the blue strip is now at the top
    assert b > 200 and r < 60


def test_animated_gif_uses_first_frame_and_says_so():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    result = load_image(buffer.getvalue())
    assert pixel(result)[0] > 200
    assert any("first frame" in note for note in result.notes)


def test_multipage_tiff_uses_first_page_and_says_so():
    pages = [Image.new("RGB", (20, 20), c) for c in ((0, 0, 255), (0, 255, 0))]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    result = load_image(buffer.getvalue())
    assert pixel(result) == (0, 0, 255)
    assert any("first page" in note for note in result.notes)


@pytest.mark.parametrize("fmt,kwargs", [("WEBP", {"lossless": True}), ("BMP", {}), ("PNG", {}), ("TIFF", {})])
def test_lossless_formats_hash_equal(fmt, kwargs):
    from tests.conftest import make_picture

    picture = make_picture(7)
    assert load_image(encode(picture, fmt, **kwargs)).digest == load_image(picture).digest


def test_pixel_array_is_the_picture_and_its_digest(tmp_path):
    """The (height, width, 3) array the engine copies to the GPU, made at decoding, holds the picture's
    pixels, and the digest read from it is that of Pillow's own bytes (cache keys did not change)."""
    import hashlib

    from tests.conftest import make_picture

    picture = make_picture(3, (90, 61))
    buffer = io.BytesIO()
    picture.save(buffer, "PDF", resolution=72)
    for loaded in (load_image(encode(picture, "PNG")), load_image(picture), load_media(buffer.getvalue())[0]):
        assert loaded.pixels is not None and loaded.pixels.dtype == np.uint8
        assert loaded.pixels.shape == (loaded.size[1], loaded.size[0], 3)
        assert np.array_equal(loaded.rgb_array(), np.asarray(loaded.image))
        expected = hashlib.sha256(f"{loaded.size[0]}x{loaded.size[1]}:".encode() + loaded.image.tobytes())
        assert loaded.digest == expected.hexdigest()


def test_a_callers_picture_is_copied_once_not_shared():
    """A PIL image handed in is not the one handed back: drawing on it later changes neither the loaded
    picture nor its pixel array (each copy of a 1080p picture costs ~1.5 ms, so only one is made)."""
    from tests.conftest import make_picture

    picture = make_picture(5, (40, 30))
    loaded = load_image(picture)
    before = loaded.pixels.copy()
    assert loaded.image is not picture
    picture.paste((255, 0, 0), (0, 0, 40, 30))
    assert np.array_equal(loaded.pixels, before) and np.array_equal(np.asarray(loaded.image), before)


def test_different_pixels_hash_differently():
    a = Image.new("RGB", (20, 20), (0, 0, 0))
    b = a.copy()
    b.putpixel((19, 19), (0, 0, 1))
    assert load_image(a).digest != load_image(b).digest


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "damaged or truncated|not a readable image"),
        (np.random.default_rng(0).bytes(2000), "not a readable image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><rect width='10' height='10'/></svg>", "not a readable image"),
        (b"<!doctype html><html><body>hi</body></html>", "not a readable image"),
    ],
)
def test_bad_files_get_clear_errors(data, needle):
    with pytest.raises(ImageError, match=needle):
        load_media(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(fmt):
    from tests.conftest import make_picture

    data = encode(make_picture(3, (300, 200)), fmt)
    with pytest.raises(ImageError, match="damaged or truncated|not a readable image"):
        load_media(data[: len(data) // 2])


def test_upload_size_limit_is_checked_before_decoding():
    with pytest.raises(ImageError, match="files up to 0.0 MB"):
        load_media(b"x" * 100, max_bytes=10)


def test_decompression_bomb_is_refused_before_decoding():
    data = encode(Image.new("1", (20000, 20000)), "PNG")  # small file, 400 million declared pixels
    assert len(data) < 200_000
    with pytest.raises(ImageError, match="pixels"):
        load_media(data)


def test_extreme_aspect_ratio_is_refused_with_the_limit():
    with pytest.raises(ImageError, match="200:1"):
        load_image(Image.new("RGB", (4000, 1)))
    assert load_image(Image.new("RGB", (1, 1))).size == (1, 1)


def test_pdf_pages_become_images(tmp_path):
    from tests.conftest import make_picture

    pages = [make_picture(seed, (200, 280)) for seed in (1, 2)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=pages[1:], resolution=72)
    result = load_media(buffer.getvalue(), max_pages=4, pdf_dpi=72)
    assert len(result) == 2
    assert result[0].digest != result[1].digest
    assert "PDF page 1 of 2" in result[0].notes
    with pytest.raises(ImageError, match="at most 1 pages"):
        load_media(buffer.getvalue(), max_pages=1)
    with pytest.raises(ImageError, match="PDF is damaged"):
        load_media(buffer.getvalue()[:300])


def test_paths_and_missing_files(tmp_path):
    path = tmp_path / "shot.png"
    path.write_bytes(encode(Image.new("RGB", (10, 10), (1, 2, 3)), "PNG"))
    assert pixel(load_image(path)) == (1, 2, 3)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
