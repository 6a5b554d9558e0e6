"""The bad-input file corpus of issue 8: every file case, built in memory, with what each must get.

Each case: a name, the file name a user would upload, the bytes, and the expectation:
`ok` (accepted; `note` is what the UI must say about it, if anything) or an error with a phrase
the message must contain and the API status it must get. Shared by the API, UI and fuzz suites.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.conftest import make_picture


@dataclass(frozen=True)
class Case:
    name: str
    filename: str
    data: bytes
    ok: bool
    phrase: str = ""  # error: in the message; ok: in the note (empty: no note)
    status: int = 400


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def decompression_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header declares width x height pixels (valid CRCs, a tiny IDAT)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """A 90x30 landscape JPEG whose EXIF says rotate 90 (orientation 6): the model must see 30x90."""
    image = make_picture(5, (90, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif.tobytes())


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (40, 30), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    pages = [make_picture(seed, (50, 40 + 1)) for seed in range(3)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def pdf(pages: int) -> bytes:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    for _ in range(pages):
        document.new_page(200, 100)
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


def encrypted_pdf() -> bytes:
    """A one-page PDF with a Standard security handler (RC4, revision 2) and a user password that is
    not empty: a reader that cannot authenticate must refuse it as password protected."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -44 >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        b"trailer\n<< /Size 5 /Root 1 0 R /Encrypt 4 0 R /ID [<"
        + b"ab" * 16
        + b"> <"
        + b"ab" * 16
        + b">] >>\n"
        + f"startxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def noise(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def corpus(*, max_upload_bytes: int, max_pixels: int, pdf_max_pages: int) -> list[Case]:
    """Every file case of issue 8, sized for a server with these limits."""
    picture = make_picture(3, (96, 72))
    png, jpeg = encode(picture, "PNG"), encode(picture, "JPEG", quality=90)
    side = int(max_pixels**0.5) + 64  # just over the pixel limit, a real (compressible) image
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    grey16 = Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50), mode="I;16")
    return [
        Case("zero bytes", "empty.png", b"", False, "empty (0 bytes)"),
        Case("random bytes named .png", "random.png", noise(4000), False, "not a readable image"),
        Case("truncated JPEG", "cut.jpg", jpeg[: len(jpeg) // 2], False, "damaged or truncated"),
        Case("truncated PNG", "cut.png", png[: len(png) // 2], False, "damaged or truncated"),
        Case("decompression bomb", "bomb.png", decompression_bomb(), False, "pixels"),
        Case(
            "over the pixel limit",
            "huge.png",
            encode(Image.new("L", (side, side), 128), "PNG"),
            False,
            f"at most {max_pixels:,} pixels",
        ),
        Case(
            "over the upload limit",
            "big.bmp",
            b"BM" + noise(max_upload_bytes + 1000),
            False,
            f"up to {max_upload_bytes / 1e6:.1f} MB",
            status=413,
        ),
        Case("1x4000", "line.png", encode(Image.new("RGB", (1, 4000), (9, 9, 9)), "PNG"), False, "at most 200:1"),
        Case("201:1", "strip.png", encode(Image.new("RGB", (402, 2), (9, 9, 9)), "PNG"), False, "at most 200:1"),
        Case("200:1", "wide.png", encode(Image.new("RGB", (400, 2), (9, 9, 9)), "PNG"), True),
        Case("1x1", "dot.png", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), True),
        Case("animated GIF", "anim.gif", animated("GIF"), True, "only the first frame is used"),
        Case("APNG", "anim.png", animated("PNG"), True, "only the first frame is used"),
        Case("16-bit greyscale", "deep.png", encode(grey16, "PNG"), True),
        Case("CMYK JPEG", "print.jpg", encode(picture.convert("CMYK"), "JPEG"), True),
        Case("palette with transparency", "pal.png", encode(palette, "PNG", transparency=0), True),
        Case("LA", "la.png", encode(picture.convert("LA"), "PNG"), True),
        Case("I (32-bit int)", "int.tif", encode(picture.convert("I"), "TIFF"), True),
        Case("F (32-bit float)", "float.tif", encode(picture.convert("F"), "TIFF"), True),
        Case("EXIF-rotated JPEG", "rotated.jpg", exif_rotated_jpeg(), True),
        Case("WebP", "photo.webp", encode(picture, "WEBP"), True),
        Case("BMP", "shot.bmp", encode(picture, "BMP"), True),
        Case("multi-page TIFF", "scan.tif", multipage_tiff(), True, "only the first page is used"),
        Case(
            "SVG renamed .png",
            "vector.png",
            b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><script>alert(1)</script></svg>",
            False,
            "not a readable image",
        ),
        Case(
            "HTML renamed .jpg",
            "page.jpg",
            b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
            False,
            "not a readable image",
        ),
        Case("encrypted PDF", "locked.pdf", encrypted_pdf(), False, "encrypted"),
        Case(
            "corrupt PDF",
            "broken.pdf",
            b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n" + noise(500),
            False,
            "PDF is damaged",
        ),
        Case("PDF over the page limit", "long.pdf", pdf(pdf_max_pages + 1), False, f"at most {pdf_max_pages} pages"),
        Case("PDF within the page limit", "short.pdf", pdf(2), True, "PDF page 1 of 2"),
    ]
