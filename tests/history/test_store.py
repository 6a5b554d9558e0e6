"""The chat store's operations on a real SQLite file and real picture files: save, load, list, search,
rename, delete with undo and purge, pictures shared between chats, owners kept apart, the caps."""

from __future__ import annotations

import pytest

from glm_vision.history import ChatStore, HistoryError, NewChat, QuotaError

from .support import image_files, png, raw, save_turns


@pytest.fixture
def store(tmp_path):
    store = ChatStore.open(tmp_path, max_chats=5, max_bytes=1 << 20)
    yield store
    store.close()


def test_a_saved_chat_loads_back_and_lists_newest_first(store, tmp_path):
    pic_digest, pic = png(1)
    first = store.create("alice")
    save_turns(store, "alice", first, ["What is in this screenshot?\nsecond line", "A login form."], {pic_digest: pic})
    second = store.create("alice")
    save_turns(store, "alice", second, ["Count the shapes", "Three."])

    chat = store.load("alice", first)
    assert chat.title == "What is in this screenshot?"
    assert chat.document["messages"][1] == {"text": "A login form."}
    assert chat.settings == {"temperature": 0.8}
    assert chat.images == (pic_digest,)
    assert store.image_bytes(pic_digest) == pic
    assert store.image_path(pic_digest) == tmp_path / "images" / pic_digest[:2] / f"{pic_digest}.png"

    listed = store.list("alice")
    assert [c.id for c in listed] == [second, first]
    assert listed[1].thumbnail == pic_digest and listed[0].thumbnail is None

    save_turns(store, "alice", first, ["What is in this screenshot?", "A login form.", "And now?", "Empty."])
    assert [c.id for c in store.list("alice")] == [first, second]


def test_search_finds_a_word_of_any_message_in_any_script(store):
    chat = store.create("alice")
    save_turns(store, "alice", chat, ["Describe the chart", "Revenue grew 100% in Q3, 红色的方块 at_left"])
    other = store.create("alice")
    save_turns(store, "alice", other, ["Hello", "Hi there"])

    for query in ["revenue", "REVENUE grew", "100%", "红色", "方块", "at_left", "Q3", "chart"]:
        assert [c.id for c in store.list("alice", query)] == [chat], query
    for query in ["revenue hello", "1000%", "at%left", "蓝色", "q4"]:
        assert store.list("alice", query) == [], query
    assert {c.id for c in store.list("alice", "  ")} == {chat, other}


def test_rename_sets_the_title_and_search_finds_it(store):
    chat = store.create("alice")
    save_turns(store, "alice", chat, ["first question", "answer"])
    store.rename("alice", chat, "  Quarterly   numbers ")
    assert store.load("alice", chat).title == "Quarterly numbers"
    save_turns(store, "alice", chat, ["first question", "answer", "more", "more answer"])
    assert store.list("alice", "quarterly")[0].title == "Quarterly numbers"
    store.rename("alice", chat, "")
    assert store.load("alice", chat).title == "first question"


def test_delete_hides_at_once_undo_brings_back_purge_removes_rows_and_unused_pictures(store, tmp_path):
    shared_digest, shared = png(1)
    own_digest, own = png(2)
    doomed = store.create("alice")
    save_turns(store, "alice", doomed, ["look", "ok"], {shared_digest: shared, own_digest: own})
    keeper = store.create("alice")
    save_turns(store, "alice", keeper, ["same picture", "ok"], {shared_digest: None})
    assert image_files(tmp_path) == {shared_digest, own_digest}

    store.delete("alice", doomed)
    assert [c.id for c in store.list("alice")] == [keeper]
    with pytest.raises(KeyError):
        store.load("alice", doomed)
    store.undelete("alice", doomed)
    assert store.load("alice", doomed).images == (shared_digest, own_digest)

    store.delete("alice", doomed)
    assert store.purge_expired() == 0  # still inside the undo window
    assert store.purge_expired(now=store.undo_seconds + 1e12) == 1
    with pytest.raises(KeyError):
        store.undelete("alice", doomed)
    assert image_files(tmp_path) == {shared_digest}  # the other chat still uses it
    db = raw(tmp_path)
    assert db.execute("SELECT count(*) FROM chats WHERE id = ?", (doomed,)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM chat_images WHERE chat_id = ?", (doomed,)).fetchone()[0] == 0
    assert [d for (d,) in db.execute("SELECT digest FROM images")] == [shared_digest]

    store.delete("alice", keeper)
    store.purge_expired(now=store.undo_seconds + 1e12)
    assert image_files(tmp_path) == set()
    assert db.execute("SELECT count(*) FROM images").fetchone()[0] == 0


def test_a_picture_the_chat_no_longer_names_is_released(store, tmp_path):
    first_digest, first = png(3)
    second_digest, second = png(4)
    chat = store.create("alice")
    save_turns(store, "alice", chat, ["a", "b"], {first_digest: first, second_digest: second})
    save_turns(store, "alice", chat, ["a", "b"], {first_digest: None})  # e.g. the second turn was undone
    assert image_files(tmp_path) == {first_digest}
    assert store.load("alice", chat).images == (first_digest,)


def test_owners_never_see_each_others_chats(store):
    chat = store.create("browser:alice")
    save_turns(store, "browser:alice", chat, ["secret plans", "noted"])
    assert store.list("browser:bob") == []
    assert store.list("browser:bob", "secret") == []
    for attempt in (
        lambda: store.load("browser:bob", chat),
        lambda: save_turns(store, "browser:bob", chat, ["overwritten"]),
        lambda: store.rename("browser:bob", chat, "mine"),
        lambda: store.delete("browser:bob", chat),
    ):
        with pytest.raises(KeyError):
            attempt()
    assert store.load("browser:alice", chat).title == "secret plans"
    assert [c.id for c in store.list("browser:alice")] == [chat]


def test_the_caps_say_which_limit_and_how_to_free_space(store, tmp_path):
    for _ in range(5):
        store.create("alice")
    with pytest.raises(QuotaError, match=r"at most 5 per user \(--history-max-chats\).*Delete chats"):
        store.create("alice")
    store.create("bob")  # a cap per user
    store.delete("alice", store.list("alice")[0].id)
    store.create("alice")  # a deleted chat no longer counts

    big_digest, _ = png(5)
    chat = store.list("alice")[0].id
    huge = {"blob": "x" * (1 << 20)}
    with pytest.raises(QuotaError, match=r"1\.0 MB this server keeps per user \(--history-max-mb\).*Delete chats"):
        store.save("alice", chat, document=huge, settings={}, texts=["big"], images={})
    assert store.load("alice", chat).document == {}  # nothing written
    assert image_files(tmp_path) == set()


def test_a_picture_must_match_its_hash_and_be_known_when_given_as_none(store, tmp_path):
    digest, data = png(6)
    other_digest, _ = png(7)
    chat = store.create("alice")
    with pytest.raises(ValueError, match="do not match their hash"):
        save_turns(store, "alice", chat, ["x"], {other_digest: data})
    with pytest.raises(ValueError, match="not stored yet"):
        save_turns(store, "alice", chat, ["x"], {digest: None})
    with pytest.raises(ValueError, match="not an image hash"):
        save_turns(store, "alice", chat, ["x"], {"../../etc/passwd": data})
    assert image_files(tmp_path) == set()


def test_export_all_and_import_all_round_trip_between_owners(store):
    digest, data = png(8)
    chat = store.create("alice")
    save_turns(store, "alice", chat, ["exported question", "answer"], {digest: data})
    exported = store.export_all("alice")
    assert [c.id for c in exported] == [chat]

    copies = [
        NewChat(c.document, c.settings, ["exported question"], {d: store.image_bytes(d) for d in c.images}, c.title)
        for c in exported
    ]
    new_ids = store.import_all("bob", copies)
    imported = store.load("bob", new_ids[0])
    assert imported.document == exported[0].document and imported.images == (digest,)
    assert [c.id for c in store.list("bob", "exported")] == new_ids

    with pytest.raises(QuotaError):
        store.import_all("bob", copies * 5)  # 1 + 5 > 5: none of them
    assert len(store.list("bob")) == 1


def test_a_picture_that_cannot_be_written_is_a_clear_error_and_nothing_is_saved(store, tmp_path):
    kept_digest, kept = png(9)
    blocked_digest, blocked = png(10)
    chat = store.create("alice")
    save_turns(store, "alice", chat, ["before"], {})
    (tmp_path / "images" / blocked_digest[:2]).write_text("a file where the pictures' folder should be")
    assert kept_digest[:2] != blocked_digest[:2]  # the first is written, the second fails
    with pytest.raises(HistoryError, match=rf"history in {tmp_path} could not be written.*nothing of this change"):
        save_turns(store, "alice", chat, ["after"], {kept_digest: kept, blocked_digest: blocked})
    assert store.load("alice", chat).document["messages"] == [{"text": "before"}]
    assert image_files(tmp_path) == set()  # the picture written before the failure was taken back
