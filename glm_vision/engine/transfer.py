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


def picture_to_device(pixels, device: torch.device) -> torch.Tensor:
    """A (height, width, 3) uint8 array -> (3, height, width) on `device`: one copy into pinned memory
    on the host (no channels-first reordering there), the reordering done on the device."""
    if device.type != "cuda":
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy()).to(device)  # one channels-first copy
    staged = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
    staged.numpy()[...] = pixels  # numpy copies a read-only source without torch's warning
    return staged.to(device, non_blocking=True).permute(2, 0, 1).contiguous()
