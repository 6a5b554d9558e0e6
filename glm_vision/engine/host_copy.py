"""The decode rows' sampled token ids on their way to the host, waited for alone (scheduler.py's pipelined step)."""

from __future__ import annotations

import torch


class HostCopy:
    """Token ids copied to pinned host memory, waited for alone (not for the step queued after them)."""

    def __init__(self, slots: int, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.buffer = torch.zeros(slots, dtype=torch.long, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None

    def start(self, tokens: torch.Tensor) -> None:
        self.buffer[: tokens.shape[0]].copy_(tokens, non_blocking=self.cuda)
        if self.event is not None:
            self.event.record()

    def wait(self, count: int) -> list[int]:
        if self.event is not None:
            self.event.synchronize()
        return self.buffer[:count].tolist()
