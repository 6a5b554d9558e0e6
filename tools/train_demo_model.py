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
The loop itself (feed, learning-rate schedule, log, `--steps auto` probe, profiler, deadline) is
`demo_training_loop.py`; the loss is `demo_loss.py`; this module sets the run up and saves it.

Auxiliary loss (`--aux-weight W`): the shipped checkpoints underfit shape identity (colour and position
answers fail when the named shape is not recognised). Every image token gets a dense target
from the renderer (`demo_bank.token_labels`: which object covers its cell, its colour, the letter
under it, and the object's box), and a linear head on the features the LLM receives is trained on
them with weight W next to the answer loss (`demo_loss.aux_loss`); the head is not saved. `--init-from DIR` continues from a checkpoint (model and processor).

Reproducible: batch i is drawn from `random.Random(f"{seed}/{i}")` whatever the number of data
workers, and the model is initialised from `--seed`. With `--steps auto` the step count is chosen
from the measured speed so that training fits `--budget-s`; the chosen count is printed and saved in
`training_args.json`, and passing it back as `--steps N` repeats the run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from glm_vision.synthetic import questions
from glm_vision.synthetic.tiny import build_config, build_processor, glm_generation_config, train_tokenizer
from tools import demo_vit_fast
from tools.demo_bank import BankRenderer
from tools.demo_batches import IGNORE, Batcher
from tools.demo_loss import AUX_OUTPUTS
from tools.demo_training_loop import UNBOUNDED, BankFeed, Learner, Outcome, train

PX_PER_TOKEN = 28 * 28


def parse_args(argv=None) -> argparse.Namespace:
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
    return p.parse_args(argv)


def make_processor(image_tokens: int, vocab_size: int):
    processor = build_processor(train_tokenizer(vocab_size, questions.corpus_text()))
    ip = processor.image_processor
    # the processor's pixel counts include the temporal factor (2): `longest_edge` = tokens x 784 x 2
    ip.size = {
        "shortest_edge": ip.size["shortest_edge"],
        "longest_edge": image_tokens * PX_PER_TOKEN * ip.temporal_patch_size,
    }
    return processor


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


def setup_torch() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    # cuDNN attention builds a new plan (~15 ms of CPU) for every new batch shape; flash and
    # memory-efficient attention have no plans.
    torch.backends.cuda.enable_cudnn_sdp(False)


def load_processor(args):
    if not args.init_from:
        return make_processor(args.image_tokens, args.vocab)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(args.init_from)


def load_model(processor, args, device: torch.device):
    if not args.init_from:
        return build_model(processor, args).to(device)
    from transformers import Glm4vForConditionalGeneration

    return Glm4vForConditionalGeneration.from_pretrained(args.init_from, dtype=torch.float32).to(device)


def make_aux_head(model, args, device: torch.device):
    """`--aux-weight`: the linear head of the auxiliary loss, seeded apart from the model; None when off."""
    if args.aux_weight <= 0:
        return None
    torch.manual_seed(args.seed + 1)
    return torch.nn.Linear(model.config.text_config.hidden_size, AUX_OUTPUTS).to(device)


def load_state(args, total: int | None) -> dict | None:
    """`--state`: the saved training state when the file exists (a fixed --steps is then required)."""
    if not (args.state and Path(args.state).exists()):
        return None
    if total is None:
        raise SystemExit("--state needs a fixed --steps")
    return torch.load(args.state, map_location="cpu")


def check_positions(model, processor, args, bank) -> None:
    """`--check-positions`: the batches' M-RoPE positions equal transformers' `get_rope_index` on the target tokens."""
    b = Batcher(processor, args.batch, args.seed, bank).make(10**6)
    types = (b["input_ids"] == model.config.image_token_id).int()
    pos, _ = model.model.get_rope_index(b["input_ids"], types, image_grid_thw=b["image_grid_thw"])
    real = b["labels"] != IGNORE
    agree = bool(((pos == b["position_ids"])[:, real]).all())
    print(f"positions agree with get_rope_index on target tokens: {agree}", flush=True)
    assert agree


def print_size(model, processor) -> int:
    n_params = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    print(
        f"model: {n_params / 1e6:.2f}M parameters ({n_vision / 1e6:.2f}M vision), vocab {len(processor.tokenizer)}",
        flush=True,
    )
    return n_params


def make_optimizer(model, aux_head, args, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices except the embeddings."""
    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        (decay if prm.ndim >= 2 and "embed" not in name else no_decay).append(prm)
    if aux_head is not None:
        decay.append(aux_head.weight)
        no_decay.append(aux_head.bias)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
        fused=device.type == "cuda",
    )


def resume(saved: dict, learner: Learner, args) -> float:
    """Loads the saved weights and optimizer state; returns the training seconds already spent."""
    learner.model.load_state_dict(saved["model"])
    if learner.aux_head is not None:
        learner.aux_head.load_state_dict(saved["aux_head"])
    learner.optimizer.load_state_dict(saved["optimizer"])
    print(f"resumed from {args.state} at step {saved['step']}", flush=True)
    return saved["train_seconds"]


def save_state(path: str, learner: Learner, step: int, train_s: float) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    aux_head = learner.aux_head
    torch.save(
        {
            "model": learner.model.state_dict(),
            "optimizer": learner.optimizer.state_dict(),
            "step": step,
            "train_seconds": train_s,
            "aux_head": aux_head.state_dict() if aux_head is not None else None,
        },
        path,
    )
    print(f"saved the training state at step {step} to {path}", flush=True)


def save_checkpoint(out: Path, model, processor) -> None:
    """The model in bf16 and the processor."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to(torch.bfloat16).save_pretrained(out)
    processor.save_pretrained(out)


def write_training_args(out: Path, record: dict) -> None:
    """training_args.json: `record` plus the transformers version; then the checkpoint's files are listed."""
    import transformers

    record["transformers"] = transformers.__version__
    (out / "training_args.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"wrote {out}: " + ", ".join(f"{f.name} {f.stat().st_size / 1e6:.1f} MB" for f in sorted(out.iterdir())),
        flush=True,
    )


def run_record(args, outcome: Outcome, train_s: float, started: float, device, n_params: int, feed: BankFeed) -> dict:
    """training_args.json: the flags (but --out), then what the run did."""
    record = {k: v for k, v in vars(args).items() if k != "out"}
    record.update(
        steps=outcome.steps_done,
        train_seconds=round(train_s),
        total_seconds=round(time.time() - started),
        device_name=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        parameters=n_params,
        torch=torch.__version__,
        bank_render_seconds=round(feed.first.seconds, 1),
        data_wait_seconds=round(outcome.data_wait_s, 1),
    )
    return record


def print_summary(outcome: Outcome, first_step: int) -> None:
    done, seconds = outcome.steps_done, outcome.session_s
    print(
        f"trained steps {first_step}-{done} of {outcome.total} in {seconds:.0f}s "
        f"({(done - first_step) / seconds:.2f} steps/s, waiting for data {outcome.data_wait_s:.0f}s)",
        flush=True,
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.time()
    device = torch.device(args.device)
    setup_torch()
    processor = load_processor(args)
    print(f"processor ready {time.time() - started:.0f}s", flush=True)
    total = None if args.steps == "auto" else int(args.steps)
    saved = load_state(args, total)
    first_step = saved["step"] if saved else 0
    renderer = BankRenderer(processor.image_processor, args.bank, args.seed, args.render_procs)  # before CUDA
    feed = BankFeed(renderer, processor, args, first_step, total if total is not None else UNBOUNDED, device)
    model = load_model(processor, args, device)
    aux_head = make_aux_head(model, args, device)
    if args.check_positions:  # the replacements compute what the originals do
        demo_vit_fast.check(model, device)
    demo_vit_fast.install(linear_patch=bool(args.linear_patch_embed))
    n_params = print_size(model, processor)
    if args.check_positions:
        check_positions(model, processor, args, feed.first)
    optimizer = make_optimizer(model, aux_head, args, device)
    learner = Learner(model, aux_head, optimizer, processor.image_processor, device, args.aux_weight)
    train_s_before = resume(saved, learner, args) if saved else 0.0

    outcome = train(learner, feed, args, total, started)
    if outcome.profiled:
        return
    print_summary(outcome, first_step)
    train_s = outcome.session_s + train_s_before
    if args.state:
        save_state(args.state, learner, outcome.steps_done, train_s)
    out = Path(args.out)
    save_checkpoint(out, model, processor)
    record = run_record(args, outcome, train_s, started, device, n_params, feed)
    renderer.close()
    write_training_args(out, record)


if __name__ == "__main__":
    main()
