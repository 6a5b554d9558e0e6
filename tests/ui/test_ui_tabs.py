"""Tabs and browsers on one server in a real browser (Chromium): the status while the model loads, the
Chinese interface in dark mode, the login an API key asks for; two browsers whose chats stay apart, the
queue position shown while another answer is written, and a closed tab's engine session freed. On the
shared engine, server and browser of conftest.py (the tiny checkpoint: its answers are gibberish)."""

from __future__ import annotations

from glm_vision.server import AppState

from .ui_support import (
    WAIT_MS,
    UiServer,
    ask,
    open_page,
    queue_behind,
    saved_chat,
    ui_sessions,
    wait_tabs_closed,
    wait_turns,
)


def test_loading_state_then_ready(context, server):
    real = server.state.backend
    server.state.backend = None
    try:
        page = context.new_page()
        page.goto(server.url, timeout=WAIT_MS)
        page.wait_for_function(
            "() => document.querySelector('#glmv-status')?.innerText.includes('Loading')", timeout=WAIT_MS
        )
    finally:
        server.state.backend = real
    page.wait_for_function("() => document.querySelector('#glmv-status')?.innerText.includes(' · ')", timeout=WAIT_MS)


def test_chinese_interface_and_dark_mode(browser, server):
    ctx = browser.new_context(locale="zh-CN", color_scheme="dark")
    try:
        page = open_page(ctx, server.url)
        page.wait_for_function(
            "() => document.querySelector('#glmv-new')?.innerText.includes('新对话')", timeout=WAIT_MS
        )
        assert "设备" in page.inner_text("#glmv-status")
        assert page.evaluate(
            "() => document.querySelector('.gradio-container').closest('.dark') !== null "
            "|| document.body.classList.contains('dark') || document.documentElement.classList.contains('dark')"
        )
    finally:
        ctx.close()


def test_api_key_requires_login(browser, ui_engine):
    engine, settings, _ = ui_engine
    from dataclasses import replace

    state = AppState(replace(settings, api_key="sekret"), backend=engine)
    with UiServer(state) as srv:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(srv.url, timeout=WAIT_MS)
            page.wait_for_selector("input[type=password]", timeout=WAIT_MS)
            assert page.locator("#glmv-input").count() == 0
            page.locator("input[type=text]").first.fill("me")
            page.fill("input[type=password]", "wrong")
            page.keyboard.press("Enter")
            page.wait_for_function("() => /incorrect/i.test(document.body.innerText)", timeout=WAIT_MS)
            assert page.locator("#glmv-input").count() == 0
            page.locator("input[type=text]").first.fill("me")
            page.fill("input[type=password]", "sekret")
            page.keyboard.press("Enter")
            page.wait_for_selector("#glmv-input textarea", timeout=WAIT_MS)
        finally:
            ctx.close()


def test_two_browser_contexts_are_isolated(browser, server):
    one = open_page(browser.new_context(locale="en-US"), server.url)
    two = open_page(browser.new_context(locale="en-US"), server.url)
    try:
        ask(one, "alpha question")
        ask(two, "beta question")
        wait_turns(one, 2)
        wait_turns(two, 2)
        one.reload()
        one.wait_for_function(
            "() => document.querySelector('#glmv-chat')?.innerText.includes('alpha question')", timeout=WAIT_MS
        )
        assert "beta question" not in one.inner_text("#glmv-chat")
        assert "alpha question" not in two.inner_text("#glmv-chat")
        assert [m["text"] for m in saved_chat(two)["messages"][:1]] == ["beta question"]
    finally:
        one.context.close()
        two.context.close()


def test_queue_position_shown_while_waiting(browser, server, ui_engine):
    _, _, slow = ui_engine
    one = open_page(browser.new_context(locale="en-US"), server.url)
    two = open_page(browser.new_context(locale="en-US"), server.url)
    slow.delay_s = 0.1
    try:
        one.fill("#glmv-max-new input[type=number]", "400")
        one.press("#glmv-max-new input[type=number]", "Enter")
        queue_behind(one, two)
        one.click("#glmv-input .stop-button", timeout=WAIT_MS)
        slow.delay_s = 0.0
        chat = wait_turns(two, 2)
        assert chat["messages"][0]["text"] == "Then me"
    finally:
        slow.delay_s = 0.0
        one.context.close()
        two.context.close()


def test_tab_close_frees_engine_session(context, server, ui_engine):
    engine = ui_engine[0]
    others = ui_sessions(engine)  # the tabs earlier tests closed may still be on their way out
    page = open_page(context, server.url)
    ask(page, "Cache me")
    wait_turns(page, 2)
    ours = ui_sessions(engine) - others
    assert ours
    page.close()
    wait_tabs_closed(engine, ours)
