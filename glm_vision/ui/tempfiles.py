"""The process's private temporary directory: uploads, rendered chat images and exports live here only.

    root = private_root()        # e.g. /tmp/glm-vision-k3j2x9/ (mode 0700, removed at exit)

Gradio is pointed at `root/gradio` (GRADIO_TEMP_DIR) before the UI is built, so user uploads never
land in the shared /tmp/gradio. `SessionFiles` remembers which files a browser session brought in and
removes them when that session closes. Nothing a user sends ever becomes part of a path here: names
are chosen by Gradio (a keyed hash folder) or by us (hashes and `safe_name`).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

_lock = threading.Lock()
_root: Path | None = None
SECRET = secrets.token_bytes(32)  # per process: names derived from it cannot be guessed from content


def private_root() -> Path:
    """Create (once per process) the private directory and point Gradio's upload cache into it."""
    global _root
    with _lock:
        if _root is None or not _root.is_dir():
            parent = os.environ.get("GLMV_TEMP_PARENT") or None  # where the private dir is made (default: the system's)
            _root = Path(tempfile.mkdtemp(prefix="glm-vision-", dir=parent)).resolve()  # mkdtemp: mode 0700
            gradio_dir = _root / "gradio"
            gradio_dir.mkdir(mode=0o700)
            os.environ["GRADIO_TEMP_DIR"] = str(gradio_dir)
            atexit.register(shutil.rmtree, _root, ignore_errors=True)
        return _root


def private_dir(name: str) -> Path:
    path = private_root() / name
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def keyed_name(text: str, length: int = 32) -> str:
    """A name for `text` that only this process can compute (not guessable from the content)."""
    return hmac.new(SECRET, text.encode(), hashlib.sha256).hexdigest()[:length]


def inside(path: str | Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except (OSError, ValueError):
        return False


class SessionFiles:
    """Files (and folders) browser sessions hold, each removed when the last session holding it closes.

    Gradio names an upload by its content, so two tabs attaching the same bytes hold the same file, and
    a tab that sends an example holds the gallery's copy of it: a file is deleted only when no other
    open session holds it, and the `keep` files (the app's own, such as the examples) never."""

    def __init__(self, keep: Iterable[str | Path] = ()) -> None:
        self._lock = threading.Lock()
        self._paths: dict[str, set[Path]] = {}
        self._keep = {Path(p) for p in keep}

    def add(self, session: str, path: str | Path) -> None:
        path = Path(path)
        if path in self._keep or not inside(path, private_root()):  # app files are never ours to delete
            return
        with self._lock:
            self._paths.setdefault(session, set()).add(path)

    def owned(self, session: str) -> set[Path]:
        with self._lock:
            return set(self._paths.get(session, ()))

    def purge(self, session: str) -> int:
        """Delete the files only this session held; returns how many were removed."""
        with self._lock:  # held while deleting: a file another tab takes meanwhile is not deleted under it
            mine = self._paths.pop(session, set())
            held = set().union(*self._paths.values())
            return sum(_remove(path) for path in mine - held)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._paths.values())


def _remove(path: Path) -> bool:
    """Delete a file (and the folder Gradio made for it, once empty) or a folder of ours."""
    root = private_root()
    try:
        if path.is_dir():
            shutil.rmtree(path)
            return True
        if not path.exists():
            return False
        path.unlink()
        parent = path.parent  # Gradio keeps each upload in a folder of its own
        if parent != root and inside(parent, root) and not any(parent.iterdir()):
            parent.rmdir()
        return True
    except OSError:
        return False
