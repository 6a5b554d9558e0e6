"""Benchmarks whose numbers come from the GPU, run on the CPU so that they keep working between GPU sessions:
the barrier bench's persistent read kernel (one program, Triton's interpreter) reads every byte of every matrix
once, with and without the early blocks and the vector after the barrier; the warm-up bench gets a default
engine ready on the tiny checkpoint and reports it; the PDL chain computes alike both ways; the load bench
splits its levels' steps into host and GPU time."""

import subprocess
import sys

from tests.triton_interpreter import ROOT, run_interpreted


def _bench(module: str, *args: str) -> str:
    """`python -m bench.<module> args...` from the repository's root: its stdout, once it exited 0."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_barrier_read_kernel_sums_every_matrix_once():
    out = run_interpreted(
        """
        from bench.bench_barrier_reads import main
        main(["--check", "--gib", "0.004"])
        """
    )
    assert "sums agree" in out


def test_warmup_bench_reports_a_ready_engine():
    out = _bench("warmup", "--tiny")
    assert "warm-up" in out and "on cpu with the default settings (4 decode slots)" in out


def test_pdl_chain_runs_the_steps_products_with_and_without_pdl_alike():
    """bench/pdl_chain.py's chain on tiny shapes under the interpreter: with PDL and the plain chain's tiles, or
    with products through cuBLAS, it computes what the plain chain does, and it reports autotune's pick for
    each of its four matrices."""
    out = run_interpreted(
        """
        import torch
        from bench import pdl_chain

        text = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96}
        torch.manual_seed(0)
        weights = pdl_chain.layer_weights(text, 2, device="cpu", dtype=torch.float32)
        h = torch.randn(3, 64)
        plain = pdl_chain.chain(h, weights, pdl=False)
        tiles = pdl_chain.tuned_tiles(weights, 3, pdl=False)
        assert set(tiles) == {"qkv", "o", "gate_up", "down"} and all(tiles.values()), tiles
        assert torch.allclose(pdl_chain.chain(h, weights, pdl=True, tiles=tiles), plain, atol=1e-5)
        through_cublas = dict.fromkeys(["qkv", "gate_up"], pdl_chain.CUBLAS)  # a bias and the SwiGLU glue
        assert torch.allclose(pdl_chain.chain(h, weights, pdl=True, tiles=through_cublas), plain, atol=1e-5)
        assert not torch.allclose(pdl_chain.chain(h, weights[:1], pdl=False), plain, atol=1e-3)  # layers count
        print(pdl_chain.describe(tiles))
        """
    )
    assert out.count(" dot w") + out.count(" fma w") == 4, out


def test_load_bench_splits_the_steps_and_profiles_the_host():
    """bench.load in process on the tiny checkpoint: each level reports the kernels compiled in it (none: the
    CPU runs no Triton kernel here) and its decode-only steps split into the host's time and the wait for the
    GPU (bench/step_clock.py), once under each GIL switch interval asked for; --host-profile runs the level once
    more under cProfile and prints the tables (by own and by cumulative time)."""
    import json

    out = _bench("load", *"--tiny --direct --levels 2x12 --host-profile 2x12 --switch-intervals 5,0.5".split())
    levels = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [level["clients"] for level in levels] == ["engine, GIL switch 5 ms", "engine, GIL switch 0.5 ms"]
    for level in levels:
        assert level["completed"] == 2 and level["kernels_compiled"] == 0
        assert level["decode_steps"] >= 10  # both streams decode together after their prompts, 12 tokens each
        assert 0 < level["host_ms"] <= level["decode_step_ms"] and level["gpu_wait_ms"] >= 0
    profile = out.split("the worker's Python over ", 1)[1]
    assert "steps of 2x12, by own time" in profile and "function calls" in profile
    assert "Ordered by: cumulative time" in profile.split("the same, by cumulative time:")[1]


def test_load_bench_runs_the_levels_with_the_heap_frozen_as_the_server_does_or_not():
    """--gc-freeze on,off: the levels again with the heap unfrozen; each level counts the garbage collections
    that paused it and reports them in the table."""
    import json

    out = _bench("load", *"--tiny --direct --levels 2x8 --gc-freeze on,off".split())
    levels = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [level["clients"] for level in levels] == ["engine, heap frozen on", "engine, heap frozen off"]
    assert levels[0]["gc_frozen_objects"] > 10_000 and levels[1]["gc_frozen_objects"] == 0
    for level in levels:
        assert level["completed"] == 2 and level["gc_collections"] >= level["gc_full"] >= 0
        assert level["gc_total_ms"] >= level["gc_full_longest_ms"] >= 0
    assert out.count(" ms |\n") >= 2 and "collections (full) / longest full / all" in out


def test_load_bench_runs_its_clients_in_a_process_of_their_own_in_the_servers_or_on_the_engine():
    """bench.load in process, every level with the clients at each place asked for: the openai client through the
    API from one other process (users' programs do not share the server's GIL) or from the bench's own, or threads
    calling the engine; each place gets every stream's tokens. The host
    profile runs its level with the clients at the first place: through the API, the worker's steps still
    profiled."""
    import json

    out = _bench(
        "load", *"--tiny --levels 2x6,3x4 --clients own-process,server-process,engine --host-profile 2x6".split()
    )
    levels = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["clients"], r["streams"]) for r in levels] == [
        ("own-process", 2), ("own-process", 3), ("server-process", 2), ("server-process", 3), ("engine", 2),
        ("engine", 3),
    ]  # fmt: skip
    assert all(r["completed"] == r["streams"] and r["tokens_short"] == 0 for r in levels)
    own, server = {r["client_pid"] for r in levels[:2]}, {r["client_pid"] for r in levels[2:4]}
    assert len(own) == 1 and len(server) == 1 and own != server
    assert "| auto / prefill-first / own-process | 2 x 6 |" in out
    for level in levels:  # each request stamped on its way, from the first send (bench/request_timeline.py)
        stages = level["timeline"]
        through_api = ["handler"] if level["clients"] != "engine" else []
        order = ["sent", *through_api, "submit", "admit", "first_emit", "finish"]
        firsts = [stages[stage][0] for stage in order]  # the earliest request at each stage
        assert firsts == sorted(firsts) and firsts[0] == 0.0, (level["clients"], stages)
        assert stages["client_first"][0] >= stages["first_emit"][0] and stages["client_end"][0] >= firsts[-1]
        assert all(0 <= lag for lag in stages["end_lag"])
    profile = out.split("the worker's Python over ", 1)[1]
    # the engine's own functions among the 30 of most own time (which ones varies with the machine's load)
    assert "steps of 2x6, by own time" in profile and "glm_vision/engine/" in profile


def test_load_bench_spreads_its_clients_over_processes_that_start_together():
    """--client-processes 2: client i runs in process i % 2, both send from the same moment, and the level is
    summed over every stream as from one process."""
    import json

    out = _bench("load", "--tiny", "--levels", "3x4", "--clients", "own-process", "--client-processes", "2")
    (level,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert level["completed"] == 3 and level["tokens_short"] == 0
    assert len(set(level["client_pids"])) == 2 and level["client_pid"] == level["client_pids"][0]
    sent = level["timeline"]["sent"]
    assert sent[0] == 0.0 and sent[-1] < 0.2  # the last client sent within 0.2 s of the first
    assert level["timeline"]["submit"][-1] >= sent[-1]


def test_engine_bench_times_the_first_picture_of_each_size_and_profiles_the_host():
    """bench_engine --picture-sizes on the tiny checkpoint: the first and second request's TTFT for each size
    (nothing cached: the pictures differ), and with --profile-first-size Python's time over the first size's
    two requests under cProfile: the worker's (its steps and admissions) and the calling thread's."""
    out = _bench(
        "bench_engine",
        *"--tiny --fast-only --decode-tokens 4 --history-tokens 256 --max-context 8192".split(),
        *"--picture-sizes 640x480,320x240 --profile-first-size".split(),
    )
    for size in ("640x480", "320x240"):
        (line,) = [line for line in out.splitlines() if f"first / second {size} request" in line]
        first, second = (float(ms) for ms in line.split(": ")[1].removesuffix(" ms").split(" / "))
        assert first > 0 and second > 0
    for request in (1, 2):  # the first size's two requests, each with the worker's and the caller's tables
        worker = out.split(f"640x480, request {request} (TTFT ")[1].split("Python in the worker:")[1]
        caller = out.split(f"640x480, request {request} (TTFT ")[2].split("Python in the caller:")[1]
        assert "function calls" in worker and "glm_vision/engine/vision" in worker  # the encoder ran in the worker
        assert "function calls" in caller and "engine.py" in caller and "(generate)" in caller
    assert "320x240, request 1 (" not in out
