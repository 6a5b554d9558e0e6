"""The demo model's synthetic questions: box answers the UI's grounding parser reads as the true box,
digit-level coordinate tokens, train and held-out phrasings kept apart, answers in the question's
language about objects that are there, scenes from a few percent to most of the picture, and the
evaluation's plain pictures whose boxes are where the ink is."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from glm_vision.conversation import Message
from glm_vision.grounding import annotate_answer
from glm_vision.synthetic import checking, questions, templates
from glm_vision.synthetic import scenes as demo_data
from tools import eval_plain_scenes

CJK = re.compile("[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def varied():
    rng = random.Random("test/varied")
    return [demo_data.varied_scene(rng) for _ in range(200)]


def test_box_answers_are_read_by_the_grounding_parser_as_the_drawn_box(varied):
    rng = random.Random(1)
    for scene in varied[:60]:
        qa = questions.ask(scene, "box", rng.choice(["en", "zh"]), rng, subject=scene.shapes[0].kind)
        picture = demo_data.render(scene)
        (found,) = annotate_answer(qa.answer, [Message("user", qa.question, [picture])])
        want = demo_data.shape_box(scene, scene.shapes[0])
        assert np.allclose(found.pixels, want, atol=0.5 + max(scene.width, scene.height) / 1000)
        assert checking.check_answer(qa, qa.answer)
        x1, y1, x2, y2 = (int(v) for v in qa.target.split(","))
        shifted = qa.answer.replace(qa.target, f"{x2},{y2},{x2 + (x2 - x1)},{y2 + (y2 - y1)}")
        assert not checking.check_answer(qa, shifted)


def test_a_missing_shape_gets_a_there_is_no_answer():
    rng = random.Random(2)
    scene = demo_data.random_scene(rng, n_shapes=1)
    absent = next(k for k, _ in demo_data.SHAPES if k != scene.shapes[0].kind)
    for kind in questions.NAMED_KINDS:
        en = questions.ask(scene, kind, "en", rng, subject=absent)
        zh = questions.ask(scene, kind, "zh", rng, subject=absent)
        assert en.answer == f"There is no {absent} in the image." and zh.answer.startswith("图中没有")


def test_the_tokenizer_writes_coordinates_digit_by_digit():
    from glm_vision.synthetic.tiny import train_tokenizer

    tok = train_tokenizer(1000, questions.corpus_text(300))
    tokens = tok.encode("<|begin_of_box|>[433,767,1000,8]<|end_of_box|>").tokens
    assert tokens == ["<|begin_of_box|>", "[", *"433", ",", *"767", ",", *"1000", ",", "8", "]", "<|end_of_box|>"]


def test_held_out_phrasings_are_never_train_phrasings():
    for train, heldout in ((templates.Q_EN, templates.HELDOUT_EN), (templates.Q_ZH, templates.HELDOUT_ZH)):
        assert set(train) == set(heldout) == set(questions.KINDS)
        for kind in questions.KINDS:
            assert not set(train[kind]) & set(heldout[kind])
            assert "{c}" not in train[kind][0] and "{c}" not in heldout[kind][0]  # the missing-shape fallback
    corpus = questions.corpus_text(200)
    assert "Outline the" not in corpus and "圈出" not in corpus  # the tokenizer never saw them either


def test_answers_follow_the_question_language_and_name_only_what_is_there(varied):
    rng = random.Random(3)
    for scene in varied:
        colours = {s.color for s in scene.shapes}
        for kind in ("describe", "shapes", "color", "position", "count", "word"):
            for lang in ("en", "zh"):
                qa = questions.ask(scene, kind, lang, rng, heldout=rng.random() < 0.5)
                assert bool(CJK.search(qa.answer)) == (lang == "zh"), qa
                named = checking.mentions(qa.answer, checking.SHAPE_WORDS[lang])
                assert {checking.SHAPE_WORDS["en"][i] for i in named} <= {s.kind for s in scene.shapes} | {qa.subject}
                said = {checking.COLOR_WORDS["en"][i] for i in checking.mentions(qa.answer, checking.COLOR_WORDS[lang])}
                assert said <= colours


def test_varied_scenes_range_from_small_objects_to_most_of_the_picture(varied):
    radii = [s.scale for scene in varied for s in scene.shapes]
    assert min(radii) < 0.06 and max(radii) > 0.35
    assert any(len(scene.shapes) == 1 and scene.shapes[0].scale > 0.3 for scene in varied)
    assert any(len(scene.shapes) >= 4 and max(s.scale for s in scene.shapes) < 0.09 for scene in varied)
    big_words = [scene.word.rel_size for scene in varied if scene.word is not None and scene.word.rel_size > 0.17]
    assert len(big_words) > 10  # larger than any word of the first version


def test_plain_pictures_have_their_box_where_the_ink_is():
    rng = random.Random(4)
    for _ in range(12):
        picture, shapes = eval_plain_scenes.plain_scene(rng)
        if len(shapes) != 1:
            continue
        qa = eval_plain_scenes.question(shapes, picture.size, "box", "en", rng)
        pixels = np.asarray(picture).astype(int)
        ink = np.abs(pixels - pixels[0, 0]).sum(2) > 60
        ys, xs = np.nonzero(ink)
        w, h = picture.size
        drawn = (xs.min() * 1000 / w, ys.min() * 1000 / h, (xs.max() + 1) * 1000 / w, (ys.max() + 1) * 1000 / h)
        assert checking.iou(drawn, tuple(int(v) for v in qa.target.split(","))) > 0.9
        answer = f"<|begin_of_box|>[{qa.target}]<|end_of_box|>"
        assert checking.check_answer(qa, answer)
