"""Train the bundled demo model: a small GLM-4.6V-architecture VLM, from scratch, on synthetic scenes.

    python -m tools.train_demo_model --out assets/demo-model --steps 9000 --bank 20000 --bank-steps 300   # GPU: ~16 minutes on one H100
    python -m tools.train_demo_model --out /tmp/demo --device cpu --steps 20 --batch 8 --workers 1   # smoke run

The model is a `Glm4vForConditionalGeneration` with GLM's special tokens and chat template, a
byte-level BPE tokenizer trained on the question/answer vocabulary, and a preprocessor that caps
images at `--image-tokens` LLM tokens (28x28 px each). Data come from `glm_vision.synthetic.scenes`:
conversations of 1-3 images with 1-4 questions each (English and Chinese), thinking on (an empty
`<think></think>` block, as GLM writes it in history) or off (`/nothink`), each answer ending with
`<|user|>` (next turn) or `<|endoftext|>`. Loss is on assistant tokens only.

Data path (`demo_bank.py`): banks of `--bank` pictures are rendered by a process pool and resized
by the processor itself into uint8 patch rows that live on the GPU; the DataLoader workers only
write the conversations and token ids, and the step gathers and normalises the patches on the GPU
(equal to the processor's `pixel_values` to 5e-7). With `--bank-steps N` a new bank of new scenes
serves every N steps, rendered in the background while the previous one is in use, so that a long
run does not see the same pictures dozens of times (the shipped checkpoint saw each of its 40,000
about 55 times; it scores the same on them as held out, so it underfits rather than memorises). The ViT parts
that are slow on big many-picture batches are replaced for training by equivalent code
(`demo_vit_fast.py`; `--check-positions` compares them). Every log line prints steps/s and the
share of the time spent waiting for data; `--profile` prints where five steps spend their time.

Auxiliary loss (`--aux-weight W`): the shipped checkpoints underfit shape identity (colour and position
answers fail when the named shape is not recognised). Every image token gets a dense target
from the renderer (`demo_bank.token_labels`: which object covers its cell, its colour, the letter
under it, and the object's box), and a linear head on the features the LLM receives is trained on
them with weight W next to the answer loss (`aux_loss`); the head is not saved. `--init-from DIR` continues from a checkpoint (model and processor).

Reproducible: batch i is drawn from `random.Random(f"{seed}/{i}")` whatever the number of data
workers, and the model is initialised from `--seed`. With `--steps auto` the step count is chosen
from the measured speed so that training fits `--budget-s`; the chosen count is printed and saved in
`training_args.json`, and passing it back as `--steps N` repeats the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from glm_vision.synthetic import questions
from glm_vision.synthetic.tiny import build_config, build_processor, glm_generation_config, train_tokenizer
from tools import demo_vit_fast
from tools.demo_bank import CHAR_CLASSES, COLOR_CLASSES, SHAPE_CLASSES, WORD_CLASS, BankRenderer, normalise_patches
from tools.demo_batches import IGNORE, Batcher, BatchStream

PX_PER_TOKEN = 28 * 28
AUX_OUTPUTS = SHAPE_CLASSES + COLOR_CLASSES + CHAR_CLASSES + 4
BOX_WEIGHT = 5.0  # the box error is a mean of 0-1 coordinates: x5 puts a 0.1 error near the class losses


# ---------------------------------------------------------------------------------------------- processor
def make_processor(image_tokens: int, vocab_size: int):
    processor = build_processor(train_tokenizer(vocab_size, questions.corpus_text()))
    ip = processor.image_processor
    # the processor's pixel counts include the temporal factor (2): `longest_edge` = tokens x 784 x 2
    ip.size = {
        "shortest_edge": ip.size["shortest_edge"],
        "longest_edge": image_tokens * PX_PER_TOKEN * ip.temporal_patch_size,
    }
    return processor


# ---------------------------------------------------------------------------------------------- samples
def build_model(processor, args):
    from transformers import Glm4vForConditionalGeneration

    config = build_config(
        processor.tokenizer,
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        intermediate=args.intermediate,
        vision_hidden=args.vision_hidden,
        vision_depth=args.vision_depth,
        vision_heads=args.vision_heads,
        init_std=0.02,
    )
    torch.manual_seed(args.seed)
    model = Glm4vForConditionalGeneration(config)
    model.generation_config = glm_generation_config(config)
    return model


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", default="auto", help="number of optimizer steps, or 'auto' to fit --budget-s")
    p.add_argument("--budget-s", type=float, default=470.0, help="training time for --steps auto")
    p.add_argument("--batch", type=int, default=160)
    p.add_argument("--lr", type=float, default=2.5e-3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument(
        "--bank", type=int, default=48000, help="pictures per bank; conversations draw from the current bank"
    )
    p.add_argument(
        "--bank-steps",
        type=int,
        default=0,
        help="steps per bank: a new bank (new scenes) every this many steps, rendered in the background; 0: one bank",
    )
    p.add_argument("--render-procs", type=int, default=os.cpu_count() or 1, help="processes that render the banks")
    p.add_argument("--image-tokens", type=int, default=100, help="most LLM tokens per image (28x28 px each)")
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--vision-hidden", type=int, default=192)
    p.add_argument("--vision-depth", type=int, default=4)
    p.add_argument("--vision-heads", type=int, default=3)
    p.add_argument(
        "--deadline-s", type=float, default=0, help="stop early (and save) this long after the start; 0: never"
    )
    p.add_argument(
        "--state",
        help="training state file: written when the run stops, and resumed from if it exists "
        "(a long run split over several commands; needs a fixed --steps)",
    )
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--linear-patch-embed", type=int, default=1, help="1: patch embedding as a matmul instead of Conv3d")
    p.add_argument(
        "--check-positions",
        action="store_true",
        help="first check the training-only ViT replacements and the M-RoPE positions against transformers' own",
    )
    p.add_argument("--profile", action="store_true", help="profile steps 20-24, print the top ops, and stop")
    p.add_argument(
        "--aux-weight",
        type=float,
        default=0.0,
        help="weight of the auxiliary loss: each image token's object class and colour, read by a linear "
        "head (dropped when saving) from the features the LLM receives; 0: off",
    )
    p.add_argument(
        "--init-from",
        help="start from this checkpoint (model and processor) instead of random weights; "
        "the architecture and --image-tokens options are then the checkpoint's",
    )
    args = p.parse_args(argv)

    started = time.time()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    # cuDNN attention builds a new plan (~15 ms of CPU) for every new batch shape; flash and
    # memory-efficient attention have no plans.
    torch.backends.cuda.enable_cudnn_sdp(False)
    if args.init_from:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(args.init_from)
    else:
        processor = make_processor(args.image_tokens, args.vocab)
    print(f"processor ready {time.time() - started:.0f}s", flush=True)
    total = None if args.steps == "auto" else int(args.steps)
    stop = total if total is not None else 10**7
    saved = None
    if args.state and Path(args.state).exists():
        if total is None:
            raise SystemExit("--state needs a fixed --steps")
        saved = torch.load(args.state, map_location="cpu")
    first_step = saved["step"] if saved else 0
    bank_steps = args.bank_steps or stop
    renderer = BankRenderer(processor.image_processor, args.bank, args.seed, args.render_procs)  # before CUDA
    first_bank = first_step // bank_steps
    bank = renderer.get(first_bank)
    if args.init_from:
        from transformers import Glm4vForConditionalGeneration

        model = Glm4vForConditionalGeneration.from_pretrained(args.init_from, dtype=torch.float32).to(device)
    else:
        model = build_model(processor, args).to(device)
    aux_head = None
    if args.aux_weight > 0:
        torch.manual_seed(args.seed + 1)
        aux_head = torch.nn.Linear(model.config.text_config.hidden_size, AUX_OUTPUTS).to(device)
    if args.check_positions:  # the replacements compute what the originals do
        demo_vit_fast.check(model, device)
    demo_vit_fast.install(linear_patch=bool(args.linear_patch_embed))
    n_params = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    print(
        f"model: {n_params / 1e6:.2f}M parameters ({n_vision / 1e6:.2f}M vision), vocab {len(processor.tokenizer)}",
        flush=True,
    )

    if args.check_positions:
        b = Batcher(processor, args.batch, args.seed, bank).make(10**6)
        types = (b["input_ids"] == model.config.image_token_id).int()
        pos, _ = model.model.get_rope_index(b["input_ids"], types, image_grid_thw=b["image_grid_thw"])
        mine = b["position_ids"]
        real = b["labels"] != IGNORE
        agree = bool(((pos == mine)[:, real]).all())
        print(f"positions agree with get_rope_index on target tokens: {agree}", flush=True)
        assert agree

    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        (decay if prm.ndim >= 2 and "embed" not in name else no_decay).append(prm)
    if aux_head is not None:
        decay.append(aux_head.weight)
        no_decay.append(aux_head.bias)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
        fused=fused,
    )
    train_s_before = 0.0
    if saved:
        model.load_state_dict(saved["model"])
        if aux_head is not None:
            aux_head.load_state_dict(saved["aux_head"])
        opt.load_state_dict(saved["optimizer"])
        train_s_before = saved["train_seconds"]
        print(f"resumed from {args.state} at step {first_step}", flush=True)

    def batches():
        """(batch, its bank's rows on the device) for steps first_step..stop; bank k serves steps
        [k * bank_steps, (k + 1) * bank_steps), and bank k + 1 renders while bank k is in use."""
        for k in range(first_bank, (stop - 1) // bank_steps + 1):
            current = bank if k == first_bank else renderer.get(k)
            if (k + 1) * bank_steps < stop:
                renderer.prefetch(k + 1)
            rows = torch.from_numpy(current.rows).to(device)
            current.rows = None  # the workers need only the scenes, offsets and grids
            lo, hi = max(first_step, k * bank_steps), min(stop, (k + 1) * bank_steps)
            loader = torch.utils.data.DataLoader(
                BatchStream(Batcher(processor, args.batch, args.seed, current), lo, hi),
                batch_size=None,
                num_workers=args.workers,
                pin_memory=fused,
                prefetch_factor=4 if args.workers else None,
            )
            for batch in loader:
                yield batch, rows
            del rows

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        horizon = total if total is not None else 10**7
        frac = min(1.0, (step - args.warmup) / max(1, horizon - args.warmup))
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    autocast = device.type == "cuda"
    t_probe = None
    running, count = 0.0, 0
    t0 = time.time()
    print(f"training starts {t0 - started:.0f}s after launch", flush=True)
    step = first_step
    wait, wait_window, t_window = 0.0, 0.0, time.time()
    it = batches()
    while True:
        t_wait = time.time()
        try:
            batch, bank_rows = next(it)
        except StopIteration:
            break
        waited = time.time() - t_wait
        wait += waited
        wait_window += waited
        if total is not None and step >= total:
            break
        if args.deadline_s and time.time() - started > args.deadline_s:
            print(f"deadline reached at step {step}: stopping early", flush=True)
            if total is None or not args.state:
                total = step
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        if args.profile and step == 20:
            profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            )
            profiler.__enter__()
            t_prof = time.time()
        loss = loss_fn(model, batch, device, autocast, bank_rows, processor.image_processor, aux_head, args.aux_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if args.profile and step == 24:
            torch.cuda.synchronize() if device.type == "cuda" else None
            profiler.__exit__(None, None, None)
            print(f"5 profiled steps: {time.time() - t_prof:.2f}s wall", flush=True)
            keys = profiler.key_averages()
            print(
                keys.table(
                    sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total", row_limit=25
                ),
                flush=True,
            )
            print(keys.table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
            return
        running += loss.item() if (step % 10 == 0 or step < 20) else 0.0
        count += 1 if (step % 10 == 0 or step < 20) else 0
        if total is None:
            if step == 60:
                t_probe = time.time()
            elif step == 260:
                rate = 200 / (time.time() - t_probe)
                left = args.budget_s - (time.time() - t0)
                total = max(args.warmup + 200, int(260 + rate * left))
                print(f"speed {rate:.2f} steps/s -> --steps {total}", flush=True)
        if step % args.log_every == 0:
            span = time.time() - t_window
            print(
                f"step {step}/{total or '?'} loss {running / max(1, count):.4f} lr {lr_at(step):.2e} "
                f"{time.time() - t0:.0f}s | {args.log_every / span if step else 0:.2f} steps/s, "
                f"data wait {wait_window / max(span, 1e-9):.0%}",
                flush=True,
            )
            running, count = 0.0, 0
            wait_window, t_window = 0.0, time.time()
        step += 1
    steps_done = step
    session_s = time.time() - t0
    train_s = session_s + train_s_before
    print(
        f"trained steps {first_step}-{steps_done} of {total} in {session_s:.0f}s "
        f"({(steps_done - first_step) / session_s:.2f} steps/s, waiting for data {wait:.0f}s)",
        flush=True,
    )
    if args.state:
        Path(args.state).parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": steps_done,
                "train_seconds": train_s,
                "aux_head": aux_head.state_dict() if aux_head is not None else None,
            },
            args.state,
        )
        print(f"saved the training state at step {steps_done} to {args.state}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to(torch.bfloat16).save_pretrained(out)
    processor.save_pretrained(out)
    record = {k: v for k, v in vars(args).items() if k != "out"}
    record.update(
        steps=steps_done,
        train_seconds=round(train_s),
        total_seconds=round(time.time() - started),
        device_name=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        parameters=n_params,
        torch=torch.__version__,
        bank_render_seconds=round(bank.seconds, 1),
        data_wait_seconds=round(wait, 1),
    )
    renderer.close()
    import transformers

    record["transformers"] = transformers.__version__
    (out / "training_args.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"wrote {out}: " + ", ".join(f"{f.name} {f.stat().st_size / 1e6:.1f} MB" for f in sorted(out.iterdir())),
        flush=True,
    )


if __name__ == "__main__":
    main()
