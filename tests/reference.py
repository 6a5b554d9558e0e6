"""The plain-transformers reference: the whole conversation recomputed with `model.generate` each turn."""

from __future__ import annotations

import torch

from glm_vision.conversation import Message, conversation_images, to_template_messages
from glm_vision.engine.prompt import ANSWER_TOKENS
from glm_vision.synthetic.tiny import SPECIAL_TOKENS

_STRAY = [token for token in SPECIAL_TOKENS if token not in ANSWER_TOKENS]


def history_text(answer: str) -> str:
    """A random model's answer as a real model's would read in the history: a random model writes any
    token, `<|image|>` or `<|user|>` too, which the engine then takes literally and the plain
    processor as control tokens; a real model writes only answer markers there."""
    for token in _STRAY:
        answer = answer.replace(token, "")
    return answer


def reference_inputs(processor, messages: list[Message], enable_thinking: bool = True):
    text = processor.apply_chat_template(
        to_template_messages(messages), tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    images = [img.image for img in conversation_images(messages)] or None
    return processor(text=[text], images=images, return_tensors="pt")


@torch.inference_mode()
def reference_generate(
    model,
    processor,
    messages: list[Message],
    max_new_tokens: int,
    enable_thinking: bool = True,
    min_new_tokens: int = 0,
):
    """(greedy new token ids without the stop token, first-step logits)."""
    inputs = reference_inputs(processor, messages, enable_thinking)
    first_logits = model(**inputs).logits[0, -1].float()
    out = model.generate(
        **inputs,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        repetition_penalty=1.0,
        top_k=None,
        top_p=None,
        temperature=None,
        min_new_tokens=min_new_tokens or None,
    )
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    stops = set(model.generation_config.eos_token_id)
    for i, token in enumerate(new):
        if token in stops:
            new = new[:i]
            break
    return new, first_logits
