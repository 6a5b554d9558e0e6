"""Image URLs in a request: remote http(s) images (host allowlist, size cap, fetch errors) from a local image
host, and data URLs in each image format the server decodes."""

from __future__ import annotations

import http.server
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from glm_vision.server import AppState
from tests.api_helpers import data_url, error_of, image_part, post, serve, user
from tests.conftest import make_picture


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    png = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/cat.png":
            payload = self.png
        elif self.path == "/big.png":
            payload = b"\x89PNG" + b"0" * 300_000
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_host():
    buffer = io.BytesIO()
    make_picture(31).save(buffer, format="PNG")
    _ImageHandler.png = buffer.getvalue()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_remote_images_with_allowlist_size_cap_and_errors(settings, engine, image_host):
    remote = replace(settings, allow_remote_images=True, remote_image_hosts="127.0.0.1", remote_image_max_mb=0.1)
    live = serve(AppState(remote, backend=engine))
    try:

        def ask(url):
            return post(
                live,
                {
                    "messages": user(
                        [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what?"}]
                    ),
                    "max_tokens": 1,
                },
            )

        ok = ask(image_host + "/cat.png")
        assert ok.status_code == 200, ok.text
        inline = post(
            live, {"messages": user([image_part(make_picture(31)), {"type": "text", "text": "what?"}]), "max_tokens": 1}
        )
        assert ok.json()["usage"]["prompt_tokens"] == inline.json()["usage"]["prompt_tokens"]

        missing = ask(image_host + "/nope.png")
        assert missing.status_code == 400 and "HTTP 404" in error_of(missing)["message"]
        big = ask(image_host + "/big.png")
        assert big.status_code == 400 and error_of(big)["code"] == "image_too_large"
        other = ask("http://localhost" + image_host[len("http://127.0.0.1") :] + "/cat.png")
        assert other.status_code == 400 and "not allowed" in error_of(other)["message"]
    finally:
        live.__exit__()


def test_data_url_variants_decode(capped_server):
    picture = make_picture(41)
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        response = post(
            capped_server,
            {
                "messages": user(
                    [{"type": "image_url", "image_url": {"url": data_url(picture, fmt)}}, {"type": "text", "text": fmt}]
                ),
                "max_tokens": 1,
            },
        )
        assert response.status_code == 200, (fmt, response.text)


def test_a_burst_of_uploads_is_decoded_a_few_at_a_time(server, monkeypatch):
    """Pictures sent at once are decoded by at most `DECODING_THREADS` threads at a time, several of them in
    parallel (all at once, a burst's decodes share the GIL and finish together, late); every request is
    answered."""
    from glm_vision.api import decoding, messages

    running, most = 0, 0
    lock = threading.Lock()
    load_media = messages.load_media

    def slow_counted_load(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.2)
            return load_media(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(messages, "load_media", slow_counted_load)
    picture = make_picture(5)

    def ask(index: int):
        content = [image_part(picture), {"type": "text", "text": f"picture {index}"}]
        return post(server, {"messages": user(content), "max_tokens": 1})

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(ask, range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert most == decoding.DECODING_THREADS
