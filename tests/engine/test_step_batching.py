"""Prefill steps that batch: decode rows riding along with prompt chunks in one pass, several
prompts' chunks in one pass under a per-step token budget, and one vision-encoder call for the
pictures of several waiting requests. Each must compute exactly what the separate passes do."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message
from glm_vision.engine import Engine
from glm_vision.engine.forward import Chunk, DecodeRows
from glm_vision.engine.fused_weights import fuse_qkv
from glm_vision.engine.scheduler import DECODE_FIRST, PREFILL_FIRST
from glm_vision.images import load_image
from tests.conftest import make_picture


@pytest.fixture(scope="module")
def idle_engine(settings):
    engine = Engine.load(replace(settings, max_batch=4))
    yield engine
    engine.shutdown()


def _text_chunk(forward, ids: list[int], slot: int, start: int, end: int, last: bool) -> Chunk:
    embeds = forward.embed_tokens(torch.tensor(ids[start:end]))
    positions = torch.arange(start, end)[None, :].expand(3, -1)  # text tokens: (p, p, p)
    return Chunk(slot=slot, start=start, embeds=embeds, positions=positions, last=last)


@torch.inference_mode()
def test_a_prefill_pass_carrying_decode_rows_equals_the_separate_passes(idle_engine):
    """Rows decoding in slots 0 and 1 ride along with two prompts' chunks in slots 2 and 3 (one after a
    cached prefix): the rows' logits equal a plain decode step's, each chunk's last logits equal its
    prompt prefilled alone."""
    forward = idle_engine.runner.forward
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 200, (n,), generator=generator).tolist() for n in (20, 13, 30)]
    # rows 0 and 1: prompts of 20 and 13 tokens prefilled alone
    for slot in (0, 1):
        forward.prefill([_text_chunk(forward, prompts[slot], slot, 0, len(prompts[slot]), True)])
    rows = DecodeRows(torch.tensor([7, 9]), positions=[20, 13], lengths=[20, 13])
    decoded = forward.decode(rows.tokens, rows.positions, rows.lengths).clone()
    # prompt 3 in slot 2 alone, whole and in two chunks
    whole, _ = forward.prefill([_text_chunk(forward, prompts[2], 2, 0, 30, True)])
    first, none = forward.prefill([_text_chunk(forward, prompts[2], 2, 0, 12, False)])
    assert first is None and none is None  # a mid-prompt chunk wants no logits
    # the rest of prompt 3 (after its cached prefix) and prompt 2 again in slot 3, with the rows riding along
    ends, row_logits = forward.prefill(
        [_text_chunk(forward, prompts[2], 2, 12, 30, True), _text_chunk(forward, prompts[1], 3, 0, 13, True)], rows
    )
    # float32 rounding only: the matrix products see more rows, the chunk sees its prefix from the slab
    assert _relative(row_logits, decoded) < 1e-5
    assert _relative(ends[0], whole[0]) < 1e-5
    alone, _ = forward.prefill([_text_chunk(forward, prompts[1], 3, 0, 13, True)])
    assert _relative(ends[1], alone[0]) < 1e-5
    assert row_logits.argmax(-1).tolist() == decoded.argmax(-1).tolist()


@torch.inference_mode()
def test_a_pass_padded_to_graph_pieces_computes_what_the_exact_pass_does(idle_engine):
    """On CUDA a pass runs on static buffers padded to a multiple of 128 rows (its pieces are CUDA
    graphs per row count); here the same pieces run eagerly: padded passes in a row (stale rows left
    by a longer one included), with decode rows riding along, and a pass longer than the buffers (run
    on buffers of its own) give the logits of the exact-size pass."""
    from glm_vision.engine.prefill_pieces import PassPieces

    forward = idle_engine.runner.forward
    exact = forward.passes.pieces
    padded = PassPieces(forward, 100, step=128)
    assert padded.capacity == 128 and padded.begin(130).h.shape[0] == 256 and padded.begin(3).h.shape[0] == 128
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(10, 200, (160,), generator=generator).tolist()
    forward.prefill([_text_chunk(forward, prompt, 0, 0, 20, True)])
    rows = DecodeRows(torch.tensor([7]), positions=[20], lengths=[20])
    passes = [
        ([_text_chunk(forward, prompt, 1, 0, 90, True)], None),
        ([_text_chunk(forward, prompt, 2, 0, 9, True)], rows),
        ([_text_chunk(forward, prompt, 3, 0, 160, True)], None),  # past the buffers' 128 rows
    ]
    for chunks, riding in passes:
        forward.passes.pieces = exact
        want_ends, want_rows = forward.prefill(chunks, riding)
        forward.passes.pieces = padded
        try:
            ends, row_logits = forward.prefill(chunks, riding)
        finally:
            forward.passes.pieces = exact
        assert _relative(ends, want_ends) < 1e-5
        assert riding is None or _relative(row_logits, want_rows) < 1e-5


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _requests(pictures):
    return [
        GenerationRequest([Message("user", "Describe it.", [pictures[0]])], SamplingParams.greedy(30)),
        GenerationRequest(
            [Message("user", "What colour is the largest shape? " * 3, [pictures[1]])], SamplingParams.greedy(20)
        ),
        GenerationRequest([Message("user", "Two pictures.", pictures[2:4])], SamplingParams.greedy(25)),
        GenerationRequest([Message("user", "no picture here")], SamplingParams.greedy(15)),
    ]


def _submit_together(engine, requests):
    """Queued while the worker cannot take any, so that one step admits them all."""
    with engine.worker._lock:
        return [engine.submit(r) for r in requests]


@pytest.mark.parametrize("policy", [PREFILL_FIRST, DECODE_FIRST])
def test_prompts_and_pictures_of_several_requests_share_steps_and_answer_as_alone(settings, policy):
    pictures = [
        load_image(make_picture(60 + i, size))
        for i, size in enumerate([(168, 112), (112, 196), (140, 140), (196, 112)])
    ]
    single = Engine.load(replace(settings, max_batch=1))
    try:
        alone = [single.generate(r).token_ids for r in _requests(pictures)]
    finally:
        single.shutdown()
    engine = Engine.load(replace(settings, max_batch=5, prefill_chunk_tokens=128, scheduler_policy=policy))
    assert engine.scheduler.policy == policy  # --scheduler-policy reaches the scheduler
    runner = engine.runner
    steps, encoder_calls = [], []
    prefill, encode_images = runner.prefill, runner.encode_images

    def recording_prefill(chunks, rows=(), tokens=None):
        steps.append(([len(c) for _, c in chunks], len(rows), engine.scheduler.step_budget(bool(rows))))
        return prefill(chunks, rows, tokens)

    def recording_encode(seqs):
        encoder_calls.append(len(seqs))
        return encode_images(seqs)

    runner.prefill, runner.encode_images = recording_prefill, recording_encode
    try:
        streaming = engine.submit(
            GenerationRequest([Message("user", "a long answer please")], SamplingParams.greedy(150, min_new_tokens=150))
        )
        next(iter(streaming))  # it decodes while the others are prefilled
        together = [h.wait().token_ids for h in _submit_together(engine, _requests(pictures))]
        assert streaming.wait().usage.completion_tokens == 150
    finally:
        engine.shutdown()
    assert together == alone
    assert encoder_calls[-1] == 3  # the three requests with pictures: one encoder call
    assert any(len(chunks) >= 2 and rows >= 1 for chunks, rows, _ in steps)  # prompts batched, rows riding along
    for chunks, rows, budget in steps:
        assert rows + sum(chunks) <= budget
    assert {budget for _, rows, budget in steps if rows} == {128}  # decode-first: a quarter, but never under 256
    engine.runner.prefill_chunk_tokens = 2048
    assert engine.scheduler.step_budget(False) == engine.runner.solo_pass_tokens == 4096  # nothing streams: one pass
    assert engine.scheduler.step_budget(True) == (512 if policy == DECODE_FIRST else 2048)


def test_a_cold_prompt_is_one_pass_while_nothing_streams_and_chunked_while_one_does(settings, pictures):
    """With no stream decoding nobody waits on a step: a prompt (its picture encoded first) is one pass.
    While another request streams, the same prompt is split under the step budget."""
    engine = Engine.load(replace(settings, max_batch=2, prefill_chunk_tokens=32))
    passes = []
    prefill = engine.runner.prefill

    def recording(chunks, rows=(), tokens=None):
        passes.append(([len(c) for _, c in chunks], len(rows)))
        return prefill(chunks, rows, tokens)

    engine.runner.prefill = recording
    request = GenerationRequest(
        [Message("user", "Describe this picture. " * 6, [pictures[0]])], SamplingParams.greedy(2)
    )
    try:
        alone = engine.generate(request)
        assert alone.usage.prompt_tokens > 32 and passes == [([alone.usage.prompt_tokens], 0)]
        passes.clear()
        streaming = engine.submit(
            GenerationRequest([Message("user", "go on")], SamplingParams.greedy(80, min_new_tokens=80))
        )
        next(iter(streaming))
        beside = engine.generate(request)
        streaming.wait()
    finally:
        engine.shutdown()
    chunks = [sum(lengths) for lengths, rows in passes if lengths and rows]  # beside the streaming row
    assert sum(chunks) == beside.usage.prompt_tokens and len(chunks) > 1 and max(chunks) <= 32
    assert beside.token_ids == alone.token_ids


def test_the_rows_tokens_are_copied_before_the_steps_encoder_work(settings, pictures):
    """A step's wait for the rows' sampled tokens must not include its own encoder layers (on CUDA the
    copy's event would then come after them): the copy is queued first, in every step that has both."""
    engine = Engine.load(replace(settings, max_batch=2, prefill_chunk_tokens=64))
    calls = []
    copy, runner = engine.scheduler._copy, engine.runner
    start, encode_some = copy.start, runner.encode_some

    def recording_start(tokens):
        calls.append("copy")
        return start(tokens)

    def recording_encode(job, seqs, blocks=None):
        calls.append("encode")
        return encode_some(job, seqs, blocks)

    copy.start, runner.encode_some = recording_start, recording_encode
    try:
        streaming = engine.submit(
            GenerationRequest([Message("user", "go on")], SamplingParams.greedy(60, min_new_tokens=60))
        )
        next(iter(streaming))
        calls.clear()
        engine.generate(GenerationRequest([Message("user", "Describe it.", [pictures[1]])], SamplingParams.greedy(2)))
        streaming.wait()
    finally:
        engine.shutdown()
    encodes = [i for i, call in enumerate(calls) if call == "encode"]
    assert encodes and all(i > 0 and calls[i - 1] == "copy" for i in encodes), calls


def test_a_picture_two_waiting_requests_of_one_scope_need_is_encoded_once(settings):
    picture = load_image(make_picture(77, (224, 168)))
    requests = [
        GenerationRequest(
            [Message("user", question, [picture])], SamplingParams.greedy(12), session_id=f"s{i}", cache_scope="tenant"
        )
        for i, question in enumerate(["What is it?", "Which colours?"])
    ]
    engine = Engine.load(replace(settings, max_batch=2))
    try:
        preprocessed = []
        original = engine.runner._preprocess
        engine.runner._preprocess = lambda img, size: (preprocessed.append(img.key), original(img, size))[1]
        together = [h.wait() for h in _submit_together(engine, requests)]
        assert len(preprocessed) == 1
        engine.features.drop_scope("tenant")
        for session in ("s0", "s1"):
            engine.close_session(session)
        alone = [engine.generate(r) for r in requests]  # one after the other: the second finds it cached
        assert len(preprocessed) == 2
    finally:
        engine.shutdown()
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]


def test_fused_qkv_follows_a_dtype_cast(reference):
    """`model.float()` gives q/k/v new storage: fusing again must make a float32 matrix of them
    (the --float32-agreement benchmark crashed on a stale bfloat16 one)."""
    import copy

    model = copy.deepcopy(reference[0]).to(torch.bfloat16)
    fuse_qkv(model)
    attn = model.model.language_model.layers[0].self_attn
    assert attn.qkv_weight.dtype == torch.bfloat16 and attn.q_proj.weight.data_ptr() == attn.qkv_weight.data_ptr()
    model.float()
    assert attn.qkv_weight.dtype == torch.bfloat16  # left behind by the cast
    fuse_qkv(model)
    assert attn.qkv_weight.dtype == torch.float32 and attn.q_proj.weight.data_ptr() == attn.qkv_weight.data_ptr()
    expected = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    torch.testing.assert_close(attn.qkv_weight, expected, rtol=0, atol=0)


def test_the_compiled_layer_functions_see_one_kind_of_tensor(settings, pictures):
    """torch.compile guards on a tensor's dispatch keys: an inference-mode tensor and a plain one each
    get a compilation of their own. The worker makes inference tensors, so the static pass buffers must
    be too (the H200 showed a 260 ms recompile in a user's step when a pass's logits came from a
    torch.cat, not a view of the buffers): one pass alone, passes beside a stream (several logits
    rows), and a pass longer than the buffers (buffers of its own)."""
    engine = Engine.load(replace(settings, max_batch=2, prefill_chunk_tokens=32))
    forward = engine.runner.forward
    seen: dict[tuple[str, int], set[bool]] = {}  # (function, argument) -> inference tensor or not
    weights = {id(p) for p in forward.layers.parameters()} | {id(forward.lm_head), id(forward.final_norm)}

    def recording(name, function):
        def record(*args, **kwargs):
            for index, a in enumerate(args):
                if isinstance(a, torch.Tensor) and id(a) not in weights:
                    seen.setdefault((name, index), set()).add(torch.is_inference(a))
            return function(*args, **kwargs)

        return record

    names = {"final", "norm", "post", "post_in_place", "rotate_into"}  # decode's and the prefill pieces'
    for name in names:
        setattr(forward, name, recording(name, getattr(forward, name)))
    try:
        engine.generate(GenerationRequest([Message("user", "Describe this. " * 20)], SamplingParams.greedy(2)))
        streaming = engine.submit(
            GenerationRequest([Message("user", "go on")], SamplingParams.greedy(40, min_new_tokens=40))
        )
        next(iter(streaming))
        engine.generate(GenerationRequest([Message("user", "What is it?", [pictures[0]])], SamplingParams.greedy(2)))
        streaming.wait()
    finally:
        engine.shutdown()
    assert {name for name, _ in seen} == names
    assert all(kinds == {True} for kinds in seen.values()), seen
    assert torch.is_inference(forward.passes.pieces._buffers.h)
