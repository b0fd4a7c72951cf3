"""Activation buffers of the CPU strand-folded forward, reused across its layers and across calls.

Why: a fresh tensor of tens of MB costs a page fault per 4 KiB page on first touch (about a microsecond
each on a virtual machine), which was a tenth of a d118 forward at L = 8,192. Each forward takes the
calling thread's buffers (its own thread only, so concurrent forwards never share one), every layer writes
into the same ones, and afterwards they are kept for the thread's next forward of the same shapes, up to
KEEP_BYTES in all; larger sets are dropped when the forward ends. Nothing a forward returns is a buffer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

KEEP_BYTES = 512 * 2**20  # a thread keeps at most one forward's buffers of this size between calls

_kept = threading.local()


class Buffers:
    """Named fp32 CPU tensors, created on first use and reused while the requested shape is unchanged."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def get(self, name: str, *shape: int) -> torch.Tensor:
        """The buffer `name` of this shape; remade when the shape changed, and when it was made under
        torch.inference_mode but the caller is not in it (torch refuses writes into such a tensor there)."""
        t = self._tensors.get(name)
        if t is None or t.shape != shape or (t.is_inference() and not torch.is_inference_mode_enabled()):
            t = self._tensors[name] = torch.empty(shape, dtype=torch.float32)
        return t

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors.values())


@contextlib.contextmanager
def forward_buffers() -> Iterator[Buffers]:
    """This thread's kept buffers for one forward (a forward nested in it gets its own)."""
    buffers = getattr(_kept, "buffers", None) or Buffers()
    _kept.buffers = None
    try:
        yield buffers
    finally:
        _kept.buffers = buffers if buffers.nbytes <= KEEP_BYTES else None


def kept() -> Buffers | None:
    """This thread's buffers kept from its last forward (None: none kept)."""
    return getattr(_kept, "buffers", None)


def release() -> None:
    """Drop this thread's kept buffers (their memory returns at once)."""
    _kept.buffers = None
