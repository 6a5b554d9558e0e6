"""Without a browser: the versions Retry and Edit keep (transcript forks), their JSON form (version 2,
and version 1 files still read), and a user's chats through the real ChatStore (sqlite3, files):
saved, reopened with their pictures, exported all as one file and imported back."""

from __future__ import annotations

import json

import pytest

from glm_vision.history import ChatStore
from glm_vision.images import ImageError, load_image
from glm_vision.ui.chat_json import from_json, to_json
from glm_vision.ui.history import History
from glm_vision.ui.render import chat_messages, version_forks
from glm_vision.ui.transcript import ChatImage, Transcript, Turn
from tests.conftest import make_picture


def picture(seed: int) -> ChatImage:
    return ChatImage(load_image(make_picture(seed)), f"p{seed}.png")


def texts(transcript: Transcript) -> list[str]:
    return [turn.text for turn in transcript.turns]


def answered(question: str, answer: str, images=()) -> list[Turn]:
    return [Turn("user", question, list(images)), Turn("assistant", answer)]


def test_retry_and_edit_keep_every_version_and_switch_between_them():
    chat = Transcript(answered("q1", "a1") + answered("q2", "b1"))
    for answer in ("b2", "b3"):  # Retry twice
        chat.branch(3)
        chat.turns.append(Turn("assistant", answer))
    assert chat.version_of(3) == (3, 3)
    chat.branch(0)  # Edit the first question: everything after it is a version too
    chat.turns += answered("q1 edited", "c1")
    assert texts(chat) == ["q1 edited", "c1"] and chat.version_of(0) == (2, 2) and chat.version_of(3) is None
    assert chat.switch(0, -1) and texts(chat) == ["q1", "a1", "q2", "b3"] and chat.version_of(3) == (3, 3)
    assert chat.switch(3, -1) and texts(chat)[-1] == "b2"
    assert not chat.switch(0, -1)  # no version before the first
    assert chat.switch(0, 1) and texts(chat) == ["q1 edited", "c1"]
    assert chat.switch(0, -1) and texts(chat)[-1] == "b2"  # the inner choice was kept
    assert sorted(t.text for t in chat.every_turn()) == sorted(["q1", "a1", "q2", "b1", "b2", "b3", "q1 edited", "c1"])
    copy = chat.copy()
    copy.switch(3, 1)
    assert texts(chat)[-1] == "b2"  # a copy's switch leaves the original as it was


def test_undo_removes_only_the_version_on_screen():
    chat = Transcript(answered("q1", "a1"))
    chat.branch(0)
    chat.turns += answered("q1 again", "a2")
    chat.take_back(0)
    assert texts(chat) == ["q1", "a1"] and chat.version_of(0) is None
    chat.take_back(0)
    assert chat.turns == [] and chat.forks == {}


def test_the_chat_shows_a_version_control_before_a_turn_with_versions():
    chat = Transcript(answered("q", "first"))
    chat.branch(1)
    chat.turns.append(Turn("assistant", "second"))
    messages, slots = chat_messages(chat, "en")
    assert [m["content"] for m in messages] == ["q", "‹ 2/2 ›", "second"]
    assert slots[1].part == "versions" and version_forks(chat) == [1]


def test_json_keeps_the_versions_and_reads_version_1_files():
    image = picture(3)
    chat = Transcript(answered("look", "one", [image]))
    chat.branch(1)
    chat.turns.append(Turn("assistant", "two"))
    chat.switch(1, -1)
    body = json.loads(to_json(chat))
    assert body["version"] == 2 and [m["text"] for m in body["messages"]] == ["look", "one"]  # the branch on screen
    restored, _ = from_json(json.dumps(body))
    assert texts(restored) == ["look", "one"] and restored.version_of(1) == (1, 2)
    assert restored.switch(1, 1) and texts(restored) == ["look", "two"]
    assert restored.turns[0].images[0].digest == image.digest
    old = {"format": "glm-vision-chat", "version": 1, "messages": body["messages"]}  # as issue 15 wrote them
    assert texts(from_json(json.dumps(old))[0]) == ["look", "one"]
    with pytest.raises(ImageError, match="version 3"):
        from_json(json.dumps(body | {"version": 3}))
    with pytest.raises(ImageError, match="does not fit"):
        from_json(json.dumps(body | {"forks": [{"at": 7, "current": 0, "versions": [None, None]}]}))


def test_chats_saved_reopened_exported_all_and_imported_back(tmp_path):
    store = ChatStore.open(tmp_path / "data")
    alice, bob = History(store, "user:alice", None), History(store, "user:bob", None)
    chat = Transcript(answered("first chat", "an answer", [picture(1)]) + answered("more", "the end", [picture(2)]))
    chat.branch(3)
    chat.turns.append(Turn("assistant", "another ending"))
    chat_id = alice.save(None, chat, {"temperature": 0.3})
    assert alice.save(chat_id, chat, {"temperature": 0.3}) == chat_id  # the same chat, saved again
    alice.save(None, Transcript(answered("second chat", "ok")), {})
    reopened, settings, title = alice.open(chat_id)
    assert texts(reopened) == texts(chat) and reopened.version_of(3) == (2, 2) and settings == {"temperature": 0.3}
    assert title == "first chat" and reopened.turns[2].images[0].digest == picture(2).digest
    assert [c.title for c in store.list("user:alice", "another ending")] == ["first chat"]  # searched on every branch
    with pytest.raises(KeyError):
        bob.open(chat_id)
    exported = alice.export_all()
    assert "sha256" not in exported and json.loads(exported)["format"] == "glm-vision-chats"
    assert bob.import_all(exported) == 2
    assert sorted(c.title for c in store.list("user:bob")) == ["first chat", "second chat"]
    copied = next(c for c in store.list("user:bob") if c.title == "first chat")
    again, _, _ = bob.open(copied.id)
    assert texts(again) == texts(chat) and again.switch(3, -1) and texts(again)[-1] == "the end"
    assert bob.import_all(to_json(Transcript(answered("one chat's export", "fine")))) == 1  # a per-chat export too
    with pytest.raises(ImageError):
        bob.import_all(b'{"format": "something else"}')
