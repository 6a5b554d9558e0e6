"""Host-to-device copies that do not stall the GPU's queue."""

from __future__ import annotations

import torch


def to_device(values, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    """`values` (a list or a CPU tensor) on `device`. From pageable memory PyTorch's copy waits until
    the GPU has finished everything queued before it; from pinned memory it is queued like a kernel."""
    host = torch.as_tensor(
        values, dtype=dtype
    ).contiguous()  # a strided source would be copied to pageable memory first
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)
