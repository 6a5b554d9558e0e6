"""The remote backend end to end: one app instance on the tiny model, a second instance with
`--backend openai --api-base` in front of it, both on loopback, driven by the openai client."""

from __future__ import annotations

from dataclasses import replace

import httpx
import openai
import pytest

from glm_vision.backend import ModelLoadError, QueueFullError
from glm_vision.engine import Engine
from glm_vision.server import AppState, load_backend
from glm_vision.settings import Settings
from tests.api.test_api import THOUGHT
from tests.api_helpers import (
    Gate,
    RecordingBackend,
    ScriptedBackend,
    error_of,
    free_port,
    image_part,
    serve,
    wait_until,
)
from tests.conftest import make_picture

GREEDY = {"temperature": 0, "extra_body": {"top_k": 0, "repetition_penalty": 1.0}}


def front(upstream_url: str, **overrides) -> tuple:
    """A second app instance fronting `upstream_url`, built the way `app.py --backend openai` builds it."""
    settings = Settings(backend="openai", api_base=upstream_url + "/v1", **overrides)
    backend = load_backend(settings)
    return serve(AppState(settings, backend=backend)), backend


@pytest.fixture(scope="module")
def upstream(settings, engine):
    recorded = RecordingBackend(engine)
    live = serve(AppState(replace(settings, api_key="upstream-key"), backend=recorded))
    yield live, recorded
    live.__exit__()


@pytest.fixture(scope="module")
def fronted(upstream):
    live, _ = upstream
    proxy, backend = front(live.url, remote_api_key="upstream-key")
    yield proxy, backend
    proxy.__exit__()
    backend.shutdown()


@pytest.fixture(scope="module")
def client(fronted):
    proxy, _ = fronted
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0, timeout=60) as c:
        yield c


def test_front_reports_the_upstream_model(client, fronted, engine):
    proxy, backend = fronted
    assert backend.info.model == engine.info.model
    assert [m.id for m in client.models.list().data] == [engine.info.model]
    health = httpx.get(proxy.url + "/health", timeout=30).json()
    assert health["status"] == "ok" and health["device"].startswith("remote http://127.0.0.1:")


def test_same_answer_through_the_front_with_image(client, upstream, engine):
    _, recorded = upstream
    picture = make_picture(51)
    messages = [{"role": "user", "content": [image_part(picture), {"type": "text", "text": "What is it?"}]}]
    with openai.OpenAI(base_url=upstream[0].url + "/v1", api_key="upstream-key", max_retries=0) as direct:
        expected = direct.chat.completions.create(model="x", messages=messages, max_tokens=10, seed=1, **GREEDY)
    reply = client.chat.completions.create(model="x", messages=messages, max_tokens=10, seed=1, **GREEDY)
    assert reply.choices[0].message.content == expected.choices[0].message.content
    assert reply.choices[0].finish_reason == expected.choices[0].finish_reason
    assert reply.usage.prompt_tokens == expected.usage.prompt_tokens
    assert reply.usage.completion_tokens == expected.usage.completion_tokens
    sent = recorded.handles[-1].request
    assert sent.messages[0].images[0].digest == recorded.handles[-2].request.messages[0].images[0].digest
    assert (sent.sampling.temperature, sent.sampling.top_k, sent.sampling.repetition_penalty, sent.sampling.seed) == (
        0,
        0,
        1.0,
        1,
    )


def test_streaming_and_stop_through_the_front(client, upstream):
    _, recorded = upstream
    messages = [{"role": "user", "content": "stream through"}]
    chunks = list(
        client.chat.completions.create(
            model="x",
            messages=messages,
            max_tokens=12,
            stream=True,
            stop=["zq", "xv"],
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    assert recorded.handles[-1].request.sampling.stop == ("zq", "xv")
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == recorded.handles[-1].result.text
    assert chunks[-1].usage.completion_tokens == recorded.handles[-1].result.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == recorded.handles[-1].result.usage.prompt_tokens


def test_errors_keep_their_status_through_the_front(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "word " * 5000}])
    assert "context limit" in caught.value.message
    assert caught.value.body["code"] == "context_length_exceeded" and caught.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "x"}], temperature=9)
    with pytest.raises(openai.BadRequestError) as caught:  # refused by the upstream alone: its param comes along
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "x"}], n=8, max_tokens=2)
    assert "at most" in caught.value.message and caught.value.body["param"] == "n"


def test_thinking_split_through_the_front(settings):
    scripted = ScriptedBackend(THOUGHT)
    upstream = serve(AppState(settings, backend=scripted))
    proxy, backend = front(upstream.url)
    try:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0) as c:
            reply = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
            assert (
                reply.choices[0].message.model_extra["reasoning_content"]
                == "The picture shows a red square.\nIt is small."
            )
            assert reply.choices[0].message.content == "The answer is red."
            chunks = list(
                c.chat.completions.create(
                    model="x",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    extra_body={"chat_template_kwargs": {"enable_thinking": False}},
                )
            )
            assert scripted.requests[-1].enable_thinking is False
            content = "".join(ch.choices[0].delta.content or "" for ch in chunks)
            reasoning = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for ch in chunks)
            assert (reasoning, content) == ("The picture shows a red square.\nIt is small.", "The answer is red.")
            # Reasoning in the history never travels upstream.
            c.chat.completions.create(
                model="x",
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "<think>hmm</think>B"},
                    {"role": "user", "content": "c"},
                ],
            )
            assert scripted.requests[-1].messages[1].text == "B"
    finally:
        proxy.__exit__()
        upstream.__exit__()
        backend.shutdown()
        scripted.shutdown()


def test_disconnect_at_the_front_cancels_upstream(settings):
    small = Engine.load(replace(settings, queue_size=1))
    small.ready = True
    gate = Gate(small, after_deltas=2)
    recorded = RecordingBackend(small)
    upstream = serve(AppState(settings, backend=recorded))
    proxy, backend = front(upstream.url)
    try:
        body = {
            "messages": [{"role": "user", "content": "hello"}],
            "stream": True,
            "max_tokens": 400,
            "min_tokens": 400,
            "temperature": 0,
        }  # min_tokens: the random model writes on until it is cancelled
        with httpx.Client(timeout=60) as http:
            with http.stream("POST", proxy.url + "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                first = next(response.iter_lines())
                assert first.startswith("data: ") and '"error"' not in first, first
                assert gate.reached.wait(30), (
                    first,
                    recorded.handles,
                )  # the upstream model has written 2 pieces and is held
        # The client of the front went away: the front closed its upstream stream, the upstream cancelled.
        running = recorded.handles[0]
        wait_until(running.cancelled.is_set, what="the upstream to cancel")
        gate.release.set()
        wait_until(lambda: running.result is not None, what="the upstream generation to end")
        assert running.result.finish_reason == "cancelled"
    finally:
        gate.release.set()
        proxy.__exit__()
        upstream.__exit__()
        backend.shutdown()
        small.shutdown()


def test_upstream_queue_full_maps_to_429(settings):
    class Busy(ScriptedBackend):
        def submit(self, request):
            raise QueueFullError("the server is busy", retry_after_s=7)

    busy = Busy("")
    upstream = serve(AppState(settings, backend=busy))
    proxy, backend = front(upstream.url)
    try:
        response = httpx.post(
            proxy.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, timeout=30
        )
        assert response.status_code == 429 and response.headers["retry-after"] == "7"
        assert "busy" in error_of(response)["message"]
    finally:
        proxy.__exit__()
        upstream.__exit__()
        backend.shutdown()
        busy.shutdown()


def test_upstream_gone_is_503_and_unreachable_at_start_fails_clearly(settings):
    scripted = ScriptedBackend("ok")
    upstream = serve(AppState(settings, backend=scripted))
    proxy, backend = front(upstream.url)
    try:
        upstream.__exit__()
        response = httpx.post(
            proxy.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, timeout=30
        )
        assert response.status_code == 503
        assert "cannot reach the remote server" in error_of(response)["message"]
        assert httpx.get(proxy.url + "/health", timeout=30).status_code == 503
    finally:
        proxy.__exit__()
        backend.shutdown()
        scripted.shutdown()
    from glm_vision.remote import RemoteBackend

    with pytest.raises(ModelLoadError, match="cannot reach"):
        RemoteBackend.connect(Settings(backend="openai", api_base=f"http://127.0.0.1:{free_port()}/v1"), wait_s=0)


def test_wrong_upstream_key_fails_at_start(upstream):
    from glm_vision.remote import RemoteBackend

    with pytest.raises(ModelLoadError, match="HTTP 401"):
        RemoteBackend.connect(Settings(backend="openai", api_base=upstream[0].url + "/v1", remote_api_key="bad"))


def test_api_base_without_v1_says_so(upstream):
    from glm_vision.remote import RemoteBackend

    base = upstream[0].url
    with pytest.raises(ModelLoadError, match=f"try --api-base {base}/v1"):
        RemoteBackend.connect(Settings(backend="openai", api_base=base, remote_api_key="upstream-key"), wait_s=0)
