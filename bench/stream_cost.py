"""What streaming N answers through the HTTP API costs the server's event loop, and what that does to the
engine's thread, on the CPU: the product's API app (`create_api_app`) under uvicorn in this process, over
a paced backend that stands in for the engine (no model).

The backend's thread plays a decode step of N rows every `--step-ms`, in the pipelined engine's order: one
token to each of the N streams (the step before's tokens booked), then `--worker-ms` of pure Python (what
the real worker spends a step launching the next step's kernels and sampling), then the rest of the step
waiting for the GPU (GIL released). Clients in another process read the N server-sent-event streams. While
the event loop writes their chunks it holds the GIL, and the backend's Python waits for it: the step's host
share grows. Reported, per step:

- the event loop's CPU time (its thread's clock): the API's cost of one token on N streams;
- the backend's host share: wall time from the step's start to the end of its own work (the puts, the
  `--worker-ms` of work, and the waits for the GIL in between), median and p90.

    python -m bench.stream_cost [--streams 64] [--tokens 300] [--step-ms 8] [--worker-ms 1.5] [--http h11]

`--http` names uvicorn's protocol (default: the server's, `glm_vision/http_protocol.py`). Run it from an older tree (`cd base && python -m bench.stream_cost`) for a before / after on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import threading
import time

from bench.api_server import LiveServer
from glm_vision.backend import BackendInfo, GenerationRequest, GenerationResult, RequestHandle, Usage
from glm_vision.server import AppState, create_api_app
from glm_vision.settings import Settings

TOKEN_TEXT = " word"


class PacedBackend:
    """The Backend contract's streaming half: every step, one token to each stream started before it."""

    info = BackendInfo(model="paced", device="cpu")
    healthy = True

    def __init__(self, streams: int, tokens: int, step_s: float, worker_s: float) -> None:
        self.streams, self.tokens, self.step_s, self.worker_s = streams, tokens, step_s, worker_s
        self.started = threading.Event()  # every stream submitted: the steps begin
        self.handles: list[RequestHandle] = []
        self.host_s: list[float] = []
        self.thread = threading.Thread(target=self._run, name="paced-backend", daemon=True)
        self.thread.start()

    def submit(self, request: GenerationRequest) -> RequestHandle:
        handle = RequestHandle(request)
        self.handles.append(handle)
        if len(self.handles) == self.streams:
            self.started.set()
        return handle

    def stats(self) -> dict:
        return {}

    def close_session(self, session_id: str) -> bool:
        return False

    def shutdown(self) -> None:
        pass

    def _run(self) -> None:
        self.started.wait()
        time.sleep(0.2)  # the streams' first events reach their consumers
        for _ in range(self.tokens):
            began = time.perf_counter()
            for handle in self.handles:
                handle._emit(TOKEN_TEXT)
            _busy(self.worker_s)
            self.host_s.append(time.perf_counter() - began)
            time.sleep(max(0.0, self.step_s - (time.perf_counter() - began)))
        usage = Usage(prompt_tokens=1, completion_tokens=self.tokens)
        for handle in self.handles:
            handle._finish(GenerationResult(TOKEN_TEXT * self.tokens, "length", usage, ()), None)


def _busy(seconds: float) -> None:
    """Python bytecode for `seconds` of this thread's CPU time (it keeps wanting the GIL, as the worker does)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        sum(range(50))


def _read_streams(url: str, streams: int, tokens: int) -> int:
    """A client process: N concurrent streamed completions read to the end; the tokens' characters read."""
    import httpx

    async def one(client: httpx.AsyncClient) -> int:
        body = {"model": "paced", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        read = 0
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                read += line.count(TOKEN_TEXT)
        return read

    async def run() -> int:
        limits = httpx.Limits(max_connections=streams)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return sum(await asyncio.gather(*(one(client) for _ in range(streams))))

    return asyncio.run(run())


def measure(streams: int, tokens: int, step_s: float, worker_s: float, **server_options) -> dict:
    backend = PacedBackend(streams, tokens, step_s, worker_s)
    state = AppState(Settings(), backend=backend)
    state.loaded.set()
    with LiveServer(create_api_app(state), **server_options) as server:
        loop_clock = time.pthread_getcpuclockid(server.thread.ident)
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            reading = pool.apply_async(_read_streams, (server.url, streams, tokens))
            backend.started.wait(60)
            loop_started = time.clock_gettime(loop_clock)
            backend.thread.join()
            loop_s = time.clock_gettime(loop_clock) - loop_started
            read = reading.get(120)
    if read != streams * tokens:
        raise RuntimeError(f"the clients read {read} tokens of {streams * tokens}")
    host = sorted(backend.host_s)
    return {
        "loop_us": 1e6 * loop_s / tokens,
        "host_ms": 1e3 * statistics.median(host),
        "host_p90_ms": 1e3 * host[int(0.9 * len(host))],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=300, help="tokens a stream (steps)")
    parser.add_argument("--step-ms", type=float, default=8.0)
    parser.add_argument("--worker-ms", type=float, default=1.5, help="the backend's own Python a step")
    parser.add_argument("--http", help="uvicorn's HTTP protocol (h11, httptools; default: the server's)")
    parser.add_argument("--loop", default="auto", help="uvicorn's event loop: auto, asyncio, uvloop")
    args = parser.parse_args(argv)
    server_options = {"loop": args.loop} | ({"http": args.http} if args.http else {})
    row = measure(args.streams, args.tokens, args.step_ms / 1000, args.worker_ms / 1000, **server_options)
    print(
        f"{args.http or 'the server'}'s HTTP / {args.loop} loop: {args.streams} streams, {args.tokens} steps of {args.step_ms:g} ms: the loop's CPU {row['loop_us']:.0f} us a "
        f"step; the backend's host share {row['host_ms']:.2f} ms a step (p90 {row['host_p90_ms']:.2f}; "
        f"its own work {args.worker_ms:g} ms)"
    )


if __name__ == "__main__":
    main()
