"""The decode step's Triton kernels on a GPU: the parts Triton's interpreter cannot check on the CPU.

    python -m bench.check_kernels_gpu [--replays 200]

Under the interpreter the programs of a launch run one after another, so a kernel whose last program
finishes the work of all the others (the split attention's merge, the residual norm after o_proj and
down) is only checked there for its arithmetic. Here the programs run at once: each kernel is compared
with torch at the model's shapes, then captured in a CUDA graph and replayed `--replays` times, every
replay's output compared bit for bit with the first (a program that read another's results before they
were stored would show as a replay that differs). Exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from glm_vision.engine import gemv
from glm_vision.engine.decode_attention import decode_attention
from glm_vision.engine.layer_math import residual_norm

HIDDEN, INTERMEDIATE, KV_HEADS, GROUP, DIM, ROT = 4096, 13696, 2, 16, 128, 64


def replays_agree(fn, replays: int) -> bool:
    """Whether `fn`'s outputs (a tuple of tensors) are the same in every replay of its CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    graph.replay()
    first = [t.clone() for t in outputs]
    same = True
    for _ in range(replays):
        graph.replay()
        same &= all(torch.equal(a, b) for a, b in zip(first, outputs, strict=True))
    torch.cuda.synchronize()
    return bool(same)


def check_residual_norm(rows: int, k: int, replays: int) -> bool:
    g = torch.Generator(device="cuda").manual_seed(rows * k)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device="cuda", generator=g)).bfloat16()

    x, h, w = randn(rows, k), randn(rows, HIDDEN, scale=4.0), randn(HIDDEN, k, scale=k**-0.5)
    n_out, n_next = (1 + 0.2 * torch.randn(2, HIDDEN, device="cuda", generator=g)).bfloat16()
    norm = gemv.ResidualNorm(h, n_out, n_next, 1e-5)
    h_got, x_got = gemv.linear_residual_norm(x, w, norm)
    h_want, x_want = residual_norm(h, F.linear(x, w), n_out, n_next, 1e-5)
    errors = [
        ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
        for a, b in ((h_got, h_want), (x_got, x_want))
    ]
    stable = replays_agree(lambda: gemv.linear_residual_norm(x, w, norm), replays)
    config = gemv.tuned_config(rows, HIDDEN, k, norm=True)
    ok = max(errors) < 2e-2 and stable
    print(
        f"residual norm, {rows} rows, K={k}: errors {errors[0]:.1e} / {errors[1]:.1e}, replays equal {stable}, {config}: {'ok' if ok else 'FAILED'}"
    )
    return ok


def reference_attention(q, keys, values, lengths, new_k, new_v, cos, sin):
    """Float32 attention of each row over its keys [0, length) and its new (rotated) key at `length`."""
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    for b, length in enumerate(lengths.tolist()):
        k = torch.cat(
            [keys[b, :, :length].float(), rotate(new_k[b : b + 1].float(), cos[b], sin[b]).transpose(0, 1)], 1
        )
        v = torch.cat([values[b, :, :length].float(), new_v[b].float()[:, None]], 1)
        qb = rotate(q[b].float(), cos[b], sin[b])
        scores = qb @ k.transpose(-1, -2) * DIM**-0.5
        out[b] = scores.softmax(-1) @ v
    return out


def rotate(x, cos, sin):
    """GLM's interleaved rotary on the first ROT dimensions (as layer_math.rotary)."""
    rot = x[..., :ROT]
    pairs = torch.stack((-rot[..., 1::2], rot[..., 0::2]), -1).flatten(-2)
    return torch.cat([rot * cos.float() + pairs * sin.float(), x[..., ROT:]], -1)


def check_attention(batch: int, replays: int) -> bool:
    g = torch.Generator(device="cuda").manual_seed(batch)
    max_len, bucket = 8192, 4096
    keys = torch.randn(batch, KV_HEADS, max_len, DIM, device="cuda", generator=g).bfloat16()
    values = torch.randn(batch, KV_HEADS, max_len, DIM, device="cuda", generator=g).bfloat16()
    q = torch.randn(batch, KV_HEADS, GROUP, DIM, device="cuda", generator=g).bfloat16()
    new_k, new_v = (torch.randn(batch, KV_HEADS, DIM, device="cuda", generator=g).bfloat16() for _ in range(2))
    cos, sin = (torch.rand(batch, ROT, device="cuda", generator=g).bfloat16() for _ in range(2))
    # every row its own length: a few keys, split boundaries, the bucket's last position
    lengths = torch.randint(1, bucket - 1, (batch,), device="cuda", generator=g)
    lengths[: min(batch, 4)] = torch.tensor([0, 255, 256, bucket - 1][: min(batch, 4)], device="cuda")
    want = reference_attention(q, keys, values, lengths, new_k, new_v, cos, sin)

    def call():
        return (decode_attention(q, keys, values, lengths, bucket, DIM**-0.5, cos, sin, new=(new_k, new_v)),)

    got = call()[0]
    error = ((got.float() - want).abs().max() / want.abs().max()).item()
    stable = replays_agree(call, replays)
    ok = error < 2e-2 and stable
    print(f"split attention, {batch} rows: error {error:.1e}, replays equal {stable}: {'ok' if ok else 'FAILED'}")
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replays", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)
    results = [check_residual_norm(rows, k, args.replays) for rows in (1, 2, 4, 8) for k in (HIDDEN, INTERMEDIATE)]
    results += [check_attention(batch, args.replays) for batch in (1, 8, 32, 64)]
    print("all ok" if all(results) else "FAILED")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
