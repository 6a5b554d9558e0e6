"""End to end with the bundled demo model (assets/demo-model), through the engine and through the
OpenAI-compatible API: image A, then image B, then A again in one conversation, and two sessions
at once; every answer must name the right colour and shape. A deliberately mis-keyed feature cache
must make the answer name the other image's shape and colour, which proves these tests would catch it."""

from __future__ import annotations

import json
import re
import threading

import openai
import pytest

from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message, split_output
from glm_vision.engine import Engine
from glm_vision.engine.loader import DEMO_MODEL_DIR, resolve_model
from glm_vision.images import load_image
from glm_vision.server import AppState
from glm_vision.settings import Settings
from glm_vision.synthetic.scenes import COLORS, Scene, Shape, render
from tests.api_helpers import image_part, serve

SIZE = (448, 336)  # A and B share a size, so their feature-cache entries are interchangeable


def picture(color: str, kind: str):
    return render(
        Scene(
            width=SIZE[0],
            height=SIZE[1],
            background=(255, 255, 255),
            shapes=(Shape(kind=kind, color=color, slot="center", scale=0.2),),
        )
    )


A = ("red", "circle")
B = ("blue", "square")


def names(answer: str, want: tuple[str, str]) -> bool:
    """The answer names this colour (and no other colour) and this shape."""
    words = set(answer.lower().replace(".", " ").replace(",", " ").split())
    colors = {c[0] for c in COLORS} & words
    return colors == {want[0]} and want[1] in words


@pytest.fixture(scope="module")
def demo_settings():
    return Settings(model=str(DEMO_MODEL_DIR), device="cpu", max_context_tokens=4096)


@pytest.fixture(scope="module")
def demo_engine(demo_settings):
    engine = Engine.load(demo_settings)
    engine.warmup()
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def images():
    return {A: load_image(picture(*A)), B: load_image(picture(*B))}


def question(want: tuple[str, str]) -> str:
    # The colour question is the one this demo checkpoint answers reliably (see its model card);
    # the colour in the answer can only come from the image's features.
    return f"What color is the {want[1]}?"


def ask(engine, history: list[Message], image, session: str, thinking: bool = False, want=None, text=None) -> str:
    history.append(Message("user", text or question(want), [image]))
    result = engine.generate(
        GenerationRequest(list(history), SamplingParams.greedy(32), session_id=session, enable_thinking=thinking)
    )
    answer = split_output(result.text).raw_answer
    history.append(Message("assistant", answer))
    return answer


def test_auto_picks_the_demo_model_without_a_gpu():
    source, is_demo = resolve_model(Settings(model="auto", device="cpu"), "cpu")
    assert is_demo and source == str(DEMO_MODEL_DIR)
    files = list(DEMO_MODEL_DIR.iterdir())
    assert sum(f.stat().st_size for f in files) <= 16 * 1024 * 1024
    assert (DEMO_MODEL_DIR / "README.md").exists()


def test_demo_engine_reports_the_demo_model(demo_settings):
    from glm_vision.engine.loader import load_model

    loaded = load_model(Settings(model="auto", device="cpu"))
    assert loaded.is_demo and loaded.name == "glm-vision-demo"
    assert type(loaded.model).__name__ == "Glm4vForConditionalGeneration"


def test_demo_engine_says_how_many_tokens_an_image_gets(demo_engine):
    """The UI's image-cost line reads this cap: the demo model's processor takes at most 196 per image
    (`longest_edge` = tokens x 28 x 28 px x the temporal factor 2)."""
    size = json.loads((DEMO_MODEL_DIR / "processor_config.json").read_text())["image_processor"]["size"]
    info = demo_engine.info
    assert size["longest_edge"] == 196 * 28 * 28 * 2
    assert info.is_demo and info.max_image_tokens == 196 == demo_engine.runner.builder.max_tokens_per_image


@pytest.mark.parametrize("thinking", [False, True])
def test_a_then_b_then_a_again(demo_engine, images, thinking):
    history: list[Message] = []
    session = f"aba-{thinking}"
    for want in (A, B, A):
        answer = ask(demo_engine, history, images[want], session, thinking, want)
        assert names(answer, want), (want, answer)
    stats = demo_engine.stats()["feature_cache"]
    assert stats["hits"] >= 1  # A's second showing came from the feature cache or reused KV


def test_two_sessions_at_once(demo_engine, images):
    plans = {"left": (A, B, A), "right": (B, A, B)}
    answers: dict[str, list[tuple]] = {name: [] for name in plans}
    errors: list[BaseException] = []

    def converse(name):
        try:
            history: list[Message] = []
            for want in plans[name]:
                answers[name].append((want, ask(demo_engine, history, images[want], f"two-{name}", want=want)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=converse, args=(name,)) for name in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for name, got in answers.items():
        assert len(got) == 3
        for want, answer in got:
            assert names(answer, want), (name, want, answer)


def test_a_mis_keyed_feature_cache_is_caught(demo_engine, images):
    """Swap A's and B's cached features: asking about A must then describe B. The right answers
    in the tests above therefore depend on the cache handing back the right image's features."""
    session = "miskeyed"
    assert names(ask(demo_engine, [], images[A], session, want=A), A)  # caches A's features
    assert names(ask(demo_engine, [], images[B], session, want=B), B)  # a new conversation: caches B's
    cache = demo_engine.features
    keys = [k for k in cache._entries if k[0] == session]
    assert len(keys) == 2
    with cache._lock:
        first, second = keys
        cache._entries[first], cache._entries[second] = cache._entries[second], cache._entries[first]
    # A again in a new conversation: the KV prefix (B's conversation) ends before the image, so A's
    # features come from the cache, which now holds B's under A's key.
    answer = ask(demo_engine, [], images[A], session, text="Which shapes are in the image?")
    assert names(answer, B), answer  # "A blue square.": what B shows


TAG = re.compile(r"<think>|</think>|<tool_call>|</tool_call>|<\|begin_of_box\|>|<\|end_of_box\|>")


def cut_outside_tags(text: str, stop: str) -> str | None:
    """`text` up to the first `stop` that lies between GLM's tags, None where there is none."""
    at, pieces = 0, TAG.split(text)
    for piece, tag in zip(pieces, [*TAG.findall(text), ""], strict=True):
        if stop in piece:
            return text[: at + piece.index(stop)]
        at += len(piece) + len(tag)
    return None


@pytest.mark.parametrize("stop", ["i", "e", "k>"])
def test_a_stop_string_never_cuts_a_tag(demo_engine, images, stop):
    """With thinking on the demo model opens its answer with `<think></think>`: a stop string found inside a tag
    must not end the answer as a stray `<th`. It ends the answer where it occurs between the tags ("i", "e"),
    and one found only inside them ("k>") does not end it at all."""
    messages = [Message("user", question(A), [images[A]])]
    full = demo_engine.generate(GenerationRequest(messages, SamplingParams.greedy(32), enable_thinking=True))
    assert full.text.startswith("<think>") and stop in full.text, full.text
    result = demo_engine.generate(
        GenerationRequest(messages, SamplingParams.greedy(32, stop=(stop,)), enable_thinking=True)
    )
    expected = cut_outside_tags(full.text, stop)
    assert result.text == (full.text if expected is None else expected)
    assert result.finish_reason == "stop"
    answer = split_output(result.text).raw_answer  # the tags were whole: the answer parses, no markup in it
    assert "<" not in answer and split_output(full.text).raw_answer.startswith(answer)


def test_a_then_b_then_a_through_the_api(demo_engine, demo_settings):
    live = serve(AppState(demo_settings, backend=demo_engine))
    try:
        pictures = {A: picture(*A), B: picture(*B)}
        with openai.OpenAI(base_url=live.url + "/v1", api_key="k", max_retries=0, timeout=120) as client:

            def converse(plan):
                messages, answers = [], []
                for want in plan:
                    messages.append(
                        {
                            "role": "user",
                            "content": [image_part(pictures[want]), {"type": "text", "text": question(want)}],
                        }
                    )
                    reply = client.chat.completions.create(
                        model="glm-vision-demo",
                        messages=messages,
                        max_tokens=32,
                        temperature=0,
                        extra_body={"top_k": 0, "repetition_penalty": 1.0, "enable_thinking": False},
                    )
                    answer = reply.choices[0].message.content
                    messages.append({"role": "assistant", "content": answer})
                    answers.append((want, answer))
                return answers

            results: dict[str, list] = {}
            threads = [
                threading.Thread(target=lambda n=n, p=p: results.__setitem__(n, converse(p)))
                for n, p in {"one": (A, B, A), "two": (B, A, B)}.items()
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
        assert set(results) == {"one", "two"}
        for name, got in results.items():
            for want, answer in got:
                assert names(answer, want), (name, want, answer)
    finally:
        live.__exit__()
