"""Evaluate the demo model through the production engine on a held-out synthetic set.

    python -m tools.eval_demo_model [--model assets/demo-model] [--n 100] [--seed 1234]

Scenes come from `glm_vision.synthetic.scenes` with a seed the training never uses (training batches are
seeded "<seed>/<batch index>"; these are "eval/<seed>/..."). Each question goes through
`Engine.generate` (greedy, feature cache and KV reuse on), half in thinking mode and half with
thinking off, English and Chinese alternating. Prints accuracy per question type, per language,
and for multi-turn conversations (image A, image B, A again, follow-ups without an image).

Two robustness sets: `paraphrase/<kind>` asks the same kind of scenes with the HELD-OUT question
templates (`templates.HELDOUT_EN/ZH`, never trained on), `--paraphrase-n` per kind; `plain/<kind>`
asks fixed user-style questions about pictures drawn by other code (`tools/eval_plain_scenes.py`),
`--plain-n` per kind. A box answer is right when `glm_vision.grounding` reads exactly one box
from it with IoU >= 0.5 against the true box.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message, split_output
from glm_vision.engine import Engine
from glm_vision.engine.loader import DEMO_MODEL_DIR
from glm_vision.images import load_image
from glm_vision.settings import Settings
from glm_vision.synthetic import checking, questions
from glm_vision.synthetic import scenes as demo_data
from tools import eval_plain_scenes

KINDS_OFFSET = {kind: i for i, kind in enumerate(questions.KINDS)}
TARGETS = {
    "color": 0.95,
    "shapes": 0.95,
    "position": 0.90,
    "count": 0.95,
    "word": 0.80,
    "box": 0.90,
    "multi-turn": 0.90,
}


def ask(engine, history: list[Message], question: str, image, session: str, thinking: bool, max_new: int = 64) -> str:
    images = [load_image(image)] if image is not None else []
    history.append(Message("user", question, images))
    result = engine.generate(
        GenerationRequest(list(history), SamplingParams.greedy(max_new), session_id=session, enable_thinking=thinking)
    )
    answer = split_output(result.text).raw_answer
    history.append(Message("assistant", answer))
    return answer


def record(tally, failures, section: str, qa: questions.QA, answer: str) -> None:
    ok = checking.check_answer(qa, answer)
    tally[section].append(ok)
    tally[f"{section}/{qa.lang}"].append(ok)
    if not ok:
        failures.append({"kind": section, "q": qa.question, "want": qa.answer or qa.target, "got": answer})


def single_image(
    engine,
    n: int,
    seed: int,
    tally,
    failures,
    kinds=questions.KINDS,
    bank_seed: int | None = None,
    heldout: bool = False,
) -> None:
    for kind in kinds:
        rng = random.Random(f"eval/{seed}/{'paraphrase/' if heldout else ''}{kind}")
        for i in range(n):
            # counting is evaluated over 1..5 objects evenly; word reading on scenes that have a word
            n_shapes = 1 + i % 5 if kind == "count" else None
            if bank_seed is not None:  # a scene of the training run's first bank (as tools/demo_bank.py draws it)
                scene = demo_data.varied_scene(random.Random(f"{bank_seed}/scene/{i * 37 + KINDS_OFFSET[kind]}"))
                if kind == "word" and scene.word is None:
                    continue
            else:
                scene = demo_data.random_scene(rng, n_shapes=n_shapes, with_word=True if kind == "word" else None)
            lang = "zh" if i % 2 else "en"
            qa = questions.ask(scene, kind, lang, rng, heldout=heldout)
            if kind in questions.NAMED_KINDS and qa.target == "-":
                continue
            answer = ask(
                engine, [], qa.question, demo_data.render(scene), f"eval-{kind}-{i}", thinking=(i // 2) % 2 == 0
            )
            record(tally, failures, f"paraphrase/{kind}" if heldout else kind, qa, answer)


def plain(engine, n: int, seed: int, tally, failures) -> None:
    """Fixed user-style questions about pictures drawn by other code (`tools/eval_plain_scenes.py`)."""
    for kind in eval_plain_scenes.KINDS:
        rng = random.Random(f"eval/{seed}/plain/{kind}")
        for i in range(n):
            picture, shapes = eval_plain_scenes.plain_scene(rng)
            qa = eval_plain_scenes.question(shapes, picture.size, kind, "zh" if i % 2 else "en", rng)
            answer = ask(engine, [], qa.question, picture, f"eval-plain-{kind}-{i}", thinking=(i // 2) % 2 == 0)
            record(tally, failures, f"plain/{kind}", qa, answer)


def multi_turn(engine, n: int, seed: int, tally, failures) -> None:
    """A, then B, then A again (re-sent), each with a question; then a follow-up about A without an image."""
    rng = random.Random(f"eval/{seed}/multi")
    kinds = ["color", "position", "count", "shapes", "word", "box"]
    for i in range(n):
        scenes = [demo_data.random_scene(rng), demo_data.random_scene(rng)]
        pictures = [demo_data.render(s) for s in scenes]
        history: list[Message] = []
        thinking = i % 2 == 0
        plan = [(0, True), (1, True), (0, True), (0, False)]
        all_ok = True
        for index, with_image in plan:
            scene = scenes[index]
            kind = rng.choice(kinds if scene.word else kinds[:-1])
            qa = questions.ask(scene, kind, "zh" if rng.random() < 0.3 else "en", rng)
            answer = ask(
                engine, history, qa.question, pictures[index] if with_image else None, f"eval-multi-{i}", thinking
            )
            ok = checking.check_answer(qa, answer)
            tally["multi-turn"].append(ok)
            all_ok &= ok
            if not ok:
                failures.append(
                    {
                        "kind": "multi-turn",
                        "turn": len(history) // 2,
                        "q": qa.question,
                        "want": qa.answer,
                        "got": answer,
                    }
                )
        tally["multi-turn/whole conversation"].append(all_ok)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL_DIR))
    p.add_argument("--n", type=int, default=100, help="questions per type (and multi-turn conversations)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--show-failures", type=int, default=10)
    p.add_argument("--kinds", default=",".join(questions.KINDS), help="single-image question kinds to ask")
    p.add_argument("--multi-turn", type=int, default=1, help="0: skip the multi-turn conversations")
    p.add_argument("--paraphrase-n", type=int, default=40, help="held-out-template questions per kind; 0: none")
    p.add_argument("--plain-n", type=int, default=24, help="questions per kind about plain pictures; 0: none")
    p.add_argument(
        "--training-bank-seed",
        type=int,
        help="ask about scenes of the training run's first bank "
        "(its --seed) instead of held-out ones: memorisation vs learning",
    )
    args = p.parse_args(argv)

    started = time.time()
    engine = Engine.load(Settings(model=args.model, device="cpu", max_context_tokens=4096))
    tally: dict[str, list[bool]] = defaultdict(list)
    failures: list[dict] = []
    try:
        single_image(engine, args.n, args.seed, tally, failures, args.kinds.split(","), args.training_bank_seed)
        if args.multi_turn:
            multi_turn(engine, args.n, args.seed, tally, failures)
        if args.paraphrase_n:
            kinds = [k for k in args.kinds.split(",") if k != "describe"]
            single_image(engine, args.paraphrase_n, args.seed, tally, failures, kinds, heldout=True)
        if args.plain_n:
            plain(engine, args.plain_n, args.seed, tally, failures)
    finally:
        engine.shutdown()

    rows = []
    print(f"{'question type':32} {'accuracy':>9} {'n':>5} {'target':>7}")
    sections = ("", "multi-turn", "paraphrase", "plain")
    order = {key: (sections.index(key.split("/")[0]) if key.split("/")[0] in sections else 0, key) for key in tally}
    for key in sorted(tally, key=order.get):
        values = tally[key]
        acc = sum(values) / len(values)
        target = TARGETS.get(key)
        mark = "" if target is None else ("ok" if acc >= target else "MISSED")
        print(f"{key:32} {acc:9.1%} {len(values):5d} {('>=' + format(target, '.0%')) if target else '':>7} {mark}")
        rows.append({"type": key, "accuracy": acc, "n": len(values), "target": target})
    for f in failures[: args.show_failures]:
        print("FAIL", json.dumps(f, ensure_ascii=False))
    print(f"evaluated in {time.time() - started:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": rows, "failures": failures}, ensure_ascii=False, indent=1))
    missed = [r for r in rows if r["target"] is not None and r["accuracy"] < r["target"]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
