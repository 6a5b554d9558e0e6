"""Host-to-device copies that do not stall the GPU's queue."""

from __future__ import annotations

import torch

PINNED_RESERVE = (1 << 20, 1 << 26)  # size classes kept pinned from the start: 1 MiB to 64 MiB (~22-megapixel pictures)


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


def reserve_pinned(smallest: int = PINNED_RESERVE[0], largest: int = PINNED_RESERVE[1]) -> None:
    """Pin one host block of each power-of-two size from `smallest` to `largest` bytes and give it back to
    PyTorch's caching host allocator, which keeps blocks by power-of-two size class: a picture's staging copy
    then finds one instead of pinning new memory in a user's request (5-10 ms on the H200's host)."""
    size = smallest
    while size <= largest:
        torch.empty(size, dtype=torch.uint8, pin_memory=True)
        size *= 2
