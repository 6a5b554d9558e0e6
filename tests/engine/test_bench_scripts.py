"""Benchmarks whose numbers come from the GPU, run on the CPU so that they keep working between GPU sessions:
the barrier bench's persistent read kernel (one program, Triton's interpreter) reads every byte of every matrix
once, with and without the early blocks and the vector after the barrier; the warm-up bench gets a default
engine ready on the tiny checkpoint and reports it."""

import subprocess
import sys

from tests.triton_interpreter import ROOT, run_interpreted


def test_barrier_read_kernel_sums_every_matrix_once():
    out = run_interpreted(
        """
        from bench.bench_barrier_reads import main
        main(["--check", "--gib", "0.004"])
        """
    )
    assert "sums agree" in out


def test_warmup_bench_reports_a_ready_engine():
    done = subprocess.run(
        [sys.executable, "-m", "bench.warmup", "--tiny"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warm-up" in done.stdout and "on cpu with the default settings (4 decode slots)" in done.stdout
