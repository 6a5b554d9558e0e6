"""The engine's answers against plain transformers': greedy tokens and first-step logits over a
three-turn conversation with pictures (in bf16 and in float32), and the noise floor between two
transformers attention paths. Used by `bench_engine` (`--agreement-tokens`, `--float32-agreement`)."""

from __future__ import annotations

from dataclasses import replace

import torch

from glm_vision.backend import GenerationRequest, SamplingParams
from glm_vision.conversation import Message, conversation_images, to_template_messages
from glm_vision.engine import Engine, LoadedModel


def reference_inputs(loaded: LoadedModel, messages, device, *, preprocess_on_device: bool = False):
    """The processor's inputs for `generate`; pictures resized on the CPU (transformers' default) or,
    like the engine does, on `device` (CUDA resizes uint8 pictures through float32: +-1 level apart)."""
    processor = loaded.processor
    text = processor.apply_chat_template(to_template_messages(messages), tokenize=False, add_generation_prompt=True)
    images = [img.image for img in conversation_images(messages)] or None
    kwargs = {"device": device} if preprocess_on_device and images else {}
    return processor(text=[text], images=images, return_tensors="pt", **kwargs).to(device)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@torch.inference_mode()
def agreement(
    engine: Engine, loaded: LoadedModel, pictures, device: str, tokens_per_turn: int, text_only_prompt: str
) -> dict:
    """Greedy tokens and first-step logits of the engine vs generate over a 3-turn conversation; the
    logits also against generate's forward fed pictures resized on the device as the engine resizes
    them, and on a text-only prompt (where no picture is resized at all)."""
    model = loaded.model
    turns = [
        Message("user", "Describe both screenshots.", pictures[:2]),
        Message("user", "Look at the first one again.", [pictures[0]]),
        Message("user", "And this one?", [pictures[2]]),
    ]
    history, equal, compared, max_rel, max_rel_device = [], 0, 0, 0.0, 0.0
    first_divergence = None
    for turn in turns:
        history.append(turn)
        result = engine.generate(
            GenerationRequest(
                list(history), SamplingParams.greedy(tokens_per_turn), session_id="agree", capture_logits=True
            )
        )
        inputs = reference_inputs(loaded, history, device)
        ref_logits = model(**inputs).logits[0, -1].float().cpu()
        max_rel = max(max_rel, relative(result.first_logits, ref_logits))
        same_pixels = reference_inputs(loaded, history, device, preprocess_on_device=True)
        max_rel_device = max(
            max_rel_device, relative(result.first_logits, model(**same_pixels).logits[0, -1].float().cpu())
        )
        out = model.generate(**inputs, do_sample=False, max_new_tokens=tokens_per_turn, repetition_penalty=1.0)
        ref = out[0, inputs["input_ids"].shape[1] :].tolist()
        mine = list(result.token_ids)
        for i, (x, y) in enumerate(zip(mine, ref, strict=False)):
            if x != y:
                first_divergence = first_divergence or (len(history) // 2 + 1, i)
                break
            equal += 1
        compared += min(len(mine), len(ref))
        history.append(Message("assistant", result.text))
    engine.close_session("agree")
    text_only = [Message("user", text_only_prompt)]
    mine = engine.generate(GenerationRequest(text_only, SamplingParams.greedy(1), capture_logits=True)).first_logits
    theirs = model(**reference_inputs(loaded, text_only, device)).logits[0, -1].float().cpu()
    return {
        "tokens_equal": equal,
        "tokens_compared": compared,
        "first_divergence": first_divergence,
        "max_first_logits_rel_err": max_rel,
        "max_first_logits_rel_err_pixels_resized_on_device": max_rel_device,
        "text_only_first_logits_rel_err": relative(mine, theirs),
        **reference_noise(loaded, turns[:1], device, tokens_per_turn),
    }


def float32_agreement(
    settings, loaded: LoadedModel, pictures, device: str, tokens_per_turn: int, text_only_prompt: str
) -> dict:
    """`agreement` with the model cast to float32 and TF32 off: on a random-weight model the logits are
    nearly flat, so in bf16 two correct implementations pick different near-tied tokens after a few
    steps (see `reference_noise`); in float32 the fast path must follow generate token for token."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    loaded.model.float()  # the engine fuses q/k/v again: the fused matrix made in bf16 is left behind by the cast
    fp32 = replace(loaded, dtype="float32")
    engine = Engine(replace(settings, dtype="float32"), fp32)
    try:
        engine.warmup()
        result = agreement(engine, fp32, pictures, device, tokens_per_turn, text_only_prompt)
    finally:
        engine.shutdown()
    print("float32 agreement:", result, flush=True)
    return result


@torch.inference_mode()
def reference_noise(loaded: LoadedModel, messages, device: str, tokens: int) -> dict:
    """The same comparison between two transformers runs that differ only in the attention kernel
    (SDPA vs eager): how far two correct bf16 implementations drift apart on this model."""
    model = loaded.model
    inputs = reference_inputs(loaded, messages, device)
    runs = {}
    for attn in ("sdpa", "eager"):
        model.set_attn_implementation(attn)
        logits = model(**inputs).logits[0, -1].float().cpu()
        out = model.generate(**inputs, do_sample=False, max_new_tokens=tokens, repetition_penalty=1.0)
        runs[attn] = (logits, out[0, inputs["input_ids"].shape[1] :].tolist())
    model.set_attn_implementation("sdpa")
    (la, ta), (lb, tb) = runs["sdpa"], runs["eager"]
    same = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
    return {
        "reference_sdpa_vs_eager_logits_rel_err": ((la - lb).norm() / la.norm()).item(),
        "reference_sdpa_vs_eager_tokens_equal_before_divergence": same,
    }
