"""The OpenAI-compatible API, driven by the official `openai` client and raw HTTP, against the real
app (health, /v1 API, UI) on a loopback port with the tiny checkpoint."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from glm_vision.server import AppState
from tests.api_helpers import ScriptedBackend, image_part, serve
from tests.conftest import make_picture

GREEDY = {"temperature": 0, "extra_body": {"top_k": 0, "repetition_penalty": 1.0}}


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="tenant-a", max_retries=0, timeout=60) as c:
        yield c


THOUGHT = (
    "<think>The picture shows a red square.\nIt is small.</think>\nThe answer is <|begin_of_box|>red<|end_of_box|>."
)


@pytest.fixture(scope="module")
def scripted():
    backend = ScriptedBackend(THOUGHT)
    yield backend
    backend.shutdown()


@pytest.fixture(scope="module")
def scripted_server(settings, scripted):
    live = serve(AppState(settings, backend=scripted))
    yield live
    live.__exit__()


@pytest.fixture(scope="module")
def scripted_client(scripted_server):
    with openai.OpenAI(base_url=scripted_server.url + "/v1", api_key="k", max_retries=0, timeout=60) as c:
        yield c


def ask(image=None, text="What is in this picture?"):
    content = [{"type": "text", "text": text}]
    if image is not None:
        content.insert(0, image_part(image))
    return [{"role": "user", "content": content}]


# ---------------------------------------------------------------------------------- non-stream
def test_non_stream_with_image_returns_chat_completion_with_usage(client, engine):
    picture = make_picture(11)
    reply = client.chat.completions.create(model="glm-4.6v-flash", messages=ask(picture), max_tokens=8, **GREEDY)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == engine.info.model
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    usage = reply.usage
    assert 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0  # first time this tenant sends anything like it

    text_only = client.chat.completions.create(model="x", messages=ask(None), max_tokens=2, **GREEDY)
    # The 168x112 picture becomes 6x4 = 24 image tokens plus its two markers.
    assert usage.prompt_tokens - text_only.usage.prompt_tokens == 26
    timings = reply.model_extra["timings"]
    assert timings["images"] == 1 and timings["ttft_ms"] > 0


def test_max_tokens_gives_length_and_exact_count(client):
    reply = client.chat.completions.create(model="x", messages=ask(None, "hello"), max_completion_tokens=3, **GREEDY)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_repeated_image_and_prefix_hit_caches_per_key_only(server, engine):
    picture = make_picture(12)
    messages = ask(picture, "Describe it.")
    with (
        openai.OpenAI(base_url=server.url + "/v1", api_key="tenant-b", max_retries=0) as b,
        openai.OpenAI(base_url=server.url + "/v1", api_key="tenant-c", max_retries=0) as c,
    ):
        first = b.chat.completions.create(model="x", messages=messages, max_tokens=4, **GREEDY)
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        again = b.chat.completions.create(model="x", messages=messages, max_tokens=4, **GREEDY)
        # The whole prompt but its last token is served from the tenant's KV cache.
        assert again.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens - 1
        assert again.choices[0].message.content == first.choices[0].message.content

        # A follow-up turn only prefills what is new: the image and first question come from the cache.
        follow = messages + [
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And the colours?"},
        ]
        turn2 = b.chat.completions.create(model="x", messages=follow, max_tokens=4, **GREEDY)
        assert turn2.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 2

        # Another key never sees tenant b's cached state.
        other = c.chat.completions.create(model="x", messages=messages, max_tokens=4, **GREEDY)
        assert other.usage.prompt_tokens_details.cached_tokens == 0
        assert other.model_extra["timings"]["image_cache_hits"] == 0


def test_same_image_in_new_conversation_hits_feature_cache(server):
    picture = make_picture(13)
    with openai.OpenAI(base_url=server.url + "/v1", api_key="tenant-d", max_retries=0) as d:
        d.chat.completions.create(model="x", messages=ask(picture, "First question"), max_tokens=2, **GREEDY)
        # A different conversation (system prompt first) with the same picture: no KV prefix to
        # share, but the image's features are not computed again.
        messages = [{"role": "system", "content": "Be brief."}] + ask(picture, "Second question")
        reply = d.chat.completions.create(model="x", messages=messages, max_tokens=2, **GREEDY)
        assert reply.usage.prompt_tokens_details.cached_tokens == 0
        assert reply.model_extra["timings"]["image_cache_hits"] == 1


def test_new_conversation_reuses_the_kv_prefix_it_shares_with_an_earlier_one(server):
    picture = make_picture(14)
    system = [{"role": "system", "content": "You are a careful screenshot reviewer. Answer in one short sentence."}]
    with (
        openai.OpenAI(base_url=server.url + "/v1", api_key="tenant-e", max_retries=0) as e,
        openai.OpenAI(base_url=server.url + "/v1", api_key="tenant-f", max_retries=0) as f,
    ):
        first = e.chat.completions.create(
            model="x", messages=system + ask(picture, "What is it?"), max_tokens=2, **GREEDY
        )
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        # Same system prompt and image, another question: a new conversation, yet only the question is new.
        other_question = system + ask(picture, "Which colours?")
        second = e.chat.completions.create(model="x", messages=other_question, max_tokens=4, **GREEDY)
        shared = second.usage.prompt_tokens_details.cached_tokens
        assert shared >= first.usage.prompt_tokens - 8 and shared < second.usage.prompt_tokens
        # Starting from the borrowed KV changes nothing: a tenant with no cache gets the same answer.
        cold = f.chat.completions.create(model="x", messages=other_question, max_tokens=4, **GREEDY)
        assert cold.usage.prompt_tokens_details.cached_tokens == 0
        assert cold.choices[0].message.content == second.choices[0].message.content


def test_cache_scope_is_per_key(client, recorded):
    client.chat.completions.create(model="x", messages=ask(None, "scope"), max_tokens=1)
    request = recorded.handles[-1].request
    scope = request.cache_scope
    assert scope.startswith("api:") and "tenant-a" not in scope and scope != "api:anonymous"
    assert request.session_id.startswith(scope + ":")
    httpx.post(
        str(client.base_url) + "chat/completions", json={"messages": ask(None, "anon"), "max_tokens": 1}, timeout=60
    )
    assert recorded.handles[-1].request.cache_scope == "api:anonymous"
    assert recorded.handles[-1].request.session_id.startswith("api:anonymous:")


# ---------------------------------------------------------------------------------- streaming
def test_stream_with_image_matches_non_stream(client):
    picture = make_picture(14)
    messages = ask(picture, "stream please")
    whole = client.chat.completions.create(model="x", messages=messages, max_tokens=12, seed=3, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model="x",
            messages=messages,
            max_tokens=12,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_sse_framing_is_exactly_openais(server):
    body = {"model": "x", "messages": ask(make_picture(15), "frame"), "max_tokens": 5, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")
    assert events[-1] == ""
    events = events[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    payloads = [json.loads(event[6:]) for event in events[:-1]]
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    for payload in payloads:
        assert payload["object"] == "chat.completion.chunk"
        assert set(payload) == {"id", "object", "created", "model", "choices"}  # no usage key unless asked
        assert payload["choices"][0]["index"] == 0
    assert payloads[-1]["choices"][0]["delta"] == {}
    assert payloads[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads[:-1])


# ---------------------------------------------------------------------------------- thinking
def test_thinking_split_non_stream(scripted_client):
    reply = scripted_client.chat.completions.create(model="x", messages=ask(None))
    message = reply.choices[0].message
    assert message.model_extra["reasoning_content"] == "The picture shows a red square.\nIt is small."
    assert message.content == "The answer is red."
    assert reply.usage.prompt_tokens_details.cached_tokens == 4


def test_thinking_split_stream(scripted_client):
    chunks = list(scripted_client.chat.completions.create(model="x", messages=ask(None), stream=True))
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert reasoning == "The picture shows a red square.\nIt is small."
    assert content == "The answer is red."
    assert not any("<" in (c.choices[0].delta.content or "") for c in chunks)


def test_thinking_off_and_extensions_reach_the_engine(scripted_client, scripted):
    scripted_client.chat.completions.create(
        model="x",
        messages=ask(None),
        temperature=0.3,
        top_p=0.5,
        seed=7,
        stop=["zz"],
        max_tokens=99,
        extra_body={"top_k": 5, "repetition_penalty": 1.3, "chat_template_kwargs": {"enable_thinking": False}},
    )
    request = scripted.requests[-1]
    assert request.enable_thinking is False
    s = request.sampling
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty, s.seed, s.stop, s.max_new_tokens) == (
        0.3,
        0.5,
        5,
        1.3,
        7,
        ("zz",),
        99,
    )
    scripted_client.chat.completions.create(model="x", messages=ask(None), extra_body={"top_k": -1})
    assert scripted.requests[-1].sampling.top_k == 0 and scripted.requests[-1].enable_thinking is True


def test_thinking_off_changes_the_real_prompt(client):
    on = client.chat.completions.create(model="x", messages=ask(None, "think?"), max_tokens=1)
    off = client.chat.completions.create(
        model="x",
        messages=ask(None, "think?"),
        max_tokens=1,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert off.usage.prompt_tokens > on.usage.prompt_tokens  # '/nothink' and an empty <think></think>


def test_stop_strings_cut_the_answer(scripted_client):
    reply = scripted_client.chat.completions.create(model="x", messages=ask(None), stop="answer")
    assert reply.choices[0].message.content == "The"
    assert reply.choices[0].finish_reason == "stop"


def test_history_reasoning_is_not_sent_back(scripted_client, scripted):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [image_part(make_picture(16)), {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": "<think>secret musing</think>\nRed.", "reasoning_content": "ignored"},
        {"role": "user", "content": "Sure?"},
    ]
    scripted_client.chat.completions.create(model="x", messages=messages)
    sent = scripted.requests[-1].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2].text == "Red."
    assert len(sent[1].images) == 1 and sent[1].text == "What colour?"


# ---------------------------------------------------------------------------------- models, schema
def test_models_and_openapi(client, server, engine):
    models = client.models.list()
    assert [m.id for m in models.data] == [engine.info.model]
    assert client.models.retrieve(engine.info.model).id == engine.info.model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    schema = httpx.get(server.url + "/openapi.json", timeout=30).json()
    assert {"/v1/chat/completions", "/v1/models", "/health"} <= set(schema["paths"])
    components = schema["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletion", "ErrorResponse"} <= set(components)
    post = schema["paths"]["/v1/chat/completions"]["post"]
    streamed = post["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert streamed["title"] == "ChatCompletionChunk" and "$ref" not in json.dumps(streamed)
    assert {"400", "401", "413", "429", "503"} <= set(post["responses"])
    health = httpx.get(server.url + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["model"] == engine.info.model
