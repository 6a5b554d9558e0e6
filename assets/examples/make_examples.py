"""Draws the web UI's example gallery from `glm_vision.synthetic.scenes` scenes the bundled demo model answers.

    python -m assets.examples.make_examples [--model assets/demo-model]

For each question kind (colour, count, position, shapes, word, box) it walks through seeded scenes
("gallery/<kind>/<i>", 448x336, drawn exactly as the training data), asks the kind's first English
and first Chinese question form (`templates.Q_EN` / `Q_ZH`) through the production engine, greedy,
with thinking on and off, and keeps the first scene whose four answers all pass
`checking.check_answer`. Kinds with no such scene among the first `--tries` are left out (and
printed). Deterministic for a given checkpoint: rerun it whenever the demo model is retrained.
`tests/test_examples.py` asks every entry again and checks the answers.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from glm_vision.synthetic import checking, questions, templates
from glm_vision.synthetic import scenes as demo_data

HERE = Path(__file__).resolve().parent

SIZE = (448, 336)
KINDS = ["color", "count", "position", "shapes", "word", "box"]
FILES = {
    "color": "shapes.png",
    "count": "count.png",
    "position": "position.png",
    "shapes": "which.png",
    "word": "word.png",
    "box": "box.png",
}


def scene_for(kind: str, i: int) -> demo_data.Scene:
    rng = random.Random(f"gallery/{kind}/{i}")
    n = rng.randint(1, 3) if kind != "count" else rng.randint(1, 5)
    return demo_data.random_scene(rng, n_shapes=n, with_word=kind == "word", size=SIZE)


def gallery_questions(scene: demo_data.Scene, kind: str) -> tuple[questions.QA, questions.QA]:
    """The kind's first English and Chinese question form, about the first shape in reading order."""
    subject = scene.ordered()[0].kind
    out = []
    for lang, forms in (("en", templates.Q_EN), ("zh", templates.Q_ZH)):
        named = subject if lang == "en" else demo_data.SHAPE_ZH[subject]
        question = forms[kind][0].format(s=named, c="")
        answer, target = questions.answer_for(scene, kind, lang, subject if kind in questions.NAMED_KINDS else "")
        out.append(
            questions.QA(
                kind=kind,
                lang=lang,
                question=question,
                answer=answer,
                target=target,
                subject=subject if kind in questions.NAMED_KINDS else "",
            )
        )
    return out[0], out[1]


def answers_ok(engine, image, qas) -> bool:
    from glm_vision.backend import GenerationRequest, SamplingParams
    from glm_vision.conversation import Message, split_output
    from glm_vision.images import load_image

    picture = load_image(image)
    for qa in qas:
        for thinking in (False, True):
            request = GenerationRequest(
                [Message("user", qa.question, [picture])],
                SamplingParams.greedy(64),
                session_id="gallery",
                enable_thinking=thinking,
            )
            if not checking.check_answer(qa, split_output(engine.generate(request).text).raw_answer):
                return False
    return True


def main(argv=None) -> None:
    from glm_vision.engine import Engine
    from glm_vision.engine.loader import DEMO_MODEL_DIR
    from glm_vision.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL_DIR))
    p.add_argument("--tries", type=int, default=80)
    args = p.parse_args(argv)
    engine = Engine.load(Settings(model=args.model, device="cpu", max_context_tokens=4096))
    items = []
    try:
        for kind in KINDS:
            for i in range(args.tries):
                scene = scene_for(kind, i)
                en, zh = gallery_questions(scene, kind)
                image = demo_data.render(scene)
                if answers_ok(engine, image, (en, zh)):
                    image.save(HERE / FILES[kind])
                    items.append(
                        {
                            "image": FILES[kind],
                            "question": en.question,
                            "question_zh": zh.question,
                            "kind": kind,
                            "scene": f"gallery/{kind}/{i}",
                        }
                    )
                    print(f"{kind}: scene {i}: {en.question} -> {en.answer}")
                    break
            else:
                print(f"{kind}: no scene among the first {args.tries} is answered right in all four settings; left out")
    finally:
        engine.shutdown()
    (HERE / "examples.json").write_text(json.dumps(items, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
