"""Autotune's picks for GLM-4.6V-Flash's decode matrices on the cards where they were measured, so that a first
start there skips timing ~250 candidates: on an H200 that timing was 75 s of a 120-s first warm-up (Triton's
caches empty; 24.5 s once they hold the timings: bench/RESULTS.md, twelfth session). Any other card, shape or
dtype is autotuned as before, its timings kept in Triton's cache for the next start.

Each pick: (BLOCK_N, BLOCK_K, SPLIT_K, USE_DOT, warps, stages) of a candidate in `gemv.CONFIGS`, for bf16
activations and weights, keyed by (M, N, K, bias, SwiGLU) as the autotuner keys them. The rows the decode step
runs through the GEMVs are padded to 1, 2, 4 or 8 (`forward.GRAPH_BATCH_SIZES`, `forward.GEMV_MAX_BATCH`).
"""

from __future__ import annotations

Pick = tuple[int, int, int, bool, int, int]
Shape = tuple[int, int, int, bool, bool]

_ONE_ROW: dict[tuple[int, int, bool, bool], Pick] = {
    (4608, 4096, True, False): (8, 512, 1, False, 4, 4),  # qkv + bias
    (4096, 4096, False, False): (32, 128, 1, True, 4, 6),  # o_proj
    (13696, 4096, False, True): (64, 64, 1, True, 8, 6),  # gate_up + SwiGLU
    (4096, 13696, False, False): (8, 512, 1, False, 4, 4),  # down
    (151552, 4096, False, False): (64, 128, 1, True, 4, 5),  # lm_head
}
_FEW_ROWS: dict[tuple[int, int, bool, bool], Pick] = {  # 2, 4 and 8 rows
    (4608, 4096, True, False): (64, 128, 1, True, 4, 5),
    (4096, 4096, False, False): (32, 128, 1, True, 4, 6),  # at 2 rows autotune once picked 32 x 256, 4 stages
    (13696, 4096, False, True): (64, 64, 1, True, 8, 6),
    (4096, 13696, False, False): (32, 128, 1, True, 4, 6),
    (151552, 4096, False, False): (64, 128, 1, True, 4, 5),
}

# TRITON_PRINT_AUTOTUNING=1 during the engine's warm-up on an H200 with empty caches (2026-11-30, commit 483cb83):
# the same pick at 2, 4 and 8 rows for every matrix but o_proj at 2 rows.
PICKS: dict[str, dict[Shape, Pick]] = {
    "NVIDIA H200": {
        (m, n, k, bias, swiglu): pick
        for m, table in ((1, _ONE_ROW), (2, _FEW_ROWS), (4, _FEW_ROWS), (8, _FEW_ROWS))
        for (n, k, bias, swiglu), pick in table.items()
    },
}


def known_pick(device_name: str, shape: Shape) -> Pick | None:
    """The measured pick for this card and (M, N, K, bias, SwiGLU), if there is one."""
    return PICKS.get(device_name, {}).get(shape)
