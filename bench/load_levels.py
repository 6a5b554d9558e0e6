"""One load level: N concurrent streams, each its own screenshot and question, through the official
`openai` async client against a server (`run_level` in this process, or `ClientProcess`: in processes of
their own) or straight on an in-process engine (`run_level_direct`), summed up the same way: TTFT p50/p95,
per-stream and aggregate tokens/s, 429s and errors."""

from __future__ import annotations

import asyncio
import base64
import io
import multiprocessing
import os
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

QUESTION = "Describe this screenshot: every window, button and label you can see."


@dataclass
class StreamResult:
    ok: bool
    status: int | None = None
    ttft_s: float | None = None
    tokens: int = 0
    first_at: float | None = None  # perf_counter of the first token
    sent_at: float | None = None  # perf_counter when the client sent the request
    end_at: float | None = None  # perf_counter of the end of the stream
    error: str = ""

    @property
    def decode_s(self) -> float:
        return self.end_at - self.first_at if self.first_at is not None and self.end_at is not None else 0.0


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def one_stream(client, url: str, tokens: int, index: int) -> StreamResult:
    import openai

    started = time.perf_counter()
    first = None
    try:
        stream = await client.chat.completions.create(
            model="glm-vision",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": f"{QUESTION} (client {index})"},
                    ],
                }
            ],
            max_tokens=tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"min_tokens": tokens},
        )
        completion = 0
        async for chunk in stream:
            if chunk.choices:
                delta = chunk.choices[0].delta
                if first is None and (delta.content or getattr(delta, "reasoning_content", None)):
                    first = time.perf_counter()
            if chunk.usage is not None:
                completion = chunk.usage.completion_tokens
        end = time.perf_counter()
        return StreamResult(
            True, 200, (first or end) - started, completion, first_at=first or end, end_at=end, sent_at=started
        )
    except openai.APIStatusError as exc:
        return StreamResult(False, exc.status_code, error=str(exc)[:200])
    except Exception as exc:  # noqa: BLE001 - counted as an error
        return StreamResult(False, None, error=f"{type(exc).__name__}: {exc}"[:200])


async def run_streams(
    base_url: str, api_key: str, indices: range, tokens: int, urls: list[str], start_at: float
) -> tuple[list[StreamResult], float]:
    """The streams of clients `indices`, sent from perf_counter time `start_at` on; their results, and when the
    last one ended."""
    import httpx
    import openai

    limits = httpx.Limits(max_connections=len(indices) + 8, max_keepalive_connections=len(indices) + 8)
    async with openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        timeout=600,
        http_client=httpx.AsyncClient(limits=limits, timeout=600),
    ) as client:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        results = await asyncio.gather(*(one_stream(client, urls[i % len(urls)], tokens, i) for i in indices))
        return list(results), time.perf_counter()


async def run_level(base_url: str, api_key: str, streams: int, tokens: int, urls: list[str]) -> dict:
    started = time.perf_counter()
    results, ended = await run_streams(base_url, api_key, range(streams), tokens, urls, started)
    return dict(summarize(results, streams, tokens, ended - started), client_pid=os.getpid())


async def warm_up(base_url: str, api_key: str) -> None:
    """One short text-only stream, not measured: a fresh process's imports and the openai client's
    first-use work (~1 s) happen here instead of in the first level's first tokens."""
    import openai

    async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600) as client:
        stream = await client.chat.completions.create(
            model="glm-vision", messages=[{"role": "user", "content": "Hello"}], max_tokens=2, stream=True
        )
        async for _ in stream:
            pass


def _warm_up_blocking(base_url: str, api_key: str) -> int:
    asyncio.run(warm_up(base_url, api_key))
    return os.getpid()


def _run_streams_blocking(*args) -> tuple[list[StreamResult], float]:
    return asyncio.run(run_streams(*args))


# Time for every client process to have its level's arguments and its client ready before the first send.
START_DELAY_S = 0.5


class ClientProcess:
    """The clients of every level in processes of their own (a context manager), as users' programs are: in
    the server's process, the openai client's HTTP and JSON work for each token (~0.2 ms on a 2-core CPU)
    would take the GIL from the server's worker and slow the steps it is meant to measure. With `count`
    processes, client i runs in process i % count and all start sending at the same moment: one process
    parsing 64 streams' chunks (~7,500 a second) can itself fall behind the server."""

    def __init__(self, count: int = 1) -> None:
        context = multiprocessing.get_context("spawn")
        self.pools = [ProcessPoolExecutor(max_workers=1, mp_context=context) for _ in range(count)]
        self.pids: list[int] = []

    def run_level(self, base_url: str, api_key: str, streams: int, tokens: int, urls: list[str]) -> dict:
        if not self.pids:
            self.pids = [f.result() for f in [p.submit(_warm_up_blocking, base_url, api_key) for p in self.pools]]
        count = len(self.pools)
        start_at = time.perf_counter() + START_DELAY_S
        futures = [
            pool.submit(_run_streams_blocking, base_url, api_key, range(k, streams, count), tokens, urls, start_at)
            for k, pool in enumerate(self.pools)
        ]
        parts = [future.result() for future in futures]
        results: list[StreamResult] = [None] * streams
        for k, (part, _) in enumerate(parts):
            results[k::count] = part
        ended = max(end for _, end in parts)
        return dict(
            summarize(results, streams, tokens, ended - start_at), client_pid=self.pids[0], client_pids=self.pids
        )

    def __enter__(self) -> ClientProcess:
        return self

    def __exit__(self, *exc) -> None:
        for pool in self.pools:
            pool.shutdown(cancel_futures=True)


def summarize(results: list[StreamResult], streams: int, tokens: int, wall: float) -> dict:
    done = [r for r in results if r.ok]
    ttfts = sorted(r.ttft_s for r in done)
    per_stream = [(r.tokens - 1) / r.decode_s for r in done if r.decode_s > 0 and r.tokens > 1]
    return {
        "streams": streams,
        "completed": len(done),
        "rejected_429": sum(1 for r in results if r.status == 429),
        "errors_5xx": sum(1 for r in results if r.status is not None and r.status >= 500),
        "other_errors": sum(
            1 for r in results if not r.ok and (r.status is None or r.status < 500) and r.status != 429
        ),
        "tokens_short": sum(1 for r in done if r.tokens != tokens),
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p95_s": ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))] if ttfts else None,
        "per_stream_tok_s_median": statistics.median(per_stream) if per_stream else None,
        "per_stream_tok_s_min": min(per_stream) if per_stream else None,
        "aggregate_tok_s": sum(r.tokens for r in done) / wall if wall else None,
        # tokens after each stream's first, over the span from the first first token to the last token:
        # the decode throughput without the prompts' prefill before it
        "aggregate_decode_tok_s": _decode_throughput(done),
        "wall_s": wall,
        # each client's (sent, first token, end) on perf_counter's clock, by client index: bench.request_timeline
        "client_stamps": [[r.sent_at, r.first_at, r.end_at] for r in results],
        "sample_errors": list({r.error for r in results if r.error})[:3],
    }


def _decode_throughput(done: list[StreamResult]) -> float | None:
    timed = [r for r in done if r.first_at is not None and r.end_at is not None]
    if not timed:
        return None
    span = max(r.end_at for r in timed) - min(r.first_at for r in timed)
    return sum(r.tokens - 1 for r in timed) / span if span > 0 else None


def run_level_direct(engine, streams: int, tokens: int, images) -> dict:
    """The same measurement straight on the engine (no HTTP): for machines without the web stack."""
    from glm_vision.backend import EngineError, GenerationRequest, QueueFullError, SamplingParams, TextDelta
    from glm_vision.conversation import Message

    results: list[StreamResult] = [None] * streams

    def client(index: int) -> None:
        started = time.perf_counter()
        request = GenerationRequest(
            [Message("user", f"{QUESTION} (client {index})", [images[index % len(images)]])],
            SamplingParams(max_new_tokens=tokens, min_new_tokens=tokens),
        )
        try:
            handle = engine.submit(request)
            first = None
            for item in handle:
                if isinstance(item, TextDelta) and first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            results[index] = StreamResult(
                True,
                200,
                (first or end) - started,
                handle.result.usage.completion_tokens,
                first_at=first or end,
                end_at=end,
                sent_at=started,
            )
        except QueueFullError as exc:
            results[index] = StreamResult(False, 429, error=exc.message)
        except EngineError as exc:
            results[index] = StreamResult(False, exc.status, error=exc.message)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    return summarize(
        [r or StreamResult(False, None, error="no result") for r in results],
        streams,
        tokens,
        time.perf_counter() - started,
    )
