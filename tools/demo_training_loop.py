"""The demo model's training loop (`train_demo_model.py`): the data feed from the image banks, the
learning-rate schedule, the optimizer step, the progress log, the `--steps auto` speed probe, the
`--profile` profiler and the `--deadline-s` stop."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from tools.demo_batches import Batcher, BatchStream
from tools.demo_loss import loss_fn

UNBOUNDED = 10**7  # the step horizon while `--steps auto` has not chosen the count yet
PROBE_FROM, PROBE_TO = 60, 260  # `--steps auto` times these steps
PROFILE_FROM, PROFILE_TO = 20, 24  # `--profile` profiles these steps


def lr_at(step: int, peak: float, warmup: int, total: int | None) -> float:
    """Linear warmup to `peak`, then a cosine down to 5 % of it at step `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    horizon = total if total is not None else UNBOUNDED
    frac = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def auto_steps(rate: float, seconds_left: float, warmup: int) -> int:
    """`--steps auto`: the steps done by the probe's end plus those that fit the time left, at least warmup + 200."""
    return max(warmup + 200, int(PROBE_TO + rate * seconds_left))


class BankFeed:
    """(batch, its bank's rows on the device) for steps first_step..stop; bank k serves steps
    [k * bank_steps, (k + 1) * bank_steps), and bank k + 1 renders while bank k is in use. The first
    bank is rendered at construction (before CUDA starts)."""

    def __init__(self, renderer, processor, args, first_step: int, stop: int, device: torch.device) -> None:
        self.renderer, self.processor, self.args, self.device = renderer, processor, args, device
        self.first_step, self.stop = first_step, stop
        self.bank_steps = args.bank_steps or stop
        self.first_index = first_step // self.bank_steps
        self.first = renderer.get(self.first_index)

    def __iter__(self):
        for k in range(self.first_index, (self.stop - 1) // self.bank_steps + 1):
            current = self.first if k == self.first_index else self.renderer.get(k)
            if (k + 1) * self.bank_steps < self.stop:
                self.renderer.prefetch(k + 1)
            rows = torch.from_numpy(current.rows).to(self.device)
            current.rows = None  # the workers need only the scenes, offsets and grids
            for batch in self._loader(current, k):
                yield batch, rows
            del rows

    def _loader(self, bank, k: int):
        lo, hi = max(self.first_step, k * self.bank_steps), min(self.stop, (k + 1) * self.bank_steps)
        workers = self.args.workers
        return torch.utils.data.DataLoader(
            BatchStream(Batcher(self.processor, self.args.batch, self.args.seed, bank), lo, hi),
            batch_size=None,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )


@dataclass
class Learner:
    """What one optimizer step touches."""

    model: torch.nn.Module
    aux_head: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    image_processor: object
    device: torch.device
    aux_weight: float

    def step(self, batch, bank_rows, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        autocast = self.device.type == "cuda"
        loss = loss_fn(
            self.model, batch, self.device, autocast, bank_rows, self.image_processor, self.aux_head, self.aux_weight
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss


class Progress:
    """The running loss (read every 10th step and the first 20: each read waits for the device), the
    time spent waiting for data, and the log line every `log_every` steps."""

    def __init__(self, log_every: int, t0: float) -> None:
        self.log_every, self.t0 = log_every, t0
        self.running, self.count = 0.0, 0
        self.wait, self.wait_window, self.t_window = 0.0, 0.0, time.time()

    def waited(self, seconds: float) -> None:
        self.wait += seconds
        self.wait_window += seconds

    def record(self, step: int, loss: torch.Tensor) -> None:
        if step % 10 == 0 or step < 20:
            self.running += loss.item()
            self.count += 1

    def log(self, step: int, total: int | None, lr: float) -> None:
        if step % self.log_every:
            return
        span = time.time() - self.t_window
        print(
            f"step {step}/{total or '?'} loss {self.running / max(1, self.count):.4f} lr {lr:.2e} "
            f"{time.time() - self.t0:.0f}s | {self.log_every / span if step else 0:.2f} steps/s, "
            f"data wait {self.wait_window / max(span, 1e-9):.0%}",
            flush=True,
        )
        self.running, self.count = 0.0, 0
        self.wait_window, self.t_window = 0.0, time.time()


class StepsProbe:
    """`--steps auto`: times steps PROBE_FROM..PROBE_TO, then picks the step count that fits the budget."""

    def __init__(self, budget_s: float, warmup: int, t0: float) -> None:
        self.budget_s, self.warmup, self.t0 = budget_s, warmup, t0
        self.started = 0.0

    def observe(self, step: int) -> int | None:
        """The chosen step count once `step` ends the probe, else None."""
        if step == PROBE_FROM:
            self.started = time.time()
        elif step == PROBE_TO:
            rate = (PROBE_TO - PROBE_FROM) / (time.time() - self.started)
            total = auto_steps(rate, self.budget_s - (time.time() - self.t0), self.warmup)
            print(f"speed {rate:.2f} steps/s -> --steps {total}", flush=True)
            return total
        return None


class StepProfiler:
    """`--profile`: profiles steps PROFILE_FROM..PROFILE_TO and prints the top ops (the run then stops)."""

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled, self.device = enabled, device
        self.profiler, self.started = None, 0.0

    def before(self, step: int) -> None:
        if self.enabled and step == PROFILE_FROM:
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self.started = time.time()

    def after(self, step: int) -> bool:
        """True once the profiled steps are done and printed."""
        if not (self.enabled and step == PROFILE_TO):
            return False
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        self.profiler.__exit__(None, None, None)
        print(f"{PROFILE_TO - PROFILE_FROM + 1} profiled steps: {time.time() - self.started:.2f}s wall", flush=True)
        keys = self.profiler.key_averages()
        print(keys.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=25), flush=True)
        print(keys.table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
        return True


@dataclass
class Outcome:
    steps_done: int
    total: int | None
    data_wait_s: float
    session_s: float
    profiled: bool = False  # `--profile` stopped the run: nothing to save


def _timed_next(batches, progress: Progress):
    started = time.time()
    item = next(batches, None)
    if item is not None:
        progress.waited(time.time() - started)
    return item


def _past_deadline(args, started: float, step: int) -> bool:
    if args.deadline_s and time.time() - started > args.deadline_s:
        print(f"deadline reached at step {step}: stopping early", flush=True)
        return True
    return False


def train(learner: Learner, feed: BankFeed, args, total: int | None, started: float) -> Outcome:
    """Steps from `feed.first_step` until `total` (chosen by the probe for `--steps auto`), the feed's
    end or the deadline. `started`: the launch time, which `--deadline-s` counts from."""
    learner.model.train()
    t0 = time.time()
    print(f"training starts {t0 - started:.0f}s after launch", flush=True)
    progress, probe = Progress(args.log_every, t0), StepsProbe(args.budget_s, args.warmup, t0)
    profiler = StepProfiler(args.profile, learner.device)
    step, batches = feed.first_step, iter(feed)
    while (item := _timed_next(batches, progress)) is not None:
        if total is not None and step >= total:
            break
        if _past_deadline(args, started, step):
            total = step if total is None or not args.state else total
            break
        profiler.before(step)
        loss = learner.step(*item, lr_at(step, args.lr, args.warmup, total))
        if profiler.after(step):
            return Outcome(step, total, progress.wait, time.time() - t0, profiled=True)
        progress.record(step, loss)
        if total is None:
            total = probe.observe(step)
        progress.log(step, total, lr_at(step, args.lr, args.warmup, total))
        step += 1
    return Outcome(step, total, progress.wait, time.time() - t0)
