"""The history survives what a server lives through: a kill in the middle of writing, many sessions
writing at once, and a database written by an older version."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from glm_vision.history import ChatStore, HistoryError, schema

from .support import image_files, png, raw, save_turns

ROOT = Path(__file__).resolve().parents[2]


def test_a_kill_mid_write_keeps_every_committed_save_and_no_half_picture(tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.history.writer", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    chat = writer.stdout.readline().split()[1]
    committed = 0
    while committed < 25:  # killed while it keeps writing: at some point of its next save
        committed = int(writer.stdout.readline().split()[1])
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    assert raw(tmp_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = ChatStore.open(tmp_path)
    saved = store.load("writer", chat)
    assert saved.document["turns"] >= committed
    assert len(saved.images) == saved.document["turns"]
    for digest in saved.images:  # every referenced picture is whole: its bytes hash to its name
        assert hashlib.sha256(store.image_bytes(digest)).hexdigest() == digest
    assert store.list("writer", f"answer {committed}")[0].id == chat
    store.close()


def test_sixteen_sessions_writing_at_once_lose_nothing(tmp_path):
    store = ChatStore.open(tmp_path)
    shared_digest, shared = png(99)
    turns, failures = 12, []

    def session(number: int) -> None:
        try:
            owner = f"browser:{number % 4}"
            chat = store.create(owner)
            own_digest, own = png(number)
            texts = []
            for turn in range(turns):
                texts += [f"s{number} q{turn}", f"s{number} a{turn}"]
                images = {shared_digest: shared, own_digest: own}
                save_turns(store, owner, chat, list(texts), images)
        except Exception as exc:  # noqa: BLE001 - reported below, with the session
            failures.append((number, exc))

    threads = [threading.Thread(target=session, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    store.close()

    reopened = ChatStore.open(tmp_path)
    for owner in range(4):
        chats = reopened.list(f"browser:{owner}")
        assert len(chats) == 4
        for summary in chats:
            messages = reopened.load(f"browser:{owner}", summary.id).document["messages"]
            assert len(messages) == 2 * turns
            number = int(messages[0]["text"].split()[0][1:])
            assert number % 4 == owner and messages[-1]["text"] == f"s{number} a{turns - 1}"
    assert image_files(tmp_path) == {shared_digest} | {png(n)[0] for n in range(16)}


def test_an_older_database_is_migrated_and_keeps_its_chats(tmp_path):
    db = sqlite3.connect(tmp_path / "chats.sqlite3")
    db.executescript(schema.V1 + "PRAGMA user_version = 1;")  # as version 1 wrote it: no search index
    db.execute(
        "INSERT INTO chats (id, owner, title, texts, created, updated) VALUES "
        "('old', 'browser:x', 'An old chat', 'what does the invoice total?\nabout 42 euros', 1.0, 2.0)"
    )
    db.commit()
    db.close()

    store = ChatStore.open(tmp_path)
    assert raw(tmp_path).execute("PRAGMA user_version").fetchone()[0] == schema.VERSION == 2
    assert raw(tmp_path).execute("SELECT count(*) FROM chat_text").fetchone()[0] == 1
    assert [c.id for c in store.list("browser:x", "invoice")] == ["old"]  # through the new index
    assert store.load("browser:x", "old").title == "An old chat"
    save_turns(store, "browser:x", "old", ["what does the invoice total?", "42 euros", "and the tax?", "8 euros"])
    assert [c.id for c in store.list("browser:x", "tax")] == ["old"]
    store.close()


def test_a_database_from_a_newer_version_is_refused_with_what_to_do(tmp_path):
    db = sqlite3.connect(tmp_path / "chats.sqlite3")
    db.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    db.close()
    with pytest.raises(HistoryError, match=r"chats\.sqlite3 cannot be used: it was written by a newer glm-vision"):
        ChatStore.open(tmp_path)
