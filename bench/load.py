"""Load tool: N concurrent streaming clients through the official `openai` async client.

Each client sends its own 1920x1080 screenshot with a question and asks for a fixed number of
tokens; the tool prints time to first token p50/p95, per-stream and aggregate tokens/s, 429s and
errors for each concurrency level.

    python -m bench.load --url http://127.0.0.1:8080/v1 --streams 1,8,32        # a running server
    python -m bench.load --tiny --streams 16                                     # in process, CPU
    python -m bench.load --config bench/glm-4.6v-flash-config.json --streams 1,8,32,64 --queue-size 32   # in process, GPU

Steady state (`--steady 1,8,32`, in process only): N text-only requests of about `--steady-prompt`
tokens decoding together; tokens are counted only in the window after the last prompt's first token
and before the first stream ends, so the decode step is measured apart from prefill and scheduling.
`--decode-attention compiled,triton` and `--policy prefill-first,decode-first` measure every
combination in one process (one model; an engine per decode attention; the policy switched between
levels).

In process through HTTP, the clients run in a process of their own (`--clients own-process`), as users'
programs do; `--clients server-process` keeps them in the server's process, where their Python shares
the GIL with the server's worker; `--clients engine` (or `--direct`) skips HTTP: threads call the engine,
as the load levels up to the eighteenth session did. `--client-processes N` spreads the own-process clients over
N processes that start together (one process parsing 64 streams' chunks can fall behind the server).

Every level has a cache scope (API key) of its own, so no level finds pictures an earlier one encoded, and
prints its requests' timeline (bench/request_timeline.py): when they reached the API's handler, the engine,
their first token and their end, from the level's first send. `--switch-intervals 5,1` runs the levels again
under each GIL switch interval (ms); without it, under the server's (1 ms on a GPU). The heap is frozen out of the
garbage collector's walks once the engine is warm, as the server does (glm_vision/heap.py); `--gc-freeze on,off`
runs the levels again with it unfrozen. Each level counts the collections during it and their pauses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench.load_levels import ClientProcess, data_url, run_level, run_level_direct
from bench.steady import measure_steady

if TYPE_CHECKING:
    from bench.api_server import LiveServer


def serve_in_process(engine, settings) -> LiveServer:
    """The product's API (engine + FastAPI + uvicorn, without the Gradio UI, which the GPU machine has not
    installed) on a free loopback port, in this process."""
    from bench.api_server import LiveServer  # here: --direct runs where uvicorn is not installed
    from glm_vision.server import AppState, create_api_app

    return LiveServer(create_api_app(AppState(settings, backend=engine)))


ENGINE, OWN_PROCESS, SERVER_PROCESS = "engine", "own-process", "server-process"


def fmt(value, unit="", digits=1):
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server's /v1 base URL")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--tiny", action="store_true", help="in process: the tiny checkpoint on the CPU")
    parser.add_argument("--config", type=Path, help="in process: full-size random model from this config (GPU)")
    parser.add_argument("--streams", default="1,8", help="comma-separated concurrency levels ('' for none)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--levels", help="comma-separated STREAMSxTOKENS levels (instead of --streams/--tokens)")
    parser.add_argument("--queue-size", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=0)
    parser.add_argument("--max-context", type=int, default=8192)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--direct", action="store_true", help="in process, call the engine without HTTP")
    parser.add_argument(
        "--clients",
        default="own-process",
        help="in process: where the clients run, comma-separated (every level in each, on one engine): "
        "own-process or server-process (the openai client through HTTP) or engine (threads calling the engine "
        "straight, as --direct)",
    )
    parser.add_argument(
        "--decode-attention",
        default="auto",
        help="in process: the engine's, or a comma-separated list (an engine each)",
    )
    parser.add_argument(
        "--decode-matmul", default="auto", choices=["auto", "cublas", "triton"], help="in process: every engine's"
    )
    parser.add_argument(
        "--decode-pdl", default="auto", choices=["auto", "on", "off"], help="in process: every engine's"
    )
    parser.add_argument(
        "--prefill-chunk-tokens", type=int, default=0, help="in process: prompt tokens a step (default: the engine's)"
    )
    parser.add_argument(
        "--policy",
        default="",
        help="in process: scheduler policies to measure in turn, comma-separated "
        "(prefill-first, decode-first; default: the engine's own)",
    )
    parser.add_argument(
        "--policy-levels", default="", help="levels (STREAMSxTOKENS) measured under the extra policies; default all"
    )
    parser.add_argument(
        "--steady", default="", help="in process: steady-state decode levels, comma-separated stream counts"
    )
    parser.add_argument(
        "--host-profile",
        default="",
        help="in process: one more run of this level (STREAMSxTOKENS) under cProfile, clients as the first --clients",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="in process: how many processes the own-process clients are spread over (client i in process i %% N)",
    )
    parser.add_argument(
        "--gc-freeze",
        default="on",
        help="in process: the heap frozen out of the garbage collector's walks after the warm-up, as the server "
        "does (on), or not (off); comma-separated to run every place's levels under each in turn",
    )
    parser.add_argument(
        "--switch-intervals",
        default="",
        help="in process: the interpreter's GIL switch intervals (ms, comma-separated) to run every place's levels "
        "under in turn (sys.setswitchinterval; default: the server's, 1 ms on a GPU, 5 on the CPU)",
    )
    parser.add_argument("--steady-prompt", type=int, default=4000, help="prompt tokens of each steady-state stream")
    parser.add_argument("--steady-tokens", type=int, default=384, help="tokens each steady-state stream writes")
    parser.add_argument(
        "--steady-attention",
        default="",
        help="decode attentions for the steady state, comma-separated "
        "(default: those of --decode-attention); an engine of its own for one not in --decode-attention",
    )
    args = parser.parse_args()

    if args.levels:
        levels = [tuple(int(x) for x in level.split("x")) for level in args.levels.split(",")]
    else:
        levels = [(int(n), args.tokens) for n in args.streams.split(",") if n]
    from bench.workload import screenshot

    if args.url:
        urls = [data_url(screenshot(seed)) for seed in range(min(max(n for n, _ in levels), 64))]
        rows = [asyncio.run(run_level(args.url, args.api_key, n, t, urls)) for n, t in levels]
        report(rows, [])
    else:
        rows, steady = in_process(args, levels)
        report(rows, steady)
        if args.json:
            args.json.write_text(json.dumps({"levels": rows, "steady": steady}, indent=2))


def in_process(args, levels) -> tuple[list[dict], list[dict]]:
    """Every (decode attention, policy, clients' place) combination on one in-process model."""
    import torch

    from bench.workload import full_size_model, tiny_model
    from glm_vision.heap import freeze_startup_heap
    from glm_vision.server import switch_interval_for

    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("glm_vision.engine").setLevel(logging.INFO)  # the warm-up's phases and their times
    places = [ENGINE] if args.direct else args.clients.split(",")
    if unknown := set(places) - {ENGINE, OWN_PROCESS, SERVER_PROCESS}:
        raise SystemExit(f"--clients: {', '.join(sorted(unknown))} is not {ENGINE}, {OWN_PROCESS} or {SERVER_PROCESS}")
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    loaded = tiny_model(Path(tempfile.mkdtemp())) if args.tiny else full_size_model(args.config, device)
    inputs = level_inputs(levels, places)
    rows, steady = [], []
    level_attentions = args.decode_attention.split(",")
    steady_attentions = args.steady_attention.split(",") if args.steady_attention else level_attentions
    through_http = any(place != ENGINE for place in places)
    default_interval = switch_interval_for(device)  # as the product's server runs
    switch_intervals = [float(ms) for ms in args.switch_intervals.split(",") if ms] or [default_interval * 1000]
    freezes = args.gc_freeze.split(",")
    if unknown := set(freezes) - {"on", "off"}:
        raise SystemExit(f"--gc-freeze: {', '.join(sorted(unknown))} is not on or off")
    own = ClientProcess(args.client_processes) if OWN_PROCESS in places else contextlib.nullcontext()
    with own as clients:
        for attention in dict.fromkeys(level_attentions + steady_attentions):
            engine = ready_engine(args, loaded, device, attention)
            serving = serve_in_process(engine, replace(engine.settings)) if through_http else contextlib.nullcontext()
            try:
                with serving as server:
                    for place in places if attention in level_attentions else []:
                        run = level_runner(engine, args.api_key, place, server, clients, inputs[place])
                        for interval, freeze in itertools.product(switch_intervals, freezes):
                            sys.setswitchinterval(interval / 1000)
                            gc.unfreeze()
                            if freeze == "on":
                                freeze_startup_heap()
                            label = place + (f", GIL switch {interval:g} ms" if args.switch_intervals else "")
                            label += f", heap frozen {freeze}" if len(freezes) > 1 else ""
                            rows += measure_levels(engine, args, levels, run, label)
                        sys.setswitchinterval(default_interval)
                    if attention in level_attentions and args.host_profile:
                        run = level_runner(engine, args.api_key, places[0], server, clients, inputs[places[0]])
                        profile_host(args.host_profile, run)
                    if attention in steady_attentions:
                        steady += measure_steady(engine, args)
            finally:
                engine.shutdown()
    return rows, steady


def level_inputs(levels, places: list[str]) -> dict[str, list]:
    """Each place's inputs: the pictures themselves for the engine's own clients, PNG data URLs for the API."""
    from bench.workload import screenshot
    from glm_vision.images import load_image

    pictures = [screenshot(seed) for seed in range(min(max([n for n, _ in levels] or [1]), 64))]
    inputs = {}
    for place in places:
        inputs[place] = [load_image(p) for p in pictures] if place == ENGINE else [data_url(p) for p in pictures]
    return inputs


def level_runner(engine, api_key: str, place: str, server, clients: ClientProcess | None, inputs: list):
    """(streams, tokens) -> a level's summary, with the clients at `place`: straight on the engine (`inputs`
    are pictures), or through the server's API (`inputs` are data URLs) from `clients`' process or this one."""
    if place == ENGINE:
        return lambda streams, tokens: run_level_direct(engine, streams, tokens, inputs)
    url = f"{server.url}/v1"
    # Each level a cache scope (API key) of its own: the API finds a picture encoded before in its scope, and
    # every level sends the same pictures. (Before 2026-12-02 a place's levels shared one scope, so its
    # 64-stream level found the 32 pictures of its 32-stream level encoded.)
    scopes = (f"{api_key}-{place}-{n}" for n in itertools.count(1))
    if place == SERVER_PROCESS:
        return lambda streams, tokens: asyncio.run(run_level(url, next(scopes), streams, tokens, inputs))
    return lambda streams, tokens: clients.run_level(url, next(scopes), streams, tokens, inputs)


def ready_engine(args, loaded, device: str, attention: str):
    """An engine on the loaded model with this decode attention, warmed up."""
    from glm_vision.engine import Engine
    from glm_vision.settings import Settings

    settings = Settings(
        model="(in memory)",
        device=device,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
        max_context_tokens=args.max_context,
        decode_attention=attention,
        decode_matmul=args.decode_matmul,
        decode_pdl=args.decode_pdl,
        prefill_chunk_tokens=args.prefill_chunk_tokens or Settings.prefill_chunk_tokens,
    )
    engine = Engine(settings, loaded)
    started = time.perf_counter()
    engine.warmup()
    own = policy_name(engine.scheduler)
    print(
        f"engine ready ({attention} decode attention, {args.decode_matmul} matmuls, "
        f"PDL {engine.runner.forward.pdl}, policy {own}, "
        f"{settings.prefill_chunk_tokens}-token steps): {engine.runner.slab.slots} decode slots of "
        f"{args.max_context} tokens, warm-up {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return engine


def policy_name(scheduler) -> str:
    """The scheduler's prefill policy (a scheduler without one runs one prompt at a time)."""
    return getattr(scheduler, "policy", "(main: one prompt at a time)")


def measure_levels(engine, args, levels, run, clients: str) -> list[dict]:
    """Each level under each policy asked for (the extra policies on `--policy-levels` only), each run by
    `run(streams, tokens)` (`level_runner`) with the clients where `clients` says."""
    import torch

    from bench.gc_pauses import CollectorPauses
    from bench.request_timeline import request_timeline
    from bench.step_clock import step_clock
    from glm_vision.engine import compile_watch

    scheduler = engine.scheduler
    clock, timeline = step_clock(), request_timeline()
    own = policy_name(scheduler)
    policies = ([p for p in args.policy.split(",") if p] if hasattr(scheduler, "policy") else []) or [own]
    extra = {tuple(int(x) for x in lv.split("x")) for lv in args.policy_levels.split(",") if lv}
    cuda = engine.runner.device.type == "cuda"
    rows = []
    for index, policy in enumerate(policies):
        if hasattr(scheduler, "policy"):
            scheduler.policy = policy
        for streams, tokens in levels:
            if index and extra and (streams, tokens) not in extra:
                continue
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                reserved = torch.cuda.memory_reserved()
            compiled = compile_watch.compiled_while_serving()
            clock.start()
            timeline.start()
            with CollectorPauses() as pauses:
                result = run(streams, tokens)
            timeline.stop()
            clock.stop()
            result.update(pauses.summary(), gc_frozen_objects=gc.get_freeze_count())
            result["timeline"] = timeline.summary(result.pop("client_stamps"))
            result.update(tokens=tokens, attention=engine.settings.decode_attention, policy=policy, clients=clients)
            result["kernels_compiled"] = compile_watch.compiled_while_serving() - compiled  # each a stalled step
            result.update(clock.decode_summary())
            if cuda:
                result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                # memory the allocator had to ask the driver for during the level (cudaMalloc in users' steps)
                result["reserved_gib_added"] = (torch.cuda.memory_reserved() - reserved) / 2**30
            rows.append(result)
            print(json.dumps(result), flush=True)
    return rows


def profile_host(level: str, run) -> None:
    """One more run of a level (STREAMSxTOKENS) with the worker's steps under cProfile: where the host's time
    per step goes (the numbers of this run are slowed by the profiler and not reported)."""
    from bench.step_clock import step_clock

    clock = step_clock()
    streams, tokens = (int(x) for x in level.split("x"))
    _, tables = clock.profiled(lambda: run(streams, tokens), limit=50, worker_cumulative=True)
    print(f"\nthe worker's Python over {len(clock.steps)} steps of {level}, by own time:")
    print(tables["worker"])
    print("the same, by cumulative time:")
    print(tables["worker_cumulative"])


def step_split(result: dict) -> str:
    """A level's decode-only steps (bench/step_clock.py): median wall, host and GPU-wait ms."""
    if not result.get("decode_steps"):
        return "-"
    return " / ".join(f"{result[key]:.2f}" for key in ("decode_step_ms", "host_ms", "gpu_wait_ms")) + " ms"


def collector_pauses(result: dict) -> str:
    """A level's garbage collections: how many (full ones), the longest full one, all together."""
    if "gc_collections" not in result:
        return "-"
    return (
        f"{result['gc_collections']} ({result['gc_full']}) / {result['gc_full_longest_ms']:.0f} / "
        f"{result['gc_total_ms']:.0f} ms"
    )


def report(rows: list[dict], steady: list[dict]) -> None:
    print()
    if rows:
        print(
            "| attention / policy / clients | streams x tokens | completed | 429 | 5xx | other errors | TTFT p50 | TTFT p95 | "
            "per-stream tok/s (median / min) | aggregate tok/s (wall / decode span) | peak GPU memory | "
            "kernels compiled | decode-only step: wall / host / waiting for the GPU | "
            "collections (full) / longest full / all |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.get('attention', '-')} / {r.get('policy', '-')} / {r.get('clients', '-')} | {r['streams']} x {r.get('tokens', '-')} | "
            f"{r['completed']} | {r['rejected_429']} | {r['errors_5xx']} | {r['other_errors']} | "
            f"{fmt(r['ttft_p50_s'], ' s', 2)} | {fmt(r['ttft_p95_s'], ' s', 2)} | "
            f"{fmt(r['per_stream_tok_s_median'])} / {fmt(r['per_stream_tok_s_min'])} | "
            f"{fmt(r['aggregate_tok_s'])} / {fmt(r['aggregate_decode_tok_s'])} | "
            f"{fmt(r.get('peak_gib'), ' GiB', 2)} | {r.get('kernels_compiled', '-')} | {step_split(r)} | "
            f"{collector_pauses(r)} |"
        )
    if any(r.get("timeline") for r in rows):
        from bench.request_timeline import timeline_table

        print()
        print(timeline_table(rows))
    if steady:
        print()
        print(
            "| decode attention | streams decoding | prompt tokens | decode step | aggregate tok/s | per stream tok/s | "
            "window |"
        )
        print("|---|---|---|---|---|---|---|")
    for r in steady:
        print(
            f"| {r['attention']} | {r['steady_streams']} | {r['prompt_tokens']:.0f} | {fmt(r['step_ms'], ' ms', 2)} | "
            f"{fmt(r['aggregate_tok_s'])} | {fmt(r['per_stream_tok_s'])} | {r['window_tokens']} tokens in "
            f"{r['window_s']:.2f} s |"
        )


if __name__ == "__main__":
    main()
