"""Issue 8, security: default bind, the warning for a public bind without a key, the key on both the
API and the UI's HTTP routes, no server-side fetching (SSRF), uploads only in a private 0700 temp dir
with a size limit and removed with the session, names that never become paths, and one session
never reaching another's history, images or cache. (Sanitized rendering of model output in the
browser: test_ui_conversation.py::test_scripted_output_is_sanitized_and_rendered.)"""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from glm_vision.server import AppState
from glm_vision.settings import Settings, load_settings
from glm_vision.ui.tempfiles import SessionFiles, private_root
from glm_vision.ui.transcript import Transcript, export_name, safe_name
from tests.api_helpers import free_port, image_part, raw_request, serve
from tests.conftest import make_picture
from tests.ui.ui_driver import FakeRequest, handlers, send


def test_default_bind_is_loopback():
    assert Settings().host == "127.0.0.1"
    assert load_settings([], environ={}).host == "127.0.0.1"


def run_app(*args: str) -> subprocess.CompletedProcess:
    # A model path that does not exist: the server binds, prints its warnings, then exits (code 3).
    return subprocess.run(
        [
            sys.executable,
            "app.py",
            "--port",
            str(free_port()),
            "--model",
            "/nonexistent/model",
            "--device",
            "cpu",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_public_bind_without_key_warns_and_with_key_does_not():
    public = run_app("--host", "0.0.0.0")
    assert "listening on 0.0.0.0 without --api-key" in public.stderr
    keyed = run_app("--host", "0.0.0.0", "--api-key", "k")
    assert "without --api-key" not in keyed.stderr
    local = run_app()
    assert "without --api-key" not in local.stderr
    assert {public.returncode, keyed.returncode, local.returncode} == {3}


# ---------------------------------------------------------------------------------- key on API and UI
@pytest.fixture(scope="module")
def keyed(settings, engine):
    live = serve(AppState(replace(settings, api_key="the-key"), backend=engine))
    yield live
    live.__exit__()


def test_api_key_guards_the_api_and_every_ui_route(keyed, tmp_path):
    url = keyed.url
    assert (
        httpx.post(
            url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, timeout=30
        ).status_code
        == 401
    )
    assert httpx.get(url + "/v1/models", timeout=30, headers={"Authorization": "Bearer the-key"}).status_code == 200
    # The UI's own HTTP routes (what a script could call instead of the page) need the login too.
    upload = httpx.post(url + "/gradio_api/upload", files={"files": ("a.png", b"\x89PNG", "image/png")}, timeout=30)
    assert upload.status_code in (401, 403), upload.text
    join = httpx.post(url + "/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"}, timeout=30)
    assert join.status_code in (401, 403), join.text
    assert httpx.get(url + "/gradio_api/info", timeout=30).status_code in (401, 403)
    bad = httpx.post(url + "/login", data={"username": "me", "password": "wrong"}, timeout=30)
    assert bad.status_code >= 400
    with httpx.Client(base_url=url, timeout=30) as client:
        good = client.post("/login", data={"username": "me", "password": "the-key"})
        assert good.status_code == 200, good.text
        assert client.post("/gradio_api/upload", files={"files": ("a.png", b"\x89PNG", "image/png")}).status_code == 200


def test_an_oversized_request_head_gets_431_and_the_server_stays_up(keyed):
    """httptools (the server's HTTP parser) has no bound of its own on a request's headers: the server's
    protocol answers 431 once the head passes 64 KB, before the app or the key check sees it. Large but
    sane headers and bodies still go through."""
    port = int(keyed.url.rsplit(":", 1)[1])
    huge = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 2_000_000 + b"\r\n\r\n"
    answer = raw_request(port, huge)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b"larger than 65536 bytes" in answer
    key = b"Authorization: Bearer the-key\r\n"
    cookie = b"Cookie: c=" + b"b" * 40_000 + b"\r\n"  # big, within the bound
    sane = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + key + cookie + b"\r\n"
    assert raw_request(port, sane, piece=1000).startswith(b"HTTP/1.1 200 ")
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 300_000}], "max_tokens": -1}).encode()
    post = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + key
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    refused = raw_request(port, post, body)  # a 300 KB body is not a head: the API reads it and names the bad param
    assert refused.startswith(b"HTTP/1.1 400 ") and b"max_tokens" in refused, refused[:300]
    assert httpx.get(keyed.url + "/health", timeout=30).status_code == 200


# ---------------------------------------------------------------------------------- SSRF
@pytest.fixture
def counting_host():
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # http.server calls it by this name
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


@pytest.fixture(scope="module")
def open_server(settings, engine):
    live = serve(AppState(settings, backend=engine))
    yield live
    live.__exit__()


def test_no_server_side_fetch_unless_enabled(open_server, counting_host):
    local, hits = counting_host
    for url in (
        local + "/img.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/x.png",
        "https://example.com/cat.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
    ):
        body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
        response = httpx.post(open_server.url + "/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400, (url, response.text)
    assert hits == []  # nothing was fetched


def test_enabled_remote_images_still_only_fetch_allowlisted_hosts(settings, engine, counting_host):
    local, hits = counting_host
    live = serve(
        AppState(replace(settings, allow_remote_images=True, remote_image_hosts="images.example.org"), backend=engine)
    )
    try:
        body = {
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": local + "/x.png"}}]}]
        }
        response = httpx.post(live.url + "/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["code"] == "remote_host_not_allowed"
    finally:
        live.__exit__()
    assert hits == []


# ---------------------------------------------------------------------------------- uploads and names
def test_uploads_live_in_a_private_0700_dir(open_server):
    root = private_root()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert Path(os.environ["GRADIO_TEMP_DIR"]).resolve().is_relative_to(root)
    response = httpx.post(
        open_server.url + "/gradio_api/upload",
        files={"files": ("../../../../tmp/escape.png", b"\x89PNG\r\n", "image/png")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    stored = Path(response.json()[0]).resolve()
    assert stored.is_relative_to(root / "gradio"), stored  # the name did not become a path
    assert stored.name == "escape.png"
    assert not Path("/tmp/escape.png").exists()


def test_upload_over_the_size_limit_is_refused(settings, engine):
    live = serve(AppState(replace(settings, max_upload_mb=0.01), backend=engine))
    try:
        response = httpx.post(
            live.url + "/gradio_api/upload", files={"files": ("big.png", b"\0" * 20_000, "image/png")}, timeout=30
        )
        assert response.status_code == 413, response.text
    finally:
        live.__exit__()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path/shot.png", "shot.png"),
        ("<script>alert(1)</script>.png", "script-.png"),
        ("...", "file"),
        ("", "file"),
        ("con\0nul.png", "con-nul.png"),
        ("a" * 300 + ".png", "a" * 80),
    ],
)
def test_names_never_become_paths(name, expected):
    cleaned = safe_name(name)
    assert cleaned == expected
    assert "/" not in cleaned and "\\" not in cleaned and not cleaned.startswith(".")


def test_exported_file_names_are_safe():
    from glm_vision.ui.transcript import Turn

    transcript = Transcript()
    transcript.turns.append(Turn("user", "../../../etc/<img src=x onerror=alert(1)> what is\nthis?", []))
    for extension in ("md", "json"):
        name = export_name(transcript, extension)
        assert "/" not in name and "\\" not in name and "<" not in name and "\n" not in name
        assert name.startswith("glm-vision-") and name.endswith("." + extension)


def test_a_sessions_uploads_are_removed_when_it_closes(settings, engine):
    state = AppState(replace(settings, max_new_tokens=2), backend=engine)
    h = handlers(state)
    upload_dir = Path(os.environ["GRADIO_TEMP_DIR"]) / "test-upload"
    upload_dir.mkdir(exist_ok=True)
    mine, theirs = upload_dir / "mine.png", upload_dir / "theirs.png"
    make_picture(1).save(mine)
    make_picture(2).save(theirs)
    a, b = FakeRequest(), FakeRequest()
    assert send(h, a, "first", [str(mine)])["error"] == ""
    assert send(h, b, "second", [str(theirs)])["error"] == ""
    assert any(s.startswith(f"ui-{a.session_hash}") for s in engine.sessions._sessions)
    h.unload(a)
    assert not mine.exists() and theirs.exists()  # only the closed session's files
    assert not any(s == f"ui-{a.session_hash}" for s in engine.sessions._sessions)
    h.unload(b)
    assert not theirs.exists()


def test_session_files_never_delete_outside_the_private_dir(tmp_path):
    outside = tmp_path / "keep.png"
    outside.write_bytes(b"x")
    files = SessionFiles()
    files.add("s", outside)
    files.add("s", "/etc/passwd")
    assert files.purge("s") == 0 and outside.exists()


# ---------------------------------------------------------------------------------- isolation
def test_one_api_key_never_reaches_anothers_cache(open_server, engine):
    picture = make_picture(77)
    conversation = [{"role": "user", "content": [image_part(picture), {"type": "text", "text": "what?"}]}]

    def ask(key: str, messages):
        response = httpx.post(
            open_server.url + "/v1/chat/completions",
            json={"messages": messages, "max_tokens": 2, "temperature": 0},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.json()

    first = ask("alice", conversation)
    follow = conversation + [
        {"role": "assistant", "content": first["choices"][0]["message"]["content"] or "x"},
        {"role": "user", "content": "and?"},
    ]
    assert ask("alice", follow)["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    bob = ask("bob", follow)  # the same conversation under another key: no KV, no image features of alice's
    assert bob["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert bob["timings"]["image_cache_hits"] == 0


def test_one_ui_session_never_reaches_anothers_history_or_cache(settings, engine):
    state = AppState(replace(settings, max_new_tokens=2), backend=engine)
    h = handlers(state)
    a, b = FakeRequest(), FakeRequest()
    first = send(h, a, "alice's secret question")
    assert first["error"] == "" and len(first["transcript"].turns) == 2
    second = send(h, b, "bob asks")
    texts = [t.text for t in second["transcript"].turns]
    assert "alice's secret question" not in " ".join(texts)
    assert f"ui-{a.session_hash}" != f"ui-{b.session_hash}"
    # b closing (or starting a new chat) never touches a's cache
    h.unload(b)
    assert f"ui-{a.session_hash}" in engine.sessions._sessions
    h.unload(a)
