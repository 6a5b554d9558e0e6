"""The database's shape, versioned with `PRAGMA user_version`: MIGRATIONS[i] gives the SQL that
takes a database from version i to i + 1, run in the transaction that also sets the new version number, so a file is
always at one version. A file from a newer glm-vision (a higher version) is refused, not guessed at.

v1: chats (one row per chat: the UI's JSON document, its settings, the searchable text), images (one
    row per stored picture, by content hash) and chat_images (which chat uses which picture).
v2: a full-text index over the chats' text (FTS5 with the trigram tokenizer: substring search in any
    script), kept in step by triggers; skipped where this SQLite lacks FTS5 (search then scans).
"""

from __future__ import annotations

import sqlite3

V1 = """
CREATE TABLE chats (
    id        TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    title     TEXT NOT NULL DEFAULT '',       -- '' until a save or rename gives one
    document  TEXT NOT NULL DEFAULT '{}',
    settings  TEXT NOT NULL DEFAULT '{}',
    texts     TEXT NOT NULL DEFAULT '',       -- every message text of every branch, for search
    thumbnail TEXT,
    bytes     INTEGER NOT NULL DEFAULT 0,     -- what the chat costs its owner: JSON + its images
    created   REAL NOT NULL,
    updated   REAL NOT NULL,
    deleted   REAL                            -- when the owner deleted it (hidden, purged later)
);
CREATE INDEX chats_by_owner ON chats (owner, deleted, updated);
CREATE INDEX chats_deleted ON chats (deleted) WHERE deleted IS NOT NULL;
CREATE TABLE images (
    digest TEXT PRIMARY KEY,                  -- sha256 of the PNG bytes, also the file's name
    size   INTEGER NOT NULL
);
CREATE TABLE chat_images (
    chat_id TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    digest  TEXT NOT NULL REFERENCES images (digest),
    PRIMARY KEY (chat_id, digest)
);
CREATE INDEX chat_images_by_digest ON chat_images (digest);
"""

V2_SEARCH = """
CREATE VIRTUAL TABLE chat_text USING fts5 (texts, content='chats', content_rowid='rowid', tokenize='trigram');
CREATE TRIGGER chats_text_insert AFTER INSERT ON chats BEGIN
    INSERT INTO chat_text (rowid, texts) VALUES (new.rowid, new.texts);
END;
CREATE TRIGGER chats_text_delete AFTER DELETE ON chats BEGIN
    INSERT INTO chat_text (chat_text, rowid, texts) VALUES ('delete', old.rowid, old.texts);
END;
CREATE TRIGGER chats_text_update AFTER UPDATE OF texts ON chats BEGIN
    INSERT INTO chat_text (chat_text, rowid, texts) VALUES ('delete', old.rowid, old.texts);
    INSERT INTO chat_text (rowid, texts) VALUES (new.rowid, new.texts);
END;
INSERT INTO chat_text (chat_text) VALUES ('rebuild');
"""


def _v1(db: sqlite3.Connection) -> str:
    return V1


def _v2(db: sqlite3.Connection) -> str:
    return V2_SEARCH if has_fts5(db) else ""


MIGRATIONS = [_v1, _v2]
VERSION = len(MIGRATIONS)


def has_fts5(db: sqlite3.Connection) -> bool:
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5 (x, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    db.execute("DROP TABLE temp.fts5_probe")
    return True


def has_search_index(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chat_text'").fetchone()
    return row is not None


def version_of(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection) -> int:
    """Bring the database to VERSION, one transaction per step; returns the version it started at.
    Raises ValueError for a database written by a newer glm-vision."""
    start = version_of(db)
    if start > VERSION:
        raise ValueError(f"it was written by a newer glm-vision (schema version {start}, this one knows {VERSION})")
    for version in range(start, VERSION):
        script = MIGRATIONS[version](db)
        try:
            db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version + 1};\nCOMMIT;")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return start
