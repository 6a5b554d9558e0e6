"""Whose chats: every browser gets its own HttpOnly identity cookie from the real app, and a Gradio
handler's `owner_of(request)` reads it (or, with a login, the user name)."""

from __future__ import annotations

import gradio as gr
import httpx
import pytest
from fastapi import FastAPI

from glm_vision.history import OWNER_COOKIE, ChatStore, OwnerCookieMiddleware, owner_of
from glm_vision.server import AppState
from glm_vision.settings import Settings
from tests.api_helpers import LiveServer, serve
from tests.doubles import ScriptedBackend


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """The product's own app (health, /v1, the UI) with the history on."""
    store = ChatStore.open(tmp_path_factory.mktemp("history"))
    live = serve(AppState(Settings(), backend=ScriptedBackend("hi"), history=store))
    yield live
    live.__exit__(None, None, None)
    store.close()


def owner_cookie(response: httpx.Response) -> str | None:
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(OWNER_COOKIE + "=")]
    return headers[0] if headers else None


def test_two_browsers_get_different_http_only_identities_that_stay(product):
    with (
        httpx.Client(base_url=product.url, timeout=30) as first,
        httpx.Client(base_url=product.url, timeout=30) as second,
    ):
        set_first = owner_cookie(first.get("/"))
        set_second = owner_cookie(second.get("/"))
        for header in (set_first, set_second):
            assert header is not None
            attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
            assert {"httponly", "samesite", "path", "max-age"} <= attributes and "SameSite=Lax" in header
        assert first.cookies[OWNER_COOKIE] != second.cookies[OWNER_COOKIE]
        kept = first.cookies[OWNER_COOKIE]
        assert owner_cookie(first.get("/")) is None  # it came back: no new identity
        assert first.cookies[OWNER_COOKIE] == kept


def test_api_clients_get_no_identity_cookie(product):
    assert owner_cookie(httpx.get(product.url + "/v1/models", timeout=30)) is None
    assert owner_cookie(httpx.get(product.url + "/health", timeout=30)) is None


def test_a_forged_malformed_identity_is_replaced(product):
    response = httpx.get(product.url + "/", cookies={OWNER_COOKIE: "../x"}, timeout=30)
    assert owner_cookie(response) is not None


def test_without_history_no_identity_cookie_is_set(tmp_path):
    live = serve(AppState(Settings(), backend=ScriptedBackend("hi")))
    try:
        assert owner_cookie(httpx.get(live.url + "/", timeout=30)) is None
    finally:
        live.__exit__(None, None, None)


def whoami_app(auth) -> FastAPI:
    """A Gradio app mounted the way the product mounts its UI, with one handler answering `owner_of`."""

    def whoami(request: gr.Request) -> str:
        return owner_of(request)

    with gr.Blocks() as demo:
        out = gr.Textbox()
        gr.Button().click(whoami, None, out, api_name="whoami")
    app = gr.mount_gradio_app(FastAPI(), demo, path="/", auth=auth)
    app.add_middleware(OwnerCookieMiddleware)
    return app


def ask_owner(client: httpx.Client) -> str:
    client.get("/")
    event = client.post("/gradio_api/call/whoami", json={"data": []}).json()["event_id"]
    stream = client.get(f"/gradio_api/call/whoami/{event}").text
    assert "event: complete" in stream, stream
    return stream.split("data: ", 1)[1].split('"')[1]


def test_a_gradio_handler_sees_the_browser_cookie_or_the_login_name():
    with LiveServer(whoami_app(None)) as live:
        with httpx.Client(base_url=live.url, timeout=30) as one, httpx.Client(base_url=live.url, timeout=30) as two:
            owner_one, owner_two = ask_owner(one), ask_owner(two)
            assert owner_one == "browser:" + one.cookies[OWNER_COOKIE]
            assert owner_two == "browser:" + two.cookies[OWNER_COOKIE] and owner_two != owner_one
            assert ask_owner(one) == owner_one
    with LiveServer(whoami_app(lambda user, password: password == "key")) as live:
        for user in ("ann", "ben"):
            with httpx.Client(base_url=live.url, timeout=30) as client:
                assert client.post("/login", data={"username": user, "password": "key"}).status_code == 200
                assert ask_owner(client) == f"user:{user}"
