"""Decode, validate and normalise user images (and PDF pages) into RGB, with a content hash.

Everything a user can send goes through `load_media`: size limits are checked before decoding,
the declared pixel count before the pixels are read (decompression bombs), and every failure is
an `ImageError` whose message says what was wrong and what is allowed.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF"}
ALLOWED_DESCRIPTION = "PNG, JPEG, WebP, GIF, BMP, TIFF or PDF"
MAX_ASPECT_RATIO = 200  # the model's own limit
DEFAULT_MAX_DECODED_PIXELS = 64_000_000  # refuse anything declaring more before decoding it
PDF_MAGIC = b"%PDF-"


class ImageError(ValueError):
    """A user-facing problem with an uploaded file."""


@dataclass(frozen=True)
class InputImage:
    """An RGB image ready for the model, identified by a hash of its decoded pixels."""

    image: Image.Image = field(repr=False, compare=False)
    digest: str
    notes: tuple[str, ...] = ()
    # The pixels as a (height, width, 3) byte array, made where the picture is decoded (the request's
    # own thread): the GPU worker, which serves every request in turn, then only copies them.
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def rgb_array(self) -> np.ndarray:
        """(height, width, 3) uint8, read-only."""
        return self.pixels if self.pixels is not None else np.asarray(self.image)


def pixel_digest(pixels: np.ndarray) -> str:
    """sha256 of the (height, width, 3) RGB pixels and the size: equal pictures hash equal, whatever the
    file format (the bytes of Pillow's `tobytes()`, in the same order)."""
    height, width = pixels.shape[:2]
    h = hashlib.sha256()
    h.update(f"{width}x{height}:".encode())
    h.update(pixels.data)
    return h.hexdigest()


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    return image.convert("RGB")


def normalise(image: Image.Image, *, max_decoded_pixels: int = DEFAULT_MAX_DECODED_PIXELS) -> InputImage:
    """Apply EXIF orientation, take the first frame, convert to RGB and check the shape."""
    notes = []
    width, height = image.size
    if width * height > max_decoded_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height:,} pixels; at most {max_decoded_pixels:,} pixels are accepted"
        )
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        image.seek(0)
        kind = "animated " + (image.format or "image")
        notes.append(f"{kind} with {frames} frames: only the first frame is used")
    try:
        image.load()
        opened = image
        image = ImageOps.exif_transpose(image) or image  # a new image (a copy where nothing turns)
        rgb = _to_rgb(image)
        rgb.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"the image data is damaged or truncated ({exc}); send a complete {ALLOWED_DESCRIPTION} file"
        ) from None
    width, height = rgb.size
    if width < 1 or height < 1:
        raise ImageError("the image is empty (0 pixels)")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(
            f"image is {width}x{height}, an aspect ratio of {ratio:.0f}:1; the model accepts at most {MAX_ASPECT_RATIO}:1"
        )
    if rgb is opened:  # never hand out the caller's (file-backed) image itself
        rgb = rgb.copy()
    pixels = np.asarray(rgb)
    return InputImage(image=rgb, digest=pixel_digest(pixels), notes=tuple(notes), pixels=pixels)


class _DecodedImages:
    """Decoded uploads by a digest of their encoded bytes, least recently used first out of a byte
    budget: the OpenAI API is stateless, so a follow-up question sends its pictures again, and
    decoding and hashing a 1080p PNG costs tens of milliseconds of CPU that the sha256 of the file
    (a fraction of that) saves. Only successful decodes are kept; the images are never mutated."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple, InputImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0  # lookups answered / not answered from here (benchmarks read them)

    @staticmethod
    def size(image: InputImage) -> int:
        """Bytes held: Pillow's 4 a pixel (RGB is stored padded), and the pixel array's 3."""
        return image.size[0] * image.size[1] * (4 + (3 if image.pixels is not None else 0))

    def get(self, key: tuple) -> InputImage | None:
        with self._lock:
            image = self._entries.get(key)
            if image is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(key)
            return image

    def put(self, key: tuple, image: InputImage) -> None:
        if self.size(image) > self.budget_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = image
            self._bytes += self.size(image)
            while self._bytes > self.budget_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= self.size(old)


DECODED = _DecodedImages(512 * 2**20)  # about 36 decoded 1920x1080 pictures


def decode_image_bytes(data: bytes, *, max_decoded_pixels: int = DEFAULT_MAX_DECODED_PIXELS) -> InputImage:
    """`_decode_image_bytes`, or the same bytes' earlier result (a repeated upload skips decoding)."""
    key = (hashlib.sha256(data).digest(), len(data), max_decoded_pixels)
    image = DECODED.get(key)
    if image is None:
        image = _decode_image_bytes(data, max_decoded_pixels=max_decoded_pixels)
        DECODED.put(key, image)
    return image


def _decode_image_bytes(data: bytes, *, max_decoded_pixels: int) -> InputImage:
    if not data:
        raise ImageError(f"the file is empty (0 bytes); send a {ALLOWED_DESCRIPTION} file")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.format not in ALLOWED_FORMATS:
                raise ImageError(f"{opened.format} images are not supported; send {ALLOWED_DESCRIPTION}")
            if opened.format == "TIFF" and getattr(opened, "n_frames", 1) > 1:
                # A multi-page TIFF is a document: say which page is used, not "animated".
                opened.seek(0)
                result = normalise(_first_tiff_page(opened), max_decoded_pixels=max_decoded_pixels)
                return replace(result, notes=(f"TIFF with {opened.n_frames} pages: only the first page is used",))
            return normalise(opened, max_decoded_pixels=max_decoded_pixels)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"the image declares too many pixels ({exc}); at most {max_decoded_pixels:,} are accepted"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"the file is not a readable image; send {ALLOWED_DESCRIPTION}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(
            f"the image data is damaged or truncated ({exc}); send a complete {ALLOWED_DESCRIPTION} file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - damaged files make Pillow's decoders raise TypeError, KeyError, ...
        raise ImageError(
            f"the image data is damaged ({type(exc).__name__}: {exc}); send a complete {ALLOWED_DESCRIPTION} file"
        ) from None


def _first_tiff_page(opened: Image.Image) -> Image.Image:
    page = opened.copy()
    page.info = dict(opened.info)
    return page


def render_pdf(
    data: bytes, *, max_pages: int, dpi: int, max_decoded_pixels: int = DEFAULT_MAX_DECODED_PIXELS
) -> list[InputImage]:
    """Every page of a PDF as an image; refuses encrypted, damaged and over-long documents."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        message = str(exc).lower()
        if "password" in message or "security" in message:
            raise ImageError("the PDF is encrypted (password protected); send an unprotected PDF") from None
        raise ImageError(f"the PDF is damaged and cannot be read ({exc})") from None
    try:
        count = len(document)
        if count == 0:
            raise ImageError("the PDF has no pages")
        if count > max_pages:
            raise ImageError(f"the PDF has {count} pages; at most {max_pages} pages per file are accepted")
        pages = []
        for index in range(count):
            page = document[index]
            try:
                width, height = page.get_size()
                scale = dpi / 72
                if width * height * scale * scale > max_decoded_pixels:
                    scale = (max_decoded_pixels / (width * height)) ** 0.5
                bitmap = page.render(scale=scale)
                image = bitmap.to_pil()
            finally:
                page.close()
            result = normalise(image, max_decoded_pixels=max_decoded_pixels)
            pages.append(replace(result, notes=(f"PDF page {index + 1} of {count}",)))
        return pages
    finally:
        document.close()


def load_media(
    source: bytes | str | Path | Image.Image,
    *,
    max_bytes: int | None = None,
    max_pages: int = 8,
    pdf_dpi: int = 144,
    max_decoded_pixels: int = DEFAULT_MAX_DECODED_PIXELS,
) -> list[InputImage]:
    """One image, or one image per PDF page, from bytes, a file path or a PIL image."""
    if isinstance(source, Image.Image):
        return [normalise(source, max_decoded_pixels=max_decoded_pixels)]
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError:
            raise ImageError(f"cannot read {path.name}: no such file") from None
        if max_bytes is not None and size > max_bytes:
            raise ImageError(_too_large(size, max_bytes))
        data = path.read_bytes()
    else:
        data = bytes(source)
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(_too_large(len(data), max_bytes))
    if data.lstrip()[:5] == PDF_MAGIC:
        try:
            return render_pdf(data, max_pages=max_pages, dpi=pdf_dpi, max_decoded_pixels=max_decoded_pixels)
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged page the parser let through
            raise ImageError(f"the PDF is damaged and cannot be read ({type(exc).__name__}: {exc})") from None
    return [decode_image_bytes(data, max_decoded_pixels=max_decoded_pixels)]


def load_image(source: bytes | str | Path | Image.Image, **kwargs) -> InputImage:
    """Exactly one image (a PDF must have exactly one page)."""
    images = load_media(source, **kwargs)
    if len(images) != 1:
        raise ImageError(f"expected one image, got a document of {len(images)} pages")
    return images[0]


def _too_large(size: int, limit: int) -> str:
    return f"the file is {size / 1e6:.1f} MB; files up to {limit / 1e6:.1f} MB are accepted"
