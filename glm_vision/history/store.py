"""`ChatStore`: every user's chats in one SQLite file (`<data_dir>/chats.sqlite3`, WAL mode) and their
pictures as files beside it (`images.py`).

Each change is one transaction, so a kill at any moment leaves every earlier save intact; a save's new
pictures are on disk before the transaction that references them commits. One connection is shared by
the server's threads behind a lock (SQLite runs one writer at a time anyway); `busy_timeout` covers a
second process on the same file. The store never interprets a chat's document: the UI gives it the
document, its settings, the texts to search and the pictures it references.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from . import schema
from .database import check_directory, connect
from .errors import HistoryError
from .images import ImageFiles, check_digest
from .quota import Quota
from .records import ChatSummary, NewChat, StoredChat
from .search import search_clause

log = logging.getLogger(__name__)

DB_NAME = "chats.sqlite3"
TITLE_CHARS = 60


class ChatStore:
    def __init__(self, db: sqlite3.Connection, files: ImageFiles, quota: Quota, undo_seconds: float) -> None:
        self._db = db
        self.files = files
        self.quota = quota
        self.undo_seconds = undo_seconds
        self._lock = threading.RLock()
        self._indexed = schema.has_search_index(db)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls, data_dir: Path, *, max_chats: int = 1000, max_bytes: int = 2 << 30, undo_seconds: float = 10.0
    ) -> ChatStore:
        """Open (or create) the history in `data_dir`; HistoryError naming the directory or file and
        what to do when that fails."""
        data_dir = Path(data_dir).expanduser()
        check_directory(data_dir)
        path = data_dir / DB_NAME
        try:
            db = connect(path)
        except sqlite3.DatabaseError as exc:
            raise HistoryError(
                f"the chat database {path} cannot be read ({exc}): it is damaged or not a glm-vision database. "
                f"Move it aside (for example rename it to {DB_NAME}.bad) to start an empty history, or pass "
                f"another --data-dir."
            ) from None
        except ValueError as exc:
            raise HistoryError(f"the chat database {path} cannot be used: {exc}. Pass another --data-dir.") from None
        store = cls(db, ImageFiles(data_dir / "images"), Quota(max_chats, max_bytes), undo_seconds)
        store.purge_expired()
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ chats
    def create(self, owner: str, title: str = "") -> str:
        """A new, empty chat of `owner` (QuotaError at --history-max-chats); returns its id."""
        with self._lock:
            self.quota.check_chats(self._count(owner))
            chat_id, now = uuid.uuid4().hex, time.time()
            with self._transaction():
                self._db.execute(
                    "INSERT INTO chats (id, owner, title, created, updated) VALUES (?, ?, ?, ?, ?)",
                    (chat_id, owner, _clean_title(title), now, now),
                )
            return chat_id

    def save(
        self,
        owner: str,
        chat_id: str,
        *,
        document: dict,
        settings: dict,
        texts: list[str],
        images: dict[str, bytes | None],
        title: str | None = None,
    ) -> None:
        """Replace the chat's content in one transaction. `images` maps EVERY picture hash the document
        references (sha256 of the PNG bytes; the first is the chat's thumbnail) to its PNG bytes, or to
        None for one already saved; pictures it no longer names are released. `texts`: every message
        text of every branch (search). `title`: None keeps the chat's title (a chat without one takes
        the first line of the first text). KeyError: no such chat of this owner; QuotaError: over a cap
        (nothing written); ValueError: a hash that is not its bytes' or an unknown picture given as None."""
        with self._lock:
            existing = self._row(owner, chat_id)
            parts = NewChat(document, settings, texts, images, existing["title"] if title is None else title)
            self._write(owner, [(chat_id, parts)], new=False)

    def load(self, owner: str, chat_id: str) -> StoredChat:
        with self._lock:
            row = self._row(owner, chat_id)
            digests = self._db.execute("SELECT digest FROM chat_images WHERE chat_id = ? ORDER BY rowid", (chat_id,))
            return StoredChat(
                row["id"],
                row["title"],
                json.loads(row["document"]),
                json.loads(row["settings"]),
                row["created"],
                row["updated"],
                tuple(d for (d,) in digests),
            )

    def list(self, owner: str, query: str = "") -> list[ChatSummary]:
        """The owner's chats, most recently saved first; with `query`, those whose title or text holds
        every word of it (case-insensitive substrings, any script)."""
        where, params = search_clause(query, indexed=self._indexed)
        sql = (
            "SELECT id, title, created, updated, thumbnail FROM chats WHERE owner = ? AND deleted IS NULL"
            f"{where} ORDER BY updated DESC, rowid DESC"
        )
        with self._lock:
            self._purge_quietly()  # a list shown after an undo window closed no longer holds its chat's files
            rows = self._db.execute(sql, (owner, *params)).fetchall()
        return [ChatSummary(r["id"], r["title"], r["created"], r["updated"], r["thumbnail"]) for r in rows]

    def rename(self, owner: str, chat_id: str, title: str) -> None:
        """A new title; an empty one goes back to the chat's first line."""
        with self._lock:
            row = self._row(owner, chat_id)
            with self._transaction():
                self._db.execute(
                    "UPDATE chats SET title = ? WHERE id = ?",
                    (_clean_title(title) or _auto_title(row["texts"].split("\n")), chat_id),
                )

    def delete(self, owner: str, chat_id: str) -> None:
        """Hide the chat at once; it is purged (rows and pictures no other chat uses) once `undo_seconds`
        have passed, by the next list, delete, purge_expired or start, unless `undelete` brings it back."""
        with self._lock:
            self._row(owner, chat_id)
            with self._transaction():
                self._db.execute("UPDATE chats SET deleted = ? WHERE id = ?", (time.time(), chat_id))
            self.purge_expired()

    def undelete(self, owner: str, chat_id: str) -> None:
        """Bring back a deleted chat not yet purged (KeyError when it is gone)."""
        with self._lock:
            self._row(owner, chat_id, deleted=True)
            with self._transaction():
                self._db.execute("UPDATE chats SET deleted = NULL WHERE id = ?", (chat_id,))

    def purge_expired(self, now: float | None = None) -> int:
        """Remove the chats deleted more than `undo_seconds` before `now`, and the pictures only they
        used (rows, then files); returns how many chats went."""
        cutoff = (time.time() if now is None else now) - self.undo_seconds
        with self._lock:
            if not self._db.execute("SELECT 1 FROM chats WHERE deleted <= ? LIMIT 1", (cutoff,)).fetchone():
                return 0  # the usual case, without taking the write lock
            with self._transaction():
                ids = [i for (i,) in self._db.execute("SELECT id FROM chats WHERE deleted <= ?", (cutoff,))]
                marks = ",".join("?" * len(ids))
                used = self._db.execute(f"SELECT digest FROM chat_images WHERE chat_id IN ({marks})", ids)
                candidates = {d for (d,) in used}
                self._db.execute(f"DELETE FROM chats WHERE id IN ({marks})", ids)
                unused = self._release(candidates)
            self._remove_files(unused)
        return len(ids)

    def _purge_quietly(self) -> None:
        try:
            self.purge_expired()
        except HistoryError as exc:  # the list still shows; the purge is tried again on the next one
            log.warning("deleted chats not purged yet: %s", exc)

    # ------------------------------------------------------------------ pictures
    @property
    def images_dir(self) -> Path:
        """The folder of the pictures' files (for the UI's allowed file paths)."""
        return self.files.root

    def image_path(self, digest: str) -> Path:
        """The file of a stored picture (KeyError when the store does not hold it)."""
        path = self.files.path(digest)
        if not path.is_file():
            raise KeyError(f"no stored image {digest}")
        return path

    def image_bytes(self, digest: str) -> bytes:
        return self.image_path(digest).read_bytes()

    # ------------------------------------------------------------------ export / import
    def export_all(self, owner: str) -> list[StoredChat]:
        """Every chat of the owner, newest first (the UI writes them as one file with the pictures)."""
        return [self.load(owner, summary.id) for summary in self.list(owner)]

    def import_all(self, owner: str, chats: list[NewChat]) -> list[str]:
        """Add these chats as new ones of `owner`, all or none (QuotaError when they do not fit);
        returns their new ids in order."""
        with self._lock:
            ids = [uuid.uuid4().hex for _ in chats]
            self._write(owner, list(zip(ids, chats, strict=True)), new=True)
            return ids

    # ------------------------------------------------------------------ internals
    def _write(self, owner: str, chats: list[tuple[str, NewChat]], *, new: bool) -> None:
        """The one write path of save and import: check the caps, put the pictures' files in place,
        then write the rows in one transaction and release pictures no chat uses any more."""
        sizes = self._image_sizes(chats)
        rows = {chat_id: _Row(parts, sizes) for chat_id, parts in chats}
        if new:
            self.quota.check_chats(self._count(owner), len(chats))
        self.quota.check_bytes(self._bytes_elsewhere(owner, [i for i, _ in chats]), sum(r.bytes for r in rows.values()))
        written: set[str] = set()
        try:
            with _as_history_error(self.files.root.parent):
                self._put_files(chats, written)
            with self._transaction():
                released = set()
                for chat_id, parts in chats:
                    released |= self._write_chat(owner, chat_id, parts, rows[chat_id], new=new)
                unused = self._release(released)
        except BaseException:
            self._remove_files(written - self._known_images(written))
            raise
        self._remove_files(unused)

    def _write_chat(self, owner: str, chat_id: str, parts: NewChat, row: _Row, *, new: bool) -> set[str]:
        """One chat's rows; returns the pictures it used before and no longer does."""
        now = time.time()
        if new:
            created = parts.created or now
            self._db.execute(
                "INSERT INTO chats (id, owner, created, updated) VALUES (?, ?, ?, ?)", (chat_id, owner, created, now)
            )
        before = {d for (d,) in self._db.execute("SELECT digest FROM chat_images WHERE chat_id = ?", (chat_id,))}
        self._db.executemany(
            "INSERT OR IGNORE INTO images (digest, size) VALUES (?, ?)",
            [(d, len(data)) for d, data in parts.images.items() if data is not None],
        )
        self._db.execute("DELETE FROM chat_images WHERE chat_id = ?", (chat_id,))
        self._db.executemany(
            "INSERT INTO chat_images (chat_id, digest) VALUES (?, ?)", [(chat_id, d) for d in parts.images]
        )
        self._db.execute(
            "UPDATE chats SET title = ?, document = ?, settings = ?, texts = ?, thumbnail = ?, bytes = ?, updated = ? "
            "WHERE id = ?",
            (row.title, row.document, row.settings, row.texts, row.thumbnail, row.bytes, parts.updated or now, chat_id),
        )
        return before - set(parts.images)

    def _release(self, candidates: set[str]) -> set[str]:
        """Drop the rows of these pictures that no chat references any more; returns them."""
        unused = {
            d for d in candidates if not self._db.execute("SELECT 1 FROM chat_images WHERE digest = ?", (d,)).fetchone()
        }
        self._db.executemany("DELETE FROM images WHERE digest = ?", [(d,) for d in unused])
        return unused

    def _image_sizes(self, chats: list[tuple[str, NewChat]]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for _, parts in chats:
            for digest, data in parts.images.items():
                check_digest(digest)
                if data is not None:
                    sizes[digest] = len(data)
                elif digest not in sizes:
                    found = self._db.execute("SELECT size FROM images WHERE digest = ?", (digest,)).fetchone()
                    if found is None:
                        raise ValueError(f"image {digest[:12]}... is not stored yet: pass its PNG bytes")
                    sizes[digest] = found[0]
        return sizes

    def _put_files(self, chats: list[tuple[str, NewChat]], created: set[str]) -> None:
        """Write the pictures not on disk yet, adding each one written to `created`."""
        for _, parts in chats:
            for digest, data in parts.images.items():
                if data is not None and not self.files.path(digest).exists():
                    self.files.write(digest, data)
                    created.add(digest)

    def _known_images(self, digests: set[str]) -> set[str]:
        return {d for d in digests if self._db.execute("SELECT 1 FROM images WHERE digest = ?", (d,)).fetchone()}

    def _remove_files(self, digests: set[str]) -> None:
        for digest in digests:
            self.files.remove(digest)

    def _row(self, owner: str, chat_id: str, *, deleted: bool = False) -> sqlite3.Row:
        """The chat's row if `owner` has it (a deleted one with `deleted`); KeyError otherwise, the same
        for another owner's chat as for none, so ids reveal nothing."""
        state = "IS NOT NULL" if deleted else "IS NULL"
        row = self._db.execute(
            f"SELECT * FROM chats WHERE id = ? AND owner = ? AND deleted {state}", (str(chat_id), owner)
        ).fetchone()
        if row is None:
            raise KeyError(f"no {'deleted ' if deleted else ''}chat {chat_id!r} in this user's history")
        return row

    def _count(self, owner: str) -> int:
        return self._db.execute("SELECT count(*) FROM chats WHERE owner = ? AND deleted IS NULL", (owner,)).fetchone()[
            0
        ]

    def _bytes_elsewhere(self, owner: str, chat_ids: list[str]) -> int:
        marks = ",".join("?" * len(chat_ids))
        sql = f"SELECT coalesce(sum(bytes), 0) FROM chats WHERE owner = ? AND deleted IS NULL AND id NOT IN ({marks})"
        return self._db.execute(sql, (owner, *chat_ids)).fetchone()[0]

    @contextmanager
    def _transaction(self):
        """One write transaction; a database that cannot be written (disk full, locked by another
        process past the timeout) is a HistoryError, with nothing written."""
        with self._lock, _as_history_error(self.files.root.parent):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise


class _Row:
    """A chat's parts as the row stores them."""

    def __init__(self, parts: NewChat, sizes: dict[str, int]) -> None:
        self.document = json.dumps(parts.document, ensure_ascii=False)
        self.settings = json.dumps(parts.settings, ensure_ascii=False)
        self.texts = "\n".join(parts.texts)
        self.title = _clean_title(parts.title) or _auto_title(parts.texts)
        self.thumbnail = next(iter(parts.images), None)
        own_bytes = len(self.document.encode()) + len(self.settings.encode()) + len(self.texts.encode())
        self.bytes = own_bytes + sum(sizes[d] for d in parts.images)


@contextmanager
def _as_history_error(data_dir: Path):
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise HistoryError(
            f"the chat history in {data_dir} could not be written ({exc}); free some disk space or check the "
            f"folder's permissions (nothing of this change was saved)"
        ) from None


def _clean_title(title: str) -> str:
    return " ".join(str(title).split())[:200]


def _auto_title(texts: list[str]) -> str:
    for text in texts:
        if text.strip():
            return text.strip().splitlines()[0][:TITLE_CHARS]
    return ""
