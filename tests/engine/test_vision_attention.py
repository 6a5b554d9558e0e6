"""The vision tower's attention on bucketed shapes (glm_vision/engine/vision_attention.py).

On the GPU the two parts are cuDNN's and flash attention's kernels; here both are `math_part` (plain
float32 attention with its log-sum-exp), so what is checked is the split into parts, the padding, the
merge and the planning: the same answer as each picture attending to itself, with the main part only
ever seeing one shape per bucket."""

import threading

import pytest
import torch
from torch.nn.attention import SDPBackend

from glm_vision.engine.vision_attention import PictureAttention, attend_per_picture, math_part, merge_parts

HEADS, DIM, BUCKET = 3, 8, 16


def recording(shapes: list):
    def main(q, k, v, scale):
        shapes.append((q.shape[2], k.shape[2]))
        return math_part(q, k, v, scale)

    return main


def bucketed(shapes: list, max_patches: int = 64, flash_up_to: int = BUCKET) -> PictureAttention:
    attention = PictureAttention(
        device=torch.device("cpu"),
        max_patches=max_patches,
        bucket=BUCKET,
        flash_up_to=flash_up_to,
        main=recording(shapes),
        rest=math_part,
    )
    attention.bucketed = True  # as on CUDA with cuDNN first
    return attention


def packed(lengths, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(sum(lengths), HEADS, DIM, generator=g).to(dtype) for _ in range(3)]


@pytest.mark.parametrize(
    "lengths",
    [[5], [16], [37], [32], [17, 5], [5, 37, 32, 16, 1], [40, 3]],
    ids=["under-a-bucket", "one-bucket", "buckets-and-rest", "two-buckets", "then-a-small-one", "mixed", "last-tiny"],
)
def test_each_picture_attends_to_its_own_patches_as_without_buckets(lengths):
    q, k, v = packed(lengths)
    shapes: list = []
    attention = bucketed(shapes)
    attention.plan(HEADS, DIM, q.dtype, q.device, DIM**-0.5)
    planning = len(shapes)
    got = attention(q, k, v, lengths, DIM**-0.5)
    expected = attend_per_picture(q, k, v, lengths, DIM**-0.5, [SDPBackend.MATH])
    assert got.shape == expected.shape == q.shape
    # two bfloat16 parts merged: a rounding or two apart; a wrong merge or padding is off by far more
    assert (got.float() - expected.float()).abs().max().item() < 2e-2
    calls = shapes[planning:]
    assert all(queries % BUCKET == 0 and keys == queries - BUCKET for queries, keys in calls)
    assert len(calls) == sum(1 for n in lengths if n > BUCKET)  # pictures within one bucket: flash alone


def test_queries_that_come_with_room_give_the_same_answer_without_a_copy(monkeypatch):
    """The encoder's layers hand q over with `room` rows past the pictures (zeros or anything: those
    rows are thrown away): the same answer as an exact q, and q is never padded again."""
    lengths = [17, 5, 37]
    q, k, v = packed(lengths, seed=3)
    attention = bucketed([])
    assert attention.room == BUCKET
    exact = attention(q, k, v, lengths, DIM**-0.5)
    roomy = torch.cat([q, torch.full((attention.room, HEADS, DIM), 7.0, dtype=q.dtype)])

    def refuse(*args, **kwargs):
        raise AssertionError("q was padded again")

    monkeypatch.setattr("glm_vision.engine.vision_attention.F.pad", refuse)
    assert torch.equal(attention(roomy, k, v, lengths, DIM**-0.5), exact)
    with pytest.raises(AssertionError, match="padded again"):  # an exact q does need the padding
        attention(q, k, v, lengths, DIM**-0.5)
    assert PictureAttention(device=torch.device("cpu"), max_patches=64).room == 0  # no buckets on the CPU


def test_the_plans_are_built_on_values_laid_out_as_the_layers_are():
    """cuDNN keys its plans on the tensors' layout too: the planning's values have the strides of the v
    the vision layers hand over (a view into their QKV projection's output), or a request would pay
    for a plan after all."""
    from glm_vision.engine.vision_block import attention_inputs

    patches, hidden, heads, dim = 40, HEADS * DIM, HEADS, DIM
    g = torch.Generator().manual_seed(4)
    weights = torch.randn(3 * hidden, hidden, generator=g), torch.randn(3 * hidden, generator=g)
    cos, sin = torch.ones(patches, dim), torch.zeros(patches, dim)
    _, _, v = attention_inputs(
        torch.randn(patches, hidden, generator=g), torch.ones(hidden), 1e-6, *weights, cos, sin, heads, 0
    )
    strides: list = []

    def main(q, k, values, scale):
        strides.append(values.stride())
        return math_part(q, k, values, scale)

    attention = PictureAttention(
        device=torch.device("cpu"), max_patches=64, bucket=BUCKET, flash_up_to=BUCKET, main=main, rest=math_part
    )
    attention.bucketed = True
    attention.plan(heads, dim, torch.bfloat16, torch.device("cpu"), 0.5)
    layer_strides = v.transpose(0, 1)[None].stride()
    assert strides and all(planned[1:] == layer_strides[1:] for planned in strides), (strides, layer_strides)


def test_pictures_up_to_the_flash_limit_skip_the_main_part_and_its_plans():
    shapes: list = []
    attention = bucketed(shapes, max_patches=80, flash_up_to=2 * BUCKET)
    q, k, v = packed([32, 33, 20])
    got = attention(q, k, v, [32, 33, 20], 0.5)
    torch.testing.assert_close(
        got, attend_per_picture(q, k, v, [32, 33, 20], 0.5, [SDPBackend.MATH]), atol=2e-2, rtol=0
    )
    planned = [(n, n - BUCKET) for n in (48, 64, 80)]  # from the first bucket past 32 patches
    assert shapes == planned + [(48, 32), (48, 32)]  # the planning's picture of 33, then the 33 one


def test_merging_two_parts_equals_attention_over_all_keys():
    q, k, v = (t.transpose(0, 1)[None] for t in packed([50], dtype=torch.float32, seed=1))
    out_a, lse_a = math_part(q, k[:, :, :19], v[:, :, :19], 0.3)
    out_b, lse_b = math_part(q, k[:, :, 19:], v[:, :, 19:], 0.3)
    whole, lse = math_part(q, k, v, 0.3)
    torch.testing.assert_close(merge_parts(out_a, lse_a, out_b, lse_b), whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.logaddexp(lse_a, lse_b), lse)


def test_every_bucket_is_planned_once_per_thread_before_the_first_picture():
    shapes: list = []
    attention = bucketed(shapes, max_patches=70)
    q, k, v = packed([20])
    attention(q, k, v, [20], 0.5)
    planned = [(n, n - BUCKET) for n in range(2 * BUCKET, 80 + 1, BUCKET)]  # 70 patches: up to the 80 bucket
    planned.append((2 * BUCKET, BUCKET))  # then one picture just past the flash limit (the merge compiled)
    assert shapes == planned + [(32, 16)]
    attention(q, k, v, [20], 0.5)  # the same thread: no planning again
    assert shapes == planned + [(32, 16)] * 2
    worker = threading.Thread(target=attention, args=(q, k, v, [20], 0.5))
    worker.start()
    worker.join()
    assert shapes == planned + [(32, 16)] * 2 + planned + [(32, 16)]


def test_float32_and_the_cpu_take_the_plain_per_picture_path():
    shapes: list = []
    attention = bucketed(shapes)
    q, k, v = packed([37], dtype=torch.float32)
    got = attention(q, k, v, [37], 0.5)  # float32: cuDNN and flash attention do not take it
    torch.testing.assert_close(got, attend_per_picture(q, k, v, [37], 0.5, [SDPBackend.MATH]))
    assert shapes == []
    assert not PictureAttention(device=torch.device("cpu"), max_patches=64).bucketed


@pytest.mark.parametrize("capability, bucketed", [((7, 5), False), ((8, 6), True), ((9, 0), True)])
def test_the_gpu_path_is_bucketed_from_ampere_on_with_cudnn_first(monkeypatch, capability, bucketed):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert PictureAttention(device=cuda, max_patches=64).bucketed is bucketed
    flash_first = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    assert not PictureAttention(flash_first, device=cuda, max_patches=64).bucketed
