"""ALiBi attention bias (Press et al.): a per-head linear penalty on the distance between two tokens."""

from __future__ import annotations

import math

import torch


def alibi_slopes(n_heads: int) -> list[float]:
    """Geometric slopes 2^(-8/n)...; a head count that is no power of two takes the nearest power's slopes
    plus every other slope of twice that power (the ALiBi paper's rule, as DNABERT-2 uses it)."""
    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


class AlibiTable:
    """The (1, heads, size, size) bias -slope * |i - j|, grown when a longer sequence arrives."""

    def __init__(self, n_heads: int, starting_size: int) -> None:
        self.slopes = torch.tensor(alibi_slopes(n_heads), dtype=torch.float32)
        self.table = self._build(starting_size, torch.device("cpu"))

    def _build(self, size: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(size, device=device)
        distance = (pos[None, :] - pos[:, None]).abs().expand(len(self.slopes), -1, -1)
        return (self.slopes.to(device)[:, None, None] * -distance).unsqueeze(0)

    def bias(self, length: int, device: torch.device) -> torch.Tensor:
        if self.table.shape[-1] < length:
            self.table = self._build(length, device)
        if self.table.device != device:
            self.table = self.table.to(device)
        return self.table[:, :, :length, :length]
