"""`--mcp`: the official MCP client lists the `ask_about_image` tool and calls it over streamable
HTTP against the real app on the tiny model; with --api-key the endpoint needs the key."""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import replace

import httpx
import pytest

from glm_vision.conversation import split_output
from glm_vision.server import AppState
from tests.api_helpers import RecordingBackend, serve
from tests.conftest import make_picture


def png_base64(seed: int) -> str:
    buffer = io.BytesIO()
    make_picture(seed).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def _session_call(url: str, headers: dict | None, calls):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url, headers=headers, timeout=60) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return [await call(session) for call in calls]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.fixture(scope="module")
def mcp_server(settings, engine):
    recorded = RecordingBackend(engine)
    live = serve(AppState(replace(settings, mcp=True), backend=recorded))
    yield live, recorded
    live.__exit__()


def test_mcp_tool_is_listed_and_answers(mcp_server):
    live, recorded = mcp_server
    url = live.url + "/mcp/gradio_api/mcp/"

    async def list_tools(session):
        return await session.list_tools()

    async def ask(session):
        return await session.call_tool(
            "ask_about_image",
            {"image": "data:image/png;base64," + png_base64(71), "question": "What colour is the background?"},
        )

    async def ask_plain_base64_thinking(session):
        return await session.call_tool(
            "ask_about_image", {"image": png_base64(71), "question": "Again?", "thinking": True}
        )

    async def ask_bad_image(session):
        return await session.call_tool(
            "ask_about_image", {"image": base64.b64encode(b"nope").decode(), "question": "What?"}
        )

    tools, answer, again, bad = run(
        _session_call(url, None, [list_tools, ask, ask_plain_base64_thinking, ask_bad_image])
    )
    tool = next(t for t in tools.tools if t.name == "ask_about_image")
    assert "question about one image" in tool.description
    assert {"image", "question", "thinking"} <= set(tool.inputSchema["properties"])
    assert [t.name for t in tools.tools] == ["ask_about_image"]  # only the tool, nothing of the UI

    assert not answer.isError and answer.content[0].type == "text"
    first, second = recorded.handles[-2], recorded.handles[-1]
    assert answer.content[0].text == split_output(first.result.text).answer
    assert first.request.messages[0].text == "What colour is the background?"
    assert len(first.request.messages[0].images) == 1 and first.request.enable_thinking is False
    assert second.request.enable_thinking is True
    # The same picture again is not encoded again (its KV and features are cached).
    assert first.result.usage.images_encoded == 1 and second.result.usage.images_encoded == 0

    assert bad.isError and "not a readable image" in bad.content[0].text


def test_mcp_needs_the_api_key(settings, engine):
    live = serve(AppState(replace(settings, mcp=True, api_key="mcp-key"), backend=engine))
    try:
        url = live.url + "/mcp/gradio_api/mcp/"
        refused = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30)
        assert refused.status_code == 401

        async def list_tools(session):
            return await session.list_tools()

        async def ask(session):
            return await session.call_tool("ask_about_image", {"image": png_base64(72), "question": "What is it?"})

        tools, answer = run(_session_call(url, {"Authorization": "Bearer mcp-key"}, [list_tools, ask]))
        assert [t.name for t in tools.tools] == ["ask_about_image"]
        assert not answer.isError, answer.content[0].text
        assert answer.content[0].type == "text"
    finally:
        live.__exit__()


def test_no_mcp_without_the_flag(settings, engine):
    live = serve(AppState(settings, backend=engine))
    try:
        response = httpx.post(
            live.url + "/mcp/gradio_api/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30
        )
        assert response.status_code in (404, 405)
    finally:
        live.__exit__()
