"""The demo model's training loss (`train_demo_model.py`): cross-entropy on the assistant tokens, plus
optionally the auxiliary loss of a linear head that reads each image token's renderer targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tools import demo_vit_fast
from tools.demo_bank import CHAR_CLASSES, COLOR_CLASSES, SHAPE_CLASSES, WORD_CLASS, normalise_patches
from tools.demo_batches import IGNORE

AUX_OUTPUTS = SHAPE_CLASSES + COLOR_CLASSES + CHAR_CLASSES + 4
BOX_WEIGHT = 5.0  # the box error is a mean of 0-1 coordinates: x5 puts a 0.1 error near the class losses


def loss_fn(model, batch, device, autocast, bank_rows, image_processor, aux_head=None, aux_weight=0.0):
    """Cross-entropy on the assistant tokens; with `aux_head`, plus `aux_weight` x `aux_loss` of the
    image tokens' targets read linearly from the features the LLM receives."""
    inner = model.model
    aux = None
    ids = batch["input_ids"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    positions = batch["position_ids"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        embeds = inner.language_model.embed_tokens(ids)
        if batch["patch_rows"] is not None:
            rows = bank_rows[batch["patch_rows"].to(device, non_blocking=True)]
            pixels = normalise_patches(rows, image_processor)
            grids = batch["image_grid_thw"].to(device)
            layout = batch["layout"]
            demo_vit_fast.use_layout(layout, device)
            feats = inner.visual(
                pixels, grid_thw=grids, position_ids=layout["vision_positions"].to(device, non_blocking=True)
            ).pooler_output
            if aux_head is not None:
                aux = aux_loss(aux_head(feats.float()).float(), batch["token_labels"].to(device, non_blocking=True))
            mask = (ids == model.config.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(mask, feats.to(embeds.dtype))
        hidden = inner.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=False).last_hidden_state
        keep = labels != IGNORE
        logits = model.lm_head(hidden[keep])
    loss = F.cross_entropy(logits.float(), labels[keep])
    return loss if aux is None else loss + aux_weight * aux


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)  # no host sync, 0 when nothing is masked in


def aux_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per image token: object class and colour (cross-entropy, all tokens), the letter under the
    cell (cross-entropy, word tokens) and the covering object's box (L1 in 0-1 units, object tokens):
    what the features must carry to name, read, place and box objects."""
    a, b, c = SHAPE_CLASSES, SHAPE_CLASSES + COLOR_CLASSES, SHAPE_CLASSES + COLOR_CLASSES + CHAR_CLASSES
    kind, word, thing = targets[:, 0], (targets[:, 0] == WORD_CLASS).float(), (targets[:, 0] > 0).float()
    loss = F.cross_entropy(scores[:, :a], kind) + F.cross_entropy(scores[:, a:b], targets[:, 1])
    loss = loss + _masked_mean(F.cross_entropy(scores[:, b:c], targets[:, 2], reduction="none"), word)
    box_error = (scores[:, c:].sigmoid() - targets[:, 3:].float() / 1000).abs().mean(1)
    return loss + BOX_WEIGHT * _masked_mean(box_error, thing)
