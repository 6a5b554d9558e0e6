"""The chat history in a real browser (Chromium): the sidebar's list across reloads and server
restarts, search, rename, delete with undo, versions from Retry, whose chats a browser (or a login)
sees, a kill mid-answer, and the keyboard. One server process (tests/ui/history_server.py, scripted
answers "Answer n: <word>") on one data directory for the whole module, restarted where a test needs it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.api_helpers import free_port
from tests.conftest import make_picture

from .history_server import WORDS
from .ui_support import WAIT_MS, ask, load_page, open_page, wait_chat_text, wait_idle

ROOT = Path(__file__).resolve().parents[2]


class HistoryServer:
    """The server process on a data directory: start, kill (SIGKILL) and start again on the same data."""

    def __init__(self, data_dir: Path, api_key: str = "") -> None:
        self.data_dir, self.api_key, self.port = data_dir, api_key, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> HistoryServer:
        args = [sys.executable, "-m", "tests.ui.history_server", str(self.data_dir), str(self.port), self.api_key]
        self.process = subprocess.Popen(args, cwd=ROOT)
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the history server exited"
            try:
                urllib.request.urlopen(self.url + "health", timeout=2)
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the history server did not start")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def rows(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.data_dir / "chats.sqlite3") as db:
            return db.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    server = HistoryServer(tmp_path_factory.mktemp("glm-data")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for seed in (21, 22, 23):
        paths.append(str(folder / f"shot{seed}.png"))
        make_picture(seed).save(paths[-1])
    return paths


@pytest.fixture
def fresh(browser):
    """A new browser context (its own cookies: a new owner) for each test."""
    contexts = []

    def make():
        contexts.append(browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US"))
        return contexts[-1]

    yield make
    for context in contexts:
        context.close()


# ---------------------------------------------------------------------- helpers
def titles(page) -> list[str]:
    return page.eval_on_selector_all("#glmv-chats .glmv-chat-title", "els => els.map(e => e.innerText)")


def wait_titles(page, count: int) -> list[str]:
    page.wait_for_function(
        f"() => document.querySelectorAll('#glmv-chats .glmv-chat-item').length === {count}", timeout=WAIT_MS
    )
    return titles(page)


def chat(page, question: str, files=None) -> str:
    """Ask and wait for the whole answer; returns the answer's text."""
    ask(page, question, files)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#glmv-chat .message.bot')].some(e => e.innerText.includes('Answer'))",
        timeout=WAIT_MS,
    )
    wait_idle(page)
    return page.eval_on_selector_all("#glmv-chat .message.bot", "els => els.map(e => e.innerText)")[-1]


NO_BUTTONS_UNDER_VERSIONS = """() => {
  const row = document.querySelector('#glmv-chat .glmv-versions').closest('.message-row');
  const buttons = row.nextElementSibling;
  return !buttons?.classList.contains('message-buttons') || getComputedStyle(buttons).display === 'none';
}"""


def wait_versions(page, count: str) -> None:
    page.wait_for_function(
        "(c) => document.querySelector('#glmv-chat .glmv-version-count')?.innerText === c", arg=count, timeout=WAIT_MS
    )


def wait_new_answer(page, earlier: list[str]) -> str:
    """Until the last answer is a finished one not among `earlier`; returns it."""
    page.wait_for_function(
        "(old) => { const bots = [...document.querySelectorAll('#glmv-chat .message.bot')];"
        " const last = bots.length ? bots[bots.length - 1].innerText : '';"
        " return /Answer \\d+: \\w+/.test(last) && !old.includes(last); }",
        arg=earlier,
        timeout=WAIT_MS,
    )
    return page.eval_on_selector_all("#glmv-chat .message.bot", "els => els.map(e => e.innerText)")[-1]


def new_chat(page) -> None:
    page.click("#glmv-side-new")
    page.wait_for_function("() => !document.querySelector('#glmv-chat .message')", timeout=WAIT_MS)


def open_chat(page, title: str) -> None:
    page.locator("#glmv-chats .glmv-chat-item", has_text=title).click()
    wait_chat_text(page, title)


# ---------------------------------------------------------------------- tests
def test_three_chats_survive_a_reload_and_a_restart_with_their_images(history, fresh, pictures):
    page = open_page(fresh(), history.url)
    for number, picture in enumerate(pictures, 1):
        if number > 1:
            new_chat(page)
        chat(page, f"Question of chat {number}", [picture])
        wait_titles(page, number)
    assert titles(page) == ["Question of chat 3", "Question of chat 2", "Question of chat 1"]  # newest first
    assert page.locator("#glmv-chats img.glmv-thumb").count() == 3
    page.reload()
    assert wait_titles(page, 3)[0] == "Question of chat 3"
    wait_chat_text(page, "Question of chat 3")  # the tab's chat is back after the reload
    history.stop()
    history.start()
    load_page(page, history.url)
    assert wait_titles(page, 3) == ["Question of chat 3", "Question of chat 2", "Question of chat 1"]
    open_chat(page, "Question of chat 1")
    page.wait_for_selector("#glmv-chat .message.user img", timeout=WAIT_MS)  # its picture
    assert "Answer" in page.inner_text("#glmv-chat")
    # continuing a reopened chat works
    chat(page, "A follow-up in chat 1")
    page.wait_for_function("() => document.querySelectorAll('#glmv-chat .message.bot').length >= 2", timeout=WAIT_MS)
    assert wait_titles(page, 3)[0] == "Question of chat 1"  # saved again: now the newest


def test_search_finds_a_chat_by_a_word_only_its_answer_has(history, fresh):
    page = open_page(fresh(), history.url)
    chat(page, "Tell me about the first picture")
    new_chat(page)
    answer = chat(page, "Tell me about the second picture")
    word = next(w for w in WORDS if w in answer)
    wait_titles(page, 2)
    page.fill("#glmv-search textarea, #glmv-search input", word.upper())
    page.wait_for_function(
        "() => document.querySelectorAll('#glmv-chats .glmv-chat-item').length === 1", timeout=WAIT_MS
    )
    assert titles(page) == ["Tell me about the second picture"]
    page.fill("#glmv-search textarea, #glmv-search input", "no-such-word-anywhere")
    page.wait_for_selector("#glmv-chats .glmv-chat-empty", timeout=WAIT_MS)


def test_rename_then_delete_with_undo_then_for_good(history, fresh, tmp_path):
    only_here = tmp_path / "only-here.png"  # a picture no other chat holds
    make_picture(31).save(only_here)
    page = open_page(fresh(), history.url)
    chat(page, "Keep this chat")
    new_chat(page)
    chat(page, "Doomed chat", [str(only_here)])
    wait_titles(page, 2)
    title = page.locator("#glmv-title textarea, #glmv-title input").first
    title.fill("My renamed chat")
    title.press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.glmv-chat-title')].some(e => e.innerText === 'My renamed chat')",
        timeout=WAIT_MS,
    )
    assert history.rows("SELECT count(*) FROM chats WHERE title = 'My renamed chat'") == [(1,)]
    (chat_id,) = history.rows("SELECT id FROM chats WHERE title = 'My renamed chat'")[0]
    (digest,) = history.rows("SELECT digest FROM chat_images WHERE chat_id = ?", chat_id)[0]
    image_file = history.data_dir / "images" / digest[:2] / f"{digest}.png"
    assert image_file.exists()

    page.locator(".glmv-chat-item", has_text="My renamed chat").locator(".glmv-chat-delete").click()
    assert wait_titles(page, 1) == ["Keep this chat"]
    page.click("#glmv-undo-delete")
    assert set(wait_titles(page, 2)) == {"Keep this chat", "My renamed chat"}

    page.locator(".glmv-chat-item", has_text="My renamed chat").locator(".glmv-chat-delete").click()
    assert wait_titles(page, 1) == ["Keep this chat"]
    page.wait_for_selector("#glmv-undo-delete", state="hidden", timeout=WAIT_MS)  # the undo window is over
    deadline = time.monotonic() + WAIT_MS / 1000
    while history.rows("SELECT 1 FROM chats WHERE id = ?", chat_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert history.rows("SELECT 1 FROM chats WHERE id = ?", chat_id) == []
    assert history.rows("SELECT 1 FROM images WHERE digest = ?", digest) == []
    assert not image_file.exists()


def test_retry_twice_keeps_three_answers_to_move_between(history, fresh):
    page = open_page(fresh(), history.url)
    answers = [chat(page, "Retry me")]
    for count in ("2/2", "3/3"):
        page.get_by_role("button", name="Retry").last.click()
        wait_versions(page, count)
        answers.append(wait_new_answer(page, answers))
        wait_idle(page)
    assert page.evaluate(NO_BUTTONS_UNDER_VERSIONS)  # the control is not a message: nothing to copy
    for button, count, shown in (("prev", "2/3", 1), ("prev", "1/3", 0), ("next", "2/3", 1), ("next", "3/3", 2)):
        page.click(f".glmv-{button}")
        wait_versions(page, count)
        wait_chat_text(page, answers[shown])
    page.click(".glmv-prev")
    wait_versions(page, "2/3")
    page.reload()  # the versions are stored with the chat, and which one is on screen
    wait_versions(page, "2/3")
    wait_chat_text(page, answers[1])


def test_two_browsers_never_see_each_others_chats(history, fresh):
    mine = open_page(fresh(), history.url)
    chat(mine, "A private question")
    wait_titles(mine, 1)
    theirs = open_page(fresh(), history.url)
    theirs.wait_for_selector("#glmv-chats .glmv-chat-empty", timeout=WAIT_MS)
    assert titles(theirs) == []
    chat(theirs, "Their own question")
    assert wait_titles(theirs, 1) == ["Their own question"]
    mine.reload()
    assert wait_titles(mine, 1) == ["A private question"]
    (chat_id,) = history.rows("SELECT id FROM chats WHERE title = 'A private question'")[0]
    theirs.evaluate(
        "(id) => { window.glmvAction = 'open:' + id; document.querySelector('#glmv-action-go').click(); }", chat_id
    )
    theirs.wait_for_selector("#glmv-error:has-text('no longer in your history')", timeout=WAIT_MS)
    assert "A private question" not in theirs.inner_text("#glmv-chat")


def test_with_a_login_two_users_never_see_each_others_chats(fresh, tmp_path):
    server = HistoryServer(tmp_path / "data", api_key="sesame").start()
    try:
        pages = {}
        for user in ("alice", "bob"):
            page = fresh().new_page()
            page.goto(server.url, timeout=WAIT_MS)
            page.fill("input[type=text]", user)
            page.fill("input[type=password]", "sesame")
            page.keyboard.press("Enter")
            page.wait_for_selector("#glmv-input textarea", timeout=WAIT_MS)
            chat(page, f"Question from {user}")
            pages[user] = page
        assert wait_titles(pages["alice"], 1) == ["Question from alice"]
        pages["bob"].reload()
        assert wait_titles(pages["bob"], 1) == ["Question from bob"]
        assert server.rows("SELECT owner FROM chats ORDER BY owner") == [("user:alice",), ("user:bob",)]
    finally:
        server.stop()


def test_a_kill_mid_answer_keeps_every_earlier_turn(history, fresh):
    page = open_page(fresh(), history.url)
    chat(page, "Kill test first question")
    chat(page, "Kill test second question")
    ask(page, "Answer this slowly")
    page.wait_for_function("() => document.querySelector('#glmv-chat').innerText.includes('and more')", timeout=WAIT_MS)
    history.kill()
    assert history.rows("PRAGMA integrity_check") == [("ok",)]
    history.start()
    load_page(page, history.url)  # the user reloads the tab; no page stays on the dead server
    open_chat(page, "Kill test first question")
    text = page.inner_text("#glmv-chat")
    assert "Kill test first question" in text and "Kill test second question" in text
    assert page.locator("#glmv-chat .message.bot", has_text="Answer").count() == 2


def test_keyboard_esc_stops_the_new_chat_shortcut_and_the_help(history, fresh):
    page = open_page(fresh(), history.url)
    ask(page, "Write this slowly")
    page.wait_for_function("() => document.querySelector('#glmv-chat').innerText.includes('and more')", timeout=WAIT_MS)
    page.keyboard.press("Escape")
    wait_idle(page)
    wait_chat_text(page, "⏹")  # stopped: the partial answer is kept
    page.locator("body").click(position={"x": 5, "y": 990})
    page.keyboard.press("/")
    assert page.evaluate("() => document.activeElement === document.querySelector('#glmv-input textarea')")
    page.keyboard.press("Control+Shift+O")
    page.wait_for_function("() => !document.querySelector('#glmv-chat .message')", timeout=WAIT_MS)
    page.click("#glmv-keys summary")
    help_text = page.inner_text("#glmv-keys .glmv-keys-table")
    for keys in ("Enter", "Shift+Enter", "Esc", "Ctrl+Shift+O", "Shift+Esc"):
        assert keys in help_text


def test_export_all_then_import_all_in_another_browser(history, fresh, pictures, tmp_path):
    page = open_page(fresh(), history.url)
    chat(page, "Exported chat one", [pictures[1]])
    new_chat(page)
    chat(page, "Exported chat two")
    wait_titles(page, 2)
    with page.expect_download(timeout=WAIT_MS) as download:
        page.click("#glmv-export-all")
    exported = tmp_path / download.value.suggested_filename
    download.value.save_as(exported)
    body = json.loads(exported.read_text(encoding="utf-8"))
    assert body["format"] == "glm-vision-chats" and len(body["chats"]) == 2
    other = open_page(fresh(), history.url)
    other.wait_for_selector("#glmv-chats .glmv-chat-empty", timeout=WAIT_MS)
    with other.expect_file_chooser(timeout=WAIT_MS) as chooser:
        other.click("#glmv-import-all")
    chooser.value.set_files(str(exported))
    assert sorted(wait_titles(other, 2)) == ["Exported chat one", "Exported chat two"]
    open_chat(other, "Exported chat one")
    other.wait_for_selector("#glmv-chat .message.user img", timeout=WAIT_MS)
