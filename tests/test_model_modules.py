"""Module-level identities the fast paths rely on."""

from __future__ import annotations

import pytest
import torch

from neuro_caduceus.model import preset_config
from neuro_caduceus.model.modules import BiMamba, RMSNorm


@pytest.mark.parametrize("bias", [False, True])
def test_bimamba_shared_projections_equal_the_two_direction_definition(bias: bool) -> None:
    """fwd(h) + flip(rev(flip(h))) computed naively equals the version that runs in/out_proj once."""
    torch.manual_seed(0)
    cfg = preset_config("tiny-ph")
    cfg.bias = bias
    m = BiMamba(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
        h = torch.randn(2, 50, 32)
        want = m.mamba_fwd(h) + m.mamba_rev(h.flip(1)).flip(1)
        torch.testing.assert_close(m(h), want, rtol=0, atol=1e-5)
    assert m.mamba_rev.in_proj is m.mamba_fwd.in_proj and m.mamba_rev.out_proj is m.mamba_fwd.out_proj


def test_rmsnorm_matches_float64_formula() -> None:
    norm = RMSNorm(8, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(3, 5, 8)
    x64 = x.double()
    want = x64 / torch.sqrt((x64**2).mean(-1, keepdim=True) + 1e-5) * norm.weight.double()
    torch.testing.assert_close(norm(x).double(), want, rtol=0, atol=1e-6)
