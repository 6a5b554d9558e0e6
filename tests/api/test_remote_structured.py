"""The remote backend forwards response_format, structured_outputs, logprobs, top_logprobs, n, the
thinking budget and seed under vLLM's names, and maps the upstream's answers back unchanged: a scripted
upstream records each body and answers with n choices and logprobs."""

from __future__ import annotations

import json

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from glm_vision.server import AppState, load_backend
from glm_vision.settings import Settings
from tests.api_helpers import LiveServer, serve

ANSWERS = ['{"ok":true}', '{"ok":false}']


def token_entry(token: str, logprob: float) -> dict:
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": token, "logprob": logprob, "bytes": list(token.encode())},
            {"token": "x", "logprob": -9.5, "bytes": [120]},
        ],
    }


def scripted_upstream(bodies: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "glm-upstream", "object": "model", "created": 0, "owned_by": "x"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        bodies.append(body)

        def events():
            head = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "glm-upstream"}
            for index in range(body.get("n", 1)):
                answer = ANSWERS[index % 2]
                thought = {"index": index, "delta": {"reasoning_content": "hm"}, "finish_reason": None}
                yield head | {"choices": [thought]}
                for i in range(0, len(answer), 4):
                    piece = answer[i : i + 4]
                    logprobs = {"content": [token_entry(piece, -0.25 * (index + 1))]} if body.get("logprobs") else None
                    yield head | {
                        "choices": [
                            {"index": index, "delta": {"content": piece}, "logprobs": logprobs, "finish_reason": None}
                        ]
                    }
                yield head | {"choices": [{"index": index, "delta": {}, "finish_reason": "stop"}]}
            yield head | {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}

        def sse():
            for event in events():
                yield f"data: {json.dumps(event)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def remote():
    bodies: list[dict] = []
    upstream = LiveServer(scripted_upstream(bodies)).__enter__()
    settings = Settings(backend="openai", api_base=upstream.url + "/v1")
    backend = load_backend(settings)
    front = serve(AppState(settings, backend=backend))
    with openai.OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0, timeout=30) as client:
        yield client, bodies
    front.__exit__()
    backend.shutdown()
    upstream.__exit__()


SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


def ask(client, **kwargs):
    return client.chat.completions.create(model="glm", messages=[{"role": "user", "content": "ok?"}], **kwargs)


@pytest.mark.parametrize("stream", [False, True])
def test_every_field_is_forwarded_and_the_answers_come_back(remote, stream):
    client, bodies = remote
    response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
    result = ask(
        client,
        response_format=response_format,
        logprobs=True,
        top_logprobs=2,
        n=2,
        seed=7,
        stream=stream,
        extra_body={"thinking_budget": 64},
    )
    sent = bodies[-1]
    assert sent["response_format"] == response_format
    assert (sent["logprobs"], sent["top_logprobs"], sent["n"], sent["seed"]) == (True, 2, 2, 7)
    assert sent["thinking_token_budget"] == 64
    if not stream:
        choices = sorted(result.choices, key=lambda c: c.index)
        assert [c.message.content for c in choices] == ANSWERS
        assert [c.message.reasoning_content for c in choices] == ["hm", "hm"]
        for choice in choices:
            tokens = choice.logprobs.content
            assert "".join(t.token for t in tokens) == ANSWERS[choice.index]
            assert {t.logprob for t in tokens} == {-0.25 * (choice.index + 1)}
            assert [t.token for t in tokens[0].top_logprobs] == [tokens[0].token, "x"]
        return
    content, logprobs, finish, order = {0: "", 1: ""}, {0: [], 1: []}, {}, []
    for chunk in result:
        for choice in chunk.choices:
            content[choice.index] += choice.delta.content or ""
            if choice.logprobs is not None:
                logprobs[choice.index] += choice.logprobs.content
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
            order.append((choice.index, bool(choice.delta.content), choice.finish_reason))
    assert [content[0], content[1]] == ANSWERS and finish == {0: "stop", 1: "stop"}
    # the upstream finishes choice 0 before it writes choice 1: its finish chunk is passed on at once
    assert order.index((0, False, "stop")) < order.index(next(e for e in order if e[0] == 1 and e[1]))
    assert ["".join(t.token for t in logprobs[i]) for i in (0, 1)] == ANSWERS


@pytest.mark.parametrize(
    "extension, forwarded",
    [
        ({"choice": ["yes", "no"]}, {"choice": ["yes", "no"]}),
        ({"regex": "[a-z]+"}, {"regex": "[a-z]+"}),
        ({"grammar": 'root ::= "a"'}, {"grammar": 'root ::= "a"'}),
    ],
)
def test_structured_outputs_go_upstream_under_vllms_names(remote, extension, forwarded):
    client, bodies = remote
    ask(client, extra_body={"structured_outputs": extension, "thinking_token_budget": 3})
    assert bodies[-1]["structured_outputs"] == forwarded
    assert bodies[-1]["thinking_token_budget"] == 3


def test_json_object_and_schema_text_are_forwarded_as_response_format(remote):
    client, bodies = remote
    ask(client, response_format={"type": "json_object"})
    assert bodies[-1]["response_format"] == {"type": "json_object"}
    ask(client, extra_body={"structured_outputs": {"json": json.dumps(SCHEMA)}})
    assert bodies[-1]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert "n" not in bodies[-1] and "logprobs" not in bodies[-1]


def test_an_invalid_schema_is_refused_before_the_upstream_is_asked(remote):
    client, bodies = remote
    count = len(bodies)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}})
    assert caught.value.code == "invalid_schema" and len(bodies) == count
