"""Issue 8, fuzzing (bounded for CI): schemathesis against /openapi.json (no 5xx, every 4xx in OpenAI's
error format), and hypothesis harnesses on the image decoder and on the API's request -> engine
messages conversion (no exception other than the documented ones)."""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import replace

import pydantic
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from glm_vision.api.errors import APIError
from glm_vision.api.messages import convert_messages
from glm_vision.api.options import build_sampling
from glm_vision.api.schemas import ChatCompletionRequest
from glm_vision.backend import EngineError
from glm_vision.images import ImageError, load_media
from glm_vision.server import AppState
from glm_vision.settings import Settings
from tests.api_helpers import serve
from tests.conftest import make_picture
from tests.hardening_corpus import corpus

FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, print_blob=False)


# ---------------------------------------------------------------------------------- schemathesis
@pytest.fixture(scope="module")
def api_schema(settings, engine):
    small = replace(settings, max_new_tokens=4)
    live = serve(AppState(small, backend=engine))
    yield schemathesis.openapi.from_url(live.url + "/openapi.json")
    live.__exit__()


def test_openapi_fuzz_never_5xx(api_schema):
    """Every operation in /openapi.json, 40 generated requests each (schemathesis's strategies run by
    hypothesis here: its pytest plugin's from_fixture does not work with pytest 9)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/health"}
    calls = []
    for operation in operations:

        @given(operation.as_strategy())
        @hsettings(max_examples=40, **FUZZ)
        def check(case):
            if isinstance(case.body, dict):
                if isinstance(case.body.get("max_tokens"), int) and case.body["max_tokens"] > 16:
                    case.body["max_tokens"] = 16  # bounded CPU time: generation length is not what is fuzzed
                case.body.pop("max_completion_tokens", None)
                case.body.pop("min_tokens", None)
            response = case.call(timeout=120)
            calls.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
            if 400 <= response.status_code < 500 and case.path == "/v1/chat/completions":
                error = response.json()["error"]  # OpenAI's error format (a model id with a newline in
                assert error["message"] and error["type"]  # GET /v1/models/{id} is Starlette's plain 404)

        check()
    print(f"schemathesis: {len(calls)} requests, statuses {sorted(set(calls))}")
    assert len(calls) >= 40 and max(calls) < 500


# ---------------------------------------------------------------------------------- image decoder
SEEDS = [
    c.data
    for c in corpus(max_upload_bytes=200_000, max_pixels=4_000_000, pdf_max_pages=2)
    if len(c.data) < 200_000 and c.name not in ("over the pixel limit",)
]


def _png() -> bytes:
    buffer = io.BytesIO()
    make_picture(3, (40, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


SEEDS.append(_png())


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        action = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def decode_or_documented_error(data: bytes) -> None:
    try:
        images = load_media(data, max_bytes=1_000_000, max_pages=2, pdf_dpi=36, max_decoded_pixels=4_000_000)
    except ImageError as exc:
        assert str(exc)
        return
    for image in images:
        assert image.image.mode == "RGB" and image.image.width >= 1 and image.image.height >= 1


@given(st.binary(max_size=2048))
@hsettings(max_examples=200, **FUZZ)
def test_decoder_on_arbitrary_bytes(data):
    decode_or_documented_error(data)


@given(mutated())
@hsettings(max_examples=300, **FUZZ)
def test_decoder_on_mutated_files(data):
    decode_or_documented_error(data)


# ---------------------------------------------------------------------------------- message parser
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


urls = st.one_of(
    st.text(max_size=40),
    st.builds(lambda d: "data:image/png;base64," + _b64(d), st.sampled_from(SEEDS[:6]) | st.binary(max_size=64)),
    st.builds(lambda t: "data:image/png;base64," + t, st.text(max_size=40)),
    st.builds(lambda t: "data:" + t, st.text(max_size=40)),
    st.sampled_from(["http://127.0.0.1/x.png", "https://example.com/a.png", "file:///etc/passwd", "data:,"]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=20))
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=60)}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": urls}, optional={"detail": st.sampled_from(["low", "high", "auto", "weird"])}
            ),
        }
    ),
    st.fixed_dictionaries({"type": st.text(max_size=12)}),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot"])},
        optional={
            "content": st.one_of(st.none(), st.text(max_size=80), st.lists(parts, max_size=4), scalars),
            "tool_calls": st.lists(st.dictionaries(st.text(max_size=5), scalars, max_size=2), max_size=1),
        },
    ),
    max_size=5,
)
bodies = st.fixed_dictionaries(
    {"messages": messages},
    optional={
        name: scalars
        for name in (
            "max_tokens",
            "temperature",
            "top_p",
            "top_k",
            "repetition_penalty",
            "n",
            "min_tokens",
            "presence_penalty",
            "logprobs",
            "seed",
        )
    }
    | {"stop": st.one_of(scalars, st.lists(st.text(max_size=5), max_size=6))},
)

PARSER_SETTINGS = Settings(
    max_upload_mb=0.1, max_images_per_message=3, pdf_max_pages=2, pdf_dpi=36, max_context_tokens=4096
)


@given(bodies)
@hsettings(max_examples=400, **FUZZ)
def test_message_parser_raises_only_documented_errors(body):
    try:
        request = ChatCompletionRequest.model_validate(body)
    except pydantic.ValidationError:
        return  # answered as a 400 by the route
    try:
        build_sampling(request, PARSER_SETTINGS)
        converted, _ = asyncio.run(convert_messages(request.messages, PARSER_SETTINGS))
    except APIError as exc:
        assert 400 <= exc.status_code < 500 and exc.message
        return
    except EngineError as exc:
        assert exc.status == 400 and exc.message
        return
    for message in converted:
        assert message.role in {"system", "user", "assistant"}
        assert isinstance(message.text, str)
        message.text.encode("utf-8")  # no lone surrogates reach the tokenizer
        assert len(message.images) <= PARSER_SETTINGS.max_images_per_message
