"""Triton scan cases run under Triton's CPU interpreter (started by test_model_triton_scan.py in a process of
their own with TRITON_INTERPRET=1, which triton reads when a kernel is defined). Not collected directly."""

from __future__ import annotations

import os

import pytest
import torch
from scan_inputs import scan_inputs

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_model_triton_scan.py with TRITON_INTERPRET=1", allow_module_level=True)

from neuro_caduceus.model.scan import selective_scan_chunked, selective_scan_reference  # noqa: E402
from neuro_caduceus.model.triton_scan import BLOCK_T, selective_scan_triton  # noqa: E402


@pytest.mark.parametrize(("L", "E", "N"),
                         [(1, 8, 16), (BLOCK_T, 12, 16), (BLOCK_T + 1, 8, 5), (2 * BLOCK_T + 5, 8, 16)])
def test_fp32_equals_reference_and_chunked(L: int, E: int, N: int) -> None:
    args = scan_inputs(L, E=E, N=N, seed=L * 3 + E)
    out = selective_scan_triton(*args)
    torch.testing.assert_close(out, selective_scan_reference(*args), rtol=0, atol=1e-5)
    torch.testing.assert_close(out, selective_scan_chunked(*args), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_run_in_fp32(dtype: torch.dtype) -> None:
    """bf16/fp16 inputs are read once and upcast: equal to the fp32 loop on the same rounded values."""
    args = scan_inputs(70, E=8, seed=11, dtype=dtype)
    out = selective_scan_triton(*args)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, selective_scan_reference(*args), rtol=0, atol=1e-5)


def test_gate_and_views() -> None:
    """z gate fused; z and x as the two halves of one (b, L, 2E) tensor (the model's xz), B/C as views."""
    x, delta, A, B, C, D = scan_inputs(45, E=16, seed=2)
    xz = torch.cat([x, 2.0 * torch.randn_like(x)], dim=-1)
    xv, z = xz.chunk(2, dim=-1)
    BC = torch.cat([B, C], dim=-1)
    want = selective_scan_reference(x, delta, A, B, C, D) * torch.nn.functional.silu(z)
    got = selective_scan_triton(xv, delta, A, BC[..., :16], BC[..., 16:], D, z=z)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("a_scale", [0.001, 500.0])
def test_extreme_decay_range(a_scale: float) -> None:
    """Decay near 1 and decay far below fp32's range within one chunk: against a float64 loop."""
    args = scan_inputs(80, E=8, a_scale=a_scale, seed=5)
    args[1][:, 40:] *= 50.0  # one half of the sequence decays 50x faster
    ref64 = selective_scan_reference(*(t.double() for t in args))
    out = selective_scan_triton(*args)
    assert torch.isfinite(out).all()
    scale = max(1.0, float(ref64.abs().max()))
    torch.testing.assert_close(out.double(), ref64, rtol=0, atol=1e-5 * scale)
