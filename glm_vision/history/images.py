"""Pictures stored once by content: `<data_dir>/images/ab/abcdef....png`, named by the sha256 of their
PNG bytes. A file is written to a temporary name, flushed to disk and renamed into place, so a reader
(or a restart after a kill) sees a whole file or none; the database references a file only after it is
in place."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_DIGEST = re.compile(r"[0-9a-f]{64}")


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """The digest if it is a sha256 hex string (so it can name a file safely); ValueError otherwise."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"not an image hash (64 lowercase hex digits): {str(digest)[:80]!r}")
    return digest


class ImageFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / f"{digest}.png"

    def write(self, digest: str, data: bytes) -> None:
        """Store `data` under its hash (ValueError when the hash is not the data's); a file already
        there is kept (same hash, same bytes)."""
        if digest_of(data) != check_digest(digest):
            raise ValueError(f"image {digest[:12]}...: the bytes do not match their hash (sha256 of the PNG bytes)")
        target = self.path(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".png")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
