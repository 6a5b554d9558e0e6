"""Opening the database file: a data directory that can be written, one connection with WAL, foreign
keys and a busy timeout, a quick integrity check, and the schema brought up to date."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from . import schema
from .errors import HistoryError

BUSY_TIMEOUT_MS = 10_000


def check_directory(data_dir: Path) -> None:
    try:
        (data_dir / "images").mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise HistoryError(
            f"the data directory {data_dir} cannot be written ({exc.strerror or exc}): give a writable one "
            f"with --data-dir (or GLMV_DATA_DIR), or run with --no-history"
        ) from None


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        _prepare(db)
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection) -> None:
    """The connection's settings, a quick integrity check, and the schema brought up to date."""
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise ValueError("it cannot use write-ahead logging (is it on a network drive?)")
    db.execute("PRAGMA synchronous = FULL")
    check = db.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise sqlite3.DatabaseError(f"integrity check: {check}")
    schema.migrate(db)
