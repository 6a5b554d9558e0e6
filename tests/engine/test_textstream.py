"""Streaming text: whole characters only, and stop strings cut exactly."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from glm_vision.engine.textstream import IncrementalDetokenizer, StopStrings

TEXT = "你好，世界！Chinese 中文 and emoji 😀🎉👍 mixed: ünïcödé — مرحبا"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_multibyte_characters_are_never_split(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    # The byte-level tokenizer really does split some characters over several tokens.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids]
    deltas.append(detok.flush())
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == TEXT
    assert sum(1 for d in deltas if d) > 10  # it streams, it does not wait for the end


def test_the_fast_decoder_decodes_as_transformers_does(tokenizer):
    """Random ids, special tokens and split multi-byte characters among them: the Rust tokenizer's decode the
    detokenizer calls gives transformers' `decode` exactly; a tokenizer class with its own decode keeps it."""
    import random

    from glm_vision.engine.textstream import fast_decoder

    rng = random.Random(0)
    decode = fast_decoder(tokenizer)
    specials = tokenizer.all_special_ids
    for _ in range(300):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 12))] + rng.sample(specials, 1)
        rng.shuffle(ids)
        assert decode(ids) == tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    class Shouting(type(tokenizer)):
        def _decode(self, token_ids, **kwargs):
            return super()._decode(token_ids, **kwargs).upper()

    shouting = Shouting.from_pretrained(tokenizer.name_or_path)
    assert fast_decoder(shouting)(tokenizer.encode("abc", add_special_tokens=False)) == "ABC"


def test_the_rust_stream_releases_what_the_python_path_does(tokenizer):
    """The Rust tokenizer's incremental decoder gives the same deltas as the two-decodes path, on text with split
    multi-byte characters and on random ids with special tokens; a stream that fails part-way (its prefix changed
    under it) hands over to the Python path without losing or repeating text."""
    import random

    rng = random.Random(1)
    specials = tokenizer.all_special_ids
    text_ids = tokenizer.encode(TEXT * 3, add_special_tokens=False)
    random_ids = [rng.choice(specials) if rng.random() < 0.05 else rng.randrange(len(tokenizer)) for _ in range(3000)]
    for ids in (text_ids, random_ids):
        rust, python = IncrementalDetokenizer(tokenizer), IncrementalDetokenizer(tokenizer)
        assert rust._stream is not None
        python._stream = None
        assert [rust.push(i) for i in ids] == [python.push(i) for i in ids]
        assert rust.flush() == python.flush()

    class Failing:
        def step(self, tokenizer, token_id):
            raise Exception("InvalidPrefix")

    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in text_ids[:25]]
    detok._stream = Failing()
    deltas += [detok.push(i) for i in text_ids[25:]] + [detok.flush()]
    assert detok._stream is None and "".join(deltas) == TEXT * 3


def test_stop_strings_hold_back_partial_matches():
    stops = StopStrings(("END", "\n\n"))
    out = [stops.feed(chunk) for chunk in ["Hello E", "N", "D world"]]
    assert "".join(out) == "Hello "
    assert stops.stopped
    stops = StopStrings(("END",))
    out = [stops.feed(c) for c in ["Hello E", "ND"]]
    assert "".join(out) == "Hello " and stops.stopped
    stops = StopStrings(("END",))
    out = [stops.feed(c) for c in ["Hello E", "nd"]] + [stops.flush()]
    assert "".join(out) == "Hello End" and not stops.stopped


def test_stop_strings_are_not_looked_for_inside_or_across_tags():
    stops = StopStrings(("i", "k>"))
    out = [stops.tag("<think>"), stops.feed("Hm"), stops.tag("</think>"), stops.feed("\nThe answer is 4")]
    assert "".join(out) == "<think>Hm</think>\nThe answer " and stops.stopped
    stops = StopStrings(("bc",))
    out = [stops.feed("ab"), stops.tag("<tool_call>"), stops.feed("c")] + [stops.flush()]
    assert out[0] == "a" and out[1] == "b<tool_call>"  # held back until the tag: a stop string cannot span it
    assert "".join(out) == "ab<tool_call>c" and not stops.stopped


def test_a_whole_tag_can_be_a_stop_string():
    stops = StopStrings(("</think>",))
    out = [stops.tag("<think>"), stops.feed("reasoning"), stops.tag("</think>")]
    assert "".join(out) == "<think>reasoning" and stops.stopped
