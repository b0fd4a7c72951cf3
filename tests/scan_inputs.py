"""Random selective-scan inputs shared by the scan tests (torch, numba and the Triton interpreter)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scan_inputs(L: int, b: int = 2, E: int = 24, N: int = 16, a_scale: float = 1.0, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """x, delta, A, B, C, D as the model feeds them (delta > 0, A < 0); x, delta, B, C in `dtype`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, E, generator=g)
    delta = F.softplus(torch.randn(b, L, E, generator=g) - 2.0)
    A = -torch.exp(0.5 * torch.randn(E, N, generator=g)) * a_scale
    B = 0.5 * torch.randn(b, L, N, generator=g)
    C = 0.5 * torch.randn(b, L, N, generator=g)
    D = torch.randn(E, generator=g)
    x, delta, B, C = (t.to(dtype) for t in (x, delta, B, C))
    return x, delta, A, B, C, D
