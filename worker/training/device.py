"""Device selection and host-to-device batch transfer shared by training and inference."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

# Datasets up to this size are copied to the GPU once instead of batch by batch: CIFAR-10 as uint8 is
# 150 MB, so every proxy-scale pool fits, and per-step host gathers disappear from the hot loop.
DEVICE_RESIDENT_MAX_BYTES = 4 << 30
# Larger (memory-mapped) arrays are not copied into memory whole; batches are read from the map.
IN_MEMORY_MAX_BYTES = 4 << 30


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: the first CUDA device when there is one, the CPU otherwise."""
    if device is None or device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(device)


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def stage(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move ``data`` to ``device``; on CUDA through pinned memory so the copy runs asynchronously."""
    if data.device == device:
        return data
    if is_cuda(device) and data.device.type == "cpu":
        return data.pin_memory().to(device, non_blocking=True)
    return data.to(device)


class BatchSource:
    """Rows of a dataset, gathered batch by batch onto ``device``.

    Small data lives in one tensor (on the GPU itself when it fits, so a batch is a device-side
    gather); data too large for memory stays a (memory-mapped) numpy array and only each batch's rows
    are read and sent through pinned memory.
    """

    def __init__(self, data: np.ndarray | torch.Tensor, device: torch.device,
                 in_memory_max_bytes: int = IN_MEMORY_MAX_BYTES):
        self.device = device
        self._array: np.ndarray | None = None
        self._tensor: torch.Tensor | None = None
        if isinstance(data, torch.Tensor):
            tensor = data
        elif data.nbytes <= in_memory_max_bytes:
            array = np.asarray(data)
            if not array.flags.writeable or not array.flags.c_contiguous:
                # torch refuses read-only buffers (np.load(mmap_mode="r")): one contiguous copy.
                array = np.array(array, order="C")
            tensor = torch.from_numpy(array)
        else:
            self._array = data
            self.shape = tuple(data.shape)
            return
        if is_cuda(device) and tensor.numel() * tensor.element_size() <= DEVICE_RESIDENT_MAX_BYTES:
            tensor = stage(tensor, device)
        self._tensor = tensor
        self.shape = tuple(tensor.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def gather(self, index: torch.Tensor, device_index: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``index`` (a CPU int64 tensor) on the device, in that order. ``device_index``, the
        same indices already on the device, saves a transfer when the data is resident there."""
        if self._tensor is not None:
            if self._tensor.device != index.device:
                index = device_index if device_index is not None else index.to(self._tensor.device)
            return stage(self._tensor.index_select(0, index), self.device)
        wanted = index.numpy()
        # Sorted reads are sequential on a memory map; the inverse permutation restores the order.
        by_position = np.argsort(wanted, kind="stable")
        rows = np.ascontiguousarray(self._array[wanted[by_position]])
        return stage(torch.from_numpy(rows[np.argsort(by_position, kind="stable")]), self.device)

    def slice(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` on the device."""
        if self._tensor is not None:
            return stage(self._tensor[start:stop], self.device)
        # np.array copies: the rows of a read-only memory map cannot back a tensor.
        return stage(torch.from_numpy(np.array(self._array[start:stop], order="C")), self.device)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); a no-op on the CPU."""
    if enabled and is_cuda(device):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
