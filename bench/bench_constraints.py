"""Decode throughput with and without a JSON-schema constraint, at batch 1 and 32, in one run.

    python -m bench.bench_constraints --tiny                        # CPU, the tiny checkpoint (ratios only)
    python -m bench.bench_constraints --config bench/glm-4.6v-flash-config.json   # GPU, full size, random bf16

Every request decodes exactly --tokens tokens (min_tokens = max_tokens, and the schema asks for at least
500 table rows, which no run finishes), GLM's default sampling (top_k 2, top_p 0.6, temperature 0.8,
repetition penalty 1.1). Decode tok/s = tokens after the first / decode time, summed over the batch;
free and constrained runs alternate, the median of --repeats is reported. Target (issue 13): the
constraint costs at most 5 % of decode throughput at batch 1 and at batch 32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from glm_vision.backend import GenerationRequest, OutputConstraint, SamplingParams
from glm_vision.conversation import Message
from glm_vision.settings import Settings

# A table pulled out of a document: rows of labelled numbers (at least 500: the run never completes it).
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "rows": {
            "type": "array",
            "minItems": 500,
            "items": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "maxLength": 16},
                    "value": {"type": "number", "minimum": 0, "maximum": 1000},
                    "unit": {"enum": ["kg", "m", "s", "%"]},
                },
                "required": ["label", "value", "unit"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["title", "rows"],
    "additionalProperties": False,
}
QUESTION = "Extract the table in this document as JSON: a title and every row with its label, value and unit."


def requests(batch: int, tokens: int, constrained: bool, thinking: bool) -> list[GenerationRequest]:
    constraint = OutputConstraint("json_schema", json.dumps(SCHEMA)) if constrained else None
    return [
        GenerationRequest(
            [Message("user", QUESTION)],
            SamplingParams(seed=i, max_new_tokens=tokens, min_new_tokens=tokens),
            constraint=constraint,
            enable_thinking=thinking,
        )
        for i in range(batch)
    ]


def decode_rate(engine, batch: int, tokens: int, constrained: bool) -> float:
    """Aggregate decode tok/s of `batch` requests decoded together."""
    handles = [engine.submit(r) for r in requests(batch, tokens, constrained, thinking=False)]
    results = [h.wait() for h in handles]
    assert all(r.usage.completion_tokens == tokens for r in results), [r.finish_reason for r in results]
    if constrained:  # the schema's object opens every answer (a short warm-up run may end inside its first key)
        assert all('{"title":"'.startswith(r.text[:10]) or r.text.startswith('{"title":"') for r in results), [
            r.text[:20] for r in results
        ]
    steps = sum(r.usage.completion_tokens - 1 for r in results)
    return steps / max(r.usage.decode_s for r in results)


def load_engine(args, loaded=None):
    """The engine for `args` (tiny on the CPU, or full size from args.config), on `loaded` when given."""
    from glm_vision.engine import Engine

    matmul = getattr(args, "decode_matmul", "auto")
    pdl = getattr(args, "decode_pdl", "auto")
    if args.tiny:
        from glm_vision.synthetic.tiny import build_tiny_checkpoint

        model = str(build_tiny_checkpoint(tempfile.mkdtemp(prefix="glmv-tiny-"), seed=0))
        settings = Settings(
            model=model,
            device="cpu",
            max_context_tokens=getattr(args, "max_context", 2048),
            max_batch=max(args.batch),
            decode_matmul=matmul,
            decode_pdl=pdl,
        )
        engine = Engine.load(settings)
    else:
        from pathlib import Path

        from bench.workload import full_size_model  # full-size random bf16 weights from the config

        settings = Settings(
            model="random",
            device="cuda",
            max_context_tokens=getattr(args, "max_context", 4096),
            max_batch=max(args.batch),
            decode_matmul=matmul,
            decode_pdl=pdl,
        )
        engine = Engine(settings, loaded or full_size_model(Path(args.config), "cuda"))
    engine.warmup()
    return engine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tiny", action="store_true", help="the tiny random checkpoint on the CPU")
    source.add_argument("--config", help="a model config.json: full-size random bf16 weights on the GPU")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    engine = load_engine(args)
    started = time.perf_counter()
    for constrained in (False, True):  # warm: compile the grammar, build the masks, first shapes
        decode_rate(engine, max(args.batch), 8, constrained)
    print("| batch | free tok/s | JSON schema tok/s | ratio | cost |\n|---|---|---|---|---|")
    for batch in args.batch:
        free, guided = [], []
        for _ in range(args.repeats):
            free.append(decode_rate(engine, batch, args.tokens, False))
            guided.append(decode_rate(engine, batch, args.tokens, True))
        f, g = statistics.median(free), statistics.median(guided)
        print(f"| {batch} | {f:,.1f} | {g:,.1f} | {g / f:.3f} | {100 * (1 - g / f):.1f} % |", flush=True)
    print(
        f"({engine.loaded.device}, {args.tokens} tokens per request, median of {args.repeats}; "
        f"{time.perf_counter() - started:.0f} s)"
    )
    engine.shutdown()


if __name__ == "__main__":
    main()
