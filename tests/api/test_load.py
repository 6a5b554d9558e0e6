"""Bounded loopback load test (issue 7): concurrent API streams through the official openai async
client against the real app on the tiny checkpoint. Every stream completes with exactly what it
gets alone; no 5xx."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import openai
import pytest

from glm_vision.engine import Engine
from glm_vision.server import AppState
from tests.api_helpers import image_part, serve
from tests.conftest import make_picture

STREAMS = 16
TOKENS = 24


@pytest.fixture(scope="module")
def live(settings):
    engine = Engine.load(replace(settings, max_batch=4, queue_size=32))
    engine.warmup()
    server = serve(AppState(settings, backend=engine))
    yield server, engine
    server.__exit__()
    engine.shutdown()


def request(index: int) -> dict:
    picture = make_picture(100 + index, (112 + 28 * (index % 4), 140))
    return {
        "model": "glm-vision",
        "messages": [
            {"role": "user", "content": [image_part(picture), {"type": "text", "text": f"What is in picture {index}?"}]}
        ],
        "max_tokens": TOKENS,
        "temperature": 0,
        "user": f"load-{index}",
    }


async def stream_one(client: openai.AsyncOpenAI, body: dict) -> tuple[str, str | None]:
    text, finish = [], None
    stream = await client.chat.completions.create(stream=True, **body)
    async for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            text.append((getattr(delta, "reasoning_content", None) or "") + (delta.content or ""))
            finish = chunk.choices[0].finish_reason or finish
    return "".join(text), finish


async def all_streams(url: str) -> list:
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300) as client:
        return await asyncio.gather(*(stream_one(client, request(i)) for i in range(STREAMS)), return_exceptions=True)


def test_sixteen_concurrent_streams_complete_correctly(live):
    server, engine = live
    served_before = engine.stats()["served"]
    results = asyncio.run(all_streams(server.url))
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]  # no 5xx, no 429 (the queue holds them all), no dropped stream
    assert engine.stats()["peak_batch"] >= 2  # they really were decoded together
    assert engine.stats()["served"] - served_before == STREAMS
    # Each one alone, one after the other: the same text (greedy), so batching changed nothing.
    with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300) as client:
        for index, (text, finish) in enumerate(results):
            alone = client.chat.completions.create(**request(index))
            message = alone.choices[0].message
            whole = (getattr(message, "reasoning_content", None) or "") + (message.content or "")
            assert text.strip() == whole.strip(), index  # a non-stream answer comes trimmed
            assert finish == alone.choices[0].finish_reason
