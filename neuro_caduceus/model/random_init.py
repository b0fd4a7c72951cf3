"""Deterministic random Caduceus weights (for tests, benchmarks and dry runs without the real weights)."""

from __future__ import annotations

import math

import torch

from neuro_caduceus.model.config import RANDOM_INIT_FLAG, CaduceusConfig
from neuro_caduceus.model.modules import CaduceusForMaskedLM


def random_model(config: CaduceusConfig, seed: int) -> CaduceusForMaskedLM:
    """A model with Mamba-style initial values, then every parameter perturbed (none sits at its init).

    dt_proj.bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max]; A_log = log(1..d_state);
    config.json of a saved copy carries `neuro_caduceus_random_init: true`.
    """
    gen = torch.Generator().manual_seed(seed)
    config.extra[RANDOM_INIT_FLAG] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CaduceusForMaskedLM(config)
    ssm = config.ssm_cfg
    dt_min, dt_max = float(ssm.get("dt_min", 1e-3)), float(ssm.get("dt_max", 0.1))
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("dt_proj.bias"):
                u = torch.rand(p.shape, generator=gen)
                dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif name.endswith("A_log"):
                p.add_(0.05 * noise)
            elif name.endswith(("D", "norm.weight", "norm_f.weight")):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.02 * noise)
            else:
                p.add_(0.02 * noise)
    return model.eval()
