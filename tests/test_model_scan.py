"""The chunked selective scan against the per-position reference loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scan_inputs import scan_inputs

from neuro_caduceus.model.scan import (
    causal_conv1d_silu,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)


@pytest.mark.parametrize("L", [1, 7, 32, 33, 100, 257])
@pytest.mark.parametrize("chunk", [8, 32, 64])
def test_chunked_equals_reference(L: int, chunk: int) -> None:
    args = scan_inputs(L, seed=L * 7 + chunk)
    ref = selective_scan_reference(*args)
    out = selective_scan_chunked(*args, chunk=chunk)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("a_scale", [0.01, 200.0])
def test_extreme_decay_stays_exact(a_scale: float) -> None:
    """Tiny decay (long memory) and huge decay (the overflow-safe fallback path) both stay exact."""
    args = scan_inputs(150, a_scale=a_scale, seed=3)
    ref64 = selective_scan_reference(*(t.double() for t in args))
    out = selective_scan_chunked(*args, chunk=64)
    assert torch.isfinite(out).all()
    scale = max(1.0, float(ref64.abs().max()))
    torch.testing.assert_close(out.double(), ref64, rtol=0, atol=1e-5 * scale)


def test_dispatch_on_cpu_is_the_compiled_scan() -> None:
    from neuro_caduceus.model.cpu_scan import selective_scan_numba

    args = scan_inputs(70, seed=5)
    torch.testing.assert_close(selective_scan(*args), selective_scan_numba(*args), rtol=0, atol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_causal_conv_equals_torch_conv1d(bias: bool) -> None:
    """The CPU shifted multiply-add convolution against torch's depthwise conv1d with left padding."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 37, 12, generator=g)
    weight = torch.randn(12, 1, 4, generator=g)
    b = torch.randn(12, generator=g) if bias else None
    want = F.silu(F.conv1d(x.transpose(1, 2), weight, b, padding=3, groups=12)[..., :37]).transpose(1, 2)
    torch.testing.assert_close(causal_conv1d_silu(x, weight, b), want, rtol=0, atol=1e-6)


def test_chunked_pads_a_partial_last_chunk_without_changing_outputs() -> None:
    """L not a multiple of the chunk: the zero-padded tail must not leak into real positions."""
    args = scan_inputs(45, seed=9)
    ref64 = selective_scan_reference(*(t.double() for t in args))
    torch.testing.assert_close(selective_scan_chunked(*args, chunk=32).double(), ref64, rtol=0, atol=1e-5)
