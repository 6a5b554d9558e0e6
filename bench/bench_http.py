"""Time to first token through the OpenAI-compatible HTTP API and on the engine directly, in one process.

    python -m bench.bench_http --tiny --repeats 1                                     # CPU smoke run
    python -m bench.bench_http --config bench/glm-4.6v-flash-config.json --repeats 10  # GPU, full size, random bf16

The API (/health and /v1 only: `create_api_app`, which imports no Gradio) runs under uvicorn on a free
loopback port, in a thread, over an in-process Engine on the model bench_engine builds. Each repeat
sends, with the official `openai` client and stream=True, bench_engine's request (its 1920x1080
screenshot as a PNG data URL + ~100 text tokens) about a picture never seen (a fresh seed: "cold"),
then the conversation again as a stateless client resends it (the same PNG bytes, the first answer, a
new question: "follow-up"). The same two requests, converted by the API's own message conversion
outside the clock, then go to the engine directly (`Engine.submit`) under another cache scope and
session, so that its cold request encodes the picture again.

TTFT is wall time from just before the request to its first streamed event: on HTTP the first SSE
chunk (the server sends its first chunk, the role delta, only once the engine has written the first
text), on the engine the first TextDelta. Greedy decoding with thinking off, so both paths write the
same tokens. "HTTP first text" is the first chunk carrying content or reasoning_content. The HTTP
cold request includes decoding its PNG, which the engine path is given decoded: the breakdown table
times that and the API's other per-request steps alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.api_server import LiveServer
from bench.timing import timed
from bench.workload import QUESTION, full_size_model, screenshot, tiny_model
from glm_vision import images
from glm_vision.api.messages import convert_messages, decode_data_url
from glm_vision.api.schemas import ChatCompletionRequest, ChatMessage
from glm_vision.backend import GenerationRequest, GenerationResult, SamplingParams, TextDelta
from glm_vision.engine import Engine
from glm_vision.server import AppState, create_api_app
from glm_vision.settings import Settings

FOLLOW_UP = "What does the largest button say?"
API_KEY = "bench"  # any key: the server has none; it names the HTTP requests' cache scope
GREEDY_EXTENSIONS = {"top_k": 0, "repetition_penalty": 1.0, "chat_template_kwargs": {"enable_thinking": False}}


# ---------------------------------------------------------------------------- the request
def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    screenshot(seed).save(buffer, format="PNG")
    return buffer.getvalue()


def chat_messages(png: bytes, answer: str | None = None) -> list[dict]:
    """The issue's question about the picture; with `answer`, the follow-up a stateless client sends."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    first = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}],
    }
    if answer is None:
        return [first]
    return [first, {"role": "assistant", "content": answer}, {"role": "user", "content": FOLLOW_UP}]


# ---------------------------------------------------------------------------- one request each way
def http_request(client, model: str, messages: list[dict], max_tokens: int) -> dict:
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
        extra_body=GREEDY_EXTENSIONS,
    )
    first_event = first_text = None
    answer, usage = [], None
    for chunk in stream:
        now = time.perf_counter() - started
        first_event = now if first_event is None else first_event
        for choice in chunk.choices:
            text = (choice.delta.content or "") + (getattr(choice.delta, "reasoning_content", None) or "")
            if text and first_text is None:
                first_text = now
            answer.append(choice.delta.content or "")
        usage = chunk.usage or usage
    return {
        "ttft_s": first_event,
        "first_text_s": first_text,
        "answer": "".join(answer),
        "cached_tokens": usage.prompt_tokens_details.cached_tokens,
        "prompt_tokens": usage.prompt_tokens,
    }


def engine_request(engine: Engine, settings: Settings, messages: list[dict], session: str, max_tokens: int) -> dict:
    converted, _ = asyncio.run(convert_messages([ChatMessage.model_validate(m) for m in messages], settings))
    request = GenerationRequest(
        converted, SamplingParams.greedy(max_tokens), session_id=session, cache_scope=session, enable_thinking=False
    )
    started = time.perf_counter()
    first_event, result = None, None
    for item in engine.submit(request):
        if isinstance(item, TextDelta) and item.text and first_event is None:
            first_event = time.perf_counter() - started
        elif isinstance(item, GenerationResult):
            result = item
    usage = result.usage
    return {
        "ttft_s": first_event,
        "usage_ttft_s": usage.ttft_s,
        "answer": result.text,
        "cached_tokens": usage.cached_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "images_encoded": usage.images_encoded,
    }


def one_repeat(client, engine: Engine, settings: Settings, seed: int, answer_tokens: int) -> dict:
    """Cold and follow-up through HTTP, then the same two on the engine; and whether the follow-up's
    picture came from the decoded-upload cache (its PNG bytes were seen by the cold request)."""
    png = png_bytes(seed)
    model = engine.info.model
    cold = http_request(client, model, chat_messages(png), answer_tokens)
    hits = images.DECODED.hits
    follow_messages = chat_messages(png, cold["answer"])
    follow = http_request(client, model, follow_messages, answer_tokens)
    follow["upload_cache_hits"] = images.DECODED.hits - hits
    session = f"bench-engine-{seed}"
    engine_cold = engine_request(engine, settings, chat_messages(png), session, answer_tokens)
    engine_follow = engine_request(engine, settings, follow_messages, session, answer_tokens)
    engine.close_session(session)
    return {"http cold": cold, "http follow-up": follow, "engine cold": engine_cold, "engine follow-up": engine_follow}


# ---------------------------------------------------------------------------- what the API adds, step by step
def breakdown(settings: Settings, seed: int) -> dict:
    """Milliseconds of the API's per-request CPU steps for one follow-up, each alone (median of 20);
    the request body is about 4/3 of the PNG's size."""
    png = png_bytes(seed)
    messages = chat_messages(png, "It shows a desktop with several windows and buttons.")
    url = messages[0]["content"][0]["image_url"]["url"]
    body = json.dumps({"model": "m", "messages": messages, "stream": True, **GREEDY_EXTENSIONS})
    images.decode_image_bytes(png)
    steps = {
        "JSON-encode the request (client)": lambda: json.dumps({"messages": messages}),
        "validate the body (pydantic)": lambda: ChatCompletionRequest.model_validate_json(body),
        "base64-decode the data URL": lambda: decode_data_url(url, "p", settings.max_upload_bytes),
        "upload cache hit (sha256 of the PNG + lookup)": lambda: images.decode_image_bytes(png),
        # a never-seen upload: what the cold request pays and a cache hit skips
        "PNG decode + pixel hash (cache miss)": lambda: images._decode_image_bytes(png, max_decoded_pixels=64_000_000),
    }
    return {name: timed(fn, "cpu", repeat=20) * 1000 for name, fn in steps.items()}


# ---------------------------------------------------------------------------- report
def spread(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    if len(ms) == 1:
        return f"{ms[0]:.1f}"
    return f"{statistics.median(ms):.1f} ({min(ms):.1f}-{max(ms):.1f})"


def rows(repeats: list[dict]) -> dict[str, dict]:
    """Per request kind: HTTP TTFT, its first text, the engine's, the paired difference, cached tokens."""
    out = {}
    for kind in ("cold", "follow-up"):
        http = [r[f"http {kind}"] for r in repeats]
        eng = [r[f"engine {kind}"] for r in repeats]
        out[kind] = {
            "http_ttft_s": [h["ttft_s"] for h in http],
            "http_first_text_s": [h["first_text_s"] for h in http if h["first_text_s"] is not None],
            "engine_ttft_s": [e["ttft_s"] for e in eng],
            "engine_usage_ttft_s": [e["usage_ttft_s"] for e in eng],
            "difference_s": [h["ttft_s"] - e["ttft_s"] for h, e in zip(http, eng, strict=True)],
            "http_cached_tokens": [h["cached_tokens"] for h in http],
            "engine_cached_tokens": [e["cached_tokens"] for e in eng],
            "http_prompt_tokens": http[0]["prompt_tokens"],
            "engine_prompt_tokens": eng[0]["prompt_tokens"],
        }
    out["follow-up"]["upload_cache_hits"] = [r["http follow-up"]["upload_cache_hits"] for r in repeats]
    return out


TIMES = ("http_ttft_s", "http_first_text_s", "engine_ttft_s", "difference_s", "engine_usage_ttft_s")


def table(summary: dict[str, dict]) -> str:
    head = "HTTP TTFT | HTTP first text | engine TTFT | HTTP - engine | engine usage.ttft_s"
    lines = [
        f"| request | {head} | prompt tokens HTTP / engine | cached tokens HTTP / engine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in summary.items():
        cells = [spread(row[key]) if row[key] else "-" for key in TIMES]
        prompt = f"{row['http_prompt_tokens']} / {row['engine_prompt_tokens']}"
        cached = (
            f"{statistics.median(row['http_cached_tokens']):.0f} / {statistics.median(row['engine_cached_tokens']):.0f}"
        )
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {prompt} | {cached} |")
    return "\n".join(lines)


def breakdown_table(steps: dict[str, float]) -> str:
    lines = ["| API step, alone | ms |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in steps.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def build_engine(args) -> tuple[Engine, Settings]:
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    loaded = tiny_model(Path(tempfile.mkdtemp())) if args.tiny else full_size_model(args.config, device)
    torch.set_grad_enabled(False)
    settings = Settings(
        model="(in memory)",
        device=device,
        max_context_tokens=args.max_context,
        max_batch=args.max_batch,
        decode_attention=args.decode_attention,
    )
    engine = Engine(settings, loaded)
    engine.warmup()
    return engine, settings


def measure(engine: Engine, settings: Settings, repeats: int, answer_tokens: int) -> list[dict]:
    from openai import OpenAI

    with LiveServer(create_api_app(AppState(settings, backend=engine))) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
        one_repeat(client, engine, settings, 10_000, answer_tokens)  # warm-up: connection, first-use paths
        return [one_repeat(client, engine, settings, seed, answer_tokens) for seed in range(1, repeats + 1)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny checkpoint on the CPU (a smoke run)")
    parser.add_argument("--config", type=Path, help="full-size config JSON (GPU)")
    parser.add_argument("--repeats", type=int, default=10, help="measured repeats after one warm-up repeat")
    parser.add_argument("--answer-tokens", type=int, default=32, help="max_tokens of each answer")
    parser.add_argument("--max-context", type=int, default=16384)
    parser.add_argument("--max-batch", type=int, default=1, help="the engine's (1: single-stream, as bench_engine)")
    parser.add_argument("--decode-attention", default="auto", choices=["auto", "compiled", "triton"])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if not args.tiny and args.config is None:
        parser.error("give --config (GPU, full size) or --tiny (CPU)")
    engine, settings = build_engine(args)
    try:
        repeats = measure(engine, settings, args.repeats, args.answer_tokens)
    finally:
        engine.shutdown()
    device = torch.cuda.get_device_name() if settings.device == "cuda" else "cpu"
    results = {
        "device": device,
        "repeats": args.repeats,
        "rows": rows(repeats),
        "breakdown_ms": breakdown(settings, 20_000),
    }
    print(
        f"device: {device}; torch {torch.__version__}; {args.repeats} repeats after one warm-up; ms, median (min-max)"
    )
    print("TTFT: to the first streamed event (HTTP: first SSE chunk; engine: first TextDelta); greedy, thinking off")
    print()
    print(table(results["rows"]))
    print()
    hits = sum(results["rows"]["follow-up"]["upload_cache_hits"])
    print(f"follow-ups whose picture came from the decoded-upload cache: {hits} of {args.repeats}")
    print()
    print(breakdown_table(results["breakdown_ms"]))
    if args.json:
        args.json.write_text(json.dumps(results | {"answers": [r["http cold"]["answer"] for r in repeats]}, indent=2))
    return results


if __name__ == "__main__":
    main()
