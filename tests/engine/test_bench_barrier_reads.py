"""bench/bench_barrier_reads.py on the CPU: its persistent read kernel (one program, Triton's interpreter)
reads every byte of every matrix once, with and without the early blocks and the vector after the barrier."""

from tests.triton_interpreter import run_interpreted


def test_barrier_read_kernel_sums_every_matrix_once():
    out = run_interpreted(
        """
        from bench.bench_barrier_reads import main
        main(["--check", "--gib", "0.004"])
        """
    )
    assert "sums agree" in out
