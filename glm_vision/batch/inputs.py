"""Which files a batch run reads: folders, files and globs, image and PDF files only."""

from __future__ import annotations

import glob
import os
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".pdf"}


def find_images(inputs: list[str], recursive: bool) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.iterdir()
            matches = sorted(str(p) for p in walker if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            matches = [str(path)]
        else:
            matches = sorted(
                m
                for m in glob.glob(item, recursive=True)
                if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES
            )
        for match in matches:
            key = os.path.abspath(match)
            if key not in seen:
                seen.add(key)
                found.append(match)
    return found
